//! Time: the in-kernel sum of syscall durations matches what the workload slept, and with
//! `--histogram` every sleep lands in the bucket of its duration, kept in the namespace's slot
//! where it has one; a namespace with more keys than its slot's histogram table keeps the rest
//! in the hash, every call's latency in exactly one place.
use swoll::{
    metrics::{Label, Renderer, SYSCALL_DURATION},
    resolver::Workload,
};
use swoll_kernel_tests::{exit_misses, is_root, load, options, skip, value, workload};
use swoll_maps_schema::{histogram, metrics::MetricKey, stats::Stat};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

#[test]
fn twenty_5ms_sleeps_sum_to_100_to_200ms() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(probes) = load(&options()) else {
        return;
    };
    let ns = workload(WORKLOAD, &["--new-pidns", "nanosleep-5ms", "20"]);
    let v = value(&probes, ns, libc::SYS_nanosleep, 0);
    assert_eq!(v.count, 20);
    assert!(
        (100_000_000..=200_000_000).contains(&v.time_ns),
        "20 x 5 ms summed to {} ns",
        v.time_ns
    );
}

#[test]
fn twenty_5ms_sleeps_fill_the_5ms_histogram_bucket() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let mut opts = options();
    opts.histogram = true;
    let Some(probes) = load(&opts) else {
        return;
    };
    let ns = workload(WORKLOAD, &["--new-pidns", "nanosleep-5ms", "20"]);
    let mut snapshot = probes.maps.read();
    snapshot.merge_slot_rows();
    let key = MetricKey {
        pid_ns: ns,
        nr: u32::try_from(libc::SYS_nanosleep).expect("syscall nr"),
        errno: 0,
    };
    let buckets = snapshot
        .histograms
        .as_ref()
        .expect("--histogram reads the histogram map")
        .get(&key)
        .expect("a histogram of the workload's nanosleeps");
    // 5 ms and a little is in (2^22, 2^23] ns = (4.19 ms, 8.39 ms]. A sleep never ends early,
    // so nothing is below that bucket; on a busy machine one may end late, in a higher one.
    let five_ms = histogram::bucket(5_000_000);
    assert_eq!(five_ms, 22);
    assert_eq!(
        buckets.buckets[..five_ms].iter().sum::<u64>(),
        0,
        "{buckets:?}"
    );
    assert!(buckets.buckets[five_ms] > 0, "{buckets:?}");
    assert_eq!(buckets.buckets.iter().sum::<u64>(), 20, "{buckets:?}");
    if snapshot.slots > 0 {
        // A namespace with a slot keeps its few keys' histograms there, not in the hash.
        assert_eq!(probes.maps.get_histogram(&key), None);
    }

    let text = Renderer::new(&Label::ALL, 0)
        .render(&snapshot, |_| Workload::default())
        .table
        .text();
    let count = format!("{SYSCALL_DURATION}_count{{syscall=\"sys_nanosleep\",err=\"OK\",");
    let kns = format!("kns=\"{ns}\"}} ");
    let rendered = text
        .lines()
        .find_map(|l| l.strip_prefix(&count)?.split_once(&kns).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no {count}…{kns} in\n{text}"));
    assert_eq!(rendered, "20");
}

#[test]
fn keys_beyond_the_slots_histogram_table_are_kept_in_the_hash() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let mut opts = options();
    opts.histogram = true;
    let Some(probes) = load(&opts) else {
        return;
    };
    let misses = exit_misses(&probes);
    let untimed_before = probes.maps.read().stat(Stat::StartMissing);
    // 100 syscall numbers that do not exist, each called once: 100 keys (nr, ENOSYS), more
    // than a slot's histogram table holds.
    let calls = 100;
    let ns = workload(WORKLOAD, &["--new-pidns", "enosys", &calls.to_string()]);
    let mut snapshot = probes.maps.read();
    let slots = snapshot.slots;
    snapshot.merge_slot_rows();
    let histograms = snapshot.histograms.as_ref().expect("--histogram");
    let keys = (1000..1000 + calls).map(|nr| MetricKey {
        pid_ns: ns,
        nr,
        errno: u32::try_from(libc::ENOSYS).expect("errno"),
    });
    let (mut counted, mut observed, mut hashed) = (0, 0, 0);
    for key in keys {
        let count = snapshot.rows.get(&key).map_or(0, |v| v.count);
        let placed = histograms
            .get(&key)
            .map_or(0, |b| b.buckets.iter().sum::<u64>());
        assert!(
            placed <= count,
            "{key:?}: {placed} observed of {count} calls"
        );
        counted += count;
        observed += placed;
        hashed += u32::from(probes.maps.get_histogram(&key).is_some());
    }
    let missed = exit_misses(&probes) - misses;
    let untimed = probes.maps.read().stat(Stat::StartMissing) - untimed_before;
    if missed == 0 {
        assert_eq!(counted, u64::from(calls));
    }
    assert!(
        counted + missed >= u64::from(calls),
        "{counted} counted, {missed} skipped"
    );
    // A call whose start was not seen (a skipped `sys_enter` on 7.x) has no latency to place.
    assert!(
        observed + untimed >= counted,
        "{observed} observed of {counted} counted, {untimed} untimed"
    );
    if slots > 0 {
        assert!(
            hashed >= calls - u32::try_from(histogram::SLOT_KEYS).expect("small"),
            "only {hashed} of {calls} keys in the hash"
        );
    } else {
        assert_eq!(hashed, calls);
    }
}
