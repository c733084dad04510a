//! The in-kernel trace filter, reference-counted here.
//!
//! Each running trace holds a slot (0..64); a kernel rule's value is the mask of the slots that
//! want its (pid-ns, syscall) key. Several traces, and several reasons within one trace (two
//! containers of a pod that share a pid namespace), can want the same key: the filter counts
//! them and writes a key's mask only when it changes, deleting the key when no slot wants it,
//! so overlapping traces never remove each other's rules (the original swoll's did). A rule
//! samples at the highest rate (the smallest N of "1 in N") of the traces that want it.
use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use swoll_maps_schema::trace::{ANY_SYSCALL, MAX_TRACES, Rule, RuleKey, SYSCALLS_ENTRIES};

use super::capture;
use crate::{loader::TraceMaps, syscalls::Arch};

/// The kernel's filter map.
pub type Rules = PerCpuHashMap<MapData, RuleKey, Rule>;

/// One trace's slot in the kernel filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u8);

impl Slot {
    /// The slot's index, as the kernel's masks and per-slot arrays number it.
    pub fn index(self) -> u32 {
        u32::from(self.0)
    }

    /// The slot's bit in a rule mask or an event's `traces`.
    pub fn bit(self) -> u64 {
        1 << self.0
    }
}

/// Writes the capture table: what the probe reads for each syscall number.
pub fn write_captures(maps: &mut TraceMaps, capture_bytes: u32) -> Result<(), FilterError> {
    for nr in 0..SYSCALLS_ENTRIES {
        let value = capture::capture_for(Arch::NATIVE, nr, capture_bytes);
        maps.syscalls
            .set(nr, value, 0)
            .map_err(|source| FilterError::Captures { nr, source })?;
    }
    Ok(())
}

/// The filter keys of one pid namespace (or every namespace) for `syscalls` (empty: all).
pub fn keys(pid_ns: u32, syscalls: &[u32]) -> Vec<RuleKey> {
    if syscalls.is_empty() {
        return vec![RuleKey {
            pid_ns,
            nr: ANY_SYSCALL,
        }];
    }
    syscalls.iter().map(|&nr| RuleKey { pid_ns, nr }).collect()
}

/// Why the filter could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// All [`MAX_TRACES`] slots are taken.
    #[error("{MAX_TRACES} traces are running already: stop one first")]
    Full,
    /// Writing a kernel map failed (the rules map is full, or the kernel refused).
    #[error("updating the kernel trace filter")]
    Map(#[source] aya::maps::MapError),
    /// Writing the capture table failed.
    #[error("writing the capture table for syscall {nr}")]
    Captures {
        /// The syscall whose row was refused.
        nr: u32,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// The number of CPUs could not be read (per-CPU values need it).
    #[error("reading the number of CPUs")]
    Cpus(#[source] std::io::Error),
}

/// The filter: slots in use, and who wants each key.
#[derive(Debug)]
pub struct Filter {
    /// Slot → is it taken.
    taken: u64,
    /// Slot → its sampling rate (1: every call).
    rates: [u32; MAX_TRACES as usize],
    /// Key → slot → how many times that slot added the key.
    wants: BTreeMap<RuleKey, BTreeMap<Slot, u32>>,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            taken: 0,
            rates: [1; MAX_TRACES as usize],
            wants: BTreeMap::new(),
        }
    }
}

impl Filter {
    /// Takes a free slot for a new trace, sampling one call in `sample_rate` (0 or 1: all).
    pub fn open(&mut self, sample_rate: u32) -> Result<Slot, FilterError> {
        let free = (0..MAX_TRACES as u8)
            .find(|i| self.taken & (1 << i) == 0)
            .ok_or(FilterError::Full)?;
        let slot = Slot(free);
        self.taken |= slot.bit();
        self.rates[usize::from(free)] = sample_rate.max(1);
        Ok(slot)
    }

    /// Adds one reference of `slot` to `key`.
    pub fn add(&mut self, rules: &mut Rules, slot: Slot, key: RuleKey) -> Result<(), FilterError> {
        let before = self.mask(&key);
        *self.wants.entry(key).or_default().entry(slot).or_default() += 1;
        let synced = self.sync(rules, key, before);
        if synced.is_err() {
            // The kernel did not take it: forget the reference too, so both sides agree.
            self.forget(slot, key);
        }
        synced
    }

    /// Drops one reference of `slot` to `key` from the counts only.
    fn forget(&mut self, slot: Slot, key: RuleKey) {
        if let Some(slots) = self.wants.get_mut(&key) {
            if let Some(n) = slots.get_mut(&slot) {
                *n -= 1;
                if *n == 0 {
                    slots.remove(&slot);
                }
            }
            if slots.is_empty() {
                self.wants.remove(&key);
            }
        }
    }

    /// Drops one reference of `slot` to `key` (nothing if it holds none).
    pub fn remove(
        &mut self,
        rules: &mut Rules,
        slot: Slot,
        key: RuleKey,
    ) -> Result<(), FilterError> {
        let before = self.mask(&key);
        self.forget(slot, key);
        self.sync(rules, key, before)
    }

    /// Removes every key of `slot` and frees it. Other slots' rules stay as they are.
    pub fn close(&mut self, rules: &mut Rules, slot: Slot) -> Result<(), FilterError> {
        let keys: Vec<RuleKey> = self
            .wants
            .iter()
            .filter(|(_, slots)| slots.contains_key(&slot))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let before = self.mask(&key);
            if let Some(slots) = self.wants.get_mut(&key) {
                slots.remove(&slot);
                if slots.is_empty() {
                    self.wants.remove(&key);
                }
            }
            self.sync(rules, key, before)?;
        }
        self.taken &= !slot.bit();
        Ok(())
    }

    /// The mask of the slots that want `key`.
    pub fn mask(&self, key: &RuleKey) -> u64 {
        self.wants
            .get(key)
            .map_or(0, |slots| slots.keys().fold(0, |m, s| m | s.bit()))
    }

    /// The sampling rate of `key`'s rule: the highest any of its traces asked for.
    fn rate(&self, key: &RuleKey) -> u32 {
        self.wants
            .get(key)
            .and_then(|slots| slots.keys().map(|s| self.rates[usize::from(s.0)]).min())
            .unwrap_or(1)
    }

    /// Writes `key`'s rule to the kernel if its mask changed from `before` (which resets the
    /// rule's sampling counters: harmless, a rule changes when traces start or stop).
    fn sync(&mut self, rules: &mut Rules, key: RuleKey, before: u64) -> Result<(), FilterError> {
        let after = self.mask(&key);
        if after == before {
            return Ok(());
        }
        if after == 0 {
            return match rules.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(FilterError::Map(e)),
            };
        }
        let rule = Rule {
            traces: after,
            rate: self.rate(&key),
            _pad: 0,
            seen: 0,
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| FilterError::Cpus(e))?;
        let values = PerCpuValues::try_from(vec![rule; cpus]).map_err(FilterError::Cpus)?;
        rules.insert(key, values, 0).map_err(FilterError::Map)
    }
}
