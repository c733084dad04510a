//! Reads the probes' maps into plain per-key totals.
//!
//! The kernel keeps one value per CPU; this module sums them, so the rest of swoll sees neither
//! per-CPU layouts nor aya types. A read never fails as a whole: a key that vanishes mid-walk
//! (recycled by the LRU) is skipped, and any other error is counted in [`Snapshot::read_errors`].
use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use swoll_maps_schema::{
    histogram::LatencyBuckets,
    metrics::{MetricKey, MetricValue},
    pidns::PidNsSeen,
    stats::{self, Stat},
};

/// The probes' maps that userspace reads.
pub struct Maps {
    metrics: PerCpuHashMap<MapData, MetricKey, MetricValue>,
    /// The latency histograms, when the probes keep them (`--histogram`).
    histogram: Option<PerCpuHashMap<MapData, MetricKey, LatencyBuckets>>,
    stats: PerCpuArray<MapData, u64>,
    pidns: BpfHashMap<MapData, u32, PidNsSeen>,
    capacity: u32,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// One read of the maps: totals per key, and the probes' own counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every key in the metrics map with its value summed over CPUs.
    pub rows: HashMap<MetricKey, MetricValue>,
    /// Every key in the histogram map with its buckets summed over CPUs; `None` when the probes
    /// keep no histograms.
    pub histograms: Option<HashMap<MetricKey, LatencyBuckets>>,
    /// The probes' stats slots summed over CPUs, indexed by [`Stat`].
    pub stats: [u64; stats::ENTRIES as usize],
    /// Entries the metrics map can hold.
    pub capacity: u32,
    /// Keys or slots that could not be read in this pass.
    pub read_errors: u64,
}

impl Snapshot {
    /// The value of one probe stat.
    pub fn stat(&self, stat: Stat) -> u64 {
        self.stats[stat as usize]
    }
}

impl Maps {
    /// Wraps the maps of a loaded object; `capacity` is the size of the metrics map (and of the
    /// histogram map, when there is one).
    pub(crate) fn new(
        metrics: PerCpuHashMap<MapData, MetricKey, MetricValue>,
        histogram: Option<PerCpuHashMap<MapData, MetricKey, LatencyBuckets>>,
        stats: PerCpuArray<MapData, u64>,
        pidns: BpfHashMap<MapData, u32, PidNsSeen>,
        capacity: u32,
    ) -> Self {
        Self {
            metrics,
            histogram,
            stats,
            pidns,
            capacity,
        }
    }

    /// Who the probes saw last in `pid_ns`, if they still remember it.
    pub fn pid_ns_seen(&self, pid_ns: u32) -> Option<PidNsSeen> {
        self.pidns.get(&pid_ns, 0).ok()
    }

    /// How many records the probes have written to the pid namespace map: when it has not
    /// changed there is nothing new to resolve, and the map need not be walked.
    pub fn pid_ns_records(&self) -> u64 {
        self.stats
            .get(&(Stat::PidNsRecorded as u32), 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum())
    }

    /// Every pid namespace the probes remember, with who was seen in it.
    pub fn pid_namespaces_seen(&self) -> Vec<(u32, PidNsSeen)> {
        let bound = 2 * swoll_maps_schema::pidns::DEFAULT_ENTRIES as usize;
        self.pidns
            .iter()
            .take(bound)
            .filter_map(Result::ok)
            .collect()
    }

    /// Deletes a gone pid namespace's keys from the kernel maps, so its memory is reused.
    /// Keys already recycled by the LRU are not an error.
    pub fn forget_pid_ns(&mut self, pid_ns: u32, keys: impl IntoIterator<Item = MetricKey>) -> u64 {
        let mut errors = 0;
        for key in keys.into_iter().filter(|k| k.pid_ns == pid_ns) {
            let removed = [
                Some(("metrics", self.metrics.remove(&key))),
                self.histogram
                    .as_mut()
                    .map(|h| ("histogram", h.remove(&key))),
            ];
            for (map, result) in removed.into_iter().flatten() {
                match result {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(err) => {
                        errors += 1;
                        tracing::debug!(error = %err, ?key, map, "deleting a key");
                    }
                }
            }
        }
        match self.pidns.remove(&pid_ns) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(err) => {
                errors += 1;
                tracing::debug!(error = %err, pid_ns, "deleting a pid namespace record");
            }
        }
        errors
    }

    /// Reads the metrics, histogram and stats maps.
    pub fn read(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            capacity: self.capacity,
            histograms: self.histogram.as_ref().map(|_| HashMap::new()),
            ..Snapshot::default()
        };
        // A walk over a map that is changing may restart from the first key when the key it
        // stands on is recycled; de-duplicating by key and bounding the walk keeps it exact
        // for every key that stays and finite in any case.
        let bound = 2 * self.capacity as usize + 1;
        for item in self.metrics.iter().take(bound) {
            match item {
                Ok((key, per_cpu)) => {
                    snapshot.rows.insert(key, sum(per_cpu.iter()));
                }
                Err(MapError::KeyNotFound) => {}
                Err(err) => {
                    snapshot.read_errors += 1;
                    tracing::debug!(error = %err, "reading a metrics key");
                }
            }
        }
        if let (Some(map), Some(histograms)) = (&self.histogram, &mut snapshot.histograms) {
            for item in map.iter().take(bound) {
                match item {
                    Ok((key, per_cpu)) => {
                        histograms.insert(key, sum_buckets(per_cpu.iter()));
                    }
                    Err(MapError::KeyNotFound) => {}
                    Err(err) => {
                        snapshot.read_errors += 1;
                        tracing::debug!(error = %err, "reading a histogram key");
                    }
                }
            }
        }
        for stat in Stat::ALL {
            match self.stats.get(&(stat as u32), 0) {
                Ok(per_cpu) => snapshot.stats[stat as usize] = per_cpu.iter().sum(),
                Err(err) => {
                    snapshot.read_errors += 1;
                    tracing::debug!(error = %err, stat = stat.label(), "reading a probe stat");
                }
            }
        }
        snapshot
    }

    /// The summed value of one key, if the map holds it.
    pub fn get(&self, key: &MetricKey) -> Option<MetricValue> {
        self.metrics
            .get(key, 0)
            .ok()
            .map(|per_cpu| sum(per_cpu.iter()))
    }
}

/// Sums per-CPU values. Wrapping, like the kernel's own `u64` counters.
pub fn sum<'a>(values: impl IntoIterator<Item = &'a MetricValue>) -> MetricValue {
    values
        .into_iter()
        .fold(MetricValue::default(), |acc, v| MetricValue {
            count: acc.count.wrapping_add(v.count),
            time_ns: acc.time_ns.wrapping_add(v.time_ns),
        })
}

/// Sums per-CPU histograms bucket by bucket, wrapping like [`sum`].
pub fn sum_buckets<'a>(values: impl IntoIterator<Item = &'a LatencyBuckets>) -> LatencyBuckets {
    values.into_iter().fold(LatencyBuckets::ZERO, |mut acc, v| {
        for (a, b) in acc.buckets.iter_mut().zip(v.buckets) {
            *a = a.wrapping_add(b);
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    use swoll_maps_schema::histogram::BUCKETS;

    use super::*;

    #[test]
    fn sums_every_cpus_buckets() {
        let mut one = LatencyBuckets::ZERO;
        one.buckets[0] = 1;
        one.buckets[BUCKETS - 1] = 2;
        let mut other = LatencyBuckets::ZERO;
        other.buckets[0] = 3;
        other.buckets[22] = u64::MAX;
        let total = sum_buckets(&[one, other, one]);
        assert_eq!(total.buckets[0], 5);
        assert_eq!(total.buckets[22], u64::MAX);
        assert_eq!(total.buckets[BUCKETS - 1], 4);
        assert_eq!(sum_buckets(&[]), LatencyBuckets::ZERO);
    }

    #[test]
    fn sums_every_cpu() {
        let per_cpu = [
            MetricValue {
                count: 1,
                time_ns: 10,
            },
            MetricValue {
                count: 0,
                time_ns: 0,
            },
            MetricValue {
                count: 5,
                time_ns: 7,
            },
        ];
        assert_eq!(
            sum(&per_cpu),
            MetricValue {
                count: 6,
                time_ns: 17
            }
        );
        assert_eq!(sum(&[]), MetricValue::default());
    }
}
