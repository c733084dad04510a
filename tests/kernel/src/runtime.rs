//! A real container runtime (podman with runc, from Debian) for tests that run workloads and
//! the agent itself in containers.
//!
//! No registry is reachable, so both images are built here from local files and imported with
//! `podman import`: a workload image of busybox-static, and an agent image of the release
//! binary and the shared libraries `ldd` lists for it. Each image's tag is a hash of its
//! content, so a later run with the same files finds it in the storage and imports nothing;
//! nothing is ever pulled.
//!
//! podman runs with a storage of its own (`$TMPDIR/swoll-podman`), never the host's default:
//! the tests leave no images or containers where other tools look, and the storage's locks make
//! test binaries running side by side safe. Every container is removed (`podman rm -f`) when
//! its [`Container`] guard drops, so also when a test panics, and the pod cgroups the runtime
//! created are removed with their [`PodParent`].
//!
//! The machine's cgroup layout may be hybrid (v1 controllers, v2 at `/sys/fs/cgroup/unified`):
//! crun refuses that, runc works, so runc it is; and the cgroupfs manager, as kubelet's cgroupfs
//! driver, so the tests choose the pod cgroups' names themselves.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{BpfFs, TempDir, http_get, manifest, skip, swoll_bin};

/// Where the agent's binary sits in its image (as the repository's Dockerfile puts it).
pub const AGENT_BIN: &str = "/usr/local/bin/swoll";
/// Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";
/// The CA bundle of Debian's `ca-certificates`, at the path distroless images have it.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where a container of the agent finds the kubeconfig (mounted read-only, `KUBECONFIG`).
const KUBECONFIG_IN_CONTAINER: &str = "/etc/swoll/kubeconfig";

/// Resource limits given explicitly: podman's default asks for a `nofile` limit this sandbox
/// may not raise.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=1000:1000",
];

/// podman with runc, the cgroupfs manager and the tests' own storage.
pub struct Podman {
    global: Vec<String>,
    workload_image: OnceLock<String>,
    agent_image: OnceLock<String>,
}

/// The one [`Podman`] of this test binary; `None` (after [`skip`]) where podman, runc or root
/// is missing. Panics under `CI=true` then, as CI installs them (`scripts/setup.sh --test`).
pub fn podman() -> Option<&'static Podman> {
    static PODMAN: OnceLock<Option<Podman>> = OnceLock::new();
    PODMAN
        .get_or_init(|| {
            if !crate::is_root() {
                skip("a real container runtime needs root");
                return None;
            }
            for tool in ["podman", "runc", "conmon"] {
                let found = Command::new(tool)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !found {
                    skip(&format!(
                        "{tool} is not installed (scripts/setup.sh --test installs podman, runc \
                         and busybox-static)"
                    ));
                    return None;
                }
            }
            if !busybox_is_static(Path::new(BUSYBOX)) {
                skip(&format!(
                    "{BUSYBOX} is not busybox-static (scripts/setup.sh --test installs it)"
                ));
                return None;
            }
            let base = std::env::temp_dir().join("swoll-podman");
            let path = |sub: &str| base.join(sub).to_string_lossy().into_owned();
            let global = [
                "--root",
                &path("storage"),
                "--runroot",
                &path("run"),
                "--tmpdir",
                &path("tmp"),
                "--storage-driver",
                "overlay",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ]
            .map(str::to_owned)
            .to_vec();
            Some(Podman {
                global,
                workload_image: OnceLock::new(),
                agent_image: OnceLock::new(),
            })
        })
        .as_ref()
}

impl Podman {
    /// A `podman` command with the global options.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(&self.global);
        cmd
    }

    /// Runs `podman <args>`: its stdout, trimmed, or the failure with stderr.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("spawning podman: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "podman {args:?}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// As [`Podman::try_run`], panicking on failure.
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The workload image: busybox-static as `/bin/busybox` and `/bin/sh` (ash runs busybox's
    /// applets itself, without links). Built once per test binary, imported once per content.
    pub fn workload_image(&self) -> &str {
        self.workload_image.get_or_init(|| {
            self.image(
                "swoll-test-busybox",
                &[(PathBuf::from("/bin/busybox"), PathBuf::from(BUSYBOX))],
                // runc looks the user up in the image's /etc/passwd and /etc/group before it
                // starts the process, in the container's pid namespace: without them that is
                // two failed `openat` calls counted for the container.
                &[
                    ("/etc/passwd", "root:x:0:0:root:/:/bin/sh\n"),
                    ("/etc/group", "root:x:0:\n"),
                ],
                &[("/bin/sh", "busybox")],
                None,
            )
        })
    }

    /// The agent image: the release binary at [`AGENT_BIN`] and every shared library `ldd`
    /// lists for it at its own path (the dynamic loader included), the binary as the
    /// entrypoint as in the Dockerfile. Built once per test binary, imported once per content.
    pub fn agent_image(&self) -> &str {
        self.agent_image.get_or_init(|| {
            let bin = swoll_bin();
            assert!(
                bin.exists(),
                "{} is not built (cargo build --release)",
                bin.display()
            );
            let mut files = vec![(PathBuf::from(AGENT_BIN), bin.clone())];
            files.extend(shared_libraries(&bin).into_iter().map(|l| (l.clone(), l)));
            // The system's CA bundle, as the Dockerfile's base image (distroless/cc-debian12)
            // has it: the agent's Kubernetes client loads the system's roots even for a plain
            // HTTP API server, and does not start without any.
            let roots = PathBuf::from(CA_BUNDLE);
            assert!(
                roots.exists(),
                "{CA_BUNDLE} is missing (apt-get install ca-certificates)"
            );
            files.push((roots.clone(), roots));
            self.image(
                "swoll-test-agent",
                &files,
                &[],
                &[],
                Some(&format!("ENTRYPOINT [\"{AGENT_BIN}\"]")),
            )
        })
    }

    /// `localhost/<name>:<content hash>`, imported from a root of `files` ((path in the image,
    /// source)), `texts` ((path, content)) and `links` ((path, target)) unless the storage has
    /// it already.
    fn image(
        &self,
        name: &str,
        files: &[(PathBuf, PathBuf)],
        texts: &[(&str, &str)],
        links: &[(&str, &str)],
        change: Option<&str>,
    ) -> String {
        let mut sums = Command::new("sha256sum");
        sums.args(files.iter().map(|(_, source)| source));
        let sums = sums.output().expect("running sha256sum");
        assert!(sums.status.success(), "sha256sum failed");
        // Hashes of the sources, where they go, the links and the image's config: the tag.
        let mut manifest = String::from_utf8_lossy(&sums.stdout)
            .lines()
            .zip(files)
            .map(|(line, (path, _))| {
                format!(
                    "{} {}\n",
                    line.split(' ').next().unwrap_or(""),
                    path.display()
                )
            })
            .collect::<String>();
        for (path, text) in texts {
            manifest.push_str(&format!("{} {path}\n", sha256_hex(text.as_bytes())));
        }
        for (path, target) in links {
            manifest.push_str(&format!("{path} -> {target}\n"));
        }
        manifest.push_str(change.unwrap_or(""));
        let tag = format!(
            "localhost/{name}:{}",
            &sha256_hex(manifest.as_bytes())[..16]
        );
        if self.try_run(&["image", "exists", &tag]).is_ok() {
            eprintln!("image {tag} is in the storage already");
            return tag;
        }
        let root = TempDir::new("swoll-image");
        for (path, source) in files {
            let dest = root.0.join(path.strip_prefix("/").unwrap_or(path));
            std::fs::create_dir_all(dest.parent().expect("a parent"))
                .unwrap_or_else(|e| panic!("mkdir for {}: {e}", dest.display()));
            // `copy` follows symbolic links: the image gets the file under the listed name.
            std::fs::copy(source, &dest).unwrap_or_else(|e| {
                panic!("copying {} to {}: {e}", source.display(), dest.display())
            });
        }
        for (path, text) in texts {
            let dest = root.0.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&dest, text).expect("writing a file of the image");
        }
        for (path, target) in links {
            let link = root.0.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(link.parent().expect("a parent")).expect("mkdir");
            std::os::unix::fs::symlink(target, &link).expect("symlink");
        }
        let mut tar = Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&root.0)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning tar");
        let mut import = self.command();
        import.arg("import").arg("--quiet");
        if let Some(change) = change {
            import.args(["--change", change]);
        }
        let import = import
            .args(["-", &tag])
            .stdin(tar.stdout.take().expect("tar's stdout"))
            .output()
            .expect("spawning podman import");
        assert!(tar.wait().expect("waiting for tar").success(), "tar failed");
        assert!(
            import.status.success(),
            "podman import {tag}: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        eprintln!("imported {tag}");
        // Older builds of this image go (one in use by a running test stays).
        let repository = tag.rsplit_once(':').map_or(tag.as_str(), |(r, _)| r);
        let listed = self
            .try_run(&["images", "--format", "{{.Repository}}:{{.Tag}}", repository])
            .unwrap_or_default();
        for old in listed.lines().filter(|t| *t != tag) {
            let _ = self.try_run(&["rmi", old]);
        }
        tag
    }
}

/// True if `path` is a statically linked ELF binary (busybox-static, not Debian's dynamic
/// `busybox` package).
fn busybox_is_static(path: &Path) -> bool {
    path.exists()
        && Command::new("ldd").arg(path).output().is_ok_and(|o| {
            !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")
        })
}

/// The absolute paths of the shared libraries (and the loader) `ldd` lists for `bin`.
pub fn shared_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("running ldd");
    assert!(out.status.success(), "ldd {}: {out:?}", bin.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let libs: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, `/lib64/ld-linux….so.2 (0x…)`
            // or `linux-vdso.so.1 (0x…)` (the kernel's, no file).
            let path = line
                .split_once("=>")
                .map_or(line, |(_, rest)| rest)
                .split_whitespace()
                .next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    assert!(
        libs.iter()
            .any(|l| l.to_string_lossy().contains("ld-linux")),
        "no dynamic loader in ldd's output:\n{text}"
    );
    libs
}

/// The SHA-256 of `data` in hex (`sha256sum`).
fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("writing to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .expect("a hash")
        .to_owned()
}

/// A container, removed (`podman rm -f`) when dropped.
pub struct Container {
    podman: &'static Podman,
    /// The full id podman assigned (64 hex characters): the id kubelet would report.
    pub id: String,
    /// What the test calls it, for messages.
    pub what: String,
}

impl Container {
    /// `podman run -d <args>`; panics (with podman's error) if it does not start.
    pub fn run(podman: &'static Podman, what: &str, args: &[&str]) -> Container {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(&ULIMITS);
        all.extend_from_slice(args);
        let id = podman.run(&all);
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "podman run printed no container id: {id:?}"
        );
        Container {
            podman,
            id,
            what: what.to_owned(),
        }
    }

    /// `podman inspect --format <format>`.
    pub fn inspect(&self, format: &str) -> String {
        self.podman.run(&[
            "inspect",
            "--type",
            "container",
            "--format",
            format,
            &self.id,
        ])
    }

    /// True while it runs.
    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// Its first process, as the host numbers it.
    pub fn pid(&self) -> u32 {
        let pid = self.inspect("{{.State.Pid}}");
        pid.parse().ok().filter(|p| *p != 0).unwrap_or_else(|| {
            panic!(
                "{} has no process (pid {pid:?}):\n{}",
                self.what,
                self.logs()
            )
        })
    }

    /// The inode of its pid namespace (the `kns` label).
    pub fn pid_ns(&self) -> u32 {
        swoll::host::pid_ns_inode(Path::new(&format!("/proc/{}/ns/pid", self.pid())))
            .expect("reading the container's pid namespace")
    }

    /// Its output so far (stdout and stderr).
    pub fn logs(&self) -> String {
        let out = self
            .podman
            .command()
            .args(["logs", &self.id])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// SIGKILL to every process of it, as an OOM kill or a node's crash: nothing runs on, and
    /// nothing is cleaned up by the process itself. The container stays (stopped) until
    /// dropped.
    pub fn kill(&self) {
        self.podman.run(&["kill", "--signal", "KILL", &self.id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running() {
            assert!(
                Instant::now() < deadline,
                "{} still runs after SIGKILL",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(err) = self
            .podman
            .try_run(&["rm", "--force", "--time", "0", &self.id])
        {
            eprintln!("removing container {} ({}): {err}", self.what, self.id);
        }
    }
}

/// How kubelet names a pod's cgroup, by its cgroup driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `/kubepods/<qos>/pod<uid>` (dashes).
    Cgroupfs,
    /// `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice`:
    /// needs podman's systemd manager (its cgroupfs manager refuses a `.slice` parent).
    Systemd,
}

/// A pod's cgroup (the containers' `--cgroup-parent`): the directories the runtime creates for
/// it in every hierarchy are removed when this drops (after the containers: declare it first).
pub struct PodParent {
    /// The path to pass as `--cgroup-parent`.
    pub path: String,
    /// (directory, whether this pod's run created it), outermost first, in every hierarchy.
    levels: Vec<(PathBuf, bool)>,
}

impl PodParent {
    /// The cgroup of pod `uid` in QoS class `qos` (`burstable`, `besteffort`, or `""` for a
    /// Guaranteed pod, which has no QoS level) as `driver` names it.
    pub fn new(driver: Driver, qos: &str, uid: &str) -> PodParent {
        let parts: Vec<String> = match driver {
            Driver::Cgroupfs => ["kubepods", qos, &format!("pod{uid}")]
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            Driver::Systemd if qos.is_empty() => vec![
                "kubepods.slice".to_owned(),
                format!("kubepods-pod{}.slice", uid.replace('-', "_")),
            ],
            Driver::Systemd => vec![
                "kubepods.slice".to_owned(),
                format!("kubepods-{qos}.slice"),
                format!("kubepods-{qos}-pod{}.slice", uid.replace('-', "_")),
            ],
        };
        let mut levels = Vec::new();
        for root in cgroup_mounts() {
            let mut dir = root;
            for part in &parts {
                dir = dir.join(part);
                levels.push((dir.clone(), !dir.exists()));
            }
        }
        PodParent {
            path: format!("/{}", parts.join("/")),
            levels,
        }
    }
}

impl Drop for PodParent {
    fn drop(&mut self) {
        // The pod level and whatever the runtime left below it (podman's `conmon` cgroup on v1),
        // then the levels above that did not exist before; rmdir only, so a cgroup that still
        // has processes, or that another test uses, stays.
        for (dir, created) in self.levels.iter().rev() {
            let is_pod = dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("pod"));
            if is_pod {
                remove_cgroup_tree(dir);
            } else if *created {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// rmdir of `dir` and every cgroup below it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The mount points of every cgroup hierarchy (v1 and v2).
fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .expect("reading /proc/self/mounts")
        .lines()
        .filter_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            matches!(f.get(2), Some(&"cgroup" | &"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// A `sh -c` script for the workload image that makes exactly `n` failed `openat` calls
/// (ENOENT), `pause` (a `sleep` argument, e.g. `0.01`) apart if given, then stays alive.
///
/// `true </nope-$i` is one `openat(AT_FDCWD, "/nope-$i", O_RDONLY)` made by the shell itself:
/// `true`, `[` and `$((…))` are ash builtins, so no other process and no other file is
/// involved (strace of busybox 1.35: the loop makes no other `openat`, the static binary's
/// start none at all); the failed redirection only skips `true`. `sleep` runs in a forked
/// child (`clock_nanosleep`), which opens nothing.
pub fn failing_opens_script(n: u64, pause: Option<&str>) -> String {
    let pause = pause.map(|p| format!(" sleep {p};")).unwrap_or_default();
    format!(
        "i=0; while [ $i -lt {n} ]; do true </nope-$i;{pause} i=$((i+1)); done; \
         echo done >&2; while :; do sleep 3600; done"
    )
}

/// Runs a workload container in pod cgroup `parent`: `sh -c script`, without a network.
pub fn run_workload(
    podman: &'static Podman,
    what: &str,
    parent: &PodParent,
    script: &str,
) -> Container {
    let image = podman.workload_image();
    Container::run(
        podman,
        what,
        &[
            "--network",
            "none",
            "--cgroup-parent",
            &parent.path,
            image,
            "/bin/sh",
            "-c",
            script,
        ],
    )
}

/// The agent in a container, as the DaemonSet runs it; removed when dropped.
pub struct AgentContainer {
    /// The container.
    pub container: Container,
    /// Where its `/metrics` answers (loopback of the host's network).
    pub addr: std::net::SocketAddr,
}

impl AgentContainer {
    /// Runs the agent image with the shipped DaemonSet's securityContext, volumes and args (see
    /// [`agent_args`]), the test's own bpffs for the host's `/sys/fs/bpf`, `kubeconfig` mounted
    /// read-only as `KUBECONFIG`, watching the pods of `node`; waits until `/readyz` answers
    /// 200 (panicking with the container's log if it exits or is not ready in 30 s).
    pub fn start(
        podman: &'static Podman,
        bpffs: &BpfFs,
        kubeconfig: &Path,
        node: &str,
    ) -> AgentContainer {
        let deployment = manifest::daemonset();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let mut args: Vec<String> = vec![
            // What the DaemonSet says about the process: root, no other user.
            format!("--user={}:0", deployment.run_as_user),
            "--cap-drop=all".into(),
        ];
        let (grantable, missing) = crate::caps::grantable(manifest::daemonset());
        if !missing.is_empty() {
            eprintln!(
                "this machine's bounding set lacks {missing:?}: the agent's container gets \
                 {grantable:?} of the DaemonSet's capabilities"
            );
        }
        args.extend(grantable.iter().map(|c| format!("--cap-add={c}")));
        if deployment.read_only_root {
            // Kubernetes mounts no tmpfs anywhere for readOnlyRootFilesystem; podman would on
            // /tmp, /run and /var/tmp.
            args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        if deployment.no_new_privs {
            args.push("--security-opt=no-new-privileges".into());
        }
        match deployment.seccomp.as_str() {
            "Unconfined" => args.push("--security-opt=seccomp=unconfined".into()),
            other => panic!(
                "the DaemonSet's seccompProfile is {other:?}: this test runs podman's profiles, \
                 not the node's, and cannot reproduce it"
            ),
        }
        match deployment.apparmor.as_deref() {
            None => {}
            Some("Unconfined") => args.push("--security-opt=apparmor=unconfined".into()),
            Some(other) => panic!(
                "the DaemonSet's appArmorProfile is {other:?}, which this test cannot reproduce"
            ),
        }
        assert!(
            !deployment.host_pid,
            "the DaemonSet shares the host's pid namespace: run the container with --pid=host"
        );
        // The agent's own pid namespace (hostPID: false) is podman's default. The host's network
        // though: the test reaches the agent, and the agent the fake API server, on loopback.
        // The DaemonSet gives it a network namespace of its own, but no network namespace is a
        // privilege the agent uses (it reads every process through the host's procfs), so this
        // does not widen what the test shows.
        args.push("--network=host".into());
        for mount in &deployment.mounts {
            let host = if mount.mount_path == Path::new("/sys/fs/bpf") {
                // The test's own bpffs: tests never share pins, and none touches the host's.
                bpffs.pin_path().parent().expect("the bpffs").to_owned()
            } else {
                mount.host_path.clone()
            };
            args.push(format!(
                "--volume={}:{}{}",
                host.display(),
                mount.mount_path.display(),
                if mount.read_only { ":ro" } else { "" }
            ));
        }
        args.push(format!(
            "--volume={}:{KUBECONFIG_IN_CONTAINER}:ro",
            kubeconfig.display()
        ));
        args.push(format!("--env=KUBECONFIG={KUBECONFIG_IN_CONTAINER}"));
        args.push(podman.agent_image().to_owned());
        args.extend(agent_args(addr, node));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let container = Container::run(podman, "the agent", &args);
        let agent = AgentContainer { container, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(addr, "/readyz").is_ok_and(|(code, _)| code == 200) {
                return agent;
            }
            assert!(
                agent.container.running(),
                "the agent's container exited:\n{}",
                agent.container.logs()
            );
            assert!(
                Instant::now() < deadline,
                "the agent's container is not ready in 30 s:\n{}",
                agent.container.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The DaemonSet's `args`, as written, with what a test must choose instead: `--listen` on
/// `addr` (loopback of the host's network), `--interval=500ms` (the tests wait on reads),
/// `--traces-listen` on a free port (agents of other tests share the host's network), and the
/// downward-API variables filled in (`NODE_NAME` = `node`, `POD_NAMESPACE` = `swoll`).
/// `--proc-root`, `--pin-path`, `--labels`, `--host` and the rest stay as the manifest has them.
pub fn agent_args(addr: std::net::SocketAddr, node: &str) -> Vec<String> {
    let deployment = manifest::daemonset();
    let replaced = |name: &str, value: &str| format!("--{name}={value}");
    let mut args = Vec::new();
    let mut skip_value = false;
    for arg in &deployment.args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let (name, inline) = arg.strip_prefix("--").map_or((None, false), |rest| {
            let name = rest.split('=').next().unwrap_or(rest);
            (Some(name.to_owned()), rest.contains('='))
        });
        let value = match name.as_deref() {
            Some("listen") => Some(addr.to_string()),
            Some("interval") => Some("500ms".to_owned()),
            Some("traces-listen") => Some("127.0.0.1:0".to_owned()),
            _ => None,
        };
        if let (Some(name), Some(value)) = (&name, value) {
            args.push(replaced(name, &value));
            // `--name value`: the value is the next argument.
            skip_value = !inline;
            continue;
        }
        args.push(
            arg.replace("$(NODE_NAME)", node)
                .replace("$(POD_NAMESPACE)", "swoll"),
        );
    }
    // What the test needs whatever the manifest says: its address, its reads, this node's pods.
    for (flag, value) in [
        ("listen", addr.to_string()),
        ("interval", "500ms".to_owned()),
        ("node-name", node.to_owned()),
    ] {
        if !args.iter().any(|a| a.starts_with(&format!("--{flag}="))) {
            args.push(replaced(flag, &value));
        }
    }
    assert!(
        !args.iter().any(|a| a.contains("$(")),
        "a variable the test does not fill in: {args:?}"
    );
    args
}
