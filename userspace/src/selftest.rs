//! `swoll selftest`: can swoll run here, and if not, what is missing and how to fix it.
//!
//! It checks what the agent needs one by one, then does the real thing once: loads and attaches
//! the probes, makes a known number of `getppid` calls from a child in a fresh pid namespace
//! (its own, without `CAP_SYS_ADMIN`) and verifies the kernel counted exactly that many. Exit
//! status 0 only when swoll can run.
use std::{fmt, path::Path};

use crate::{
    btf::{self, Btf},
    host,
    loader::{self, LoadOptions},
    resolver::procfs,
};

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Fine.
    Pass,
    /// swoll runs, with less (e.g. no cgroup v2: short-lived containers may stay unresolved).
    Warn,
    /// swoll cannot run until this is fixed.
    Fail,
}

/// One check's result.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it did not pass.
    pub fix: Option<&'static str>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.outcome {
            Outcome::Pass => "[ OK ]",
            Outcome::Warn => "[WARN]",
            Outcome::Fail => "[FAIL]",
        };
        write!(f, "{tag} {:<12} {}", self.name, self.detail)?;
        if let (Some(fix), false) = (self.fix, self.outcome == Outcome::Pass) {
            write!(f, "\n       fix: {fix}")?;
        }
        Ok(())
    }
}

/// Settings of `swoll selftest`.
#[derive(Clone, Debug)]
pub struct SelftestOptions {
    /// The kernel's BTF.
    pub btf: std::path::PathBuf,
    /// The host's procfs.
    pub proc_root: std::path::PathBuf,
    /// Calls the probe check makes and expects to see counted.
    pub calls: u64,
    /// The node whose pods the API check lists (`NODE_NAME`).
    pub node_name: Option<String>,
}

/// Runs every check, in order; the probe check only if the ones it needs passed.
pub fn run(opts: &SelftestOptions) -> Vec<Check> {
    let mut checks = vec![
        kernel_version(),
        kernel_btf(&opts.btf),
        privileges(),
        bpffs(),
        cgroups(&opts.proc_root),
    ];
    if checks.iter().take(3).all(|c| c.outcome != Outcome::Fail) {
        checks.push(probes(opts));
        checks.push(trace_probes(opts));
    }
    checks.push(apiserver(opts.node_name.as_deref()));
    checks
}

/// Trace mode's programs load here (they are loaded only while a trace runs, so a kernel that
/// refuses them would otherwise show only when the first trace starts).
fn trace_probes(opts: &SelftestOptions) -> Check {
    let ring = swoll_maps_schema::trace::DEFAULT_RING_BYTES;
    match loader::load_trace(&opts.btf, std::process::id(), ring) {
        Ok(_) => check(
            "trace",
            Outcome::Pass,
            "trace programs load and attach".into(),
            None,
        ),
        Err(err) => check(
            "trace",
            Outcome::Warn,
            format!("trace mode unavailable: {}", crate::error_chain(&err)),
            Some("metrics work without it; the error names what the kernel refused"),
        ),
    }
}

/// With Kubernetes configured (KUBECONFIG or in a pod), the API server answers and lets the
/// agent list this node's pods; without it, local mode needs no API server.
fn apiserver(node: Option<&str>) -> Check {
    let configured = std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !configured {
        return check(
            "apiserver",
            Outcome::Pass,
            "no Kubernetes configured: local mode (containers labelled by id)".into(),
            None,
        );
    }
    let fix = Some(
        "check KUBECONFIG or the pod's service account, and the ClusterRole (pods get/list/watch)",
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return check("apiserver", Outcome::Fail, err.to_string(), fix),
    };
    let answer = runtime.block_on(async {
        let client = crate::resolver::pods::kube_client()
            .await
            .map_err(|e| crate::error_chain(&e))?;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client);
        let mut params = kube::api::ListParams::default().limit(1);
        if let Some(node) = node {
            params = params.fields(&format!("spec.nodeName={node}"));
        }
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            pods.list_metadata(&params),
        )
        .await
        .map_err(|_| "no answer in 10 s".to_owned())?
        .map_err(|e| crate::error_chain(&e))
    });
    match answer {
        Ok(_) => check(
            "apiserver",
            Outcome::Pass,
            format!(
                "answers; pods of {} can be listed",
                node.unwrap_or("every node")
            ),
            None,
        ),
        Err(err) => check("apiserver", Outcome::Fail, err, fix),
    }
}

fn check(name: &'static str, outcome: Outcome, detail: String, fix: Option<&'static str>) -> Check {
    Check {
        name,
        outcome,
        detail,
        fix,
    }
}

/// The running kernel's release, e.g. `6.18.44-fc-v669`.
fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn kernel_version() -> Check {
    let release = release();
    match host::parse_release(&release) {
        Some(v) if v >= (5, 8) => check(
            "kernel",
            Outcome::Pass,
            format!("{release} (5.8 or newer)"),
            None,
        ),
        Some(_) => check(
            "kernel",
            Outcome::Fail,
            format!("{release} is older than 5.8"),
            Some("swoll needs Linux 5.8 or newer with BTF (CONFIG_DEBUG_INFO_BTF=y)"),
        ),
        None => check(
            "kernel",
            Outcome::Warn,
            format!("cannot parse release {release:?}"),
            None,
        ),
    }
}

fn kernel_btf(path: &Path) -> Check {
    match Btf::from_file(path).and_then(|b| btf::kernel_offsets(&b)) {
        Ok(o) => check(
            "btf",
            Outcome::Pass,
            format!(
                "{}: task.thread_pid@{} pid.level@{} pid.numbers@{} upid={}B/ns@{} pid_ns.inum@{} pt_regs.nr@{}",
                path.display(),
                o.task_thread_pid,
                o.pid_level,
                o.pid_numbers,
                o.upid_size,
                o.upid_ns,
                o.pid_ns_inum,
                o.regs_syscall_nr
            ),
            None,
        ),
        Err(err) => check(
            "btf",
            Outcome::Fail,
            crate::error_chain(&err),
            Some("use a kernel built with CONFIG_DEBUG_INFO_BTF=y, or point --btf at its BTF"),
        ),
    }
}

/// The capabilities swoll needs, and what each one it lacks costs: only `CAP_BPF` and
/// `CAP_PERFMON` (or `CAP_SYS_ADMIN`, which implies both) are required; the DaemonSet adds
/// `CAP_SYS_PTRACE` and `CAP_SYS_RESOURCE`, and `CAP_SYS_ADMIN` only with `--bpf-stats`.
fn privileges() -> Check {
    use host::cap;
    let fix = Some(
        "run as root, or grant CAP_BPF, CAP_PERFMON (and CAP_SYS_PTRACE, CAP_SYS_RESOURCE in a \
         container; CAP_SYS_ADMIN only for --bpf-stats)",
    );
    let Some(caps) = host::effective_caps() else {
        return check(
            "privileges",
            Outcome::Warn,
            "cannot read CapEff".into(),
            fix,
        );
    };
    let has = |c: u32| host::has_cap(caps, c);
    let held = if has(cap::BPF) && has(cap::PERFMON) {
        "CAP_BPF and CAP_PERFMON"
    } else if has(cap::SYS_ADMIN) {
        "CAP_SYS_ADMIN"
    } else {
        return check(
            "privileges",
            Outcome::Fail,
            format!(
                "effective capabilities {caps:#x} lack CAP_BPF/CAP_PERFMON: the probes cannot be \
                 loaded"
            ),
            fix,
        );
    };
    let before_5_11 = host::parse_release(&release()).is_some_and(|v| v < (5, 11));
    // (capability, its name, what lacking it costs, whether that costs swoll anything here)
    let optional = [
        (
            cap::SYS_PTRACE,
            "CAP_SYS_PTRACE",
            "needed to read other users' processes' pid namespaces: their containers stay unresolved",
            true,
        ),
        (
            cap::SYS_RESOURCE,
            "CAP_SYS_RESOURCE",
            "needed only before Linux 5.11, which charges maps to the memlock limit",
            before_5_11,
        ),
        (
            cap::SYS_ADMIN,
            "CAP_SYS_ADMIN",
            "needed only by --bpf-stats",
            false,
        ),
    ];
    let lacking: Vec<_> = optional.iter().filter(|(c, ..)| !has(*c)).collect();
    let mut detail = held.to_owned();
    if !lacking.is_empty() {
        let lacks: Vec<String> = lacking
            .iter()
            .map(|(_, name, cost, _)| format!("{name} ({cost})"))
            .collect();
        detail.push_str(&format!("; lacks {}", lacks.join(", ")));
    }
    if lacking.iter().any(|(.., matters)| *matters) {
        check("privileges", Outcome::Warn, detail, fix)
    } else {
        check("privileges", Outcome::Pass, detail, None)
    }
}

fn mounts() -> String {
    std::fs::read_to_string("/proc/self/mounts").unwrap_or_default()
}

fn bpffs() -> Check {
    let mounted = mounts().lines().find_map(|l| {
        let f: Vec<_> = l.split_whitespace().collect();
        (f.get(2) == Some(&"bpf")).then(|| f[1].to_owned())
    });
    match mounted {
        Some(point) => check("bpffs", Outcome::Pass, format!("mounted at {point}"), None),
        None => check(
            "bpffs",
            Outcome::Warn,
            "no bpf filesystem mounted: `swoll serve --pin-path` cannot pin its probes; without \
             --pin-path its counters restart from zero with every agent restart"
                .into(),
            Some("mount -t bpf bpf /sys/fs/bpf"),
        ),
    }
}

fn cgroups(proc_root: &Path) -> Check {
    match procfs::Procfs::new(proc_root).cgroup2_root() {
        Some(root) => check(
            "cgroups",
            Outcome::Pass,
            format!("cgroup v2 at {}", root.display()),
            None,
        ),
        None => check(
            "cgroups",
            Outcome::Warn,
            "no cgroup v2 hierarchy: containers resolve only while a process of theirs lives"
                .into(),
            Some(
                "mount cgroup2 (e.g. at /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy",
            ),
        ),
    }
}

fn probes(opts: &SelftestOptions) -> Check {
    let fix = Some("see the errors above; the source chain names the kernel's refusal");
    let mut load = LoadOptions::for_this_process(host::INIT_PID_NS);
    load.btf_path = opts.btf.clone();
    load.map_size = 1024;
    // `for_this_process` pins nothing: the check never touches the pins of a running agent.
    let probes = match loader::load(&load) {
        Ok(p) => p,
        Err(err) => return check("probes", Outcome::Fail, crate::error_chain(&err), fix),
    };
    let Counted {
        pid_ns,
        counted,
        own_ns,
    } = match count_calls(&probes, opts.calls) {
        Ok(v) => v,
        Err(err) => return check("probes", Outcome::Fail, err, fix),
    };
    let path = format!(
        "raw_tracepoint sys_enter/sys_exit, start times in a per-thread array, {}",
        loader::task_read_path()
    );
    let child = if own_ns {
        format!(
            "a child in pid-ns {pid_ns} (in its own pid namespace: a new one needs CAP_SYS_ADMIN)"
        )
    } else {
        format!("a child in pid-ns {pid_ns}")
    };
    if counted == opts.calls {
        check(
            "probes",
            Outcome::Pass,
            format!(
                "{path}: {child} made {} getppid, {counted} counted",
                opts.calls
            ),
            None,
        )
    } else {
        check(
            "probes",
            Outcome::Fail,
            format!(
                "{path}: {child} made {} getppid but {counted} were counted",
                opts.calls
            ),
            Some(if own_ns && counted > opts.calls {
                "another process of this pid namespace called getppid meanwhile: run the check again"
            } else {
                "report this: the kernel's struct layout may not match its BTF"
            }),
        )
    }
}

/// What the probe check's child made the probes count.
struct Counted {
    /// The child's pid namespace.
    pid_ns: u32,
    /// The `getppid` calls counted for it.
    counted: u64,
    /// Whether the child ran in this process's own pid namespace rather than a fresh one.
    own_ns: bool,
}

/// Has a child make `calls` raw `getppid` calls and returns what the probes counted of them.
/// The child runs in a fresh pid namespace, where it alone is counted. Creating one needs
/// `CAP_SYS_ADMIN`, which the DaemonSet's container lacks; there the child runs in this
/// process's own pid namespace (the probes leave this process out, not its child), and its
/// calls are the count's growth. Another process of the namespace calling `getppid`
/// meanwhile would be counted too: a few attempts ride that out.
fn count_calls(probes: &loader::Probes, calls: u64) -> Result<Counted, String> {
    let count = |pid_ns| {
        let nr = u32::try_from(libc::SYS_getppid).unwrap_or(u32::MAX);
        let key = swoll_maps_schema::metrics::MetricKey {
            pid_ns,
            nr,
            errno: 0,
        };
        probes.maps.counted(&key).count
    };
    let fresh = in_child(calls, libc::CLONE_NEWPID, |child| {
        host::pid_ns_inode(Path::new(&format!("/proc/{child}/ns/pid")))
            .map_err(|e| format!("reading the child's pid namespace: {e}"))
            .map(|pid_ns| Counted {
                pid_ns,
                counted: count(pid_ns),
                own_ns: false,
            })
    });
    match fresh {
        Err(ChildError::Clone(err)) if err.raw_os_error() == Some(libc::EPERM) => {}
        Err(err) => return Err(crate::error_chain(&err)),
        Ok(counted) => return counted,
    }
    let pid_ns = host::pid_ns_inode(Path::new("/proc/self/ns/pid"))
        .map_err(|e| format!("reading this process's pid namespace: {e}"))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = count(pid_ns);
        let counted = in_child(calls, 0, |_| count(pid_ns).saturating_sub(before))
            .map_err(|e| crate::error_chain(&e))?;
        if counted <= calls || attempt == 3 {
            return Ok(Counted {
                pid_ns,
                counted,
                own_ns: true,
            });
        }
    }
}

/// Why a child could not be run.
#[derive(Debug, thiserror::Error)]
enum ChildError {
    /// A pipe to talk to it could not be made.
    #[error("pipe for the child")]
    Pipe(#[source] std::io::Error),
    /// `clone` failed: `EPERM` for a new pid namespace without `CAP_SYS_ADMIN`.
    #[error("cloning the child")]
    Clone(#[source] std::io::Error),
    /// It never said it was done.
    #[error("the child did not report back")]
    Silent,
}

/// Clones a child with `flags` (`CLONE_NEWPID`, or none: a plain fork) that makes `calls` raw
/// `getppid` calls, then runs `look` with its pid while it is still alive (and its namespace
/// readable), its calls made.
fn in_child<T>(calls: u64, flags: i32, look: impl FnOnce(i64) -> T) -> Result<T, ChildError> {
    use rustix::{
        fd::AsRawFd as _,
        process::{Pid, WaitOptions, waitpid},
    };
    // Two pipes: the child says "done" on one and waits for "go" on the other.
    let (done_r, done_w) = rustix::pipe::pipe().map_err(|e| ChildError::Pipe(e.into()))?;
    let (go_r, go_w) = rustix::pipe::pipe().map_err(|e| ChildError::Pipe(e.into()))?;
    let (child_done, child_go) = (done_w.as_raw_fd(), go_r.as_raw_fd());
    // SAFETY: clone without CLONE_VM works like fork: the child gets a copy of the address
    // space and runs only raw syscalls (no allocation, no locks, no destructors) before _exit.
    // The raw call because the child needs its own pid namespace, which fork cannot give and
    // rustix has no clone for.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if child == 0 {
        // SAFETY: raw syscalls on the child's copies of our fds; `_exit` ends the child
        // without unwinding.
        unsafe {
            for _ in 0..calls {
                libc::syscall(libc::SYS_getppid);
            }
            let byte = 1u8;
            libc::write(child_done, (&raw const byte).cast(), 1);
            let mut go = 0u8;
            libc::read(child_go, (&raw mut go).cast(), 1);
            libc::_exit(0);
        }
    }
    // Read before the closes below can overwrite errno.
    let clone_error = (child < 0).then(std::io::Error::last_os_error);
    // The child's ends are its own copies now (or, if the clone failed, nobody's): a child
    // that dies early then ends the read below instead of blocking it.
    drop((done_w, go_r));
    let result = if let Some(err) = clone_error {
        Err(ChildError::Clone(err))
    } else {
        let mut byte = [0u8];
        if rustix::io::read(&done_r, &mut byte) == Ok(1) {
            Ok(look(child))
        } else {
            Err(ChildError::Silent)
        }
    };
    // Release the child and reap it; our pipe ends close when dropped.
    let _ = rustix::io::write(&go_w, &[1]);
    if let Some(pid) = i32::try_from(child).ok().and_then(Pid::from_raw) {
        let _ = waitpid(Some(pid), WaitOptions::empty());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_checks_print_their_fix() {
        let c = check("x", Outcome::Fail, "broken".into(), Some("mend it"));
        assert_eq!(
            c.to_string(),
            "[FAIL] x            broken\n       fix: mend it"
        );
        let ok = check("x", Outcome::Pass, "fine".into(), Some("unused"));
        assert_eq!(ok.to_string(), "[ OK ] x            fine");
    }
}
