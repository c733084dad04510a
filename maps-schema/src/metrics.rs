//! The always-on metrics map: per-CPU counts and time per (pid namespace, syscall, errno).
//!
//! An LRU per-CPU hash: per-CPU values need no atomics on the syscall path, and LRU bounds the
//! kernel memory however many pid namespaces come and go. Userspace sums the CPUs' values.

/// Name of the map in the probes' object file.
pub const MAP: &str = "SWOLL_METRICS";

/// Default number of entries; the loader sets the real size at load time (`--map-size`).
pub const DEFAULT_ENTRIES: u32 = 65_536;

/// The key: which syscall, made from which pid namespace, ending how.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricKey {
    /// Inode number of the caller's pid namespace (what `/proc/PID/ns/pid` shows).
    pub pid_ns: u32,
    /// Syscall number, in the native ABI of the kernel.
    pub nr: u32,
    /// `errno` of a failed call, 0 for success.
    pub errno: u32,
}

crate::assert_size!(MetricKey, 12);

/// The value, one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricValue {
    /// Calls that returned.
    pub count: u64,
    /// Sum of their durations in nanoseconds (0 when timing is off).
    pub time_ns: u64,
}

crate::assert_size!(MetricValue, 16);

/// Largest errno the kernel returns (`MAX_ERRNO` in `include/linux/err.h`): return values in
/// `-MAX_ERRNO..0` are errors, everything else (addresses from `mmap`, say) is success.
pub const MAX_ERRNO: i64 = 4095;

/// The errno of a syscall's raw return value, or 0 for success.
#[inline(always)]
pub const fn errno_of(ret: i64) -> u32 {
    if ret < 0 && ret >= -MAX_ERRNO {
        (-ret) as u32
    } else {
        0
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only `u32` fields, no padding (checked by `assert_size!`).
unsafe impl aya::Pod for MetricKey {}
#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only `u64` fields, no padding (checked by `assert_size!`).
unsafe impl aya::Pod for MetricValue {}

#[cfg(test)]
mod tests {
    use super::errno_of;

    #[test]
    fn errno_covers_the_whole_error_range() {
        assert_eq!(errno_of(0), 0);
        assert_eq!(errno_of(42), 0);
        assert_eq!(errno_of(-2), 2);
        assert_eq!(errno_of(-512), 512);
        assert_eq!(errno_of(-4095), 4095);
        assert_eq!(errno_of(-4096), 0);
        assert_eq!(errno_of(i64::MIN), 0);
    }
}
