//! Time: the in-kernel sum of syscall durations matches what the workload slept.
use swoll_kernel_tests::{is_root, load, options, skip, value, workload};

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
