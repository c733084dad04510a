//! The maps, named as `swoll_maps_schema` names them. Sizes here are defaults: the loader sets
//! the real ones at load time.
use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use swoll_maps_schema::{
    metrics::{self, MetricKey, MetricValue},
    pidns::{self, PidNsSeen},
    start::{self, SyscallStart},
    stats::{self, Stat},
};

/// Counts and time per (pid namespace, syscall, errno).
#[map]
pub static SWOLL_METRICS: LruPerCpuHashMap<MetricKey, MetricValue> =
    LruPerCpuHashMap::with_max_entries(metrics::DEFAULT_ENTRIES, 0);

/// When each task entered its current syscall, keyed by `bpf_get_current_pid_tgid()`.
/// `BPF_F_NO_COMMON_LRU`: per-CPU LRU lists, so an insert takes no global lock.
#[map]
pub static SWOLL_START: LruHashMap<u64, SyscallStart> =
    LruHashMap::with_max_entries(start::DEFAULT_ENTRIES, BPF_F_NO_COMMON_LRU);

/// A process and cgroup seen in each pid namespace, for userspace to resolve it later.
#[map]
pub static SWOLL_PIDNS: LruHashMap<u32, PidNsSeen> =
    LruHashMap::with_max_entries(pidns::DEFAULT_ENTRIES, 0);

/// The probes' own loss and error counters.
#[map]
pub static SWOLL_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::ENTRIES, 0);

/// `BPF_F_NO_COMMON_LRU` from `include/uapi/linux/bpf.h`.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// Adds one to a stats slot of this CPU.
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(slot) = SWOLL_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, and programs run with
        // migration disabled, so nothing else writes it concurrently.
        unsafe { *slot += 1 }
    }
}
