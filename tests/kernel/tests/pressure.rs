//! Map pressure: a 256-entry metrics map and 16 namespace slots while 10,000 short-lived pid
//! namespaces come and go.
//! The LRU evicts all the time; the agent must stay up and bounded, report the evictions it
//! sees, never let an exported counter go backwards, and never count more calls than were made
//! (the base it carries across an eviction adds no call twice).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use swoll_kernel_tests::{Agent, http_get, sample, spawn_workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");
const MAP_SIZE: u64 = 256;
/// Namespace slots (`--ns-slots`): few, so the churn runs them out and gives them back all the
/// time too; the namespaces that find none are counted in the map.
const NS_SLOTS: u64 = 16;
/// Distinct successful syscalls a churn namespace makes, at most (its process makes a handful).
const OK_SYSCALLS_PER_NAMESPACE: u64 = 32;
const NAMESPACES: &str = "10000";
/// The long-lived namespace's rounds of `GETPPID_PER_ROUND` getppid calls, back to back. Even a
/// key used all the time is evicted now and then from a 256-entry map under this churn (the
/// kernel's LRU moves free entries in batches to per-CPU lists, and shrinks by force), so its
/// calls between the last read and the eviction are lost: the count is at most exact.
const ROUNDS: u64 = 600_000;
const GETPPID_PER_ROUND: u64 = 5;

/// Every sample of the two syscall counter families, by series.
fn counters(body: &str) -> HashMap<&str, u64> {
    body.lines()
        .filter(|l| {
            l.starts_with("swoll_node_metrics_syscall_count{")
                || l.starts_with("swoll_node_metrics_syscall_time{")
        })
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_small_map_under_10000_short_lived_namespaces_stays_bounded_and_monotonic() {
    let _serial = swoll_kernel_tests::exclusive();
    if !swoll_kernel_tests::is_root() && swoll_kernel_tests::skip("needs root") {
        return;
    }
    let size = MAP_SIZE.to_string();
    let slots = NS_SLOTS.to_string();
    let Some(agent) = Agent::start(&[
        "--map-size",
        &size,
        "--ns-slots",
        &slots,
        "--interval",
        "200ms",
        "--no-host",
    ]) else {
        return;
    };
    let metric = |body: &str, name: &str| {
        sample(body, name).unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
    };
    let rounds = ROUNDS.to_string();
    let per_round = GETPPID_PER_ROUND.to_string();
    let (mut steady, steady_ns) = spawn_workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--rounds",
            &rounds,
            "--pause",
            "0",
            "--hold",
            "60000",
            "getppid",
            &per_round,
        ],
    );
    let mut churn = std::process::Command::new(WORKLOAD)
        .args([
            "--spawn-pidns",
            NAMESPACES,
            "getppid",
            "2",
            "openat-missing",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning the namespace churn");
    let started = Instant::now();
    let rss_at_start = agent.rss_kib();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut scrapes = 0;
    let mut max_rss = rss_at_start;
    let mut churn_done = false;
    while !churn_done {
        churn_done = churn.try_wait().expect("waiting for the churn").is_some();
        let (code, body) = http_get(agent.addr, "/metrics").expect("the agent answers /metrics");
        assert_eq!(code, 200);
        scrapes += 1;
        let entries = metric(&body, "swoll_map_entries{map=\"SWOLL_METRICS\"}");
        assert_eq!(
            metric(&body, "swoll_map_capacity{map=\"SWOLL_METRICS\"}"),
            MAP_SIZE
        );
        assert!(
            entries <= MAP_SIZE,
            "{entries} entries in a {MAP_SIZE}-entry map"
        );
        // Live keys plus at most as many evicted ones still exported, and the slots' keys:
        // the agent's state is bounded by the maps, however many namespaces came and went.
        let series = metric(&body, "swoll_syscall_series");
        let bound = 2 * MAP_SIZE + NS_SLOTS * OK_SYSCALLS_PER_NAMESPACE;
        assert!(
            series <= bound,
            "{series} series from a {MAP_SIZE}-entry map and {NS_SLOTS} slots"
        );
        let now = counters(&body);
        for (series, value) in &now {
            if let Some(before) = last.get(*series) {
                assert!(
                    value >= before,
                    "{series} went back from {before} to {value} (scrape {scrapes})"
                );
            }
        }
        last = now.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        max_rss = max_rss.max(agent.rss_kib());
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "the churn did not finish in 45 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        churn.wait().expect("the churn's status").success(),
        "the namespace churn failed"
    );
    // The long-lived namespace stays alive (--hold) after its rounds; its count is final once
    // a read after the last round has been rendered.
    let getppid_of = |body: &str| {
        body.lines()
            .find(|l| {
                l.starts_with("swoll_node_metrics_syscall_count{syscall=\"sys_getppid\",err=\"OK\"")
                    && l.contains(&format!("kns=\"{steady_ns}\"}}"))
            })
            .and_then(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
    };
    let want = ROUNDS * GETPPID_PER_ROUND;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (getppid, body) = loop {
        let (_, body) = http_get(agent.addr, "/metrics").expect("metrics");
        let getppid = getppid_of(&body);
        if getppid == Some(want) || Instant::now() > deadline {
            break (getppid, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    steady.kill().expect("stopping the long-lived namespace");
    steady.wait().expect("reaping the long-lived namespace");
    let evictions = metric(&body, "swoll_map_evictions_total{map=\"SWOLL_METRICS\"}");
    assert!(evictions > 0, "no eviction seen:\n{body}");
    // Absent at the end only if its key was evicted and then dropped from the ledger's bounded
    // set of evicted keys; never above the calls made.
    let getppid = getppid.unwrap_or(0);
    assert!(
        getppid <= want,
        "{getppid} getppid exported for pid-ns {steady_ns}, {want} made"
    );
    eprintln!("long-lived namespace: {getppid} of {want} getppid calls counted");
    // A leak guard, not a benchmark: the state the agent keeps is bounded by the 256-entry
    // map (asserted above through the series count), so 10,000 namespaces may not grow it by
    // more than the allocator's slack. 10,000 namespaces' worth of leaked keys, labels and
    // resolver entries would be tens of MiB.
    let growth = max_rss.saturating_sub(rss_at_start);
    eprintln!(
        "{scrapes} scrapes, {evictions} evictions seen, RSS {rss_at_start} KiB at start, \
         {max_rss} KiB at most, {} s",
        started.elapsed().as_secs()
    );
    assert!(
        growth < 16 * 1024,
        "RSS grew by {growth} KiB under the churn"
    );
    assert!(agent.stop().success(), "the agent did not stop cleanly");
}
