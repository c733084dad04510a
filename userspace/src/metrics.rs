//! Prometheus exposition of the in-kernel counters, and of the agent's own health.
//!
//! The two syscall families keep swoll's exact names and labels, because users' queries and
//! dashboards depend on them: `swoll_node_metrics_syscall_count` and
//! `swoll_node_metrics_syscall_time` (nanoseconds), counters labelled `syscall, err, class,
//! group, namespace, pod, container, kns`. With `--histogram` a third family,
//! `swoll_node_metrics_syscall_duration_seconds`, is a Prometheus histogram with the same labels.
//! Each map read (every `--interval`) sums the keys into a [`SeriesTable`] of series (labels made once
//! per key and shared, totals); each scrape streams the text made from that table a chunk at a
//! time, so no full-size exposition (tens of megabytes on a full map) is ever held or copied.
//! The agent's own metrics (`swoll_*`) live in a `prometheus` registry and are encoded at
//! scrape time.
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::{
    fmt::Write as _,
    sync::{Arc, LazyLock},
};

use prometheus::{Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use swoll_maps_schema::{
    histogram::{self, LatencyBuckets},
    metrics::{self, MetricKey, MetricValue},
    slots,
    stats::Stat,
};

use crate::{errno, maps::Snapshot, resolver::Workload, syscalls};

/// Name of the call-count family.
pub const SYSCALL_COUNT: &str = "swoll_node_metrics_syscall_count";
/// Name of the call-time family (nanoseconds).
pub const SYSCALL_TIME: &str = "swoll_node_metrics_syscall_time";
/// Name of the latency histogram family (`--histogram`).
pub const SYSCALL_DURATION: &str = "swoll_node_metrics_syscall_duration_seconds";

/// HELP of [`SYSCALL_DURATION`]: the bucket bounds, since they are fixed by the kernel side.
const SYSCALL_DURATION_HELP: &str = "Latency of system calls, timed in the kernel from sys_enter \
    to sys_exit, in log2 buckets: le is 2^k ns for k = 1..31 (0.000000002 s to 2.147483648 s), \
    then +Inf. Calls whose start was not seen (start_missing) are not observed.";

/// One kernel key with its labels resolved: what the charts page and `swoll top` show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `sys_<name>` (or `sys_unknown_<nr>`).
    pub syscall: std::borrow::Cow<'static, str>,
    /// `OK` or the errno's name.
    pub err: std::borrow::Cow<'static, str>,
    /// swoll's class of the syscall.
    pub class: &'static str,
    /// swoll's group of the syscall.
    pub group: &'static str,
    /// Who made the calls.
    pub workload: Workload,
    /// The pid namespace inode.
    pub kns: u32,
    /// Calls that returned (cumulative).
    pub count: u64,
    /// Nanoseconds spent in them (cumulative).
    pub time_ns: u64,
}

/// Every key of a read (with its value) as a [`Row`], labelled with `workload`, sorted by key.
pub fn rows<'a>(
    keys: impl IntoIterator<Item = (&'a MetricKey, &'a MetricValue)>,
    workload: impl Fn(u32) -> Workload,
) -> Vec<Row> {
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_unstable_by_key(|(k, _)| **k);
    let mut workloads: HashMap<u32, Workload> = HashMap::new();
    keys.into_iter()
        .map(|(key, value)| {
            let info = syscalls::describe_native(key.nr);
            Row {
                syscall: info.name,
                err: errno::name(key.errno),
                class: info.class,
                group: info.group,
                workload: workloads
                    .entry(key.pid_ns)
                    .or_insert_with(|| workload(key.pid_ns))
                    .clone(),
                kns: key.pid_ns,
                count: value.count,
                time_ns: value.time_ns,
            }
        })
        .collect()
}

/// A label of the syscall families, in exposition order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Label {
    /// `sys_<name>`.
    Syscall,
    /// `OK` or the errno's name.
    Err,
    /// swoll's class of the syscall.
    Class,
    /// swoll's group of the syscall.
    Group,
    /// Kubernetes namespace.
    Namespace,
    /// Pod name.
    Pod,
    /// Container name (or short id).
    Container,
    /// The pid namespace inode.
    Kns,
}

impl Label {
    /// Every label, in exposition order: the default of `--labels`.
    pub const ALL: [Label; 8] = [
        Label::Syscall,
        Label::Err,
        Label::Class,
        Label::Group,
        Label::Namespace,
        Label::Pod,
        Label::Container,
        Label::Kns,
    ];

    /// The label's name in the exposition.
    pub const fn name(self) -> &'static str {
        match self {
            Label::Syscall => "syscall",
            Label::Err => "err",
            Label::Class => "class",
            Label::Group => "group",
            Label::Namespace => "namespace",
            Label::Pod => "pod",
            Label::Container => "container",
            Label::Kns => "kns",
        }
    }
}

impl std::str::FromStr for Label {
    type Err = String;

    fn from_str(s: &str) -> Result<Label, String> {
        Label::ALL
            .into_iter()
            .find(|l| l.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = Label::ALL.iter().map(|l| l.name()).collect();
                format!("unknown label {s:?} (one of {})", names.join(", "))
            })
    }
}

/// Value of the `syscall`, `err`, `class` and `group` labels of the series that collects
/// calls over the `--max-series` budget.
pub const FOLDED: &str = "other";

/// Renders the syscall families with the chosen labels under a series budget.
///
/// Keys that render to the same labels are summed (pid namespaces of one workload, when `kns`
/// is not exported). Admission to the budget is sticky: a series, once exported, stays its own
/// until its pid namespace is retired, and one that arrived over budget stays folded into its
/// workload's `syscall="other"` series, so no exported counter ever goes backwards because
/// the ranking of series changed.
///
/// Every read sums every key into its series again (a counter's value changes between reads),
/// but the label strings are made once per key and kept, as is their sorted order, so a read
/// adds numbers and shares labels and does little else; the text is made by scrapes.
#[derive(Debug)]
pub struct Renderer {
    labels: Vec<Label>,
    max_series: usize,
    /// Every series made so far, by id; `None` is a free id.
    series: Vec<Option<SeriesLabels>>,
    /// Ids freed by retired namespaces, reused first.
    free: Vec<u32>,
    /// The id of each label string.
    index: HashMap<Arc<str>, u32>,
    /// Series of their own (not folded): what `max_series` bounds.
    admitted: usize,
    /// The series each key renders to, as of its namespace's workload generation.
    keys: HashMap<MetricKey, KeySeries>,
    /// Each pid namespace's workload when its keys' labels were made, and its generation.
    workloads: HashMap<u32, (Workload, u32)>,
    /// The last workload generation given out. 32 bits keep [`KeySeries`], of which there is
    /// one per key, at 8 bytes; a wrap would need 2^32 relabellings while a key stays.
    generation: u32,
    /// Series ids in label order, or `None` when a series was added or removed since.
    order: Option<Vec<u32>>,
}

/// The labels of one exported series.
#[derive(Debug)]
struct SeriesLabels {
    /// `syscall="…",err="…",…`, escaped.
    text: Arc<str>,
    /// The pid namespace of the key that made the series: its retirement frees the series.
    pid_ns: u32,
    /// A `syscall="other"` series of keys over the budget.
    folded: bool,
}

/// Where a key renders, as of a workload generation of its namespace.
#[derive(Clone, Copy, Debug)]
struct KeySeries {
    series: u32,
    generation: u32,
}

/// The summed histograms of a series' keys that have one, and their time in nanoseconds (the
/// histogram's sum, over those keys only).
#[derive(Debug)]
struct Histogram {
    buckets: LatencyBuckets,
    time_ns: u64,
}

/// One series of a [`SeriesTable`].
#[derive(Debug)]
struct Totals {
    /// Its labels, shared with the [`Renderer`] (and with every table that has the series).
    labels: Arc<str>,
    value: MetricValue,
}

/// The syscall families at one map read: every series' labels and totals, in label order.
///
/// A few dozen bytes a series, where its text is a few hundred (tens of megabytes at a full
/// map): scrapes make the text from it a chunk at a time ([`SeriesTable::chunks`]) and share it
/// through an `Arc`, so no full-size exposition is held, copied, or left behind by the
/// allocator.
#[derive(Debug, Default)]
pub struct SeriesTable {
    series: Vec<Totals>,
    /// Each series' histogram, when the read had histograms (`--histogram`): then their family
    /// is exported, even with no series. Boxed: a histogram is ten times a series, and many
    /// series have none.
    histograms: Option<Vec<Option<Box<Histogram>>>>,
}

/// Bytes a chunk of the exposition grows to before it is handed to the client: large enough
/// that a chunk costs little more than its bytes, small enough that a scrape holds little.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The `le` label values of the finite histogram buckets, formatted once.
static LE: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..histogram::BUCKETS)
        .map_while(histogram::upper_bound_ns)
        .map(le_seconds)
        .collect()
});

impl SeriesTable {
    /// The text exposition of the families, in chunks of about [`CHUNK_BYTES`] that end at
    /// line ends.
    pub fn chunks(self: &Arc<Self>) -> Chunks {
        Chunks {
            table: Arc::clone(self),
            family: Some(Family::Count),
            at: 0,
        }
    }

    /// The whole text exposition at once.
    pub fn text(self: &Arc<Self>) -> String {
        self.chunks().collect()
    }
}

/// A family of a [`SeriesTable`], in exposition order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Count,
    Time,
    Duration,
}

/// The text of a [`SeriesTable`], a chunk at a time ([`SeriesTable::chunks`]).
#[derive(Debug)]
pub struct Chunks {
    table: Arc<SeriesTable>,
    /// The family being written; `None` when done.
    family: Option<Family>,
    /// The next series of the family; at 0 its header comes first.
    at: usize,
}

impl Iterator for Chunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut out = String::new();
        while let Some(family) = self.family {
            if out.len() >= CHUNK_BYTES {
                break;
            }
            if out.capacity() == 0 {
                out.reserve(CHUNK_BYTES + 1024);
            }
            if self.at == 0 {
                family.header(&mut out);
            }
            match self.table.series.get(self.at) {
                Some(series) => {
                    family.sample(&self.table, self.at, series, &mut out);
                    self.at += 1;
                }
                None => {
                    self.family = match family {
                        Family::Count => Some(Family::Time),
                        Family::Time if self.table.histograms.is_some() => Some(Family::Duration),
                        Family::Time | Family::Duration => None,
                    };
                    self.at = 0;
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

impl Family {
    fn header(self, out: &mut String) {
        let (name, help, kind) = match self {
            Family::Count => (
                SYSCALL_COUNT,
                "System calls that returned, by pid namespace, syscall and errno, counted in the kernel.",
                "counter",
            ),
            Family::Time => (
                SYSCALL_TIME,
                "Nanoseconds spent in those system calls, timed in the kernel from sys_enter to sys_exit.",
                "counter",
            ),
            Family::Duration => (SYSCALL_DURATION, SYSCALL_DURATION_HELP, "histogram"),
        };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    }

    /// The lines of series `at` of `table`: one sample, or a histogram's (none if the series
    /// has none).
    fn sample(self, table: &SeriesTable, at: usize, series: &Totals, out: &mut String) {
        let labels = &*series.labels;
        match self {
            Family::Count => sample_line(out, SYSCALL_COUNT, labels, series.value.count),
            Family::Time => sample_line(out, SYSCALL_TIME, labels, series.value.time_ns),
            Family::Duration => {
                if let Some(histogram) = table
                    .histograms
                    .as_ref()
                    .and_then(|h| h.get(at))
                    .and_then(Option::as_deref)
                {
                    histogram_lines(out, labels, histogram);
                }
            }
        }
    }
}

/// `name{labels} value`: the one line of a counter sample, without `fmt`'s machinery.
fn sample_line(out: &mut String, name: &str, labels: &str, value: u64) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    out.push_str("} ");
    push_u64(out, value);
    out.push('\n');
}

/// The histogram family's lines of one series: cumulative `_bucket`s (the last one `+Inf`),
/// `_sum` in seconds and `_count`, which is the `+Inf` bucket.
fn histogram_lines(out: &mut String, labels: &str, histogram: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0_u64;
    for (i, n) in histogram.buckets.buckets.iter().enumerate() {
        cumulative = cumulative.wrapping_add(*n);
        let le = LE.get(i).map_or("+Inf", String::as_str);
        out.push_str(SYSCALL_DURATION);
        out.push_str("_bucket{");
        out.push_str(labels);
        out.push_str(sep);
        out.push_str("le=\"");
        out.push_str(le);
        out.push_str("\"} ");
        push_u64(out, cumulative);
        out.push('\n');
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "seconds as a float, by definition"
    )]
    let seconds = histogram.time_ns as f64 / 1e9;
    let _ = writeln!(out, "{SYSCALL_DURATION}_sum{{{labels}}} {seconds}");
    out.push_str(SYSCALL_DURATION);
    out.push_str("_count{");
    out.push_str(labels);
    out.push_str("} ");
    push_u64(out, cumulative);
    out.push('\n');
}

/// The totals of one read by series id, as keys are added to them.
struct Sums {
    totals: Vec<MetricValue>,
    /// Empty when the read has no histograms.
    histograms: Vec<Option<Box<Histogram>>>,
    /// Keys added to each series: a series none of whose keys was read is not exported.
    keys: Vec<u32>,
}

impl Sums {
    fn new(series: usize, histograms: bool) -> Self {
        let mut sums = Sums {
            totals: Vec::new(),
            histograms: Vec::new(),
            keys: Vec::new(),
        };
        sums.grow(series, histograms);
        sums
    }

    /// Room for `series` ids.
    fn grow(&mut self, series: usize, histograms: bool) {
        self.totals.resize(series, MetricValue::default());
        self.keys.resize(series, 0);
        if histograms {
            self.histograms.resize_with(series, || None);
        }
    }

    /// Adds `key`'s `value` (and its histogram in `snapshot`, if any) to series `id`.
    fn add(&mut self, id: u32, key: &MetricKey, value: &MetricValue, snapshot: &Snapshot) {
        let id = id as usize;
        if id >= self.totals.len() {
            self.grow(id + 1, snapshot.histograms.is_some());
        }
        self.keys[id] = self.keys[id].saturating_add(1);
        let total = &mut self.totals[id];
        *total = MetricValue {
            count: total.count.wrapping_add(value.count),
            time_ns: total.time_ns.wrapping_add(value.time_ns),
        };
        if let Some(buckets) = snapshot.histograms.as_ref().and_then(|h| h.get(key)) {
            let sum = self.histograms[id].get_or_insert_with(|| {
                Box::new(Histogram {
                    buckets: LatencyBuckets::ZERO,
                    time_ns: 0,
                })
            });
            for (s, b) in sum.buckets.buckets.iter_mut().zip(buckets.buckets) {
                *s = s.wrapping_add(b);
            }
            sum.time_ns = sum.time_ns.wrapping_add(value.time_ns);
        }
    }
}

/// One read of the syscall families.
#[derive(Debug, Default)]
pub struct Rendered {
    /// The series and their totals, which scrapes turn into text.
    pub table: Arc<SeriesTable>,
    /// Series in each family.
    pub series: usize,
    /// Keys folded into `syscall="other"` series because the budget was spent.
    pub folded: usize,
}

/// The keys of one map read and their namespaces' workloads: what [`Row`]s are made of when a
/// page asks for them, rather than at every read. A vector, half the size of the read's map.
#[derive(Debug, Default)]
pub struct RowSource {
    keys: Vec<(MetricKey, MetricValue)>,
    workloads: HashMap<u32, Workload>,
}

impl RowSource {
    /// The keys of `snapshot`, labelled with `workloads`.
    pub fn new(snapshot: Snapshot, workloads: HashMap<u32, Workload>) -> Self {
        Self {
            keys: snapshot.rows.into_iter().collect(),
            workloads,
        }
    }

    /// Every key of the read with its value (evicted keys a ledger still exports included).
    pub fn keys(&self) -> &[(MetricKey, MetricValue)] {
        &self.keys
    }

    /// The labels of pid namespace `pid_ns` at the read, if it had keys.
    pub fn workload(&self, pid_ns: u32) -> Option<&Workload> {
        self.workloads.get(&pid_ns)
    }

    /// Every key as a [`Row`], sorted by key.
    pub fn rows(&self) -> Vec<Row> {
        rows(self.keys.iter().map(|(k, v)| (k, v)), |ns| {
            self.workloads.get(&ns).cloned().unwrap_or_default()
        })
    }
}

impl Renderer {
    /// A renderer exporting `labels` (in the canonical order, whatever order they are given
    /// in), with at most `max_series` series of their own (0: no limit).
    pub fn new(labels: &[Label], max_series: usize) -> Renderer {
        Renderer {
            labels: Label::ALL
                .into_iter()
                .filter(|l| labels.contains(l))
                .collect(),
            max_series,
            series: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            admitted: 0,
            keys: HashMap::new(),
            workloads: HashMap::new(),
            generation: 0,
            order: None,
        }
    }

    /// Forgets the series of retired pid namespaces, freeing their budget.
    pub fn retire(&mut self, pid_namespaces: &HashSet<u32>) {
        if pid_namespaces.is_empty() {
            return;
        }
        let mut freed = HashSet::new();
        for (id, slot) in self.series.iter_mut().enumerate() {
            if slot
                .as_ref()
                .is_some_and(|s| pid_namespaces.contains(&s.pid_ns))
                && let Some(gone) = slot.take()
                && let Ok(id) = u32::try_from(id)
            {
                self.index.remove(&gone.text);
                self.admitted -= usize::from(!gone.folded);
                self.free.push(id);
                freed.insert(id);
            }
        }
        if !freed.is_empty() {
            self.order = None;
        }
        // Keys of other namespaces that shared a freed series (without `kns`) make theirs again.
        self.keys
            .retain(|key, k| !pid_namespaces.contains(&key.pid_ns) && !freed.contains(&k.series));
        self.workloads.retain(|ns, _| !pid_namespaces.contains(ns));
    }

    /// Renders `snapshot`, labelling each pid namespace with `workload`.
    pub fn render(&mut self, snapshot: &Snapshot, workload: impl Fn(u32) -> Workload) -> Rendered {
        let mut namespaces: HashMap<u32, u32> = HashMap::new();
        let mut relabelled = false;
        for key in snapshot.rows.keys() {
            namespaces.entry(key.pid_ns).or_insert_with(|| {
                let now = workload(key.pid_ns);
                match self.workloads.get(&key.pid_ns) {
                    Some((known, generation)) if *known == now => *generation,
                    _ => {
                        relabelled = true;
                        self.generation = self.generation.wrapping_add(1);
                        self.workloads.insert(key.pid_ns, (now, self.generation));
                        self.generation
                    }
                }
            });
        }
        let known = self.workloads.len();
        self.workloads.retain(|ns, _| namespaces.contains_key(ns));
        // Every key's namespace has a workload, so unless one was relabelled or is gone, every
        // key keeps its series: a pass over all of them is saved at most reads.
        if relabelled || self.workloads.len() != known {
            self.keys
                .retain(|key, k| namespaces.get(&key.pid_ns) == Some(&k.generation));
        }
        let mut sums = Sums::new(self.series.len(), snapshot.histograms.is_some());
        let mut new: Vec<MetricKey> = Vec::new();
        for (key, value) in &snapshot.rows {
            match self.keys.get(key) {
                Some(k) => sums.add(k.series, key, value, snapshot),
                None => new.push(*key),
            }
        }
        // Keys without labels yet, admitted in key order: deterministic for a given snapshot
        // (which key came first is not knowable).
        new.sort_unstable();
        for key in new {
            let generation = namespaces.get(&key.pid_ns).copied().unwrap_or_default();
            let series = self.series_of(&key);
            self.keys.insert(key, KeySeries { series, generation });
            if let Some(value) = snapshot.rows.get(&key) {
                sums.add(series, &key, value, snapshot);
            }
        }
        let Sums {
            totals,
            mut histograms,
            keys: per_series,
        } = sums;
        let folded = self
            .series
            .iter()
            .zip(&per_series)
            .filter(|(s, _)| s.as_ref().is_some_and(|s| s.folded))
            .map(|(_, n)| *n as usize)
            .sum();
        let order = self.order.take().unwrap_or_else(|| {
            let mut ids: Vec<u32> = (0..self.series.len())
                .filter(|&id| self.series[id].is_some())
                .filter_map(|id| u32::try_from(id).ok())
                .collect();
            ids.sort_unstable_by(|a, b| self.labels_of(*a).cmp(self.labels_of(*b)));
            ids
        });
        let exported = |id: &&u32| per_series.get(**id as usize).is_some_and(|&n| n > 0);
        let series: Vec<Totals> = order
            .iter()
            .filter(exported)
            .map(|&id| Totals {
                labels: self
                    .series
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .map_or_else(|| Arc::from(""), |s| Arc::clone(&s.text)),
                value: totals[id as usize],
            })
            .collect();
        let histograms = snapshot.histograms.is_some().then(|| {
            order
                .iter()
                .filter(exported)
                .map(|&id| histograms.get_mut(id as usize).and_then(Option::take))
                .collect()
        });
        self.order = Some(order);
        Rendered {
            series: series.len(),
            table: Arc::new(SeriesTable { series, histograms }),
            folded,
        }
    }

    /// The workload of every pid namespace of the last read, as its series were labelled.
    pub fn workloads(&self) -> HashMap<u32, Workload> {
        self.workloads
            .iter()
            .map(|(&ns, (workload, _))| (ns, workload.clone()))
            .collect()
    }

    /// The label string of series `id` (empty for a free id).
    fn labels_of(&self, id: u32) -> &str {
        self.series
            .get(id as usize)
            .and_then(Option::as_ref)
            .map_or("", |s| &s.text)
    }

    /// The series a key without one renders to: its own if already exported or if the budget
    /// has room, its workload's folded series otherwise.
    fn series_of(&mut self, key: &MetricKey) -> u32 {
        let workload = self
            .workloads
            .get(&key.pid_ns)
            .map(|(w, _)| w.clone())
            .unwrap_or_default();
        let own = self.label_set(key, &workload, false);
        if let Some(&id) = self.index.get(own.as_str()) {
            return id;
        }
        if self.max_series == 0 || self.admitted < self.max_series {
            self.admitted += 1;
            return self.add_series(own, key.pid_ns, false);
        }
        let other = self.label_set(key, &workload, true);
        match self.index.get(other.as_str()) {
            Some(&id) => id,
            None => self.add_series(other, key.pid_ns, true),
        }
    }

    fn add_series(&mut self, labels: String, pid_ns: u32, folded: bool) -> u32 {
        let text: Arc<str> = labels.into();
        let slot = SeriesLabels {
            text: Arc::clone(&text),
            pid_ns,
            folded,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = Some(slot);
                id
            }
            None => {
                self.series.push(Some(slot));
                u32::try_from(self.series.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index.insert(text, id);
        self.order = None;
        id
    }

    /// `syscall="…",err="…",…` of one key with the exported labels; `fold` replaces the
    /// syscall's labels with [`FOLDED`].
    fn label_set(&self, key: &MetricKey, workload: &Workload, fold: bool) -> String {
        let info = syscalls::describe_native(key.nr);
        let err = errno::name(key.errno);
        let kns = key.pid_ns.to_string();
        let mut s = String::with_capacity(160);
        for label in &self.labels {
            let value: &str = match label {
                Label::Syscall | Label::Err | Label::Class | Label::Group if fold => FOLDED,
                Label::Syscall => &info.name,
                Label::Err => &err,
                Label::Class => info.class,
                Label::Group => info.group,
                Label::Namespace => &workload.namespace,
                Label::Pod => &workload.pod,
                Label::Container => &workload.container,
                Label::Kns => &kns,
            };
            if !s.is_empty() {
                s.push(',');
            }
            let _ = write!(s, "{}=\"", label.name());
            escape_label_value(value, &mut s);
            s.push('"');
        }
        s
    }
}

/// A bucket bound of `ns` nanoseconds as an `le` value in seconds: Rust's shortest decimal
/// that reads back as the same `f64` (`0.000000002`, `2.147483648`), as the `prometheus` crate
/// formats its own `le` bounds, so the label values never change between releases.
fn le_seconds(ns: u64) -> String {
    #[expect(
        clippy::cast_precision_loss,
        reason = "powers of two up to 2^31 are exact"
    )]
    let seconds = ns as f64 / 1e9;
    seconds.to_string()
}

/// Appends `n` in decimal: the one formatting a render does per sample, without `fmt`'s
/// machinery.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0_u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is a digit.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Escapes a label value for the text format: backslash, double quote and newline.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The agent's own metrics: what it read, what it could not, what the probes lost, and what the
/// agent itself costs (the `process_*` series of [`crate::process`]).
pub struct SelfMetrics {
    registry: Registry,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    map_evictions: IntCounterVec,
    map_read_errors: IntCounter,
    probe_errors: IntCounterVec,
    slots_full: IntCounter,
    series: IntGauge,
    folded: IntGauge,
    resolver_errors: IntCounterVec,
    run_time: prometheus::Gauge,
    recursion_misses: IntCounterVec,
    last_run_stats: std::sync::Mutex<Option<crate::maps::RunStats>>,
}

impl std::fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfMetrics").finish_non_exhaustive()
    }
}

impl SelfMetrics {
    /// Registers every self-metric, with `swoll_build_info` set.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "swoll_build_info",
                "Version of the running agent and of its kernel ABI.",
            ),
            &["version", "abi"],
        )?;
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                &swoll_maps_schema::ABI_VERSION.to_string(),
            ])
            .set(1);
        let map_entries = IntGaugeVec::new(
            Opts::new(
                "swoll_map_entries",
                "Entries in a kernel map at the last read.",
            ),
            &["map"],
        )?;
        let map_capacity = IntGaugeVec::new(
            Opts::new("swoll_map_capacity", "Entries a kernel map can hold."),
            &["map"],
        )?;
        let map_evictions = IntCounterVec::new(
            Opts::new(
                "swoll_map_evictions_total",
                "Keys the kernel recycled (LRU) out of a full map, as the agent observed them between reads: the key's series continues from its last read value; calls made since that read are lost (see README, Reliability).",
            ),
            &["map"],
        )?;
        map_evictions.with_label_values(&[metrics::MAP]);
        let map_read_errors = IntCounter::new(
            "swoll_map_read_errors_total",
            "Map keys or slots that could not be read.",
        )?;
        let probe_errors = IntCounterVec::new(
            Opts::new(
                "swoll_probe_errors_total",
                "Syscalls the probes could not fully account, by reason (see README, Reliability).",
            ),
            &["kind"],
        )?;
        let slots_full = IntCounter::new(
            "swoll_ns_slots_full_calls_total",
            "Calls of pid namespaces that found no free namespace slot (--ns-slots), counted in the SWOLL_METRICS map instead: not lost, but at the map's cost.",
        )?;
        let series = IntGauge::new(
            "swoll_syscall_series",
            "Series in the syscall families at the last read.",
        )?;
        let folded = IntGauge::new(
            "swoll_syscall_series_folded",
            "Keys over the --max-series budget, folded into syscall=\"other\" series at the last read.",
        )?;
        let resolver_errors = IntCounterVec::new(
            Opts::new(
                "swoll_resolver_errors_total",
                "Failures resolving pid namespaces to pods, by kind (apiserver: a failed list or watch, retried with backoff).",
            ),
            &["kind"],
        )?;
        resolver_errors.with_label_values(&["apiserver"]);
        let recursion_misses = IntCounterVec::new(
            Opts::new(
                "swoll_probe_recursion_misses_total",
                "Runs of a probe the kernel skipped because it was already running on that CPU (a preempted probe); each sys_exit miss is a lost call.",
            ),
            &["program"],
        )?;
        let run_time = prometheus::Gauge::new(
            "swoll_probe_run_time_ns_per_syscall",
            "Nanoseconds the probes ran per syscall over the last interval, from the kernel's BPF run statistics (only with --bpf-stats).",
        )?;
        for stat in Stat::ERRORS {
            probe_errors.with_label_values(&[stat.label()]);
        }
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(map_entries.clone()))?;
        registry.register(Box::new(map_capacity.clone()))?;
        registry.register(Box::new(map_evictions.clone()))?;
        registry.register(Box::new(map_read_errors.clone()))?;
        registry.register(Box::new(probe_errors.clone()))?;
        registry.register(Box::new(slots_full.clone()))?;
        registry.register(Box::new(series.clone()))?;
        registry.register(Box::new(folded.clone()))?;
        registry.register(Box::new(resolver_errors.clone()))?;
        registry.register(Box::new(run_time.clone()))?;
        registry.register(Box::new(recursion_misses.clone()))?;
        registry.register(Box::new(crate::process::ProcessCollector::for_self()?))?;
        Ok(Self {
            registry,
            map_entries,
            map_capacity,
            map_evictions,
            map_read_errors,
            probe_errors,
            slots_full,
            series,
            folded,
            resolver_errors,
            run_time,
            recursion_misses,
            last_run_stats: std::sync::Mutex::new(None),
        })
    }

    /// Registers a collector of another module (trace mode's metrics) in the same registry, so
    /// one scrape of `/metrics` has everything.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// Records one map read. Probe counters are cumulative in the kernel; the exported counters
    /// follow them.
    pub fn observe(&self, snapshot: &Snapshot, rendered: &Rendered) {
        let entries = i64::try_from(snapshot.entries).unwrap_or(i64::MAX);
        self.map_entries
            .with_label_values(&[metrics::MAP])
            .set(entries);
        self.map_evictions
            .with_label_values(&[metrics::MAP])
            .inc_by(snapshot.evictions);
        self.map_capacity
            .with_label_values(&[metrics::MAP])
            .set(i64::from(snapshot.capacity));
        if snapshot.histograms.is_some() {
            let entries = i64::try_from(snapshot.histogram_entries).unwrap_or(i64::MAX);
            self.map_entries
                .with_label_values(&[histogram::MAP])
                .set(entries);
            self.map_evictions
                .with_label_values(&[histogram::MAP])
                .inc_by(snapshot.histogram_evictions);
            self.map_capacity
                .with_label_values(&[histogram::MAP])
                .set(i64::from(snapshot.capacity));
        }
        if snapshot.slots > 0 {
            self.map_entries
                .with_label_values(&[slots::COUNTS_MAP])
                .set(i64::try_from(snapshot.slots_used).unwrap_or(i64::MAX));
            self.map_capacity
                .with_label_values(&[slots::COUNTS_MAP])
                .set(i64::from(snapshot.slots));
        }
        let full = snapshot.stat(Stat::NsSlotsFull);
        self.slots_full
            .inc_by(full.saturating_sub(self.slots_full.get()));
        self.map_read_errors.inc_by(snapshot.read_errors);
        for stat in Stat::ERRORS {
            let counter = self.probe_errors.with_label_values(&[stat.label()]);
            let now = snapshot.stat(stat);
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        self.series
            .set(i64::try_from(rendered.series).unwrap_or(i64::MAX));
        self.folded
            .set(i64::try_from(rendered.folded).unwrap_or(i64::MAX));
    }

    /// Records the probes' cumulative run statistics; the gauge shows the ns per syscall since
    /// the previous call.
    pub fn observe_run_stats(&self, now: crate::maps::RunStats) {
        let mut last = self
            .last_run_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(prev) = *last {
            let exits = now.exits.saturating_sub(prev.exits);
            if exits > 0 {
                let ns = now.run_time_ns.saturating_sub(prev.run_time_ns);
                #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
                self.run_time.set(ns as f64 / exits as f64);
            }
        }
        *last = Some(now);
    }

    /// Follows the kernel's cumulative recursion-miss counters of each program.
    pub fn observe_recursion_misses(&self, misses: &[(&str, u64)]) {
        for &(program, now) in misses {
            let counter = self.recursion_misses.with_label_values(&[program]);
            counter.inc_by(now.saturating_sub(counter.get()));
        }
    }

    /// The counter of resolver failures of `kind`.
    pub fn resolver_errors(&self, kind: &str) -> IntCounter {
        self.resolver_errors.with_label_values(&[kind])
    }

    /// Encodes the self-metrics in the text format.
    pub fn render(&self, out: &mut Vec<u8>) -> Result<(), prometheus::Error> {
        prometheus::TextEncoder::new().encode(&self.registry.gather(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(rows: &[(u32, u32, u32, u64, u64)]) -> Snapshot {
        Snapshot {
            rows: rows
                .iter()
                .map(|&(pid_ns, nr, errno, count, time_ns)| {
                    (
                        MetricKey { pid_ns, nr, errno },
                        MetricValue { count, time_ns },
                    )
                })
                .collect(),
            ..Snapshot::default()
        }
    }

    fn render(s: &Snapshot) -> String {
        Renderer::new(&Label::ALL, 0)
            .render(s, |_| Workload::default())
            .table
            .text()
    }

    #[test]
    fn rows_carry_resolved_labels() {
        let nr = syscalls::number(syscalls::Arch::NATIVE, "openat").expect("openat");
        let rows = rows(&snapshot(&[(7, nr, 2, 3, 40)]).rows, |_| Workload {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
        });
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].syscall.as_ref(), rows[0].err.as_ref()),
            ("sys_openat", "ENOENT")
        );
        assert_eq!((rows[0].class, rows[0].group), ("FileSystem", "Files"));
        assert_eq!((rows[0].kns, rows[0].count, rows[0].time_ns), (7, 3, 40));
        assert_eq!(rows[0].workload.pod, "p");
    }

    #[test]
    fn dropped_labels_merge_series() {
        let rows = snapshot(&[(1, 0, 0, 2, 20), (2, 0, 0, 3, 30)]);
        let mut r = Renderer::new(&[Label::Syscall, Label::Err, Label::Pod], 0);
        let out = r.render(&rows, |_| Workload::default());
        let text = out.table.text();
        assert_eq!(out.series, 1);
        assert!(
            text.contains(
                "swoll_node_metrics_syscall_count{syscall=\"sys_read\",err=\"OK\",pod=\"\"} 5\n"
            ),
            "{}",
            text
        );
        assert!("bogus".parse::<Label>().is_err());
        assert_eq!(" kns".parse::<Label>(), Ok(Label::Kns));
    }

    #[test]
    fn the_series_budget_folds_newcomers_and_is_sticky() {
        let mut r = Renderer::new(&Label::ALL, 2);
        let first = snapshot(&[(1, 0, 0, 1, 0), (1, 1, 0, 1, 0)]);
        assert_eq!(r.render(&first, |_| Workload::default()).folded, 0);
        // A third key arrives over budget: folded into syscall="other" of its namespace.
        let more = snapshot(&[
            (1, 0, 0, 5, 0),
            (1, 1, 0, 5, 0),
            (1, 2, 0, 7, 0),
            (1, 3, 0, 1, 0),
        ]);
        let out = r.render(&more, |_| Workload::default());
        let text = out.table.text();
        assert_eq!(out.folded, 2);
        assert!(
            text.contains("syscall=\"other\",err=\"other\",class=\"other\",group=\"other\""),
            "{}",
            text
        );
        assert!(text.contains("kns=\"1\"} 8\n"), "{}", text);
        // Retiring the namespace frees the budget.
        r.retire(&HashSet::from_iter([1]));
        assert_eq!(
            r.render(&snapshot(&[(2, 2, 0, 1, 0)]), |_| Workload::default())
                .folded,
            0
        );
    }

    #[test]
    fn renders_swolls_names_and_labels() {
        let nr = syscalls::number(syscalls::Arch::NATIVE, "openat").expect("openat is known");
        let text = render(&snapshot(&[(4026532000, nr, 2, 12, 3400)]));
        let want = "swoll_node_metrics_syscall_count{syscall=\"sys_openat\",err=\"ENOENT\",\
                    class=\"FileSystem\",group=\"Files\",namespace=\"\",pod=\"\",container=\"\",\
                    kns=\"4026532000\"} 12\n";
        assert!(text.contains(want), "{text}");
        assert!(text.contains("# TYPE swoll_node_metrics_syscall_time counter\n"));
        assert!(text.contains("kns=\"4026532000\"} 3400\n"), "{text}");
    }

    #[test]
    fn a_large_table_streams_in_whole_lines() {
        let keys: Vec<_> = (0..2000).map(|nr| (1, nr, 0, u64::from(nr), 1)).collect();
        let out = Renderer::new(&Label::ALL, 0).render(&snapshot(&keys), |_| Workload::default());
        let chunks: Vec<String> = out.table.chunks().collect();
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.ends_with('\n')));
        assert!(chunks.iter().all(|c| c.len() < 2 * CHUNK_BYTES));
        let text = chunks.concat();
        assert_eq!(text, out.table.text());
        assert_eq!(
            text.matches("swoll_node_metrics_syscall_count{").count(),
            2000
        );
        assert_eq!(
            text.matches("swoll_node_metrics_syscall_time{").count(),
            2000
        );
        assert_eq!(text.matches("# TYPE ").count(), 2);
    }

    #[test]
    fn unknown_syscalls_and_errnos_render() {
        let text = render(&snapshot(&[(1, 99_999, 9_999, 1, 0)]));
        assert!(
            text.contains(
                "syscall=\"sys_unknown_99999\",err=\"E9999\",class=\"Unknown\",group=\"Unknown\""
            ),
            "{text}"
        );
    }

    #[test]
    fn pid_namespaces_of_one_workload_stay_distinct_series() {
        let rows = snapshot(&[(1, 0, 0, 2, 20), (2, 0, 0, 3, 30)]);
        let one = |_| Workload {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
        };
        let text = Renderer::new(&Label::ALL, 0)
            .render(&rows, one)
            .table
            .text();
        // `kns` keeps them apart: a restarted container's counters start a new series instead
        // of making the old one go backwards.
        assert_eq!(text.matches("swoll_node_metrics_syscall_count{").count(), 2);
    }

    /// One key of a test snapshot with a histogram: (pid_ns, nr, errno, time_ns,
    /// [(bucket, calls)]), the count being the calls.
    type HistogramRow<'a> = (u32, u32, u32, u64, &'a [(usize, u64)]);

    fn with_histograms(rows: &[HistogramRow<'_>]) -> Snapshot {
        let mut s = snapshot(&[]);
        let mut histograms = HashMap::new();
        for &(pid_ns, nr, errno, time_ns, buckets) in rows {
            let key = MetricKey { pid_ns, nr, errno };
            let mut h = LatencyBuckets::ZERO;
            for &(i, n) in buckets {
                h.buckets[i] = n;
            }
            let count = h.buckets.iter().sum();
            s.rows.insert(key, MetricValue { count, time_ns });
            histograms.insert(key, h);
        }
        s.histograms = Some(histograms);
        s
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let nr = syscalls::number(syscalls::Arch::NATIVE, "nanosleep").expect("nanosleep");
        let five_ms = histogram::bucket(5_000_000);
        let s = with_histograms(&[(9, nr, 0, 100_300_000, &[(0, 1), (five_ms, 19)])]);
        let text = render(&s);
        let labels = "syscall=\"sys_nanosleep\",err=\"OK\",class=\"Time\",group=\"MiscellaneousTime\",\
                      namespace=\"\",pod=\"\",container=\"\",kns=\"9\"";
        let family = SYSCALL_DURATION;
        for want in [
            format!("# TYPE {family} histogram\n"),
            format!("{family}_bucket{{{labels},le=\"0.000000002\"}} 1\n"),
            format!("{family}_bucket{{{labels},le=\"0.000004096\"}} 1\n"),
            format!("{family}_bucket{{{labels},le=\"0.004194304\"}} 1\n"),
            format!("{family}_bucket{{{labels},le=\"0.008388608\"}} 20\n"),
            format!("{family}_bucket{{{labels},le=\"2.147483648\"}} 20\n"),
            format!("{family}_bucket{{{labels},le=\"+Inf\"}} 20\n"),
            format!("{family}_sum{{{labels}}} 0.1003\n"),
            format!("{family}_count{{{labels}}} 20\n"),
        ] {
            assert!(text.contains(&want), "{want} in\n{text}");
        }
        assert_eq!(
            text.matches(&format!("{family}_bucket{{")).count(),
            histogram::BUCKETS
        );
        // Without histograms in the snapshot the family is not rendered at all.
        assert!(!render(&snapshot(&[(9, nr, 0, 1, 1)])).contains(family));
    }

    #[test]
    fn histograms_follow_the_labels_and_the_budget() {
        // Two namespaces of one workload merge when kns is dropped: buckets, sum and count add.
        let s = with_histograms(&[
            (1, 0, 0, 2_000, &[(3, 2)]),
            (2, 0, 0, 3_000, &[(3, 1), (9, 1)]),
        ]);
        let out =
            Renderer::new(&[Label::Syscall, Label::Err], 0).render(&s, |_| Workload::default());
        let text = out.table.text();
        let family = SYSCALL_DURATION;
        let labels = "syscall=\"sys_read\",err=\"OK\"";
        assert!(
            text.contains(&format!(
                "{family}_bucket{{{labels},le=\"0.000000016\"}} 3\n"
            )),
            "{}",
            text
        );
        assert!(
            text.contains(&format!("{family}_bucket{{{labels},le=\"+Inf\"}} 4\n")),
            "{}",
            text
        );
        assert!(
            text.contains(&format!("{family}_sum{{{labels}}} 0.000005\n")),
            "{}",
            text
        );
        // No labels at all: `le` alone.
        let out = Renderer::new(&[], 0).render(&s, |_| Workload::default());
        let text = out.table.text();
        assert!(
            text.contains(&format!("{family}_bucket{{le=\"+Inf\"}} 4\n")),
            "{}",
            text
        );
        assert!(
            text.contains(&format!("{family}_count{{}} 4\n")),
            "{}",
            text
        );
        // Over budget, a key's histogram folds into its workload's syscall="other" series.
        let out = Renderer::new(&Label::ALL, 1).render(&s, |_| Workload::default());
        let text = out.table.text();
        assert_eq!(out.folded, 1);
        assert!(
            text.contains(&format!("{family}_count{{syscall=\"other\",err=\"other\",class=\"other\",group=\"other\",namespace=\"\",pod=\"\",container=\"\",kns=\"2\"}} 2\n")),
            "{}",
            text
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label_value("a\"b\\c\nd", &mut out);
        assert_eq!(out, "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn self_metrics_follow_the_probe_counters() {
        let m = SelfMetrics::new().expect("registry");
        let mut s = snapshot(&[(1, 0, 0, 1, 1)]);
        s.capacity = 8;
        s.entries = 1;
        s.evictions = 2;
        s.stats[Stat::MetricsUpdateFailed as usize] = 5;
        m.observe(&s, &Rendered::default());
        s.stats[Stat::MetricsUpdateFailed as usize] = 7;
        s.evictions = 3;
        m.observe(&s, &Rendered::default());
        let mut out = Vec::new();
        m.render(&mut out).expect("encode");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("swoll_probe_errors_total{kind=\"metrics_update_failed\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("swoll_map_capacity{map=\"SWOLL_METRICS\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("swoll_map_entries{map=\"SWOLL_METRICS\"} 1\n"),
            "{text}"
        );
        // Evictions are counted per pass: the counter adds them up.
        assert!(
            text.contains("swoll_map_evictions_total{map=\"SWOLL_METRICS\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "swoll_build_info{{abi=\"{}\",version=\"",
                swoll_maps_schema::ABI_VERSION
            )),
            "{text}"
        );
    }
}
