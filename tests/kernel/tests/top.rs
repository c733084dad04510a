//! `swoll top`, as a person uses it: `--no-ui` prints a known workload's rate, and the terminal
//! UI, driven through tmux (send-keys, capture-pane), shows it, filters by typed text and quits
//! on `q`. With `--node-name` and a fake API server, a workload in a real pod cgroup is labelled
//! with its pod, and `-n` selects it.
//!
//! Run as plain root on the host, not as deployed (tests/kernel/src/deployed.rs): `swoll top` is
//! an operator's tool on a host, which the DaemonSet never runs.
use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use swoll_kernel_tests::{
    PodCgroup, TempDir,
    apiserver::{FakeApiServer, pod},
    fake_container_id, fake_pod_uid, skip, spawn_workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");
const NODE: &str = "node-a";

/// A steady workload in a fresh pid namespace: 2000 getppid every ~100 ms for up to 120 s,
/// longer than any of these tests lasts under emulation (it ends with its [`Workload`]).
const STEADY: [&str; 5] = ["--new-pidns", "--repeat-for", "120", "getppid", "2000"];

/// Kills the workload when the test ends, however it ends.
struct Workload(std::process::Child);

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fields of the table line of (`syscall`, `OK`, `kns`) in `swoll top`'s text table.
fn table_row<'a>(text: &'a str, syscall: &str, kns: u32) -> Option<Vec<&'a str>> {
    let kns = kns.to_string();
    text.lines()
        .map(|l| {
            l.trim_matches(|c: char| c == '│' || c.is_whitespace())
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .find(|f| f.len() == 8 && f[0] == syscall && f[1] == "OK" && f[5] == kns)
}

#[test]
fn no_ui_prints_the_workload_with_its_rate() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(bin) = swoll_kernel_tests::runnable_swoll() else {
        return;
    };
    let (child, ns) = spawn_workload(WORKLOAD, &STEADY);
    let _workload = Workload(child);
    let out = Command::new(&bin)
        .args(["top", "--no-ui", "--interval", "1s", "--limit", "0"])
        .output()
        .expect("running swoll top --no-ui");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swoll top --no-ui failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let header: Vec<&str> = stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "SYSCALL",
            "ERRNO",
            "NAMESPACE",
            "POD",
            "CONTAINER",
            "KNS",
            "COUNT",
            "RATE/S"
        ],
        "{stdout}"
    );
    let row = table_row(&stdout, "sys_getppid", ns)
        .unwrap_or_else(|| panic!("no sys_getppid OK row of pid-ns {ns}:\n{stdout}"));
    let count: u64 = row[6].parse().expect("a count");
    let rate: f64 = row[7].parse().expect("a rate");
    // About 20 000/s; a loaded CI machine may run the workload slower, but never idle.
    assert!(count >= 2000 && rate > 0.0, "{row:?}\n{stdout}");
}

/// Runs `swoll top --no-ui` with `args` and `env` (one read after `--interval`, 1 s unless
/// `args` says); returns its stdout, asserting success.
fn top_once(bin: &Path, args: &[&str], env: &[(&str, &Path)]) -> String {
    let interval = if args.contains(&"--interval") {
        &[][..]
    } else {
        &["--interval", "1s"][..]
    };
    let out = Command::new(bin)
        .args(["top", "--no-ui", "--limit", "0"])
        .args(interval)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running swoll top --no-ui");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "swoll top --no-ui {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn no_ui_labels_the_nodes_pods_and_filters_by_namespace() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(bin) = swoll_kernel_tests::runnable_swoll() else {
        return;
    };
    let container_id = fake_container_id(31);
    let uid = fake_pod_uid(&container_id);
    let api = FakeApiServer::start();
    api.apply(pod(
        "shop",
        "cart-0",
        &uid,
        NODE,
        &[("cart", &format!("containerd://{container_id}"))],
        &[("app", "cart")],
        "Running",
    ));
    // The same container id on another node's pod must not label anything here.
    api.apply(pod(
        "other",
        "elsewhere",
        "",
        "node-b",
        &[("x", &format!("containerd://{}", fake_container_id(32)))],
        &[],
        "Running",
    ));
    let cgroup = PodCgroup::create(&uid, &container_id);
    let dir = TempDir::new("swoll-top-kube");
    let kubeconfig = api.kubeconfig(&dir.0);
    let cgroup_dir = cgroup.dir.to_string_lossy().into_owned();
    let mut in_pod = vec!["--cgroup", &cgroup_dir];
    in_pod.extend(STEADY);
    let (child, ns) = spawn_workload(WORKLOAD, &in_pod);
    let _workload = Workload(child);
    // A namespace in no pod: no labels but its kns.
    let (child, loose_ns) = spawn_workload(WORKLOAD, &STEADY);
    let _loose = Workload(child);
    let env = [("KUBECONFIG", kubeconfig.as_path())];

    let all = top_once(&bin, &["--node-name", NODE], &env);
    let row = table_row(&all, "sys_getppid", ns)
        .unwrap_or_else(|| panic!("no sys_getppid OK row of pid-ns {ns}:\n{all}"));
    assert_eq!(row[2..5], ["shop", "cart-0", "cart"], "{all}");
    let loose = table_row(&all, "sys_getppid", loose_ns)
        .unwrap_or_else(|| panic!("no sys_getppid OK row of pid-ns {loose_ns}:\n{all}"));
    assert_eq!(loose[2..5], ["-", "-", "-"], "{all}");

    // `-n shop`: the pod's rows and nothing else.
    let shop = top_once(&bin, &["--node-name", NODE, "-n", "shop"], &env);
    let row = table_row(&shop, "sys_getppid", ns)
        .unwrap_or_else(|| panic!("no sys_getppid OK row of pid-ns {ns} with -n shop:\n{shop}"));
    assert_eq!(row[2..5], ["shop", "cart-0", "cart"], "{shop}");
    let rows: Vec<Vec<&str>> = shop
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter()
            .all(|f| f.len() == 8 && f[2] == "shop" && f[5] == ns.to_string()),
        "rows outside namespace shop:\n{shop}"
    );
    let count: u64 = row[6].parse().expect("a count");
    assert!(count >= 2000, "{shop}");

    // Only this node's pods were asked for, as `swoll serve` asks.
    let log = api.request_log();
    assert!(
        log.iter().any(|l| l.starts_with("GET /api/v1/pods?")
            && l.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .filter(|l| l.contains("/pods"))
            .all(|l| l.contains("spec.nodeName")),
        "{log:#?}"
    );

    // Without --node-name: no API call, the container by its short id.
    let requests = api.requests();
    let local = top_once(&bin, &[], &env);
    let row = table_row(&local, "sys_getppid", ns)
        .unwrap_or_else(|| panic!("no sys_getppid OK row of pid-ns {ns}:\n{local}"));
    assert_eq!(row[2..5], ["-", "-", &container_id[..12]], "{local}");
    assert_eq!(api.requests(), requests, "local mode made API calls");
    assert!(table_row(&top_once(&bin, &["-n", "shop"], &env), "sys_getppid", ns).is_none());
}

#[test]
fn no_ui_without_kubernetes_gives_a_shared_pid_namespace_no_container() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(bin) = swoll_kernel_tests::runnable_swoll() else {
        return;
    };
    // Two containers of one pod in one pid namespace, as with `shareProcessNamespace: true`;
    // no API server: only the cgroups say that both are the pod's.
    let (app_id, sidecar_id) = (fake_container_id(33), fake_container_id(34));
    let uid = fake_pod_uid(&app_id);
    let app = PodCgroup::create(&uid, &app_id);
    let sidecar = PodCgroup::create(&uid, &sidecar_id);
    let app_dir = app.dir.to_string_lossy().into_owned();
    let mut first = vec!["--cgroup", &app_dir];
    first.extend(STEADY);
    let (child, ns) = spawn_workload(WORKLOAD, &first);
    let first = Workload(child);
    let join = format!("/proc/{}/ns/pid_for_children", first.0.id());
    let sidecar_dir = sidecar.dir.to_string_lossy().into_owned();
    let top = Command::new(&bin)
        .args(["top", "--no-ui", "--limit", "0", "--interval", "6s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running swoll top --no-ui");
    // While top counts (the app container's process calls every 100 ms, so its record comes
    // first): the sidecar's process joins the namespace and makes a call that is new there, so
    // the probes' record of the namespace moves to the sidecar's cgroup. Only once top's
    // probes are attached, and its resolver (which looks every 200 ms) has seen the app's
    // record: under emulation loading the probes takes seconds, and a join before it would
    // never be seen.
    wait_for_attached_links(top.id(), 1);
    std::thread::sleep(Duration::from_millis(1500));
    let joined = swoll_kernel_tests::workload(
        WORKLOAD,
        &[
            "--join-pidns",
            &join,
            "--cgroup",
            &sidecar_dir,
            "openat-missing",
            "3",
        ],
    );
    assert_eq!(joined, ns, "joined another namespace");
    let out = top.wait_with_output().expect("swoll top");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "swoll top failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table_row(&text, "sys_getppid", ns)
        .unwrap_or_else(|| panic!("no sys_getppid OK row of pid-ns {ns}:\n{text}"));
    // Neither container's id: the namespace is both containers'.
    assert_eq!(row[2..5], ["-", "-", "-"], "{text}");
    drop(first);
    drop(sidecar);
    drop(app);
}

/// Waits (up to 60 s) until process `pid` holds `n` BPF links: its probes are attached (`top`
/// counts without time: one link, on `sys_exit`). A link's fdinfo names its `link_type`.
fn wait_for_attached_links(pid: u32, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let links = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|fd| {
                std::fs::read_to_string(fd.path()).is_ok_and(|info| info.contains("link_type:"))
            })
            .count();
        if links >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "swoll top ({pid}) has {links} BPF links after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tmux server of its own (its own socket, so no user's server or options are touched),
/// killed with everything in it when dropped.
struct Tmux {
    socket: String,
    session: String,
    _dir: TempDir,
}

impl Tmux {
    /// Starts a detached 200x50 session running `command`; its pane stays after the command
    /// exits (`remain-on-exit`), so an early error stays on screen.
    fn start(command: &str) -> Tmux {
        let dir = TempDir::new("swoll-top-tmux");
        let conf = dir.0.join("tmux.conf");
        std::fs::write(&conf, "set-option -g remain-on-exit on\n").expect("writing tmux.conf");
        let id = std::process::id();
        let tmux = Tmux {
            socket: format!("swoll-top-{id}"),
            session: format!("swoll-top-{id}"),
            _dir: dir,
        };
        let out = tmux.run_with_conf(
            &conf,
            &[
                "new-session",
                "-d",
                "-s",
                &tmux.session,
                "-x",
                "200",
                "-y",
                "50",
                command,
            ],
        );
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    /// Runs a tmux command on this server, reading `conf` if it starts the server.
    fn run_with_conf(&self, conf: &Path, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg(conf)
            .args(args)
            .output()
            .expect("running tmux")
    }

    /// Runs a tmux command on this server.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux")
    }

    /// The screen's text now.
    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types keys (tmux key names: `Enter`, `Escape`, `q`, …).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "tmux send-keys {keys:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", &self.session, "-l", text]);
        assert!(out.status.success(), "tmux send-keys -l {text:?}");
    }

    /// Whether the pane's command has exited, or `None` once the session is gone. (tmux's own
    /// `pane_dead_status` is not used: it sometimes stays empty after the pane died.)
    fn pane_dead(&self) -> Option<bool> {
        let out = self.run(&["list-panes", "-t", &self.session, "-F", "#{pane_dead}"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim() == "1")
    }

    /// Polls the screen until `done` accepts it; panics with the screen after `secs` seconds
    /// or as soon as the program has exited.
    fn wait_for(&self, what: &str, secs: u64, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            if self.pane_dead() == Some(true) {
                // The last output may have landed between the capture and the check.
                let screen = self.screen();
                if done(&screen) {
                    return screen;
                }
                panic!("swoll top exited before {what}:\n{screen}");
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on screen after {secs} s:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Printed with swoll top's exit status by the pane's shell once the program has exited.
const EXIT_MARK: &str = "swoll-top-exit=";

#[test]
fn ui_shows_filters_and_quits_in_tmux() {
    let _serial = swoll_kernel_tests::exclusive();
    let Some(bin) = swoll_kernel_tests::runnable_swoll() else {
        return;
    };
    let has_tmux = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tmux && skip("tmux is not installed (scripts/setup.sh --test installs it)") {
        return;
    }
    let (child, ns) = spawn_workload(WORKLOAD, &STEADY);
    let _workload = Workload(child);
    // The shell stays a while after printing the mark: a pane whose process has exited may be
    // marked dead before tmux has drawn its last output (seen once: the table still on screen,
    // neither the restored screen nor the mark), and the server is killed at the end anyway.
    let tmux = Tmux::start(&format!(
        "{} top --interval 1s; echo {EXIT_MARK}$?; sleep 60",
        bin.display()
    ));

    // The workload's row, with a rate, ranked near the top: it makes ~20 000 calls/s.
    let screen = tmux.wait_for("sys_getppid row of the workload", 20, |s| {
        table_row(s, "sys_getppid", ns)
            .and_then(|f| f[7].parse::<f64>().ok())
            .is_some_and(|rate| rate > 0.0)
    });
    assert!(screen.contains("swoll top"), "{screen}");
    assert!(
        screen.contains("total") && screen.contains("errors"),
        "{screen}"
    );
    assert!(
        screen.contains("SYSCALL") && screen.contains("RATE/S"),
        "{screen}"
    );
    eprintln!("{screen}");

    // `/`, a filter, Enter: only the rows of the workload's pid namespace remain.
    let kns = ns.to_string();
    tmux.keys(&["/"]);
    tmux.type_text(&kns);
    tmux.wait_for("filter being typed", 5, |s| {
        s.contains(&format!("filter: {kns}"))
    });
    tmux.keys(&["Enter"]);
    let filtered = tmux.wait_for("filtered table", 10, |s| {
        s.contains(&format!("filter \"{kns}\"")) && table_row(s, "sys_getppid", ns).is_some()
    });
    let other_rows: Vec<&str> = filtered
        .lines()
        .filter(|l| l.contains("sys_") && !l.contains(&kns))
        .collect();
    assert!(
        other_rows.is_empty(),
        "rows of other namespaces left:\n{filtered}"
    );

    // Esc clears the filter, `q` quits with status 0 within a few seconds.
    tmux.keys(&["Escape"]);
    tmux.wait_for("cleared filter", 5, |s| !s.contains("| filter"));
    tmux.keys(&["q"]);
    let exited = tmux.wait_for("exit status after q", 5, |s| s.contains(EXIT_MARK));
    assert!(
        exited.contains(&format!("{EXIT_MARK}0")),
        "swoll top's exit status:\n{exited}"
    );
    // The terminal is back to normal: the alternate screen is gone, so the table is too.
    let after = tmux.screen();
    assert!(!after.contains("RATE/S"), "screen not restored:\n{after}");
}
