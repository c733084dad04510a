//! Pid namespaces resolved to pods: real cgroups named as kubelet and containerd name them, real
//! pid namespaces moved into them, a fake API server speaking list+watch to the agent's real
//! kube-rs client, and the labels on `/metrics` and in a real Prometheus.
use std::time::{Duration, Instant};

use swoll_kernel_tests::{
    Agent, PodCgroup, Prometheus, TempDir,
    apiserver::{FakeApiServer, pod},
    expect_sample, fake_container_id, fake_pod_uid, http_get, is_root, skip, workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");
const NODE: &str = "node-a";

/// A pod with one container on this node, its cgroup, and an agent watching the fake API.
struct Cluster {
    api: FakeApiServer,
    cgroup: PodCgroup,
    agent: Agent,
    container_id: String,
    _dir: TempDir,
}

fn cluster(
    seed: u64,
    namespace: &str,
    pod_name: &str,
    interval: &str,
    api_down: bool,
) -> Option<Cluster> {
    if !is_root() && skip("needs root") {
        return None;
    }
    let container_id = fake_container_id(seed);
    let uid = fake_pod_uid(&container_id);
    let api = FakeApiServer::start();
    api.apply(pod(
        namespace,
        pod_name,
        &uid,
        NODE,
        &[("app", &format!("containerd://{container_id}"))],
        &[("k8s-app", "demo")],
        "Running",
    ));
    // A pod on another node must never label anything here.
    api.apply(pod(
        "default",
        "elsewhere",
        "",
        "node-b",
        &[(
            "x",
            &format!("containerd://{}", fake_container_id(seed + 1)),
        )],
        &[],
        "Running",
    ));
    api.set_down(api_down);
    let cgroup = PodCgroup::create(&uid, &container_id);
    let dir = TempDir::new("swoll-kube");
    let kubeconfig = api.kubeconfig(&dir.0);
    // --histogram: the dashboard's latency heatmap reads the histograms.
    let agent = Agent::start_with_env(
        &["--interval", interval, "--node-name", NODE, "--histogram"],
        &[("KUBECONFIG", kubeconfig.as_path())],
    )?;
    Some(Cluster {
        api,
        cgroup,
        agent,
        container_id,
        _dir: dir,
    })
}

/// (syscall, err, class, group) of the calls the workloads make.
type Call = (&'static str, &'static str, &'static str, &'static str);
const OPENAT_ENOENT: Call = ("sys_openat", "ENOENT", "FileSystem", "Files");
const GETPPID_OK: Call = ("sys_getppid", "OK", "ProcessManagement", "Process");

/// The series name and labels of `call` from workload `[namespace, pod, container]` in `kns`.
fn series(family: &str, call: Call, workload: [&str; 3], kns: u32) -> String {
    let (syscall, err, class, group) = call;
    let [ns, pod, ctr] = workload;
    format!(
        "swoll_node_metrics_syscall_{family}{{syscall=\"{syscall}\",err=\"{err}\",class=\"{class}\",group=\"{group}\",\
         namespace=\"{ns}\",pod=\"{pod}\",container=\"{ctr}\",kns=\"{kns}\"}}"
    )
}

#[test]
fn exact_counts_carry_namespace_pod_and_container() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(c) = cluster(1, "kube-system", "coredns-7jhhg", "500ms", false) else {
        return;
    };
    let dir = c.cgroup.dir.to_string_lossy().into_owned();
    let ns = workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--cgroup",
            &dir,
            "openat-missing",
            "13",
            "getppid",
            "17",
        ],
    );
    let openat = series(
        "count",
        OPENAT_ENOENT,
        ["kube-system", "coredns-7jhhg", "app"],
        ns,
    );
    let getppid = series(
        "count",
        GETPPID_OK,
        ["kube-system", "coredns-7jhhg", "app"],
        ns,
    );
    expect_sample(c.agent.addr, &openat, 13, 20);
    let body = expect_sample(c.agent.addr, &getppid, 17, 20);
    assert!(!body.contains("pod=\"elsewhere\""));
    assert!(
        c.api.requests() < 50,
        "the agent hammered the API server: {} requests",
        c.api.requests()
    );
}

#[test]
fn a_container_that_exited_before_the_first_read_is_labelled() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(c) = cluster(2, "team-a", "batch-1", "3s", false) else {
        return;
    };
    let dir = c.cgroup.dir.to_string_lossy().into_owned();
    // The workload is gone within milliseconds; the first map read is up to 3 s later.
    let ns = workload(WORKLOAD, &["--new-pidns", "--cgroup", &dir, "getppid", "5"]);
    let getppid = series("count", GETPPID_OK, ["team-a", "batch-1", "app"], ns);
    expect_sample(c.agent.addr, &getppid, 5, 20);
}

#[test]
fn a_deleted_pods_series_leave_after_the_grace_period() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(mut c) = cluster(3, "team-b", "web-0", "500ms", false) else {
        return;
    };
    let dir = c.cgroup.dir.to_string_lossy().into_owned();
    let ns = workload(WORKLOAD, &["--new-pidns", "--cgroup", &dir, "getppid", "9"]);
    let getppid = series("count", GETPPID_OK, ["team-b", "web-0", "app"], ns);
    expect_sample(c.agent.addr, &getppid, 9, 20);
    // kubelet kills the pod: its processes are gone (already) and its cgroups removed.
    c.api.delete("Pod", "team-b", "web-0");
    c.cgroup.remove();
    let deadline = Instant::now() + Duration::from_secs(20);
    let kns = format!("kns=\"{ns}\"");
    loop {
        let (_, body) = http_get(c.agent.addr, "/metrics").expect("metrics");
        if !body.contains(&kns) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series of pid-ns {ns} still exported 20 s after the pod went:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn labels_catch_up_when_the_api_server_comes_back() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(c) = cluster(4, "team-c", "api-0", "500ms", true) else {
        return;
    };
    let dir = c.cgroup.dir.to_string_lossy().into_owned();
    let ns = workload(
        WORKLOAD,
        &["--new-pidns", "--cgroup", &dir, "getppid", "21"],
    );
    // While the API server is down: counted, labelled by container short id only.
    let short = &c.container_id[..12];
    let unlabelled = series("count", GETPPID_OK, ["", "", short], ns);
    expect_sample(c.agent.addr, &unlabelled, 21, 20);
    // The workload has exited; its container (cgroup) lives on. An outage of several read
    // intervals must not retire the namespace before the labels can arrive.
    std::thread::sleep(std::time::Duration::from_secs(3));
    c.api.set_down(false);
    let labelled = series("count", GETPPID_OK, ["team-c", "api-0", "app"], ns);
    let body = expect_sample(c.agent.addr, &labelled, 21, 60);
    let errors = body
        .lines()
        .find_map(|l| l.strip_prefix("swoll_resolver_errors_total{kind=\"apiserver\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(
        errors.is_some_and(|e| e > 0),
        "resolver errors not counted:\n{body}"
    );
}

#[test]
fn seed_readme_queries_verbatim_against_prometheus() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(c) = cluster(5, "kube-system", "kube-proxy-27xrc", "1s", false) else {
        return;
    };
    let dir = c.cgroup.dir.to_string_lossy().into_owned();
    let ns = workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--cgroup",
            &dir,
            "openat-missing",
            "12",
            "getppid",
            "40",
        ],
    );
    let openat = series(
        "count",
        OPENAT_ENOENT,
        ["kube-system", "kube-proxy-27xrc", "app"],
        ns,
    );
    expect_sample(c.agent.addr, &openat, 12, 20);
    let Some(prometheus) = Prometheus::start(&[c.agent.addr]) else {
        return;
    };
    let by_err = "sort_desc(\n  sum(\n   swoll_node_metrics_syscall_count{\n    namespace=\"kube-system\"\n   }) by (err))";
    let result = prometheus.wait_for(by_err, 180, |r| r.len() == 2);
    assert_eq!(
        result[0].0.get("err").map(String::as_str),
        Some("OK"),
        "{result:?}"
    );
    assert!(result[0].1 >= 40.0, "{result:?}");
    assert_eq!(
        result[1].0.get("err").map(String::as_str),
        Some("ENOENT"),
        "{result:?}"
    );
    assert_eq!(result[1].1, 12.0, "{result:?}");
    let by_pod = "sort_desc(\n  sum(\n   swoll_node_metrics_syscall_count{\n    namespace=\"kube-system\",\n    \
                  syscall=\"sys_openat\"\n   }) by (namespace,pod))";
    let result = prometheus.query(by_pod);
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(
        result[0].0.get("pod").map(String::as_str),
        Some("kube-proxy-27xrc"),
        "{result:?}"
    );
    assert_eq!(
        result[0].0.get("namespace").map(String::as_str),
        Some("kube-system"),
        "{result:?}"
    );
    assert_eq!(result[0].1, 12.0, "{result:?}");

    // Every panel of the Grafana dashboard, with the kube-system namespace picked and "All" for
    // the other variables, finds data.
    let panels = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/queries.txt"
    ))
    .expect("reading deploy/grafana/queries.txt");
    for panel in panels.lines().filter(|l| !l.trim().is_empty()) {
        let promql = panel
            .replace("$namespace", "kube-system")
            .replace("$pod", ".*")
            .replace("$container", ".*")
            .replace("$class", ".*")
            .replace("$group", ".*");
        prometheus.wait_for(&promql, 60, |r| !r.is_empty());
    }
}
