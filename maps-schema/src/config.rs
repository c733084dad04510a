//! The probes' load-time configuration: one read-only global, written by the loader.
//!
//! rustc emits no CO-RE relocations, so the struct offsets the probes need are read from the
//! *running* kernel's BTF by userspace and handed over here, together with the agent's filter
//! settings. The loader writes it with `EbpfLoader::override_global` before the programs are
//! verified; the probes read it with volatile loads so the zero initialiser is never folded in.

/// Name of the global [`ProbeConfig`] in the probes' object file.
pub const GLOBAL: &str = "SWOLL_CONFIG";

/// Name of the `Array<u32>` the agent writes while the probes run: its tgid at [`SELF_TGID`],
/// which the probes leave out unless [`FLAG_COUNT_SELF`] (0: nobody), and its read epoch at
/// [`SELF_EPOCH`] (see [`crate::slots`]). A map, not a field of [`ProbeConfig`]: pinned
/// programs outlive the agent that loaded them, and the next agent that takes them over
/// writes its own values here.
pub const SELF_MAP: &str = "SWOLL_SELF";

/// Index of the agent's tgid in [`SELF_MAP`].
pub const SELF_TGID: u32 = 0;

/// Index of the agent's read epoch in [`SELF_MAP`].
pub const SELF_EPOCH: u32 = 1;

/// Entries of [`SELF_MAP`].
pub const SELF_ENTRIES: u32 = 2;

/// Count syscalls of processes in the host's pid namespace ([`ProbeConfig::host_pid_ns`]).
pub const FLAG_COUNT_HOST: u32 = 1 << 0;
/// Count the agent's own syscalls (else the tgid in [`SELF_MAP`] is left out).
pub const FLAG_COUNT_SELF: u32 = 1 << 1;
/// Time syscalls: record a start timestamp at `sys_enter` and add the latency at `sys_exit`.
/// Without it the loader does not attach `sys_enter` at all and only counts are kept.
pub const FLAG_TIME: u32 = 1 << 2;
/// The kernel has `bpf_get_current_task_btf` (5.11+): read the task with direct, BTF-checked
/// loads instead of `bpf_probe_read_kernel` calls. A constant for the verifier, which removes
/// the branch not taken, so the helper is never seen by an older kernel.
pub const FLAG_TASK_BTF: u32 = 1 << 3;
/// The kernel has `bpf_task_pt_regs` (5.15+): read the syscall number from the registers with
/// a direct, BTF-checked load instead of a `bpf_probe_read_kernel` call. Like
/// [`FLAG_TASK_BTF`], a constant the verifier prunes on.
pub const FLAG_TASK_REGS: u32 = 1 << 5;
/// Add each timed call to its key's latency histogram (`--histogram`, needs [`FLAG_TIME`]).
/// Off by default: it costs `sys_exit` a second map lookup per call.
pub const FLAG_HISTOGRAM: u32 = 1 << 4;

/// Byte offsets of the kernel struct members the probes walk to find the current task's pid
/// namespace inode: `task->thread_pid->numbers[pid->level].ns->ns.inum`, the namespace that
/// `/proc/PID/ns/pid` shows.
///
/// Layouts differ between kernels (6.18 added a leading `ns_type` to `struct ns_common`), which
/// is why these come from `/sys/kernel/btf/vmlinux` at load time and never from the build machine.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `offsetof(struct task_struct, thread_pid)`: a `struct pid *`.
    pub task_thread_pid: u32,
    /// `offsetof(struct pid, level)`: an `unsigned int`, the depth of the task's pid namespace.
    pub pid_level: u32,
    /// `offsetof(struct pid, numbers)`: an array of `struct upid`, one per namespace level.
    pub pid_numbers: u32,
    /// `sizeof(struct upid)`: the stride of `pid->numbers`.
    pub upid_size: u32,
    /// `offsetof(struct upid, ns)`: a `struct pid_namespace *`.
    pub upid_ns: u32,
    /// `offsetof(struct pid_namespace, ns) + offsetof(struct ns_common, inum)`: the inode number.
    pub pid_ns_inum: u32,
    /// Offset in `struct pt_regs` of the syscall number (`orig_ax` on x86_64, `syscallno` on
    /// aarch64): the `sys_exit` raw tracepoint passes only the registers and the return value.
    pub regs_syscall_nr: u32,
    /// `offsetof(struct task_struct, start_time)`: when the task was created, which with its
    /// thread id tells one task from a later one that reuses the id (see [`crate::thread`]).
    pub task_start_time: u32,
}

crate::assert_size!(KernelOffsets, 32);

/// Everything the probes need to know at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Inode of the host's pid namespace, left out unless [`FLAG_COUNT_HOST`].
    pub host_pid_ns: u32,
    /// The numbers of `exit` and `exit_group` on this architecture: they never return, so
    /// `sys_enter` stores no start time for them (see [`crate::start`]).
    pub exit_nrs: [u32; 2],
    /// log2 of the start-time array's size (see [`crate::start`]).
    pub start_slot_bits: u32,
    /// Where the pid namespace inode is found in this kernel.
    pub offsets: KernelOffsets,
}

crate::assert_size!(ProbeConfig, 52);

impl ProbeConfig {
    /// A config whose fields are all zero: the probes' initialiser before the loader patches it.
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            host_pid_ns: 0,
            exit_nrs: [0; 2],
            start_slot_bits: 0,
            offsets: KernelOffsets {
                task_thread_pid: 0,
                pid_level: 0,
                pid_numbers: 0,
                upid_size: 0,
                upid_ns: 0,
                pid_ns_inum: 0,
                regs_syscall_nr: 0,
                task_start_time: 0,
            },
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only `u32` fields and arrays of them, no padding (checked by
// `assert_size!`).
unsafe impl aya::Pod for ProbeConfig {}
