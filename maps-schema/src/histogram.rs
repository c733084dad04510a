//! The latency histograms of `--histogram`: per (pid namespace, syscall, errno), how many calls
//! took how long, in log2 buckets of nanoseconds.
//!
//! An LRU per-CPU hash keyed like the metrics map, for the same reasons: no atomics on the
//! syscall path, and memory bounded however many pid namespaces come and go. It is preallocated
//! like every LRU map (`entries × CPUs × 256` bytes), which is why it is sized only when
//! `--histogram` is on. Buckets are log2 so that one in-kernel shift-and-compare places a call,
//! whatever its latency, from nanoseconds to seconds.
//!
//! A pid namespace with a slot (see [`crate::slots`]) keeps its histograms in its slot's
//! [`SlotHistograms`] instead, where they fit: a table in a per-CPU array, found without a hash
//! lookup. A key that finds no place there is kept in the hash as before; a key may have
//! buckets in both (one CPU's table full, another's not), and userspace adds them up.

/// Name of the map in the probes' object file.
pub const MAP: &str = "SWOLL_HISTOGRAM";

/// Default number of entries; the loader sets the real size at load time (`--map-size` when
/// histograms are on, the least the kernel accepts when they are off).
pub const DEFAULT_ENTRIES: u32 = crate::metrics::DEFAULT_ENTRIES;

/// Buckets per key. Bucket `i` holds the calls that took more than `2^i` and at most
/// `2^(i+1)` nanoseconds, so that `2^(i+1)` ns is a true Prometheus `le` bound; bucket 0 also
/// holds 0 to 2 ns, and the last bucket everything over `2^(BUCKETS-1)` ns (about 2.1 s), its
/// bound being `+Inf`.
pub const BUCKETS: usize = 32;

/// The value, one per CPU: calls per bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyBuckets {
    /// Calls per bucket, indexed by [`bucket`].
    pub buckets: [u64; BUCKETS],
}

crate::assert_size!(LatencyBuckets, 8 * BUCKETS);

impl LatencyBuckets {
    /// No calls: what a new key starts from.
    pub const ZERO: LatencyBuckets = LatencyBuckets {
        buckets: [0; BUCKETS],
    };
}

impl Default for LatencyBuckets {
    fn default() -> Self {
        Self::ZERO
    }
}

/// Name of the per-CPU array of [`SlotHistograms`], one per namespace slot with
/// `--histogram` (one unused entry without).
pub const SLOTS_MAP: &str = "SWOLL_SLOT_HISTOGRAMS";

/// Entries of a slot's histogram table: as many as its error table, so that
/// [`crate::slots::entry_index`] starts the search in both.
pub const SLOT_KEYS: usize = crate::slots::ERRORS;

/// Entries of the histogram table a call looks at before it goes to the hash. More than the
/// error table's: every key of a namespace, OK or not, competes for these entries.
pub const SLOT_PROBES: usize = 8;

/// One CPU's histograms of one namespace slot: a small open-addressed table of (nr, errno),
/// filled in place by this CPU (per-CPU, so no other writer) and emptied only all at once (when
/// the agent gives the slot back), so a key has at most one entry per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHistograms {
    /// The table, searched from [`crate::slots::entry_index`].
    pub entries: [SlotHistogram; SLOT_KEYS],
}

crate::assert_size!(SlotHistograms, SLOT_KEYS * (8 + 8 * BUCKETS));

impl SlotHistograms {
    /// No calls.
    pub const ZERO: Self = SlotHistograms {
        entries: [SlotHistogram {
            key: 0,
            _pad: 0,
            buckets: LatencyBuckets::ZERO,
        }; SLOT_KEYS],
    };
}

/// One entry of a slot's histogram table; `key` 0 is a free entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHistogram {
    /// The (nr, errno) of the entry as [`slot_key`] encodes it, 0 while free.
    pub key: u32,
    /// Padding.
    pub _pad: u32,
    /// Calls per bucket.
    pub buckets: LatencyBuckets,
}

crate::assert_size!(SlotHistogram, 8 + 8 * BUCKETS);

impl SlotHistogram {
    /// The (nr, errno) of a used entry.
    pub const fn nr_errno(&self) -> Option<(u32, u32)> {
        match self.key.checked_sub(1) {
            Some(k) => Some((k & 0xffff, k >> 16)),
            None => None,
        }
    }
}

/// The table key of syscall `nr` ending in `errno`: never 0, one per (nr, errno); `None` for a
/// number or errno too large to encode (the call goes to the hash).
#[inline(always)]
pub const fn slot_key(nr: u32, errno: u32) -> Option<u32> {
    if nr > 0xffff || errno > 0x7fff {
        return None;
    }
    Some(((errno << 16) | nr) + 1)
}

/// The bucket of a call that took `ns` nanoseconds: `ceil(log2(ns)) - 1`, clamped to
/// `0..BUCKETS`.
///
/// A binary search of five compares and no loop, so the probes can run it on any kernel's
/// verifier; the result is masked so the verifier can prove the index in bounds.
#[inline(always)]
pub const fn bucket(ns: u64) -> usize {
    // (2^i, 2^(i+1)] is [2^i, 2^(i+1)) shifted by one: floor(log2(ns - 1)).
    let above = ns.saturating_sub(1);
    if above >= 1 << (BUCKETS - 1) {
        return BUCKETS - 1;
    }
    let mut t = above as u32;
    let mut i = 0;
    if t >= 1 << 16 {
        i += 16;
        t >>= 16;
    }
    if t >= 1 << 8 {
        i += 8;
        t >>= 8;
    }
    if t >= 1 << 4 {
        i += 4;
        t >>= 4;
    }
    if t >= 1 << 2 {
        i += 2;
        t >>= 2;
    }
    if t >= 1 << 1 {
        i += 1;
    }
    i & (BUCKETS - 1)
}

/// The upper bound of bucket `i` in nanoseconds (`2^(i+1)`); `None` for the last bucket,
/// which is unbounded (`+Inf`).
pub const fn upper_bound_ns(i: usize) -> Option<u64> {
    if i + 1 < BUCKETS {
        Some(1 << (i + 1))
    } else {
        None
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, an array of `u64`, no padding (checked by `assert_size!`).
unsafe impl aya::Pod for LatencyBuckets {}
#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, two `u32`s and an array of `u64`, no padding (checked by `assert_size!`).
unsafe impl aya::Pod for SlotHistogram {}
#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, an array of `SlotHistogram`s, no padding (checked by `assert_size!`).
unsafe impl aya::Pod for SlotHistograms {}

#[cfg(test)]
mod tests {
    use super::{BUCKETS, SlotHistogram, bucket, slot_key, upper_bound_ns};

    #[test]
    fn slot_keys_round_trip_and_are_never_zero() {
        for (nr, errno) in [(0, 0), (1, 0), (257, 2), (0xffff, 0x7fff), (0, 0x7fff)] {
            let key = slot_key(nr, errno).expect("encodable");
            assert_ne!(key, 0);
            let entry = SlotHistogram {
                key,
                _pad: 0,
                buckets: super::LatencyBuckets::ZERO,
            };
            assert_eq!(entry.nr_errno(), Some((nr, errno)));
        }
        assert_eq!(slot_key(0x1_0000, 0), None);
        assert_eq!(slot_key(0, 0x8000), None);
        let free = SlotHistogram {
            key: 0,
            _pad: 0,
            buckets: super::LatencyBuckets::ZERO,
        };
        assert_eq!(free.nr_errno(), None);
    }

    #[test]
    fn buckets_are_log2_with_inclusive_upper_bounds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 0);
        assert_eq!(bucket(3), 1);
        assert_eq!(bucket(4), 1);
        assert_eq!(bucket(5), 2);
        assert_eq!(bucket(1023), 9);
        assert_eq!(bucket(1024), 9);
        assert_eq!(bucket(1025), 10);
        assert_eq!(bucket(5_000_000), 22);
        assert_eq!(bucket((1 << 31) - 1), 30);
        assert_eq!(bucket(1 << 31), 30);
        assert_eq!(bucket((1 << 31) + 1), 31);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn every_bucket_holds_what_its_bound_says() {
        for i in 0..BUCKETS - 1 {
            let le = upper_bound_ns(i).expect("finite");
            assert_eq!(bucket(le), i, "le {le}");
            assert_eq!(bucket(le + 1), i + 1, "le {le} + 1");
        }
        assert_eq!(upper_bound_ns(BUCKETS - 1), None);
    }
}
