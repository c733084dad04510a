//! Prometheus exposition of the in-kernel counters, and of the agent's own health.
//!
//! The two syscall families keep swoll's exact names and labels, because users' queries and
//! dashboards depend on them: `swoll_node_metrics_syscall_count` and
//! `swoll_node_metrics_syscall_time` (nanoseconds), counters labelled `syscall, err, class,
//! group, namespace, pod, container, kns`. They are rendered to text once per map read (every
//! `--interval`), so a scrape costs a copy however many series there are. The agent's own
//! metrics (`swoll_*`) live in a `prometheus` registry and are encoded at scrape time.
use std::{collections::HashMap, fmt::Write as _};

use prometheus::{Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use swoll_maps_schema::{
    metrics::{self, MetricKey, MetricValue},
    stats::Stat,
};

use crate::{errno, maps::Snapshot, syscalls};

/// Name of the call-count family.
pub const SYSCALL_COUNT: &str = "swoll_node_metrics_syscall_count";
/// Name of the call-time family (nanoseconds).
pub const SYSCALL_TIME: &str = "swoll_node_metrics_syscall_time";

/// The Kubernetes identity of a pid namespace: empty strings for host processes and for
/// namespaces not (yet) resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// Kubernetes namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
}

/// The label set of one syscall series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    workload: Workload,
    kns: u32,
    nr: u32,
    errno: u32,
}

/// Renders the syscall families of `snapshot`, labelling each pid namespace with `workload`.
/// Keys that resolve to the same labels are summed.
pub fn render_syscalls(snapshot: &Snapshot, workload: impl Fn(u32) -> Workload) -> String {
    let mut series: HashMap<SeriesKey, MetricValue> = HashMap::with_capacity(snapshot.rows.len());
    for (key, value) in &snapshot.rows {
        let MetricKey { pid_ns, nr, errno } = *key;
        let entry = series
            .entry(SeriesKey {
                workload: workload(pid_ns),
                kns: pid_ns,
                nr,
                errno,
            })
            .or_default();
        entry.count = entry.count.wrapping_add(value.count);
        entry.time_ns = entry.time_ns.wrapping_add(value.time_ns);
    }
    let mut sorted: Vec<_> = series.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let mut labels = Vec::with_capacity(sorted.len());
    for (key, _) in &sorted {
        labels.push(label_set(key));
    }
    let mut out = String::with_capacity(sorted.len() * 2 * 200 + 512);
    for (family, help, pick) in [
        (
            SYSCALL_COUNT,
            "System calls that returned, by pid namespace, syscall and errno, counted in the kernel.",
            (|v: &MetricValue| v.count) as fn(&MetricValue) -> u64,
        ),
        (
            SYSCALL_TIME,
            "Nanoseconds spent in those system calls, timed in the kernel from sys_enter to sys_exit.",
            |v: &MetricValue| v.time_ns,
        ),
    ] {
        let _ = writeln!(out, "# HELP {family} {help}");
        let _ = writeln!(out, "# TYPE {family} counter");
        for ((_, value), labels) in sorted.iter().zip(&labels) {
            let _ = writeln!(out, "{family}{{{labels}}} {}", pick(value));
        }
    }
    out
}

/// `syscall="…",err="…",…` for one series.
fn label_set(key: &SeriesKey) -> String {
    let info = syscalls::describe_native(key.nr);
    let mut s = String::with_capacity(160);
    for (name, value) in [
        ("syscall", info.name.as_ref()),
        ("err", errno::name(key.errno).as_ref()),
        ("class", info.class),
        ("group", info.group),
        ("namespace", &key.workload.namespace),
        ("pod", &key.workload.pod),
        ("container", &key.workload.container),
    ] {
        let _ = write!(s, "{name}=\"");
        escape_label_value(value, &mut s);
        s.push_str("\",");
    }
    let _ = write!(s, "kns=\"{}\"", key.kns);
    s
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

/// The agent's own metrics: what it read, what it could not, and what the probes lost.
pub struct SelfMetrics {
    registry: Registry,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    map_read_errors: IntCounter,
    probe_errors: IntCounterVec,
    series: IntGauge,
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
        let series = IntGauge::new(
            "swoll_syscall_series",
            "Series in the syscall families at the last read.",
        )?;
        for stat in Stat::ERRORS {
            probe_errors.with_label_values(&[stat.label()]);
        }
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(map_entries.clone()))?;
        registry.register(Box::new(map_capacity.clone()))?;
        registry.register(Box::new(map_read_errors.clone()))?;
        registry.register(Box::new(probe_errors.clone()))?;
        registry.register(Box::new(series.clone()))?;
        Ok(Self {
            registry,
            map_entries,
            map_capacity,
            map_read_errors,
            probe_errors,
            series,
        })
    }

    /// Records one map read. Probe counters are cumulative in the kernel; the exported counters
    /// follow them.
    pub fn observe(&self, snapshot: &Snapshot, series: usize) {
        let entries = i64::try_from(snapshot.rows.len()).unwrap_or(i64::MAX);
        self.map_entries
            .with_label_values(&[metrics::MAP])
            .set(entries);
        self.map_capacity
            .with_label_values(&[metrics::MAP])
            .set(i64::from(snapshot.capacity));
        self.map_read_errors.inc_by(snapshot.read_errors);
        for stat in Stat::ERRORS {
            let counter = self.probe_errors.with_label_values(&[stat.label()]);
            let now = snapshot.stat(stat);
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        self.series.set(i64::try_from(series).unwrap_or(i64::MAX));
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

    #[test]
    fn renders_swolls_names_and_labels() {
        let nr = syscalls::number(syscalls::Arch::NATIVE, "openat").expect("openat is known");
        let text = render_syscalls(&snapshot(&[(4026532000, nr, 2, 12, 3400)]), |_| {
            Workload::default()
        });
        let want = "swoll_node_metrics_syscall_count{syscall=\"sys_openat\",err=\"ENOENT\",\
                    class=\"FileSystem\",group=\"Files\",namespace=\"\",pod=\"\",container=\"\",\
                    kns=\"4026532000\"} 12\n";
        assert!(text.contains(want), "{text}");
        assert!(text.contains("# TYPE swoll_node_metrics_syscall_time counter\n"));
        assert!(text.contains("kns=\"4026532000\"} 3400\n"), "{text}");
    }

    #[test]
    fn unknown_syscalls_and_errnos_render() {
        let text = render_syscalls(&snapshot(&[(1, 99_999, 9_999, 1, 0)]), |_| {
            Workload::default()
        });
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
        let text = render_syscalls(&rows, one);
        // `kns` keeps them apart: a restarted container's counters start a new series instead
        // of making the old one go backwards.
        assert_eq!(text.matches("swoll_node_metrics_syscall_count{").count(), 2);
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
        s.stats[Stat::MetricsUpdateFailed as usize] = 5;
        m.observe(&s, 1);
        s.stats[Stat::MetricsUpdateFailed as usize] = 7;
        m.observe(&s, 1);
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
            text.contains("swoll_build_info{abi=\"1\",version=\""),
            "{text}"
        );
    }
}
