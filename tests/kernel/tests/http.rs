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

/// The agent's own footprint, as the `process_*` series of the Prometheus client libraries,
/// read by the agent in its pod's `/proc` (its own pid namespace): the values must be the
/// agent's, not another process's.
#[test]
fn metrics_carry_the_agents_process_footprint() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64()
    };
    let before = now();
    let Some(agent) = Agent::start(&["--interval", "200ms"]) else {
        return;
    };
    let (code, body) = http_get(agent.addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let value = |name: &str| {
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    };
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} in\n{body}"
        );
    }
    let rss = value("process_resident_memory_bytes");
    assert!(rss > 1_048_576.0, "rss {rss}");
    // The agent's own VmRSS, read from outside: the same process, give or take a scrape.
    let vm_rss = agent.rss_kib() as f64 * 1024.0;
    assert!(
        rss > vm_rss / 2.0 && rss < vm_rss * 2.0,
        "rss {rss}, VmRSS {vm_rss}"
    );
    assert!(value("process_virtual_memory_bytes") >= rss);
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let open = value("process_open_fds");
    assert!(open > 3.0, "open fds {open}");
    assert!(value("process_max_fds") >= open);
    // Started by this test (the boot time has whole seconds, the start 1/CLK_TCK).
    let started = value("process_start_time_seconds");
    assert!(
        started > before - 2.0 && started <= now() && started > now() - 3600.0,
        "started {started}, test began {before}"
    );
    assert!(agent.stop().success());
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

/// The harness itself: a started agent holds exactly the manifest's capabilities (those this
/// machine can grant), runs with `no_new_privs` in a pid namespace of its own, on a read-only
/// root, with each volume mounted where and how the manifest says.
#[test]
fn the_agent_runs_with_the_manifests_privileges_and_mounts() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(agent) = Agent::start(&["--interval", "200ms"]) else {
        return;
    };
    let d = swoll_kernel_tests::manifest::daemonset();
    let pid = agent.pid().to_string();
    swoll_kernel_tests::caps::assert_deployed(&pid, d);
    let ns =
        |p: &str| swoll::host::pid_ns_inode(std::path::Path::new(&format!("/proc/{p}/ns/pid")));
    assert_ne!(ns(&pid).ok(), ns("self").ok(), "a pid namespace of its own");
    // Mount points and their options as the agent sees them (`/proc/<pid>/mountinfo` shows
    // them relative to its root).
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let options = |point: &str| -> Option<String> {
        mountinfo.lines().rev().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&point)).then(|| f[5].to_owned())
        })
    };
    let read_only = |point: &str| {
        options(point)
            .unwrap_or_else(|| panic!("{point} is not mounted:\n{mountinfo}"))
            .split(',')
            .any(|o| o == "ro")
    };
    assert_eq!(read_only("/"), d.read_only_root, "/ in\n{mountinfo}");
    for m in &d.mounts {
        let point = m.mount_path.to_str().expect("a UTF-8 path");
        assert_eq!(read_only(point), m.read_only, "{point} in\n{mountinfo}");
    }
    assert!(agent.stop().success());
}
