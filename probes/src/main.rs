//! swoll's eBPF programs: count and time every syscall inside the kernel.
//!
//! `sys_enter` stores when each task entered a syscall; `sys_exit` adds one call and its latency
//! to the per-CPU count of (pid namespace, syscall nr, errno): in the namespace's slot of an
//! array where it has one, in a hash otherwise (`slots.rs`). Userspace never sees
//! single events in this mode: it reads the maps.
//!
//! `trace_enter` and `trace_exit`, attached only while a trace runs, capture the calls the
//! trace filter selects, with their arguments and pointed-to data, into a ring buffer.
#![no_std]
#![no_main]

mod capture;
mod config;
mod maps;
mod slots;
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
    // A panic path that survives optimisation becomes this loop, which the verifier rejects at
    // load (an unbounded back-edge): a probe that could panic cannot load. `unreachable_unchecked`
    // here would instead let LLVM assume the path away and delete the check guarding it.
    loop {}
}
