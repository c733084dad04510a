//! End to end over HTTP: the real `swoll serve` binary, a workload, and `/metrics`.
use std::time::{Duration, Instant};

use swoll_kernel_tests::{Agent, expect_sample, http_get, is_root, sample, skip, workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

#[test]
fn metrics_carry_exact_counts_with_swolls_labels() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(agent) = Agent::start(&["--interval", "200ms"]) else {
        return;
    };
    let ns = workload(
        WORKLOAD,
        &["--new-pidns", "openat-missing", "13", "getppid", "17"],
    );
    let openat = format!(
        "swoll_node_metrics_syscall_count{{syscall=\"sys_openat\",err=\"ENOENT\",class=\"FileSystem\",\
         group=\"Files\",namespace=\"\",pod=\"\",container=\"\",kns=\"{ns}\"}}"
    );
    let getppid = format!(
        "swoll_node_metrics_syscall_count{{syscall=\"sys_getppid\",err=\"OK\",class=\"ProcessManagement\",\
         group=\"Process\",namespace=\"\",pod=\"\",container=\"\",kns=\"{ns}\"}}"
    );
    expect_sample(agent.addr, &openat, 13, 20);
    let body = expect_sample(agent.addr, &getppid, 17, 20);
    let time = openat.replace("syscall_count", "syscall_time");
    assert!(
        sample(&body, &time).is_some_and(|ns| ns > 0),
        "{time} in\n{body}"
    );
    assert!(body.contains("# TYPE swoll_node_metrics_syscall_count counter"));
    assert!(
        body.contains("swoll_map_capacity{map=\"SWOLL_METRICS\"} 65536"),
        "{body}"
    );
    assert!(body.contains("swoll_build_info{"));
    assert_eq!(http_get(agent.addr, "/healthz").expect("healthz").0, 200);
    let status = agent.stop();
    assert!(
        status.success(),
        "swoll serve exited with {status} on SIGTERM"
    );
}

#[test]
fn bpf_stats_export_the_probes_cost_per_syscall() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    // The chart's bpfStats value passes --bpf-stats and adds the capability it needs
    // (CAP_SYS_ADMIN, for BPF_ENABLE_STATS): the agent runs as that rendering says.
    let rendered = match swoll_kernel_tests::manifest::rendered_with(&["bpfStats=true"]) {
        Ok(d) => d,
        Err(why) => {
            skip(&why);
            return;
        }
    };
    assert!(
        rendered.args.iter().any(|a| a == "--bpf-stats"),
        "{rendered:?}"
    );
    assert!(
        rendered.capabilities().contains(&"sys_admin".to_owned()),
        "{rendered:?}"
    );
    let Some(agent) = Agent::start_as(&rendered, &["--interval", "200ms", "--bpf-stats"], &[])
    else {
        return;
    };
    workload(WORKLOAD, &["--new-pidns", "getppid", "20000"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http_get(agent.addr, "/metrics").expect("GET /metrics");
        let ns = body
            .lines()
            .find_map(|l| l.strip_prefix("swoll_probe_run_time_ns_per_syscall "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if ns.is_some_and(|ns| ns > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no probe run time per syscall:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success());
}

/// With the DaemonSet's default privileges (no CAP_SYS_ADMIN), `--bpf-stats` is refused at
/// start, before anything is loaded, with an error that names the capability.
#[test]
fn bpf_stats_without_cap_sys_admin_is_refused_naming_it() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some((mut cmd, _root)) = swoll_kernel_tests::deployed_command(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-traces",
            "--bpf-stats",
        ],
        &[],
    ) else {
        return;
    };
    let out = cmd.output().expect("running swoll serve --bpf-stats");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--bpf-stats needs CAP_SYS_ADMIN"),
        "{stderr}"
    );
    assert!(!stderr.contains("probes attached"), "{stderr}");
}
