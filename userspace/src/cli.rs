//! Command-line interface: clap types, and their conversion into validated settings.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use swoll_maps_schema::{metrics, slots};

use crate::{
    btf, host, loader::LoadOptions, metrics::Label, pins, selftest::SelftestOptions,
    serve::ServeOptions,
};

/// swoll: which system calls every container makes, how long they take and how they fail.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log filter (`info`, `debug`, `swoll=debug,warn`, …); also read from `RUST_LOG`.
    #[arg(long, global = true, env = "SWOLL_LOG", default_value = "info")]
    pub log: String,
    /// How the agent's own log lines (on stderr) are written: `text` for people, `json` (one
    /// object per line) for log pipelines, which can then tell them from trace events.
    #[arg(
        long,
        global = true,
        env = "SWOLL_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The format of swoll's own log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per record.
    Text,
    /// One JSON object per record (tracing-subscriber's JSON format).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Count and time every syscall in the kernel and serve Prometheus metrics.
    Serve(ServeArgs),
    /// Check that swoll can run here: kernel, BTF, privileges, mounts, and a real probe load
    /// that must count a known workload exactly. Exit status 0 only if it can.
    Selftest(SelftestArgs),
    /// A live terminal table of every syscall by rate, per pid namespace, with sparklines of
    /// the total and error rates. Loads its own probes: needs root, not a running agent.
    Top(TopArgs),
    /// Stream every call of the given syscalls, decoded, until Ctrl-C: of containers (by
    /// default), of selected pods (`-n`, `-l`, `-f`, `label=value`, with Kubernetes), or of every
    /// process (`--no-containers`). Loads its own probes: needs root.
    Trace(TraceArgs),
    /// Print the seccomp profile a running agent derives from a container's counted syscalls
    /// (`GET /seccomp/…` on its metrics listener): OCI JSON for `podman run --security-opt
    /// seccomp=<file>` or a Kubernetes `Localhost` profile, or an SPO `SeccompProfile`.
    Seccomp(SeccompArgs),
    /// Remove the probes `swoll serve` left pinned (e.g. after uninstalling the agent): their
    /// programs stop counting once no agent holds them.
    Unpin(UnpinArgs),
}

/// Flags of `swoll seccomp`.
#[derive(Debug, Args)]
pub struct SeccompArgs {
    /// The agent's metrics listener (`swoll serve --listen`), which alone holds the counters
    /// since each container started.
    #[arg(long, env = "SWOLL_AGENT", default_value = "http://127.0.0.1:9095")]
    pub agent: String,
    /// A file holding the bearer token to send (e.g. a service-account token), for an agent
    /// that runs with `--auth`.
    #[arg(long, env = "SWOLL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificates (the CA) to verify an `https://` agent against; without it, the
    /// system's trusted roots.
    #[arg(long, env = "SWOLL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The name the agent's certificate must hold, if not --agent's host: e.g. the chart's
    /// `swoll.swoll.svc` when --agent is a pod IP or a port-forward.
    #[arg(long, env = "SWOLL_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// The pod's Kubernetes namespace (with -p).
    #[arg(short = 'n', long, requires = "pod", conflicts_with = "kns")]
    pub namespace: Option<String>,
    /// The pod (with -n).
    #[arg(short = 'p', long, requires = "namespace", conflicts_with = "kns")]
    pub pod: Option<String>,
    /// The container, when the pod has several.
    #[arg(short = 'c', long, requires = "pod", conflicts_with = "kns")]
    pub container: Option<String>,
    /// A pid namespace inode (the `kns` label) instead of a pod.
    #[arg(long, required_unless_present = "pod")]
    pub kns: Option<u32>,
    /// Print a Security Profiles Operator `SeccompProfile` instead of the OCI profile.
    #[arg(long)]
    pub spo: bool,
}

impl SeccompArgs {
    /// The request to make.
    pub fn into_options(self) -> crate::seccomp::client::SeccompOptions {
        use crate::seccomp::client::Target;
        let target = match (self.namespace, self.pod, self.kns) {
            (Some(namespace), Some(pod), _) => Target::Pod {
                namespace,
                pod,
                container: self.container,
            },
            // clap requires --kns without -n/-p.
            (_, _, kns) => Target::Kns(kns.unwrap_or_default()),
        };
        crate::seccomp::client::SeccompOptions {
            agent: self.agent,
            token_file: self.token_file,
            ca_file: self.ca_file,
            tls_server_name: self.tls_server_name,
            target,
            spo: self.spo,
        }
    }
}

/// Flags of `swoll unpin`.
#[derive(Debug, Args)]
pub struct UnpinArgs {
    /// The pin path `swoll serve` was given (the DaemonSet's by default).
    #[arg(long, env = "SWOLL_PIN_PATH", default_value = pins::DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
}

/// Flags of `swoll trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Syscalls to trace, comma-separated (`execve,openat`; `sys_openat` works too; `*` for
    /// all).
    #[arg(short = 's', long, value_delimiter = ',', required = true)]
    pub syscalls: Vec<String>,
    /// Trace every process, the host's included, not only containers.
    #[arg(long, conflicts_with_all = ["namespace", "labels", "field_selector", "selectors"])]
    pub no_containers: bool,
    /// Only containers of pods in this Kubernetes namespace (needs KUBECONFIG or in-cluster
    /// config).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only containers of pods with these labels, `key=value[,key=value…]` (needs Kubernetes).
    #[arg(short = 'l', long)]
    pub labels: Option<String>,
    /// Only containers of pods these fields select, as `kubectl --field-selector` takes them
    /// (`status.phase=Running,spec.nodeName!=node-3`; needs Kubernetes).
    #[arg(short = 'f', long)]
    pub field_selector: Option<String>,
    /// Only containers of pods with these labels, as swoll's `trace [label=value,…]` took them:
    /// the same as `-l` (both may be given; every label must match).
    #[arg(value_name = "LABEL=VALUE[,…]")]
    pub selectors: Vec<String>,
    /// `cli`: one readable line per event; `json`: one JSON object per line.
    #[arg(short = 'o', long, value_enum, default_value = "cli")]
    pub output: crate::trace::command::Output,
    /// Keep one call in N, per CPU (1: every call).
    #[arg(long, default_value_t = 1)]
    pub sample_rate: u32,
    /// Capture the first bytes of read/write buffers (0 to 256).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub capture_bytes: u32,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long (`30s`, `5m`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Size of the ring buffer in bytes (a power of two): larger rides out longer bursts.
    #[arg(long, default_value_t = swoll_maps_schema::trace::DEFAULT_RING_BYTES)]
    pub ring_bytes: u32,
    /// Only pods of this node (with `-n`, `-l`, `-f` or `label=value`); default: any node.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The host's procfs (`/host/proc` in a container).
    #[arg(long, env = "SWOLL_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The kernel's BTF.
    #[arg(long, env = "SWOLL_BTF", default_value = btf::VMLINUX)]
    pub btf: PathBuf,
}

impl TraceArgs {
    /// Validated settings: syscall names resolved, the pod selector built.
    pub fn into_options(self) -> anyhow::Result<crate::trace::command::TraceOptions> {
        let syscalls = crate::trace::command::syscall_numbers(&self.syscalls)?;
        let labels: Vec<&str> = self
            .labels
            .iter()
            .chain(&self.selectors)
            .map(String::as_str)
            .collect();
        let pods =
            if self.namespace.is_some() || !labels.is_empty() || self.field_selector.is_some() {
                Some(cli_selector(
                    self.namespace.as_deref(),
                    &labels,
                    self.field_selector.as_deref(),
                )?)
            } else {
                None
            };
        Ok(crate::trace::command::TraceOptions {
            syscalls,
            no_containers: self.no_containers,
            pods,
            output: self.output,
            sample_rate: self.sample_rate,
            capture_bytes: self.capture_bytes,
            count: self.count,
            duration: self.duration,
            ring_bytes: self.ring_bytes,
            host_pid_ns: host::INIT_PID_NS,
            proc_root: self.proc_root,
            btf: self.btf,
            node_name: self.node_name,
        })
    }
}

/// The pod selector of `-n`, `-l`, the positional `label=value` selectors and `-f`, built
/// through the trace-spec parser so that they validate as a ConfigMap's specs do.
fn cli_selector(
    namespace: Option<&str>,
    labels: &[&str],
    fields: Option<&str>,
) -> anyhow::Result<crate::trace::selector::Selector> {
    let mut spec = serde_json::json!({ "syscalls": ["*"] });
    if let Some(ns) = namespace {
        spec["namespace"] = ns.into();
    }
    let mut match_labels = serde_json::Map::new();
    for pair in labels
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("label selector {pair:?}: expected key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        if let Some(other) = match_labels.get(k).filter(|other| *other != v) {
            anyhow::bail!("label {k} selected as both {other} and {v}: no pod has both");
        }
        match_labels.insert(k.to_owned(), v.into());
    }
    if !match_labels.is_empty() {
        spec["labelSelector"] = serde_json::json!({ "matchLabels": match_labels });
    }
    if let Some(fields) = fields {
        spec["fieldSelector"] = fields.into();
    }
    // JSON is YAML: the spec parser reads it as it reads a ConfigMap key.
    let trace = crate::trace::spec::parse("cli", &spec.to_string())?;
    Ok(trace.selector)
}

/// Flags of `swoll selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// The host's procfs (`/host/proc` in a container).
    #[arg(long, env = "SWOLL_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The kernel's BTF.
    #[arg(long, env = "SWOLL_BTF", default_value = btf::VMLINUX)]
    pub btf: PathBuf,
    /// The node whose pods the API server check lists (with Kubernetes configured).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

impl SelftestArgs {
    /// The settings of the checks.
    pub fn into_options(self) -> SelftestOptions {
        SelftestOptions {
            btf: self.btf,
            proc_root: self.proc_root,
            calls: 1000,
            node_name: self.node_name.filter(|n| !n.is_empty()),
        }
    }
}

/// Flags of `swoll top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between reads of the kernel maps, and the window each rate is measured over.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Wait one interval, print the table once as plain text and exit (no terminal needed).
    #[arg(long)]
    pub no_ui: bool,
    /// Only rows of this Kubernetes namespace (pods are known with `--node-name`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only rows where some label (syscall, errno, class, group, namespace, pod, container or
    /// kns) contains this text, ignoring case.
    #[arg(short = 'f', long)]
    pub filter: Option<String>,
    /// Most rows shown (0: all); by default as many as fit the screen, 50 with --no-ui.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Count processes in the host's pid namespace (the default).
    #[arg(long, overrides_with = "no_host")]
    pub host: bool,
    /// Leave processes in the host's pid namespace out: count containers only.
    #[arg(long, env = "SWOLL_NO_HOST")]
    pub no_host: bool,
    /// This Kubernetes node's name: label rows with the pods running here (watched through
    /// KUBECONFIG or the in-cluster config), as `swoll serve` does. Without it no API call is
    /// made and containers show by short id.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The host's procfs (`/host/proc` in a container).
    #[arg(long, env = "SWOLL_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The kernel's BTF, for the struct offsets the probes need.
    #[arg(long, env = "SWOLL_BTF", default_value = btf::VMLINUX)]
    pub btf: PathBuf,
}

impl TopArgs {
    /// Validated settings. Calls are counted, not timed: the table shows counts and rates
    /// only, so the cheapest probe mode is enough.
    pub fn into_options(self) -> crate::top::TopOptions {
        let mut load = LoadOptions::for_this_process(host::INIT_PID_NS);
        load.count_host = !self.no_host;
        load.time = false;
        load.btf_path = self.btf;
        crate::top::TopOptions {
            interval: self.interval,
            no_ui: self.no_ui,
            filter: crate::top::Filter::new(self.namespace, self.filter),
            limit: self.limit,
            proc_root: self.proc_root,
            node_name: self.node_name.filter(|n| !n.is_empty()),
            load,
        }
    }
}

/// Flags of `swoll serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(long, env = "SWOLL_LISTEN", default_value = "127.0.0.1:9095")]
    pub listen: SocketAddr,
    /// Time between reads of the kernel maps (e.g. `5s`, `500ms`, `1m`).
    #[arg(long, env = "SWOLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Entries of the in-kernel metrics map: distinct (pid namespace, syscall, errno) keys.
    #[arg(long, env = "SWOLL_MAP_SIZE", default_value_t = metrics::DEFAULT_ENTRIES,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub map_size: u32,
    /// Pid namespaces whose calls are counted in per-namespace arrays instead of the metrics
    /// map (cheaper per syscall; kernel 5.11+). Each takes 9.5 KiB per CPU; namespaces
    /// beyond it are counted in the metrics map, and their calls in
    /// swoll_ns_slots_full_calls_total. 0: the metrics map only.
    #[arg(long, env = "SWOLL_NS_SLOTS", default_value_t = slots::DEFAULT_SLOTS,
          value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub ns_slots: u32,
    /// Count processes in the host's pid namespace (the default).
    #[arg(long, overrides_with = "no_host")]
    pub host: bool,
    /// Leave processes in the host's pid namespace out: count containers only.
    #[arg(long, env = "SWOLL_NO_HOST")]
    pub no_host: bool,
    /// Count the agent's own syscalls too.
    #[arg(long)]
    pub count_self: bool,
    /// Count only, do not time: `sys_exit` alone is attached, the cheapest mode.
    #[arg(long, env = "SWOLL_NO_TIME")]
    pub no_time: bool,
    /// Also keep a latency histogram per key in the kernel (log2 buckets of ns) and export
    /// swoll_node_metrics_syscall_duration_seconds. Costs every syscall a second map lookup and
    /// a map of --map-size × CPUs × 256 bytes.
    #[arg(long, env = "SWOLL_HISTOGRAM", conflicts_with = "no_time")]
    pub histogram: bool,
    /// The host's procfs (`/host/proc` in the DaemonSet).
    #[arg(long, env = "SWOLL_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Labels of the syscall families, comma-separated (drop `kns`, `class`, `group`, … to
    /// cut cardinality; series that then share labels are summed).
    #[arg(
        long,
        env = "SWOLL_LABELS",
        value_delimiter = ',',
        default_value = "syscall,err,class,group,namespace,pod,container,kns"
    )]
    pub labels: Vec<Label>,
    /// Most series of their own in each syscall family; later ones fold into their workload's
    /// `syscall="other"` series (0: no limit).
    #[arg(long, env = "SWOLL_MAX_SERIES", default_value_t = 50_000)]
    pub max_series: usize,
    /// Connections each HTTP listener keeps open at once; more are closed as soon as they are
    /// accepted (counted in swoll_http_connections_rejected_total). Prometheus keeps one per
    /// scrape target.
    #[arg(long, env = "SWOLL_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// How long an HTTP client may go without sending a request's headers, or without reading
    /// any of a response (a /metrics body, a trace stream) while the agent has bytes for it,
    /// before it is disconnected and releases what its response holds.
    #[arg(long, env = "SWOLL_HTTP_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_write_timeout: Duration,
    /// This Kubernetes node's name: label series with the pods running here (watched through
    /// KUBECONFIG or the in-cluster config). Without it swoll runs in local mode and makes no
    /// API calls; containers are labelled by short id.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The kernel's BTF, for the struct offsets the probes need.
    #[arg(long, env = "SWOLL_BTF", default_value = btf::VMLINUX)]
    pub btf: PathBuf,
    /// Turn on the kernel's BPF run statistics while swoll runs and export
    /// swoll_probe_run_time_ns_per_syscall. Costs every BPF program on the host two clock reads
    /// per run.
    #[arg(long, env = "SWOLL_BPF_STATS")]
    pub bpf_stats: bool,
    /// The ConfigMap of trace specs, `NAMESPACE/NAME` (with --node-name). Default:
    /// `swoll-traces` in the agent's own namespace (`POD_NAMESPACE`, or the service account's).
    #[arg(long, env = "SWOLL_TRACE_CONFIGMAP")]
    pub trace_configmap: Option<String>,
    /// Watch no trace ConfigMap: metrics only.
    #[arg(long, env = "SWOLL_NO_TRACES", conflicts_with = "trace_configmap")]
    pub no_traces: bool,
    /// Where `GET /traces/<name>` streams trace events (Server-Sent Events). Loopback by
    /// default: trace events carry paths and argv.
    #[arg(long, env = "SWOLL_TRACES_LISTEN", default_value = "127.0.0.1:9096")]
    pub traces_listen: SocketAddr,
    /// A file holding the bearer token the trace streams require (`Authorization: Bearer
    /// <token>`), e.g. a mounted Secret's key; read at start. With --auth the API server
    /// decides instead.
    #[arg(long, env = "SWOLL_TRACES_TOKEN_FILE", conflicts_with = "auth")]
    pub traces_token_file: Option<PathBuf>,
    /// Removed: a token in argv or the environment is readable by whoever can list processes
    /// or read the pod spec. Refused with a message naming --traces-token-file.
    #[arg(long, env = "SWOLL_TRACES_TOKEN", hide = true, hide_env_values = true,
          value_parser = RemovedTracesToken)]
    pub traces_token: Option<String>,
    /// Authenticate and authorize every request of both listeners but /healthz and /readyz
    /// through the Kubernetes API server, as kube-rbac-proxy does: the bearer token goes to a
    /// TokenReview, its user to a SubjectAccessReview of the request's path as a non-resource
    /// URL (`get /metrics`). Answers are cached (tokens 2 min, allowed 5 min, denied 30 s). The
    /// agent's service account needs `create` on tokenreviews and subjectaccessreviews.
    #[arg(long, env = "SWOLL_AUTH")]
    pub auth: bool,
    /// With --auth, accept only bearer tokens minted for one of these audiences (the
    /// TokenReview's `spec.audiences`, as kube-rbac-proxy's --auth-token-audiences), e.g. a
    /// projected service account token with `audience: swoll`: a token sent to the agent is
    /// then of no use against the API server. Empty: tokens of the API server's own
    /// audiences. Comma-separated or repeated.
    #[arg(
        long = "auth-audience",
        env = "SWOLL_AUTH_AUDIENCES",
        value_delimiter = ',',
        requires = "auth"
    )]
    pub auth_audiences: Vec<String>,
    /// Serve both listeners over TLS with this PEM certificate chain (e.g. a mounted
    /// kubernetes.io/tls Secret's tls.crt), re-read every --tls-reload-interval: a renewed
    /// certificate is served to new connections without a restart.
    #[arg(long, env = "SWOLL_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --tls-cert-file (tls.key).
    #[arg(long, env = "SWOLL_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate and key files are read again for changes.
    #[arg(long, env = "SWOLL_TLS_RELOAD_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Size of the trace ring buffer in bytes (a power of two).
    #[arg(long, env = "SWOLL_TRACE_RING_BYTES", default_value_t = swoll_maps_schema::trace::DEFAULT_RING_BYTES)]
    pub trace_ring_bytes: u32,
    /// The most bytes of read/write buffers a trace may capture (0 to 256). Buffers are often
    /// secrets, so none by default: a spec's `captureBytes` above this gets this much (logged,
    /// and shown in swoll_trace_capture_bytes).
    #[arg(long, env = "SWOLL_MAX_CAPTURE_BYTES", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=256))]
    pub max_capture_bytes: u32,
    /// Also write every trace event to stdout, one JSON line each. Off by default: whoever may
    /// read the pod's logs would read every trace.
    #[arg(long, env = "SWOLL_TRACE_STDOUT")]
    pub trace_stdout: bool,
    /// Run trace specs of the ConfigMap that have no `namespace` (they trace the pods of every
    /// namespace). Off by default: whoever may edit the ConfigMap would read every pod's calls;
    /// teams trace their own namespace's pods with Trace resources.
    #[arg(long, env = "SWOLL_ALLOW_CLUSTER_WIDE_TRACES")]
    pub allow_cluster_wide_traces: bool,
    /// Directory on a BPF filesystem where the probes are pinned: they keep counting while the
    /// agent restarts, and the next agent with the same binary and options continues their
    /// counters exactly. No default: pinned probes cost every syscall on the host until
    /// `swoll unpin`, so only an agent meant to be restarted (the DaemonSet's) should leave
    /// them; without it everything is detached when the agent stops.
    #[arg(long, env = "SWOLL_PIN_PATH")]
    pub pin_path: Option<PathBuf>,
    /// Pin nothing, even with --pin-path: the probes are detached when the agent stops, and
    /// counters start from zero with every agent. Pins other agents left are not touched.
    #[arg(long, env = "SWOLL_NO_PIN")]
    pub no_pin: bool,
}

/// The namespace this agent runs in, for its default traces ConfigMap.
fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

impl ServeArgs {
    /// Validated settings.
    pub fn into_options(self) -> ServeOptions {
        let mut load = LoadOptions::for_this_process(host::INIT_PID_NS);
        load.map_size = self.map_size;
        load.ns_slots = self.ns_slots;
        load.count_host = !self.no_host;
        load.count_self = self.count_self;
        load.time = !self.no_time;
        load.histogram = self.histogram;
        load.btf_path = self.btf;
        load.self_tgid = host::own_tgid(&self.proc_root);
        load.pin_path = self.pin_path.filter(|_| !self.no_pin);
        ServeOptions {
            listen: self.listen,
            interval: self.interval,
            proc_root: self.proc_root,
            labels: self.labels,
            max_series: self.max_series,
            http: crate::conn::Limits {
                max_connections: self.max_connections as usize,
                stall_timeout: self.http_write_timeout,
            },
            node_name: self.node_name.filter(|n| !n.is_empty()),
            bpf_stats: self.bpf_stats,
            auth: self.auth,
            auth_audiences: self.auth_audiences,
            tls: self
                .tls_cert_file
                .zip(self.tls_key_file)
                .map(|(cert, key)| crate::tls::CertFiles {
                    cert,
                    key,
                    reload_every: self.tls_reload_interval,
                }),
            traces: (!self.no_traces).then(|| {
                let (namespace, name) =
                    match self.trace_configmap.as_deref().map(|c| c.split_once('/')) {
                        Some(Some((ns, name))) => (ns.to_owned(), name.to_owned()),
                        Some(None) => (
                            own_namespace(),
                            self.trace_configmap.clone().unwrap_or_default(),
                        ),
                        None => (own_namespace(), "swoll-traces".to_owned()),
                    };
                crate::serve::TraceSettings {
                    configmap_namespace: namespace,
                    configmap_name: name,
                    listen: self.traces_listen,
                    token_file: self.traces_token_file.clone(),
                    ring_bytes: self.trace_ring_bytes,
                    max_capture_bytes: self.max_capture_bytes,
                    stdout: self.trace_stdout,
                    allow_cluster_wide: self.allow_cluster_wide_traces,
                }
            }),
            load,
        }
    }
}

/// The value parser of the removed `--traces-token`: always an error saying what replaced it,
/// without the value (clap's own errors would repeat the token).
#[derive(Clone, Copy, Debug)]
struct RemovedTracesToken;

impl clap::builder::TypedValueParser for RemovedTracesToken {
    type Value = String;

    fn parse_ref(
        &self,
        _: &clap::Command,
        _: Option<&clap::Arg>,
        _: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            "--traces-token (SWOLL_TRACES_TOKEN) was removed: a token on the command line or in \
             the environment is readable by whoever can list processes or read the pod spec; put \
             it in a file (a mounted Secret) and pass --traces-token-file, or use --auth\n",
        ))
    }
}

/// Parses `250ms`, `5s`, `2m` or a bare number of seconds; at least 10 ms, at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 5s or 1m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if d < Duration::from_millis(10) || d > Duration::from_secs(86_400) {
        return Err(format!("{s:?} is out of range (10ms to 24h)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn serve_defaults() {
        let cli = Cli::try_parse_from(["swoll", "serve"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen, "127.0.0.1:9095".parse().expect("addr"));
        assert_eq!(args.interval, Duration::from_secs(5));
        assert_eq!(args.map_size, 65_536);
        assert!(!args.no_host && !args.no_time && !args.count_self && !args.histogram);
        assert_eq!(args.pin_path, None);
        assert!(!args.no_pin);
        assert_eq!(args.into_options().load.pin_path, None);
    }

    #[test]
    fn serve_pins_only_with_a_pin_path_and_without_no_pin() {
        let pin_path = |argv: &[&str]| {
            let cli = Cli::try_parse_from(["swoll", "serve"].iter().chain(argv)).expect("parses");
            let Command::Serve(args) = cli.command else {
                panic!("not serve")
            };
            args.into_options().load.pin_path
        };
        assert_eq!(
            pin_path(&["--pin-path", "/sys/fs/bpf/swoll"]),
            Some(PathBuf::from("/sys/fs/bpf/swoll"))
        );
        assert_eq!(
            pin_path(&["--pin-path", "/sys/fs/bpf/swoll", "--no-pin"]),
            None
        );
        assert_eq!(pin_path(&["--no-pin"]), None);
    }

    #[test]
    fn the_removed_traces_token_says_what_replaced_it() {
        let err = Cli::try_parse_from(["swoll", "serve", "--traces-token", "secret"])
            .expect_err("--traces-token is refused");
        let message = err.to_string();
        assert!(message.contains("--traces-token-file"), "{message}");
        assert!(
            !message.contains("secret"),
            "the token is not echoed: {message}"
        );
        let err = Cli::try_parse_from(["swoll", "serve", "--auth", "--traces-token-file", "/t"])
            .expect_err("--auth and --traces-token-file conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn auth_audiences_need_auth_and_split_at_commas() {
        let err = Cli::try_parse_from(["swoll", "serve", "--auth-audience", "swoll"])
            .expect_err("--auth-audience without --auth");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let cli = Cli::try_parse_from([
            "swoll",
            "serve",
            "--auth",
            "--auth-audience=swoll,metrics",
            "--auth-audience",
            "other",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.into_options().auth_audiences,
            ["swoll", "metrics", "other"]
        );
    }

    #[test]
    fn unpin_defaults_to_the_daemonsets_pin_path() {
        let cli = Cli::try_parse_from(["swoll", "unpin"]).expect("parses");
        let Command::Unpin(args) = cli.command else {
            panic!("not unpin")
        };
        assert_eq!(args.pin_path, PathBuf::from(pins::DEFAULT_PIN_PATH));
    }

    #[test]
    fn seccomp_takes_a_pod_or_a_pid_namespace() {
        use crate::seccomp::client::Target;
        let parse = |argv: &[&str]| {
            let cli = Cli::try_parse_from(["swoll", "seccomp"].iter().chain(argv))?;
            let Command::Seccomp(args) = cli.command else {
                panic!("not seccomp")
            };
            Ok::<_, clap::Error>(args.into_options())
        };
        let opts = parse(&["-n", "shop", "-p", "web", "-c", "app"]).expect("parses");
        assert_eq!(opts.agent, "http://127.0.0.1:9095");
        assert!(matches!(
            opts.target,
            Target::Pod { ref namespace, ref pod, container: Some(ref c) }
                if namespace == "shop" && pod == "web" && c == "app"
        ));
        let opts = parse(&["--kns", "4026532000", "--spo"]).expect("parses");
        assert!(matches!(opts.target, Target::Kns(4_026_532_000)) && opts.spo);
        for bad in [
            &[][..],
            &["-n", "shop"],
            &["-p", "web"],
            &["-n", "shop", "-p", "web", "--kns", "1"],
            &["--kns", "1", "-c", "app"],
            &["--kns", "x"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn histograms_need_timing() {
        assert!(Cli::try_parse_from(["swoll", "serve", "--histogram"]).is_ok());
        assert!(Cli::try_parse_from(["swoll", "serve", "--histogram", "--no-time"]).is_err());
    }

    #[test]
    fn trace_selects_pods_by_labels_fields_and_positional_selectors() {
        let selector = |argv: &[&str]| {
            let cli = Cli::try_parse_from(["swoll", "trace", "-s", "getppid"].iter().chain(argv))
                .expect("parses");
            let Command::Trace(args) = cli.command else {
                panic!("not trace")
            };
            args.into_options()
                .map(|o| o.pods.map(|p| p.query(None)))
                .map_err(|e| e.to_string())
        };
        let query = selector(&[
            "-f",
            "status.phase=Running",
            "app=web,tier=front",
            "-l",
            "team=a",
        ])
        .expect("valid")
        .expect("pods selected");
        assert_eq!(query.labels.as_deref(), Some("app=web,team=a,tier=front"));
        assert_eq!(query.fields.as_deref(), Some("status.phase=Running"));
        assert_eq!(selector(&[]), Ok(None), "no selector: every container");
        assert!(selector(&["app"]).is_err(), "not key=value");
        assert!(
            selector(&["app=a", "app=b"]).is_err(),
            "contradicting labels"
        );
        assert!(
            selector(&["-f", "spec.unknown=x"]).is_err(),
            "unsupported field"
        );
        assert!(
            Cli::try_parse_from(["swoll", "trace", "-s", "read", "--no-containers", "a=b"])
                .is_err()
        );
    }

    #[test]
    fn map_size_is_bounded() {
        assert!(Cli::try_parse_from(["swoll", "serve", "--map-size", "0"]).is_err());
        assert!(Cli::try_parse_from(["swoll", "serve", "--map-size", "99999999"]).is_err());
    }
}
