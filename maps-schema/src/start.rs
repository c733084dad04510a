//! Syscall start times, per thread, from `sys_enter` to `sys_exit`, and where a thread's slot
//! is.
//!
//! The start time is [`crate::thread::ThreadSlot::start`], in a slot indexed by the low bits of
//! the thread id: `sys_enter` stores, and `sys_exit` reads and clears, with no hash, no lock and
//! no allocation. A hash keyed by thread, as swoll first had, cost more than everything else the
//! probes do together (issue #5's measurements).
//!
//! Thread ids are below `PID_MAX_LIMIT` (2^22), and the loader sizes the array to the running
//! kernel's `pid_max` rounded up to a power of two, at most [`MAX_SLOT_BITS`]: below that every
//! thread has a slot of its own. Above it two live threads can share a slot; the value carries
//! the thread id's remaining high bits ([`tag`]), so a thread never takes another's start, and
//! a start that replaces another thread's unfinished one is counted
//! (`Stat::StartDisplaced`). A value is one `u64`, written and read whole, so a shared slot
//! is never torn.
//!
//! `exit` and `exit_group` never return: `sys_enter` stores no start for them, so a dead
//! thread leaves no start behind for the next thread that reuses its id.

/// Bits of thread id that index the array at most: 2^20 slots of 16 bytes, 16 MiB.
pub const MAX_SLOT_BITS: u32 = 20;

/// Bits of thread id that index the array at least (the smallest `pid_max` is 2^15).
pub const MIN_SLOT_BITS: u32 = 15;

/// Bits of a value that hold the start time: the low 56 bits of `bpf_ktime_get_ns()` (2.28
/// years). Durations are computed modulo 2^56, so they are exact below that.
pub const TIME_BITS: u32 = 56;

/// Mask of the time bits of a value.
pub const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// The value stored for thread `tid` entering a syscall at `now_ns`: its tag above the time.
/// Never zero in practice (zero is an empty slot): the time bits are nanoseconds since boot.
#[inline(always)]
pub const fn value(tid: u32, slot_bits: u32, now_ns: u64) -> u64 {
    ((tag(tid, slot_bits) as u64) << TIME_BITS) | (now_ns & TIME_MASK)
}

/// The part of `tid` its slot index does not say: the high bits above `slot_bits`.
#[inline(always)]
pub const fn tag(tid: u32, slot_bits: u32) -> u32 {
    // A shift by 32 or more would be undefined: the loader keeps `slot_bits` within
    // [`MIN_SLOT_BITS`, `MAX_SLOT_BITS`]; the mask repeats that bound for the verifier.
    tid >> (slot_bits & 31)
}

/// Slots per 64-byte cache line (a slot is 16 bytes).
const LINE_SLOTS_BITS: u32 = 2;

/// The slot of thread `tid`: the low `slot_bits` bits of `tid`, rotated right by two bits, so
/// that threads with consecutive ids (the threads of one process, mostly) never share a cache
/// line: every syscall writes its thread's slot twice, and two CPUs writing one line would
/// pass it back and forth on every call. A rotation maps the ids below `2^slot_bits` one to
/// one onto the slots, so a thread's slot is still its own wherever it was.
#[inline(always)]
pub const fn slot(tid: u32, slot_bits: u32) -> u32 {
    // The loader keeps `slot_bits` within [`MIN_SLOT_BITS`, `MAX_SLOT_BITS`]; the masks repeat
    // that bound for the verifier.
    let bits = slot_bits & 31;
    let low = tid & ((1 << bits) - 1);
    let line = low & ((1 << LINE_SLOTS_BITS) - 1);
    (line << ((bits - LINE_SLOTS_BITS) & 31)) | (low >> LINE_SLOTS_BITS)
}

/// Nanoseconds from `value` (stored by [`value`]) to `now_ns`, if `value` is `tid`'s.
#[inline(always)]
pub const fn elapsed(value: u64, tid: u32, slot_bits: u32, now_ns: u64) -> Option<u64> {
    if value == 0 || (value >> TIME_BITS) != tag(tid, slot_bits) as u64 {
        return None;
    }
    Some(now_ns.wrapping_sub(value) & TIME_MASK)
}

/// Slot bits for a kernel whose `pid_max` is `pid_max`: enough for every thread id to have its
/// own slot, within [`MIN_SLOT_BITS`, `MAX_SLOT_BITS`].
pub const fn slot_bits_for(pid_max: u32) -> u32 {
    let mut bits = MIN_SLOT_BITS;
    while bits < MAX_SLOT_BITS && (1u64 << bits) < pid_max as u64 {
        bits += 1;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_finds_its_own_start_and_no_other() {
        let bits = 16;
        let v = value(70_000, bits, 1_000);
        assert_eq!(slot(70_000, bits), slot(70_000 - 65_536, bits));
        assert_eq!(elapsed(v, 70_000, bits, 1_250), Some(250));
        // Same slot, other thread.
        assert_eq!(slot(70_000 - 65_536, bits), slot(70_000, bits));
        assert_eq!(elapsed(v, 70_000 - 65_536, bits, 1_250), None);
        assert_eq!(elapsed(0, 5, bits, 1_250), None);
    }

    #[test]
    fn durations_survive_the_time_bits_wrapping() {
        let bits = 20;
        let start = TIME_MASK - 10;
        let v = value(4_194_303, bits, start);
        assert_eq!(elapsed(v, 4_194_303, bits, start + 25), Some(25));
    }

    #[test]
    fn every_id_below_the_slot_count_has_its_own_slot_and_neighbours_a_line_apart() {
        let bits = MIN_SLOT_BITS;
        let mut seen = [false; 1 << MIN_SLOT_BITS];
        for tid in 0..1u32 << bits {
            let s = slot(tid, bits) as usize;
            assert!(!seen[s], "thread {tid} shares slot {s}");
            seen[s] = true;
            let next = slot(tid + 1, bits) as usize;
            assert_ne!(
                s / 4,
                next / 4,
                "threads {tid} and {} share a cache line",
                tid + 1
            );
        }
    }

    #[test]
    fn slot_bits_cover_pid_max_within_bounds() {
        assert_eq!(slot_bits_for(32_768), 15);
        assert_eq!(slot_bits_for(32_769), 16);
        assert_eq!(slot_bits_for(1 << 20), 20);
        assert_eq!(slot_bits_for(4_194_304), 20);
        assert_eq!(slot_bits_for(0), 15);
    }
}
