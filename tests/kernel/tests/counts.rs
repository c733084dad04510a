//! Exact counts: what a workload does in its own pid namespace is what the map holds.
use swoll::syscalls::{self, Arch, NO_SYSCALL};
use swoll_kernel_tests::{
    assert_counted, exit_misses, is_root, load, options, skip, value, workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

#[test]
fn openat_enoent_and_getppid_are_counted_exactly() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(probes) = load(&options()) else {
        return;
    };
    let (n, m) = (37, 1234);
    let misses = exit_misses(&probes);
    let ns = workload(
        WORKLOAD,
        &[
            "--new-pidns",
            "openat-missing",
            &n.to_string(),
            "getppid",
            &m.to_string(),
        ],
    );
    let openat = value(&probes, ns, libc::SYS_openat, libc::ENOENT);
    let getppid = value(&probes, ns, libc::SYS_getppid, 0);
    assert_counted(&probes, ns, libc::SYS_openat, libc::ENOENT, n, misses);
    assert_counted(&probes, ns, libc::SYS_getppid, 0, m, misses);
    assert_eq!(
        value(&probes, ns, libc::SYS_openat, 0).count,
        0,
        "no successful openat"
    );
    assert!(
        openat.time_ns > 0 && getppid.time_ns > 0,
        "timed: {openat:?} {getppid:?}"
    );
}

#[test]
fn eight_threads_of_100k_calls_are_800k() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(probes) = load(&options()) else {
        return;
    };
    let misses = exit_misses(&probes);
    let ns = workload(
        WORKLOAD,
        &["--new-pidns", "--threads", "8", "getppid", "100000"],
    );
    assert_counted(&probes, ns, libc::SYS_getppid, 0, 800_000, misses);
}

#[test]
fn count_only_mode_counts_without_time() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let mut opts = options();
    opts.time = false;
    let Some(probes) = load(&opts) else { return };
    assert_eq!(
        probes.attached(),
        ["sys_exit"],
        "count-only runs sys_exit alone"
    );
    let misses = exit_misses(&probes);
    let ns = workload(WORKLOAD, &["--new-pidns", "getppid", "500"]);
    assert_counted(&probes, ns, libc::SYS_getppid, 0, 500, misses);
    assert_eq!(value(&probes, ns, libc::SYS_getppid, 0).time_ns, 0);
}

/// Every handled signal ends with `rt_sigreturn`, whose exit the kernel reports with syscall
/// number -1: the map keys it under that number, and the agent names it `sys_rt_sigreturn`.
#[test]
fn a_handled_signals_rt_sigreturn_is_counted_and_named() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(probes) = load(&options()) else {
        return;
    };
    let n = 41;
    let misses = exit_misses(&probes);
    let ns = workload(WORKLOAD, &["--new-pidns", "sigusr1", &n.to_string()]);
    assert_counted(&probes, ns, libc::SYS_tgkill, 0, n, misses);
    // tgkill returned 0 when the handler interrupted it: that is what rt_sigreturn restores.
    assert_counted(&probes, ns, i64::from(NO_SYSCALL), 0, n, misses);
    let entered = syscalls::number(Arch::NATIVE, "rt_sigreturn").expect("rt_sigreturn");
    assert_eq!(
        value(&probes, ns, i64::from(entered), 0).count,
        0,
        "no exit of rt_sigreturn under its own number {entered}"
    );
    let info = syscalls::describe_native(NO_SYSCALL);
    assert_eq!(
        (&*info.name, info.class, info.group),
        ("sys_rt_sigreturn", "Signals", "RealTime")
    );
}
