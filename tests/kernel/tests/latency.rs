//! Time: the in-kernel sum of syscall durations matches what the workload slept, and with
//! `--histogram` every sleep lands in the bucket of its duration.
use swoll::{
    metrics::{Label, Renderer, SYSCALL_DURATION},
    resolver::Workload,
};
use swoll_kernel_tests::{is_root, load, options, skip, value, workload};
use swoll_maps_schema::{histogram, metrics::MetricKey};

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
