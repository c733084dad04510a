//! Namespace slots (see `swoll_maps_schema::slots`): the pid namespaces beyond the slots are
//! counted in the metrics hash, exactly, and counted as such; a retired namespace's slot is
//! given back and reused. Kernels without `bpf_get_current_task_btf` (5.10) have no slots:
//! everything is counted in the hash, which the exactness assertions check all the same.
use std::time::{Duration, Instant};

use swoll_kernel_tests::{
    Agent, PodCgroup, assert_counted, exit_misses, expect_counted, http_get, is_root, load,
    options, sample, skip, spawn_workload, value, workload,
};
use swoll_maps_schema::stats::Stat;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

#[test]
fn namespaces_beyond_the_slots_are_counted_in_the_hash_exactly() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let mut opts = options();
    opts.ns_slots = 1;
    opts.count_host = false;
    let Some(probes) = load(&opts) else {
        return;
    };
    let misses = exit_misses(&probes);
    let full_before = probes.maps.read().stat(Stat::NsSlotsFull);
    let (a, b) = (1000, 500);
    // The first namespace lives on while the second runs: a namespace that ended could hand
    // its inode number to the next.
    let (mut hold, ns_a) = spawn_workload(
        WORKLOAD,
        &["--new-pidns", "--hold", "60000", "getppid", &a.to_string()],
    );
    // Its calls are made after it names its namespace: wait for them (or for the deadline,
    // and then the assertion below says what was counted).
    let deadline = Instant::now() + Duration::from_secs(20);
    while value(&probes, ns_a, libc::SYS_getppid, 0).count < a && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ns_b = workload(WORKLOAD, &["--new-pidns", "getppid", &b.to_string()]);
    assert_ne!(ns_a, ns_b);
    assert_counted(&probes, ns_a, libc::SYS_getppid, 0, a, misses);
    assert_counted(&probes, ns_b, libc::SYS_getppid, 0, b, misses);
    hold.kill().expect("killing the first workload");
    hold.wait().expect("reaping the first workload");
    let snapshot = probes.maps.read();
    let full = snapshot.stat(Stat::NsSlotsFull) - full_before;
    if snapshot.slots == 0 {
        eprintln!("no namespace slots on this kernel: everything went to the hash");
        assert_eq!(full, 0);
        return;
    }
    assert_eq!(snapshot.slots, 1);
    // The first namespace took the only slot; the second found none, and every one of its calls
    // (and its exits to the workload's parent) went to the hash, counted.
    assert!(
        full >= b,
        "{full} calls counted as finding no slot, want ≥ {b}"
    );
}

#[test]
fn a_retired_namespaces_slot_is_given_back_and_reused() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(agent) = Agent::start(&["--ns-slots", "1", "--interval", "200ms", "--no-host"]) else {
        return;
    };
    let metrics = || http_get(agent.addr, "/metrics").expect("GET /metrics").1;
    let used = |body: &str| sample(body, "swoll_map_entries{map=\"SWOLL_COUNTS\"}");
    let full = |body: &str| sample(body, "swoll_ns_slots_full_calls_total").unwrap_or(0);
    let series = |ns: u32, container: &str| {
        format!(
            "swoll_node_metrics_syscall_count{{syscall=\"sys_getppid\",err=\"OK\",\
             class=\"ProcessManagement\",group=\"Process\",namespace=\"\",pod=\"\",\
             container=\"{container}\",kns=\"{ns}\"}}"
        )
    };
    // In a container's cgroup, removed once it exited: then nothing of the namespace is left
    // (a namespace whose cgroup lives on may get a process again, and is kept; one that is no
    // container's is never retired).
    let container = "5107".repeat(16);
    let mut cgroup = PodCgroup::create("5107a0e1-0000-4000-8000-000000005107", &container);
    let dir = cgroup.dir.to_string_lossy().into_owned();
    let ns_a = workload(
        WORKLOAD,
        &["--new-pidns", "--cgroup", &dir, "getppid", "300"],
    );
    let (_, body) = expect_counted(agent.addr, &series(ns_a, &container[..12]), 300, 20);
    if used(&body).is_none() {
        eprintln!("no namespace slots on this kernel: nothing to give back");
        return;
    }
    cgroup.remove();
    // The workload has exited and its cgroup is gone: its namespace is retired and its slot
    // freed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = metrics();
        if used(&body) == Some(0) && !body.contains(&format!("kns=\"{ns_a}\"")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot of {ns_a} was not given back:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let full_before = full(&metrics());
    let (mut b, ns_b) = spawn_workload(
        WORKLOAD,
        &["--new-pidns", "--hold", "60000", "getppid", "400"],
    );
    let (_, body) = expect_counted(agent.addr, &series(ns_b, ""), 400, 20);
    assert_eq!(used(&body), Some(1), "the freed slot is reused:\n{body}");
    assert_eq!(full(&body), full_before, "no call found the slots full");
    b.kill().expect("killing the workload");
    b.wait().expect("reaping the workload");
}
