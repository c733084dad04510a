//! Who was seen in each pid namespace: the key to resolving a namespace to its container.
//!
//! A container may make its syscalls and exit before userspace's next read; by then there is
//! no process left to ask which container it was. So when `sys_exit` creates a new metrics key
//! (rare: once per new (pid-ns, syscall, errno)) it also records, for that pid namespace, the
//! process that made the call and its cgroup (v2) id. The cgroup outlives the process until the
//! runtime removes it, and its path names the container and the pod.

/// Name of the map in the probes' object file.
pub const MAP: &str = "SWOLL_PIDNS";

/// Default number of entries: pid namespaces remembered at once (LRU).
pub const DEFAULT_ENTRIES: u32 = 16_384;

/// The value, keyed by the pid namespace inode (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidNsSeen {
    /// A process (tgid, host view) that made a syscall from the namespace.
    pub tgid: u32,
    /// Explicit padding so that every byte of the value is initialised.
    pub _pad: u32,
    /// `bpf_get_current_cgroup_id()` of that process: the inode of its cgroup v2 directory.
    pub cgroup_id: u64,
}

crate::assert_size!(PidNsSeen, 16);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integer fields, padding is a named field (checked by `assert_size!`).
unsafe impl aya::Pod for PidNsSeen {}
