//! The agent's own footprint as the `process_*` series every Prometheus client library exports
//! on Linux: resident and virtual memory, CPU time, open and maximum file descriptors, start
//! time. An agent runs on every node, so what it costs the node is a metric its users want next
//! to what it measures, under the names their dashboards and alerts already use.
//!
//! Read from `/proc/self` at each scrape. In the DaemonSet `/proc` is the procfs of the pod's
//! own pid namespace (the host's is at `--proc-root`), in which `self` is the agent.
//!
//! The `prometheus` crate's `process` feature has a collector for these, but it counts CPU time
//! in whole seconds (an integer counter, where the client conventions and other libraries use
//! fractional seconds: an agent that uses a few milliseconds a second would move in steps of
//! one second), and it brings in the `procfs` crate for three small files.
use std::path::{Path, PathBuf};

use prometheus::{
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
};

/// The six series: name, help (the wording of the Prometheus client libraries), type.
const SERIES: [(&str, &str, MetricType); 6] = [
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        MetricType::COUNTER,
    ),
    (
        "process_open_fds",
        "Number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (
        "process_max_fds",
        "Maximum number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        MetricType::GAUGE,
    ),
];

/// What `/proc/<pid>/stat` says about a process's footprint, in the kernel's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// User and system CPU time, in clock ticks (fields 14 and 15).
    cpu_ticks: u64,
    /// When the process started, in clock ticks after boot (field 22).
    start_ticks: u64,
    /// Virtual memory size in bytes (field 23).
    vsize: u64,
    /// Resident set size in pages (field 24).
    rss_pages: u64,
}

/// Parses the fields of `/proc/<pid>/stat` that [`Stat`] holds. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields are counted from
/// the last `)`. `None` if the text is not a stat line.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // Field 3 (the state) is the first after the name.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n.checked_sub(3)?)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The soft limit of open files from `/proc/<pid>/limits`; `+Inf` when unlimited. `None` if
/// the text has no such line.
fn parse_max_open_files(text: &str) -> Option<f64> {
    let soft = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(f64::INFINITY),
        n => n.parse::<u64>().ok().map(|n| n as f64),
    }
}

/// The boot time in seconds since the epoch, from the `btime` line of `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// A `sysconf` value that must be positive (clock ticks per second, page size).
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

/// A [`Collector`] of the `process_*` series of one process, read from its procfs directory at
/// each gather. A file that cannot be read or parsed leaves its series out of that scrape,
/// as the client libraries do, rather than failing the scrape.
pub struct ProcessCollector {
    /// The process's procfs directory (`/proc/self`).
    dir: PathBuf,
    /// The system-wide `stat` file, for the boot time.
    proc_stat: PathBuf,
    /// Clock ticks per second, the unit of CPU and start times in `stat`.
    ticks: Option<u64>,
    /// Bytes per page, the unit of the resident set size in `stat`.
    page_size: Option<u64>,
    /// The six series' descriptions, which the registry checks for names taken twice.
    descs: Vec<Desc>,
}

impl std::fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCollector")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ProcessCollector {
    /// The collector of the calling process: `/proc/self`.
    pub fn for_self() -> Result<Self, prometheus::Error> {
        Self::new(Path::new("/proc/self"), Path::new("/proc/stat"))
    }

    /// The collector of the process whose procfs directory is `dir`, with the boot time from
    /// `proc_stat` (the procfs's `stat`).
    fn new(dir: &Path, proc_stat: &Path) -> Result<Self, prometheus::Error> {
        let descs = SERIES
            .iter()
            .map(|&(name, help, _)| {
                Desc::new(name.into(), help.into(), Vec::new(), Default::default())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            dir: dir.to_owned(),
            proc_stat: proc_stat.to_owned(),
            ticks: sysconf(libc::_SC_CLK_TCK),
            page_size: sysconf(libc::_SC_PAGESIZE),
            descs,
        })
    }

    /// The six values now, in the order of [`SERIES`]; `None` for those that could not be
    /// read. Open descriptors include the one that lists them, as in the client libraries.
    fn read(&self) -> [Option<f64>; 6] {
        let read = |path: &Path| std::fs::read_to_string(path).ok();
        let stat = read(&self.dir.join("stat")).as_deref().and_then(parse_stat);
        let ticks = self.ticks.map(|t| t as f64);
        let open_fds = std::fs::read_dir(self.dir.join("fd"))
            .ok()
            .map(|entries| entries.filter(Result::is_ok).count() as f64);
        let max_fds = read(&self.dir.join("limits"))
            .as_deref()
            .and_then(parse_max_open_files);
        let boot = read(&self.proc_stat).as_deref().and_then(parse_boot_time);
        [
            stat.zip(ticks).map(|(s, t)| s.cpu_ticks as f64 / t),
            open_fds,
            max_fds,
            stat.map(|s| s.vsize as f64),
            stat.zip(self.page_size)
                .map(|(s, page)| s.rss_pages.saturating_mul(page) as f64),
            stat.zip(ticks)
                .zip(boot)
                .map(|((s, t), boot)| boot as f64 + s.start_ticks as f64 / t),
        ]
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        SERIES
            .iter()
            .zip(self.read())
            .filter_map(|(&(name, help, kind), value)| Some(family(name, help, kind, value?)))
            .collect()
    }
}

/// A family of one unlabelled sample.
fn family(name: &str, help: &str, kind: MetricType, value: f64) -> MetricFamily {
    let mut metric = proto::Metric::default();
    if kind == MetricType::COUNTER {
        let mut counter = proto::Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = proto::Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(vec![metric]);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line of a process whose name holds a space and parentheses.
    const STAT: &str = "4242 (swoll (x) y) S 1 4242 4242 0 -1 4194560 2270 0 0 0 \
        150 75 0 0 20 0 9 0 123456 1073741824 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 \
        0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn process_stat_fields_are_counted_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 225,
                start_ticks: 123_456,
                vsize: 1_073_741_824,
                rss_pages: 2048,
            })
        );
    }

    #[test]
    fn process_bad_input_gives_nothing_rather_than_a_panic() {
        for text in [
            "",
            "4242",
            "4242 (swoll)",
            "4242 (swoll) S 1 2 3",
            "4242 (swoll) S 1 4242 4242 0 -1 x y z w v u t s r q p o n m l k j",
            &STAT.replace(" 150 ", " -150 "),
            &STAT.replace(" 150 75 ", " 18446744073709551615 1 "),
        ] {
            assert_eq!(parse_stat(text), None, "{text:?}");
        }
        for text in ["", "Max open files", "Max open files  lots  lots  files"] {
            assert_eq!(parse_max_open_files(text), None, "{text:?}");
        }
        for text in ["", "btime", "btime x", "cpu 1 2 3\n"] {
            assert_eq!(parse_boot_time(text), None, "{text:?}");
        }
    }

    #[test]
    fn process_limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             127431               127431               processes \n\
            Max open files            1024                 524288               files     \n\
            Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024.0));
        assert_eq!(
            parse_max_open_files(&limits.replace("1024 ", "unlimited ")),
            Some(f64::INFINITY)
        );
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1767225600\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Some(1_767_225_600));
    }

    /// A fake procfs directory: the collector reads what the files say, in seconds and bytes.
    #[test]
    fn process_collector_converts_the_kernels_units() {
        let dir = std::env::temp_dir().join(format!("swoll-process-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("fd")).expect("temp dir");
        for fd in ["0", "1", "2", "7"] {
            std::fs::write(dir.join("fd").join(fd), "").expect("fd");
        }
        std::fs::write(dir.join("stat"), STAT).expect("stat");
        std::fs::write(dir.join("limits"), "Max open files  4096  8192  files\n").expect("limits");
        std::fs::write(dir.join("proc-stat"), "btime 1767225600\n").expect("proc-stat");
        let collector = ProcessCollector::new(&dir, &dir.join("proc-stat")).expect("collector");
        let ticks = sysconf(libc::_SC_CLK_TCK).expect("ticks") as f64;
        let page = sysconf(libc::_SC_PAGESIZE).expect("page size") as f64;
        assert_eq!(
            collector.read(),
            [
                Some(225.0 / ticks),
                Some(4.0),
                Some(4096.0),
                Some(1_073_741_824.0),
                Some(2048.0 * page),
                Some(1_767_225_600.0 + 123_456.0 / ticks),
            ]
        );
        std::fs::remove_file(dir.join("stat")).expect("rm stat");
        let families = collector.collect();
        let names: Vec<&str> = families.iter().map(MetricFamily::name).collect();
        assert_eq!(names, ["process_open_fds", "process_max_fds"]);
        std::fs::remove_dir_all(&dir).expect("rm temp dir");
    }

    #[test]
    fn process_collector_reads_this_process() {
        use prometheus::Encoder as _;
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(ProcessCollector::for_self().expect("collector")))
            .expect("register");
        let families = registry.gather();
        let value = |name: &str| {
            let family = families
                .iter()
                .find(|f| f.name() == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            let metric = &family.get_metric()[0];
            match family.get_field_type() {
                MetricType::COUNTER => metric.get_counter().get_value(),
                _ => metric.get_gauge().get_value(),
            }
        };
        assert!(value("process_resident_memory_bytes") > 1_048_576.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut text)
            .expect("encode");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_resident_memory_bytes gauge\n"),
            "{text}"
        );
    }
}
