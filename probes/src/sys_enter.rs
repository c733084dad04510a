//! `raw_tracepoint/sys_enter`: remember when the thread entered the syscall.
//!
//! Arguments (`TP_PROTO(struct pt_regs *regs, long id)`, see
//! <https://github.com/torvalds/linux/blob/v6.18/include/trace/events/syscalls.h>): `args[1]` is
//! the syscall number.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use swoll_maps_schema::{config::FLAG_COUNT_SELF, start, stats::Stat};

use crate::{config, maps};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    try_sys_enter(&ctx);
    0
}

#[inline(always)]
fn try_sys_enter(ctx: &RawTracePointContext) {
    // Attached only when timing (`FLAG_TIME`): nothing to check for it here.
    let pid_tgid = bpf_get_current_pid_tgid();
    if config::flags() & FLAG_COUNT_SELF == 0 && maps::is_self((pid_tgid >> 32) as u32) {
        return;
    }
    let nr: i64 = ctx.arg(1);
    let [exit, exit_group] = config::exit_nrs();
    if nr == i64::from(exit) || nr == i64::from(exit_group) {
        return;
    }
    let tid = pid_tgid as u32;
    let bits = config::start_slot_bits();
    let Some(thread) = maps::SWOLL_THREADS.get_ptr_mut(start::slot(tid, bits)) else {
        return;
    };
    // SAFETY: a helper with no arguments and no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a pointer into the array map's value area, valid for the program's run. Another
    // CPU may write the same slot (two threads sharing it): each access is one aligned u64
    // load or store, so neither sees half of the other's value.
    unsafe {
        let start = &raw mut (*thread).start;
        let previous = core::ptr::read_volatile(start);
        if previous != 0 && previous >> start::TIME_BITS != u64::from(start::tag(tid, bits)) {
            maps::count(Stat::StartDisplaced);
        }
        core::ptr::write_volatile(start, start::value(tid, bits, now));
    }
}
