//! Traces from a ConfigMap: the agent watches the fake API server's ConfigMap of trace specs,
//! traces the pods they select (a real pid namespace in a real kubepods cgroup), and writes
//! the events to `GET /traces/<name>` (and to stdout with `--trace-stdout`); a malformed key is
//! reported and counted while the good ones run; a deleted ConfigMap ends every trace. `swoll
//! trace -n -l` selects pods through the same API server, and so do its `-f` field selector and
//! positional `label=value` selectors, which reach the API server's list and watch; events name
//! the pod's labels and the container's image. Two traces of one pod get each the buffers it
//! asked for, within the agent's ceiling; a trace of every call of a busy pod ends on time and
//! leaves `/healthz`, the streams and SIGTERM answering. A trace whose duration passed does
//! not run again when the agent restarts: its start is in the ConfigMap's annotation.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    time::{Duration, Instant},
};

use serde_json::Value;
use swoll_kernel_tests::{
    Agent, PodCgroup, TempDir,
    apiserver::{FakeApiServer, configmap, pod},
    fake_container_id, fake_pod_uid, http_get, is_root, sample, skip,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");
const NODE: &str = "node-a";

const GOOD: &str = "name: pings\nnamespace: team-t\nsyscalls: [getppid]\n\
                    labelSelector:\n  matchLabels: {k8s-app: demo}\n";
const BAD: &str = "syscalls: [no_such_call]\n";

/// Polls `/metrics` until `done` holds for it.
fn wait_metrics(agent: &Agent, secs: u64, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, body) = http_get(agent.addr, "/metrics").expect("GET /metrics");
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} after {secs} s:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Opens `GET /traces/<name>` and sends each SSE `data:` line to a channel.
fn subscribe(addr: std::net::SocketAddr, name: &str) -> std::sync::mpsc::Receiver<String> {
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the trace stream");
    // HTTP/1.0: the stream comes unchunked, one SSE line per line.
    write!(
        stream,
        "GET /traces/{name} HTTP/1.0\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "GET /traces/{name}: {status}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if let Some(data) = line.strip_prefix("data: ")
                && tx.send(data.to_owned()).is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Collects JSON lines of `rx` until `n` match `keep`, or panics after `secs`.
fn collect(
    rx: &std::sync::mpsc::Receiver<String>,
    n: usize,
    secs: u64,
    keep: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} of {n} events after {secs} s: {got:#?}",
            got.len()
        );
        if let Ok(line) = rx.recv_timeout(left) {
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if keep(&value) {
                got.push(value);
            }
        }
    }
    got
}

/// A running pod `name` in namespace `team-t` labelled `k8s-app=demo` on this node, served by a
/// fake API server, with its container's real cgroup and a kubeconfig for the server.
struct DemoPod {
    container_id: String,
    api: FakeApiServer,
    cgroup: PodCgroup,
    kubeconfig: std::path::PathBuf,
    _dir: TempDir,
}

fn demo_pod(name: &str, seed: u64) -> DemoPod {
    let container_id = fake_container_id(seed);
    let uid = fake_pod_uid(&container_id);
    let api = FakeApiServer::start();
    api.apply(pod(
        "team-t",
        name,
        &uid,
        NODE,
        &[("app", &format!("containerd://{container_id}"))],
        &[("k8s-app", "demo")],
        "Running",
    ));
    let cgroup = PodCgroup::create(&uid, &container_id);
    let dir = TempDir::new(name);
    let kubeconfig = api.kubeconfig(&dir.0);
    DemoPod {
        container_id,
        api,
        cgroup,
        kubeconfig,
        _dir: dir,
    }
}

impl DemoPod {
    /// An agent (as deployed) on this pod's node that runs the traces of the `swoll-traces`
    /// ConfigMap and streams them on `traces_addr`, with `extra` flags.
    fn trace_agent(&self, traces_addr: std::net::SocketAddr, extra: &[&str]) -> Option<Agent> {
        let listen = traces_addr.to_string();
        let mut flags = vec![
            "--interval",
            "1s",
            "--node-name",
            NODE,
            "--trace-configmap",
            "swoll/swoll-traces",
            "--traces-listen",
            &listen,
        ];
        flags.extend_from_slice(extra);
        Agent::start_with_env(&flags, &[("KUBECONFIG", self.kubeconfig.as_path())])
    }
}

/// Starts a workload in a new pid namespace (in `cgroup`, if given) that lives 2 s before it
/// makes its 7 `getppid` calls, so a trace's filter has its namespace by then. Returns the child
/// and its pid namespace.
fn seven_pings(cgroup: Option<&PodCgroup>) -> (std::process::Child, u32) {
    let dir = cgroup.map(|c| c.dir.to_string_lossy().into_owned());
    let mut args = vec!["--new-pidns"];
    if let Some(dir) = &dir {
        args.extend(["--cgroup", dir]);
    }
    args.extend(["--hold", "500", "nanosleep-5ms", "400", "getppid", "7"]);
    swoll_kernel_tests::spawn_workload(WORKLOAD, &args)
}

#[test]
fn configmap_traces_select_pods_stream_and_stop() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let demo = demo_pod("pinger-0", 41);
    let (api, container_id) = (&demo.api, &demo.container_id);
    api.apply(configmap(
        "swoll",
        "swoll-traces",
        &[("good.yaml", GOOD), ("bad.yaml", BAD)],
    ));
    let traces_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let Some(mut agent) = demo.trace_agent(traces_addr, &["--trace-stdout"]) else {
        return;
    };
    let stdout = agent.stdout();
    wait_metrics(&agent, 60, "running trace and counted bad spec", |b| {
        sample(b, "swoll_traces_active") == Some(1)
            && sample(b, "swoll_trace_spec_errors_total{key=\"bad.yaml\"}") == Some(1)
    });
    let stream = subscribe(traces_addr, "pings");

    // The pod's container.
    let (mut child, ns) = seven_pings(Some(&demo.cgroup));
    assert!(child.wait().unwrap().success());
    let mine = |v: &Value| v["pid_ns"] == ns;
    let logged = collect(&stdout, 7, 30, mine);
    for ev in &logged {
        assert_eq!(ev["trace"], "pings", "{ev}");
        assert_eq!(ev["syscall"]["name"], "sys_getppid", "{ev}");
        assert_eq!(ev["container"]["namespace"], "team-t", "{ev}");
        assert_eq!(ev["container"]["pod"], "pinger-0", "{ev}");
        assert_eq!(ev["container"]["name"], "app", "{ev}");
        assert_eq!(ev["container"]["id"], container_id.as_str(), "{ev}");
    }
    let streamed = collect(&stream, 7, 30, mine);
    assert_eq!(
        streamed, logged,
        "the stream and stdout carry the same events"
    );
    // Exactly 7: nothing more of this namespace arrives.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        stdout
            .try_iter()
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .all(|v| !mine(&v))
    );
    let body = wait_metrics(&agent, 10, "delivered events counted", |b| {
        sample(b, "swoll_trace_events_total{trace=\"pings\"}") == Some(7)
    });
    assert_eq!(
        sample(&body, "swoll_trace_events_lost_total{trace=\"pings\"}"),
        None,
        "nothing lost"
    );

    // The bad key fixed: two traces. Then the ConfigMap goes: none, and the stream ends.
    api.apply(configmap(
        "swoll",
        "swoll-traces",
        &[
            ("good.yaml", GOOD),
            (
                "bad.yaml",
                "name: opens\nnamespace: team-t\nsyscalls: [openat]\n",
            ),
        ],
    ));
    wait_metrics(&agent, 30, "two traces", |b| {
        sample(b, "swoll_traces_active") == Some(2)
    });
    api.delete("ConfigMap", "swoll", "swoll-traces");
    wait_metrics(&agent, 30, "no trace", |b| {
        sample(b, "swoll_traces_active") == Some(0)
    });
    let (code, _) = http_get(traces_addr, "/traces/pings").unwrap();
    assert_eq!(code, 404, "an ended trace has no stream");
    assert!(agent.stop().success());
}

/// A running `swoll trace` as deployed, and its JSON lines.
struct RunningTrace {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    _root: swoll_kernel_tests::Pod,
}

/// Starts `swoll trace` with `args` against the API server of `kubeconfig`; returns once it
/// says it is tracing.
fn start_trace(args: &[&str], kubeconfig: &std::path::Path) -> Option<RunningTrace> {
    let (mut cmd, root) =
        swoll_kernel_tests::deployed_command(args, &[("KUBECONFIG", kubeconfig)])?;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning swoll trace");
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut said = String::new();
    while !said.contains("tracing") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "swoll trace ended before it was ready:\n{said}"
        );
        said.push_str(&line);
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Some(RunningTrace {
        child,
        lines,
        _root: root,
    })
}

impl RunningTrace {
    /// Stops the trace with SIGINT (it must exit 0) and returns the events it wrote after the
    /// ones already read.
    fn stop(mut self) -> Vec<Value> {
        std::thread::sleep(Duration::from_secs(1));
        swoll_kernel_tests::signal_deployed(&self.child, libc::SIGINT);
        assert!(
            self.child.wait().unwrap().success(),
            "swoll trace exit status"
        );
        self.lines
            .try_iter()
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }
}

#[test]
fn swoll_trace_selects_pods_by_namespace_and_labels() {
    let _serial = swoll_kernel_tests::exclusive();
    let demo = demo_pod("pinger-1", 43);
    let Some(trace) = start_trace(
        &[
            "trace",
            "-s",
            "getppid",
            "-n",
            "team-t",
            "-l",
            "k8s-app=demo",
            "-o",
            "json",
            "--node-name",
            NODE,
        ],
        &demo.kubeconfig,
    ) else {
        return;
    };

    // The selected pod's container, and a namespace outside any pod: only the first is traced.
    let (mut pod_child, pod_ns) = seven_pings(Some(&demo.cgroup));
    let (mut other_child, other_ns) = seven_pings(None);
    assert!(pod_child.wait().unwrap().success());
    assert!(other_child.wait().unwrap().success());
    let events = collect(&trace.lines, 7, 30, |v| v["pid_ns"] == pod_ns);
    for ev in &events {
        assert_eq!(ev["container"]["pod"], "pinger-1", "{ev}");
        assert_eq!(ev["container"]["namespace"], "team-t", "{ev}");
    }
    let rest = trace.stop();
    assert!(
        rest.iter()
            .all(|v| v["pid_ns"] != other_ns && v["pid_ns"] != pod_ns),
        "only the pod's 7 calls: {rest:#?}"
    );
}

#[test]
fn swoll_trace_field_and_positional_label_selectors_reach_the_api_server() {
    let _serial = swoll_kernel_tests::exclusive();
    // Selected: Running and labelled k8s-app=demo.
    let demo = demo_pod("pinger-2", 44);
    // Labelled k8s-app=demo but Pending (its container already runs): the field selector
    // leaves it out. Running but labelled otherwise: the label selector leaves it out.
    let mut others = Vec::new();
    for (seed, name, labels, phase) in [
        (45, "pinger-pending", [("k8s-app", "demo")], "Pending"),
        (46, "pinger-other", [("k8s-app", "other")], "Running"),
    ] {
        let id = fake_container_id(seed);
        let uid = fake_pod_uid(&id);
        demo.api.apply(pod(
            "team-t",
            name,
            &uid,
            NODE,
            &[("app", &format!("containerd://{id}"))],
            &labels,
            phase,
        ));
        others.push(PodCgroup::create(&uid, &id));
    }
    let Some(trace) = start_trace(
        &[
            "trace",
            "-s",
            "getppid",
            "-f",
            "status.phase=Running",
            "k8s-app=demo",
            "-o",
            "json",
            "--node-name",
            NODE,
        ],
        &demo.kubeconfig,
    ) else {
        return;
    };
    let (mut selected, ns) = seven_pings(Some(&demo.cgroup));
    let (mut pending, pending_ns) = seven_pings(Some(&others[0]));
    let (mut other, other_ns) = seven_pings(Some(&others[1]));
    for child in [&mut selected, &mut pending, &mut other] {
        assert!(child.wait().unwrap().success());
    }
    let events = collect(&trace.lines, 7, 30, |v| v["pid_ns"] == ns);
    for ev in &events {
        let container = &ev["container"];
        assert_eq!(container["id"], demo.container_id.as_str(), "{ev}");
        assert_eq!(container["namespace"], "team-t", "{ev}");
        assert_eq!(container["pod"], "pinger-2", "{ev}");
        assert_eq!(container["name"], "app", "{ev}");
        assert_eq!(container["image"], "registry.example/app:1.0", "{ev}");
        assert_eq!(
            container["labels"],
            serde_json::json!({"k8s-app": "demo"}),
            "{ev}"
        );
    }
    let rest = trace.stop();
    assert!(
        rest.iter()
            .all(|v| v["pid_ns"] != pending_ns && v["pid_ns"] != other_ns && v["pid_ns"] != ns),
        "only the selected pod's 7 calls: {rest:#?}"
    );
    // The API server did the selecting: every pod list and watch carried both selectors and
    // the node.
    let log = demo.api.request_log();
    let pod_requests: Vec<&String> = log.iter().filter(|l| l.contains("/pods")).collect();
    assert!(
        pod_requests.iter().any(|l| l.contains("watch=true")),
        "{log:#?}"
    );
    assert!(
        !pod_requests.is_empty()
            && pod_requests
                .iter()
                .all(|l| l.contains("labelSelector=k8s-app%3Ddemo")
                    && l.contains("fieldSelector=spec.nodeName%3Dnode-a%2Cstatus.phase%3DRunning")),
        "{log:#?}"
    );
}

/// Standard base64 with padding, as the events carry buffers.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Two traces of the demo pod's `write` calls, one asking for 64 bytes of buffers, one for none.
fn two_write_traces(api: &FakeApiServer) {
    let spec = |name: &str, bytes: u32| {
        format!(
            "name: {name}\nnamespace: team-t\nsyscalls: [write]\ncaptureBytes: {bytes}\n\
             labelSelector:\n  matchLabels: {{k8s-app: demo}}\n"
        )
    };
    api.apply(configmap(
        "swoll",
        "swoll-traces",
        &[
            ("bytes.yaml", &spec("bytes", 64)),
            ("nobytes.yaml", &spec("nobytes", 0)),
        ],
    ));
}

/// What the demo pod writes: 90 bytes, more than the 64 a trace asks for.
const SECRET: &str =
    "swoll-secret-0123456789abcdef-swoll-secret-0123456789abcdef-swoll-secret-0123456789abcdef-";

/// Runs the demo pod's 5 writes of [`SECRET`] and returns each trace's 5 events of them
/// (`bytes`, `nobytes`), read from their streams.
fn secret_writes(agent_addr: std::net::SocketAddr, demo: &DemoPod) -> (Vec<Value>, Vec<Value>) {
    let bytes = subscribe(agent_addr, "bytes");
    let nobytes = subscribe(agent_addr, "nobytes");
    let dir = demo.cgroup.dir.to_string_lossy().into_owned();
    let (mut child, ns) = swoll_kernel_tests::spawn_workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--cgroup",
            &dir,
            "--hold",
            "500",
            "nanosleep-5ms",
            "400",
            "write",
            SECRET,
            "5",
        ],
    );
    assert!(child.wait().unwrap().success());
    let secret = |v: &Value| v["pid_ns"] == ns && v["args"]["count"] == SECRET.len();
    (
        collect(&bytes, 5, 30, secret),
        collect(&nobytes, 5, 30, secret),
    )
}

#[test]
fn each_trace_gets_only_the_buffers_it_asked_for() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let demo = demo_pod("writer-0", 47);
    two_write_traces(&demo.api);
    let traces_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let both_running = |b: &str| sample(b, "swoll_traces_active") == Some(2);

    // The operator allows buffers: the trace that asked for 64 bytes gets the first 64 of
    // what was written, the other nothing, though the kernel reads 64 for both.
    let Some(mut agent) = demo.trace_agent(traces_addr, &["--max-capture-bytes", "256"]) else {
        return;
    };
    let stdout = agent.stdout();
    let body = wait_metrics(&agent, 60, "two running traces", both_running);
    assert_eq!(
        sample(&body, "swoll_trace_capture_bytes{trace=\"bytes\"}"),
        Some(64)
    );
    assert_eq!(
        sample(&body, "swoll_trace_capture_bytes{trace=\"nobytes\"}"),
        Some(0)
    );
    let (with, without) = secret_writes(traces_addr, &demo);
    let first_64 = base64(&SECRET.as_bytes()[..64]);
    for ev in &with {
        assert_eq!(ev["args"]["buf"], first_64.as_str(), "{ev}");
    }
    for ev in &without {
        assert_eq!(ev["trace"], "nobytes", "{ev}");
        assert!(
            ev["args"].get("buf").is_none(),
            "a buffer it did not ask for: {ev}"
        );
    }
    assert!(
        stdout.try_iter().next().is_none(),
        "no event goes to stdout without --trace-stdout"
    );
    assert!(agent.stop().success());

    // The default ceiling: no trace gets a buffer, whatever its spec asks for, and the clamp
    // shows.
    let Some(agent) = demo.trace_agent(traces_addr, &[]) else {
        return;
    };
    let body = wait_metrics(&agent, 60, "two running traces", both_running);
    assert_eq!(
        sample(&body, "swoll_trace_capture_bytes{trace=\"bytes\"}"),
        Some(0)
    );
    let (with, without) = secret_writes(traces_addr, &demo);
    for ev in with.iter().chain(&without) {
        assert!(
            ev["args"].get("buf").is_none(),
            "a buffer past the ceiling: {ev}"
        );
    }
    assert!(agent.stop().success());
}

/// How long the saturating trace `short` runs.
const SHORT: Duration = Duration::from_secs(5);

/// Reads trace `name`'s stream, counting its events, until it ends: (events, when it ended);
/// `None` if no such trace runs.
fn count_until_end(
    addr: std::net::SocketAddr,
    name: &str,
) -> Option<std::sync::mpsc::Receiver<(u64, Instant)>> {
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the trace stream");
    write!(
        stream,
        "GET /traces/{name} HTTP/1.0\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    if status.contains(" 404 ") {
        return None;
    }
    assert!(status.contains(" 200 "), "GET /traces/{name}: {status}");
    let prefix = format!("data: {{\"trace\":\"{name}\"");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let events = reader
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with(&prefix))
            .count();
        let _ = tx.send((events as u64, Instant::now()));
    });
    Some(rx)
}

#[test]
fn a_saturating_trace_never_starves_the_agent() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let demo = demo_pod("busy-0", 53);
    let traces_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    // The pod's four threads call getppid as fast as they can, for longer than the test needs.
    let dir = demo.cgroup.dir.to_string_lossy().into_owned();
    let (mut flood, _) = swoll_kernel_tests::spawn_workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--cgroup",
            &dir,
            "--threads",
            "4",
            "--repeat-for",
            "25",
            "getppid",
            "200000",
        ],
    );
    // Events go to stdout too, which is never read: once the pipe is full, lines are dropped
    // (and counted), and nothing else waits for it.
    let Some(agent) = demo.trace_agent(traces_addr, &["--trace-stdout"]) else {
        return;
    };
    let spec = |name: &str, duration: &str| {
        format!(
            "name: {name}\nnamespace: team-t\nsyscalls: [\"*\"]\n{duration}\
             labelSelector:\n  matchLabels: {{k8s-app: demo}}\n"
        )
    };
    demo.api.apply(configmap(
        "swoll",
        "swoll-traces",
        &[
            ("short.yaml", &spec("short", "duration: 5s\n")),
            ("long.yaml", &spec("long", "")),
        ],
    ));
    let applied = Instant::now();
    // The stream exists from the moment the trace starts: `seen` is within a poll of it.
    let (short, seen) = loop {
        if let Some(short) = count_until_end(traces_addr, "short") {
            break (short, Instant::now());
        }
        assert!(
            applied.elapsed() < Duration::from_secs(30),
            "no trace started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let long = count_until_end(traces_addr, "long").expect("`long` runs with `short`");

    // /healthz and the streams' router answer throughout.
    let polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (polling, metrics) = (std::sync::Arc::clone(&polling), agent.addr);
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut answers = 0;
            while polling.load(std::sync::atomic::Ordering::SeqCst) {
                for (addr, path, want) in [
                    (metrics, "/healthz", 200),
                    (traces_addr, "/traces/no-such-trace", 404),
                ] {
                    let asked = Instant::now();
                    let answer = http_get(addr, path);
                    let took = asked.elapsed();
                    assert!(
                        matches!(answer, Ok((code, _)) if code == want),
                        "GET {path}: {answer:?} after {took:?}"
                    );
                    slowest = slowest.max(took);
                    answers += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (answers, slowest)
        })
    };

    let (events, ended) = short
        .recv_timeout(SHORT + Duration::from_secs(20))
        .expect("the 5 s trace still streams 25 s after it started");
    let overran = ended.saturating_duration_since(seen).saturating_sub(SHORT);
    let body = http_get(agent.addr, "/metrics").expect("GET /metrics").1;
    eprintln!(
        "short: {events} events streamed, {:?} lost, ended {overran:?} after its duration \
         ({:?} after the ConfigMap)",
        sample(&body, "swoll_trace_events_lost_total{trace=\"short\"}"),
        ended - applied
    );
    assert!(events > 1000, "the trace saw the flood: {events} events");
    assert!(
        overran <= Duration::from_millis(1500),
        "the trace ended {overran:?} after its duration"
    );
    wait_metrics(&agent, 5, "`long` alone running", |b| {
        sample(b, "swoll_traces_active") == Some(1)
    });

    // A spec change is applied under the flood too: `long` goes, `next` comes.
    demo.api.apply(configmap(
        "swoll",
        "swoll-traces",
        &[("next.yaml", &spec("next", ""))],
    ));
    let changed = Instant::now();
    let (_, removed) = long
        .recv_timeout(Duration::from_secs(20))
        .expect("`long`, removed from the ConfigMap, still streams 20 s later");
    let took = removed - changed;
    assert!(
        took <= Duration::from_secs(3),
        "`long` ended {took:?} after its removal"
    );
    let body = wait_metrics(&agent, 10, "`next` tracing the flood", |b| {
        sample(b, "swoll_trace_events_total{trace=\"next\"}").is_some_and(|n| n > 1000)
    });
    assert!(
        sample(&body, "swoll_trace_stdout_lines_dropped_total").is_some_and(|n| n > 0),
        "a stdout no one reads drops lines"
    );

    // SIGTERM while `next` saturates the agent.
    polling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (answers, slowest) = poller.join().expect("/healthz and /traces answered");
    assert!(answers > 20, "{answers} answers");
    assert!(
        slowest < Duration::from_secs(2),
        "the slowest answer took {slowest:?}"
    );
    let asked = Instant::now();
    assert!(agent.stop().success());
    let took = asked.elapsed();
    assert!(took <= Duration::from_secs(2), "SIGTERM took {took:?}");
    assert!(flood.wait().unwrap().success());
}

/// A ConfigMap spec without `namespace` would trace every namespace's pods: refused (logged and
/// counted as a spec error, as a malformed spec is) unless the agent runs with
/// `--allow-cluster-wide-traces`; a spec with a namespace runs either way.
#[test]
fn cluster_wide_specs_need_the_flag() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let demo = demo_pod("pinger-0", 43);
    demo.api.apply(configmap(
        "swoll",
        "swoll-traces",
        &[("wide.yaml", "syscalls: [getppid]\n"), ("good.yaml", GOOD)],
    ));
    let traces_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let Some(agent) = demo.trace_agent(traces_addr, &[]) else {
        return;
    };
    wait_metrics(
        &agent,
        60,
        "the namespaced trace alone, the wide one refused",
        |b| {
            sample(b, "swoll_traces_active") == Some(1)
                && sample(b, "swoll_trace_spec_errors_total{key=\"wide.yaml\"}") == Some(1)
        },
    );
    let (code, _) = http_get(traces_addr, "/traces/wide").unwrap();
    assert_eq!(code, 404, "a refused trace has no stream");
    assert!(agent.stop().success());

    let Some(agent) = demo.trace_agent(traces_addr, &["--allow-cluster-wide-traces"]) else {
        return;
    };
    let body = wait_metrics(&agent, 60, "both traces", |b| {
        sample(b, "swoll_traces_active") == Some(2)
    });
    assert_eq!(
        sample(&body, "swoll_trace_spec_errors_total{key=\"wide.yaml\"}"),
        None,
        "{body}"
    );
    let stream = subscribe(traces_addr, "wide");
    let (mut child, ns) = seven_pings(Some(&demo.cgroup));
    assert!(child.wait().unwrap().success());
    let events = collect(&stream, 7, 30, |v| v["pid_ns"] == ns);
    assert!(events.iter().all(|ev| ev["trace"] == "wide"), "{events:?}");
    assert!(agent.stop().success());
}

/// The annotation of the traces ConfigMap that records its traces' starts, as JSON.
fn recorded_starts(api: &FakeApiServer) -> Option<Value> {
    let cm = api.get("ConfigMap", "swoll", "swoll-traces")?;
    let text = cm["metadata"]["annotations"]["tools.swoll.criticalstack.com/started"].as_str()?;
    Some(serde_json::from_str(text).expect("the annotation is JSON"))
}

/// Ended stays ended for ConfigMap traces too: a spec with a duration runs, ends, and its start
/// is in the ConfigMap's annotation; an agent started afterwards reads it and does not run the
/// trace again, while a key added afterwards runs.
#[test]
fn an_ended_configmap_trace_stays_ended_when_the_agent_restarts() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let demo = demo_pod("pinger-0", 47);
    let api = &demo.api;
    let short = "name: short\nnamespace: team-t\nsyscalls: [getppid]\nduration: 3s\n\
                 labelSelector:\n  matchLabels: {k8s-app: demo}\n";
    let before = k8s_openapi::jiff::Timestamp::now();
    api.apply(configmap("swoll", "swoll-traces", &[("short.yaml", short)]));
    let traces_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let Some(agent) = demo.trace_agent(traces_addr, &[]) else {
        return;
    };
    wait_metrics(&agent, 60, "the trace running", |b| {
        sample(b, "swoll_traces_active") == Some(1)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let recorded = loop {
        if let Some(recorded) = recorded_starts(api) {
            break recorded;
        }
        assert!(Instant::now() < deadline, "no start recorded");
        std::thread::sleep(Duration::from_millis(100));
    };
    let entries = recorded.as_object().expect("a map of keys");
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["short.yaml"],
        "{recorded:#}"
    );
    let entry = &recorded["short.yaml"];
    let start: k8s_openapi::jiff::Timestamp = entry["startTime"]
        .as_str()
        .expect("a startTime")
        .parse()
        .expect("an RFC 3339 time");
    assert!(
        start >= before && start <= k8s_openapi::jiff::Timestamp::now(),
        "{recorded:#}"
    );
    let hash = entry["spec"].as_str().expect("a spec hash");
    assert_eq!(hash.len(), 16, "{recorded:#}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{recorded:#}");
    wait_metrics(&agent, 15, "the trace ended", |b| {
        sample(b, "swoll_traces_active") == Some(0)
    });
    assert!(agent.stop().success());

    // A new agent reads the start: the trace does not run again.
    let requests = api.request_log().len();
    let Some(agent) = demo.trace_agent(traces_addr, &[]) else {
        return;
    };
    let watched = Instant::now();
    while !api.request_log()[requests..]
        .iter()
        .any(|l| l.contains("/configmaps?") && l.contains("watch=true"))
    {
        assert!(
            watched.elapsed() < Duration::from_secs(30),
            "the new agent never watched the ConfigMap"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several reconciles later, still nothing runs, and the pod's calls reach no trace.
    let (mut child, _) = seven_pings(Some(&demo.cgroup));
    assert!(child.wait().unwrap().success());
    let (_, body) = http_get(agent.addr, "/metrics").unwrap();
    assert_eq!(sample(&body, "swoll_traces_active"), Some(0), "{body}");
    assert_eq!(
        sample(&body, "swoll_trace_events_total{trace=\"short\"}"),
        None,
        "{body}"
    );
    let (code, _) = http_get(traces_addr, "/traces/short").unwrap();
    assert_eq!(code, 404, "an ended trace has no stream");
    assert_eq!(recorded_starts(api), Some(recorded.clone()));

    // A key added afterwards (the ConfigMap edited, its annotation kept) runs.
    let mut cm = api.get("ConfigMap", "swoll", "swoll-traces").unwrap();
    cm["data"]["pings.yaml"] = Value::from(GOOD);
    api.apply(cm);
    wait_metrics(&agent, 30, "the added trace running", |b| {
        sample(b, "swoll_traces_active") == Some(1)
    });
    let stream = subscribe(traces_addr, "pings");
    let (mut child, ns) = seven_pings(Some(&demo.cgroup));
    assert!(child.wait().unwrap().success());
    let events = collect(&stream, 7, 30, |v| v["pid_ns"] == ns);
    assert!(
        events.iter().all(|ev| ev["trace"] == "pings"),
        "{events:#?}"
    );
    let (code, _) = http_get(traces_addr, "/traces/short").unwrap();
    assert_eq!(code, 404, "the ended trace stays ended");
    assert_eq!(
        recorded_starts(api),
        Some(recorded),
        "a trace without a duration records no start"
    );
    assert!(agent.stop().success());
}
