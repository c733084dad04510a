//! Concurrency stress: twice as many threads as CPUs, in four pid namespaces, hammer syscalls
//! while the agent reads its maps and is scraped every 100 ms. Every scrape must be
//! consistent (counters never go back, a series never leaves and comes back while its
//! namespace lives) and the final counts exact.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use swoll_kernel_tests::{Agent, expect_sample, http_get, spawn_workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");
const GETPPID: u64 = 200_000;
const OPENAT: u64 = 20_000;

/// The `swoll_node_metrics_syscall_count` samples of the namespaces in `mine`.
fn samples(body: &str, mine: &BTreeSet<u32>) -> BTreeMap<String, u64> {
    body.lines()
        .filter(|l| l.starts_with("swoll_node_metrics_syscall_count{"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let kns: u32 = series
                .split("kns=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            mine.contains(&kns)
                .then(|| Some((series.to_owned(), value.parse().ok()?)))
                .flatten()
        })
        .collect()
}

#[test]
fn four_namespaces_hammered_while_scraped_every_100ms_count_exactly() {
    let _serial = swoll_kernel_tests::exclusive();
    if !swoll_kernel_tests::is_root() && swoll_kernel_tests::skip("needs root") {
        return;
    }
    let Some(agent) = Agent::start(&["--interval", "100ms"]) else {
        return;
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (2 * cpus).div_ceil(4).to_string();
    let mut children = Vec::new();
    let mut mine = BTreeSet::new();
    for _ in 0..4 {
        let (child, ns) = spawn_workload(
            WORKLOAD,
            &[
                "--new-pidns",
                "--threads",
                &threads,
                "--hold",
                "3000",
                "getppid",
                &GETPPID.to_string(),
                "openat-missing",
                &OPENAT.to_string(),
            ],
        );
        children.push(child);
        mine.insert(ns);
    }

    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    let mut scrapes = 0;
    let started = Instant::now();
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "workloads still running"
        );
        let (code, body) = http_get(agent.addr, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        let now = samples(&body, &mine);
        for (series, value) in &now {
            assert!(!gone.contains(series), "{series} left and came back");
            if let Some(before) = last.get(series) {
                assert!(value >= before, "{series} went from {before} to {value}");
            }
        }
        gone.extend(last.keys().filter(|s| !now.contains_key(*s)).cloned());
        last = now;
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    assert!(scrapes > 5, "only {scrapes} scrapes during the run");
    let threads: u64 = threads.parse().unwrap();
    let (_, body) = http_get(agent.addr, "/metrics").expect("GET /metrics");
    let misses: u64 = body
        .lines()
        .filter(|l| l.starts_with("swoll_probe_recursion_misses_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    if misses > 0 {
        eprintln!("skipping the exact check: the kernel skipped {misses} probe runs");
        return;
    }
    for ns in &mine {
        for (series, want) in [
            (
                format!(
                    "swoll_node_metrics_syscall_count{{syscall=\"sys_getppid\",err=\"OK\",class=\"ProcessManagement\",group=\"Process\",namespace=\"\",pod=\"\",container=\"\",kns=\"{ns}\"}}"
                ),
                threads * GETPPID,
            ),
            (
                format!(
                    "swoll_node_metrics_syscall_count{{syscall=\"sys_openat\",err=\"ENOENT\",class=\"FileSystem\",group=\"Files\",namespace=\"\",pod=\"\",container=\"\",kns=\"{ns}\"}}"
                ),
                threads * OPENAT,
            ),
        ] {
            expect_sample(agent.addr, &series, want, 10);
        }
    }
}
