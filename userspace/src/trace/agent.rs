//! Traces from Kubernetes: the agent's trace mode.
//!
//! `Trace` resources (each selecting pods of its own namespace, [`super::resource`]) and a
//! ConfigMap (one trace spec per data key, for the platform team) say what to trace; a
//! ConfigMap spec without a namespace is refused unless the agent allows cluster-wide traces.
//! Both kinds record a trace's start where every agent sees it (a Trace in its status, the
//! ConfigMap in an annotation, [`super::started`]), so one whose duration passed stays ended
//! when agents restart.
//! The node's pod cache says
//! which pods match; procfs says which pid namespaces their containers run in. One thread
//! reconciles that into the kernel filter every second (idempotent: it computes the whole
//! wanted state and applies the difference, so a restart or a missed event converges), loads
//! the trace programs while at least one trace runs and unloads them after, and drains the ring
//! buffer: every event goes to the trace's subscribers (`GET /traces/<name>`), whose bounded
//! queues drop, and report, what a slow client cannot take, so one slow client never stalls
//! the node; and to stdout as a JSON line only with `--trace-stdout` (whoever reads the pod's
//! logs would read every trace otherwise), through a thread of its own with a bounded queue, so
//! a stdout that stops being read costs lines (counted), not the trace thread's time.
//!
//! Each trace gets the read/write buffers it asked for and no more: the kernel captures what
//! the most demanding running trace asked for (never more than `--max-capture-bytes`), and each
//! trace's copy of an event is cut to its own `captureBytes` before it is encoded.
//!
//! A trace never starves the agent: a drain round takes at most [`DRAIN_EVENTS`] events or
//! [`DRAIN_TIME`], whichever comes first, so between rounds the thread sees its stop flag,
//! spec changes and the traces' durations however fast events arrive (what the ring cannot
//! hold is counted lost). The thread keeps its own handle on each trace's stream, so the lock
//! the HTTP handlers take is held only to add or remove a stream, never while draining.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::Write as _,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::{api::core::v1::ConfigMap, jiff::Timestamp};
use kube::{
    Api, Client,
    api::DynamicObject,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher,
    },
};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use swoll_maps_schema::trace::{MAX_TRACES, TraceEvent};
use tokio::sync::{broadcast, watch};

use super::{
    capture,
    event::{self, Container},
    filter::{Filter, TraceSlot, keys, write_captures},
    resource::{self, NodeStatus, Observed, Phase, Report, Reports},
    ring,
    spec::{self, Trace},
    started::{self, Record, Started},
};
use crate::{
    loader::{self, TraceProbes},
    metrics::SelfMetrics,
    resolver::{
        pods::{self, KubePods},
        procfs::Procfs,
    },
    syscalls::Arch,
};

/// Lines a stream subscriber may fall behind before it loses some (and is told how many).
const STREAM_BACKLOG: usize = 4096;
/// How often the wanted state is recomputed.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Most events one drain round hands on.
const DRAIN_EVENTS: usize = 4096;
/// Longest one drain round hands events on.
const DRAIN_TIME: Duration = Duration::from_millis(50);
/// Longest the thread waits for the first event of a round.
const WAIT: Duration = Duration::from_millis(100);
/// Bytes of lines queued for stdout at most; a round's lines that do not fit are dropped.
const STDOUT_QUEUE_BYTES: usize = 2 << 20;
/// How long a stopping agent gives the stdout thread to write what is queued.
const STDOUT_GRACE: Duration = Duration::from_millis(500);

/// What the trace thread needs besides the specs and pods.
#[derive(Clone, Debug)]
pub struct TraceAgentOptions {
    /// The kernel's BTF.
    pub btf: PathBuf,
    /// Ring buffer bytes.
    pub ring_bytes: u32,
    /// The host's procfs.
    pub proc_root: PathBuf,
    /// The host's pid namespace (never traced: traces select pods).
    pub host_pid_ns: u32,
    /// The most bytes of read/write buffers a trace may capture (`--max-capture-bytes`); a
    /// spec that asks for more gets this much.
    pub max_capture_bytes: u32,
    /// Also write every event to stdout (`--trace-stdout`).
    pub stdout: bool,
    /// Run ConfigMap specs without a namespace (`--allow-cluster-wide-traces`).
    pub allow_cluster_wide: bool,
}

/// The trace metrics, in the agent's registry.
#[derive(Clone, Debug)]
struct TraceMetrics {
    events: IntCounterVec,
    lost: IntCounterVec,
    spec_errors: IntCounterVec,
    active: IntGauge,
    capture_bytes: IntGaugeVec,
    stdout_dropped: IntCounter,
}

impl TraceMetrics {
    fn new(registry: &SelfMetrics) -> Result<TraceMetrics, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "swoll_trace_events_total",
                "Trace events delivered (to the streams, and stdout with --trace-stdout), by trace.",
            ),
            &["trace"],
        )?;
        let lost = IntCounterVec::new(
            Opts::new(
                "swoll_trace_events_lost_total",
                "Trace events the kernel could not hand over (ring buffer full), by trace.",
            ),
            &["trace"],
        )?;
        let spec_errors = IntCounterVec::new(
            Opts::new(
                "swoll_trace_spec_errors_total",
                "Malformed or refused trace specs, by ConfigMap data key or Trace namespace/name.",
            ),
            &["key"],
        )?;
        let active = IntGauge::new("swoll_traces_active", "Traces running now.")?;
        let capture_bytes = IntGaugeVec::new(
            Opts::new(
                "swoll_trace_capture_bytes",
                "Bytes of read/write buffers each running trace captures: its captureBytes, \
                 at most --max-capture-bytes.",
            ),
            &["trace"],
        )?;
        let stdout_dropped = IntCounter::new(
            "swoll_trace_stdout_lines_dropped_total",
            "Trace event lines not written to stdout (--trace-stdout) because it did not keep up.",
        )?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(lost.clone()))?;
        registry.register(Box::new(spec_errors.clone()))?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(capture_bytes.clone()))?;
        registry.register(Box::new(stdout_dropped.clone()))?;
        Ok(TraceMetrics {
            events,
            lost,
            spec_errors,
            active,
            capture_bytes,
            stdout_dropped,
        })
    }
}

/// The traces ConfigMap as the trace thread reads it.
#[derive(Clone, Debug, Default)]
pub struct Specs {
    /// One trace spec per key.
    pub data: BTreeMap<String, String>,
    /// The starts recorded in its annotation ([`started`]).
    pub started: BTreeMap<String, Started>,
    /// The `resourceVersion` these were read at: a record is written over it.
    pub resource_version: String,
}

/// What the ConfigMap and Trace watches, the trace thread, the status writer and the HTTP
/// streams share.
#[derive(Debug)]
pub struct TraceHub {
    /// The ConfigMap's specs, and a version that changes with them and with any Trace.
    specs: Mutex<(u64, Option<Specs>)>,
    /// The starts of ConfigMap traces this node wants recorded, for their writer.
    record: watch::Sender<Option<Record>>,
    /// The Traces of every namespace, once their watch started.
    resources: Mutex<Option<Store<DynamicObject>>>,
    /// This node's word on each Trace, for the status writer.
    reports: watch::Sender<Reports>,
    /// Each running trace's stream, for subscribers to find (the trace thread sends through
    /// handles of its own: this lock is never held while events are handed on).
    streams: Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>,
    metrics: TraceMetrics,
}

impl TraceHub {
    /// A hub whose metrics are registered with the agent's.
    pub fn new(registry: &SelfMetrics) -> Result<TraceHub, prometheus::Error> {
        Ok(TraceHub {
            specs: Mutex::new((0, None)),
            record: watch::Sender::new(None),
            resources: Mutex::new(None),
            reports: watch::Sender::new(Reports::new()),
            streams: Mutex::new(HashMap::new()),
            metrics: TraceMetrics::new(registry)?,
        })
    }

    /// Sets the ConfigMap's specs (`None`: no ConfigMap).
    pub fn set_specs(&self, specs: Option<Specs>) {
        let mut current = lock(&self.specs);
        current.0 += 1;
        current.1 = specs;
    }

    /// The ConfigMap traces' starts the trace thread wants recorded, as it updates them (see
    /// [`started::write`]).
    pub fn records(&self) -> watch::Receiver<Option<Record>> {
        self.record.subscribe()
    }

    /// Hands over the store of the Traces' watch.
    pub fn set_resources(&self, store: Store<DynamicObject>) {
        *lock(&self.resources) = Some(store);
        self.resources_changed();
    }

    /// Tells the trace thread that a Trace changed.
    pub fn resources_changed(&self) {
        lock(&self.specs).0 += 1;
    }

    /// This node's reports on the Traces, as the trace thread updates them.
    pub fn reports(&self) -> watch::Receiver<Reports> {
        self.reports.subscribe()
    }

    /// A subscription to trace `name`'s events, if it runs.
    pub fn subscribe(&self, name: &str) -> Option<broadcast::Receiver<Arc<str>>> {
        lock(&self.streams)
            .get(name)
            .map(broadcast::Sender::subscribe)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Watches every namespace's Traces into a reflector store handed to `hub`, so the trace thread
/// sees each change; retries with backoff and counts failures through `on_error` (an API
/// server without the CRD answers 404: the ConfigMap's traces go on).
pub async fn watch_traces(
    client: Client,
    hub: Arc<TraceHub>,
    on_error: impl Fn(&watcher::Error) + Send + 'static,
) {
    let resource = resource::api_resource();
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let writer = reflector::store::Writer::new(resource);
    hub.set_resources(writer.as_reader());
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => hub.resources_changed(),
            Err(err) => on_error(&err),
        }
    }
}

/// Watches ConfigMap `namespace/name` and hands its data to `hub`; retries with backoff and
/// counts failures through `on_error`. A deleted ConfigMap stops every trace.
pub async fn watch_specs(
    client: Client,
    namespace: String,
    name: String,
    hub: Arc<TraceHub>,
    on_error: impl Fn(&watcher::Error) + Send + 'static,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut seen_in_list = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => seen_in_list = false,
            Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                seen_in_list = true;
                hub.set_specs(Some(Specs {
                    started: started::recorded(cm.metadata.annotations.as_ref()),
                    resource_version: cm.metadata.resource_version.unwrap_or_default(),
                    data: cm.data.unwrap_or_default(),
                }));
            }
            Ok(watcher::Event::InitDone) if !seen_in_list => hub.set_specs(None),
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => hub.set_specs(None),
            Err(err) => on_error(&err),
        }
    }
}

/// What became of a Trace's spec: the validated trace and its end (once its start is recorded),
/// or the error that stops it.
type Outcome = Result<(Trace, Option<Timestamp>), String>;

/// Where a trace's spec is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    /// A data key of the ConfigMap.
    ConfigMap(String),
    /// A `Trace` resource: its namespace and name.
    Resource(String, String),
}

/// A trace the thread runs (or ran: an ended one stays, so it does not start again until its
/// spec changes).
struct Running {
    trace: Trace,
    origin: Origin,
    /// `None` once it ended (its duration passed).
    slot: Option<TraceSlot>,
    /// Its stream (a handle of the one in [`TraceHub::streams`]); `None` once it ended.
    stream: Option<broadcast::Sender<Arc<str>>>,
    /// Bytes of read/write buffers its events carry: its `captureBytes`, at most
    /// `--max-capture-bytes`.
    capture_bytes: u32,
    /// When it started here, by the wall clock: a Trace's `startTime` if none is recorded.
    started_at: Timestamp,
    /// When it ends: `None` runs until removed.
    ends: Option<Instant>,
    /// Pid namespaces in its filter.
    traced: BTreeSet<u32>,
    /// Names of the pods traced, and their containers as `pod/container`.
    pods: BTreeSet<String>,
    containers: BTreeSet<String>,
}

/// The trace thread's state.
struct Tracer {
    hub: Arc<TraceHub>,
    opts: TraceAgentOptions,
    pods: Option<KubePods>,
    procfs: Procfs,
    probes: Option<TraceProbes>,
    filter: Filter,
    running: BTreeMap<String, Running>,
    /// Traces this agent has started, so that it reports counts of those only.
    ran: BTreeSet<String>,
    /// Last error text per data key (or Trace `namespace/name`), so a bad one is logged and
    /// counted once per version.
    errors: BTreeMap<String, String>,
    /// ConfigMap keys whose recorded end has passed, so that is logged once.
    cm_ended: BTreeSet<String>,
    version: Option<u64>,
    /// Buffer bytes the kernel's capture table asks for now: the most any running trace gets.
    capture_bytes: u32,
    containers: HashMap<u32, Container>,
    lost_seen: [u64; MAX_TRACES as usize],
    /// stdout, with `--trace-stdout`.
    out: Option<StdoutLines>,
}

/// Lines on their way to stdout. A round's lines are collected here and handed to a thread
/// that writes them, unless [`STDOUT_QUEUE_BYTES`] are queued already: then they are dropped
/// and counted, as a stream subscriber that falls behind loses events.
struct StdoutLines {
    /// This round's lines.
    batch: Vec<u8>,
    /// How many.
    lines: u64,
    queue: mpsc::Sender<Vec<u8>>,
    /// Bytes handed to the writer and not written yet.
    queued: Arc<AtomicUsize>,
    writer: std::thread::JoinHandle<()>,
    dropped: IntCounter,
}

impl StdoutLines {
    fn start(dropped: IntCounter) -> std::io::Result<StdoutLines> {
        let (queue, batches) = mpsc::channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = Arc::clone(&queued);
        let writer = std::thread::Builder::new()
            .name("swoll-stdout".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut failed = false;
                for batch in batches {
                    // Locked per batch: anything else printed waits for one batch at most.
                    let mut out = stdout.lock();
                    let wrote = out.write_all(&batch).and_then(|()| out.flush());
                    drop(out);
                    written.fetch_sub(batch.len(), Ordering::AcqRel);
                    if let Err(err) = wrote
                        && !std::mem::replace(&mut failed, true)
                    {
                        tracing::warn!(error = %err, "writing trace events to stdout");
                    }
                }
            })?;
        Ok(StdoutLines {
            batch: Vec::new(),
            lines: 0,
            queue,
            queued,
            writer,
            dropped,
        })
    }

    fn push(&mut self, line: &[u8]) {
        self.batch.extend_from_slice(line);
        self.lines += 1;
    }

    /// Hands this round's lines to the writer, or drops them if too much is queued.
    fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let bytes = self.batch.len();
        // Counted before it is sent: the writer takes it off once written.
        if self.queued.load(Ordering::Acquire) + bytes <= STDOUT_QUEUE_BYTES {
            self.queued.fetch_add(bytes, Ordering::AcqRel);
            if self.queue.send(std::mem::take(&mut self.batch)).is_ok() {
                self.lines = 0;
                return;
            }
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
        }
        self.dropped.inc_by(self.lines);
        self.batch.clear();
        self.lines = 0;
    }

    /// Sends what is left and gives the writer up to [`STDOUT_GRACE`] to write it: a stdout no
    /// one reads must not hold up the agent's exit.
    fn close(mut self) {
        self.send();
        drop(self.queue);
        let deadline = Instant::now() + STDOUT_GRACE;
        while !self.writer.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs the trace thread until `stop` is dropped.
pub fn run(
    hub: Arc<TraceHub>,
    pods: Option<KubePods>,
    opts: TraceAgentOptions,
    stop: &mpsc::Receiver<()>,
) {
    let mut tracer = Tracer {
        procfs: Procfs::new(&opts.proc_root),
        hub,
        pods,
        probes: None,
        filter: Filter::default(),
        running: BTreeMap::new(),
        ran: BTreeSet::new(),
        errors: BTreeMap::new(),
        cm_ended: BTreeSet::new(),
        version: None,
        capture_bytes: 0,
        containers: HashMap::new(),
        lost_seen: [0; MAX_TRACES as usize],
        out: None,
        opts,
    };
    if tracer.opts.stdout {
        match StdoutLines::start(tracer.hub.metrics.stdout_dropped.clone()) {
            Ok(out) => tracer.out = Some(out),
            Err(err) => {
                tracing::error!(error = %err, "cannot start the stdout writer: trace events reach the streams only")
            }
        }
    }
    let mut next_reconcile = Instant::now();
    while matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
        let version = lock(&tracer.hub.specs).0;
        if Instant::now() >= next_reconcile
            || tracer.version != Some(version)
            || tracer.any_expired()
        {
            tracer.reconcile();
            next_reconcile = Instant::now() + RECONCILE_EVERY;
        }
        if tracer.probes.is_some() {
            tracer.drain();
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    tracer.stop_all();
}

impl Tracer {
    /// Running traces whose duration has passed.
    fn expired(&self) -> Vec<String> {
        let now = Instant::now();
        self.running
            .iter()
            .filter(|(_, r)| r.slot.is_some() && r.ends.is_some_and(|end| now >= end))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether a running trace's duration has passed (checked after every drain round, so a
    /// trace ends within a round of its duration).
    fn any_expired(&self) -> bool {
        let now = Instant::now();
        self.running
            .values()
            .any(|r| r.slot.is_some() && r.ends.is_some_and(|end| now >= end))
    }

    /// Logs and counts spec error `text` of `key` if it is new; returns it for [`Tracer::errors`].
    fn spec_error(&self, key: &str, text: String, what: &str) -> (String, String) {
        if self.errors.get(key) != Some(&text) {
            tracing::warn!(key, error = %text, "{what}");
            self.hub.metrics.spec_errors.with_label_values(&[key]).inc();
        }
        (key.to_owned(), text)
    }

    /// Computes the wanted state and applies the difference.
    fn reconcile(&mut self) {
        let (version, cm) = {
            let specs = lock(&self.hub.specs);
            (specs.0, specs.1.clone().unwrap_or_default())
        };
        let data = &cm.data;
        let objects = lock(&self.hub.resources)
            .as_ref()
            .map(Store::state)
            .unwrap_or_default();
        self.version = Some(version);
        let (traces, errors) = spec::parse_configmap(data, self.opts.allow_cluster_wide);
        let mut wanted: BTreeMap<String, (Origin, Trace)> = BTreeMap::new();
        let key_of = |t: &Trace| {
            data.iter()
                .find(|(k, v)| spec::parse(k, v).is_ok_and(|p| p.name == t.name))
                .map(|(k, _)| k.clone())
                .unwrap_or_default()
        };
        let now = Timestamp::now();
        // Ends from recorded starts (a ConfigMap key's or a Trace's), by trace name.
        let mut recorded_ends: Vec<(String, Timestamp)> = Vec::new();
        // The key of each good ConfigMap trace, by name.
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        let mut ended = BTreeSet::new();
        for trace in traces {
            let key = key_of(&trace);
            let start = data
                .get(&key)
                .zip(cm.started.get(&key))
                .and_then(|(yaml, started)| started.of(yaml));
            let end = trace
                .duration
                .zip(start)
                .and_then(|(d, start)| resource::end_of(start, d));
            keys.insert(trace.name.clone(), key.clone());
            if let Some(end) = end {
                if end <= now {
                    // Logged once: by the agent that ran it when it ended, by one that did not
                    // when it first sees the record.
                    if !self.running.contains_key(&trace.name) && !self.cm_ended.contains(&key) {
                        tracing::info!(
                            trace = trace.name,
                            key,
                            %end,
                            "trace ended: its recorded start plus its duration passed; it does \
                             not start again until its spec changes"
                        );
                    }
                    ended.insert(key);
                    continue;
                }
                recorded_ends.push((trace.name.clone(), end));
            }
            wanted.insert(trace.name.clone(), (Origin::ConfigMap(key), trace));
        }
        self.cm_ended = ended;
        let mut bad_now = BTreeMap::new();
        for (key, err) in errors {
            let text = crate::error_chain(&err);
            let what = "bad trace spec in the ConfigMap; the trace keeps its last good version";
            // The previous good version of that key's trace stays in force.
            let origin = Origin::ConfigMap(key.clone());
            if let Some(run) = self.running.values().find(|r| r.origin == origin) {
                wanted.insert(run.trace.name.clone(), (origin, run.trace.clone()));
            }
            let (key, text) = self.spec_error(&key, text, what);
            bad_now.insert(key, text);
        }

        // Traces: each validated on its own; one whose end has passed is not started again.
        let mut resources = Vec::new();
        for observed in objects.iter().filter_map(|o| Observed::of(o)) {
            let key = format!("{}/{}", observed.namespace, observed.name);
            let outcome =
                match spec::parse_resource(&observed.namespace, &observed.name, &observed.spec) {
                    Ok(trace) => {
                        let end = observed
                            .start_time
                            .zip(trace.duration)
                            .and_then(|(start, d)| resource::end_of(start, d));
                        if end.is_none_or(|end| end > now) {
                            let origin =
                                Origin::Resource(observed.namespace.clone(), observed.name.clone());
                            wanted.insert(trace.name.clone(), (origin, trace.clone()));
                        }
                        Ok((trace, end))
                    }
                    Err(err) => {
                        let what = "bad Trace spec: the Trace does not run";
                        let (key, text) = self.spec_error(&key, crate::error_chain(&err), what);
                        bad_now.insert(key, text.clone());
                        Err(text)
                    }
                };
            resources.push((observed, outcome));
        }
        self.errors = bad_now;

        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, run)| wanted.get(*name).is_none_or(|(_, t)| *t != run.trace))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.end(&name, "removed, changed, or its recorded end passed");
            self.running.remove(&name);
        }
        for (name, (origin, trace)) in wanted {
            if !self.running.contains_key(&name) {
                self.start(origin, trace);
            }
        }
        self.publish_record(&cm, &keys);
        for (observed, outcome) in &resources {
            if let Ok((trace, Some(end))) = outcome
                && observed.start_time.is_some()
            {
                recorded_ends.push((trace.name.clone(), *end));
            }
        }
        // A trace with a recorded start ends when that says, on every node alike.
        for (name, end) in recorded_ends {
            if let Some(run) = self.running.get_mut(&name) {
                let left = end.duration_since(now).unsigned_abs();
                let left = if end > now { left } else { Duration::ZERO };
                run.ends = Some(Instant::now() + left);
            }
        }
        for name in self.expired() {
            self.end(&name, "its duration passed");
        }
        if let Err(err) = self.apply_namespaces() {
            tracing::warn!(error = %crate::error_chain(err.as_ref()), "updating the trace filter");
        }
        self.report(&resources, now);
        let active = self.running.values().filter(|r| r.slot.is_some()).count();
        self.hub
            .metrics
            .active
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        if active == 0 && self.probes.is_some() {
            self.probes = None;
            self.filter = Filter::default();
            tracing::info!("no trace runs: trace programs unloaded");
        }
    }

    /// Publishes the starts to record of the ConfigMap's traces with a duration that run (or
    /// ran) here without a start recorded for their spec: the record read, less the entries
    /// of keys gone or edited, plus those. `None` when there is nothing to add, so agents write
    /// only what is missing.
    fn publish_record(&self, cm: &Specs, keys: &BTreeMap<String, String>) {
        let mut record: BTreeMap<String, Started> = cm
            .started
            .iter()
            .filter(|(key, s)| cm.data.get(*key).is_some_and(|yaml| s.of(yaml).is_some()))
            .map(|(key, s)| (key.clone(), s.clone()))
            .collect();
        let mut new = false;
        for (name, key) in keys {
            let (Some(run), Some(yaml)) = (self.running.get(name), cm.data.get(key)) else {
                continue;
            };
            if run.trace.duration.is_none() || record.contains_key(key) {
                continue;
            }
            let start = Started {
                start_time: run.started_at.to_string(),
                spec: started::spec_hash(yaml),
            };
            record.insert(key.clone(), start);
            new = true;
        }
        let record = new.then(|| Record {
            resource_version: cm.resource_version.clone(),
            started: record,
        });
        self.hub.record.send_if_modified(|old| {
            let changed = *old != record;
            *old = record;
            changed
        });
    }

    /// Publishes this node's report on every Trace (see [`resource::Report`]).
    fn report(&self, resources: &[(Observed, Outcome)], now: Timestamp) {
        let mut reports = Reports::new();
        for (observed, outcome) in resources {
            let key = (observed.namespace.clone(), observed.name.clone());
            let report = match outcome {
                Err(text) => Report {
                    phase: Phase::Failed,
                    message: Some(text.clone()),
                    record_start: None,
                    end_time: None,
                    shared_stale: observed.differs(Phase::Failed, Some(text), None),
                    node: None,
                },
                Ok((trace, end)) => {
                    let run = self.running.get(&trace.name);
                    let record_start = match (observed.start_time, run) {
                        (None, Some(run)) => {
                            Some((run.started_at, observed.resource_version.clone()))
                        }
                        _ => None,
                    };
                    let end = end.or_else(|| {
                        let (run, duration) = (run?, trace.duration?);
                        resource::end_of(run.started_at, duration)
                    });
                    let running = run.is_some_and(|r| r.slot.is_some());
                    let phase = if running || end.is_none_or(|end| end > now) {
                        Phase::Running
                    } else {
                        Phase::Ended
                    };
                    if phase == Phase::Running && !running {
                        // Not started here (it could not be): nothing true to say.
                        continue;
                    }
                    let node = self.ran.contains(&trace.name).then(|| {
                        let name = [trace.name.as_str()];
                        NodeStatus {
                            pods: run
                                .map(|r| r.pods.iter().cloned().collect())
                                .unwrap_or_default(),
                            containers: run
                                .map(|r| r.containers.iter().cloned().collect())
                                .unwrap_or_default(),
                            events_delivered: self
                                .hub
                                .metrics
                                .events
                                .with_label_values(&name)
                                .get(),
                            events_lost: self.hub.metrics.lost.with_label_values(&name).get(),
                        }
                    });
                    Report {
                        phase,
                        message: None,
                        record_start,
                        end_time: end,
                        shared_stale: observed.differs(phase, None, end),
                        node,
                    }
                }
            };
            reports.insert(key, report);
        }
        self.hub.reports.send_if_modified(|old| {
            let changed = *old != reports;
            *old = reports;
            changed
        });
    }

    /// Starts `trace`: a filter slot, a stream.
    fn start(&mut self, origin: Origin, trace: Trace) {
        if self.probes.is_none() {
            // The agent's tgid as the probes see it (the host's numbering, not the pod's).
            let tgid = crate::host::own_tgid(&self.opts.proc_root);
            match loader::load_trace(&self.opts.btf, tgid, self.opts.ring_bytes) {
                Ok(probes) => {
                    tracing::info!("trace programs loaded");
                    self.probes = Some(probes);
                    self.capture_bytes = u32::MAX;
                }
                Err(err) => {
                    tracing::error!(trace = trace.name, error = %crate::error_chain(&err), "cannot load the trace programs");
                    return;
                }
            }
        }
        let slot = match self.filter.open(trace.sample_rate) {
            Ok(slot) => slot,
            Err(err) => {
                tracing::error!(trace = trace.name, error = %err, "cannot start the trace");
                return;
            }
        };
        self.lost_seen[slot.index() as usize] = self
            .probes
            .as_ref()
            .and_then(|p| ring::lost(&p.maps.lost).ok())
            .map_or(0, |l| l[slot.index() as usize]);
        let capture_bytes = trace.capture_bytes.min(self.opts.max_capture_bytes);
        if capture_bytes < trace.capture_bytes {
            tracing::warn!(
                trace = trace.name,
                asked = trace.capture_bytes,
                allowed = self.opts.max_capture_bytes,
                "the trace asks for more buffer bytes than --max-capture-bytes allows: it gets \
                 what is allowed"
            );
        }
        self.hub
            .metrics
            .capture_bytes
            .with_label_values(&[trace.name.as_str()])
            .set(i64::from(capture_bytes));
        let (sender, _) = broadcast::channel(STREAM_BACKLOG);
        lock(&self.hub.streams).insert(trace.name.clone(), sender.clone());
        tracing::info!(trace = trace.name, ?origin, capture_bytes, "trace started");
        self.ran.insert(trace.name.clone());
        self.running.insert(
            trace.name.clone(),
            Running {
                ends: trace.duration.map(|d| Instant::now() + d),
                trace,
                origin,
                slot: Some(slot),
                stream: Some(sender),
                capture_bytes,
                started_at: Timestamp::now(),
                traced: BTreeSet::new(),
                pods: BTreeSet::new(),
                containers: BTreeSet::new(),
            },
        );
    }

    /// Ends trace `name`: its rules go (others' stay), its stream closes.
    fn end(&mut self, name: &str, why: &str) {
        let Some(run) = self.running.get_mut(name) else {
            return;
        };
        let Some(slot) = run.slot.take() else {
            return;
        };
        run.traced.clear();
        run.pods.clear();
        run.containers.clear();
        run.stream = None;
        if let Some(probes) = &mut self.probes
            && let Err(err) = self.filter.close(&mut probes.maps.rules, slot)
        {
            tracing::warn!(trace = name, error = %err, "removing the trace's rules");
        }
        lock(&self.hub.streams).remove(name);
        let _ = self.hub.metrics.capture_bytes.remove_label_values(&[name]);
        tracing::info!(trace = name, why, "trace ended");
    }

    fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            self.end(&name, "the agent stops");
        }
        if let Some(out) = self.out.take() {
            out.close();
        }
    }

    /// Puts each running trace's pid namespaces (its pods' containers') in the filter.
    fn apply_namespaces(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let Some(probes) = &mut self.probes else {
            return Ok(());
        };
        let wanted_bytes = self
            .running
            .values()
            .filter(|r| r.slot.is_some())
            .map(|r| r.capture_bytes)
            .max()
            .unwrap_or(0);
        if wanted_bytes != self.capture_bytes {
            write_captures(&mut probes.maps, wanted_bytes)?;
            self.capture_bytes = wanted_bytes;
        }
        // Container id → pid namespace, from one walk of procfs.
        let mut by_container: HashMap<String, u32> = HashMap::new();
        for (ns, pid) in self.procfs.all_processes() {
            if ns == self.opts.host_pid_ns {
                continue;
            }
            if let Some(container) = self.procfs.container_of(pid) {
                by_container.insert(container.id, ns);
            }
        }
        let pods = self.pods.as_ref().map(KubePods::pods).unwrap_or_default();
        self.containers.clear();
        for run in self.running.values_mut() {
            let Some(slot) = run.slot else { continue };
            let mut wanted = BTreeSet::new();
            run.pods.clear();
            run.containers.clear();
            for pod in pods.iter().filter(|p| run.trace.selector.matches(p)) {
                let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
                for (id, container) in pods::containers(pod) {
                    if !run.trace.selector.follows_container(container) {
                        continue;
                    }
                    if let Some(&ns) = by_container.get(id) {
                        wanted.insert(ns);
                        run.pods.insert(pod_name.to_owned());
                        run.containers.insert(format!("{pod_name}/{container}"));
                        self.containers.insert(ns, pods::container(pod, id));
                    }
                }
            }
            for &ns in wanted.difference(&run.traced) {
                for key in keys(ns, &run.trace.syscalls) {
                    self.filter.add(&mut probes.maps.rules, slot, key)?;
                }
            }
            for &ns in run.traced.difference(&wanted) {
                for key in keys(ns, &run.trace.syscalls) {
                    self.filter.remove(&mut probes.maps.rules, slot, key)?;
                }
            }
            run.traced = wanted;
        }
        Ok(())
    }

    /// Hands on the events in the ring (waiting up to [`WAIT`] for one), at most
    /// [`DRAIN_EVENTS`] or for [`DRAIN_TIME`], and reports losses.
    fn drain(&mut self) {
        let Some(probes) = &mut self.probes else {
            return;
        };
        if let Err(err) = ring::wait(&probes.maps.events, WAIT) {
            tracing::warn!(error = %err, "waiting for trace events");
        }
        let mut targets: [Option<Target<'_>>; MAX_TRACES as usize] =
            [const { None }; MAX_TRACES as usize];
        for run in self.running.values() {
            if let (Some(slot), Some(stream)) = (run.slot, &run.stream) {
                let name = run.trace.name.as_str();
                targets[slot.index() as usize] = Some(Target {
                    name,
                    capture_bytes: run.capture_bytes,
                    stream,
                    events: self.hub.metrics.events.with_label_values(&[name]),
                });
            }
        }
        let mut out = self.out.as_mut();
        let mut malformed = 0;
        let round = Instant::now();
        for _ in 0..DRAIN_EVENTS {
            if round.elapsed() >= DRAIN_TIME {
                break;
            }
            let Some(ev) = ring::next(&mut probes.maps.events, &mut malformed) else {
                break;
            };
            deliver(
                &ev,
                &targets,
                self.containers.get(&ev.pid_ns),
                out.as_deref_mut(),
            );
        }
        if let Ok(lost) = ring::lost(&probes.maps.lost) {
            for (slot, target) in targets.iter().enumerate() {
                let Some(target) = target else { continue };
                let new = lost[slot].saturating_sub(self.lost_seen[slot]);
                if new == 0 {
                    continue;
                }
                self.lost_seen[slot] = lost[slot];
                self.hub
                    .metrics
                    .lost
                    .with_label_values(&[target.name])
                    .inc_by(new);
                let mut line = Vec::new();
                if event::write_lost(&mut line, target.name, new, lost[slot]).is_ok() {
                    if let Some(out) = out.as_deref_mut() {
                        out.push(&line);
                    }
                    let _ = target
                        .stream
                        .send(Arc::from(String::from_utf8_lossy(&line).trim_end()));
                }
            }
        }
        if malformed > 0 {
            tracing::warn!(
                malformed,
                "trace records of an unexpected size were skipped"
            );
        }
        if let Some(out) = out {
            out.send();
        }
    }
}

/// Where one trace slot's events go.
struct Target<'a> {
    name: &'a str,
    /// Buffer bytes this trace may see.
    capture_bytes: u32,
    stream: &'a broadcast::Sender<Arc<str>>,
    /// Its `swoll_trace_events_total`.
    events: IntCounter,
}

/// Writes one event, once per trace it is for, cut to what that trace may see, to the trace's
/// stream and (with `--trace-stdout`) stdout. Nothing is encoded for a trace that no one reads.
fn deliver(
    ev: &TraceEvent,
    targets: &[Option<Target<'_>>; MAX_TRACES as usize],
    container: Option<&Container>,
    mut out: Option<&mut StdoutLines>,
) {
    let mut line = Vec::with_capacity(1024);
    for (slot, target) in targets.iter().enumerate() {
        let Some(target) = target else { continue };
        if ev.traces & (1 << slot) == 0 {
            continue;
        }
        target.events.inc();
        let subscribed = target.stream.receiver_count() > 0;
        if !subscribed && out.is_none() {
            continue;
        }
        let mut own = *ev;
        capture::limit_buffers(Arch::NATIVE, &mut own, target.capture_bytes);
        line.clear();
        if event::write_json(&mut line, target.name, &own, container).is_err() {
            continue;
        }
        if let Some(out) = out.as_deref_mut() {
            out.push(&line);
        }
        if subscribed {
            let text = String::from_utf8_lossy(&line);
            let _ = target.stream.send(Arc::from(text.trim_end()));
        }
    }
}
