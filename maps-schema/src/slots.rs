//! Namespace slots: counting without a hash on the common path.
//!
//! Each pid namespace the probes see gets a *slot*, an index into [`COUNTS_MAP`], a per-CPU
//! array whose value holds one [`MetricValue`] per syscall number: a call that returns OK adds
//! itself at `values[nr]` of its namespace's slot, a pointer add and two stores where the
//! hash it replaces cost a helper call and a hash walk. A failed call goes to the slot's small
//! table of (nr, errno) entries ([`SlotError`]). OK calls of numbers at or above [`NRS`],
//! failed calls that find no entry, and the calls of namespaces that found no free slot go to
//! the metrics hash as before, keyed by (pid namespace, nr, errno), so nothing is lost and
//! nothing merged when the slots run out ([`crate::stats::Stat::NsSlotsFull`] counts those
//! calls).
//!
//! Slots are allocated by the probes, the first time a thread of a namespace is seen without a
//! cached slot (see [`crate::thread`]): [`NS_MAP`] says which slot a namespace has; if none, one
//! is popped from [`FREE_MAP`], a queue the loader fills with every slot. The agent gives a slot
//! back when it retires the namespace (all its processes gone): it deletes the namespace's
//! entry, bumps the slot's generation in [`OWNERS_MAP`] (threads that cached the old generation
//! look their slot up again), zeroes its counts and pushes it onto the queue, behind every slot
//! freed before it: the slot reused next is the one retired longest ago. The slot count is the
//! bound on live namespaces counted without a hash (`--ns-slots`).
//!
//! The agent reads only the slots that changed: each CPU's value carries the read epoch it last
//! counted in, and the first call in an epoch on that CPU stores the epoch in the slot's
//! [`SlotOwner::touched`] too (once per CPU and epoch, so no cache line is written by two CPUs
//! per call). The agent bumps the epoch at each read and re-reads the slots touched in the last
//! two epochs: a call that read the previous epoch just before the bump is still seen.
use crate::metrics::MetricValue;

/// Name of the per-CPU array of [`SlotCounts`], one per slot.
pub const COUNTS_MAP: &str = "SWOLL_COUNTS";

/// Name of the array of [`SlotOwner`], one per slot.
pub const OWNERS_MAP: &str = "SWOLL_SLOT_OWNERS";

/// Name of the hash of pid namespace inode (`u32`) → slot (`u32`).
pub const NS_MAP: &str = "SWOLL_NS_SLOTS";

/// Name of the queue of free slots (`u32`).
pub const FREE_MAP: &str = "SWOLL_FREE_SLOTS";

/// Syscall numbers a slot counts: `0..NRS`. Both architectures number their syscalls below it
/// (x86_64's x32 calls, with bit 30 set, are above: they go to the hash).
pub const NRS: usize = 512;

/// Entries of a slot's table of failed calls (see [`SlotError`]).
pub const ERRORS: usize = 64;

/// Entries of the error table a call looks at before it goes to the hash.
pub const ERROR_PROBES: usize = 4;

/// Default number of slots: 256 × 9.5 KiB per CPU.
pub const DEFAULT_SLOTS: u32 = 256;

/// Most slots a load can have: the index is 16 bits of a thread's cached word.
pub const MAX_SLOTS: u32 = 1 << 16;

/// Largest generation of a slot (15 bits of a thread's cached word).
pub const MAX_GENERATION: u32 = (1 << 15) - 1;

/// One CPU's counts of one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotCounts {
    /// The read epoch this CPU last counted into the slot in.
    pub epoch: u64,
    /// Calls that returned OK, and their time, by syscall number.
    pub values: [MetricValue; NRS],
    /// Failed calls: a small open-addressed table of (nr, errno), filled in place by this CPU
    /// (per-CPU, so no other writer), looked up at [`ERROR_PROBES`] entries from
    /// [`entry_index`]; a key that finds none of them free or its own goes to the hash.
    pub errors: [SlotError; ERRORS],
}

crate::assert_size!(SlotCounts, 8 + 16 * NRS + 24 * ERRORS);

impl SlotCounts {
    /// No calls.
    pub const ZERO: Self = SlotCounts {
        epoch: 0,
        values: [MetricValue {
            count: 0,
            time_ns: 0,
        }; NRS],
        errors: [SlotError {
            nr: 0,
            errno: 0,
            value: MetricValue {
                count: 0,
                time_ns: 0,
            },
        }; ERRORS],
    };
}

impl SlotCounts {
    /// This CPU's calls of syscall `nr` ending in `errno` (0: OK). A key has at most one entry
    /// in the error table: the probes claim the first free entry of its search, and entries
    /// are only ever freed all at once.
    pub fn value_of(&self, nr: u32, errno: u32) -> MetricValue {
        let found = if errno == 0 {
            self.values.get(nr as usize)
        } else {
            self.errors
                .iter()
                .find(|e| e.errno == errno && e.nr == nr)
                .map(|e| &e.value)
        };
        found.copied().unwrap_or_default()
    }
}

/// One entry of a slot's table of failed calls; `errno` 0 is a free entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotError {
    /// The syscall number.
    pub nr: u32,
    /// The errno, never 0 in a used entry.
    pub errno: u32,
    /// The calls and their time.
    pub value: MetricValue,
}

crate::assert_size!(SlotError, 24);

/// Where the search for (`nr`, `errno`) in a slot's table of [`ERRORS`] entries starts (the
/// error table here, and the histogram table of [`crate::histogram::SlotHistograms`]): a
/// multiplicative hash, so that the few errnos one syscall returns land apart.
#[inline(always)]
pub const fn entry_index(nr: u32, errno: u32) -> usize {
    let h =
        (nr.wrapping_mul(0x9E37_79B1) ^ errno.wrapping_mul(0x85EB_CA77)).wrapping_mul(0xC2B2_AE3D);
    (h >> 26) as usize & (ERRORS - 1)
}

/// Who owns a slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotOwner {
    /// The slot's generation (high 32 bits) and its pid namespace's inode (low 32 bits, 0 while
    /// free), in one word that is written and read whole.
    pub owner: u64,
    /// The last read epoch in which a call was counted into the slot.
    pub touched: u32,
    /// Padding.
    pub _pad: u32,
}

crate::assert_size!(SlotOwner, 16);

impl SlotOwner {
    /// A free slot of generation `generation`.
    pub const fn free(generation: u32) -> Self {
        SlotOwner {
            owner: owner(generation, 0),
            touched: 0,
            _pad: 0,
        }
    }

    /// The pid namespace counted into the slot, 0 while it is free.
    pub const fn pid_ns(&self) -> u32 {
        owner_pid_ns(self.owner)
    }

    /// The slot's generation.
    pub const fn generation(&self) -> u32 {
        owner_generation(self.owner)
    }
}

/// The owner word of a slot of `generation` given to `pid_ns`.
#[inline(always)]
pub const fn owner(generation: u32, pid_ns: u32) -> u64 {
    ((generation as u64) << 32) | pid_ns as u64
}

/// The pid namespace in an owner word, 0 for a free slot.
#[inline(always)]
pub const fn owner_pid_ns(owner: u64) -> u32 {
    owner as u32
}

/// The generation in an owner word.
#[inline(always)]
pub const fn owner_generation(owner: u64) -> u32 {
    (owner >> 32) as u32
}

/// The generation after `generation`: 1 to [`MAX_GENERATION`] and round again, never 0, which
/// an empty thread word holds.
pub const fn next_generation(generation: u32) -> u32 {
    if generation >= MAX_GENERATION {
        1
    } else {
        generation + 1
    }
}

/// Whether a slot touched in epoch `touched` must be read again at epoch `epoch`: touched in
/// this epoch or the two before it (wrapping).
pub const fn recently_touched(touched: u32, epoch: u32) -> bool {
    epoch.wrapping_sub(touched) <= 2
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only `u64` fields (and `MetricValue`s of `u64`s), no padding (checked by
// `assert_size!`).
unsafe impl aya::Pod for SlotCounts {}
#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, two `u32`s and a `MetricValue` of `u64`s, no padding (checked by
// `assert_size!`).
unsafe impl aya::Pod for SlotError {}
#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, a `u64` and two `u32`s, no padding (checked by `assert_size!`).
unsafe impl aya::Pod for SlotOwner {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_skip_zero() {
        assert_eq!(next_generation(0), 1);
        assert_eq!(next_generation(1), 2);
        assert_eq!(next_generation(MAX_GENERATION), 1);
    }

    #[test]
    fn owners_round_trip() {
        let o = SlotOwner {
            owner: owner(7, 4_026_531_836),
            touched: 3,
            _pad: 0,
        };
        assert_eq!(o.pid_ns(), 4_026_531_836);
        assert_eq!(o.generation(), 7);
        assert_eq!(SlotOwner::free(7).pid_ns(), 0);
    }

    #[test]
    fn entry_indexes_stay_in_the_table() {
        for nr in 0..600 {
            for errno in 1..140 {
                assert!(entry_index(nr, errno) < ERRORS);
            }
        }
        assert_ne!(entry_index(257, 2), entry_index(257, 13));
    }

    #[test]
    fn recent_epochs_wrap() {
        assert!(recently_touched(5, 5));
        assert!(recently_touched(3, 5));
        assert!(!recently_touched(2, 5));
        assert!(recently_touched(u32::MAX, 1));
        assert!(!recently_touched(6, 5));
    }
}
