//! Runs `swoll` the way the shipped DaemonSet runs it, without Kubernetes: the capabilities,
//! `no_new_privs`, read-only root and volume mounts of `deploy/kubernetes/daemonset.yaml`
//! (read through [`crate::manifest`]), in a pid and mount namespace of its own, as a pod has.
//!
//! The agent's view is built in a fresh mount namespace: a tmpfs root holding the system's
//! `/usr` and `/etc/ssl` read-only (the image's libraries and CA certificates), the `swoll`
//! binary at its host path, a procfs of
//! its own pid namespace at `/proc`, sysfs read-only at `/sys`, a few device nodes, and every
//! `hostPath` volume of the manifest at its `mountPath`, read-only where the manifest says so.
//! The root is then made read-only when the manifest asks for it, and the agent is started
//! through `chroot` and `setpriv` with the manifest's capabilities as its only ones (a
//! container runtime gives root exactly its added capabilities: bounding, permitted and
//! effective sets alike) and `no_new_privs`.
//!
//! The run joins a memory cgroup limited as the manifest limits the pod ([`MemoryCgroup`]): the
//! kernel charges the agent's BPF maps there too.
//!
//! Two things differ from a pod, on purpose:
//! - the network: the agent shares the test's, so tests reach it on loopback (a pod's network
//!   namespace is no privilege the agent uses);
//! - host paths a test substitutes: each test gives the agent a BPF filesystem of its own for
//!   the manifest's `/sys/fs/bpf`, so tests never see each other's pins; files the test shares
//!   with the agent (a kubeconfig) are bind-mounted read-only at their own paths, as a pod
//!   mounts a Secret.
//!
//! Capabilities the test process itself lacks cannot be granted: they are left out and printed
//! (this machine's sandbox has no `CAP_SYS_RESOURCE`; kernels since 5.11 do not need it).
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use crate::manifest::Deployment;

/// Settings of one deployed run besides the manifest's.
#[derive(Debug, Default)]
pub struct Run {
    /// Host paths to use instead of the manifest's `hostPath`s (e.g. `/sys/fs/bpf` → the test's
    /// own bpffs).
    pub host_paths: Vec<(PathBuf, PathBuf)>,
    /// Files or directories the agent reads, bind-mounted read-only at the same path.
    pub shared: Vec<PathBuf>,
    /// Environment variables (the agent's environment holds only these and `PATH`).
    pub env: Vec<(String, OsString)>,
    /// The memory cgroup the run joins (the pod's, with the manifest's memory limit).
    pub memory: Option<PathBuf>,
}

/// A memory cgroup limited as the manifest limits the pod (`resources.limits.memory`), which
/// the kernel charges the agent's memory and, since Linux 5.11, its BPF maps to; removed when
/// dropped (after the processes in it have exited).
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    /// A new cgroup limited to `limit` bytes under the cgroup v2 hierarchy if it has the memory
    /// controller, else under cgroup v1's memory hierarchy; `None` (after printing why) where
    /// neither is mounted.
    pub fn create(limit: u64) -> Option<MemoryCgroup> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "swoll-pod-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let points = |fstype: &str, option: Option<&str>| -> Vec<PathBuf> {
            mounts
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .filter(|f| {
                    f.len() > 3
                        && f[2] == fstype
                        && option.is_none_or(|o| f[3].split(',').any(|x| x == o))
                })
                .map(|f| PathBuf::from(f[1]))
                .collect()
        };
        let v2 = points("cgroup2", None).into_iter().find(|root| {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        });
        let (dir, limit_file) = if let Some(root) = v2 {
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
            (root.join(name), "memory.max")
        } else if let Some(root) = points("cgroup", Some("memory")).into_iter().next() {
            (root.join(name), "memory.limit_in_bytes")
        } else {
            eprintln!(
                "deployed: no memory cgroup controller mounted: the pod's memory limit is not applied"
            );
            return None;
        };
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cgroup = MemoryCgroup { dir };
        std::fs::write(cgroup.dir.join(limit_file), limit.to_string())
            .unwrap_or_else(|e| panic!("{limit_file} of {}: {e}", cgroup.dir.display()));
        Some(cgroup)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The processes may still be dying (SIGKILL is asynchronous): retry for a while.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("deployed: could not remove {}", self.dir.display());
    }
}

/// Whether this machine can build a deployed run (`unshare`, `setpriv`, `chroot`, `findmnt`).
pub fn available() -> Result<(), String> {
    for tool in ["unshare", "setpriv", "chroot", "findmnt", "mount"] {
        let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Err(format!("{tool} is not installed (util-linux, coreutils)"));
        }
    }
    Ok(())
}

/// Quotes `s` for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn path_str(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// A command that runs `bin` with `args` as DaemonSet `d` runs the agent. `root` is an empty
/// directory the run mounts its root filesystem on (inside its own mount namespace: nothing is
/// mounted where the test can see it). The returned command's process is `unshare`, whose only
/// child is `bin` (pid 1 of the new pid namespace): killing `unshare` kills it.
pub fn command(d: &Deployment, bin: &Path, args: &[OsString], root: &Path, run: &Run) -> Command {
    let (caps, missing) = crate::caps::grantable(d);
    if !missing.is_empty() {
        eprintln!(
            "deployed: this process cannot grant {missing:?} (not in its bounding set); the agent \
             runs with {caps:?}"
        );
    }
    let r = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut sh = vec!["set -eu".to_owned()];
    if let Some(memory) = &run.memory {
        // `0`: the writer itself, the shell that becomes the program.
        sh.push(format!(
            "echo 0 > {}",
            path_str(&memory.join("cgroup.procs"))
        ));
    }
    sh.push(format!(
        "mount -t tmpfs -o mode=755 swoll-pod {}",
        path_str(root)
    ));
    let mkdir = |p: &Path| format!("mkdir -p {}", path_str(p));
    // A read-only bind mount of `from` at `to` (recursively read-only: each submount too).
    let bind_ro = |from: &Path, to: &Path, dir: bool| {
        let make = if dir {
            format!("mkdir -p {}", path_str(to))
        } else {
            format!(
                "mkdir -p {} && touch {}",
                path_str(to.parent().unwrap_or(to)),
                path_str(to)
            )
        };
        format!(
            "{make}\nmount --rbind {f} {t}\nfindmnt -R -n -r -o TARGET {t} | while read -r m; do \
             mount -o remount,bind,ro \"$m\"; done",
            f = path_str(from),
            t = path_str(to)
        )
    };
    // The image: the system's /usr (merged-/usr symlinks beside it) and the binary.
    sh.push(bind_ro(Path::new("/usr"), &r(Path::new("/usr")), true));
    for link in ["bin", "lib", "lib64", "sbin"] {
        if Path::new("/").join(link).exists() {
            sh.push(format!(
                "ln -s usr/{link} {}",
                path_str(&r(Path::new(link)))
            ));
        }
    }
    sh.push(bind_ro(bin, &r(bin), false));
    // The image's CA certificates (distroless/cc ships them): the Kubernetes client loads the
    // system's roots even when the kubeconfig names its own CA.
    sh.push(bind_ro(
        Path::new("/etc/ssl"),
        &r(Path::new("/etc/ssl")),
        true,
    ));
    // What every container gets: its own procfs, sysfs read-only, a few devices.
    sh.push(mkdir(&r(Path::new("/proc"))));
    sh.push(format!(
        "mount -t proc proc {}",
        path_str(&r(Path::new("/proc")))
    ));
    sh.push(mkdir(&r(Path::new("/sys"))));
    sh.push(format!(
        "mount -t sysfs -o ro sysfs {}",
        path_str(&r(Path::new("/sys")))
    ));
    sh.push(mkdir(&r(Path::new("/dev"))));
    sh.push(format!(
        "mount -t tmpfs -o mode=755 dev {}",
        path_str(&r(Path::new("/dev")))
    ));
    for dev in ["null", "zero", "full", "random", "urandom"] {
        let to = r(&Path::new("/dev").join(dev));
        sh.push(format!(
            "touch {t} && mount --bind /dev/{dev} {t}",
            t = path_str(&to)
        ));
    }
    // The manifest's volumes.
    for m in &d.mounts {
        let host = run
            .host_paths
            .iter()
            .find(|(from, _)| *from == m.host_path)
            .map_or(m.host_path.as_path(), |(_, to)| to.as_path());
        let to = r(&m.mount_path);
        if m.read_only {
            sh.push(bind_ro(host, &to, true));
        } else {
            sh.push(format!(
                "{}\nmount --rbind {} {}",
                mkdir(&to),
                path_str(host),
                path_str(&to)
            ));
        }
    }
    for file in &run.shared {
        sh.push(bind_ro(file, &r(file), file.is_dir()));
    }
    if d.read_only_root {
        sh.push(format!("mount -o remount,ro {}", path_str(root)));
    }
    let mut setpriv = vec!["/usr/bin/setpriv".to_owned()];
    if d.no_new_privs {
        setpriv.push("--no-new-privs".to_owned());
    }
    let listed = |prefix: &str| {
        let mut v = vec![format!("{prefix}all")];
        v.extend(caps.iter().map(|c| format!("+{c}")));
        v.join(",")
    };
    setpriv.extend([
        format!("--reuid={}", d.run_as_user),
        format!("--regid={}", d.run_as_user),
        "--clear-groups".to_owned(),
        "--bounding-set".to_owned(),
        listed("-"),
        "--inh-caps".to_owned(),
        "-all".to_owned(),
        "--".to_owned(),
    ]);
    // The profiles the manifest sets are the ones a test can reproduce by applying none; another
    // profile must be applied here before the tests may claim to run as deployed.
    assert_eq!(
        d.seccomp, "Unconfined",
        "the DaemonSet's seccomp profile changed: teach tests/kernel/src/deployed.rs to apply it"
    );
    assert!(
        d.apparmor.as_deref().is_none_or(|p| p == "Unconfined") || !apparmor_enabled(),
        "the DaemonSet's AppArmor profile changed: teach tests/kernel/src/deployed.rs to apply it"
    );
    let exec = setpriv
        .iter()
        .map(|s| quote(s))
        .chain(std::iter::once(path_str(bin)))
        .chain(args.iter().map(|a| quote(&a.to_string_lossy())))
        .collect::<Vec<_>>()
        .join(" ");
    sh.push(format!("exec chroot {} {exec}", path_str(root)));
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
    ])
    .arg(sh.join("\n"))
    .env_clear()
    .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    .envs(run.env.iter().map(|(k, v)| (k, v)));
    for var in ["RUST_LOG", "RUST_BACKTRACE"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// Whether the kernel enforces AppArmor (a manifest without `Unconfined` would be confined).
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

/// The pid (in the test's pid namespace) of the only child of `unshare` process `pid`: the
/// deployed program. Waits up to 10 s for it to be forked.
pub fn child_of(pid: u32) -> Option<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().ok();
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
