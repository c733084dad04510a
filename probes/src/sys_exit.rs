//! `raw_tracepoint/sys_exit`: count the call and add its latency, keyed by
//! (pid namespace, syscall nr, errno), and with `--histogram` add it to the key's latency
//! histogram. A call is counted in its namespace's slot (no hash) where it has one and the slot
//! has room; otherwise in the metrics hash (see [`swoll_maps_schema::slots`]). Its latency goes
//! to the slot's histogram table where the call was counted in the slot and the table has room,
//! otherwise to the histogram hash.
//!
//! Arguments (`TP_PROTO(struct pt_regs *regs, long ret)`): `args[0]` the registers (the syscall
//! number is read from them), `args[1]` the return value.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use swoll_maps_schema::{
    config::{FLAG_COUNT_SELF, FLAG_HISTOGRAM, FLAG_TASK_BTF, FLAG_TASK_REGS, FLAG_TIME},
    histogram::{self, LatencyBuckets},
    metrics::{MetricKey, MetricValue, errno_of},
    start,
    stats::Stat,
    thread::ThreadSlot,
};

use crate::{
    config, maps,
    slots::{self, Added, NO_SLOT},
    task,
};

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
    let task = task::current_btf(flags & FLAG_TASK_BTF != 0);
    let thread = maps::SWOLL_THREADS.get_ptr_mut(start::slot(tid, config::start_slot_bits()));
    let counter = match slots::counter(flags, &off, task, thread, pid_tgid) {
        Ok(Some(counter)) => counter,
        Ok(None) => return,
        Err(_) => return maps::count(Stat::PidNsReadFailed),
    };
    let regs: *const u8 = ctx.arg(0);
    let Ok(nr) = task::syscall_nr(regs, &off, task, flags & FLAG_TASK_REGS != 0) else {
        return maps::count(Stat::SyscallNrReadFailed);
    };
    let ret: i64 = ctx.arg(1);
    let errno = errno_of(ret);
    let timed = match thread {
        Some(thread) if flags & FLAG_TIME != 0 => elapsed(thread, tid),
        _ => None,
    };
    let key = MetricKey {
        pid_ns: counter.pid_ns,
        nr,
        errno,
    };
    let time_ns = timed.unwrap_or(0);
    let added = if counter.slot != NO_SLOT {
        slots::add(counter.slot, counter.owner, nr, errno, time_ns)
    } else {
        Added::Missing
    };
    let slotted = match added {
        Added::Counted => true,
        // Who made a new key is remembered, so the namespace resolves through their cgroup
        // (a namespace's first call comes before its process joins its container's cgroup).
        Added::First => {
            maps::remember(counter.pid_ns, pid_tgid);
            true
        }
        Added::Missing => {
            record(&key, time_ns, pid_tgid);
            false
        }
    };
    if flags & FLAG_HISTOGRAM != 0
        && let Some(time_ns) = timed
        && !(slotted && slots::observe(counter.slot, nr, errno, time_ns))
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
        maps::remember(key.pid_ns, pid_tgid);
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

/// Nanoseconds since this thread, whose slot is `thread`, entered its syscall, or `None`
/// (counted) when its start is unknown. Clears the start, so that if the kernel skips this
/// thread's next `sys_enter` (a preempted probe on 7.x) its `sys_exit` finds no start instead of
/// this stale one.
#[inline(always)]
fn elapsed(thread: *mut ThreadSlot, tid: u32) -> Option<u64> {
    let bits = config::start_slot_bits();
    // SAFETY: a helper with no arguments and no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a pointer into the array map's value area, valid for the program's run; one
    // aligned u64 load and store each (see `sys_enter`).
    unsafe {
        let start = &raw mut (*thread).start;
        let value = core::ptr::read_volatile(start);
        if let Some(ns) = start::elapsed(value, tid, bits, now) {
            core::ptr::write_volatile(start, 0);
            return Some(ns);
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
