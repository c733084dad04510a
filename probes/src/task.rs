//! What the probes read about the current task.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use swoll_maps_schema::config::KernelOffsets;

/// Inode of the current task's pid namespace, as `/proc/PID/ns/pid` shows it:
/// `task->thread_pid->numbers[task->thread_pid->level].ns->ns.inum` (see
/// <https://github.com/torvalds/linux/blob/v6.18/include/linux/pid.h> and `task_active_pid_ns`).
///
/// Offsets come from the running kernel's BTF; each step is a `bpf_probe_read_kernel`, which
/// fails cleanly (never faults) on a bad pointer.
#[inline(always)]
pub fn pid_ns(off: &KernelOffsets) -> Result<u32, i32> {
    // SAFETY: every dereference below goes through `bpf_probe_read_kernel`, which copies from
    // kernel memory or returns an error; the pointers are never dereferenced directly.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let pid: *const u8 =
            bpf_probe_read_kernel(task.add(off.task_thread_pid as usize).cast::<*const u8>())?;
        let level: u32 = bpf_probe_read_kernel(pid.add(off.pid_level as usize).cast::<u32>())?;
        let upid = off.pid_numbers as usize + (level as usize) * (off.upid_size as usize);
        let ns: *const u8 =
            bpf_probe_read_kernel(pid.add(upid + off.upid_ns as usize).cast::<*const u8>())?;
        bpf_probe_read_kernel(ns.add(off.pid_ns_inum as usize).cast::<u32>())
    }
}

/// The syscall number from the registers `sys_exit` passes (`orig_ax` / `syscallno`).
#[inline(always)]
pub fn syscall_nr(regs: *const u8, off: &KernelOffsets) -> Result<u32, i32> {
    // SAFETY: read through `bpf_probe_read_kernel`, as above.
    let nr: i64 = unsafe { bpf_probe_read_kernel(regs.add(off.regs_syscall_nr as usize).cast())? };
    Ok(nr as u32)
}
