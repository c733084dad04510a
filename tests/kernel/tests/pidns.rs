//! Pid namespaces: each is its own key, and `--no-host` leaves the host's out.
use swoll_kernel_tests::{
    is_root, load, options, own_pid_ns, skip, spawn_workload, value, workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

#[test]
fn two_namespaces_are_two_keys() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(probes) = load(&options()) else {
        return;
    };
    // Both alive at once: a freed pid namespace's inode number is reused at once on some
    // kernels, so two namespaces one after the other may well carry the same number.
    let (mut first, a) = spawn_workload(
        WORKLOAD,
        &["--new-pidns", "--hold", "2000", "getppid", "11"],
    );
    let (mut second, b) = spawn_workload(
        WORKLOAD,
        &["--new-pidns", "--hold", "2000", "getppid", "22"],
    );
    assert!(first.wait().expect("workload").success());
    assert!(second.wait().expect("workload").success());
    assert_ne!(a, b);
    assert_eq!(value(&probes, a, libc::SYS_getppid, 0).count, 11);
    assert_eq!(value(&probes, b, libc::SYS_getppid, 0).count, 22);
}

#[test]
fn host_processes_are_counted_unless_no_host() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let host = own_pid_ns();
    let Some(with_host) = load(&options()) else {
        return;
    };
    let mut opts = options();
    opts.count_host = false;
    let Some(no_host) = load(&opts) else { return };

    let ran_in = workload(WORKLOAD, &["getppid", "5"]);
    assert_eq!(
        ran_in, host,
        "the plain workload runs in the host pid namespace"
    );
    let container = workload(WORKLOAD, &["--new-pidns", "getppid", "7"]);

    assert!(value(&with_host, host, libc::SYS_getppid, 0).count >= 5);
    let mut snapshot = no_host.maps.read();
    snapshot.merge_slot_rows();
    let host_keys: Vec<_> = snapshot.rows.keys().filter(|k| k.pid_ns == host).collect();
    assert!(
        host_keys.is_empty(),
        "--no-host counted host keys: {host_keys:?}"
    );
    assert_eq!(value(&no_host, container, libc::SYS_getppid, 0).count, 7);
}

#[test]
fn the_agent_leaves_itself_out_unless_asked() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let mut opts = options();
    opts.count_host = true;
    let Some(probes) = load(&opts) else { return };
    // The test process itself (the "agent" here) calls getppid; a fresh load sees none of it.
    for _ in 0..1000 {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() };
    }
    let mut counting_self = options();
    counting_self.count_self = true;
    let Some(with_self) = load(&counting_self) else {
        return;
    };
    for _ in 0..1000 {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() };
    }
    let host = own_pid_ns();
    assert!(value(&with_self, host, libc::SYS_getppid, 0).count >= 1000);
    // Other host processes may call getppid too, but far fewer than 1000 times in this window.
    assert!(value(&probes, host, libc::SYS_getppid, 0).count < 1000);
}

#[test]
fn each_new_namespace_records_a_process_and_its_cgroup() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(probes) = load(&options()) else {
        return;
    };
    let ns = workload(WORKLOAD, &["--new-pidns", "getppid", "3"]);
    let seen = probes
        .maps
        .pid_ns_seen(ns)
        .expect("the namespace was recorded");
    assert_ne!(seen.tgid, 0);
    // The workload ran in the test's own cgroup (cgroup v2 id = inode of its directory).
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").expect("reading /proc/self/cgroup");
    if let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
        use std::os::unix::fs::MetadataExt as _;
        let dir = format!("/sys/fs/cgroup{path}");
        if let Ok(meta) = std::fs::metadata(&dir) {
            assert_eq!(seen.cgroup_id, meta.ino(), "cgroup id of {dir}");
        }
    }
}

/// The agent as deployed has a pid namespace of its own (`hostPID: false`), and the host's is
/// the kernel's initial one: `--no-host` leaves out what runs on the host, not what runs in the
/// agent's pod, and counts every other namespace.
#[test]
fn a_deployed_agent_tells_the_host_from_its_own_pod() {
    let _serial = swoll_kernel_tests::exclusive();
    let host = own_pid_ns();
    let Some(agent) = swoll_kernel_tests::Agent::start(&["--interval", "200ms", "--no-host"])
    else {
        return;
    };
    let agent_ns = swoll::host::pid_ns_inode(std::path::Path::new(&format!(
        "/proc/{}/ns/pid",
        agent.pid()
    )))
    .expect("the agent's pid namespace");
    assert_ne!(
        agent_ns, host,
        "the agent runs in a pid namespace of its own"
    );
    assert_eq!(workload(WORKLOAD, &["getppid", "5"]), host);
    let container = workload(WORKLOAD, &["--new-pidns", "getppid", "7"]);
    let series = format!(
        "swoll_node_metrics_syscall_count{{syscall=\"sys_getppid\",err=\"OK\",\
         class=\"ProcessManagement\",group=\"Process\",namespace=\"\",pod=\"\",container=\"\",\
         kns=\"{container}\"}}"
    );
    let (_, body) = swoll_kernel_tests::expect_counted(agent.addr, &series, 7, 20);
    let host_label = format!("kns=\"{host}\"");
    assert!(
        !body.lines().any(|l| l.contains(&host_label)),
        "--no-host exported the host's namespace {host}:\n{body}"
    );
}
