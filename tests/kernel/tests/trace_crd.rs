//! Traces from `Trace` resources (`tools.swoll.criticalstack.com/v1alpha1`): a Trace traces
//! pods of its own namespace only (a pod of another namespace with the same labels is not
//! traced), the agent as deployed keeps its status (running, this node's pods and containers,
//! events delivered; ended with its reason once its duration passed), a malformed Trace gets
//! `Failed` while the others run, `hostSelector` picks containers by name, and a Trace that
//! ended does not start again when the agent restarts (the fake API server keeps the status
//! the agent patched).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use swoll_kernel_tests::{
    Agent, PodCgroup, TempDir,
    apiserver::{FakeApiServer, pod, trace},
    fake_container_id, fake_pod_uid, http_get, is_root, sample, skip,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");
const NODE: &str = "node-a";

/// A running pod of `namespace` labelled `k8s-app=demo` on this node, with its container
/// (`app`)'s real cgroup.
fn demo_pod(api: &FakeApiServer, namespace: &str, name: &str, seed: u64) -> PodCgroup {
    let container_id = fake_container_id(seed);
    let uid = fake_pod_uid(&container_id);
    api.apply(pod(
        namespace,
        name,
        &uid,
        NODE,
        &[("app", &format!("containerd://{container_id}"))],
        &[("k8s-app", "demo")],
        "Running",
    ));
    PodCgroup::create(&uid, &container_id)
}

/// An agent as deployed on [`NODE`], watching `api`, streaming traces on `traces_addr`.
fn trace_agent(kubeconfig: &std::path::Path, traces_addr: std::net::SocketAddr) -> Option<Agent> {
    let listen = traces_addr.to_string();
    let flags = [
        "--interval",
        "1s",
        "--node-name",
        NODE,
        "--trace-configmap",
        "swoll/swoll-traces",
        "--traces-listen",
        &listen,
    ];
    Agent::start_with_env(&flags, &[("KUBECONFIG", kubeconfig)])
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

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

/// Polls the status of Trace `namespace/name` until `done` holds for it; returns it.
fn wait_status(
    api: &FakeApiServer,
    (namespace, name): (&str, &str),
    secs: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let status = api
            .get("Trace", namespace, name)
            .map(|t| t["status"].clone())
            .unwrap_or_default();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} after {secs} s: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens `GET /traces/<name>` and sends each SSE `data:` line to a channel.
fn subscribe(addr: std::net::SocketAddr, name: &str) -> std::sync::mpsc::Receiver<String> {
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the trace stream");
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

/// Starts a workload in a new pid namespace in `cgroup` that sleeps 5 s, then makes 7
/// `getppid` calls. Returns the child and its pid namespace.
fn pings_after_5s(cgroup: &PodCgroup) -> (std::process::Child, u32) {
    let dir = cgroup.dir.to_string_lossy().into_owned();
    let args = [
        "--new-pidns",
        "--cgroup",
        &dir,
        "--hold",
        "500",
        "nanosleep-5ms",
        "1000",
        "getppid",
        "7",
    ];
    swoll_kernel_tests::spawn_workload(WORKLOAD, &args)
}

#[test]
fn a_trace_follows_pods_of_its_own_namespace_and_reports_them() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let api = FakeApiServer::start();
    let mine = demo_pod(&api, "team-t", "pinger-0", 61);
    let theirs = demo_pod(&api, "team-b", "pinger-b", 62);
    // An empty selector: every pod of team-t, and of team-t only.
    api.apply(trace("team-t", "pings", json!({"syscalls": ["getppid"]})));
    api.apply(trace(
        "team-t",
        "broken",
        json!({"syscalls": ["no_such_call"]}),
    ));
    // The pod's container is `app`: a Trace of its `sidecar` containers traces nothing.
    api.apply(trace(
        "team-t",
        "sidecars",
        json!({"syscalls": ["getppid"], "hostSelector": ["sidecar"]}),
    ));
    let dir = TempDir::new("trace-crd");
    let kubeconfig = api.kubeconfig(&dir.0);
    let traces_addr = free_addr();
    let Some(agent) = trace_agent(&kubeconfig, traces_addr) else {
        return;
    };
    wait_metrics(
        &agent,
        60,
        "two Traces running, the broken one counted",
        |b| {
            sample(b, "swoll_traces_active") == Some(2)
                && sample(b, "swoll_trace_spec_errors_total{key=\"team-t/broken\"}") == Some(1)
        },
    );
    let broken = wait_status(&api, ("team-t", "broken"), 10, "Failed", |s| {
        s["phase"] == "Failed"
    });
    assert_eq!(broken["reason"], "InvalidSpec", "{broken:#}");
    let message = broken["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("trace spec `team-t/broken`: unknown syscalls")
            && message.contains("no_such_call"),
        "{message}"
    );
    let stream = subscribe(traces_addr, "team-t.pings");

    let (mut child_a, ns_a) = pings_after_5s(&mine);
    let (mut child_b, ns_b) = pings_after_5s(&theirs);
    let status = wait_status(&api, ("team-t", "pings"), 5, "the pod on the node", |s| {
        s["nodes"][NODE]["pods"] == json!(["pinger-0"])
    });
    assert_eq!(status["phase"], "Running", "{status:#}");
    assert_eq!(status["reason"], Value::Null, "{status:#}");
    assert_eq!(
        status["nodes"][NODE]["containers"],
        json!(["pinger-0/app"]),
        "{status:#}"
    );
    assert!(
        status["startTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{status:#}"
    );
    let sidecars = api.get("Trace", "team-t", "sidecars").unwrap()["status"].clone();
    assert_eq!(sidecars["phase"], "Running", "{sidecars:#}");
    assert_eq!(sidecars["nodes"][NODE]["pods"], json!([]), "{sidecars:#}");
    assert!(child_a.wait().unwrap().success());
    assert!(child_b.wait().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    while events.len() < 7 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = stream
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("7 events of team-t, got {events:?}"));
        let ev: Value = serde_json::from_str(&line).expect("a JSON event");
        assert_ne!(ev["pid_ns"], ns_b, "a pod of team-b was traced: {ev}");
        if ev["pid_ns"] == ns_a {
            events.push(ev);
        }
    }
    for ev in &events {
        assert_eq!(ev["trace"], "team-t.pings", "{ev}");
        assert_eq!(ev["syscall"]["name"], "sys_getppid", "{ev}");
        assert_eq!(ev["container"]["namespace"], "team-t", "{ev}");
        assert_eq!(ev["container"]["pod"], "pinger-0", "{ev}");
    }
    // Nothing of team-b's pod comes later either.
    std::thread::sleep(Duration::from_secs(2));
    for line in stream.try_iter() {
        let ev: Value = serde_json::from_str(&line).expect("a JSON event");
        assert_ne!(ev["pid_ns"], ns_b, "a pod of team-b was traced: {ev}");
    }
    let body = wait_metrics(&agent, 10, "7 events delivered", |b| {
        sample(b, "swoll_trace_events_total{trace=\"team-t.pings\"}") == Some(7)
    });
    assert_eq!(
        sample(&body, "swoll_trace_events_total{trace=\"team-t.sidecars\"}"),
        Some(0),
        "no container named sidecar: {body}"
    );
    let status = wait_status(&api, ("team-t", "pings"), 15, "7 events in status", |s| {
        s["nodes"][NODE]["eventsDelivered"] == 7
    });
    assert_eq!(status["nodes"][NODE]["eventsLost"], 0, "{status:#}");
    assert_eq!(status["phase"], "Running", "{status:#}");
    assert!(agent.stop().success());
}

#[test]
fn an_ended_trace_stays_ended_when_the_agent_restarts() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let api = FakeApiServer::start();
    let _pod = demo_pod(&api, "team-t", "pinger-0", 63);
    api.apply(trace(
        "team-t",
        "short",
        json!({"syscalls": ["getppid"], "duration": "3s",
               "labelSelector": {"matchLabels": {"k8s-app": "demo"}}}),
    ));
    let dir = TempDir::new("trace-crd-end");
    let kubeconfig = api.kubeconfig(&dir.0);
    let traces_addr = free_addr();
    let Some(agent) = trace_agent(&kubeconfig, traces_addr) else {
        return;
    };
    let running = wait_status(&api, ("team-t", "short"), 60, "Running", |s| {
        s["phase"] == "Running" && s["startTime"].is_string()
    });
    let start = running["startTime"].clone();
    let ended = wait_status(&api, ("team-t", "short"), 15, "Ended", |s| {
        s["phase"] == "Ended"
    });
    assert_eq!(ended["reason"], "DurationPassed", "{ended:#}");
    assert_eq!(ended["startTime"], start, "the start is recorded once");
    let end = |t: &Value| {
        let t = t.as_str().expect("a time");
        t.parse::<k8s_openapi::jiff::Timestamp>()
            .expect("an RFC 3339 time")
    };
    assert_eq!(
        end(&ended["endTime"]).duration_since(end(&start)),
        k8s_openapi::jiff::SignedDuration::from_secs(3),
        "{ended:#}"
    );
    assert_eq!(ended["nodes"][NODE]["pods"], json!([]), "{ended:#}");
    wait_metrics(&agent, 5, "no trace running", |b| {
        sample(b, "swoll_traces_active") == Some(0)
    });
    assert!(agent.stop().success());

    // A new agent reads the end in the status: the trace does not run again.
    let requests = api.request_log().len();
    let Some(agent) = trace_agent(&kubeconfig, traces_addr) else {
        return;
    };
    let watched = Instant::now();
    while !api.request_log()[requests..].iter().any(|l| {
        l.contains("/apis/tools.swoll.criticalstack.com/v1alpha1/traces?")
            && l.contains("watch=true")
    }) {
        assert!(
            watched.elapsed() < Duration::from_secs(30),
            "the new agent never watched Traces"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several reconciles later, still nothing runs.
    std::thread::sleep(Duration::from_secs(4));
    let (_, body) = http_get(agent.addr, "/metrics").unwrap();
    assert_eq!(sample(&body, "swoll_traces_active"), Some(0), "{body}");
    let (code, _) = http_get(traces_addr, "/traces/team-t.short").unwrap();
    assert_eq!(code, 404, "an ended trace has no stream");
    let after = api.get("Trace", "team-t", "short").unwrap()["status"].clone();
    assert_eq!(after["phase"], "Ended", "{after:#}");
    assert_eq!(after["startTime"], start, "{after:#}");
    assert_eq!(
        after["nodes"][NODE], ended["nodes"][NODE],
        "the old agent's entry stays: the new one never ran the trace"
    );
    assert!(agent.stop().success());
}

/// How agents share a Trace's status, through the real kube client: merge patches of
/// `status.nodes.<node>` by two nodes leave each other's entry, and a `startTime` patch that
/// carries a resourceVersion someone else moved past is refused (409), so the start is
/// recorded once. No kernel needed.
#[tokio::test(flavor = "current_thread")]
async fn status_patches_of_two_nodes_do_not_clobber_each_other() {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let api = FakeApiServer::start();
    let stored = api.apply(trace("shop", "web", json!({"syscalls": ["read"]})));
    let config = kube::Config::new(api.url().parse().expect("server url"));
    let client = kube::Client::try_from(config).expect("kube client");
    let gvk = GroupVersionKind::gvk("tools.swoll.criticalstack.com", "v1alpha1", "Trace");
    let traces: Api<DynamicObject> =
        Api::namespaced_with(client, "shop", &ApiResource::from_gvk(&gvk));
    let patch = |node: &str, delivered: u64| json!({"status": {"nodes": {node: {"pods": ["web-0"], "eventsDelivered": delivered}}}});
    let pp = PatchParams::default();
    let seen = stored["metadata"]["resourceVersion"].as_str().unwrap();
    let first = json!({"metadata": {"resourceVersion": seen},
                       "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}});
    traces
        .patch_status("web", &pp, &Patch::Merge(&first))
        .await
        .expect("the first start");
    let second = json!({"metadata": {"resourceVersion": seen},
                        "status": {"phase": "Running", "startTime": "2026-01-01T00:00:09Z"}});
    let err = traces
        .patch_status("web", &pp, &Patch::Merge(&second))
        .await
        .expect_err("a second start, from the version without one");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err:?}"
    );
    traces
        .patch_status("web", &pp, &Patch::Merge(&patch("node-a", 3)))
        .await
        .unwrap();
    let got = traces
        .patch_status("web", &pp, &Patch::Merge(&patch("node-b", 5)))
        .await
        .unwrap();
    assert_eq!(
        got.data["status"],
        json!({"phase": "Running", "startTime": "2026-01-01T00:00:00Z", "nodes": {
            "node-a": {"pods": ["web-0"], "eventsDelivered": 3},
            "node-b": {"pods": ["web-0"], "eventsDelivered": 5},
        }})
    );
    assert_eq!(got.data["spec"], json!({"syscalls": ["read"]}));
    // A user's update of the Trace leaves the status alone, as with the status subresource.
    api.apply(trace("shop", "web", json!({"syscalls": ["write"]})));
    let stored = api.get("Trace", "shop", "web").unwrap();
    assert_eq!(stored["status"], got.data["status"]);
}
