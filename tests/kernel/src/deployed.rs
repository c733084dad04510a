//! Runs `swoll` the way the shipped DaemonSet runs it, without Kubernetes: the capabilities,
//! `no_new_privs`, read-only root and volume mounts of `deploy/kubernetes/daemonset.yaml`
//! (read through [`crate::manifest`]), in a pid and mount namespace of its own, as a pod has.
//!
//! The agent's view is built in a fresh mount namespace: a tmpfs root holding the system's
//! `/usr` and `/etc/ssl` read-only (the image's libraries and CA certificates), the `swoll`
//! binary at its host path, a procfs of its own pid namespace at `/proc`, sysfs read-only at
//! `/sys`, a few device nodes, and every `hostPath` volume of the manifest at its `mountPath`,
//! read-only where the manifest says so. The root is then made read-only when the manifest asks
//! for it, and the agent is started through `unshare` (its pid namespace, `--root`) and
//! `setpriv` with the manifest's capabilities as its only ones (a container runtime gives root
//! exactly its added capabilities: bounding, permitted and effective sets alike) and
//! `no_new_privs`.
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
    ffi::{CString, OsString},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
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

/// Whether this machine can build a deployed run (`unshare` and `setpriv` of util-linux).
pub fn available() -> Result<(), String> {
    for tool in ["/usr/bin/unshare", "/usr/bin/setpriv"] {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} is not installed (util-linux)"));
        }
    }
    Ok(())
}

/// One step of building the pod's view, run in the forked child before it execs `unshare`.
/// Everything a step needs is made before the fork: after it only system calls run (the test
/// process has threads, so the child must not allocate).
enum Step {
    Mkdir(CString),
    /// An empty file to bind a file onto.
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
        /// EINVAL (not a mount point) is no failure: a submount the recursive bind did not copy
        /// (one hidden under a later mount on a parent path, as in the test VMs' `/usr`).
        if_mounted: bool,
    },
    /// Joins the cgroup whose `cgroup.procs` this is.
    Join(CString),
}

/// A step and what it does, for the message if it fails.
struct Planned {
    step: Step,
    what: Vec<u8>,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("a path without NUL")
}

/// The steps that build the pod's view, and the host's mount points (read once) for the
/// read-only bind mounts' submounts.
struct Plan {
    steps: Vec<Planned>,
    mounts: Vec<PathBuf>,
}

impl Plan {
    fn new() -> Plan {
        Plan {
            steps: Vec::new(),
            mounts: mount_points(),
        }
    }

    fn push(&mut self, step: Step, what: String) {
        let mut what = format!("deployed: {what} failed: ").into_bytes();
        what.shrink_to_fit();
        self.steps.push(Planned { step, what });
    }

    fn mkdir(&mut self, dir: &Path) {
        // Each missing ancestor too (`mkdir -p`); EEXIST is fine.
        let mut at = PathBuf::new();
        for part in dir.components() {
            at.push(part);
            self.push(Step::Mkdir(cstr(&at)), format!("mkdir {}", at.display()));
        }
    }

    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) {
        self.push(
            Step::Mount {
                source: source.map(cstr),
                target: cstr(target),
                fstype: fstype.map(|f| CString::new(f).expect("no NUL")),
                flags,
                data: data.map(|d| CString::new(d).expect("no NUL")),
                if_mounted: false,
            },
            format!(
                "mount {} on {} ({fstype:?}, flags {flags:#x})",
                source.map_or("-".into(), |s| s.display().to_string()),
                target.display()
            ),
        );
    }

    /// Makes the mount at `at` read-only; with `if_mounted`, a path that is no mount point
    /// (see [`Step::Mount`]) is no failure.
    fn remount_read_only(&mut self, at: &Path, if_mounted: bool) {
        let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
        self.push(
            Step::Mount {
                source: None,
                target: cstr(at),
                fstype: None,
                flags,
                data: None,
                if_mounted,
            },
            format!("remount {} read-only", at.display()),
        );
    }

    /// A bind mount of `from` at `to` (recursively: submounts too), each mount read-only
    /// where `read_only`.
    fn bind(&mut self, from: &Path, to: &Path, read_only: bool) {
        if from.is_dir() {
            self.mkdir(to);
        } else {
            self.mkdir(to.parent().unwrap_or(to));
            self.push(Step::Touch(cstr(to)), format!("touch {}", to.display()));
        }
        self.mount(Some(from), to, None, libc::MS_BIND | libc::MS_REC, None);
        if read_only {
            self.remount_read_only(to, false);
            let subs: Vec<PathBuf> = self
                .mounts
                .iter()
                .filter_map(|m| Some(to.join(m.strip_prefix(from).ok()?)))
                .filter(|at| at != to)
                .collect();
            for at in subs {
                self.remount_read_only(&at, true);
            }
        }
    }

    /// Runs the steps; on failure writes which one to stderr and returns the error.
    ///
    /// # Safety
    /// Runs in a forked child of a multi-threaded process: only system calls, no allocation.
    unsafe fn run(&self) -> std::io::Result<()> {
        for planned in &self.steps {
            // SAFETY: each call reads the NUL-terminated strings the plan owns, which outlive
            // the call; none allocates or takes a lock.
            let ok = unsafe {
                match &planned.step {
                    Step::Mkdir(dir) => {
                        libc::mkdir(dir.as_ptr(), 0o755) == 0
                            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)
                    }
                    Step::Touch(file) => {
                        let fd = libc::open(
                            file.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        );
                        fd >= 0 && libc::close(fd) == 0
                    }
                    Step::Symlink { target, link } => {
                        libc::symlink(target.as_ptr(), link.as_ptr()) == 0
                    }
                    Step::Mount {
                        source,
                        target,
                        fstype,
                        flags,
                        data,
                        if_mounted,
                    } => {
                        let ptr = |c: &Option<CString>| {
                            c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
                        };
                        libc::mount(
                            ptr(source),
                            target.as_ptr(),
                            ptr(fstype),
                            *flags,
                            ptr(data).cast(),
                        ) == 0
                            || (*if_mounted
                                && std::io::Error::last_os_error().raw_os_error()
                                    == Some(libc::EINVAL))
                    }
                    Step::Join(procs) => {
                        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        // `0`: the writer itself.
                        let written = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        written
                    }
                }
            };
            if !ok {
                let err = std::io::Error::last_os_error();
                // SAFETY: writes bytes the plan owns to stderr.
                unsafe {
                    libc::write(2, planned.what.as_ptr().cast(), planned.what.len());
                    libc::write(2, b"see the error that follows\n".as_ptr().cast(), 27);
                }
                return Err(err);
            }
        }
        Ok(())
    }
}

/// The host's mount points, from `/proc/self/mountinfo`, in mount order.
fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

/// A command that runs `bin` with `args` as DaemonSet `d` runs the agent. `root` is an empty
/// directory the run mounts its root filesystem on, in a mount namespace of its own (nothing is
/// mounted where the test can see it). The returned command's process is `unshare`, whose only
/// child is `bin` (pid 1 of the new pid namespace): killing `unshare` kills it.
///
/// The pod's view is built by the forked child itself, with system calls, before it execs
/// `unshare`: no shell and no process per mount, which under the VMs' emulation would cost
/// seconds per agent. `unshare` then makes the pid namespace, chroots into `root` and mounts
/// that namespace's procfs at `/proc`; `setpriv` drops to the manifest's capabilities.
pub fn command(d: &Deployment, bin: &Path, args: &[OsString], root: &Path, run: &Run) -> Command {
    let (caps, missing) = crate::caps::grantable(d);
    if !missing.is_empty() {
        eprintln!(
            "deployed: this process cannot grant {missing:?} (not in its bounding set); the agent \
             runs with {caps:?}"
        );
    }
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
    let r = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut plan = Plan::new();
    if let Some(memory) = &run.memory {
        plan.push(
            Step::Join(cstr(&memory.join("cgroup.procs"))),
            format!("joining {}", memory.display()),
        );
    }
    plan.mount(
        Some(Path::new("swoll-pod")),
        root,
        Some("tmpfs"),
        0,
        Some("mode=755"),
    );
    // The image: the system's /usr (merged-/usr symlinks beside it), its CA certificates
    // (distroless/cc ships them; the Kubernetes client loads the system's roots even when the
    // kubeconfig names its own CA) and the binary.
    plan.bind(Path::new("/usr"), &r(Path::new("/usr")), true);
    for link in ["bin", "lib", "lib64", "sbin"] {
        if Path::new("/").join(link).exists() {
            plan.push(
                Step::Symlink {
                    target: cstr(&Path::new("usr").join(link)),
                    link: cstr(&r(Path::new(link))),
                },
                format!("symlink /{link}"),
            );
        }
    }
    plan.bind(Path::new("/etc/ssl"), &r(Path::new("/etc/ssl")), true);
    plan.bind(bin, &r(bin), true);
    // What every container gets besides its own procfs (unshare mounts it): sysfs read-only, a
    // few devices.
    let ro_flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    plan.mkdir(&r(Path::new("/proc")));
    plan.mkdir(&r(Path::new("/sys")));
    plan.mount(
        Some(Path::new("sysfs")),
        &r(Path::new("/sys")),
        Some("sysfs"),
        ro_flags,
        None,
    );
    plan.mkdir(&r(Path::new("/dev")));
    plan.mount(
        Some(Path::new("dev")),
        &r(Path::new("/dev")),
        Some("tmpfs"),
        libc::MS_NOSUID,
        Some("mode=755"),
    );
    for dev in ["null", "zero", "full", "random", "urandom"] {
        let dev = Path::new("/dev").join(dev);
        plan.bind(&dev, &r(&dev), false);
    }
    // The manifest's volumes.
    for m in &d.mounts {
        let host = run
            .host_paths
            .iter()
            .find(|(from, _)| *from == m.host_path)
            .map_or(m.host_path.as_path(), |(_, to)| to.as_path());
        plan.bind(host, &r(&m.mount_path), m.read_only);
    }
    for file in &run.shared {
        plan.bind(file, &r(file), true);
    }
    if d.read_only_root {
        plan.mount(None, root, None, libc::MS_REMOUNT | libc::MS_RDONLY, None);
    }
    let mut cmd = Command::new("/usr/bin/unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
        "--mount-proc=/proc",
    ])
    .arg(format!("--root={}", root.display()))
    .arg("/usr/bin/setpriv");
    if d.no_new_privs {
        cmd.arg("--no-new-privs");
    }
    let listed: Vec<String> = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect();
    cmd.args([
        format!("--reuid={}", d.run_as_user),
        format!("--regid={}", d.run_as_user),
        "--clear-groups".to_owned(),
        "--bounding-set".to_owned(),
        listed.join(","),
        "--inh-caps".to_owned(),
        "-all".to_owned(),
        "--".to_owned(),
    ])
    .arg(bin)
    .args(args)
    .env_clear()
    .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    .envs(run.env.iter().map(|(k, v)| (k, v)));
    for var in ["RUST_LOG", "RUST_BACKTRACE"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    // SAFETY: the closure runs between fork and exec; it makes only system calls on data
    // prepared above (`Plan::run`'s contract).
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            plan.run()
        });
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
