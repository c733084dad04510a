//! `raw_tracepoint/sys_enter`, trace mode: does a running trace want this call? If so, save its
//! arguments (and what must be read before the call runs) for `trace_exit`.
//!
//! The filter is looked up four ways: (pid-ns, nr), (pid-ns, any), (any, nr), (any, any); each
//! rule found samples on its own, and the union of the trace slots kept goes on.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use swoll_maps_schema::{
    config::FLAG_TASK_BTF,
    stats::Stat,
    trace::{ANY_PID_NS, ANY_SYSCALL, AT_ENTER, Captured, RuleKey, TraceEntry},
};

use crate::{
    capture::{self, When},
    config, maps, task,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn trace_enter(ctx: RawTracePointContext) -> i32 {
    try_trace_enter(&ctx);
    0
}

#[inline(always)]
fn try_trace_enter(ctx: &RawTracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Never the agent itself: its own writes of events would be traced, without end.
    if maps::is_self((pid_tgid >> 32) as u32) {
        return;
    }
    let nr = ctx.arg::<i64>(1) as u32;
    let off = config::offsets();
    let task = task::current_btf(config::flags() & FLAG_TASK_BTF != 0);
    let Ok(pid_ns) = task::pid_ns(&off, task) else {
        return maps::count(Stat::PidNsReadFailed);
    };
    let traces = rule(pid_ns, nr)
        | rule(pid_ns, ANY_SYSCALL)
        | rule(ANY_PID_NS, nr)
        | rule(ANY_PID_NS, ANY_SYSCALL);
    if traces == 0 {
        return;
    }
    let regs: *const u8 = ctx.arg(0);
    let toff = config::trace_offsets();
    let mut args = [0u64; 6];
    for (i, value) in args.iter_mut().enumerate() {
        // SAFETY: `regs` is the tracepoint's `struct pt_regs *`; the read fails cleanly if not.
        *value = unsafe {
            bpf_probe_read_kernel(regs.wrapping_add(toff.regs_args[i] as usize).cast::<u64>())
        }
        .unwrap_or(0);
    }
    let entry = TraceEntry {
        args,
        // SAFETY: a helper with no arguments and no preconditions.
        enter_ns: unsafe { bpf_ktime_get_ns() },
        traces,
        nr,
        pid_ns,
    };
    // Keyed by the task, not its pid: an execve from a thread other than the leader changes the
    // thread's pid to the leader's before the call returns, and its exit must still be found.
    // SAFETY: a helper with no arguments and no preconditions.
    let task = unsafe { bpf_get_current_task() };
    if maps::SWOLL_TRACE_ENTRY.insert(task, entry, 0).is_err() {
        return lost(traces);
    }
    let Some(table) = maps::SWOLL_TRACE_SYSCALLS.get(nr) else {
        return;
    };
    if !table.captures.iter().any(|c| c.kind & AT_ENTER != 0) {
        return;
    }
    let (Some(saved), Some(scratch)) = (
        maps::SWOLL_TRACE_ENTRY.get_ptr(task),
        maps::SWOLL_TRACE_SCRATCH.get_ptr_mut(0),
    ) else {
        return;
    };
    // SAFETY: `scratch` is this CPU's slot of a per-CPU array (no concurrent writer while the
    // program runs with migration disabled) and `saved` a live map value; both are what
    // `capture::run` needs.
    unsafe {
        capture::zero(scratch.cast(), size_of::<Captured>());
        capture::run(table, When::Enter, &raw const (*saved).args, 0, scratch);
        // By reference: the value is far larger than the BPF stack.
        let data: &Captured = &*scratch;
        if maps::SWOLL_TRACE_ENTER_DATA.insert(task, data, 0).is_err() {
            lost(traces);
        }
    }
}

/// The trace slots of one filter key whose sampling keeps this call, 0 if none: per CPU, the
/// first call and then every N-th (this CPU's copy of the rule counts, so no atomics).
#[inline(always)]
fn rule(pid_ns: u32, nr: u32) -> u64 {
    let key = RuleKey { pid_ns, nr };
    let Some(rule) = maps::SWOLL_TRACE_RULES.get_ptr_mut(key) else {
        return 0;
    };
    // SAFETY: this CPU's copy of a per-CPU map value; programs run with migration disabled, so
    // nothing else writes it concurrently.
    unsafe {
        let rate = u64::from((*rule).rate);
        if rate <= 1 {
            return (*rule).traces;
        }
        let seen = (*rule).seen;
        (*rule).seen = seen + 1;
        if seen % rate == 0 { (*rule).traces } else { 0 }
    }
}

/// Counts one lost event for the traces of `traces`.
#[inline(always)]
pub fn lost(traces: u64) {
    if let Some(count) = maps::SWOLL_TRACE_LOST.get_ptr_mut(traces) {
        // SAFETY: this CPU's copy of a per-CPU map value; no concurrent writer.
        unsafe { *count += 1 };
        return;
    }
    if maps::SWOLL_TRACE_LOST
        .insert(traces, 1, BPF_NOEXIST)
        .is_err()
        && let Some(count) = maps::SWOLL_TRACE_LOST.get_ptr_mut(traces)
    {
        // Another CPU created the key first: this CPU's copy is zero, add to it.
        // SAFETY: as above.
        unsafe { *count += 1 };
    }
}

/// `BPF_NOEXIST` from `include/uapi/linux/bpf.h`.
const BPF_NOEXIST: u64 = 1;
