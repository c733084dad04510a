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

/// The `(namespace, pod, container)` labels of every `syscall_count` series of pid-ns `kns` in
/// a `/metrics` body.
fn workloads_of(body: &str, kns: u32) -> std::collections::BTreeSet<[String; 3]> {
    let label = |line: &str, name: &str| {
        let start = line
            .find(&format!(",{name}=\""))
            .map(|i| i + name.len() + 3)?;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_owned())
    };
    let kns = format!("kns=\"{kns}\"");
    body.lines()
        .filter(|l| l.starts_with("swoll_node_metrics_syscall_count{") && l.contains(&kns))
        .filter_map(|l| {
            Some([
                label(l, "namespace")?,
                label(l, "pod")?,
                label(l, "container")?,
            ])
        })
        .collect()
}

/// Kills a held workload when the test ends, however it ends.
struct Held(std::process::Child);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn containers_sharing_a_pods_pid_namespace_keep_the_pods_labels() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let (app_id, sidecar_id) = (fake_container_id(11), fake_container_id(12));
    let uid = fake_pod_uid(&app_id);
    let api = FakeApiServer::start();
    let mut shared = pod(
        "team-s",
        "web-0",
        &uid,
        NODE,
        &[
            ("app", &format!("containerd://{app_id}")),
            ("sidecar", &format!("containerd://{sidecar_id}")),
        ],
        &[("app", "web")],
        "Running",
    );
    shared["spec"]["shareProcessNamespace"] = serde_json::json!(true);
    api.apply(shared);
    // Two containers' cgroups under the one pod cgroup; the sidecar's is dropped first.
    let app = PodCgroup::create(&uid, &app_id);
    let sidecar = PodCgroup::create(&uid, &sidecar_id);
    let dir = TempDir::new("swoll-shared");
    let kubeconfig = api.kubeconfig(&dir.0);
    let Some(agent) = Agent::start_with_env(
        &["--interval", "500ms", "--node-name", NODE],
        &[("KUBECONFIG", kubeconfig.as_path())],
    ) else {
        return;
    };
    let (app_dir, sidecar_dir) = (
        app.dir.to_string_lossy().into_owned(),
        sidecar.dir.to_string_lossy().into_owned(),
    );
    // The app container starts the namespace and holds it; each later process joins it from
    // its own container's cgroup and makes calls that are new keys in the namespace, so the
    // probes' record of who was seen there moves from one container to the other and back.
    let (first, ns) = swoll_kernel_tests::spawn_workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--cgroup",
            &app_dir,
            "--hold",
            "30000",
            "getppid",
            "10",
        ],
    );
    let first = Held(first);
    let join = format!("/proc/{}/ns/pid_for_children", first.0.id());
    let mut seen = std::collections::BTreeSet::new();
    let mut watch = |secs: f64| {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            let (_, body) = http_get(agent.addr, "/metrics").expect("metrics");
            seen.extend(workloads_of(&body, ns));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    watch(1.5);
    let steps: [(&str, &[&str]); 2] = [
        (&sidecar_dir, &["getppid", "7", "openat-missing", "3"]),
        (&app_dir, &["getppid", "5", "sigusr1", "2"]),
    ];
    for (cgroup, ops) in steps {
        let mut args = vec!["--join-pidns", &join, "--cgroup", cgroup];
        args.extend_from_slice(ops);
        assert_eq!(workload(WORKLOAD, &args), ns, "joined another namespace");
        watch(1.5);
    }
    let labels = ["team-s", "web-0", ""];
    let getppid = series("count", GETPPID_OK, labels, ns);
    let openat = series("count", OPENAT_ENOENT, labels, ns);
    expect_sample(agent.addr, &getppid, 10 + 7 + 5, 20);
    expect_sample(agent.addr, &openat, 3, 20);
    // Several more reads: the labels stay.
    watch(2.5);
    let want: std::collections::BTreeSet<[String; 3]> =
        std::iter::once(labels.map(str::to_owned)).collect();
    assert_eq!(seen, want, "labels of pid-ns {ns} over every read");
    drop(first);
    drop(sidecar);
    drop(app);
}

#[test]
fn a_pid_namespace_number_reused_by_another_pod_is_relabelled() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let (first_id, second_id) = (fake_container_id(21), fake_container_id(22));
    let (first_uid, second_uid) = (fake_pod_uid(&first_id), fake_pod_uid(&second_id));
    let api = FakeApiServer::start();
    for (name, uid, id) in [
        ("first-0", &first_uid, &first_id),
        ("second-0", &second_uid, &second_id),
    ] {
        api.apply(pod(
            "team-r",
            name,
            uid,
            NODE,
            &[("app", &format!("containerd://{id}"))],
            &[],
            "Running",
        ));
    }
    let first = PodCgroup::create(&first_uid, &first_id);
    let second = PodCgroup::create(&second_uid, &second_id);
    let dir = TempDir::new("swoll-reuse");
    let kubeconfig = api.kubeconfig(&dir.0);
    let Some(agent) = Agent::start_with_env(
        &["--interval", "500ms", "--node-name", NODE],
        &[("KUBECONFIG", kubeconfig.as_path())],
    ) else {
        return;
    };
    let (first_dir, second_dir) = (
        first.dir.to_string_lossy().into_owned(),
        second.dir.to_string_lossy().into_owned(),
    );
    // The kernel gives a freed pid namespace's number to the next new namespace when no other
    // was made or freed in between; other processes of the host may, so try a few times.
    for tries in 1..=20 {
        let ns = workload(
            WORKLOAD,
            &[
                "--new-pidns",
                "--cgroup",
                &first_dir,
                "--hold",
                "300",
                "getppid",
                "3",
            ],
        );
        expect_sample(
            agent.addr,
            &series("count", GETPPID_OK, ["team-r", "first-0", "app"], ns),
            3,
            20,
        );
        let (held, again) = swoll_kernel_tests::spawn_workload(
            WORKLOAD,
            &[
                "--new-pidns",
                "--cgroup",
                &second_dir,
                "--hold",
                "3000",
                "openat-missing",
                "2",
            ],
        );
        let _held = Held(held);
        if again != ns {
            continue;
        }
        eprintln!("pid-ns {ns} reused by another pod after {tries} tries");
        // The same kernel key now counts for the second pod: its series carry its labels.
        let openat = series("count", OPENAT_ENOENT, ["team-r", "second-0", "app"], ns);
        let body = expect_sample(agent.addr, &openat, 2, 20);
        assert!(
            !workloads_of(&body, ns).contains(&["team-r", "first-0", "app"].map(str::to_owned)),
            "the first pod's labels stayed on pid-ns {ns}:\n{body}"
        );
        return;
    }
    skip("the kernel never reused a pid namespace number in 20 tries");
}
