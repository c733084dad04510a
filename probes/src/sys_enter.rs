//! `raw_tracepoint/sys_enter`: remember when the task entered the syscall.
//!
//! Arguments (`TP_PROTO(struct pt_regs *regs, long id)`, see
//! <https://github.com/torvalds/linux/blob/v6.18/include/trace/events/syscalls.h>): `args[1]` is
//! the syscall number.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use swoll_maps_schema::{
    config::{FLAG_COUNT_SELF, FLAG_TIME},
    start::SyscallStart,
    stats::Stat,
};

use crate::{config, maps};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    try_sys_enter(&ctx);
    0
}

#[inline(always)]
fn try_sys_enter(ctx: &RawTracePointContext) {
    let flags = config::flags();
    if flags & FLAG_TIME == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if flags & FLAG_COUNT_SELF == 0 && (pid_tgid >> 32) as u32 == config::self_tgid() {
        return;
    }
    let nr: i64 = ctx.arg(1);
    let start = SyscallStart {
        // SAFETY: a helper with no arguments and no preconditions.
        ts: unsafe { bpf_ktime_get_ns() },
        nr: nr as u32,
        _pad: 0,
    };
    if maps::SWOLL_START.insert(pid_tgid, start, 0).is_err() {
        maps::count(Stat::StartUpdateFailed);
    }
}
