//! Trace mode: the in-kernel filter, what is captured per syscall, and the event record.
//!
//! Trace mode has programs of its own ([`crate::programs::TRACE_ENTER`],
//! [`crate::programs::TRACE_EXIT`]), attached only while a trace is running, so the metrics
//! programs pay nothing for it. At `sys_enter` the filter ([`RULES_MAP`]) is looked up by
//! (pid namespace, syscall) and the three wildcards; a match saves the six raw arguments
//! ([`ENTRY_MAP`]). At `sys_exit` the event is reserved in the ring buffer ([`EVENTS_MAP`]),
//! zeroed, filled with the call's context and the pointed-to data that [`SYSCALLS_MAP`]
//! describes for its syscall, and submitted. A record that cannot be reserved is counted per
//! trace in [`LOST_MAP`].
//!
//! Up to [`MAX_TRACES`] traces run at once; each has a slot, and a rule's value is the bit mask
//! of the slots that asked for it, so overlapping traces share rules without removing each
//! other's (userspace keeps the reference counts). Sampling is per rule: with overlapping
//! traces on one key, the rule keeps the highest rate any of them asked for.

/// Name of the filter map, a per-CPU hash: [`RuleKey`] → [`Rule`] (per CPU, so each CPU counts
/// its own calls for sampling without atomics).
pub const RULES_MAP: &str = "SWOLL_TRACE_RULES";
/// Name of the map of data read at `sys_enter` ([`AT_ENTER`]): the task → [`Captured`].
pub const ENTER_DATA_MAP: &str = "SWOLL_TRACE_ENTER_DATA";
/// Name of the one-entry per-CPU scratch where [`Captured`] is built (it is too large for the
/// BPF stack).
pub const SCRATCH_MAP: &str = "SWOLL_TRACE_SCRATCH";
/// Name of the per-task saved-arguments map: the task (`bpf_get_current_task()`, which an
/// execve from a non-leader thread does not change, unlike its pid) → [`TraceEntry`].
pub const ENTRY_MAP: &str = "SWOLL_TRACE_ENTRY";
/// Name of the capture table: an array indexed by syscall number → [`SyscallCapture`].
pub const SYSCALLS_MAP: &str = "SWOLL_TRACE_SYSCALLS";
/// Name of the loss counters, a per-CPU hash: the trace mask of the lost events → `u64` events
/// lost (userspace adds each to every trace of its mask; keyed by mask, the probe needs no loop
/// over the traces).
pub const LOST_MAP: &str = "SWOLL_TRACE_LOST";
/// Entries of [`LOST_MAP`]: distinct trace masks that lost events.
pub const LOST_ENTRIES: u32 = 1024;
/// Name of the ring buffer of [`TraceEvent`]s.
pub const EVENTS_MAP: &str = "SWOLL_TRACE_EVENTS";
/// Name of the global [`TraceConfig`] in the probes' object file.
pub const GLOBAL: &str = "SWOLL_TRACE_CONFIG";

/// Traces that can run at once: the bits of a [`Rule`] mask.
pub const MAX_TRACES: u32 = 64;
/// Entries of the filter map.
pub const RULES_ENTRIES: u32 = 16_384;
/// Entries of the saved-arguments map (tasks inside a traced syscall at once).
pub const ENTRY_ENTRIES: u32 = 16_384;
/// Entries of [`ENTER_DATA_MAP`]: tasks inside a traced execve at once.
pub const ENTER_DATA_ENTRIES: u32 = 1024;
/// Syscall numbers the capture table covers (x86_64 and aarch64 numbers are all below).
pub const SYSCALLS_ENTRIES: u32 = 1024;
/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// [`RuleKey::pid_ns`] that matches every pid namespace.
pub const ANY_PID_NS: u32 = 0;
/// [`RuleKey::nr`] that matches every syscall.
pub const ANY_SYSCALL: u32 = u32::MAX;

/// A filter rule's key: a pid namespace (or [`ANY_PID_NS`]) and a syscall (or [`ANY_SYSCALL`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    /// Inode of the pid namespace.
    pub pid_ns: u32,
    /// Syscall number.
    pub nr: u32,
}

crate::assert_size!(RuleKey, 8);

/// A filter rule's value: which trace slots want calls matching the key, and its sampling.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Bit `i` set: trace slot `i` asked for this key.
    pub traces: u64,
    /// Keep one call in `rate` (0 or 1: every call): per CPU, the first, then every `rate`-th.
    pub rate: u32,
    /// Explicit padding so that every byte of the value is initialised.
    pub _pad: u32,
    /// Calls this CPU matched, for sampling; written by the probe only.
    pub seen: u64,
}

crate::assert_size!(Rule, 24);

/// What `sys_enter` saves for `sys_exit` about a traced call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEntry {
    /// The six raw syscall arguments.
    pub args: [u64; 6],
    /// `bpf_ktime_get_ns()` at `sys_enter`.
    pub enter_ns: u64,
    /// The trace slots the call was sampled for.
    pub traces: u64,
    /// The syscall number entered (a stale entry is never matched to another syscall's exit).
    pub nr: u32,
    /// The pid namespace at entry.
    pub pid_ns: u32,
}

crate::assert_size!(TraceEntry, 72);

/// Nothing to capture.
pub const CAPTURE_NONE: u8 = 0;
/// A NUL-terminated string (a path): `bpf_probe_read_user_str`, up to `max` bytes.
pub const CAPTURE_STR: u8 = 1;
/// A `struct sockaddr` whose length is the value of argument `len_arg` (connect, bind, sendto).
pub const CAPTURE_SOCKADDR: u8 = 2;
/// A `struct sockaddr` filled in by the kernel, whose length is at the `socklen_t *` in argument
/// `len_arg` (accept, accept4, getpeername, getsockname, recvfrom); read at exit.
pub const CAPTURE_SOCKADDR_OUT: u8 = 3;
/// A buffer whose length is the return value, if positive (read, write, …), up to `max` bytes.
pub const CAPTURE_BUF_RET: u8 = 4;
/// A buffer whose length is the value of argument `len_arg`, up to `max` bytes.
pub const CAPTURE_BUF_LEN: u8 = 5;
/// A fixed-size struct of `max` bytes (a `timespec`, an `rlimit`, …).
pub const CAPTURE_STRUCT: u8 = 6;
/// A NULL-terminated array of string pointers (execve's argv): into the event's argv slots.
pub const CAPTURE_ARGV: u8 = 7;

/// Or-ed into [`Capture::kind`]: read the value at `sys_enter`, because the pointer is no longer
/// valid at exit (execve's filename and argv live in the address space a successful exec
/// replaces). Kept in [`ENTER_DATA_MAP`] until the exit. Only [`CAPTURE_STR`] and
/// [`CAPTURE_ARGV`] take it.
pub const AT_ENTER: u8 = 0x80;

/// One pointed-to value to capture for a syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// One of the `CAPTURE_*` kinds.
    pub kind: u8,
    /// Which argument (0..6) holds the pointer.
    pub arg: u8,
    /// Which argument holds the length, for the kinds that take one.
    pub len_arg: u8,
    /// Explicit padding so that every byte of the value is initialised.
    pub _pad: u8,
    /// The most bytes to read (at most [`DATA_BYTES`]).
    pub max: u32,
}

crate::assert_size!(Capture, 8);

/// What to capture for one syscall number: up to [`DATA_SLOTS`] values, the `i`-th into
/// [`Captured::data`]`[i]` (a [`CAPTURE_ARGV`] goes to [`Captured::argv`] and uses no data
/// slot's bytes). Written by userspace from its syscall tables, so the kernel side knows no
/// syscall by name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCapture {
    /// The captures, in data-slot order; unused ones are [`CAPTURE_NONE`].
    pub captures: [Capture; DATA_SLOTS],
}

crate::assert_size!(SyscallCapture, 16);

/// Pointed-to values captured per event.
pub const DATA_SLOTS: usize = 2;
/// Bytes of each data slot (paths are truncated here, with [`TRUNCATED`] set).
pub const DATA_BYTES: usize = 256;
/// execve arguments captured.
pub const ARGV_SLOTS: usize = 8;
/// Bytes of each argv slot, including the NUL.
pub const ARGV_BYTES: usize = 64;

/// [`Captured::flags`]: a data slot or argv string filled its bytes and may be cut short.
pub const TRUNCATED: u16 = 1 << 0;
/// [`Captured::flags`]: argv had more than [`ARGV_SLOTS`] arguments.
pub const ARGV_MORE: u16 = 1 << 1;
/// [`Captured::flags`]: reading some pointed-to data failed (a bad or unmapped pointer).
pub const READ_FAILED: u16 = 1 << 2;

/// One traced call, as the ring buffer carries it. Every byte is written by the probe for each
/// event (the record is zeroed first), so nothing of an earlier event is ever seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// The trace slots this event is for.
    pub traces: u64,
    /// `bpf_ktime_get_ns()` at `sys_enter` and at `sys_exit` (monotonic, since boot).
    pub enter_ns: u64,
    /// See [`TraceEvent::enter_ns`].
    pub exit_ns: u64,
    /// The six raw arguments, as saved at `sys_enter`.
    pub args: [u64; 6],
    /// The return value, signed (a negative errno on failure).
    pub ret: i64,
    /// `bpf_get_current_pid_tgid()`: thread id low, process id (tgid) high, as the host sees them.
    pub pid_tgid: u64,
    /// `bpf_get_current_uid_gid()`: uid low, gid high.
    pub uid_gid: u64,
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id, for the container.
    pub cgroup_id: u64,
    /// The syscall number.
    pub nr: u32,
    /// The thread id as the task's own pid namespace sees it.
    pub ns_tid: u32,
    /// The process id (tgid) as the task's own pid namespace sees it.
    pub ns_pid: u32,
    /// Inode of the pid namespace.
    pub pid_ns: u32,
    /// Inode of the UTS namespace.
    pub uts_ns: u32,
    /// Inode of the mount namespace.
    pub mnt_ns: u32,
    /// The task's `comm`, NUL-padded.
    pub comm: [u8; 16],
    /// What the call's arguments point to, as [`SyscallCapture`] describes for this syscall.
    pub captured: Captured,
}

crate::assert_size!(
    TraceEvent,
    160 + DATA_SLOTS * DATA_BYTES + ARGV_SLOTS * ARGV_BYTES
);

/// What a call's arguments point to: up to [`DATA_SLOTS`] values and execve's argv. Part of
/// every [`TraceEvent`], and kept on its own from `sys_enter` to `sys_exit` for the values read
/// at entry ([`AT_ENTER`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Bytes captured in each data slot (for strings, including the NUL).
    pub data_len: [u16; DATA_SLOTS],
    /// `TRUNCATED`, `ARGV_MORE`, `READ_FAILED` bits.
    pub flags: u16,
    /// argv strings captured.
    pub argc: u8,
    /// Explicit padding so that every byte of the value is initialised.
    pub _pad: u8,
    /// Bytes captured in each argv slot (including the NUL).
    pub argv_len: [u8; ARGV_SLOTS],
    /// Pointed-to data, one value per slot.
    pub data: [[u8; DATA_BYTES]; DATA_SLOTS],
    /// execve's argv strings.
    pub argv: [[u8; ARGV_BYTES]; ARGV_SLOTS],
}

crate::assert_size!(
    Captured,
    16 + DATA_SLOTS * DATA_BYTES + ARGV_SLOTS * ARGV_BYTES
);

/// Byte offsets of the kernel struct members trace mode reads, besides those of
/// [`crate::config::KernelOffsets`]. From the running kernel's BTF, like those.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceOffsets {
    /// Offsets in `struct pt_regs` of the six syscall arguments (`di, si, dx, r10, r8, r9` on
    /// x86_64; `orig_x0, regs[1..6]` on aarch64).
    pub regs_args: [u32; 6],
    /// `offsetof(struct task_struct, group_leader)`: the thread group leader, for the
    /// in-namespace process id.
    pub task_group_leader: u32,
    /// `offsetof(struct upid, nr)`: the id in that namespace.
    pub upid_nr: u32,
    /// `offsetof(struct task_struct, nsproxy)`.
    pub task_nsproxy: u32,
    /// `offsetof(struct nsproxy, uts_ns)`.
    pub nsproxy_uts_ns: u32,
    /// `offsetof(struct nsproxy, mnt_ns)`.
    pub nsproxy_mnt_ns: u32,
    /// `offsetof(struct uts_namespace, ns) + offsetof(struct ns_common, inum)`.
    pub uts_ns_inum: u32,
    /// `offsetof(struct mnt_namespace, ns) + offsetof(struct ns_common, inum)`.
    pub mnt_ns_inum: u32,
    /// Explicit padding so that every byte of the struct is initialised.
    pub _pad: u32,
}

crate::assert_size!(TraceOffsets, 56);

/// The trace programs' load-time configuration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// Where trace mode finds what it reads in this kernel.
    pub offsets: TraceOffsets,
}

crate::assert_size!(TraceConfig, 56);

impl TraceConfig {
    /// All zero: the probes' initialiser before the loader patches it.
    pub const fn zeroed() -> Self {
        Self {
            offsets: TraceOffsets {
                regs_args: [0; 6],
                task_group_leader: 0,
                upid_nr: 0,
                task_nsproxy: 0,
                nsproxy_uts_ns: 0,
                nsproxy_mnt_ns: 0,
                uts_ns_inum: 0,
                mnt_ns_inum: 0,
                _pad: 0,
            },
        }
    }
}

impl TraceEvent {
    /// An all-zero event: a starting point to build one from (decoder tests, fuzzing).
    pub const fn zeroed() -> TraceEvent {
        TraceEvent {
            traces: 0,
            enter_ns: 0,
            exit_ns: 0,
            args: [0; 6],
            ret: 0,
            pid_tgid: 0,
            uid_gid: 0,
            cgroup_id: 0,
            nr: 0,
            ns_tid: 0,
            ns_pid: 0,
            pid_ns: 0,
            uts_ns: 0,
            mnt_ns: 0,
            comm: [0; 16],
            captured: Captured {
                data_len: [0; DATA_SLOTS],
                flags: 0,
                argc: 0,
                _pad: 0,
                argv_len: [0; ARGV_SLOTS],
                data: [[0; DATA_BYTES]; DATA_SLOTS],
                argv: [[0; ARGV_BYTES]; ARGV_SLOTS],
            },
        }
    }

    /// The thread id as the host sees it.
    pub fn tid(&self) -> u32 {
        self.pid_tgid as u32
    }

    /// The process id as the host sees it.
    pub fn pid(&self) -> u32 {
        (self.pid_tgid >> 32) as u32
    }

    /// The user id.
    pub fn uid(&self) -> u32 {
        self.uid_gid as u32
    }

    /// The group id.
    pub fn gid(&self) -> u32 {
        (self.uid_gid >> 32) as u32
    }
}

impl Captured {
    /// The bytes captured in data slot `i` (empty if none or out of range); a string keeps its
    /// NUL.
    pub fn data(&self, i: usize) -> &[u8] {
        match (self.data.get(i), self.data_len.get(i)) {
            (Some(bytes), Some(&len)) => &bytes[..usize::from(len).min(DATA_BYTES)],
            _ => &[],
        }
    }

    /// The captured argv strings' bytes, without their NULs.
    pub fn argv(&self) -> impl Iterator<Item = &[u8]> {
        self.argv
            .iter()
            .zip(self.argv_len)
            .take(usize::from(self.argc).min(ARGV_SLOTS))
            .map(|(bytes, len)| {
                let s = &bytes[..usize::from(len).min(ARGV_BYTES)];
                s.strip_suffix(&[0]).unwrap_or(s)
            })
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: `#[repr(C)]`, integer fields and arrays only, padding as named fields (sizes
    // checked by `assert_size!`), so every bit pattern is valid and every byte defined. The
    // same holds for each type below.
    unsafe impl aya::Pod for RuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Rule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TraceEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SyscallCapture {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TraceConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Captured {}
}
