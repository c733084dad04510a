//! The maps, named as `swoll_maps_schema` names them. Sizes here are defaults: the loader sets
//! the real ones at load time.
use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id,
    macros::map,
    maps::{
        Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, Queue, RingBuf,
    },
};
use swoll_maps_schema::{
    config,
    histogram::{self, LatencyBuckets, SlotHistograms},
    metrics::{self, MetricKey, MetricValue},
    pidns::{self, PidNsSeen},
    slots::{self, SlotCounts, SlotOwner},
    start,
    stats::{self, Stat},
    thread::ThreadSlot,
    trace::{self, Captured, Rule, RuleKey, SyscallCapture, TraceEntry},
};

/// Counts and time per (pid namespace, syscall, errno).
#[map]
pub static SWOLL_METRICS: LruPerCpuHashMap<MetricKey, MetricValue> =
    LruPerCpuHashMap::with_max_entries(metrics::DEFAULT_ENTRIES, 0);

/// Latency histograms per (pid namespace, syscall, errno), with `--histogram`.
#[map]
pub static SWOLL_HISTOGRAM: LruPerCpuHashMap<MetricKey, LatencyBuckets> =
    LruPerCpuHashMap::with_max_entries(histogram::DEFAULT_ENTRIES, 0);

/// Each thread's start time and namespace slot, in a slot per thread id (see
/// [`swoll_maps_schema::thread`]). The loader sizes it to the running kernel's `pid_max`.
#[map]
pub static SWOLL_THREADS: Array<ThreadSlot> = Array::with_max_entries(1 << start::MIN_SLOT_BITS, 0);

/// Calls per namespace slot, by syscall number and (for failed calls) errno (see
/// [`swoll_maps_schema::slots`]). The loader sets the slot count (`--ns-slots`).
#[map]
pub static SWOLL_COUNTS: PerCpuArray<SlotCounts> =
    PerCpuArray::with_max_entries(slots::DEFAULT_SLOTS, 0);

/// Latency histograms per namespace slot, with `--histogram` (see
/// [`swoll_maps_schema::histogram`]). The loader sets the slot count (one entry without).
#[map]
pub static SWOLL_SLOT_HISTOGRAMS: PerCpuArray<SlotHistograms> =
    PerCpuArray::with_max_entries(slots::DEFAULT_SLOTS, 0);

/// Each namespace slot's generation, owner and last epoch counted in.
#[map]
pub static SWOLL_SLOT_OWNERS: Array<SlotOwner> = Array::with_max_entries(slots::DEFAULT_SLOTS, 0);

/// The slot of each pid namespace that has one.
#[map]
pub static SWOLL_NS_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(slots::DEFAULT_SLOTS, 0);

/// The free namespace slots, oldest freed first; the loader fills it.
#[map]
pub static SWOLL_FREE_SLOTS: Queue<u32> = Queue::with_max_entries(slots::DEFAULT_SLOTS, 0);

/// A process and cgroup seen in each pid namespace, for userspace to resolve it later.
#[map]
pub static SWOLL_PIDNS: LruHashMap<u32, PidNsSeen> =
    LruHashMap::with_max_entries(pidns::DEFAULT_ENTRIES, 0);

/// The probes' own loss and error counters.
#[map]
pub static SWOLL_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::ENTRIES, 0);

/// The agent's tgid (0: nobody) and read epoch, written by the loader and by every agent that
/// takes over pinned probes (see [`swoll_maps_schema::config::SELF_MAP`]).
#[map]
pub static SWOLL_SELF: Array<u32> = Array::with_max_entries(config::SELF_ENTRIES, 0);

/// Trace mode's filter: which trace slots want (pid namespace, syscall), wildcards included.
#[map]
pub static SWOLL_TRACE_RULES: PerCpuHashMap<RuleKey, Rule> =
    PerCpuHashMap::with_max_entries(trace::RULES_ENTRIES, 0);

/// Arguments of traced calls, from `trace_enter` to `trace_exit`, keyed by the task.
#[map]
pub static SWOLL_TRACE_ENTRY: LruHashMap<u64, TraceEntry> =
    LruHashMap::with_max_entries(trace::ENTRY_ENTRIES, BPF_F_NO_COMMON_LRU);

/// Pointed-to data read at `trace_enter` (execve's filename and argv), keyed by the task.
#[map]
pub static SWOLL_TRACE_ENTER_DATA: LruHashMap<u64, Captured> =
    LruHashMap::with_max_entries(trace::ENTER_DATA_ENTRIES, BPF_F_NO_COMMON_LRU);

/// Where an [`Captured`] is built before it is stored (too large for the stack).
#[map]
pub static SWOLL_TRACE_SCRATCH: PerCpuArray<Captured> = PerCpuArray::with_max_entries(1, 0);

/// What to capture per syscall number, written by userspace.
#[map]
pub static SWOLL_TRACE_SYSCALLS: Array<SyscallCapture> =
    Array::with_max_entries(trace::SYSCALLS_ENTRIES, 0);

/// Events lost on this CPU, by the trace mask they were for (ring buffer full, a
/// saved-arguments insert failed).
#[map]
pub static SWOLL_TRACE_LOST: PerCpuHashMap<u64, u64> =
    PerCpuHashMap::with_max_entries(trace::LOST_ENTRIES, 0);

/// The traced calls, for userspace to decode.
#[map]
pub static SWOLL_TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(trace::DEFAULT_RING_BYTES, 0);

/// `BPF_F_NO_COMMON_LRU` from `include/uapi/linux/bpf.h`.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// Whether `tgid` is the agent's: an array lookup, which the verifier inlines.
#[inline(always)]
pub fn is_self(tgid: u32) -> bool {
    SWOLL_SELF
        .get(config::SELF_TGID)
        .is_some_and(|&agent| agent == tgid)
}

/// The agent's current read epoch (see [`swoll_maps_schema::slots`]).
#[inline(always)]
pub fn epoch() -> u32 {
    SWOLL_SELF.get(config::SELF_EPOCH).copied().unwrap_or(0)
}

/// Adds one to a stats slot of this CPU.
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(slot) = SWOLL_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, and programs run with
        // migration disabled, so nothing else writes it concurrently.
        unsafe { *slot += 1 }
    }
}

/// Records who was seen in `pid_ns` (on the rare paths: a new metrics key, a new namespace
/// slot), so userspace can
/// resolve the namespace even after every process in it has exited.
#[inline(always)]
pub fn remember(pid_ns: u32, pid_tgid: u64) {
    let seen = PidNsSeen {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        // SAFETY: a helper with no arguments and no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    if SWOLL_PIDNS.insert(pid_ns, seen, 0).is_ok() {
        count(Stat::PidNsRecorded);
    } else {
        count(Stat::PidNsUpdateFailed);
    }
}
