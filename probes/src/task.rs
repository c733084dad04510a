//! What the probes read about the current task.
use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};
use swoll_maps_schema::{config::KernelOffsets, thread, trace::TraceOffsets};

/// The current task as the BTF-typed pointer direct loads need, when the kernel has
/// `bpf_get_current_task_btf` (5.11+; `task_btf` is decided by the loader and constant for the
/// verifier). Fetched once per run and handed to [`pid_ns`] and [`syscall_nr`].
#[inline(always)]
pub fn current_btf(task_btf: bool) -> Option<*const u8> {
    // SAFETY: a helper with no arguments; its result is only used for loads the verifier checks.
    task_btf.then(|| unsafe { bpf_get_current_task_btf().cast::<u8>().cast_const() })
}

/// Inode of the current task's pid namespace, as `/proc/PID/ns/pid` shows it:
/// `task->thread_pid->numbers[task->thread_pid->level].ns->ns.inum` (see
/// <https://github.com/torvalds/linux/blob/v6.18/include/linux/pid.h> and `task_active_pid_ns`).
///
/// Offsets come from the running kernel's BTF. With the BTF-typed `task` of [`current_btf`]
/// (kernel 5.11+) the first two steps are direct loads; otherwise every step is a
/// `bpf_probe_read_kernel`. Both fail cleanly, never fault, on a bad pointer. `sys_exit` walks
/// this once per thread where it can (see [`swoll_maps_schema::thread`]).
#[inline(always)]
pub fn pid_ns(off: &KernelOffsets, task: Option<*const u8>) -> Result<u32, i32> {
    let Some(task) = task else {
        // SAFETY: every dereference goes through `bpf_probe_read_kernel`.
        return unsafe {
            let task = bpf_get_current_task() as *const u8;
            let pid: *const u8 =
                bpf_probe_read_kernel(task.add(off.task_thread_pid as usize).cast())?;
            let level: u32 = bpf_probe_read_kernel(pid.add(off.pid_level as usize).cast())?;
            ns_of(pid, level, off)
        };
    };
    // SAFETY: direct loads happen only from the BTF-typed task pointer and what the verifier
    // derives from it (it checks each against the kernel's BTF and makes it fault-safe); every
    // other dereference goes through `bpf_probe_read_kernel`.
    unsafe {
        let pid: *const u8 =
            core::ptr::read_volatile(task.add(off.task_thread_pid as usize).cast());
        let level: u32 = core::ptr::read_volatile(pid.add(off.pid_level as usize).cast());
        ns_of(pid, level, off)
    }
}

/// The [`thread::fingerprint`] of the BTF-typed current `task`, whose thread id is `tid`.
#[inline(always)]
pub fn fingerprint(off: &KernelOffsets, task: *const u8, tid: u32) -> u32 {
    // SAFETY: a direct load from the BTF-typed task pointer, which the verifier checks against
    // the kernel's BTF and makes fault-safe.
    let start_time: u64 =
        unsafe { core::ptr::read_volatile(task.add(off.task_start_time as usize).cast()) };
    thread::fingerprint(tid, start_time)
}

/// `pid->numbers[level].ns->ns.inum`, through `bpf_probe_read_kernel` (the index is variable,
/// which direct loads do not allow).
///
/// # Safety
/// None beyond the helper's: a bad pointer makes the read fail, never fault.
#[inline(always)]
unsafe fn ns_of(pid: *const u8, level: u32, off: &KernelOffsets) -> Result<u32, i32> {
    let upid = u64::from(off.pid_numbers)
        + u64::from(level) * u64::from(off.upid_size)
        + u64::from(off.upid_ns);
    // SAFETY: see the function's contract.
    unsafe {
        let ns: *const u8 = bpf_probe_read_kernel(((pid as u64) + upid) as *const *const u8)?;
        bpf_probe_read_kernel(ns.add(off.pid_ns_inum as usize).cast::<u32>())
    }
}

/// The syscall number from the registers `sys_exit` passes (`orig_ax` / `syscallno`). With
/// `task_regs` (kernel 5.15+, constant for the verifier) and the BTF-typed current `task`, a
/// direct load from the BTF-typed registers of the task, which are the same registers; else a
/// `bpf_probe_read_kernel`.
///
/// Four bytes are read: aarch64's `syscallno` is an `s32` (the verifier refuses an 8-byte load
/// from it), and x86_64's 8-byte `orig_ax` holds the same number in its low four bytes (both
/// are little-endian), which is all the `u32` result ever kept.
#[inline(always)]
pub fn syscall_nr(
    regs: *const u8,
    off: &KernelOffsets,
    task: Option<*const u8>,
    task_regs: bool,
) -> Result<u32, i32> {
    if task_regs && let Some(task) = task {
        // SAFETY: a direct load from the BTF-typed `struct pt_regs` the helper returns for the
        // BTF-typed task, which the verifier checks against the kernel's BTF and makes
        // fault-safe.
        let nr: u32 = unsafe {
            let regs = bpf_task_pt_regs(task.cast_mut().cast()) as *const u8;
            core::ptr::read_volatile(regs.add(off.regs_syscall_nr as usize).cast())
        };
        return Ok(nr);
    }
    // SAFETY: read through `bpf_probe_read_kernel`, which fails cleanly on a bad pointer.
    unsafe { bpf_probe_read_kernel(regs.add(off.regs_syscall_nr as usize).cast()) }
}

/// What a trace event says about the current task besides what helpers return: its thread and
/// process ids in its own pid namespace and its UTS and mount namespaces. Zero where a read
/// fails: these are context, and a failed read must not drop the event.
pub struct TaskIds {
    /// Thread id in the task's pid namespace.
    pub ns_tid: u32,
    /// Process id (thread group leader's id) in the task's pid namespace.
    pub ns_pid: u32,
    /// UTS namespace inode.
    pub uts_ns: u32,
    /// Mount namespace inode.
    pub mnt_ns: u32,
}

/// Reads the [`TaskIds`] of the current task, every step through `bpf_probe_read_kernel`
/// (trace mode runs for selected calls only, so the cheaper direct loads are not worth a second
/// code path here).
#[inline(always)]
pub fn ids(off: &KernelOffsets, toff: &TraceOffsets) -> TaskIds {
    // SAFETY: every dereference goes through `bpf_probe_read_kernel`, which fails cleanly on a
    // bad pointer; the pointers only feed further reads.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let leader: *const u8 = read(task, toff.task_group_leader).unwrap_or(core::ptr::null());
        let nsproxy: *const u8 = read(task, toff.task_nsproxy).unwrap_or(core::ptr::null());
        TaskIds {
            ns_tid: pid_nr(task, off, toff).unwrap_or(0),
            ns_pid: pid_nr(leader, off, toff).unwrap_or(0),
            uts_ns: ns_inum(nsproxy, toff.nsproxy_uts_ns, toff.uts_ns_inum).unwrap_or(0),
            mnt_ns: ns_inum(nsproxy, toff.nsproxy_mnt_ns, toff.mnt_ns_inum).unwrap_or(0),
        }
    }
}

/// `*(base + off)`, read from kernel memory.
///
/// # Safety
/// None beyond the helper's: a bad address makes the read fail, never fault.
#[inline(always)]
unsafe fn read<T>(base: *const u8, off: u32) -> Result<T, i32> {
    // SAFETY: see the function's contract; `wrapping_add` because `base` may be anything.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast()) }
}

/// The id of `task`'s thread in its own pid namespace:
/// `task->thread_pid->numbers[level].nr`.
///
/// # Safety
/// As [`read`].
#[inline(always)]
unsafe fn pid_nr(task: *const u8, off: &KernelOffsets, toff: &TraceOffsets) -> Result<u32, i32> {
    // SAFETY: as [`read`].
    unsafe {
        let pid: *const u8 = read(task, off.task_thread_pid)?;
        let level: u32 = read(pid, off.pid_level)?;
        let at = u64::from(off.pid_numbers)
            + u64::from(level) * u64::from(off.upid_size)
            + u64::from(toff.upid_nr);
        read(pid, at as u32)
    }
}

/// The inode of the namespace at `nsproxy->(ns_field)`, whose `ns.inum` is at `inum`.
///
/// # Safety
/// As [`read`].
#[inline(always)]
unsafe fn ns_inum(nsproxy: *const u8, ns_field: u32, inum: u32) -> Result<u32, i32> {
    // SAFETY: as [`read`].
    unsafe {
        let ns: *const u8 = read(nsproxy, ns_field)?;
        read(ns, inum)
    }
}
