//! Each thread's pid namespace, cached in the kernel so that `sys_exit` walks
//! `task->thread_pid->numbers[level].ns` once per thread instead of once per call.
//!
//! An array of `u64` indexed like the start times (see [`crate::start::slot`]); a value holds the
//! namespace inode under a [`fingerprint`] of the thread's id and creation time. A thread's pid
//! namespace never changes (`unshare` and `setns` change its children's), and a later thread
//! that reuses the id, or another that shares the slot, has another fingerprint, so a hit is
//! always the calling thread's own namespace. Only with `bpf_get_current_task_btf` (5.11+),
//! where the creation time is one direct load; older kernels walk the pointers every call.

/// Name of the map in the probes' object file.
pub const MAP: &str = "SWOLL_PIDNS_CACHE";

/// A 32-bit digest of (thread id, `task->start_time`): the splitmix64 finalizer, so that two
/// tasks that differ in any bit of either differ in about half of the digest's bits.
#[inline(always)]
pub const fn fingerprint(tid: u32, start_time: u64) -> u32 {
    let mut z = start_time ^ (tid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// The value cached for a thread of fingerprint `fingerprint` in pid namespace `pid_ns`.
#[inline(always)]
pub const fn value(fingerprint: u32, pid_ns: u32) -> u64 {
    ((fingerprint as u64) << 32) | pid_ns as u64
}

/// The pid namespace in `value` if it was cached for `fingerprint` (an empty slot, zero, holds
/// none: no namespace has inode 0).
#[inline(always)]
pub const fn pid_ns(value: u64, fingerprint: u32) -> Option<u32> {
    let pid_ns = value as u32;
    if pid_ns != 0 && (value >> 32) as u32 == fingerprint {
        Some(pid_ns)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_finds_its_namespace_and_a_reused_id_does_not() {
        let me = fingerprint(4242, 1_000_000_123);
        let v = value(me, 4_026_531_836);
        assert_eq!(pid_ns(v, me), Some(4_026_531_836));
        assert_eq!(pid_ns(v, fingerprint(4242, 1_000_000_124)), None);
        assert_eq!(
            pid_ns(v, fingerprint(4242 + (1 << 20), 1_000_000_123)),
            None
        );
        assert_eq!(pid_ns(0, fingerprint(0, 0)), None);
    }
}
