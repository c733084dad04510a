//! Which counter a call of the current thread goes to: its namespace's slot (see
//! [`swoll_maps_schema::slots`]), the metrics hash, or none (the host, when it is not counted).
use swoll_maps_schema::{
    config::{FLAG_COUNT_HOST, KernelOffsets},
    histogram,
    slots::{self, SlotOwner},
    stats::Stat,
    thread::{self, Cached, ThreadSlot},
};

use crate::{config, maps, task};

/// `BPF_NOEXIST` from `include/uapi/linux/bpf.h`.
const BPF_NOEXIST: u64 = 1;

/// Where the current thread's calls are counted. A plain struct, not an enum with a payload per
/// case: LLVM merges the payloads' registers across cases, which the verifier refuses as reads
/// of uninitialised registers.
pub struct Counter {
    /// The thread's pid namespace.
    pub pid_ns: u32,
    /// Its namespace slot, [`NO_SLOT`] for none (counted in the metrics hash: no BTF-typed
    /// task, or no free slot).
    pub slot: u32,
    /// The slot's owner entry, null without a slot.
    pub owner: *mut SlotOwner,
}

/// [`Counter::slot`] of a thread counted in the hash.
pub const NO_SLOT: u32 = u32::MAX;

impl Counter {
    /// Counted in the hash.
    #[inline(always)]
    fn hash(pid_ns: u32) -> Self {
        Counter {
            pid_ns,
            slot: NO_SLOT,
            owner: core::ptr::null_mut(),
        }
    }
}

/// The current thread's [`Counter`], `None` for a thread of the host's pid namespace when the
/// host is not counted: from its cached namespace word in `thread` when the word is
/// its own and the slot's generation unchanged; otherwise the pid namespace is walked (`task`,
/// the BTF-typed current task, when the kernel has one), given a slot if it has none, and the
/// result cached.
#[inline(always)]
pub fn counter(
    flags: u32,
    off: &KernelOffsets,
    task: Option<*const u8>,
    thread: Option<*mut ThreadSlot>,
    pid_tgid: u64,
) -> Result<Option<Counter>, i32> {
    let host = |pid_ns: u32| flags & FLAG_COUNT_HOST == 0 && pid_ns == config::host_pid_ns();
    let (Some(task_ptr), Some(thread)) = (task, thread) else {
        let pid_ns = task::pid_ns(off, task)?;
        return Ok((!host(pid_ns)).then(|| Counter::hash(pid_ns)));
    };
    let fingerprint = task::fingerprint(off, task_ptr, pid_tgid as u32);
    // SAFETY: a pointer into the array map's value area, valid for the program's run; one
    // aligned u64 load (see `swoll_maps_schema::thread` for threads that share a slot).
    let word = unsafe { core::ptr::read_volatile(&raw const (*thread).ns) };
    match thread::cached(word, fingerprint) {
        Some(Cached::Host) => return Ok(None),
        Some(Cached::Slot { slot, generation }) => {
            if let Some((word, owner)) = owned(slot)
                && slots::owner_generation(word) == generation
            {
                return Ok(Some(Counter {
                    pid_ns: slots::owner_pid_ns(word),
                    slot,
                    owner,
                }));
            }
        }
        None => {}
    }
    let pid_ns = task::pid_ns(off, task)?;
    let (cached, counter) = if host(pid_ns) {
        (Cached::Host, None)
    } else {
        match allocate(pid_ns) {
            Some((slot, generation, owner)) => (
                Cached::Slot { slot, generation },
                Some(Counter {
                    pid_ns,
                    slot,
                    owner,
                }),
            ),
            None => return Ok(Some(Counter::hash(pid_ns))),
        }
    };
    // SAFETY: as the load above; one aligned u64 store.
    unsafe {
        core::ptr::write_volatile(&raw mut (*thread).ns, thread::ns_word(fingerprint, cached))
    };
    Ok(counter)
}

/// The owner word of `slot` and its owner entry, if the slot is owned.
#[inline(always)]
fn owned(slot: u32) -> Option<(u64, *mut SlotOwner)> {
    let owner = maps::SWOLL_SLOT_OWNERS.get_ptr_mut(slot)?;
    // SAFETY: a pointer into the array map's value area, valid for the program's run; the owner
    // word is one aligned u64 load, written whole by whoever changes it.
    let word = unsafe { core::ptr::read_volatile(&raw const (*owner).owner) };
    (slots::owner_pid_ns(word) != 0).then_some((word, owner))
}

/// The slot of `pid_ns` with its generation and owner entry: the one it has, or a free one
/// given to it now. `None` when no slot is free (counted: the call goes to the hash).
#[inline(always)]
fn allocate(pid_ns: u32) -> Option<(u32, u32, *mut SlotOwner)> {
    let of = |slot: u32| {
        let (word, owner) = owned(slot)?;
        (slots::owner_pid_ns(word) == pid_ns).then_some((
            slot,
            slots::owner_generation(word),
            owner,
        ))
    };
    // SAFETY: the value is a `u32` copied out at once; the map's values are never freed while
    // the program runs.
    if let Some(&slot) = unsafe { maps::SWOLL_NS_SLOTS.get(pid_ns) } {
        return of(slot);
    }
    let Ok(Some(slot)) = maps::SWOLL_FREE_SLOTS.pop() else {
        maps::count(Stat::NsSlotsFull);
        return None;
    };
    let Some(owner) = maps::SWOLL_SLOT_OWNERS.get_ptr_mut(slot) else {
        // Not a slot of this load: the loader fills the queue with valid ones only.
        return None;
    };
    // SAFETY: as in `owned`; one aligned u64 load and store each.
    let generation = unsafe {
        let generation =
            slots::owner_generation(core::ptr::read_volatile(&raw const (*owner).owner));
        core::ptr::write_volatile(&raw mut (*owner).owner, slots::owner(generation, pid_ns));
        generation
    };
    if maps::SWOLL_NS_SLOTS
        .insert(pid_ns, slot, BPF_NOEXIST)
        .is_ok()
    {
        return Some((slot, generation, owner));
    }
    // Another CPU gave the namespace a slot in between: give this one back and use theirs.
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&raw mut (*owner).owner, slots::owner(generation, 0)) };
    let _ = maps::SWOLL_FREE_SLOTS.push(slot, 0);
    // SAFETY: as the lookup above.
    let slot = *unsafe { maps::SWOLL_NS_SLOTS.get(pid_ns) }?;
    of(slot)
}

/// What [`add`] did.
#[derive(PartialEq, Eq)]
pub enum Added {
    /// Counted.
    Counted,
    /// Counted, the syscall's first call in the slot on this CPU: like a new key of the hash,
    /// the caller remembers who made it.
    First,
    /// Not counted: no place in the slot (the caller counts the call in the hash).
    Missing,
}

/// Adds one call of syscall `nr` ending in `errno` (0: OK) and `time_ns` to this CPU's counts
/// of `slot`, and marks the slot touched in this read epoch (once per CPU and epoch). An OK call
/// of `nr` at or above [`slots::NRS`], or a failed one whose (nr, errno) finds neither its entry
/// nor a free one in the error table, is [`Added::Missing`].
#[inline(always)]
pub fn add(slot: u32, owner: *mut SlotOwner, nr: u32, errno: u32, time_ns: u64) -> Added {
    if errno == 0 && nr as usize >= slots::NRS {
        return Added::Missing;
    }
    let Some(counts) = maps::SWOLL_COUNTS.get_ptr_mut(slot) else {
        return Added::Missing;
    };
    let epoch = maps::epoch();
    // SAFETY: `counts` is this CPU's value of a per-CPU array and programs run with migration
    // disabled, so no other program writes it concurrently (and the kernel never runs one
    // program nested in itself on a CPU); every index is masked into bounds. `owner` is a
    // pointer into an array map's value area; `touched` is one aligned u32, written only when
    // it changes (once per epoch).
    unsafe {
        if (*counts).epoch != u64::from(epoch) {
            (*counts).epoch = u64::from(epoch);
            let touched = &raw mut (*owner).touched;
            if core::ptr::read_volatile(touched) != epoch {
                core::ptr::write_volatile(touched, epoch);
            }
        }
        let value = if errno == 0 {
            &mut (*counts).values[nr as usize & (slots::NRS - 1)]
        } else {
            let start = slots::entry_index(nr, errno);
            let mut found = None;
            for i in 0..slots::ERROR_PROBES {
                let entry = &mut (*counts).errors[(start + i) & (slots::ERRORS - 1)];
                if entry.errno == 0 {
                    entry.nr = nr;
                    entry.errno = errno;
                }
                if entry.errno == errno && entry.nr == nr {
                    found = Some(&mut entry.value);
                    break;
                }
            }
            match found {
                Some(value) => value,
                None => return Added::Missing,
            }
        };
        let first = value.count == 0;
        value.count += 1;
        value.time_ns += time_ns;
        if first { Added::First } else { Added::Counted }
    }
}

/// Adds one call of syscall `nr` ending in `errno` (0: OK) that took `time_ns` to this CPU's
/// latency histogram of it in `slot`; false when the slot's table has no entry for it (the
/// caller keeps it in the histogram hash). Called only after [`add`] counted the call in the
/// same slot, which marked the slot touched in this read epoch.
#[inline(always)]
pub fn observe(slot: u32, nr: u32, errno: u32, time_ns: u64) -> bool {
    let Some(key) = histogram::slot_key(nr, errno) else {
        return false;
    };
    let Some(table) = maps::SWOLL_SLOT_HISTOGRAMS.get_ptr_mut(slot) else {
        return false;
    };
    // The mask is already in `bucket`; repeated so the verifier sees the bound at the access.
    let bucket = histogram::bucket(time_ns) & (histogram::BUCKETS - 1);
    let start = slots::entry_index(nr, errno);
    // SAFETY: `table` is this CPU's value of a per-CPU array, written by no other program
    // (see `add`); every index is masked into bounds.
    unsafe {
        for i in 0..histogram::SLOT_PROBES {
            let entry = &mut (*table).entries[(start + i) & (histogram::SLOT_KEYS - 1)];
            if entry.key == 0 {
                entry.key = key;
            }
            if entry.key == key {
                entry.buckets.buckets[bucket] += 1;
                return true;
            }
        }
    }
    false
}
