//! Support for tests that load swoll's real probes into the running kernel.
//!
//! Each test loads its own copy of the probes (they leave the test process itself out), runs
//! `swoll-workload` to make a known set of syscalls in a fresh pid namespace, and asserts exact
//! values in the maps or over HTTP. Under `CI=true` a test that cannot load the probes fails;
//! elsewhere (no root, no BTF) it prints why and skips.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub mod apiserver;
pub mod caps;
pub mod deployed;
pub mod manifest;
pub mod runtime;

use swoll::loader::{self, LoadOptions, Probes};
use swoll_maps_schema::metrics::{MetricKey, MetricValue};

/// Serialises the tests of one binary that run workloads: each test's probes or agent count
/// every pid namespace on the host, and a freed pid namespace's inode number is reused at once,
/// so two tests' workloads running together could add to each other's keys. Hold the guard for
/// the whole test.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// True when running in CI, where skipping is failing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (prints and returns true) outside CI, panics in CI.
pub fn skip(why: &str) -> bool {
    assert!(!in_ci(), "CI=true and this kernel test cannot run: {why}");
    eprintln!("skipping test - {why}");
    true
}

/// The host's pid namespace as the tests see it (the test process's own).
pub fn own_pid_ns() -> u32 {
    swoll::host::pid_ns_inode(Path::new("/proc/self/ns/pid")).expect("reading /proc/self/ns/pid")
}

/// Default load options for a test: timed, host counted, the test process left out.
pub fn options() -> LoadOptions {
    LoadOptions::for_this_process(own_pid_ns())
}

/// Loads the probes, or `None` (after printing why) where that is allowed.
pub fn load(opts: &LoadOptions) -> Option<Probes> {
    match loader::load(opts) {
        Ok(probes) => Some(probes),
        Err(err) => {
            skip(&format!(
                "cannot load the probes: {}",
                swoll::error_chain(&err)
            ));
            None
        }
    }
}

/// Runs `swoll-workload` (at `bin`) with `args`; returns the pid namespace inode it ran in.
/// Panics if the workload fails: its calls are what the test asserts on.
pub fn workload(bin: &str, args: &[&str]) -> u32 {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("spawning swoll-workload");
    assert!(
        out.status.success(),
        "swoll-workload {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("pidns ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pidns line from swoll-workload: {stdout:?}"))
}

/// The summed value of (pid_ns, nr, errno), zero if absent.
pub fn value(probes: &Probes, pid_ns: u32, nr: i64, errno: i32) -> MetricValue {
    let key = MetricKey {
        pid_ns,
        nr: u32::try_from(nr).expect("syscall nr"),
        errno: u32::try_from(errno).expect("errno"),
    };
    probes.maps.counted(&key)
}

/// The counters of a pin set, opened by path as a reader besides any agent (which keeps the
/// maps alive while held): the metrics hash and, where the set has them, the namespace slots.
pub struct PinnedCounts {
    metrics: aya::maps::PerCpuHashMap<aya::maps::MapData, MetricKey, MetricValue>,
    slots: Option<(NsSlots, SlotCountsMap)>,
}

/// The pinned pid namespace → slot map.
type NsSlots = aya::maps::HashMap<aya::maps::MapData, u32, u32>;

/// The pinned per-slot counts.
type SlotCountsMap =
    aya::maps::PerCpuArray<aya::maps::MapData, swoll_maps_schema::slots::SlotCounts>;

impl PinnedCounts {
    /// Opens the counters pinned in `set`.
    pub fn open(set: &Path) -> Self {
        use aya::maps::{Map, MapData};
        use swoll_maps_schema::{metrics, slots};
        fn typed<M: TryFrom<Map, Error = aya::maps::MapError>>(set: &Path, name: &str) -> M {
            let map = MapData::from_pin(set.join(name))
                .unwrap_or_else(|e| panic!("opening the pinned {name}: {e}"));
            Map::from_map_data(map)
                .expect("a map")
                .try_into()
                .unwrap_or_else(|e| panic!("the type of {name}: {e}"))
        }
        let slots = set
            .join(slots::NS_MAP)
            .exists()
            .then(|| (typed(set, slots::NS_MAP), typed(set, slots::COUNTS_MAP)));
        PinnedCounts {
            metrics: typed(set, metrics::MAP),
            slots,
        }
    }

    /// The count of (pid_ns, nr, errno), summed over CPUs and over the hash and the slot.
    pub fn count(&self, pid_ns: u32, nr: i64, errno: i32) -> u64 {
        let key = MetricKey {
            pid_ns,
            nr: u32::try_from(nr).expect("syscall nr"),
            errno: u32::try_from(errno).expect("errno"),
        };
        let hashed: u64 = self
            .metrics
            .get(&key, 0)
            .map(|values| values.iter().map(|v| v.count).sum())
            .unwrap_or(0);
        let slotted: u64 = self
            .slots
            .as_ref()
            .and_then(|(ns, counts)| {
                let slot = ns.get(&pid_ns, 0).ok()?;
                let per_cpu = counts.get(&slot, 0).ok()?;
                Some(
                    per_cpu
                        .iter()
                        .map(|c| c.value_of(key.nr, key.errno).count)
                        .sum(),
                )
            })
            .unwrap_or(0);
        hashed + slotted
    }
}

/// The `swoll` binary next to the test binaries (`target/<profile>/swoll`), or `$SWOLL_BIN`.
pub fn swoll_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SWOLL_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/swoll
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("swoll"))
        .expect("test binary has a target directory")
}

/// The built `swoll` binary, when the test can run it (root, and built); `None` after printing
/// why where skipping is allowed.
pub fn runnable_swoll() -> Option<PathBuf> {
    if !is_root() && skip("needs root") {
        return None;
    }
    let bin = swoll_bin();
    if !bin.exists() && skip(&format!("{} is not built", bin.display())) {
        return None;
    }
    Some(bin)
}

/// True when the process runs as root (the probes need CAP_BPF and CAP_PERFMON).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A BPF filesystem of its own, mounted on a fresh temp dir and unmounted when dropped: every
/// mount of bpffs is a new, empty instance, so tests never see each other's pins (nor the
/// host's), and a test that dies leaves nothing pinned once the mount goes.
pub struct BpfFs {
    dir: TempDir,
}

impl BpfFs {
    /// Mounts one; `None` (after printing why) where that is allowed to fail.
    pub fn mount() -> Option<BpfFs> {
        let dir = TempDir::new("swoll-bpffs");
        let mounted = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir.0)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            skip("cannot mount a bpf filesystem (mount -t bpf)");
            return None;
        }
        Some(BpfFs { dir })
    }

    /// A pin path in it, as `swoll serve --pin-path` takes it.
    pub fn pin_path(&self) -> PathBuf {
        self.dir.0.join("swoll")
    }

    /// The pin sets under [`BpfFs::pin_path`], by name, sorted.
    pub fn sets(&self) -> Vec<String> {
        let mut sets: Vec<String> = std::fs::read_dir(self.pin_path())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        sets.sort();
        sets
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir.0).status();
    }
}

/// A running `swoll serve`, run as the DaemonSet runs it (see [`deployed`]), stopped with
/// SIGKILL when dropped.
pub struct Agent {
    /// `unshare`, whose child is the agent: killing it kills the agent's whole pid namespace.
    child: std::process::Child,
    /// The agent's pid in the test's (the host's) pid namespace.
    pid: u32,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its bpffs, unless the test chose a pin path (or `--no-pin`): dropped after the agent.
    _bpffs: Option<BpfFs>,
    /// Its root's mount point and memory cgroup.
    pod: Pod,
}

/// What a deployed run holds on the host: the mount point of its root and its memory cgroup,
/// removed when dropped (after its process has exited).
pub struct Pod {
    // Declared first, dropped first: the cgroup goes while the root is still there, no matter.
    memory: Option<deployed::MemoryCgroup>,
    _root: TempDir,
}

impl Pod {
    /// The memory cgroup the run is in, if one could be made here.
    pub fn memory_cgroup(&self) -> Option<&Path> {
        self.memory.as_ref().map(deployed::MemoryCgroup::dir)
    }
}

/// A `swoll` command (`serve`, `trace`, `selftest`, `top`) run as the DaemonSet runs the agent:
/// the manifest's capabilities, mounts and namespaces (see [`deployed`]), its `--proc-root`
/// given through `SWOLL_PROC_ROOT` as the image does. `env` values are paths the program reads
/// (a kubeconfig), mounted read-only at their own paths; `host_paths` replace the manifest's
/// host paths (a bpffs of the test's own for `/sys/fs/bpf`). Keep the returned [`Pod`] until
/// the process has exited. `None` (after printing why) where that may skip.
pub fn deployed_swoll(
    d: &manifest::Deployment,
    args: &[std::ffi::OsString],
    env: &[(&str, &Path)],
    host_paths: Vec<(PathBuf, PathBuf)>,
) -> Option<(Command, Pod)> {
    if !is_root() && skip("needs root") {
        return None;
    }
    if let Err(why) = deployed::available() {
        skip(&why);
        return None;
    }
    let bin = swoll_bin();
    if !bin.exists() {
        skip(&format!(
            "{} is not built (run `cargo build --release`)",
            bin.display()
        ));
        return None;
    }
    let root = TempDir::new("swoll-pod");
    let mut run = deployed::Run {
        host_paths,
        ..deployed::Run::default()
    };
    if let Some(proc_root) = d.arg("proc-root") {
        run.env.push(("SWOLL_PROC_ROOT".into(), proc_root.into()));
    }
    for (k, v) in env {
        run.env.push(((*k).to_owned(), v.as_os_str().to_owned()));
        if v.is_absolute() && v.exists() {
            run.shared.push(v.to_path_buf());
        }
    }
    let memory = d.memory_limit.and_then(deployed::MemoryCgroup::create);
    run.memory = memory.as_ref().map(|m| m.dir().to_owned());
    let cmd = deployed::command(d, &bin, args, &root.0, &run);
    Some((
        cmd,
        Pod {
            memory,
            _root: root,
        },
    ))
}

/// As [`deployed_swoll`], with plain string arguments.
pub fn deployed_command(args: &[&str], env: &[(&str, &Path)]) -> Option<(Command, Pod)> {
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    deployed_swoll(manifest::daemonset(), &args, env, Vec::new())
}

/// Sends `signal` to the program a [`deployed_command`] runs (`child` is its `unshare`, which
/// ignores SIGINT and SIGTERM while it waits).
pub fn signal_deployed(child: &std::process::Child, signal: i32) {
    let pid = deployed::child_of(child.id()).expect("the deployed program's pid");
    let pid = i32::try_from(pid).expect("pid");
    // SAFETY: signals a process this test started.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

/// `swoll serve` on a free loopback port with `extra` flags, as DaemonSet `d` runs it (see
/// [`Agent::start_with_env`] for the pin path): the command, its pod, the bpffs made for it and
/// the address it will listen on.
fn serve_command(
    d: &manifest::Deployment,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> Option<(Command, Pod, Option<BpfFs>, std::net::SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut args: Vec<std::ffi::OsString> =
        vec!["serve".into(), "--listen".into(), addr.to_string().into()];
    // Trace streams on a port of their own unless the test picks one: agents of tests
    // that run side by side must not compete for the default.
    if !extra.contains(&"--traces-listen") {
        args.extend(["--traces-listen".into(), "127.0.0.1:0".into()]);
    }
    let manifest_pins = d
        .arg("pin-path")
        .map(PathBuf::from)
        .expect("the DaemonSet passes --pin-path");
    // The manifest's bpffs volume: the host path mounted at the pin path's parent.
    let bpffs_mount = manifest_pins
        .parent()
        .expect("a pin path has a parent")
        .to_owned();
    let bpffs_host = d
        .mounts
        .iter()
        .find(|m| m.mount_path == bpffs_mount)
        .map(|m| m.host_path.clone())
        .expect("the DaemonSet mounts a bpffs at its pin path's parent");
    let mut host_paths = Vec::new();
    let bpffs = if extra.contains(&"--pin-path") || extra.contains(&"--no-pin") {
        None
    } else {
        let fs = BpfFs::mount()?;
        host_paths.push((bpffs_host.clone(), fs.dir.0.clone()));
        args.extend(["--pin-path".into(), manifest_pins.clone().into()]);
        Some(fs)
    };
    let mut extra_args = extra.iter();
    while let Some(&arg) = extra_args.next() {
        args.push(arg.into());
        if arg == "--pin-path" {
            let pin = Path::new(extra_args.next().expect("--pin-path takes a path"));
            let dir = pin.parent().expect("a pin path has a parent");
            host_paths.push((bpffs_host.clone(), dir.to_owned()));
            let name = pin.file_name().expect("a pin path has a name");
            args.push(bpffs_mount.join(name).into());
        }
    }
    let (cmd, pod) = deployed_swoll(d, &args, env, host_paths)?;
    Some((cmd, pod, bpffs, addr))
}

impl Agent {
    /// Starts `swoll serve` on a free loopback port with `extra` flags; `None` if it cannot run
    /// here (outside CI). Waits until `/readyz` answers 200.
    pub fn start(extra: &[&str]) -> Option<Agent> {
        Agent::start_with_env(extra, &[])
    }

    /// As [`Agent::start`], with environment variables (e.g. `KUBECONFIG`). Unless `extra` has
    /// `--pin-path` or `--no-pin`, the agent pins its probes where the manifest says
    /// (`--pin-path`), in a bpffs of its own mounted where the manifest mounts the host's. A
    /// `--pin-path` the test gives is a directory in a bpffs the test mounted: that bpffs is
    /// mounted in the agent's place of the host's, and the path translated.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &Path)]) -> Option<Agent> {
        Agent::start_as(manifest::daemonset(), extra, env)
    }

    /// As [`Agent::start_with_env`], run as DaemonSet `d` says (e.g. the chart rendered with
    /// other values: [`manifest::rendered_with`]).
    pub fn start_as(
        d: &manifest::Deployment,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Option<Agent> {
        let (mut cmd, pod, bpffs, addr) = serve_command(d, extra, env)?;
        // stdout (trace events, with --trace-stdout) is piped: a test reads it with
        // `Agent::stdout`, and no agent without that flag writes to it.
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawning swoll serve");
        let pid = deployed::child_of(child.id()).unwrap_or(0);
        let mut agent = Agent {
            child,
            pid,
            addr,
            _bpffs: bpffs,
            pod,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                skip(&format!("swoll serve exited at start: {status}"));
                return None;
            }
            if http_get(addr, "/readyz").is_ok_and(|(code, _)| code == 200) {
                return Some(agent);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "swoll serve not ready in 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Runs `swoll serve` with `extra` flags as [`Agent::start`] would, for a start that must
    /// fail: waits for it to exit (panicking if it becomes ready instead) and returns its output.
    pub fn run_to_exit(extra: &[&str]) -> Option<std::process::Output> {
        let (mut cmd, _pod, _bpffs, addr) = serve_command(manifest::daemonset(), extra, &[])?;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning swoll serve");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while child.try_wait().expect("waiting for swoll serve").is_none() {
            if http_get(addr, "/readyz").is_ok_and(|(code, _)| code == 200) {
                let _ = child.kill();
                panic!("swoll serve {extra:?} started, but should have refused to");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "swoll serve {extra:?} neither exited nor got ready in 120 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(child.wait_with_output().expect("swoll serve's output"))
    }

    /// The agent's stdout (trace events with `--trace-stdout`, one JSON object per line), as
    /// lines sent to a channel by a reader thread; once only.
    pub fn stdout(&mut self) -> std::sync::mpsc::Receiver<String> {
        use std::io::BufRead as _;
        let out = self
            .child
            .stdout
            .take()
            .expect("the agent's stdout, taken once");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Its pod: the memory cgroup it runs in.
    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// Its process id (in the test's pid namespace; in its own it is 1).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the agent's /proc/PID/status");
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix(" kB")?
                    .parse()
                    .ok()
            })
            .expect("VmRSS in /proc/PID/status")
    }

    /// Sends SIGKILL (no chance to clean up, as a crash or an OOM kill) and reaps it.
    pub fn kill(mut self) {
        self.sigkill();
        self.child.wait().expect("reaping swoll serve");
    }

    /// SIGKILL to the agent itself, then to `unshare` (which would take the agent with it).
    fn sigkill(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid)
            && pid > 0
        {
            // SAFETY: signals the agent our child started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.pid).expect("pid");
        // SAFETY: signals our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for swoll") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "swoll serve did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.sigkill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET over loopback: (status code, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        stream,
        // HTTP/1.0: the answer is never chunked (Prometheus chunks large HTTP/1.1 answers).
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {raw:.80}")))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of the sample line starting with `series` (name and labels) in a text exposition.
pub fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Starts `swoll-workload` (at `bin`) with `args` without waiting for it; returns the child and
/// the pid namespace it runs in (read from its first output line).
pub fn spawn_workload(bin: &str, args: &[&str]) -> (std::process::Child, u32) {
    use std::io::BufRead as _;
    let mut child = Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawning swoll-workload");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading swoll-workload");
    let ns = line
        .strip_prefix("pidns ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pidns line from swoll-workload: {line:?}"));
    (child, ns)
}

/// A real Prometheus server (Debian's `prometheus`) on loopback, scraping given targets every
/// second; killed when dropped.
pub struct Prometheus {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts it scraping `targets`; `None` (after printing why) if it is not installed here.
    pub fn start(targets: &[std::net::SocketAddr]) -> Option<Prometheus> {
        let bin = Path::new("/usr/bin/prometheus");
        if !bin.exists() {
            skip("Debian's prometheus is not installed (scripts/setup.sh --test installs it)");
            return None;
        }
        let dir = TempDir::new("swoll-prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: swoll\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.0.join("prometheus.yml"), config).expect("writing prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawning prometheus");
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !http_get(addr, "/-/ready").is_ok_and(|(code, _)| code == 200) {
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus not ready in 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Some(prometheus)
    }

    /// Runs an instant query through the HTTP API: (labels, value) per series of the vector.
    pub fn query(&self, promql: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
        let (code, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", urlencode(promql)),
        )
        .expect("querying prometheus");
        assert_eq!(code, 200, "{promql}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("prometheus JSON");
        assert_eq!(json["status"], "success", "{promql}: {body}");
        json["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("a value");
                (labels, value)
            })
            .collect()
    }

    /// Polls `promql` until `done` accepts its result, or panics after `secs` seconds.
    pub fn wait_for(
        &self,
        promql: &str,
        secs: u64,
        done: impl Fn(&[(std::collections::BTreeMap<String, String>, f64)]) -> bool,
    ) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let result = self.query(promql);
            if done(&result) {
                return result;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{promql} never gave the expected result: {result:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh `<prefix>-<pid>-<n>` directory.
    pub fn new(prefix: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `/metrics` until `series` (name and labels) has the value `want`, for up to `secs`
/// seconds; returns the last value seen and the last body. Counters only grow, and the agent
/// renders at each map read, so a read made while the workload ran shows less for a while.
pub fn wait_for_sample(
    addr: std::net::SocketAddr,
    series: &str,
    want: u64,
    secs: u64,
) -> (Option<u64>, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (code, body) = http_get(addr, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        let value = sample(&body, series);
        if value == Some(want) || std::time::Instant::now() > deadline {
            return (value, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// As [`expect_sample`] for a count of syscalls, allowing for the calls the kernel skipped: on
/// kernels that run the probes preemptibly (7.x) a `sys_exit` run can be skipped (see the
/// README's Reliability section), and the agent exports how many. Exact when none was skipped;
/// else the count must lie between `want` minus the skipped runs and `want`. Returns the count
/// and the last body.
pub fn expect_counted(
    addr: std::net::SocketAddr,
    series: &str,
    want: u64,
    secs: u64,
) -> (u64, String) {
    let (value, body) = wait_for_sample(addr, series, want, secs);
    let counted = value.unwrap_or(0);
    if counted == want {
        return (counted, body);
    }
    let skipped = sample(
        &body,
        "swoll_probe_recursion_misses_total{program=\"sys_exit\"}",
    )
    .unwrap_or(0);
    assert!(
        skipped > 0 && counted < want && counted + skipped >= want,
        "{series}: {counted} counted, {skipped} sys_exit runs skipped by the kernel, want {want}, in\n{body}"
    );
    eprintln!("the kernel skipped {skipped} sys_exit runs; {counted} of {want} counted");
    (counted, body)
}

/// As [`wait_for_sample`], panicking with the last body unless the value became `want`.
pub fn expect_sample(addr: std::net::SocketAddr, series: &str, want: u64, secs: u64) -> String {
    let (value, body) = wait_for_sample(addr, series, want, secs);
    assert_eq!(
        value,
        Some(want),
        "{series} after up to {secs} s in\n{body}"
    );
    body
}

/// A kubepods-style cgroup v2 directory for one container of one pod, as kubelet's systemd
/// driver and containerd name them; removed (with the pod's slices) when dropped.
pub struct PodCgroup {
    /// The container's scope directory: move processes here.
    pub dir: PathBuf,
    created: Vec<PathBuf>,
    _mount: Option<TempDir>,
}

impl PodCgroup {
    /// Creates `…/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/
    /// cri-containerd-<id>.scope` under the cgroup v2 mount (mounting cgroup2 on a temp dir if the
    /// system has none mounted).
    pub fn create(pod_uid: &str, container_id: &str) -> PodCgroup {
        let (root, mount) = cgroup2_root();
        let uid = pod_uid.replace('-', "_");
        let mut created = Vec::new();
        let mut dir = root;
        for part in [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{uid}.slice"),
            format!("cri-containerd-{container_id}.scope"),
        ] {
            dir = dir.join(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        PodCgroup {
            dir,
            created,
            _mount: mount,
        }
    }

    /// Removes the directories this cgroup created (its processes must have exited).
    pub fn remove(&mut self) {
        for dir in self.created.drain(..).rev() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        self.remove();
        // A cgroup2 we mounted ourselves is unmounted before its mount point is removed, so the
        // temp dir's removal never walks into the hierarchy.
        if let Some(mount) = &self._mount {
            let _ = Command::new("umount").arg("-l").arg(&mount.0).status();
        }
    }
}

/// The cgroup v2 mount point, mounting one on a temp dir if there is none.
fn cgroup2_root() -> (PathBuf, Option<TempDir>) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("reading /proc/self/mounts");
    if let Some(point) = mounts.lines().find_map(|l| {
        let f: Vec<_> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    }) {
        return (point, None);
    }
    let dir = TempDir::new("swoll-cgroup2");
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "none"])
        .arg(&dir.0)
        .status()
        .expect("running mount");
    assert!(status.success(), "mount -t cgroup2 failed");
    (dir.0.clone(), Some(dir))
}

/// A 64-hex-character container id that no real container has.
pub fn fake_container_id(seed: u64) -> String {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    (0..4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

/// A pod UID (8-4-4-4-12) made from `id`.
pub fn fake_pod_uid(id: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    )
}

/// `sys_exit` runs the kernel skipped so far (see `Probes::recursion_misses`); 0 where the
/// kernel does not report them.
pub fn exit_misses(probes: &Probes) -> u64 {
    probes
        .recursion_misses()
        .and_then(|m| m.into_iter().find(|(name, _)| *name == "sys_exit"))
        .map_or(0, |(_, misses)| misses)
}

/// Asserts that (pid_ns, nr, errno) counted exactly `want` calls, or, where the kernel skipped
/// `sys_exit` runs since `misses_before` (a preempted probe, seen on 7.x), that every missing
/// call is one of those counted misses: nothing is lost without being counted.
pub fn assert_counted(
    probes: &Probes,
    pid_ns: u32,
    nr: i64,
    errno: i32,
    want: u64,
    misses_before: u64,
) {
    let counted = value(probes, pid_ns, nr, errno).count;
    let missed = exit_misses(probes).saturating_sub(misses_before);
    if missed == 0 {
        assert_eq!(counted, want, "nr {nr} errno {errno} in pid-ns {pid_ns}");
    } else {
        eprintln!("the kernel skipped {missed} sys_exit runs; {counted} of {want} counted");
        assert!(
            counted <= want && counted + missed >= want,
            "nr {nr} errno {errno} in pid-ns {pid_ns}: {counted} counted + {missed} skipped by the kernel < {want}"
        );
    }
}
