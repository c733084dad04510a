//! Syscall start times, per task, from `sys_enter` to `sys_exit`.
//!
//! An LRU hash keyed by `bpf_get_current_pid_tgid()`: `exit_group` and a task killed inside a
//! syscall never reach `sys_exit`, so a plain hash would leak their entries; LRU recycles them.

/// Name of the map in the probes' object file.
pub const MAP: &str = "SWOLL_START";

/// Default number of entries: the most tasks that can be inside a syscall at once without a
/// start time being recycled. The loader may size it at load time.
pub const DEFAULT_ENTRIES: u32 = 32_768;

/// The value: when and which syscall the task entered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallStart {
    /// `bpf_ktime_get_ns()` at `sys_enter`.
    pub ts: u64,
    /// The syscall number entered, so a stale entry is never matched to another syscall's exit.
    pub nr: u32,
    /// Explicit padding so that every byte of the value is initialised.
    pub _pad: u32,
}

crate::assert_size!(SyscallStart, 16);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integer fields, padding is a named field (checked by `assert_size!`).
unsafe impl aya::Pod for SyscallStart {}
