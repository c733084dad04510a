//! Restarts without a gap: the probes pinned under `--pin-path` keep counting while no agent
//! runs, a restarted agent with the same binary and options continues their counters exactly, a
//! changed option replaces the old pin set, SIGTERM keeps the pins and `--no-pin` makes none.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use swoll_kernel_tests::{
    Agent, BpfFs, PinnedCounts, expect_counted, http_get, is_root, runnable_swoll, sample, skip,
    spawn_workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

fn series(call: &str, class: &str, group: &str, ns: u32) -> String {
    format!(
        "swoll_node_metrics_syscall_count{{syscall=\"sys_{call}\",err=\"OK\",class=\"{class}\",\
         group=\"{group}\",namespace=\"\",pod=\"\",container=\"\",kns=\"{ns}\"}}"
    )
}

fn getppid(ns: u32) -> String {
    series("getppid", "ProcessManagement", "Process", ns)
}

/// The one pin set under the pin path.
fn only_set(fs: &BpfFs) -> std::path::PathBuf {
    let sets = fs.sets();
    assert_eq!(sets.len(), 1, "pin sets: {sets:?}");
    fs.pin_path().join(&sets[0])
}

/// Runs a workload of `calls` getppid in a fresh pid namespace, kept alive afterwards, and
/// waits until the programs pinned in `set` counted exactly that many (no agent needed).
fn getppid_counted_by_pins(set: &Path, calls: u64) -> (std::process::Child, u32) {
    let (work, ns) = spawn_workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--hold",
            "60000",
            "getppid",
            &calls.to_string(),
        ],
    );
    let pinned = PinnedCounts::open(set);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pinned.count(ns, libc::SYS_getppid, 0) != calls {
        assert!(
            Instant::now() < deadline,
            "the pinned set counted {} of {calls}",
            pinned.count(ns, libc::SYS_getppid, 0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (work, ns)
}

fn start(fs: &BpfFs, extra: &[&str]) -> Option<Agent> {
    let pin = fs.pin_path();
    let mut args = vec!["--interval", "200ms", "--pin-path"];
    args.push(pin.to_str().expect("a UTF-8 path"));
    args.extend_from_slice(extra);
    Agent::start(&args)
}

#[test]
fn a_killed_agent_restarted_continues_its_counters_exactly() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(fs) = BpfFs::mount() else { return };
    let Some(first) = start(&fs, &[]) else { return };
    let set = only_set(&fs);
    // 400 sleeps of 5 ms: two seconds or more of calls, over the kill and the restart; then
    // the namespace stays alive (one long sleep) for the final read.
    const CALLS: u64 = 400;
    let (mut work, ns) = spawn_workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--hold",
            "60000",
            "nanosleep-5ms",
            &CALLS.to_string(),
        ],
    );
    let nanosleep = series("nanosleep", "Time", "MiscellaneousTime", ns);
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while last == 0 {
        let (_, body) = http_get(first.addr, "/metrics").expect("GET /metrics");
        last = sample(&body, &nanosleep).unwrap_or(0);
        assert!(Instant::now() < deadline, "no {nanosleep} in\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(last < CALLS, "the workload ended before the kill: {last}");
    first.kill();
    let down_at = Instant::now();
    // While no agent runs, the pinned programs go on counting into the pinned map.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if PinnedCounts::open(&set).count(ns, libc::SYS_nanosleep, 0) > last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing counted while no agent ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(second) = start(&fs, &[]) else {
        return;
    };
    assert_eq!(
        only_set(&fs),
        set,
        "the restarted agent took over the same set"
    );
    eprintln!("restarted after {:?}", down_at.elapsed());
    // Never backwards, and exact in the end (on 7.x, within the sys_exit runs the kernel
    // skipped: see `expect_counted`).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(second.addr, "/metrics").expect("GET /metrics");
        let now = sample(&body, &nanosleep).unwrap_or(0);
        assert!(now >= last, "{nanosleep} went back from {last} to {now}");
        last = now;
        if now == CALLS {
            break;
        }
        if Instant::now() >= deadline {
            expect_counted(second.addr, &nanosleep, CALLS, 1);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = http_get(second.addr, "/metrics").expect("GET /metrics");
    // The kernel reports recursion misses from 5.12 on; probes taken over report them too.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let reports_misses = swoll::host::parse_release(release.trim()) >= Some((5, 12));
    assert_eq!(
        body.contains("swoll_probe_recursion_misses_total{program=\"sys_exit\"}"),
        reports_misses,
        "recursion misses of the probes taken over, on {release}:\n{body}"
    );
    let _ = work.kill();
    let _ = work.wait();
    assert!(second.stop().success());
}

#[test]
fn another_option_replaces_the_pinned_set_and_detaches_it() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(fs) = BpfFs::mount() else { return };
    let Some(first) = start(&fs, &["--map-size", "4096"]) else {
        return;
    };
    let old_set = only_set(&fs);
    let (mut a, ns_a) = spawn_workload(
        WORKLOAD,
        &["--new-pidns", "--hold", "60000", "getppid", "100"],
    );
    let (counted_a, _) = expect_counted(first.addr, &getppid(ns_a), 100, 20);
    // The test holds the old metrics map open: it outlives its pins and shows what the old
    // programs still count.
    let old_map = PinnedCounts::open(&old_set);
    let old_count = |ns| old_map.count(ns, libc::SYS_getppid, 0);
    assert_eq!(old_count(ns_a), counted_a);
    first.kill();

    let Some(second) = start(&fs, &["--map-size", "8192"]) else {
        return;
    };
    let new_set = only_set(&fs);
    assert_ne!(new_set, old_set, "a new map size is a new set");
    assert!(!old_set.exists(), "the old set is removed");
    let (mut b, ns_b) = spawn_workload(
        WORKLOAD,
        &["--new-pidns", "--hold", "60000", "getppid", "50"],
    );
    let (_, body) = expect_counted(second.addr, &getppid(ns_b), 50, 20);
    // New maps: what the old set counted is not carried over.
    assert_eq!(sample(&body, &getppid(ns_a)), None, "{body}");
    assert!(
        body.contains("swoll_map_capacity{map=\"SWOLL_METRICS\"} 8192"),
        "{body}"
    );
    // The old programs are detached: they counted nothing of the new workload.
    assert_eq!(old_count(ns_b), 0, "the old programs still count");
    assert_eq!(old_count(ns_a), counted_a);
    for w in [&mut a, &mut b] {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert!(second.stop().success());
}

#[test]
fn sigterm_keeps_the_pins_counting_and_no_pin_makes_none() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(swoll) = runnable_swoll() else {
        return;
    };
    let Some(fs) = BpfFs::mount() else { return };
    let Some(first) = start(&fs, &[]) else { return };
    let set = only_set(&fs);
    assert!(first.stop().success(), "SIGTERM is a clean exit");
    assert_eq!(only_set(&fs), set, "SIGTERM keeps the pins");

    // No agent runs: the pinned programs count on their own.
    let (mut work, ns) = getppid_counted_by_pins(&set, 77);
    let Some(second) = start(&fs, &[]) else {
        return;
    };
    expect_counted(second.addr, &getppid(ns), 77, 20);
    // SIGHUP reloads what there is to reload and leaves the agent and its counters alone.
    let pid = i32::try_from(second.pid()).expect("pid");
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    expect_counted(second.addr, &getppid(ns), 77, 20);
    assert!(second.stop().success());

    // --no-pin pins nothing and leaves the pins it finds alone.
    let Some(unpinned) = start(&fs, &["--no-pin"]) else {
        return;
    };
    assert!(unpinned.stop().success());
    assert_eq!(only_set(&fs), set);
    let elsewhere = fs.pin_path().with_file_name("other");
    let Some(unpinned) = Agent::start(&[
        "--no-pin",
        "--pin-path",
        elsewhere.to_str().expect("a UTF-8 path"),
    ]) else {
        return;
    };
    assert!(unpinned.stop().success());
    assert!(
        !elsewhere.exists(),
        "--no-pin created {}",
        elsewhere.display()
    );

    // `swoll unpin` removes the set, and the pin path it left empty. Run as plain root on the
    // host: it is what an operator runs on a node after uninstalling the agent.
    let out = std::process::Command::new(&swoll)
        .args(["unpin", "--pin-path"])
        .arg(fs.pin_path())
        .output()
        .expect("running swoll unpin");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("removed {}", set.display())),
        "{out:?}"
    );
    assert!(!fs.pin_path().exists());
    let _ = work.kill();
    let _ = work.wait();
}

/// An upgrade the kernel rejects leaves the old probes counting. The new `--map-size` needs
/// more memory than the pod may have: the DaemonSet's memory limit, which the kernel charges BPF
/// maps to since Linux 5.11, so creating the map fails with ENOMEM (4,000,000 entries take
/// over 300 MiB on one CPU: a per-CPU value of 16 bytes and an element of about 64). The old
/// pin set stays whole, its programs count on, the log names it, and an agent with the old
/// options takes it over.
#[test]
fn an_upgrade_the_kernel_rejects_leaves_the_old_probes_counting() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    if swoll::host::parse_release(release.trim()) < Some((5, 11)) {
        // Before 5.11 maps are charged to RLIMIT_MEMLOCK, which the DaemonSet's CAP_SYS_RESOURCE
        // lifts: no pod limit applies, and the big map would simply be made.
        eprintln!(
            "not applicable on {}: maps are not charged to memory cgroups",
            release.trim()
        );
        return;
    }
    let limit = swoll_kernel_tests::manifest::daemonset()
        .memory_limit
        .expect("the DaemonSet limits the pod's memory");
    assert!(
        limit < 300 << 20,
        "raise the map size below with the limit ({limit} bytes)"
    );
    let Some(fs) = BpfFs::mount() else { return };
    let Some(first) = start(&fs, &["--map-size", "4096"]) else {
        return;
    };
    if first.pod().memory_cgroup().is_none() && skip("no memory cgroup controller here") {
        return;
    }
    let set = only_set(&fs);
    first.kill();

    let pin = fs.pin_path();
    let pin = pin.to_str().expect("a UTF-8 path");
    let Some(out) = Agent::run_to_exit(&[
        "--interval",
        "200ms",
        "--pin-path",
        pin,
        "--map-size",
        "4000000",
    ]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Cannot allocate memory"), "{stderr}");
    let name = set.file_name().expect("a set name").to_string_lossy();
    assert!(
        stderr.contains("keep counting") && stderr.contains(&*name),
        "the log names the set that keeps counting:\n{stderr}"
    );
    assert_eq!(only_set(&fs), set, "the old set stays, and nothing else");

    // The old programs count on.
    let (mut work, ns) = getppid_counted_by_pins(&set, 100);
    let Some(again) = start(&fs, &["--map-size", "4096"]) else {
        return;
    };
    assert_eq!(only_set(&fs), set, "the old options take the old set over");
    expect_counted(again.addr, &getppid(ns), 100, 20);
    let _ = work.kill();
    let _ = work.wait();
    assert!(again.stop().success());
}

/// The ids of the metrics programs (`sys_enter`, `sys_exit`) loaded in the kernel now.
fn metrics_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| n == "sys_enter" || n == "sys_exit")
        })
        .map(|p| p.id())
        .collect()
}

/// A bare `swoll serve` (no `--pin-path`) pins nothing: when it exits, nothing of it stays
/// attached to cost the host's syscalls. Run as plain root on the host, not as deployed: this
/// is how a user runs it on a workstation (scripts/local.sh), and the DaemonSet always pins.
#[test]
fn a_bare_serve_leaves_nothing_attached() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(swoll) = runnable_swoll() else {
        return;
    };
    let before = metrics_programs();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut agent = std::process::Command::new(&swoll)
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--traces-listen", "127.0.0.1:0", "--interval", "200ms"])
        .spawn()
        .expect("spawning swoll serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(addr, "/readyz").is_ok_and(|(code, _)| code == 200) {
        assert!(Instant::now() < deadline, "swoll serve not ready in 30 s");
        assert!(
            agent.try_wait().expect("waiting").is_none(),
            "swoll serve exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let attached: Vec<u32> = metrics_programs()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(
        attached.len(),
        2,
        "sys_enter and sys_exit loaded: {attached:?}"
    );
    let pid = i32::try_from(agent.id()).expect("pid");
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(agent.wait().expect("reaping swoll serve").success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = metrics_programs()
            .into_iter()
            .filter(|id| attached.contains(id))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs {left:?} stayed loaded after swoll serve exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
