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

/// The agent's own metric `name{listener="metrics"}`, read with a fresh connection.
fn listener_metric(agent: &Agent, name: &str) -> u64 {
    let (code, body) = http_get(agent.addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    sample(&body, &format!("{name}{{listener=\"metrics\"}}"))
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

/// Whether the agent closed `stream`: what it had sent is read, then end of file or a reset,
/// within the read timeout.
fn closed_by_peer(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read as _;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// A connection to `addr` with a 4 KiB receive buffer, set before the handshake so the window
/// it advertises stays small: a client that never reads then stalls the agent's writes after a
/// few KiB instead of after the kernel's default buffers.
fn small_window_connect(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use std::os::fd::FromRawFd as _;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("the agent listens on IPv4 loopback")
    };
    // SAFETY: no pointers; the new socket is owned by the TcpStream made from it below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a socket just opened and owned by nothing else.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let size: libc::c_int = 4096;
    // SAFETY: fd is open; size lives across the call.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sin is a valid sockaddr_in for the call's duration.
    let connected = unsafe {
        libc::connect(
            fd,
            (&raw const sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
    stream
}

/// Beyond `--max-connections` a connection is closed as soon as it is accepted, and counted;
/// once the open ones close, the listener serves again.
#[test]
fn connections_beyond_the_cap_are_closed_and_counted() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(agent) = Agent::start(&["--interval", "200ms", "--max-connections", "8"]) else {
        return;
    };
    assert_eq!(
        listener_metric(&agent, "swoll_http_connections_rejected_total"),
        0
    );
    let idle: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(agent.addr).expect("connect"))
        .collect();
    // The agent accepts as fast as it can; 500 ms is ample for 8 on loopback.
    std::thread::sleep(Duration::from_millis(500));
    let mut ninth = std::net::TcpStream::connect(agent.addr).expect("connect");
    let started = Instant::now();
    assert!(closed_by_peer(&mut ninth), "the 9th connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(idle);
    // The 8 slots free as the agent sees the closes; a probe made before is rejected too.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rejected = loop {
        if let Ok((200, body)) = http_get(agent.addr, "/metrics") {
            break sample(
                &body,
                "swoll_http_connections_rejected_total{listener=\"metrics\"}",
            )
            .expect("the rejected counter");
        }
        assert!(Instant::now() < deadline, "the listener did not recover");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(rejected >= 1, "rejected {rejected}");
    assert!(agent.stop().success());
}

/// A child killed and reaped when dropped, a failed assertion included.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 500 clients that never read (450 send `GET /metrics`, 50 send nothing) while namespaces churn
/// so that every map read makes a new series table of 128 KiB of text or more: the agent's memory
/// stays bounded, `/healthz` answers within 2 s throughout, and after the write timeout the agent
/// has closed every one of them and holds no more fds than before. (On loopback the kernel's
/// send buffer, autotuned to a 64 KiB MSS, takes a body this size whole, so what stays pinned
/// here is socket memory until the timeout; a body larger than the send buffer would keep its
/// in-flight permit, at most 32 of them.)
#[test]
fn clients_that_never_read_pin_nothing_and_are_cut_off() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(agent) = Agent::start(&[
        "--interval",
        "2s",
        "--max-connections",
        "600",
        "--http-write-timeout",
        "5s",
    ]) else {
        return;
    };
    let churn = Reaped(
        std::process::Command::new(WORKLOAD)
            .args([
                "--spawn-pidns",
                "1000000",
                "getppid",
                "2",
                "openat-missing",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawning the namespace churn"),
    );
    // Tables of the churn's namespaces (each stays an interval after it dies): wait for a body
    // of more than 128 KiB, four times what hyper buffers of a response, scraping (and so
    // warming the allocator) as a Prometheus would. The churn's rate, and so the size, varies
    // with the machine's load.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body_len = loop {
        let (code, body) = http_get(agent.addr, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        if body.len() > 128 * 1024 {
            break body.len();
        }
        assert!(
            Instant::now() < deadline,
            "the churn made a body of only {} bytes",
            body.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
            .expect("the agent's fds")
            .count()
    };
    let fds_before = fds();
    let rss_before = agent.rss_kib();
    let probe = || {
        let started = Instant::now();
        let (code, _) = http_get(agent.addr, "/healthz").expect("GET /healthz");
        assert_eq!(code, 200);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
    };
    let mut stalled = Vec::new();
    for i in 0..500 {
        if i % 10 == 0 {
            // Sends nothing at all (slowloris without the headers).
            stalled.push(std::net::TcpStream::connect(agent.addr).expect("connect"));
        } else {
            use std::io::Write as _;
            let mut s = small_window_connect(agent.addr);
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("sending the request");
            stalled.push(s);
        }
        if i % 50 == 0 {
            probe();
        }
    }
    let opened = Instant::now();
    let mut rss_max = agent.rss_kib();
    // Requests beyond the in-flight cap wait up to 5 s (`IN_FLIGHT_WAIT`) for a permit the
    // stall timeout frees, then stall 5 s with it, or get a 503 and idle 5 s (the header
    // timeout): all are closed within 3 stalls of the last opened; 30 s is ample. Watched by
    // the agent's fds: a scrape would queue behind the stalled bodies' permits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fds() > fds_before + 2 {
        assert!(
            Instant::now() < deadline,
            "fds {} before {fds_before}",
            fds()
        );
        probe();
        rss_max = rss_max.max(agent.rss_kib());
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(churn);
    // 32 pinned tables of a body this size (the in-flight cap), plus a 64 KiB allowance per
    // connection (hyper's 32 KiB buffer, a task): some 40 MiB, well under the manifest's
    // 256 MiB limit, where 450 copies of the body alone would be 130 MB.
    let bound_kib = (32 * body_len as u64 + 500 * 65536) / 1024;
    assert!(
        rss_max < rss_before + bound_kib,
        "VmRSS {rss_max} KiB, {rss_before} KiB before the 500 (bound {bound_kib} KiB more; \
         a body of {body_len} bytes)"
    );
    let timed_out = listener_metric(&agent, "swoll_http_connections_timed_out_total");
    assert!(timed_out >= 50 + 32, "timed out: {timed_out}");
    let still_open = stalled
        .iter_mut()
        .map(closed_by_peer)
        .filter(|closed| !closed)
        .count();
    assert_eq!(still_open, 0, "connections the agent did not close");
    let open = listener_metric(&agent, "swoll_http_connections_open");
    assert!(open <= 1, "open: {open} (the scrape's own)");
    let shed = listener_metric(&agent, "swoll_http_requests_rejected_total");
    eprintln!(
        "VmRSS {rss_before} -> max {rss_max} KiB; body {body_len} bytes; timed out {timed_out}; \
         503: {shed}; all closed {:?} after the last opened",
        opened.elapsed()
    );
    assert!(agent.stop().success());
}
