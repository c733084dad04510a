//! A real Prometheus (Debian's package) scrapes the real agent, and the seed README's queries
//! return the expected series through its HTTP API. Here, with no pods, they filter on `kns`,
//! the pid namespace inode; `resolver.rs` runs them verbatim (`namespace="kube-system"`) with
//! pods from a fake API server; the offset query below is verbatim.
use swoll_kernel_tests::{
    Agent, Prometheus, expect_sample, is_root, skip, spawn_workload, workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

#[test]
fn seed_readme_queries_by_errno_and_by_pod() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(agent) = Agent::start(&["--interval", "1s"]) else {
        return;
    };
    let ns = workload(
        WORKLOAD,
        &["--new-pidns", "openat-missing", "21", "getppid", "34"],
    );
    // Let the agent render a read made after the workload ended before Prometheus scrapes.
    let openat = format!(
        "swoll_node_metrics_syscall_count{{syscall=\"sys_openat\",err=\"ENOENT\",class=\"FileSystem\",\
         group=\"Files\",namespace=\"\",pod=\"\",container=\"\",kns=\"{ns}\"}}"
    );
    expect_sample(agent.addr, &openat, 21, 20);
    let Some(prometheus) = Prometheus::start(&[agent.addr]) else {
        return;
    };

    let by_err = format!(
        "sort_desc(\n  sum(\n   swoll_node_metrics_syscall_count{{\n    kns=\"{ns}\"\n   }}) by (err))"
    );
    let result = prometheus.wait_for(&by_err, 180, |r| r.len() == 2);
    // sort_desc: OK (34 getppid plus the child's return from fork) comes before ENOENT (21).
    assert_eq!(
        result[0].0.get("err").map(String::as_str),
        Some("OK"),
        "{result:?}"
    );
    assert!(result[0].1 >= 35.0, "{result:?}");
    assert_eq!(
        result[1].0.get("err").map(String::as_str),
        Some("ENOENT"),
        "{result:?}"
    );
    assert_eq!(result[1].1, 21.0, "{result:?}");

    let by_pod = format!(
        "sort_desc(\n  sum(\n   swoll_node_metrics_syscall_count{{\n    kns=\"{ns}\",\n    \
         syscall=\"sys_openat\"\n   }}) by (namespace,pod))"
    );
    let result = prometheus.query(&by_pod);
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0].1, 21.0, "{result:?}");
}

/// The third query compares error rates with those of five minutes before, so it needs more
/// than five minutes of scrapes: a steady workload runs for 5.5 minutes.
#[test]
fn seed_readme_offset_ratio_query() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(agent) = Agent::start(&["--interval", "1s"]) else {
        return;
    };
    let Some(prometheus) = Prometheus::start(&[agent.addr]) else {
        return;
    };
    let (mut child, ns) = spawn_workload(
        WORKLOAD,
        &["--new-pidns", "--repeat-for", "400", "openat-missing", "50"],
    );
    let ratio = "sort_desc(\n  avg by (container, pod, namespace, syscall) (\n   rate(\n    \
                 swoll_node_metrics_syscall_count { err != \"OK\" }[5m]\n    offset 5m\n   )) /\n  \
                 avg by (container, pod, namespace, syscall) (\n   rate(\n    \
                 swoll_node_metrics_syscall_count{ err != \"OK\" }[5m]\n   )\n  ))";
    let result = prometheus.wait_for(ratio, 420, |r| {
        r.iter().any(|(labels, v)| {
            labels.get("syscall").map(String::as_str) == Some("sys_openat")
                && v.is_finite()
                && *v > 0.0
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    let own = prometheus.query(&format!(
        "swoll_node_metrics_syscall_count{{kns=\"{ns}\",syscall=\"sys_openat\",err=\"ENOENT\"}}"
    ));
    assert_eq!(own.len(), 1, "the steady workload's series: {own:?}");
    assert!(!result.is_empty());
}
