//! What the probes read about the current task.
use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_get_current_task_btf,
};
use swoll_maps_schema::config::KernelOffsets;

/// Inode of the current task's pid namespace, as `/proc/PID/ns/pid` shows it:
/// `task->thread_pid->numbers[task->thread_pid->level].ns->ns.inum` (see
/// <https://github.com/torvalds/linux/blob/v6.18/include/linux/pid.h> and `task_active_pid_ns`).
///
/// Offsets come from the running kernel's BTF. With `task_btf` (kernel 5.11+, decided by the
/// loader and constant for the verifier, which then drops the other branch) the first two steps
/// are direct loads from the BTF-typed current task; otherwise every step is a
/// `bpf_probe_read_kernel`. Both fail cleanly, never fault, on a bad pointer.
#[inline(always)]
pub fn pid_ns(off: &KernelOffsets, task_btf: bool) -> Result<u32, i32> {
    // SAFETY: direct loads happen only from the BTF-typed task pointer and what the verifier
    // derives from it (it checks each against the kernel's BTF and makes it fault-safe); every
    // other dereference goes through `bpf_probe_read_kernel`.
    unsafe {
        let (pid, level) = if task_btf {
            let task = bpf_get_current_task_btf().cast::<u8>().cast_const();
            let pid: *const u8 =
                core::ptr::read_volatile(task.add(off.task_thread_pid as usize).cast());
            let level: u32 = core::ptr::read_volatile(pid.add(off.pid_level as usize).cast());
            (pid, level)
        } else {
            let task = bpf_get_current_task() as *const u8;
            let pid: *const u8 =
                bpf_probe_read_kernel(task.add(off.task_thread_pid as usize).cast())?;
            let level: u32 = bpf_probe_read_kernel(pid.add(off.pid_level as usize).cast())?;
            (pid, level)
        };
        let upid = u64::from(off.pid_numbers)
            + u64::from(level) * u64::from(off.upid_size)
            + u64::from(off.upid_ns);
        let ns: *const u8 = bpf_probe_read_kernel(((pid as u64) + upid) as *const *const u8)?;
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
