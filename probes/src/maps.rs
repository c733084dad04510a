//! The maps, named as `swoll_maps_schema` names them. Sizes here are defaults: the loader sets
//! the real ones at load time.
use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use swoll_maps_schema::{
    histogram::{self, LatencyBuckets},
    metrics::{self, MetricKey, MetricValue},
    pidns::{self, PidNsSeen},
    start,
    stats::{self, Stat},
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

/// When each thread entered its current syscall, in a slot per thread id (see
/// [`swoll_maps_schema::start`]). The loader sizes it to the running kernel's `pid_max`.
#[map]
pub static SWOLL_START: Array<u64> = Array::with_max_entries(1 << start::MIN_SLOT_BITS, 0);

/// Each thread's pid namespace, in the thread's slot (see [`swoll_maps_schema::pidns_cache`]).
/// The loader sizes it like `SWOLL_START`.
#[map]
pub static SWOLL_PIDNS_CACHE: Array<u64> = Array::with_max_entries(1 << start::MIN_SLOT_BITS, 0);

/// A process and cgroup seen in each pid namespace, for userspace to resolve it later.
#[map]
pub static SWOLL_PIDNS: LruHashMap<u32, PidNsSeen> =
    LruHashMap::with_max_entries(pidns::DEFAULT_ENTRIES, 0);

/// The probes' own loss and error counters.
#[map]
pub static SWOLL_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::ENTRIES, 0);

/// The agent's tgid at index 0 (0: nobody), written by the loader and again by every agent that
/// takes over pinned probes (see [`swoll_maps_schema::config::SELF_MAP`]).
#[map]
pub static SWOLL_SELF: Array<u32> = Array::with_max_entries(1, 0);

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
    SWOLL_SELF.get(0).is_some_and(|&agent| agent == tgid)
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
