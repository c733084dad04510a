//! Seccomp profiles derived from the counters, proven in a real runtime: a workload container
//! (podman with runc, in a kubelet-named pod cgroup) runs under the agent as the DaemonSet runs
//! it (in a podman container, watching a fake API server that reports the workload by the id
//! podman gave it); its profile comes from the agent's `/seccomp/<namespace>/<pod>` and from
//! `swoll seccomp`; the same workload then runs under that profile with `podman run
//! --security-opt seccomp=<file>`: runc starts it, it runs to its expected output, and a
//! syscall it never made (`chroot`, which neither the workload nor runc makes in the
//! container's pid namespace) now fails with EPERM, where under podman's default profile it
//! succeeds. Not `unshare`: with a cgroup namespace of its own (podman's default on cgroup v2)
//! runc unshares it from inside the container's pid namespace, so `unshare` is counted and
//! allowed; the test checks that too. A container of the same pod started before the agent gets a profile marked
//! incomplete.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use swoll::seccomp::{ContainerProfile, Profile};
use swoll_kernel_tests::{
    BpfFs, TempDir,
    apiserver::{FakeApiServer, pod},
    fake_container_id, fake_pod_uid, http_get,
    runtime::{self, AgentContainer, Container, Driver, PodParent, run_workload},
    swoll_bin,
};

const NODE: &str = "node-a";

/// The workload: writes, failed opens and a builtin loop, all made by the shell itself.
const WORK: &str = "echo started; i=0; while [ $i -lt 3 ]; do true </nope-$i; i=$((i+1)); \
                    done; echo done >&2";

/// The learning run: the workload, then alive (so the agent can date its pid namespace by its
/// first process) without making any call the enforced run will need.
fn learning_script() -> String {
    format!("{WORK}; while :; do sleep 3600; done")
}

/// The enforced run: the workload, then `chroot`, which the learning run never made, then an
/// exit of its own.
fn enforced_script() -> String {
    format!("{WORK}; chroot / /bin/sh -c 'echo chrooted'; echo chroot exit $?")
}

/// Waits for `container` to exit; its logs and exit code.
fn finished(container: &Container) -> (String, i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while container.running() {
        assert!(
            Instant::now() < deadline,
            "{} still runs after 60 s:\n{}",
            container.what,
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = container.inspect("{{.State.ExitCode}}");
    (
        container.logs(),
        code.parse()
            .unwrap_or_else(|_| panic!("exit code {code:?}")),
    )
}

/// `GET path` on the agent: the body of a 200, or a panic with what it answered.
fn get_ok(agent: &AgentContainer, path: &str) -> String {
    let (code, body) = http_get(agent.addr, path).expect("GET");
    assert_eq!(code, 200, "GET {path}: {body}\n{}", agent.container.logs());
    body
}

#[test]
fn a_profile_from_the_counters_runs_the_workload_under_runc_and_denies_what_it_never_did() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(podman) = runtime::podman() else {
        return;
    };
    let image = podman.workload_image().to_owned();
    podman.agent_image();
    let Some(bpffs) = BpfFs::mount() else {
        return;
    };
    let api = FakeApiServer::start();
    let dir = TempDir::new("swoll-seccomp");
    let kubeconfig = api.kubeconfig(&dir.0);
    let uid = fake_pod_uid(&fake_container_id(16));
    let parent = PodParent::new(Driver::Cgroupfs, "burstable", &uid);
    // A container of the pod that started before the agent's probes: its first calls were not
    // seen, and its profile must say so.
    // Its sleeps go on making calls after the agent starts.
    let early = run_workload(podman, "shop/early", &parent, "while :; do sleep 0.2; done");
    let agent = AgentContainer::start(podman, &bpffs, &kubeconfig, NODE);

    // Learn: the workload's container starts after the agent's probes, so every call of its
    // pid namespace is counted, runc's init included.
    let learner = run_workload(podman, "shop/app", &parent, &learning_script());
    api.apply(pod(
        "shop",
        "web-0",
        &uid,
        NODE,
        &[
            ("app", &format!("containerd://{}", learner.id)),
            ("early", &format!("containerd://{}", early.id)),
        ],
        &[],
        "Running",
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !learner.logs().contains("done") {
        assert!(
            Instant::now() < deadline,
            "the workload did not finish:\n{}",
            learner.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Reads every 500 ms: a read after the workload's last call, and the pod labelled.
    let kns = learner.pid_ns();
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed: Vec<ContainerProfile> = loop {
        std::thread::sleep(Duration::from_millis(1500));
        let (code, body) = http_get(agent.addr, "/seccomp/shop/web-0").expect("GET");
        if code == 200 {
            let listed: Vec<ContainerProfile> =
                serde_json::from_str(&body).expect("a list of profiles");
            if listed.len() == 2 {
                break listed;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no profile of shop/web-0: {code} {body}\n{}",
            agent.container.logs()
        );
    };
    let names: Vec<&str> = listed.iter().map(|p| p.container.as_str()).collect();
    assert_eq!(names, ["app", "early"]);
    let old = &listed[1];
    assert_eq!(old.kns, [early.pid_ns()]);
    assert!(!old.complete, "{old:#?}");
    assert!(
        old.notes[0].contains("before the probes began counting"),
        "{:?}",
        old.notes
    );
    let app = &listed[0];
    eprintln!(
        "the profile of shop/web-0/app allows {} syscalls: {:?}\nnotes: {:?}",
        app.profile.allowed().len(),
        app.profile.allowed(),
        app.notes
    );
    assert_eq!(
        (
            app.namespace.as_str(),
            app.pod.as_str(),
            app.container.as_str()
        ),
        ("shop", "web-0", "app")
    );
    assert_eq!(app.kns, [kns]);
    assert!(app.complete, "counted from its start, yet: {:?}", app.notes);
    let p = &app.profile;
    assert_eq!(
        (p.default_action.as_str(), p.default_errno_ret),
        ("SCMP_ACT_ERRNO", 1)
    );
    assert_eq!(
        p.architectures.first().map(String::as_str),
        Some(swoll::seccomp::architectures(swoll::syscalls::Arch::NATIVE)[0])
    );
    let allowed = p.allowed();
    // wait4: the shell is blocked in it (for `sleep`), not counted until it returns, and the
    // enforced run's shell waits for chroot with it.
    for name in [
        "execve",
        "openat",
        "write",
        "exit",
        "exit_group",
        "rt_sigreturn",
        "wait4",
    ] {
        assert!(allowed.contains(&name), "{name} not in {allowed:?}");
    }
    assert!(
        !allowed.contains(&"chroot"),
        "chroot was counted in the container's pid namespace: the test's premise is wrong"
    );
    // runc 1.1 makes the cgroup namespace from the container's pid namespace (nsexec's last
    // stage, `unshare(CLONE_NEWCGROUP)`).
    let cgroup_ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/cgroup")).ok();
    let own_cgroup_ns = cgroup_ns(&learner.pid().to_string()) != cgroup_ns("self");
    assert_eq!(
        allowed.contains(&"unshare"),
        own_cgroup_ns,
        "unshare in the profile, and the container has a cgroup namespace of its own"
    );
    let mut sorted = allowed.clone();
    sorted.sort_unstable();
    assert_eq!(allowed, sorted);

    // The same profile, by pid namespace and through the command.
    let by_kns: ContainerProfile =
        serde_json::from_str(&get_ok(&agent, &format!("/seccomp/kns/{kns}"))).expect("json");
    assert_eq!(&by_kns, app);
    let agent_url = format!("http://{}", agent.addr);
    let seccomp = |extra: &[&str]| {
        Command::new(swoll_bin())
            .args([
                "seccomp", "--agent", &agent_url, "-n", "shop", "-p", "web-0",
            ])
            .args(extra)
            .output()
            .expect("running swoll seccomp")
    };
    // Two containers: the command wants one named.
    let out = seccomp(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("name one with -c"),
        "{stderr}"
    );
    let out = seccomp(&["-c", "app"]);
    assert!(
        out.status.success(),
        "swoll seccomp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_cli: Profile = serde_json::from_slice(&out.stdout).expect("the command prints JSON");
    assert_eq!(&from_cli, p);
    let file = dir.0.join("app.json");
    std::fs::write(&file, &out.stdout).expect("writing the profile");

    // The Security Profiles Operator's form, and the clear 404 of a pod the agent does not know.
    let spo: serde_json::Value =
        serde_json::from_str(&get_ok(&agent, "/seccomp/shop/web-0?format=spo")).expect("json");
    assert_eq!(spo["kind"], "List");
    assert_eq!(
        spo["items"][1]["metadata"]["annotations"]["swoll/complete"],
        "false"
    );
    let item = &spo["items"][0];
    assert_eq!(
        (
            &item["apiVersion"],
            &item["kind"],
            &item["metadata"]["namespace"],
            &item["metadata"]["name"]
        ),
        (
            &serde_json::json!(swoll::seccomp::SPO_API_VERSION),
            &serde_json::json!("SeccompProfile"),
            &serde_json::json!("shop"),
            &serde_json::json!("web-0-app")
        )
    );
    assert_eq!(item["spec"]["syscalls"], serde_json::json!(p.syscalls));
    let (code, body) = http_get(agent.addr, "/seccomp/shop/nope").expect("GET");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("shop/nope"), "{body}");
    drop(learner);
    drop(early);

    // Enforce: runc installs the profile, starts the workload, which runs to its output; the
    // chroot it never made before fails with EPERM.
    let enforced = Container::run(
        podman,
        "shop/app under its profile",
        &[
            "--network",
            "none",
            "--security-opt",
            &format!("seccomp={}", file.display()),
            &image,
            "/bin/sh",
            "-c",
            &enforced_script(),
        ],
    );
    let (logs, code) = finished(&enforced);
    eprintln!("under the profile:\n{logs}");
    assert_eq!(code, 0, "{logs}");
    let status = enforced.inspect("{{.State.Error}}");
    assert!(status.is_empty(), "{status}");
    for line in [
        "started",
        "/bin/sh: can't open /nope-0: no such file",
        "/bin/sh: can't open /nope-2: no such file",
        "done",
        "chroot: can't change root directory to '/': Operation not permitted",
        "chroot exit 1",
    ] {
        assert!(logs.lines().any(|l| l == line), "no {line:?} in:\n{logs}");
    }
    assert!(!logs.contains("chrooted"), "{logs}");

    // The control: under podman's default profile the same chroot succeeds, so the EPERM was
    // the derived profile's.
    let control = Container::run(
        podman,
        "the workload under podman's default profile",
        &[
            "--network",
            "none",
            &image,
            "/bin/sh",
            "-c",
            &enforced_script(),
        ],
    );
    let (logs, code) = finished(&control);
    assert_eq!(code, 0, "{logs}");
    for line in ["done", "chrooted", "chroot exit 0"] {
        assert!(logs.lines().any(|l| l == line), "no {line:?} in:\n{logs}");
    }
}
