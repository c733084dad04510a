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

/// Where the filter writes its rules: the kernel's map ([`Rules`]). A trait so that the
/// reference counting above it is tested on its own, over a plain map.
pub trait RuleTable {
    /// Sets `key`'s rule (on every CPU).
    fn set(&mut self, key: RuleKey, rule: Rule) -> Result<(), FilterError>;
    /// Removes `key`'s rule; a key that is not there is not an error.
    fn unset(&mut self, key: &RuleKey) -> Result<(), FilterError>;
}

impl RuleTable for Rules {
    fn set(&mut self, key: RuleKey, rule: Rule) -> Result<(), FilterError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| FilterError::Cpus(e))?;
        let values = PerCpuValues::try_from(vec![rule; cpus]).map_err(FilterError::Cpus)?;
        self.insert(key, values, 0).map_err(FilterError::Map)
    }

    fn unset(&mut self, key: &RuleKey) -> Result<(), FilterError> {
        match self.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(FilterError::Map(e)),
        }
    }
}

/// One trace's slot in the kernel filter: its bit in the rule masks and events' `traces`, its
/// index in the per-trace arrays. (Not the start-time slots of `swoll_maps_schema::start`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceSlot(u8);

impl TraceSlot {
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
    wants: BTreeMap<RuleKey, BTreeMap<TraceSlot, u32>>,
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
    pub fn open(&mut self, sample_rate: u32) -> Result<TraceSlot, FilterError> {
        let free = (0..MAX_TRACES as u8)
            .find(|i| self.taken & (1 << i) == 0)
            .ok_or(FilterError::Full)?;
        let slot = TraceSlot(free);
        self.taken |= slot.bit();
        self.rates[usize::from(free)] = sample_rate.max(1);
        Ok(slot)
    }

    /// Adds one reference of `slot` to `key`.
    pub fn add(
        &mut self,
        rules: &mut impl RuleTable,
        slot: TraceSlot,
        key: RuleKey,
    ) -> Result<(), FilterError> {
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
    fn forget(&mut self, slot: TraceSlot, key: RuleKey) {
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
        rules: &mut impl RuleTable,
        slot: TraceSlot,
        key: RuleKey,
    ) -> Result<(), FilterError> {
        let before = self.mask(&key);
        self.forget(slot, key);
        self.sync(rules, key, before)
    }

    /// Removes every key of `slot` and frees it. Other slots' rules stay as they are.
    pub fn close(
        &mut self,
        rules: &mut impl RuleTable,
        slot: TraceSlot,
    ) -> Result<(), FilterError> {
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
    fn sync(
        &mut self,
        rules: &mut impl RuleTable,
        key: RuleKey,
        before: u64,
    ) -> Result<(), FilterError> {
        let after = self.mask(&key);
        if after == before {
            return Ok(());
        }
        if after == 0 {
            return rules.unset(&key);
        }
        let rule = Rule {
            traces: after,
            rate: self.rate(&key),
            _pad: 0,
            seen: 0,
        };
        rules.set(key, rule)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A rule table in memory that counts its writes and refuses sets once `refuse` is true,
    /// as a full kernel map does.
    #[derive(Default)]
    struct MemoryRules {
        rules: BTreeMap<RuleKey, Rule>,
        writes: usize,
        refuse: bool,
    }

    impl RuleTable for MemoryRules {
        fn set(&mut self, key: RuleKey, rule: Rule) -> Result<(), FilterError> {
            if self.refuse {
                return Err(FilterError::Map(aya::maps::MapError::KeyNotFound));
            }
            self.writes += 1;
            self.rules.insert(key, rule);
            Ok(())
        }

        fn unset(&mut self, key: &RuleKey) -> Result<(), FilterError> {
            self.writes += 1;
            self.rules.remove(key);
            Ok(())
        }
    }

    fn key(pid_ns: u32, nr: u32) -> RuleKey {
        RuleKey { pid_ns, nr }
    }

    #[test]
    fn overlapping_traces_never_remove_each_others_rules() {
        let (mut filter, mut table) = (Filter::default(), MemoryRules::default());
        let a = filter.open(1).unwrap();
        let b = filter.open(1).unwrap();
        filter.add(&mut table, a, key(7, 2)).unwrap();
        filter.add(&mut table, b, key(7, 2)).unwrap();
        assert_eq!(table.rules[&key(7, 2)].traces, a.bit() | b.bit());
        filter.close(&mut table, a).unwrap();
        assert_eq!(table.rules[&key(7, 2)].traces, b.bit());
        filter.remove(&mut table, b, key(7, 2)).unwrap();
        assert!(table.rules.is_empty());
    }

    #[test]
    fn a_key_added_twice_by_one_trace_needs_two_removals() {
        let (mut filter, mut table) = (Filter::default(), MemoryRules::default());
        let a = filter.open(1).unwrap();
        filter.add(&mut table, a, key(7, 2)).unwrap();
        filter.add(&mut table, a, key(7, 2)).unwrap();
        assert_eq!(
            table.writes, 1,
            "the second reference changes no mask: no write"
        );
        filter.remove(&mut table, a, key(7, 2)).unwrap();
        assert_eq!(table.rules[&key(7, 2)].traces, a.bit());
        filter.remove(&mut table, a, key(7, 2)).unwrap();
        assert!(table.rules.is_empty());
        filter.remove(&mut table, a, key(7, 2)).unwrap();
        assert_eq!(
            table.writes, 2,
            "removing a key no longer held writes nothing"
        );
    }

    #[test]
    fn a_rule_samples_at_the_highest_rate_of_its_traces() {
        let (mut filter, mut table) = (Filter::default(), MemoryRules::default());
        let every_tenth = filter.open(10).unwrap();
        let every_third = filter.open(3).unwrap();
        filter.add(&mut table, every_tenth, key(1, 0)).unwrap();
        assert_eq!(table.rules[&key(1, 0)].rate, 10);
        filter.add(&mut table, every_third, key(1, 0)).unwrap();
        assert_eq!(table.rules[&key(1, 0)].rate, 3);
        filter.close(&mut table, every_third).unwrap();
        assert_eq!(table.rules[&key(1, 0)].rate, 10);
        let every = filter.open(0).unwrap();
        filter.add(&mut table, every, key(2, 0)).unwrap();
        assert_eq!(
            table.rules[&key(2, 0)].rate,
            1,
            "a rate of 0 samples every call"
        );
    }

    #[test]
    fn a_refused_rule_is_not_counted() {
        let (mut filter, mut table) = (Filter::default(), MemoryRules::default());
        let a = filter.open(1).unwrap();
        table.refuse = true;
        assert!(filter.add(&mut table, a, key(7, 2)).is_err());
        assert_eq!(filter.mask(&key(7, 2)), 0);
        table.refuse = false;
        filter.add(&mut table, a, key(7, 2)).unwrap();
        filter.remove(&mut table, a, key(7, 2)).unwrap();
        assert!(
            table.rules.is_empty(),
            "one add, one remove: the refused add left nothing"
        );
    }

    #[test]
    fn slots_run_out_and_come_back() {
        let (mut filter, mut table) = (Filter::default(), MemoryRules::default());
        let slots: Vec<TraceSlot> = (0..MAX_TRACES).map(|_| filter.open(1).unwrap()).collect();
        assert!(matches!(filter.open(1), Err(FilterError::Full)));
        filter.close(&mut table, slots[5]).unwrap();
        assert_eq!(filter.open(1).unwrap(), slots[5]);
    }

    #[test]
    fn keys_of_no_syscalls_mean_every_syscall() {
        assert_eq!(keys(9, &[]), vec![key(9, ANY_SYSCALL)]);
        assert_eq!(keys(9, &[0, 59]), vec![key(9, 0), key(9, 59)]);
    }
}
