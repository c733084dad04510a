//! `swoll trace`: streams decoded syscalls of containers (or of every process) until Ctrl-C,
//! on any Linux host, Kubernetes or not.
//!
//! It loads the trace programs on their own (no metrics), takes one filter slot, and keeps the
//! filter's pid namespaces in step with the containers that run: every second it looks at
//! procfs, adds the namespaces of new containers that are in scope and removes those gone.
//! With `--no-containers` the filter has wildcard rules instead and every process is traced.
use std::{
    collections::BTreeSet,
    io::{BufWriter, Write as _},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lru::LruCache;
use swoll_maps_schema::trace::{ANY_PID_NS, TraceEvent};

use super::{
    event::{self, Container},
    filter::{Filter, TraceSlot, keys, write_captures},
    ring,
    selector::Selector,
};
use crate::{
    loader::{self, TraceMaps},
    resolver::{
        pods::{self, KubePods},
        procfs::Procfs,
    },
    syscalls::{self, Arch},
};

/// How events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One JSON object per line, in swoll's event shape.
    Json,
    /// One readable line per event.
    Cli,
}

/// What to trace and how.
#[derive(Debug)]
pub struct TraceOptions {
    /// Syscall numbers to trace; empty: all.
    pub syscalls: Vec<u32>,
    /// Trace every process, host included.
    pub no_containers: bool,
    /// Only containers of pods this selects (needs Kubernetes); `None`: every container.
    pub pods: Option<Selector>,
    /// The output format.
    pub output: Output,
    /// Keep one call in N (per CPU).
    pub sample_rate: u32,
    /// First bytes of read/write buffers to capture.
    pub capture_bytes: u32,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Ring buffer bytes.
    pub ring_bytes: u32,
    /// procfs root.
    pub proc_root: PathBuf,
    /// The kernel's BTF.
    pub btf: PathBuf,
    /// The pid namespace of the host, left out in container mode.
    pub host_pid_ns: u32,
    /// The node whose pods `pods` selects from (`None`: every node).
    pub node_name: Option<String>,
}

/// Parses `-s` names (`openat`, `sys_openat`, `*`) into numbers of this architecture.
pub fn syscall_numbers(names: &[String]) -> anyhow::Result<Vec<u32>> {
    if names.iter().any(|n| n == "*") {
        return Ok(Vec::new());
    }
    let mut unknown = Vec::new();
    let mut nrs = BTreeSet::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match syscalls::number(Arch::NATIVE, name) {
            Some(nr) => {
                nrs.insert(nr);
            }
            None => unknown.push(name.to_owned()),
        }
    }
    anyhow::ensure!(
        unknown.is_empty(),
        "unknown syscall(s) on this architecture: {}",
        unknown.join(", ")
    );
    anyhow::ensure!(!nrs.is_empty(), "no syscall to trace: give -s NAME[,NAME…]");
    Ok(nrs.into_iter().collect())
}

/// A flag that SIGINT and SIGTERM set. Their handler also interrupts the wait on the ring
/// buffer: an epoll wait is never restarted after a signal handler, `SA_RESTART` or not.
fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Runs `swoll trace` until Ctrl-C, `--count` or `--duration`.
pub fn run(opts: TraceOptions) -> anyhow::Result<()> {
    let mut probes = loader::load_trace(&opts.btf, std::process::id(), opts.ring_bytes)?;
    write_captures(&mut probes.maps, opts.capture_bytes)?;
    let mut filter = Filter::default();
    let slot = filter.open(opts.sample_rate)?;
    let mut scope = Scope::new(&opts)?;
    if opts.no_containers {
        for key in keys(ANY_PID_NS, &opts.syscalls) {
            filter.add(&mut probes.maps.rules, slot, key)?;
        }
    }
    let stop = stop_on_signals().context("handling SIGINT and SIGTERM")?;
    tracing::info!(
        syscalls = opts.syscalls.len(),
        containers_only = !opts.no_containers,
        "tracing; Ctrl-C stops"
    );
    let started = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut written = 0u64;
    let mut malformed = 0u64;
    let mut lost_seen = 0u64;
    let mut next_scan = started;
    let mut containers = Containers::new(&opts.proc_root);
    'run: while !stop.load(Ordering::SeqCst) {
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if !opts.no_containers && Instant::now() >= next_scan {
            scope.rescan(
                &mut filter,
                &mut probes.maps,
                slot,
                &opts.syscalls,
                &mut containers,
            )?;
            next_scan = Instant::now() + Duration::from_secs(1);
        }
        ring::wait(&probes.maps.events, Duration::from_millis(200))?;
        while let Some(ev) = ring::next(&mut probes.maps.events, &mut malformed) {
            let container = containers.of(&ev);
            let wrote = match opts.output {
                Output::Json => event::write_json(&mut out, "cli", &ev, container.as_ref()),
                Output::Cli => event::write_cli(&mut out, &ev, container.as_ref()),
            };
            if !continue_after(wrote)? {
                break 'run;
            }
            written += 1;
            if opts.count.is_some_and(|n| written >= n) {
                break 'run;
            }
        }
        let lost = ring::lost(&probes.maps.lost)?[slot.index() as usize];
        if lost > lost_seen {
            let wrote = match opts.output {
                Output::Json => event::write_lost(&mut out, "cli", lost - lost_seen, lost),
                Output::Cli => writeln!(out, "-- {} events lost ({lost} in all)", lost - lost_seen),
            };
            lost_seen = lost;
            if !continue_after(wrote)? {
                break;
            }
        }
        if !continue_after(out.flush())? {
            break;
        }
    }
    let _ = out.flush();
    filter.close(&mut probes.maps.rules, slot)?;
    if malformed > 0 {
        tracing::warn!(
            malformed,
            "trace records of an unexpected size were skipped"
        );
    }
    Ok(())
}

/// Whether to go on after a write: a closed stdout (`swoll trace | head`) ends the trace
/// quietly; any other error is reported.
fn continue_after(wrote: std::io::Result<()>) -> anyhow::Result<bool> {
    match wrote {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing trace events"),
    }
}

/// The pid namespaces in scope: the containers (of the selected pods, with Kubernetes) that
/// live now, as the filter holds them.
struct Scope {
    procfs: Procfs,
    host_pid_ns: u32,
    /// Pid namespaces in the filter.
    traced: BTreeSet<u32>,
    /// The pod cache and the selector, when pods are selected.
    pods: Option<(KubePods, Selector)>,
}

impl Scope {
    fn new(opts: &TraceOptions) -> anyhow::Result<Scope> {
        let pods = match &opts.pods {
            None => None,
            Some(selector) => {
                let query = selector.query(opts.node_name.as_deref());
                let pods = pods::watch_from_thread(&query, pods::FIRST_LIST_WAIT).context(
                    "selecting pods needs a Kubernetes cluster (KUBECONFIG or in-cluster)",
                )?;
                Some((pods, selector.clone()))
            }
        };
        Ok(Scope {
            procfs: Procfs::new(&opts.proc_root),
            host_pid_ns: opts.host_pid_ns,
            traced: BTreeSet::new(),
            pods,
        })
    }

    /// Brings the filter in step with the containers alive now.
    fn rescan(
        &mut self,
        filter: &mut Filter,
        maps: &mut TraceMaps,
        slot: TraceSlot,
        syscalls: &[u32],
        containers: &mut Containers,
    ) -> anyhow::Result<()> {
        let mut wanted = BTreeSet::new();
        for (ns, pid) in self.procfs.all_processes() {
            if ns == self.host_pid_ns {
                continue;
            }
            let Some(container) = self.procfs.container_of(pid) else {
                continue;
            };
            let described = match &self.pods {
                None => Container::new(&container.id),
                Some((pods, selector)) => match pods.pod_of_container(&container.id) {
                    Some(pod) if selector.matches(&pod) => pods::container(&pod, &container.id),
                    _ => continue,
                },
            };
            containers.remember(ns, Some(described));
            wanted.insert(ns);
        }
        for &ns in wanted.difference(&self.traced) {
            for key in keys(ns, syscalls) {
                filter.add(&mut maps.rules, slot, key)?;
            }
        }
        for &ns in self.traced.difference(&wanted) {
            for key in keys(ns, syscalls) {
                filter.remove(&mut maps.rules, slot, key)?;
            }
        }
        self.traced = wanted;
        Ok(())
    }
}

/// Pid namespaces whose container is remembered.
const CONTAINERS_CACHED: std::num::NonZeroUsize = std::num::NonZeroUsize::new(4096).unwrap();

/// Which container each event's pid namespace is, cached.
struct Containers {
    procfs: Procfs,
    by_pid_ns: LruCache<u32, Option<Container>>,
}

impl Containers {
    fn new(proc_root: &std::path::Path) -> Containers {
        Containers {
            procfs: Procfs::new(proc_root),
            by_pid_ns: LruCache::new(CONTAINERS_CACHED),
        }
    }

    fn remember(&mut self, pid_ns: u32, container: Option<Container>) {
        self.by_pid_ns.put(pid_ns, container);
    }

    /// The container of `ev`'s process: from the cache, else from its cgroup.
    fn of(&mut self, ev: &TraceEvent) -> Option<Container> {
        if let Some(known) = self.by_pid_ns.get(&ev.pid_ns) {
            return known.clone();
        }
        let container = self
            .procfs
            .container_of(ev.pid())
            .or_else(|| self.procfs.container_of_cgroup(ev.cgroup_id))
            .map(|c| Container::new(&c.id));
        self.by_pid_ns.put(ev.pid_ns, container.clone());
        container
    }
}
