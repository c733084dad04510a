//! One slot per thread, from `sys_enter` to `sys_exit` and from one call to the next: when the
//! thread entered its current syscall and which namespace slot counts its calls.
//!
//! An array of [`ThreadSlot`] indexed by [`crate::start::slot`]: `sys_exit` reads the one slot
//! for both, with no hash and no lock (the verifier inlines an array lookup into a bounds check
//! and an add). The two words are written and read whole and each carries its own check (the
//! start its thread-id tag, the namespace word a [`fingerprint`] of the thread), so two threads
//! that share a slot (thread ids above the array's size) never take each other's values, even
//! half of them.
//!
//! The namespace word caches the thread's pid namespace *slot* (see [`crate::slots`]) under a
//! fingerprint of the thread's id and creation time: a thread's pid namespace never changes
//! (`unshare` and `setns` change its children's), and a later thread that reuses the id has
//! another fingerprint. The slot's generation is cached beside it, so a slot the agent recycled
//! is never counted into by a thread that still remembers it. Only with
//! `bpf_get_current_task_btf` (5.11+), where the creation time is one direct load; older kernels
//! walk the task's pointers and count in the hash on every call.

/// Name of the map in the probes' object file.
pub const MAP: &str = "SWOLL_THREADS";

/// A thread's slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSlot {
    /// When the thread entered its current syscall (see [`crate::start`]), 0 for none.
    pub start: u64,
    /// The thread's namespace slot under its fingerprint (see [`ns_word`]), 0 for none.
    pub ns: u64,
}

crate::assert_size!(ThreadSlot, 16);

/// What a thread's namespace word says, once its fingerprint matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    /// The thread is in the host's pid namespace, which is not counted.
    Host,
    /// The thread counts into namespace slot `slot`, while the slot's generation is `gen`.
    Slot {
        /// Index into the slot maps.
        slot: u32,
        /// The generation of the slot the thread saw (see [`crate::slots::SlotOwner`]).
        generation: u32,
    },
}

/// The low half of a namespace word that means [`Cached::Host`].
const HOST: u32 = u32::MAX;

/// A 32-bit digest of (thread id, `task->start_time`): the splitmix64 finalizer, so that two
/// tasks that differ in any bit of either differ in about half of the digest's bits.
#[inline(always)]
pub const fn fingerprint(tid: u32, start_time: u64) -> u32 {
    let mut z = start_time ^ (tid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// The namespace word of a thread of fingerprint `fingerprint` that counts as `cached`. The
/// slot index takes the low 16 bits and the generation the next 16 (see
/// [`crate::slots::MAX_SLOTS`]); generations stay below 2^15 (see
/// [`crate::slots::next_generation`]), so no slot's word is ever [`Cached::Host`]'s.
#[inline(always)]
pub const fn ns_word(fingerprint: u32, cached: Cached) -> u64 {
    let low = match cached {
        Cached::Host => HOST,
        Cached::Slot { slot, generation } => ((generation & 0xffff) << 16) | (slot & 0xffff),
    };
    ((fingerprint as u64) << 32) | low as u64
}

/// What `word` caches if it was cached for `fingerprint`. An empty word (zero) caches nothing
/// that can be used: generation 0 is never a slot's (see [`crate::slots::next_generation`]).
#[inline(always)]
pub const fn cached(word: u64, fingerprint: u32) -> Option<Cached> {
    if (word >> 32) as u32 != fingerprint {
        return None;
    }
    let low = word as u32;
    if low == HOST {
        return Some(Cached::Host);
    }
    Some(Cached::Slot {
        slot: low & 0xffff,
        generation: low >> 16,
    })
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only `u64` fields, no padding (checked by `assert_size!`).
unsafe impl aya::Pod for ThreadSlot {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_finds_its_slot_and_a_reused_id_does_not() {
        let me = fingerprint(4242, 1_000_000_123);
        let mine = Cached::Slot {
            slot: 77,
            generation: 3,
        };
        let w = ns_word(me, mine);
        assert_eq!(cached(w, me), Some(mine));
        assert_eq!(cached(w, fingerprint(4242, 1_000_000_124)), None);
        assert_eq!(
            cached(w, fingerprint(4242 + (1 << 20), 1_000_000_123)),
            None
        );
        assert_eq!(cached(ns_word(me, Cached::Host), me), Some(Cached::Host));
        let slot = 65_535;
        let generation = crate::slots::MAX_GENERATION;
        assert_eq!(
            cached(ns_word(me, Cached::Slot { slot, generation }), me),
            Some(Cached::Slot { slot, generation })
        );
    }
}
