//! Scrape load: 100 concurrent clients scrape `/metrics` for 30 s while the agent re-reads its
//! maps every 100 ms and a workload keeps them changing. Every scrape must succeed with a whole
//! exposition, none may wait as long as the request timeout, and the agent's memory must stay
//! flat: what 100 clients cost is bounded by the concurrency limit, not by how long they scrape.
//! Speed figures are printed for the record; the benchmark (`bench/agent.sh`) owns the goals.
//!
//! `SWOLL_SOAK_SECONDS=N` makes it a soak of N seconds (the count bound grows with it).
use std::time::{Duration, Instant};

use swoll_kernel_tests::{Agent, http_get, spawn_workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");
const CLIENTS: usize = 100;
/// How long the clients scrape: 30 s, or `SWOLL_SOAK_SECONDS`.
fn load() -> Duration {
    Duration::from_secs(
        std::env::var("SWOLL_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    )
}
/// Each client's most scrapes per second of load: the loop is bounded by count as well as by
/// time.
const MAX_SCRAPES_PER_CLIENT_SECOND: usize = 70;

#[test]
fn a_hundred_concurrent_scrapers_for_30s_all_succeed_with_flat_memory() {
    let _serial = swoll_kernel_tests::exclusive();
    if !swoll_kernel_tests::is_root() && swoll_kernel_tests::skip("needs root") {
        return;
    }
    let Some(agent) = Agent::start(&["--interval", "100ms"]) else {
        return;
    };
    let (mut workload, _ns) = spawn_workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "--repeat-for",
            &(load().as_secs() + 5).to_string(),
            "getppid",
            "1000",
            "openat-missing",
            "100",
            "enosys",
            "200",
        ],
    );
    // Warm up: allocator arenas and buffers reach their working size.
    for _ in 0..50 {
        let (code, _) = http_get(agent.addr, "/metrics").expect("scrape");
        assert_eq!(code, 200);
    }
    let load = load();
    let max_scrapes = MAX_SCRAPES_PER_CLIENT_SECOND * load.as_secs() as usize;
    let started = Instant::now();
    let rss_mid = std::sync::Mutex::new(None);
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    let mut took = Vec::new();
                    while started.elapsed() < load && took.len() < max_scrapes {
                        let t = Instant::now();
                        let (code, body) = http_get(agent.addr, "/metrics").expect("scrape");
                        took.push(t.elapsed());
                        assert_eq!(code, 200, "scrape failed: {body:.200}");
                        assert!(
                            body.contains("\nswoll_build_info{") && body.ends_with('\n'),
                            "a partial exposition"
                        );
                    }
                    took
                })
            })
            .collect();
        s.spawn(|| {
            std::thread::sleep(load / 3);
            *rss_mid.lock().expect("lock") = Some(agent.rss_kib());
        });
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("a client panicked"))
            .collect()
    });
    let rss_end = agent.rss_kib();
    let rss_mid = rss_mid.into_inner().expect("lock").expect("mid-load RSS");
    let mut sorted = latencies.clone();
    sorted.sort();
    let p = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{} scrapes by {CLIENTS} clients in {:?}: p50 {:?} p99 {:?} max {:?}; RSS {} KiB at a third, {} KiB at the end",
        sorted.len(),
        started.elapsed(),
        p(0.5),
        p(0.99),
        sorted[sorted.len() - 1],
        rss_mid,
        rss_end
    );
    assert!(
        sorted.len() >= CLIENTS,
        "every client scraped at least once"
    );
    assert!(
        p(0.99) < swoll::http::REQUEST_TIMEOUT,
        "p99 {:?} reached the request timeout",
        p(0.99)
    );
    // Flat: the last two thirds of the load add no more than a few buffers' worth.
    assert!(
        rss_end <= rss_mid + 16 * 1024,
        "RSS grew under a steady load: {rss_mid} KiB -> {rss_end} KiB"
    );
    let _ = workload.kill();
    let _ = workload.wait();
}
