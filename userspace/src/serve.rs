//! `swoll serve`: load the probes, read their maps every interval, serve the metrics; with
//! Kubernetes, run the traces its ConfigMap and Trace resources ask for.
use std::{
    net::SocketAddr,
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use foldhash::HashSet;

use crate::{
    exposition::Exposition,
    host, http,
    loader::{self, LoadError, LoadOptions, Probes},
    maps::{Ledger, RunStats, Snapshot},
    metrics::{Label, Renderer, RowSource, SelfMetrics},
    resolver::{PodIndex, Processes, Resolver, pods, procfs::Procfs},
    trace::{
        agent::{self, TraceAgentOptions, TraceHub},
        resource, started,
    },
};
use swoll_decode::trace::selector::PodQuery;
use swoll_maps_schema::{
    histogram::LatencyBuckets,
    metrics::{MetricKey, MetricValue},
    pidns::PidNsSeen,
};

/// Settings of `swoll serve`, validated.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Time between map reads; also how long a gone namespace's series stay.
    pub interval: Duration,
    /// The host's procfs, where pid namespaces are resolved.
    pub proc_root: std::path::PathBuf,
    /// Labels of the syscall families.
    pub labels: Vec<Label>,
    /// Most series of their own (0: no limit); the rest fold into `syscall="other"`.
    pub max_series: usize,
    /// Bounds of both HTTP listeners' connections.
    pub http: crate::conn::Limits,
    /// The Kubernetes node whose pods label the series; `None` is local mode (no API calls).
    pub node_name: Option<String>,
    /// Turn on the kernel's BPF run statistics for `swoll_probe_run_time_ns_per_syscall`.
    pub bpf_stats: bool,
    /// Authenticate and authorize requests through the Kubernetes API server (`--auth`).
    pub auth: bool,
    /// The token audiences `--auth` accepts (`--auth-audience`); empty: the API server's.
    pub auth_audiences: Vec<String>,
    /// Serve both listeners over TLS with this certificate, reloaded when it changes.
    pub tls: Option<crate::tls::CertFiles>,
    /// Traces from a ConfigMap (with `node_name`); `None`: metrics only.
    pub traces: Option<TraceSettings>,
    /// How the probes are loaded.
    pub load: LoadOptions,
}

/// Where trace specs come from and where their events are streamed.
#[derive(Clone, Debug)]
pub struct TraceSettings {
    /// The ConfigMap's namespace.
    pub configmap_namespace: String,
    /// The ConfigMap's name.
    pub configmap_name: String,
    /// The listener of `GET /traces/<name>`.
    pub listen: SocketAddr,
    /// The file of the bearer token the streams require, if any.
    pub token_file: Option<std::path::PathBuf>,
    /// Ring buffer bytes.
    pub ring_bytes: u32,
    /// The most bytes of read/write buffers a trace may capture.
    pub max_capture_bytes: u32,
    /// Also write trace events to stdout.
    pub stdout: bool,
    /// Run ConfigMap specs without a namespace (every namespace's pods).
    pub allow_cluster_wide: bool,
}

/// Why `swoll serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The probes could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The self-metrics registry refused a metric (a bug).
    #[error("registering self-metrics")]
    Metrics(#[from] prometheus::Error),
    /// The listener could not be bound.
    #[error("listening on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No Kubernetes client configuration (KUBECONFIG or in-cluster) could be found.
    #[error(transparent)]
    Kube(#[from] pods::KubeConfigError),
    /// `--bpf-stats` without `CAP_SYS_ADMIN`, which `BPF_ENABLE_STATS` requires.
    #[error(
        "--bpf-stats needs CAP_SYS_ADMIN (BPF_ENABLE_STATS), which this process lacks: grant it \
         (the Helm chart does with bpfStats: true) or run without --bpf-stats"
    )]
    RunStatsNeedSysAdmin,
    /// `--bpf-stats`: the kernel refused to turn on BPF run statistics.
    #[error("enabling BPF run statistics (--bpf-stats)")]
    RunStats(#[source] std::io::Error),
    /// `--traces-token-file` cannot be used.
    #[error(transparent)]
    TokenFile(#[from] crate::auth::TokenFileError),
    /// `--tls-cert-file` and `--tls-key-file` cannot serve.
    #[error("TLS (--tls-cert-file, --tls-key-file)")]
    Tls(#[from] crate::tls::TlsError),
    /// The HTTP server or the signal handlers failed.
    #[error("serving HTTP")]
    Http(#[source] std::io::Error),
}

/// Runs until SIGINT or SIGTERM, then returns: pinned probes (`--pin-path`) stay attached and
/// counting for the next agent, unpinned ones are detached. SIGHUP re-reads what can be re-read.
pub async fn run(opts: ServeOptions) -> Result<(), ServeError> {
    // Before the load: an agent that cannot have what it was asked for must not replace the
    // pinned probes of the agent before it.
    let _run_stats = if opts.bpf_stats {
        Some(enable_run_stats()?)
    } else {
        None
    };
    let (tls, tls_reload) = match opts.tls.clone().map(crate::tls::acceptor).transpose()? {
        Some((acceptor, reload)) => (Some(acceptor), Some(reload)),
        None => (None, None),
    };
    let probes = loader::load(&opts.load)?;
    let pin_set = probes.pin_set().map(|p| p.display().to_string());
    tracing::info!(
        map_size = opts.load.map_size,
        host = opts.load.count_host,
        time = opts.load.time,
        histogram = opts.load.histogram,
        pinned = pin_set.as_deref().unwrap_or("no"),
        "{} {}",
        if probes.reused() {
            "took over the pinned probes (counters continue where the last agent left them) on raw_syscalls"
        } else {
            "probes attached to raw_syscalls"
        },
        probes.attached().join("/"),
    );
    let exposition = Arc::new(Exposition::new(SelfMetrics::new()?));
    exposition.set_seccomp_origin(crate::exposition::Origin {
        proc_root: opts.proc_root.clone(),
        counting_since: probes.counting_since(),
    });
    let http_metrics = crate::conn::HttpMetrics::new(&exposition.self_metrics)?;
    let auth_metrics = crate::auth::AuthMetrics::new(&exposition.self_metrics)?;
    let tls_reload = match tls_reload {
        Some(reload) => Some(tokio::spawn(
            reload.run(crate::tls::TlsMetrics::new(&exposition.self_metrics)?),
        )),
        None => None,
    };
    // One client for the pod watch, the trace specs and the reviews.
    let client = match (&opts.node_name, opts.auth) {
        (None, false) => None,
        _ => Some(pods::kube_client().await?),
    };
    let reviewer = match (&client, opts.auth) {
        (Some(client), true) => Some(crate::auth::Reviewer::new(
            client.clone(),
            auth_metrics.clone(),
            opts.auth_audiences.clone(),
        )),
        _ => None,
    };
    let access = |token: Option<Arc<str>>| match (&reviewer, token) {
        (Some(reviewer), _) => crate::auth::Access::Reviews(reviewer.clone()),
        (None, Some(token)) => crate::auth::Access::Token(token),
        (None, None) => crate::auth::Access::Open,
    };
    let mut traces = None;
    let (pods_listed, first_list) = mpsc::channel::<()>();
    let pods: Option<Box<dyn PodIndex>> = match (&opts.node_name, client) {
        (Some(node), Some(client)) => {
            let errors = exposition.self_metrics.resolver_errors("apiserver");
            let (index, drive) = pods::watch(client.clone(), &PodQuery::node(node), move |err| {
                errors.inc();
                tracing::warn!(error = %err, "watching pods failed; retrying with backoff");
            });
            tokio::spawn(drive);
            let listed = index.clone();
            tokio::spawn(async move {
                if listed.listed().await {
                    let _ = pods_listed.send(());
                }
            });
            tracing::info!(node, "watching this node's pods");
            if let Some(settings) = &opts.traces {
                let token = match &settings.token_file {
                    Some(path) => Some(crate::auth::read_token(path)?),
                    None => None,
                };
                let gate = crate::auth::Gate::new(access(token), "traces", &auth_metrics);
                traces = Some(start_traces(
                    Cluster {
                        client,
                        node,
                        pods: index.clone(),
                    },
                    settings,
                    &opts,
                    &exposition,
                    &http_metrics,
                    Guard {
                        gate,
                        tls: tls.clone(),
                    },
                )?);
            }
            Some(Box::new(index))
        }
        _ => {
            // No pods to wait for: the reader starts at once.
            drop(pods_listed);
            None
        }
    };
    let resolver = Resolver::new(Procfs::new(&opts.proc_root), opts.load.host_pid_ns, pods);
    let renderer = Renderer::new(&opts.labels, opts.max_series);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: opts.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(%local, "serving /metrics");

    let (stop_reader, stopped) = mpsc::channel::<()>();
    let reader = {
        let exposition = Arc::clone(&exposition);
        thread::Builder::new()
            .name("swoll-map-reader".into())
            .spawn(move || {
                wait_for_pods(&first_list);
                read_loop(
                    probes,
                    resolver,
                    renderer,
                    &exposition,
                    opts.interval,
                    &stopped,
                )
            })
            .map_err(ServeError::Http)?
    };

    let reload = tokio::spawn(reload_on_sighup(
        traces.as_ref().map(|t| Arc::clone(&t.specs)),
    ));
    let in_flight = crate::conn::InFlight::new(
        http::MAX_CONCURRENT,
        http::IN_FLIGHT_WAIT,
        "metrics",
        &http_metrics,
    );
    crate::conn::serve(
        listener,
        http::router(
            exposition,
            crate::auth::Gate::new(access(None), "metrics", &auth_metrics),
            in_flight,
        ),
        opts.http,
        tls,
        "metrics",
        &http_metrics,
        shutdown_signal(),
    )
    .await;
    reload.abort();
    if let Some(tls_reload) = tls_reload {
        tls_reload.abort();
    }
    drop(stop_reader);
    if reader.join().is_err() {
        tracing::error!("the map reader panicked");
    }
    if let Some(traces) = traces {
        traces.stop();
    }
    match pin_set {
        Some(set) => tracing::info!(
            pinned = set,
            "probes left pinned and counting for the next agent (`swoll unpin` removes them); bye"
        ),
        None => tracing::info!(
            "probes detached: nothing stays attached (--pin-path would keep them counting across \
             restarts); bye"
        ),
    }
    Ok(())
}

/// Turns on the kernel's BPF run statistics for as long as the returned fd lives. Refused up
/// front, naming the capability, when the effective set lacks `CAP_SYS_ADMIN` (the DaemonSet
/// grants it only with `bpfStats`): the kernel's bare `EPERM` would not say what is missing.
fn enable_run_stats() -> Result<std::os::fd::OwnedFd, ServeError> {
    if host::effective_caps().is_some_and(|caps| !host::has_cap(caps, host::cap::SYS_ADMIN)) {
        return Err(ServeError::RunStatsNeedSysAdmin);
    }
    loader::enable_run_stats().map_err(ServeError::RunStats)
}

/// The watches of the trace ConfigMap and the Traces, restartable: a restart lists them again.
struct SpecsWatch {
    start: Box<dyn Fn() -> tokio::task::JoinHandle<()> + Send + Sync>,
    running: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SpecsWatch {
    fn new(start: Box<dyn Fn() -> tokio::task::JoinHandle<()> + Send + Sync>) -> Self {
        let running = std::sync::Mutex::new(Some(start()));
        SpecsWatch { start, running }
    }

    /// Stops the watches and starts them again, which re-reads the ConfigMap and Traces at once.
    fn restart(&self) {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = running.replace((self.start)()) {
            old.abort();
        }
    }

    fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            running.abort();
        }
    }
}

/// On every SIGHUP: re-read the trace ConfigMap (when traces are on). swoll has no config file;
/// the counters and the probes are never touched. Without a handler SIGHUP would kill the agent.
async fn reload_on_sighup(specs: Option<Arc<SpecsWatch>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install a SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        match &specs {
            Some(specs) => {
                tracing::info!(
                    "SIGHUP: re-reading the trace ConfigMap and Traces; counters untouched"
                );
                specs.restart();
            }
            None => tracing::info!(
                "SIGHUP: nothing to reload (no trace ConfigMap; flags are read at start only); \
                 counters untouched"
            ),
        }
    }
}

/// The running parts of trace mode: stopped (streams closed, rules removed, programs
/// unloaded) when the agent stops.
struct Traces {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
    specs: Arc<SpecsWatch>,
    status: tokio::task::JoinHandle<()>,
    /// The writer of the ConfigMap traces' starts.
    records: tokio::task::JoinHandle<()>,
}

impl Traces {
    fn stop(self) {
        self.specs.stop();
        self.http.abort();
        self.status.abort();
        self.records.abort();
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the trace thread panicked");
        }
    }
}

/// Who may call a listener, and over what.
struct Guard {
    gate: crate::auth::Gate,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// This node's view of the cluster: the API client, the node's name and its pods.
struct Cluster<'a> {
    client: kube::Client,
    node: &'a str,
    pods: pods::KubePods,
}

/// Starts trace mode: the ConfigMap and Trace watches, the trace thread, the Traces' status
/// writer and the streams' listener.
fn start_traces(
    cluster: Cluster<'_>,
    settings: &TraceSettings,
    opts: &ServeOptions,
    exposition: &Exposition,
    http_metrics: &crate::conn::HttpMetrics,
    guard: Guard,
) -> Result<Traces, ServeError> {
    let Guard { gate, tls } = guard;
    let Cluster { client, node, pods } = cluster;
    let hub = Arc::new(TraceHub::new(&exposition.self_metrics)?);
    let settings_listen = settings.listen;
    let errors = exposition.self_metrics.resolver_errors("apiserver");
    let (namespace, name) = (
        settings.configmap_namespace.clone(),
        settings.configmap_name.clone(),
    );
    let specs_hub = Arc::clone(&hub);
    let status = {
        let errors = errors.clone();
        tokio::spawn(resource::write_status(
            client.clone(),
            node.to_owned(),
            hub.reports(),
            move |err| {
                errors.inc();
                tracing::warn!(error = %crate::error_chain(err), "writing a Trace's status failed; retrying with the next change");
            },
        ))
    };
    let records = {
        let errors = errors.clone();
        tokio::spawn(started::write(
            client.clone(),
            namespace.clone(),
            name.clone(),
            hub.records(),
            move |err| {
                errors.inc();
                tracing::warn!(error = %crate::error_chain(err), "recording a ConfigMap trace's start failed; retrying");
            },
        ))
    };
    let specs = Arc::new(SpecsWatch::new(Box::new(move || {
        let (cm_errors, trace_errors) = (errors.clone(), errors.clone());
        let configmap = agent::watch_specs(
            client.clone(),
            namespace.clone(),
            name.clone(),
            Arc::clone(&specs_hub),
            move |err| {
                cm_errors.inc();
                tracing::warn!(error = %err, "watching the traces ConfigMap failed; retrying with backoff");
            },
        );
        let resources = agent::watch_traces(client.clone(), Arc::clone(&specs_hub), move |err| {
            trace_errors.inc();
            tracing::warn!(error = %err, "watching Traces (tools.swoll.criticalstack.com) failed; retrying with backoff");
        });
        tokio::spawn(async move {
            futures::join!(configmap, resources);
        })
    })));
    tracing::info!(
        configmap = format!(
            "{}/{}",
            settings.configmap_namespace, settings.configmap_name
        ),
        "watching trace specs (the ConfigMap, and Traces of every namespace)"
    );
    // The streams are an extra: if their port is taken, metrics (and the events on stdout, with
    // --trace-stdout) go on, and the error says why GET /traces is not there.
    let listener = std::net::TcpListener::bind(settings.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std);
    let in_flight = crate::conn::InFlight::new(
        http::MAX_TRACE_STREAMS,
        Duration::ZERO,
        "traces",
        http_metrics,
    );
    let router = http::trace_router(Arc::clone(&hub), gate, in_flight);
    let (limits, http_metrics) = (opts.http, http_metrics.clone());
    let http = tokio::spawn(async move {
        let listener = match listener {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(addr = %settings_listen, error = %err, "cannot serve /traces/<name>: trace events reach no subscriber");
                return;
            }
        };
        if let Ok(local) = listener.local_addr() {
            tracing::info!(%local, "serving /traces/<name>");
        }
        // Stopped by aborting this task (`Traces::stop`): streams end with the trace agent.
        crate::conn::serve(
            listener,
            router,
            limits,
            tls,
            "traces",
            &http_metrics,
            std::future::pending(),
        )
        .await;
    });
    let agent_opts = TraceAgentOptions {
        btf: opts.load.btf_path.clone(),
        ring_bytes: settings.ring_bytes,
        proc_root: opts.proc_root.clone(),
        host_pid_ns: opts.load.host_pid_ns,
        max_capture_bytes: settings.max_capture_bytes,
        stdout: settings.stdout,
        allow_cluster_wide: settings.allow_cluster_wide,
    };
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = thread::Builder::new()
        .name("swoll-traces".into())
        .spawn(move || agent::run(hub, Some(pods), agent_opts, &stopped))
        .map_err(ServeError::Http)?;
    Ok(Traces {
        stop,
        thread,
        http,
        specs,
        status,
        records,
    })
}

/// Waits up to [`pods::FIRST_LIST_WAIT`] for the pod watch's first list (`listed` is sent, or
/// dropped in local mode).
fn wait_for_pods(listed: &mpsc::Receiver<()>) {
    if let Err(mpsc::RecvTimeoutError::Timeout) = listed.recv_timeout(pods::FIRST_LIST_WAIT) {
        tracing::warn!(
            wait = ?pods::FIRST_LIST_WAIT,
            "no list of this node's pods yet: containers are labelled by id until it comes"
        );
    }
}

/// What the read loop asks of the loaded probes: [`Probes`] reads the kernel's maps; a trait
/// so that what the loop does with them (evictions accounted, gone namespaces retired and
/// forgotten, series published) is tested on its own.
trait CountingMaps {
    /// Entries the metrics map can hold.
    fn capacity(&self) -> usize;
    /// Records written to the pid namespace map so far.
    fn pid_ns_records(&self) -> u64;
    /// Every pid namespace the probes remember, with who was seen in it.
    fn pid_namespaces_seen(&self) -> Vec<(u32, PidNsSeen)>;
    /// One read of every map.
    fn read(&self) -> Snapshot;
    /// The value of one metrics key, if the map still holds it.
    fn get(&self, key: &MetricKey) -> Option<MetricValue>;
    /// The buckets of one histogram key, if the map still holds it.
    fn get_histogram(&self, key: &MetricKey) -> Option<LatencyBuckets>;
    /// Deletes `keys` and the records of `pid_namespaces`; returns the deletions that failed.
    fn forget_keys(&mut self, keys: &[MetricKey], pid_namespaces: &HashSet<u32>) -> u64;
    /// Runs each program skipped on a busy CPU, where the kernel reports them.
    fn recursion_misses(&self) -> Option<Vec<(&'static str, u64)>>;
    /// The programs' run statistics, where the kernel reports them.
    fn run_stats(&self) -> Option<RunStats>;
}

impl CountingMaps for Probes {
    fn capacity(&self) -> usize {
        self.maps.capacity() as usize
    }

    fn pid_ns_records(&self) -> u64 {
        self.maps.pid_ns_records()
    }

    fn pid_namespaces_seen(&self) -> Vec<(u32, PidNsSeen)> {
        self.maps.pid_namespaces_seen()
    }

    fn read(&self) -> Snapshot {
        self.maps.read()
    }

    fn get(&self, key: &MetricKey) -> Option<MetricValue> {
        self.maps.get(key)
    }

    fn get_histogram(&self, key: &MetricKey) -> Option<LatencyBuckets> {
        self.maps.get_histogram(key)
    }

    fn forget_keys(&mut self, keys: &[MetricKey], pid_namespaces: &HashSet<u32>) -> u64 {
        self.maps.forget_keys(keys, pid_namespaces)
    }

    fn recursion_misses(&self) -> Option<Vec<(&'static str, u64)>> {
        Probes::recursion_misses(self)
    }

    fn run_stats(&self) -> Option<RunStats> {
        Probes::run_stats(self)
    }
}

/// Reads the maps every `interval` until `stop` is dropped, resolving new pid namespaces in
/// between; then drops the probes, which detaches them.
fn read_loop<P: Processes>(
    mut probes: impl CountingMaps,
    mut resolver: Resolver<P>,
    mut renderer: Renderer,
    exposition: &Exposition,
    interval: Duration,
    stop: &mpsc::Receiver<()>,
) {
    let capacity = probes.capacity();
    let mut ledgers = Ledgers {
        metrics: Ledger::new(capacity),
        histogram: Ledger::new(capacity),
    };
    let mut next_read = Instant::now();
    let mut records = None;
    loop {
        let now_records = probes.pid_ns_records();
        if records != Some(now_records) {
            records = Some(now_records);
            for (pid_ns, seen) in probes.pid_namespaces_seen() {
                resolver.observe(pid_ns, Some(seen));
            }
        }
        let now = Instant::now();
        if now >= next_read {
            next_read = now + interval;
            read_once(
                &mut probes,
                &mut resolver,
                &mut renderer,
                &mut ledgers,
                exposition,
                interval,
            );
        }
        let wait = crate::resolver::DISCOVER_EVERY
            .min(next_read.saturating_duration_since(Instant::now()));
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(probes);
}

/// What the agent has exported per key of each LRU map, kept across evictions.
struct Ledgers {
    metrics: Ledger<MetricValue>,
    histogram: Ledger<LatencyBuckets>,
}

/// One read: snapshot the maps, account for evictions, resolve, retire gone namespaces, sum
/// the series, publish.
fn read_once<P: Processes>(
    probes: &mut impl CountingMaps,
    resolver: &mut Resolver<P>,
    renderer: &mut Renderer,
    ledgers: &mut Ledgers,
    exposition: &Exposition,
    grace: Duration,
) {
    let started = Instant::now();
    let mut snapshot = probes.read();
    snapshot.evictions = ledgers
        .metrics
        .account(&mut snapshot.rows, |key| probes.get(key));
    if let Some(histograms) = &mut snapshot.histograms {
        snapshot.histogram_evictions = ledgers
            .histogram
            .account(histograms, |key| probes.get_histogram(key));
    }
    snapshot.merge_slot_rows();
    let namespaces: Vec<u32> = {
        let mut ns: Vec<u32> = snapshot.rows.keys().map(|k| k.pid_ns).collect();
        ns.sort_unstable();
        ns.dedup();
        ns
    };
    for &ns in &namespaces {
        resolver.observe(ns, None);
    }
    resolver.retry_unknown(namespaces.iter().copied());
    let retired: HashSet<u32> = resolver
        .expired(
            &namespaces,
            |ns| ledgers.metrics.changed().contains(&ns) || snapshot.slot_changed.contains(&ns),
            started,
            grace,
        )
        .into_iter()
        .collect();
    if !retired.is_empty() {
        let keys: Vec<MetricKey> = snapshot
            .rows
            .keys()
            .filter(|k| retired.contains(&k.pid_ns))
            .copied()
            .collect();
        snapshot.read_errors += probes.forget_keys(&keys, &retired);
        snapshot.rows.retain(|k, _| !retired.contains(&k.pid_ns));
        if let Some(histograms) = &mut snapshot.histograms {
            histograms.retain(|k, _| !retired.contains(&k.pid_ns));
        }
        ledgers.metrics.forget(&retired);
        ledgers.histogram.forget(&retired);
        renderer.retire(&retired);
        tracing::debug!(
            namespaces = retired.len(),
            "pid namespaces gone: series retired"
        );
    }
    if let Some(misses) = probes.recursion_misses() {
        exposition.self_metrics.observe_recursion_misses(&misses);
    }
    if let Some(stats) = probes.run_stats().filter(|s| s.exits > 0) {
        exposition.self_metrics.observe_run_stats(stats);
    }
    let rendered = renderer.render(&snapshot, |ns| resolver.workload(ns));
    exposition.self_metrics.observe(&snapshot, &rendered);
    let keys = snapshot.rows.len();
    exposition.publish(
        rendered.table,
        RowSource::new(snapshot, renderer.workloads()),
    );
    tracing::debug!(keys, took = ?started.elapsed(), "maps read");
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::HashMap, rc::Rc};

    use swoll_decode::cgroup::ContainerRef;

    use super::*;
    use crate::metrics::Label;

    const HOST: u32 = 4_026_531_836;
    const OPENAT: u32 = 257;
    const READ: u32 = 0;
    const ENOENT: u32 = 2;

    /// The kernel's maps as a plain map: what an LRU keeps, what the agent deleted.
    #[derive(Default)]
    struct Kernel {
        rows: foldhash::HashMap<MetricKey, MetricValue>,
        forgotten: Vec<MetricKey>,
        forgotten_namespaces: HashSet<u32>,
    }

    impl CountingMaps for Kernel {
        fn capacity(&self) -> usize {
            64
        }

        fn pid_ns_records(&self) -> u64 {
            0
        }

        fn pid_namespaces_seen(&self) -> Vec<(u32, PidNsSeen)> {
            Vec::new()
        }

        fn read(&self) -> Snapshot {
            Snapshot {
                rows: self.rows.clone(),
                capacity: 64,
                entries: self.rows.len(),
                ..Snapshot::default()
            }
        }

        fn get(&self, key: &MetricKey) -> Option<MetricValue> {
            self.rows.get(key).copied()
        }

        fn get_histogram(&self, _: &MetricKey) -> Option<LatencyBuckets> {
            None
        }

        fn forget_keys(&mut self, keys: &[MetricKey], pid_namespaces: &HashSet<u32>) -> u64 {
            for key in keys {
                self.rows.remove(key);
            }
            self.forgotten.extend_from_slice(keys);
            self.forgotten_namespaces.extend(pid_namespaces);
            0
        }

        fn recursion_misses(&self) -> Option<Vec<(&'static str, u64)>> {
            None
        }

        fn run_stats(&self) -> Option<RunStats> {
            None
        }
    }

    /// The host's processes: the pid namespaces that have one (its pid is the namespace's
    /// inode), shared with the test, which ends them; no containers.
    #[derive(Clone, Default)]
    struct Host {
        alive: Rc<RefCell<HashSet<u32>>>,
    }

    impl Processes for Host {
        fn pid_ns_of(&self, pid: u32) -> Option<u32> {
            self.alive.borrow().contains(&pid).then_some(pid)
        }

        fn container_of(&self, _: u32) -> Option<ContainerRef> {
            None
        }

        fn container_of_cgroup(&mut self, _: u64) -> Option<ContainerRef> {
            None
        }

        fn find_processes(&self, wanted: &[u32]) -> HashMap<u32, u32> {
            wanted
                .iter()
                .filter(|ns| self.alive.borrow().contains(ns))
                .map(|&ns| (ns, ns))
                .collect()
        }

        fn index_cgroups_of(&mut self, _: &mut dyn Iterator<Item = u64>) {}

        fn cgroup_alive(&self, _: u64) -> bool {
            false
        }
    }

    /// One read loop's state, driven by hand.
    struct Agent {
        host: Host,
        kernel: Kernel,
        resolver: Resolver<Host>,
        renderer: Renderer,
        ledgers: Ledgers,
        exposition: Exposition,
    }

    impl Agent {
        fn new(alive: &[u32]) -> Agent {
            let host = Host::default();
            host.alive.borrow_mut().extend(alive);
            let kernel = Kernel::default();
            Agent {
                host: host.clone(),
                ledgers: Ledgers {
                    metrics: Ledger::new(kernel.capacity()),
                    histogram: Ledger::new(kernel.capacity()),
                },
                kernel,
                resolver: Resolver::new(host, HOST, None),
                renderer: Renderer::new(&[Label::Syscall, Label::Err], 0),
                exposition: Exposition::new(SelfMetrics::new().unwrap()),
            }
        }

        fn set(&mut self, pid_ns: u32, nr: u32, errno: u32, count: u64) {
            let key = MetricKey { pid_ns, nr, errno };
            let value = MetricValue { count, time_ns: 0 };
            self.kernel.rows.insert(key, value);
        }

        /// One read with no grace: a namespace found gone is retired at once.
        fn read(&mut self) {
            read_once(
                &mut self.kernel,
                &mut self.resolver,
                &mut self.renderer,
                &mut self.ledgers,
                &self.exposition,
                Duration::ZERO,
            );
        }

        /// The value of the count series of `syscall` and `err`, if exported.
        fn count(&self, syscall: &str, err: &str) -> Option<u64> {
            let series =
                format!("swoll_node_metrics_syscall_count{{syscall=\"{syscall}\",err=\"{err}\"}} ");
            let text = self.exposition.syscalls().text();
            text.lines()
                .find_map(|line| line.strip_prefix(series.as_str()))
                .map(|value| value.parse().unwrap())
        }
    }

    #[test]
    fn an_evicted_key_keeps_its_count() {
        let mut agent = Agent::new(&[HOST]);
        agent.set(HOST, OPENAT, ENOENT, 3);
        agent.read();
        assert_eq!(agent.count("sys_openat", "ENOENT"), Some(3));

        // The LRU recycles the key for another one: the exported count does not go back.
        agent.kernel.rows.clear();
        agent.set(HOST, READ, 0, 5);
        agent.read();
        assert_eq!(agent.count("sys_openat", "ENOENT"), Some(3));
        assert_eq!(agent.count("sys_read", "OK"), Some(5));
    }

    #[test]
    fn a_gone_namespace_is_retired_and_its_keys_deleted() {
        let container_ns = 4_026_532_000;
        let mut agent = Agent::new(&[HOST, container_ns]);
        agent.set(HOST, OPENAT, ENOENT, 1);
        agent.set(container_ns, READ, 0, 4);
        agent.read();
        assert_eq!(agent.count("sys_read", "OK"), Some(4));

        // Its last process exits; idle namespaces are checked every few reads.
        agent.host.alive.borrow_mut().remove(&container_ns);
        for _ in 0..8 {
            agent.read();
        }
        let key = MetricKey {
            pid_ns: container_ns,
            nr: READ,
            errno: 0,
        };
        assert_eq!(agent.kernel.forgotten, [key]);
        assert_eq!(
            agent.kernel.forgotten_namespaces,
            HashSet::from_iter([container_ns])
        );
        assert_eq!(agent.count("sys_read", "OK"), None);
        assert_eq!(agent.count("sys_openat", "ENOENT"), Some(1));
    }
}
