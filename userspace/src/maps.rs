//! Reads the probes' maps into plain per-key totals, and keeps those totals monotonic across
//! the LRU's evictions.
//!
//! The kernel keeps one value per CPU; this module sums them, so the rest of swoll sees neither
//! per-CPU layouts nor aya types. A read never fails as a whole: a key that vanishes mid-walk
//! (recycled by the LRU) is skipped, and any other error is counted in [`Snapshot::read_errors`].
//! The hash maps are read in batches (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+): a handful of
//! syscalls per read instead of two per key, and a walk by bucket that sees every key that stays
//! in the map however the rest of it changes.
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::{
    cell::RefCell,
    collections::hash_map::Entry,
    io,
    num::NonZeroU64,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{
        Array, HashMap as BpfHashMap, IterableMap as _, MapData, MapError, PerCpuArray,
        PerCpuHashMap, PerCpuValues, Queue,
    },
};
use swoll_maps_schema::{
    config,
    histogram::{LatencyBuckets, SlotHistograms},
    metrics::{MetricKey, MetricValue},
    pidns::PidNsSeen,
    slots::{self, SlotCounts, SlotOwner},
    stats::{self, Stat},
};

/// The kernel's run statistics of the probes (`BPF_ENABLE_STATS`): time spent in them and how
/// often they ran, cumulative since load. Zero unless statistics are enabled. Read with the maps at each read
/// ([`crate::loader::Probes::run_stats`]), for the agent's self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Nanoseconds spent in the attached programs together.
    pub run_time_ns: u64,
    /// Runs of `sys_exit`: one per syscall that returned.
    pub exits: u64,
}

/// The probes' maps that userspace reads.
pub struct Maps {
    metrics: PerCpuHashMap<MapData, MetricKey, MetricValue>,
    /// The latency histograms, when the probes keep them (`--histogram`).
    histogram: Option<PerCpuHashMap<MapData, MetricKey, LatencyBuckets>>,
    stats: PerCpuArray<MapData, u64>,
    pidns: BpfHashMap<MapData, u32, PidNsSeen>,
    /// The namespace slots, where the probes have them (kernel 5.11+, `--ns-slots` above 0).
    slots: Option<RefCell<Slots>>,
    capacity: u32,
    /// Possible CPUs: the number of values per key of a per-CPU map.
    cpus: usize,
    /// Keys in the metrics map at the last read: the next read's table is sized for them at
    /// once instead of growing (and rehashing) through every power of two.
    last_entries: std::cell::Cell<usize>,
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
    /// Keys the metrics map held at this read (`rows` also has evicted keys a [`Ledger`] still
    /// exports).
    pub entries: usize,
    /// Keys the histogram map held at this read.
    pub histogram_entries: usize,
    /// Evictions from the metrics map a [`Ledger`] observed in this pass.
    pub evictions: u64,
    /// Evictions from the histogram map a [`Ledger`] observed in this pass.
    pub histogram_evictions: u64,
    /// Keys or slots that could not be read in this pass.
    pub read_errors: u64,
    /// The calls counted in namespace slots, by key, apart from `rows` until
    /// [`Snapshot::merge_slot_rows`]: a [`Ledger`] accounts for the hash's keys only, since
    /// slots are never evicted (a retired namespace's slot is emptied by the agent).
    pub slot_rows: Vec<(MetricKey, MetricValue)>,
    /// The latency histograms kept in namespace slots, by key, apart from `histograms` until
    /// [`Snapshot::merge_slot_rows`], like `slot_rows`.
    pub slot_histograms: Vec<(MetricKey, LatencyBuckets)>,
    /// Pid namespaces whose slot counted calls since the last read.
    pub slot_changed: HashSet<u32>,
    /// Namespace slots the probes have (0: none).
    pub slots: u32,
    /// Namespace slots owned by a pid namespace at this read.
    pub slots_used: usize,
}

impl Snapshot {
    /// Adds [`Snapshot::slot_rows`] into `rows` and [`Snapshot::slot_histograms`] into
    /// `histograms`.
    pub fn merge_slot_rows(&mut self) {
        add_into(&mut self.rows, self.slot_rows.drain(..));
        if let Some(histograms) = &mut self.histograms {
            add_into(histograms, self.slot_histograms.drain(..));
        }
    }

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
        slots: Option<Slots>,
        capacity: u32,
    ) -> Self {
        // Without the count of possible CPUs the batched read cannot size its buffers; the
        // key-by-key walk (which asks aya for each key's values) still works.
        let cpus = aya::util::nr_cpus().unwrap_or(0);
        Self {
            metrics,
            histogram,
            stats,
            pidns,
            slots: slots.map(RefCell::new),
            capacity,
            cpus,
            last_entries: std::cell::Cell::new(0),
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

    /// Entries the metrics map (and the histogram map) can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Deletes the keys of gone pid namespaces and their records from the kernel maps, so their
    /// memory is reused. Keys already recycled by the LRU are not an error; returns the others.
    pub fn forget_keys(&mut self, keys: &[MetricKey], pid_namespaces: &HashSet<u32>) -> u64 {
        let mut errors = 0;
        for key in keys {
            let removed = [
                Some(("metrics", self.metrics.remove(key))),
                self.histogram
                    .as_mut()
                    .map(|h| ("histogram", h.remove(key))),
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
        if let Some(slots) = &self.slots {
            errors += slots.borrow_mut().release(pid_namespaces);
        }
        for pid_ns in pid_namespaces {
            match self.pidns.remove(pid_ns) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(err) => {
                    errors += 1;
                    tracing::debug!(error = %err, pid_ns, "deleting a pid namespace record");
                }
            }
        }
        errors
    }

    /// Reads the metrics, histogram and stats maps.
    pub fn read(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            capacity: self.capacity,
            ..Snapshot::default()
        };
        snapshot.rows.reserve(self.last_entries.get());
        snapshot.read_errors += self.read_hash(&self.metrics, sum, &mut snapshot.rows);
        snapshot.entries = snapshot.rows.len();
        self.last_entries.set(snapshot.entries);
        if let Some(map) = &self.histogram {
            let mut histograms = HashMap::new();
            snapshot.read_errors += self.read_hash(map, sum_buckets, &mut histograms);
            snapshot.histogram_entries = histograms.len();
            snapshot.histograms = Some(histograms);
        }
        if let Some(slots) = &self.slots {
            slots.borrow_mut().read(&mut snapshot);
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

    /// Every key of a per-CPU hash map with its values summed by `total` into `out`: in
    /// batches, or key by key where the kernel refuses batches. Returns the read errors.
    fn read_hash<V: Pod>(
        &self,
        map: &PerCpuHashMap<MapData, MetricKey, V>,
        total: fn(&[V]) -> V,
        out: &mut HashMap<MetricKey, V>,
    ) -> u64 {
        match lookup_batch(
            map.map(),
            self.cpus,
            self.capacity,
            |key: MetricKey, per_cpu: &[V]| {
                out.insert(key, total(per_cpu));
            },
        ) {
            Ok(()) => return 0,
            Err(err) => {
                tracing::debug!(error = %err, "batched map read refused; reading key by key");
                out.clear();
            }
        }
        let mut errors = 0;
        // A key-by-key walk over a map that is changing restarts from the first key when the
        // key it stands on is recycled; de-duplicating by key and bounding the walk keeps it
        // finite, and a key it misses is looked up by the [`Ledger`] before being called evicted.
        let bound = 2 * self.capacity as usize + 1;
        for item in map.iter().take(bound) {
            match item {
                Ok((key, per_cpu)) => {
                    out.insert(key, total(&per_cpu));
                }
                Err(MapError::KeyNotFound) => {}
                Err(err) => {
                    errors += 1;
                    tracing::debug!(error = %err, "reading a map key");
                }
            }
        }
        errors
    }

    /// The summed buckets of one key of the histogram map, if there is one and it holds the key.
    pub fn get_histogram(&self, key: &MetricKey) -> Option<LatencyBuckets> {
        self.histogram
            .as_ref()?
            .get(key, 0)
            .ok()
            .map(|per_cpu| sum_buckets(&per_cpu))
    }

    /// The summed value of one key, if the metrics map holds it (the hash only: what a
    /// [`Ledger`] accounts for).
    pub fn get(&self, key: &MetricKey) -> Option<MetricValue> {
        self.metrics.get(key, 0).ok().map(|per_cpu| sum(&per_cpu))
    }

    /// Everything counted for one key now: its value in the metrics map plus its namespace
    /// slot's.
    pub fn counted(&self, key: &MetricKey) -> MetricValue {
        let hashed = self.get(key).unwrap_or_default();
        let slotted = self
            .slots
            .as_ref()
            .and_then(|slots| slots.borrow().get(key))
            .unwrap_or_default();
        hashed.plus(&slotted)
    }
}

/// The namespace slots' maps (see [`swoll_maps_schema::slots`]) and what was last read of them.
pub struct Slots {
    counts: PerCpuArray<MapData, SlotCounts>,
    /// The slots' histogram tables, with `--histogram`.
    histograms: Option<PerCpuArray<MapData, SlotHistograms>>,
    owners: Array<MapData, SlotOwner>,
    ns: BpfHashMap<MapData, u32, u32>,
    free: Queue<MapData, u32>,
    /// `SWOLL_SELF`, where the read epoch is written.
    agent: Array<MapData, u32>,
    /// Slots in the maps.
    len: u32,
    /// The read epoch of the last read.
    epoch: u32,
    /// Whether every owned slot has been read once (an agent that took over pinned probes
    /// starts with none read).
    primed: bool,
    /// The last read of each owned slot.
    last: HashMap<u32, SlotRead>,
}

/// What one read of an owned slot found.
struct SlotRead {
    /// The slot's owner word.
    owner: u64,
    /// Its non-zero counts by key.
    values: Vec<(MetricKey, MetricValue)>,
    /// Its non-empty histograms by key.
    histograms: Vec<(MetricKey, LatencyBuckets)>,
}

impl Slots {
    /// Wraps the slot maps of a loaded object, `len` slots each; `agent` is `SWOLL_SELF`. The
    /// epoch continues from the one the maps hold (pinned probes an earlier agent read).
    pub(crate) fn new(
        counts: PerCpuArray<MapData, SlotCounts>,
        histograms: Option<PerCpuArray<MapData, SlotHistograms>>,
        owners: Array<MapData, SlotOwner>,
        ns: BpfHashMap<MapData, u32, u32>,
        free: Queue<MapData, u32>,
        agent: Array<MapData, u32>,
        len: u32,
    ) -> Self {
        let epoch = agent.get(&config::SELF_EPOCH, 0).unwrap_or(0);
        Self {
            counts,
            histograms,
            owners,
            ns,
            free,
            agent,
            len,
            epoch,
            primed: false,
            last: HashMap::new(),
        }
    }

    /// Starts a new read epoch and adds the counts of every owned slot to `snapshot`, reading
    /// again only the slots touched since the last two epochs began (and, once, every slot).
    fn read(&mut self, snapshot: &mut Snapshot) {
        self.epoch = self.epoch.wrapping_add(1);
        if let Err(err) = self.agent.set(config::SELF_EPOCH, self.epoch, 0) {
            // Without a new epoch no slot is marked touched: read them all.
            snapshot.read_errors += 1;
            self.primed = false;
            tracing::debug!(error = %err, "writing the read epoch");
        }
        let owners = self.owners();
        snapshot.slots = self.len;
        let mut owned = HashSet::with_capacity(owners.len());
        for (slot, owner) in owners {
            let pid_ns = owner.pid_ns();
            if pid_ns == 0 {
                continue;
            }
            owned.insert(slot);
            let last = self.last.get(&slot);
            let stale = !self.primed
                || last.is_none_or(|read| read.owner != owner.owner)
                || slots::recently_touched(owner.touched, self.epoch);
            if stale {
                match self.read_slot(slot, owner.owner) {
                    Ok(read) => {
                        if last.is_none_or(|before| before.values != read.values) {
                            snapshot.slot_changed.insert(pid_ns);
                        }
                        self.last.insert(slot, read);
                    }
                    Err(err) => {
                        snapshot.read_errors += 1;
                        tracing::debug!(error = %err, slot, "reading a namespace slot");
                    }
                }
            }
            if let Some(read) = self.last.get(&slot) {
                snapshot.slot_rows.extend_from_slice(&read.values);
                snapshot.slot_histograms.extend_from_slice(&read.histograms);
            }
        }
        self.last.retain(|slot, _| owned.contains(slot));
        snapshot.slots_used = owned.len();
        self.primed = true;
    }

    /// The counts (and histograms) of `slot`, owned by `owner`, summed over CPUs.
    fn read_slot(&self, slot: u32, owner: u64) -> Result<SlotRead, MapError> {
        let pid_ns = slots::owner_pid_ns(owner);
        let values = sum_slot(pid_ns, &self.counts.get(&slot, 0)?);
        let histograms = match &self.histograms {
            Some(map) => sum_slot_histograms(pid_ns, &map.get(&slot, 0)?),
            None => Vec::new(),
        };
        Ok(SlotRead {
            owner,
            values,
            histograms,
        })
    }

    /// The summed counts of `key` in the slot of its pid namespace, if it has one.
    fn get(&self, key: &MetricKey) -> Option<MetricValue> {
        let slot = self.ns.get(&key.pid_ns, 0).ok()?;
        let per_cpu = self.counts.get(&slot, 0).ok()?;
        Some(
            per_cpu
                .iter()
                .fold(MetricValue::default(), |total, counts| {
                    total.plus(&counts.value_of(key.nr, key.errno))
                }),
        )
    }

    /// Every slot's owner entry, by slot.
    fn owners(&self) -> Vec<(u32, SlotOwner)> {
        let mut out = Vec::with_capacity(self.len as usize);
        let batched = lookup_batch(
            self.owners.map(),
            1,
            self.len,
            |slot: u32, o: &[SlotOwner]| {
                out.extend(o.first().map(|o| (slot, *o)));
            },
        );
        if batched.is_err() {
            out.clear();
            out.extend(
                (0..self.len).filter_map(|slot| Some((slot, self.owners.get(&slot, 0).ok()?))),
            );
        }
        out
    }

    /// Gives the slots of retired `pid_namespaces` back (see [`swoll_maps_schema::slots`]);
    /// returns the steps that failed.
    fn release(&mut self, pid_namespaces: &HashSet<u32>) -> u64 {
        let mut errors = 0;
        let cpus = aya::util::nr_cpus().unwrap_or(1);
        for &pid_ns in pid_namespaces {
            let Ok(slot) = self.ns.get(&pid_ns, 0) else {
                continue;
            };
            let freed = self.ns.remove(&pid_ns).and_then(|()| {
                let owner = self.owners.get(&slot, 0)?;
                let generation = slots::next_generation(owner.generation());
                self.owners.set(slot, SlotOwner::free(generation), 0)?;
                self.counts.set(slot, per_cpu(SlotCounts::ZERO, cpus)?, 0)?;
                if let Some(histograms) = &mut self.histograms {
                    histograms.set(slot, per_cpu(SlotHistograms::ZERO, cpus)?, 0)?;
                }
                self.free.push(slot, 0)
            });
            match freed {
                Ok(()) => {
                    self.last.remove(&slot);
                }
                Err(err) => {
                    errors += 1;
                    tracing::debug!(error = %err, pid_ns, slot, "giving a namespace slot back");
                }
            }
        }
        errors
    }
}

/// `value` on each of `cpus` CPUs, to write a per-CPU array entry whole.
fn per_cpu<T: Pod>(value: T, cpus: usize) -> Result<PerCpuValues<T>, MapError> {
    PerCpuValues::try_from(vec![value; cpus]).map_err(|source| {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: source,
        })
    })
}

/// One slot's counts, of pid namespace `pid_ns`, summed over CPUs by key: the OK calls by
/// syscall number, then the failed ones (each CPU's error table has its own order).
fn sum_slot(pid_ns: u32, per_cpu: &[SlotCounts]) -> Vec<(MetricKey, MetricValue)> {
    let key = |nr, errno| MetricKey { pid_ns, nr, errno };
    let mut out: Vec<(MetricKey, MetricValue)> = (0..slots::NRS)
        .filter_map(|nr| {
            let total = per_cpu
                .iter()
                .fold(MetricValue::default(), |acc, c| acc.plus(&c.values[nr]));
            (total.count != 0).then_some((key(nr as u32, 0), total))
        })
        .collect();
    out.extend(add_up(
        per_cpu
            .iter()
            .flat_map(|c| c.errors.iter())
            .filter(|e| e.errno != 0 && e.value.count != 0)
            .map(|e| (key(e.nr, e.errno), e.value)),
    ));
    out
}

/// One slot's histograms, of pid namespace `pid_ns`, summed over CPUs by key (each CPU's table
/// has its own order), sorted by key.
fn sum_slot_histograms(
    pid_ns: u32,
    per_cpu: &[SlotHistograms],
) -> Vec<(MetricKey, LatencyBuckets)> {
    add_up(
        per_cpu
            .iter()
            .flat_map(|c| c.entries.iter())
            .filter_map(|e| {
                let (nr, errno) = e.nr_errno()?;
                Some((MetricKey { pid_ns, nr, errno }, e.buckets))
            }),
    )
}

/// Adds up `entries` by key into `totals`: the per-CPU tables of a slot, which each CPU fills
/// in its own order, and a read's slot rows into its hash rows.
fn add_into<V: Counters>(
    totals: &mut HashMap<MetricKey, V>,
    entries: impl IntoIterator<Item = (MetricKey, V)>,
) {
    for (key, value) in entries {
        let total = totals.entry(key).or_insert(V::ZERO);
        *total = total.plus(&value);
    }
}

/// `entries` added up by key, sorted by key.
fn add_up<V: Counters>(entries: impl IntoIterator<Item = (MetricKey, V)>) -> Vec<(MetricKey, V)> {
    let mut totals = HashMap::new();
    add_into(&mut totals, entries);
    let mut out: Vec<_> = totals.into_iter().collect();
    out.sort_unstable_by_key(|(k, _)| *k);
    out
}

/// Sums per-CPU values. Wrapping, like the kernel's own `u64` counters.
pub fn sum(values: &[MetricValue]) -> MetricValue {
    values
        .iter()
        .fold(MetricValue::default(), |acc, v| acc.plus(v))
}

/// Sums per-CPU histograms bucket by bucket, wrapping like [`sum`].
pub fn sum_buckets(values: &[LatencyBuckets]) -> LatencyBuckets {
    values
        .iter()
        .fold(LatencyBuckets::ZERO, |acc, v| acc.plus(v))
}

/// `bpf(2)` command number of `BPF_MAP_LOOKUP_BATCH` (`include/uapi/linux/bpf.h`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`, as `BPF_MAP_*_BATCH` commands read it.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Bytes of values one batch asks for: large enough that a full default map takes a few dozen
/// syscalls, small enough to stay a passing allocation on hosts with many CPUs.
const BATCH_VALUE_BYTES: usize = 1 << 20;

/// Calls `each` with every key of a map and its `cpus` values (1 for a map that is not per-CPU),
/// read with `BPF_MAP_LOOKUP_BATCH`. The kernel walks a hash map bucket by bucket, so a key that
/// stays in the map is seen exactly once whatever is inserted or recycled around it. `capacity`
/// bounds the batch size when a bucket does not fit (`ENOSPC`: the batch grows and the call is
/// repeated).
fn lookup_batch<K: Pod + Default, V: Pod>(
    map: &MapData,
    cpus: usize,
    capacity: u32,
    mut each: impl FnMut(K, &[V]),
) -> io::Result<()> {
    // The kernel's per-CPU stride is the value size rounded up to 8; the schema's values are
    // multiples of 8 already, so a value is read where the previous one ends.
    let value_size = size_of::<V>();
    if cpus == 0 || !value_size.is_multiple_of(8) {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    let fd = u32::try_from(map.fd().as_fd().as_raw_fd()).map_err(io::Error::other)?;
    let max_batch = capacity.max(1);
    let mut batch = u32::try_from(BATCH_VALUE_BYTES / (value_size * cpus))
        .unwrap_or(u32::MAX)
        .clamp(1, max_batch);
    let mut keys: Vec<K> = Vec::new();
    let mut values: Vec<u64> = Vec::new();
    let mut per_cpu: Vec<V> = Vec::with_capacity(cpus);
    // The kernel's cursor is opaque (a bucket index for hash maps): copied from one call's
    // `out_batch` into the next one's `in_batch`.
    let mut cursor = [0_u8; 8];
    let mut next = [0_u8; 8];
    let mut first = true;
    loop {
        keys.resize(batch as usize, K::default());
        values.resize(batch as usize * cpus * value_size / 8, 0);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: batch,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a zero-padded `bpf_attr` batch member whose pointers name buffers
        // of `count` keys, `count * cpus` values and 8-byte cursors, all alive for the call;
        // the kernel writes no more than that.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let done = if ret == 0 {
            false
        } else {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOENT) => true,
                Some(libc::ENOSPC) if batch < max_batch => {
                    batch = batch.saturating_mul(2).min(max_batch);
                    continue;
                }
                _ => return Err(err),
            }
        };
        let got = (attr.count as usize).min(batch as usize);
        for (i, key) in keys.iter().take(got).enumerate() {
            per_cpu.clear();
            per_cpu.extend((0..cpus).map(|cpu| {
                let offset = (i * cpus + cpu) * value_size;
                // SAFETY: `offset + value_size` is within `values` (`got <= batch` keys of
                // `cpus` values each), and any bytes are a valid `V` (it is `Pod`).
                unsafe {
                    values
                        .as_ptr()
                        .cast::<u8>()
                        .add(offset)
                        .cast::<V>()
                        .read_unaligned()
                }
            }));
            each(*key, &per_cpu);
        }
        if done {
            return Ok(());
        }
        cursor = next;
        first = false;
    }
}

/// Counters of one key that add up and only grow while the key lives: what a [`Ledger`] keeps.
pub trait Counters: Copy + PartialEq {
    /// No calls.
    const ZERO: Self;
    /// The sum, wrapping like the kernel's `u64` counters.
    fn plus(&self, other: &Self) -> Self;
    /// True when any counter is below its value in `earlier`: the key was recycled in between.
    fn went_down(&self, earlier: &Self) -> bool;
}

impl Counters for MetricValue {
    const ZERO: Self = MetricValue {
        count: 0,
        time_ns: 0,
    };

    fn plus(&self, other: &Self) -> Self {
        MetricValue {
            count: self.count.wrapping_add(other.count),
            time_ns: self.time_ns.wrapping_add(other.time_ns),
        }
    }

    fn went_down(&self, earlier: &Self) -> bool {
        self.count < earlier.count || self.time_ns < earlier.time_ns
    }
}

impl Counters for LatencyBuckets {
    const ZERO: Self = LatencyBuckets::ZERO;

    fn plus(&self, other: &Self) -> Self {
        let mut out = *self;
        for (a, b) in out.buckets.iter_mut().zip(other.buckets) {
            *a = a.wrapping_add(b);
        }
        out
    }

    fn went_down(&self, earlier: &Self) -> bool {
        self.buckets
            .iter()
            .zip(earlier.buckets)
            .any(|(now, then)| *now < then)
    }
}

/// Keeps the exported counters of one LRU map monotonic across evictions, and counts the
/// evictions it can observe.
///
/// The probes' maps are LRU hashes: when one is full the kernel recycles its least recently
/// used key without telling anyone, and the key starts again from zero if its calls come back.
/// The ledger remembers the last value read of every key. A key that is gone from a read
/// although the agent did not delete it (the agent deletes only the keys of retired pid
/// namespaces, and calls [`Ledger::forget`] for them), confirmed by a lookup so that a key a
/// walk missed is not mistaken for one, or whose counters went down between two reads, was
/// evicted: it is counted, and its last value is carried into a base that its later values add
/// to, so the exported series continues where it was instead of resetting. An evicted key stays
/// exported with its final value until its pid namespace is retired.
///
/// Exact: every eviction counted happened, and every exported counter only grows. Not
/// observable: the calls a key made between the last read and its eviction (lost), and an
/// eviction followed by a re-creation that brings the count back above the last read before
/// the next read (the exported counter then lacks the calls before the eviction that were not
/// read, and the eviction is not counted).
///
/// Memory is bounded: the live keys (at most the map's capacity) and at most `retained` evicted
/// ones; beyond that the keys evicted longest ago are dropped (a dropped key that comes back
/// starts from zero: Prometheus sees a counter reset).
#[derive(Debug)]
pub struct Ledger<V> {
    accounts: HashMap<MetricKey, Account<V>>,
    retained: usize,
    reads: u64,
    /// Pid namespaces with a key that appeared or changed in the last pass.
    changed: HashSet<u32>,
}

#[derive(Debug)]
struct Account<V> {
    /// The value of the last read (zero while the key is absent).
    last: V,
    /// What earlier incarnations of the key counted; `None` until its first eviction.
    base: Option<Box<V>>,
    /// The read at which the key was found evicted, while it is absent from the map. Reads
    /// count from 1, so the `Option` takes no space of its own: there is an account per key.
    absent_since: Option<NonZeroU64>,
}

impl<V: Counters> Account<V> {
    /// Carries the last value into the base: the key was evicted.
    fn carry(&mut self) {
        let base = self.base.get_or_insert_with(|| Box::new(V::ZERO));
        **base = base.plus(&self.last);
        self.last = V::ZERO;
    }
}

impl<V: Counters> Ledger<V> {
    /// A ledger keeping at most `retained` evicted keys (the map's capacity is a good bound: the
    /// ledger then holds at most twice the map's keys).
    pub fn new(retained: usize) -> Self {
        Ledger {
            accounts: HashMap::new(),
            retained,
            reads: 0,
            changed: HashSet::new(),
        }
    }

    /// Turns one read of the map (`now`, raw values) into the exported values, in place, and
    /// returns the evictions observed since the previous read. `lookup` reads one key directly:
    /// a key missing from `now` but still in the map is added to it, not counted evicted.
    pub fn account(
        &mut self,
        now: &mut HashMap<MetricKey, V>,
        lookup: impl Fn(&MetricKey) -> Option<V>,
    ) -> u64 {
        self.reads += 1;
        self.changed.clear();
        let mut evictions = 0;
        for (key, account) in &mut self.accounts {
            if account.absent_since.is_some() || now.contains_key(key) {
                continue;
            }
            if let Some(value) = lookup(key) {
                now.insert(*key, value);
                continue;
            }
            account.carry();
            account.absent_since = NonZeroU64::new(self.reads);
            evictions += 1;
        }
        for (key, value) in now.iter_mut() {
            match self.accounts.entry(*key) {
                Entry::Vacant(vacant) => {
                    self.changed.insert(key.pid_ns);
                    vacant.insert(Account {
                        last: *value,
                        base: None,
                        absent_since: None,
                    });
                }
                Entry::Occupied(mut occupied) => {
                    let account = occupied.get_mut();
                    if *value != account.last {
                        self.changed.insert(key.pid_ns);
                    }
                    if account.absent_since.take().is_none() && value.went_down(&account.last) {
                        account.carry();
                        evictions += 1;
                    }
                    account.last = *value;
                    if let Some(base) = &account.base {
                        *value = base.plus(value);
                    }
                }
            }
        }
        self.drop_oldest_absent();
        for (key, account) in &self.accounts {
            if account.absent_since.is_some() {
                now.insert(*key, account.base.as_deref().copied().unwrap_or(V::ZERO));
            }
        }
        evictions
    }

    /// Forgets the keys of retired pid namespaces: the agent deletes them from the map, which
    /// is not an eviction.
    pub fn forget(&mut self, pid_namespaces: &HashSet<u32>) {
        if !pid_namespaces.is_empty() {
            self.accounts
                .retain(|key, _| !pid_namespaces.contains(&key.pid_ns));
        }
    }

    /// Pid namespaces that made calls between the last two passes (a key appeared or its
    /// value changed): they were alive during the last interval.
    pub fn changed(&self) -> &HashSet<u32> {
        &self.changed
    }

    /// Keys the ledger holds (live and evicted).
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// True when the ledger holds no key.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    fn drop_oldest_absent(&mut self) {
        let mut absent: Vec<u64> = self
            .accounts
            .values()
            .filter_map(|a| a.absent_since.map(NonZeroU64::get))
            .collect();
        if absent.len() <= self.retained {
            return;
        }
        let excess = absent.len() - self.retained;
        absent.sort_unstable();
        // Evicted at or before `cutoff`: dropped, oldest first; ties at the cutoff are dropped
        // only as far as needed.
        let cutoff = absent[excess - 1];
        let mut ties = excess - absent.partition_point(|&at| at < cutoff);
        self.accounts.retain(|_, a| match a.absent_since {
            Some(at) if at.get() < cutoff => false,
            Some(at) if at.get() == cutoff && ties > 0 => {
                ties -= 1;
                false
            }
            _ => true,
        });
    }
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

    #[test]
    fn a_slot_sums_its_calls_and_its_errors_whatever_entry_each_cpu_gave_them() {
        use swoll_maps_schema::slots::SlotError;
        let value = |count, time_ns| MetricValue { count, time_ns };
        let error = |nr, errno, count| SlotError {
            nr,
            errno,
            value: value(count, count * 10),
        };
        let mut cpu0 = Box::new(SlotCounts::ZERO);
        let mut cpu1 = Box::new(SlotCounts::ZERO);
        cpu0.values[110] = value(3, 30);
        cpu1.values[110] = value(4, 40);
        cpu1.values[0] = value(1, 5);
        cpu0.errors[5] = error(257, 2, 7);
        cpu0.errors[6] = error(0, 9, 1);
        cpu1.errors[40] = error(257, 2, 2);
        let rows = sum_slot(9, &[*cpu0, *cpu1]);
        let k = |nr, errno| MetricKey {
            pid_ns: 9,
            nr,
            errno,
        };
        assert_eq!(
            rows,
            vec![
                (k(0, 0), value(1, 5)),
                (k(110, 0), value(7, 70)),
                (k(0, 9), value(1, 10)),
                (k(257, 2), value(9, 90)),
            ]
        );
    }

    #[test]
    fn a_slot_sums_its_histograms_whatever_entry_each_cpu_gave_them() {
        use swoll_maps_schema::histogram::{SlotHistogram, slot_key};
        let entry = |nr, errno, bucket: usize, calls| {
            let mut buckets = LatencyBuckets::ZERO;
            buckets.buckets[bucket] = calls;
            SlotHistogram {
                key: slot_key(nr, errno).expect("encodable"),
                _pad: 0,
                buckets,
            }
        };
        let mut cpu0 = Box::new(SlotHistograms::ZERO);
        let mut cpu1 = Box::new(SlotHistograms::ZERO);
        cpu0.entries[3] = entry(0, 0, 9, 2);
        cpu1.entries[60] = entry(0, 0, 9, 5);
        cpu1.entries[4] = entry(257, 2, 12, 1);
        let k = |nr, errno| MetricKey {
            pid_ns: 9,
            nr,
            errno,
        };
        let mut seven = LatencyBuckets::ZERO;
        seven.buckets[9] = 7;
        let mut one = LatencyBuckets::ZERO;
        one.buckets[12] = 1;
        assert_eq!(
            sum_slot_histograms(9, &[*cpu0, *cpu1]),
            vec![(k(0, 0), seven), (k(257, 2), one)]
        );
    }

    fn key(pid_ns: u32, nr: u32) -> MetricKey {
        MetricKey {
            pid_ns,
            nr,
            errno: 0,
        }
    }

    fn value(count: u64) -> MetricValue {
        MetricValue {
            count,
            time_ns: 10 * count,
        }
    }

    fn read(pairs: &[(MetricKey, u64)]) -> HashMap<MetricKey, MetricValue> {
        pairs.iter().map(|&(k, c)| (k, value(c))).collect()
    }

    fn gone(_: &MetricKey) -> Option<MetricValue> {
        None
    }

    #[test]
    fn an_evicted_key_continues_where_it_was() {
        let (a, b) = (key(1, 0), key(1, 1));
        let mut ledger = Ledger::new(8);
        let mut now = read(&[(a, 5), (b, 7)]);
        assert_eq!(ledger.account(&mut now, gone), 0);
        assert_eq!(now, read(&[(a, 5), (b, 7)]));
        // `a` is recycled by the LRU: counted once, and exported with its final value.
        let mut now = read(&[(b, 9)]);
        assert_eq!(ledger.account(&mut now, gone), 1);
        assert_eq!(now, read(&[(a, 5), (b, 9)]));
        // Still absent: not counted again.
        let mut now = read(&[(b, 9)]);
        assert_eq!(ledger.account(&mut now, gone), 0);
        assert_eq!(now[&a], value(5));
        // Its calls come back from zero: the exported counter continues from 5.
        let mut now = read(&[(a, 2), (b, 9)]);
        assert_eq!(ledger.account(&mut now, gone), 0);
        assert_eq!(now[&a], value(7));
        let mut now = read(&[(a, 3), (b, 9)]);
        assert_eq!(ledger.account(&mut now, gone), 0);
        assert_eq!(now[&a], value(8));
    }

    #[test]
    fn a_count_that_goes_down_was_evicted_and_recreated() {
        let a = key(1, 0);
        let mut ledger = Ledger::new(8);
        ledger.account(&mut read(&[(a, 100)]), gone);
        let mut now = read(&[(a, 4)]);
        assert_eq!(ledger.account(&mut now, gone), 1);
        assert_eq!(now[&a], value(104));
        // Time alone going down is a recycled key too (fewer nanoseconds, as many calls).
        let mut now = HashMap::from_iter([(
            a,
            MetricValue {
                count: 4,
                time_ns: 1,
            },
        )]);
        assert_eq!(ledger.account(&mut now, gone), 1);
        assert_eq!(
            now[&a],
            MetricValue {
                count: 108,
                time_ns: 1041,
            }
        );
    }

    #[test]
    fn a_key_the_walk_missed_is_not_an_eviction() {
        let (a, b) = (key(1, 0), key(1, 1));
        let mut ledger = Ledger::new(8);
        ledger.account(&mut read(&[(a, 5), (b, 1)]), gone);
        let mut now = read(&[(b, 1)]);
        let still = |k: &MetricKey| (*k == a).then(|| value(6));
        assert_eq!(ledger.account(&mut now, still), 0);
        assert_eq!(now, read(&[(a, 6), (b, 1)]));
    }

    #[test]
    fn forgotten_namespaces_are_not_evictions() {
        let (a, b) = (key(1, 0), key(2, 0));
        let mut ledger = Ledger::new(8);
        ledger.account(&mut read(&[(a, 5), (b, 1)]), gone);
        ledger.forget(&HashSet::from_iter([1]));
        assert_eq!(ledger.len(), 1);
        let mut now = read(&[(b, 1)]);
        assert_eq!(ledger.account(&mut now, gone), 0);
        assert_eq!(now, read(&[(b, 1)]));
        // A new namespace with the old number starts from zero.
        let mut now = read(&[(a, 2), (b, 1)]);
        assert_eq!(ledger.account(&mut now, gone), 0);
        assert_eq!(now[&a], value(2));
    }

    #[test]
    fn evicted_keys_kept_are_bounded_oldest_dropped_first() {
        let keys: Vec<_> = (0..4).map(|nr| key(1, nr)).collect();
        let mut ledger = Ledger::new(2);
        ledger.account(&mut keys.iter().map(|&k| (k, value(1))).collect(), gone);
        // keys[0] is evicted first, then keys[1..4] together: three over a bound of two.
        let mut now = keys[1..].iter().map(|&k| (k, value(1))).collect();
        assert_eq!(ledger.account(&mut now, gone), 1);
        let mut now = HashMap::new();
        assert_eq!(ledger.account(&mut now, gone), 3);
        assert_eq!(ledger.len(), 2);
        assert_eq!(now.len(), 2);
        assert!(!now.contains_key(&keys[0]));
        // A dropped key that comes back starts from zero.
        let mut now = read(&[(keys[0], 1)]);
        ledger.account(&mut now, gone);
        assert_eq!(now[&keys[0]], value(1));
    }

    #[test]
    fn histograms_are_kept_monotonic_bucket_by_bucket() {
        let a = key(1, 0);
        let mut one = LatencyBuckets::ZERO;
        one.buckets[3] = 4;
        let mut ledger = Ledger::new(8);
        ledger.account(&mut HashMap::from_iter([(a, one)]), |_| None);
        let mut other = LatencyBuckets::ZERO;
        other.buckets[5] = 1;
        let mut now = HashMap::from_iter([(a, other)]);
        assert_eq!(ledger.account(&mut now, |_| None), 1);
        assert_eq!((now[&a].buckets[3], now[&a].buckets[5]), (4, 1));
    }
}
