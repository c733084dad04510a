//! `swoll selftest`, the shipped kernel check: on a kernel swoll supports it passes, and its
//! probe check counted exactly the calls its child made.

#[test]
fn selftest_passes_and_counts_exactly() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(bin) = swoll_kernel_tests::runnable_swoll() else {
        return;
    };
    let out = std::process::Command::new(&bin)
        .arg("selftest")
        .output()
        .expect("running swoll selftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swoll selftest failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("made 1000 getppid, 1000 counted"),
        "{stdout}"
    );
    assert!(stdout.lines().all(|l| !l.starts_with("[FAIL]")), "{stdout}");
}
