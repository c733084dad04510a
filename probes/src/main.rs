//! swoll's eBPF programs: count and time every syscall inside the kernel.
//!
//! `sys_enter` stores when each task entered a syscall; `sys_exit` adds one call and its latency
//! to the per-CPU metrics entry of (pid namespace, syscall nr, errno). Userspace never sees single
//! events in this mode: it reads the maps.
//!
//! `trace_enter` and `trace_exit`, attached only while a trace runs, capture the calls the
//! trace filter selects, with their arguments and pointed-to data, into a ring buffer.
#![no_std]
#![no_main]

mod capture;
mod config;
mod maps;
mod sys_enter;
mod sys_exit;
mod task;
mod trace_enter;
mod trace_exit;

/// The helpers used (`bpf_probe_read_kernel`, `bpf_get_current_task`) are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path (it would need an
    // unbounded loop or a call it does not know), so this is never reached at run time.
    unsafe { core::hint::unreachable_unchecked() }
}
