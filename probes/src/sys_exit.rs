//! `raw_tracepoint/sys_exit`: count the call and add its latency, keyed by
//! (pid namespace, syscall nr, errno), and with `--histogram` add it to the key's latency
//! histogram.
//!
//! Arguments (`TP_PROTO(struct pt_regs *regs, long ret)`): `args[0]` the registers (the syscall
//! number is read from them), `args[1]` the return value.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use swoll_maps_schema::{
    config::{
        FLAG_COUNT_HOST, FLAG_COUNT_SELF, FLAG_HISTOGRAM, FLAG_TASK_BTF, FLAG_TASK_REGS, FLAG_TIME,
    },
    histogram::{self, LatencyBuckets},
    metrics::{MetricKey, MetricValue, errno_of},
    pidns::PidNsSeen,
    start,
    stats::Stat,
};

use crate::{config, maps, task};

/// `BPF_NOEXIST` from `include/uapi/linux/bpf.h`.
const BPF_NOEXIST: u64 = 1;

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    try_sys_exit(&ctx);
    0
}

#[inline(always)]
fn try_sys_exit(ctx: &RawTracePointContext) {
    let flags = config::flags();
    let pid_tgid = bpf_get_current_pid_tgid();
    if flags & FLAG_COUNT_SELF == 0 && maps::is_self((pid_tgid >> 32) as u32) {
        return;
    }
    let off = config::offsets();
    let tid = pid_tgid as u32;
    let slot_bits = config::start_slot_bits();
    let task = task::current_btf(flags & FLAG_TASK_BTF != 0);
    let pid_ns = match task::pid_ns(&off, task, tid, slot_bits) {
        Ok(ns) => ns,
        Err(_) => return maps::count(Stat::PidNsReadFailed),
    };
    if flags & FLAG_COUNT_HOST == 0 && pid_ns == config::host_pid_ns() {
        return;
    }
    let regs: *const u8 = ctx.arg(0);
    let Ok(nr) = task::syscall_nr(regs, &off, task, flags & FLAG_TASK_REGS != 0) else {
        return maps::count(Stat::SyscallNrReadFailed);
    };
    let ret: i64 = ctx.arg(1);
    let key = MetricKey {
        pid_ns,
        nr,
        errno: errno_of(ret),
    };
    let timed = if flags & FLAG_TIME != 0 {
        elapsed(pid_tgid)
    } else {
        None
    };
    record(&key, timed.unwrap_or(0), pid_tgid);
    if flags & FLAG_HISTOGRAM != 0
        && let Some(time_ns) = timed
    {
        observe(&key, time_ns);
    }
}

/// Adds one call of `time_ns` to the metrics map, creating the key (and remembering who made
/// it) on its first call.
#[inline(always)]
fn record(key: &MetricKey, time_ns: u64, pid_tgid: u64) {
    if add(key, time_ns) {
        return;
    }
    let value = MetricValue { count: 1, time_ns };
    if maps::SWOLL_METRICS.insert(key, value, BPF_NOEXIST).is_ok() {
        remember(key.pid_ns, pid_tgid);
        return;
    }
    // Another CPU created the key between our lookup and insert: our slot of it is zero now.
    if !add(key, time_ns) {
        maps::count(Stat::MetricsUpdateFailed);
    }
}

/// Adds one call of `time_ns` to this CPU's latency histogram of `key`. Only timed calls are
/// observed: a call whose start was not seen has no latency to place.
#[inline(always)]
fn observe(key: &MetricKey, time_ns: u64) {
    let mut buckets = maps::SWOLL_HISTOGRAM.get_ptr_mut(key);
    if buckets.is_none() {
        // A new key starts empty, inserted from a static (by reference: by value it would be
        // copied to the 512-byte stack). An insert that finds the key made by another CPU in
        // between fails, and the lookup finds theirs.
        let empty: &'static LatencyBuckets = &EMPTY;
        let _ = maps::SWOLL_HISTOGRAM.insert(key, empty, BPF_NOEXIST);
        buckets = maps::SWOLL_HISTOGRAM.get_ptr_mut(key);
    }
    let Some(buckets) = buckets else {
        return maps::count(Stat::HistogramUpdateFailed);
    };
    // The mask is already in `bucket`; repeated here so the verifier sees the bound at the
    // access whatever the compiler made of it.
    let i = histogram::bucket(time_ns) & (histogram::BUCKETS - 1);
    // SAFETY: this CPU's slot of a per-CPU value; programs run with migration disabled, so no
    // other program writes it concurrently. `i` is in bounds.
    unsafe { (*buckets).buckets[i] += 1 };
}

/// What a new histogram key is inserted with.
static EMPTY: LatencyBuckets = LatencyBuckets::ZERO;

/// Records who was seen in `pid_ns` (on the rare path of a new metrics key), so userspace can
/// resolve the namespace even after every process in it has exited.
#[inline(always)]
fn remember(pid_ns: u32, pid_tgid: u64) {
    let seen = PidNsSeen {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        // SAFETY: a helper with no arguments and no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    if maps::SWOLL_PIDNS.insert(pid_ns, seen, 0).is_ok() {
        maps::count(Stat::PidNsRecorded);
    } else {
        maps::count(Stat::PidNsUpdateFailed);
    }
}

/// Nanoseconds since this thread entered its syscall, or `None` (counted) when its start is
/// unknown. Clears the start, so that if the kernel skips this thread's next `sys_enter` (a
/// preempted probe on 7.x) its `sys_exit` finds no start instead of this stale one.
#[inline(always)]
fn elapsed(pid_tgid: u64) -> Option<u64> {
    let tid = pid_tgid as u32;
    let bits = config::start_slot_bits();
    if let Some(slot) = maps::SWOLL_START.get_ptr_mut(start::slot(tid, bits)) {
        // SAFETY: a helper with no arguments and no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: a pointer into the array map's value area, valid for the program's run; one
        // aligned u64 load and store each (see `sys_enter`).
        unsafe {
            let value = core::ptr::read_volatile(slot);
            if let Some(ns) = start::elapsed(value, tid, bits, now) {
                core::ptr::write_volatile(slot, 0);
                return Some(ns);
            }
        }
    }
    maps::count(Stat::StartMissing);
    None
}

/// Adds one call to this CPU's value of `key`; false if the key is not in the map.
#[inline(always)]
fn add(key: &MetricKey, time_ns: u64) -> bool {
    match maps::SWOLL_METRICS.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: this CPU's slot of a per-CPU value; programs run with migration disabled,
            // so no other program writes it concurrently.
            unsafe {
                (*value).count += 1;
                (*value).time_ns += time_ns;
            }
            true
        }
        None => false,
    }
}
