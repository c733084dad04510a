//! `swoll selftest`, the shipped kernel check, run as an operator runs it in the agent's pod
//! (`kubectl exec … swoll selftest`): with the DaemonSet's privileges on a kernel swoll supports
//! it passes, and its probe check counted exactly the calls its child made.

#[test]
fn selftest_passes_and_counts_exactly() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some((mut cmd, _root)) = swoll_kernel_tests::deployed_command(&["selftest"], &[]) else {
        return;
    };
    let out = cmd.output().expect("running swoll selftest");
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
    let api = swoll_kernel_tests::apiserver::FakeApiServer::start();
    let dir = swoll_kernel_tests::TempDir::new("swoll-selftest");
    let kubeconfig = api.kubeconfig(&dir.0);
    let run = || {
        let (mut cmd, _root) = swoll_kernel_tests::deployed_command(
            &["selftest", "--node-name", "node-a"],
            &[("KUBECONFIG", kubeconfig.as_path())],
        )?;
        Some(cmd.output().expect("running swoll selftest"))
    };
    let Some(up) = run() else { return };
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(up.status.success(), "{stdout}");
    assert!(
        stdout.contains("[ OK ] apiserver    answers; pods of node-a can be listed"),
        "{stdout}"
    );
    api.set_down(true);
    let Some(down) = run() else { return };
    let stdout = String::from_utf8_lossy(&down.stdout);
    assert!(!down.status.success(), "{stdout}");
    assert!(stdout.contains("[FAIL] apiserver"), "{stdout}");
    assert!(stdout.contains("fix: check KUBECONFIG"), "{stdout}");
}
