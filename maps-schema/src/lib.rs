//! The kernel/user ABI of swoll, defined once.
//!
//! Every type that crosses the kernel boundary — map keys and values, the load-time globals and
//! the names the loader looks things up by — lives here, so the probes (built for
//! `bpfel-unknown-none`) and userspace read and write the very same `#[repr(C)]` layouts. Types
//! carry padding as named fields and no `bool`, so every byte of them is initialised and they are
//! sound `aya::Pod`s; each has a compile-time size check, because a silent layout change would
//! make userspace misread the kernel's counters.
#![no_std]

pub mod config;
pub mod histogram;
pub mod metrics;
pub mod pidns;
pub mod slots;
pub mod start;
pub mod stats;
pub mod thread;
pub mod trace;

/// Version of this ABI. Bump it whenever a map's key or value layout changes, so that an agent
/// can tell maps written by another layout apart from its own.
pub const ABI_VERSION: u32 = 5;

/// Names of the programs in the probes' object file, as userspace looks them up.
pub mod programs {
    /// `raw_tracepoint/sys_enter`: records the start time of each syscall.
    pub const SYS_ENTER: &str = "sys_enter";
    /// `raw_tracepoint/sys_exit`: counts and times each syscall by (pid-ns, nr, errno).
    pub const SYS_EXIT: &str = "sys_exit";
    /// `raw_tracepoint/sys_enter`, trace mode: filters and saves the arguments of traced calls.
    pub const TRACE_ENTER: &str = "trace_enter";
    /// `raw_tracepoint/sys_exit`, trace mode: sends each traced call to the ring buffer.
    pub const TRACE_EXIT: &str = "trace_exit";
}

/// Asserts at compile time that a type has the size the ABI promises.
#[macro_export]
#[doc(hidden)]
macro_rules! assert_size {
    ($ty:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
    };
}
