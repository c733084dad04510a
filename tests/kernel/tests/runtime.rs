//! A real container runtime: workloads in podman (runc) containers under kubelet-named pod
//! cgroups, and the agent itself in a podman container with the shipped DaemonSet's
//! securityContext, volumes and args, watching a fake API server that reports those containers
//! by the ids podman gave them. The counts on the containerized agent's `/metrics` are exact
//! and carry the pods' labels, also across a SIGKILL of the agent's container and a new one on
//! the same pins. Images are built here from local files (see `swoll_kernel_tests::runtime`);
//! nothing is pulled.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::MapData;
use swoll_kernel_tests::{
    BpfFs, PinnedCounts, TempDir,
    apiserver::{FakeApiServer, pod},
    expect_counted, fake_container_id, fake_pod_uid, http_get, own_pid_ns,
    runtime::{self, AgentContainer, Driver, PodParent, failing_opens_script, run_workload},
    sample,
};
use swoll_maps_schema::metrics;

const NODE: &str = "node-a";

/// The series of the failed `openat` calls of container `[namespace, pod, container]` in pid
/// namespace `kns`, as the DaemonSet's `--labels` name them.
fn openat_enoent(workload: [&str; 3], kns: u32) -> String {
    let [ns, pod, ctr] = workload;
    format!(
        "swoll_node_metrics_syscall_count{{syscall=\"sys_openat\",err=\"ENOENT\",class=\"FileSystem\",\
         group=\"Files\",namespace=\"{ns}\",pod=\"{pod}\",container=\"{ctr}\",kns=\"{kns}\"}}"
    )
}

/// A fresh pod UID.
fn pod_uid(seed: u64) -> String {
    fake_pod_uid(&fake_container_id(seed))
}

/// The agent's container runs with exactly the DaemonSet's privileges (those this machine can
/// grant), in a pid namespace of its own.
fn assert_deployed_privileges(agent: &AgentContainer) {
    let pid = agent.container.pid().to_string();
    swoll_kernel_tests::caps::assert_deployed(&pid, swoll_kernel_tests::manifest::daemonset());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(status.contains("Seccomp:\t0"), "{status}");
    assert_ne!(
        agent.container.pid_ns(),
        own_pid_ns(),
        "the agent's container shares the host's pid namespace"
    );
}

/// What both tests start from: podman with both images built, a bpffs for the agent's pins and
/// a fake API server with a kubeconfig for it.
struct Stage {
    podman: &'static runtime::Podman,
    bpffs: BpfFs,
    api: FakeApiServer,
    kubeconfig: std::path::PathBuf,
    started: Instant,
    _dir: TempDir,
}

impl Stage {
    fn set() -> Option<Stage> {
        let podman = runtime::podman()?;
        let started = Instant::now();
        // Built before any agent runs, so their time is not in the waits of the tests.
        podman.workload_image();
        podman.agent_image();
        let bpffs = BpfFs::mount()?;
        let api = FakeApiServer::start();
        let dir = TempDir::new("swoll-runtime");
        let kubeconfig = api.kubeconfig(&dir.0);
        Some(Stage {
            podman,
            bpffs,
            api,
            kubeconfig,
            started,
            _dir: dir,
        })
    }
}

#[test]
fn containers_in_kubelet_pod_cgroups_are_counted_exactly_under_their_pods_by_a_containerized_agent()
{
    let _serial = swoll_kernel_tests::exclusive();
    let Some(Stage {
        podman,
        bpffs,
        api,
        kubeconfig,
        started,
        _dir,
    }) = Stage::set()
    else {
        return;
    };
    // Pod cgroups first: dropped after the containers in them.
    let (web_uid, report_uid) = (pod_uid(1), pod_uid(2));
    let web = PodParent::new(Driver::Cgroupfs, "burstable", &web_uid);
    // A Guaranteed pod's cgroup sits right under kubepods (no QoS level).
    let report = PodParent::new(Driver::Cgroupfs, "", &report_uid);
    let agent = AgentContainer::start(podman, &bpffs, &kubeconfig, NODE);
    assert_deployed_privileges(&agent);
    eprintln!("agent ready in its container after {:?}", started.elapsed());
    // Two containers of a Burstable pod and one of a Guaranteed pod, named as kubelet's cgroupfs
    // driver names them, each making a known number of calls. (The systemd driver's
    // `….slice` names cannot be had here: podman's cgroupfs manager refuses a `.slice` parent,
    // and the sandbox runs no systemd for its systemd manager.)
    let app = run_workload(podman, "web/app", &web, &failing_opens_script(13, None));
    let sidecar = run_workload(podman, "web/sidecar", &web, &failing_opens_script(17, None));
    let worker = run_workload(
        podman,
        "report/worker",
        &report,
        &failing_opens_script(21, None),
    );
    // Kubelet reports each container as `<runtime>://<id>`; the agent compares the id alone.
    api.apply(pod(
        "shop",
        "web-5d8f7c9b4-x2x7q",
        &web_uid,
        NODE,
        &[
            ("app", &format!("containerd://{}", app.id)),
            ("sidecar", &format!("containerd://{}", sidecar.id)),
        ],
        &[("app", "web")],
        "Running",
    ));
    api.apply(pod(
        "batch",
        "report-28731",
        &report_uid,
        NODE,
        &[("worker", &format!("cri-o://{}", worker.id))],
        &[],
        "Running",
    ));
    for (container, labels, calls) in [
        (&app, ["shop", "web-5d8f7c9b4-x2x7q", "app"], 13),
        (&sidecar, ["shop", "web-5d8f7c9b4-x2x7q", "sidecar"], 17),
        (&worker, ["batch", "report-28731", "worker"], 21),
    ] {
        let series = openat_enoent(labels, container.pid_ns());
        expect_counted(agent.addr, &series, calls, 20);
    }
    eprintln!("counted and labelled after {:?}", started.elapsed());
}

/// The count of (ns, openat, ENOENT) in the counters pinned in `set`, summed over CPUs.
fn pinned_openat_enoent(set: &Path, ns: u32) -> u64 {
    PinnedCounts::open(set).count(ns, libc::SYS_openat, libc::ENOENT)
}

/// The kernel's id of the metrics map pinned in `set`: a new map is a new id.
fn pinned_map_id(set: &Path) -> u32 {
    MapData::from_pin(set.join(metrics::MAP))
        .expect("opening the pinned metrics map")
        .info()
        .expect("the pinned map's info")
        .id()
}

#[test]
fn the_agents_container_killed_and_run_again_on_its_pins_continues_the_counts_exactly() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(Stage {
        podman,
        bpffs,
        api,
        kubeconfig,
        started,
        _dir,
    }) = Stage::set()
    else {
        return;
    };
    let uid = pod_uid(3);
    let parent = PodParent::new(Driver::Cgroupfs, "burstable", &uid);
    let first = AgentContainer::start(podman, &bpffs, &kubeconfig, NODE);
    let sets = bpffs.sets();
    assert_eq!(sets.len(), 1, "pin sets: {sets:?}");
    let set = bpffs.pin_path().join(&sets[0]);
    let map_id = pinned_map_id(&set);
    // 300 failed opens 10 ms apart (plus a fork for each sleep): three seconds or more of
    // calls, over the kill and the new container; then the container stays for the last read.
    const CALLS: u64 = 300;
    let work = run_workload(
        podman,
        "ingest/app",
        &parent,
        &failing_opens_script(CALLS, Some("0.01")),
    );
    api.apply(pod(
        "ingest",
        "ingest-0",
        &uid,
        NODE,
        &[("app", &format!("containerd://{}", work.id))],
        &[],
        "Running",
    ));
    let ns = work.pid_ns();
    let series = openat_enoent(["ingest", "ingest-0", "app"], ns);
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while last == 0 {
        let (_, body) = http_get(first.addr, "/metrics").expect("GET /metrics");
        last = sample(&body, &series).unwrap_or(0);
        assert!(Instant::now() < deadline, "no {series} in\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(last < CALLS, "the workload ended before the kill: {last}");
    first.container.kill();
    drop(first);
    let down_at = Instant::now();
    // While no agent runs, the pinned programs go on counting into the pinned map.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pinned_openat_enoent(&set, ns) <= last {
        assert!(
            Instant::now() < deadline,
            "nothing counted while no agent ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = AgentContainer::start(podman, &bpffs, &kubeconfig, NODE);
    eprintln!(
        "a new agent container ready {:?} after the kill",
        down_at.elapsed()
    );
    assert_eq!(
        (bpffs.sets(), pinned_map_id(&set)),
        (sets, map_id),
        "the new agent did not take over the pinned probes (a new set or a new map):\n{}",
        second.container.logs()
    );
    // Labelled from its first read on (a ready agent has waited for its first list of the
    // pods), never backwards, and exact in the end (within the sys_exit runs the kernel
    // skipped, on kernels that skip them: see `expect_counted`).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(second.addr, "/metrics").expect("GET /metrics");
        let kns = format!("kns=\"{ns}\"");
        let Some(now) = sample(&body, &series) else {
            panic!(
                "the ready agent serves the namespace without its pod's labels: {}",
                body.lines()
                    .find(|l| l.contains("\"sys_openat\",err=\"ENOENT\"") && l.contains(&kns))
                    .unwrap_or("no series")
            );
        };
        assert!(
            now >= last,
            "{series} went back from {last} to {now}:\n{}\n{}",
            body.lines()
                .filter(|l| l.contains(&kns))
                .collect::<Vec<_>>()
                .join("\n"),
            second.container.logs()
        );
        last = now;
        if now == CALLS || Instant::now() >= deadline {
            expect_counted(second.addr, &series, CALLS, 1);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("exact across the restart after {:?}", started.elapsed());
}
