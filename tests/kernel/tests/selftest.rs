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

#[test]
fn selftest_checks_the_api_server() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(bin) = swoll_kernel_tests::runnable_swoll() else {
        return;
    };
    let api = swoll_kernel_tests::apiserver::FakeApiServer::start();
    let dir = swoll_kernel_tests::TempDir::new("swoll-selftest");
    let kubeconfig = api.kubeconfig(&dir.0);
    let run = || {
        std::process::Command::new(&bin)
            .args(["selftest", "--node-name", "node-a"])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("running swoll selftest")
    };
    let up = run();
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(up.status.success(), "{stdout}");
    assert!(
        stdout.contains("[ OK ] apiserver    answers; pods of node-a can be listed"),
        "{stdout}"
    );
    api.set_down(true);
    let down = run();
    let stdout = String::from_utf8_lossy(&down.stdout);
    assert!(!down.status.success(), "{stdout}");
    assert!(stdout.contains("[FAIL] apiserver"), "{stdout}");
    assert!(stdout.contains("fix: check KUBECONFIG"), "{stdout}");
}
