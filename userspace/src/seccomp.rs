//! Seccomp profiles derived from the counters: `GET /seccomp/<namespace>/<pod>`,
//! `GET /seccomp/kns/<inode>` and `swoll seccomp`.
//!
//! The probes count every syscall every container makes, by pid namespace, syscall and errno,
//! from the moment they are attached (and across agent restarts, when pinned). For a container
//! whose pid namespace was created after that, the set of syscalls counted in it is every
//! syscall it made: a least-privilege profile with no recording phase. It includes what the
//! runtime's init process did in the container's pid namespace (the runtime joins it before it
//! installs the filter, and everything after the filter up to and including `execve` happens
//! there), so the runtime's calls under the filter are in the profile because they were
//! counted, not from a list of what some runtime version does.
//!
//! What the counters cannot show is added or said (see [`ALWAYS`], [`build`] and [`dating`]):
//! syscalls that never reach `sys_exit`, calls the kernel makes on a process's behalf, numbers
//! with no name, calls only ever denied, and namespaces whose first calls came before the
//! probes.
//!
//! The builder ([`build`], [`select`], [`spo`]) is pure; the HTTP routes and the client of
//! `swoll seccomp` are at the end.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::{Path as UrlPath, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use swoll_maps_schema::metrics::{MetricKey, MetricValue};

use crate::{
    exposition::Exposition,
    resolver::Workload,
    syscalls::{self, Arch},
};

/// `EPERM`: what a syscall outside the profile returns (`defaultErrnoRet`), as Docker's,
/// podman's and Kubernetes' default profiles do, so programs see the error they already
/// handle for a call they may not make.
pub const DEFAULT_ERRNO: u32 = 1;
/// `ENOSYS` (38 on x86_64 and aarch64): "no such syscall", the error libc falls back on.
const ENOSYS: u32 = 38;

/// The action of calls outside the profile.
const DEFAULT_ACTION: &str = "SCMP_ACT_ERRNO";
/// The action of the calls in the profile.
const ALLOW: &str = "SCMP_ACT_ALLOW";

/// The `architectures` of a profile for processes of `arch`: the native one first, then the
/// compat ABIs its kernel also runs, as Docker's and podman's defaults map them (`archMap`:
/// x86_64 → x86, x32; aarch64 → arm). A syscall of an unlisted architecture gets libseccomp's
/// bad-architecture action, which kills the process, so a 32-bit helper in the container
/// would die instead of being filtered by name.
pub fn architectures(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        Arch::Aarch64 => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    }
}

/// A syscall every profile allows, counted or not, and why the counters cannot show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Always {
    /// The name, as seccomp profiles spell it.
    pub name: &'static str,
    /// Why it is allowed without being counted.
    pub why: &'static str,
}

/// The syscalls the counters cannot be trusted to show, allowed in every profile.
///
/// Names that do not exist on the native architecture (`sigreturn` on x86_64 and aarch64) are
/// resolved by libseccomp for the compat architectures that have them; runc and crun skip a
/// name that no listed architecture knows.
pub const ALWAYS: &[Always] = &[
    Always {
        name: "exit",
        why: "never returns, so it never reaches sys_exit, where the probes count; without it a \
              thread cannot end (a process spins at 100% CPU on exit)",
    },
    Always {
        name: "exit_group",
        why: "never returns, so it never reaches sys_exit; without it no process can end",
    },
    Always {
        name: "rt_sigreturn",
        why: "made by every process that returns from a signal handler, which a learning run \
              sees only if a signal arrived; the kernel reports its exit as syscall -1 (counted \
              as rt_sigreturn)",
    },
    Always {
        name: "sigreturn",
        why: "rt_sigreturn's older form on the compat architectures (x86, arm)",
    },
    Always {
        name: "restart_syscall",
        why: "made by the kernel on a process's behalf when a signal interrupts a sleep that is \
              then resumed (nanosleep, poll, futex): a learning run sees it only by chance",
    },
];

/// One (syscall, errno) of a pid namespace with its count, as the metrics map keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The syscall number, as the probes record it (native ABI; `u32::MAX` for -1).
    pub nr: u32,
    /// The errno the calls returned, 0 for success.
    pub errno: u32,
    /// How many calls.
    pub count: u64,
}

/// An OCI seccomp profile (`linux.seccomp` of the runtime spec), in the file format podman
/// (`--security-opt seccomp=<file>`), Docker and Kubernetes' `Localhost` profiles read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// What calls outside the profile get: `SCMP_ACT_ERRNO`.
    pub default_action: String,
    /// Their errno: [`DEFAULT_ERRNO`].
    pub default_errno_ret: u32,
    /// The native architecture and its compat ones ([`architectures`]).
    pub architectures: Vec<String>,
    /// The allowed calls, and those kept failing with `ENOSYS`.
    pub syscalls: Vec<Rule>,
}

/// One rule of a [`Profile`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Syscall names, sorted.
    pub names: Vec<String>,
    /// `SCMP_ACT_ALLOW`, or `SCMP_ACT_ERRNO` with `errno_ret`.
    pub action: String,
    /// The errno of an `SCMP_ACT_ERRNO` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
}

impl Profile {
    /// The names the profile allows, sorted.
    pub fn allowed(&self) -> Vec<&str> {
        self.syscalls
            .iter()
            .filter(|r| r.action == ALLOW)
            .flat_map(|r| r.names.iter().map(String::as_str))
            .collect()
    }
}

/// A profile and what the counters behind it could not show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The profile.
    pub profile: Profile,
    /// Counted calls left out of it, or given another action than allow, with the reason.
    pub notes: Vec<String>,
}

/// How the calls of one syscall ended.
#[derive(Clone, Copy, Debug, Default)]
struct Outcomes {
    /// Some call succeeded or failed with an errno other than `EPERM` and `ENOSYS`: the kernel
    /// ran it.
    ran: bool,
    eperm: u64,
    enosys: u64,
}

/// Builds the profile of the calls `observed` (of one container, possibly several pid
/// namespaces of it) made on `arch`: everything they made, under `arch`'s names, allowed, plus
/// [`ALWAYS`]; every other call fails with `EPERM`.
///
/// Two kinds of counted calls are not allowed, because allowing them would change what the
/// program saw rather than reproduce it:
/// - a syscall that only ever failed with `EPERM` (a filter already in place denied it, or the
///   kernel refused the caller's privileges) is left to the default action, which fails it
///   the same way;
/// - a syscall that only ever failed with `ENOSYS` (a filter stubbed it out, as Docker's and
///   podman's defaults do `clone3`, or the kernel lacks it) keeps failing with `ENOSYS`: libc
///   falls back to an older call on `ENOSYS` only, and `EPERM` would break that fallback.
///
/// Numbers with no name on `arch` (`sys_unknown_<nr>`: a syscall newer than swoll's tables, or
/// a 32-bit process's number that is out of the native range) cannot be written in a profile:
/// they are left out, so such calls fail with `EPERM`, and said in the notes.
///
/// A call is counted when it returns, so a call still in progress (a shell's `wait4` for a
/// child that has not ended, a `sleep`, a server's first `accept`) is not in the counters yet;
/// `in_progress` are the numbers threads are blocked in now ([`live`]): allowed, since a
/// filter would have failed them at once.
pub fn build(
    arch: Arch,
    observed: impl IntoIterator<Item = Observed>,
    in_progress: &BTreeSet<u32>,
) -> Built {
    let mut by_name: BTreeMap<String, Outcomes> = BTreeMap::new();
    let mut unknown: BTreeMap<u32, u64> = BTreeMap::new();
    for o in observed.into_iter().filter(|o| o.count > 0) {
        let Some(name) = name_of(arch, o.nr) else {
            let n = unknown.entry(o.nr).or_default();
            *n = n.saturating_add(o.count);
            continue;
        };
        let outcomes = by_name.entry(name).or_default();
        match o.errno {
            DEFAULT_ERRNO => outcomes.eperm = outcomes.eperm.saturating_add(o.count),
            ENOSYS => outcomes.enosys = outcomes.enosys.saturating_add(o.count),
            _ => outcomes.ran = true,
        }
    }
    let mut only_in_progress = BTreeSet::new();
    for &nr in in_progress {
        let Some(name) = name_of(arch, nr) else {
            unknown.entry(nr).or_default();
            continue;
        };
        if !by_name.contains_key(&name) {
            only_in_progress.insert(name.clone());
        }
        // A thread is in it: no filter stopped it.
        by_name.entry(name).or_default().ran = true;
    }
    let mut allowed: BTreeSet<String> = ALWAYS.iter().map(|a| a.name.to_owned()).collect();
    let mut enosys = Vec::new();
    let mut notes = Vec::new();
    for (name, outcomes) in by_name {
        if only_in_progress.contains(&name) && !allowed.contains(&name) {
            notes.push(format!(
                "{name}: not counted yet (a call is counted when it returns), but a thread is \
                 blocked in it now: allowed"
            ));
        }
        if outcomes.ran || (outcomes.eperm > 0 && outcomes.enosys > 0) {
            allowed.insert(name);
        } else if outcomes.enosys > 0 {
            notes.push(format!(
                "{name}: its {} calls all failed with ENOSYS (a filter stubbed it out, or the \
                 kernel lacks it): kept failing with ENOSYS, so that the fallback the program \
                 took still runs",
                outcomes.enosys
            ));
            enosys.push(name);
        } else if !allowed.contains(&name) {
            notes.push(format!(
                "{name}: its {} calls all failed with EPERM (denied by a filter or for lack of \
                 privilege): left to the default action, which fails it the same way",
                outcomes.eperm
            ));
        }
    }
    for (nr, count) in unknown {
        notes.push(format!(
            "syscall number {nr} ({count} calls counted) has no name on {arch:?} in swoll's \
             tables (a \
             syscall newer than them, or a 32-bit process's number): a profile can only name \
             syscalls, so it is left out and fails with EPERM"
        ));
    }
    let mut syscalls = vec![Rule {
        names: allowed.into_iter().collect(),
        action: ALLOW.to_owned(),
        errno_ret: None,
    }];
    if !enosys.is_empty() {
        syscalls.push(Rule {
            names: enosys,
            action: DEFAULT_ACTION.to_owned(),
            errno_ret: Some(ENOSYS),
        });
    }
    Built {
        profile: Profile {
            default_action: DEFAULT_ACTION.to_owned(),
            default_errno_ret: DEFAULT_ERRNO,
            architectures: architectures(arch).iter().map(|&a| a.to_owned()).collect(),
            syscalls,
        },
        notes,
    }
}

/// The name of syscall `nr` of `arch` as profiles spell it (`openat`; the kernel's -1 is
/// `rt_sigreturn`, see [`syscalls::NO_SYSCALL`]); `None` for a number with no name.
fn name_of(arch: Arch, nr: u32) -> Option<String> {
    let info = syscalls::describe(arch, nr);
    let bare = info.name.strip_prefix("sys_")?;
    (nr == syscalls::NO_SYSCALL || syscalls::number(arch, bare) == Some(nr))
        .then(|| bare.to_owned())
}

/// Whether the probes saw a pid namespace's first call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dating {
    /// Its first process started after the probes began counting: every call of it was seen.
    Complete,
    /// Its first process started before: its first calls (the runtime's, the program's start)
    /// were not seen. Times after boot.
    StartedBefore {
        /// When its oldest live process started.
        started: Duration,
        /// When the probes began counting.
        counting_since: Duration,
    },
    /// No process of it is alive to say when it started.
    Gone,
    /// When the probes began counting is not known.
    Undated,
}

/// Dates a pid namespace whose oldest live process started at `started` (after boot, to the
/// clock tick) against `counting_since`, when the probes began counting (after boot).
///
/// A pid namespace's oldest live process is its init, its first: nothing runs in it before
/// the init (the runtime that unshares it stays outside), everything in it dies with the init,
/// and `execve` keeps a process's start time, so the runtime's init and the container's main
/// process are one process with one start time. A tick-truncated start at or after
/// `counting_since` is after it.
pub fn dating(counting_since: Option<Duration>, started: Option<Duration>) -> Dating {
    match (counting_since, started) {
        (None, _) => Dating::Undated,
        (Some(_), None) => Dating::Gone,
        (Some(since), Some(started)) if started >= since => Dating::Complete,
        (Some(counting_since), Some(started)) => Dating::StartedBefore {
            started,
            counting_since,
        },
    }
}

impl Dating {
    /// Why a profile of pid namespace `kns` may lack calls; `None` when it does not.
    fn reason(self, kns: u32) -> Option<String> {
        match self {
            Dating::Complete => None,
            Dating::StartedBefore {
                started,
                counting_since,
            } => Some(format!(
                "pid namespace {kns} started {:.3} s before the probes began counting: its first \
                 calls (the runtime's start-up under the filter, the program's own start) were \
                 not seen, and the container may not start under this profile; restart it and \
                 ask again",
                counting_since.saturating_sub(started).as_secs_f64()
            )),
            Dating::Gone => Some(format!(
                "pid namespace {kns} has no live process left to date its start: whether its \
                 first calls were seen is not known"
            )),
            Dating::Undated => Some(format!(
                "when the probes began counting is not known: whether the first calls of pid \
                 namespace {kns} were seen is not known"
            )),
        }
    }
}

/// The profile of one container, with who it is and how far it can be trusted: one item of
/// `GET /seccomp/<namespace>/<pod>`, and the answer of `GET /seccomp/kns/<inode>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProfile {
    /// Kubernetes namespace of the pod (empty outside a pod).
    pub namespace: String,
    /// Pod name (empty outside a pod).
    pub pod: String,
    /// Container name (its short id outside Kubernetes; empty for an unresolved namespace).
    pub container: String,
    /// The pid namespaces whose calls make the profile: one per run of the container that the
    /// agent still holds.
    pub kns: Vec<u32>,
    /// True when the probes counted every one of those namespaces from its first call.
    pub complete: bool,
    /// Why the profile may lack calls, and counted calls it does not allow.
    pub notes: Vec<String>,
    /// The OCI profile.
    pub profile: Profile,
}

/// What to build profiles of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Which {
    /// Every container of a pod.
    Pod {
        /// Its Kubernetes namespace.
        namespace: String,
        /// Its name.
        pod: String,
    },
    /// One pid namespace, whatever it is.
    Kns(u32),
}

/// What procfs says about a pid namespace now, beside its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Whether its first calls were seen.
    pub dating: Dating,
    /// The syscalls its threads are blocked in (not counted until they return).
    pub in_progress: BTreeSet<u32>,
    /// Threads whose current syscall could not be read.
    pub unreadable: usize,
}

/// The profiles of `which` from the keys of a map read: one per container, sorted by name.
/// `workload` labels a pid namespace, `facts` says whether its first calls were seen and what
/// it is blocked in. Empty when no key matches.
pub fn select(
    arch: Arch,
    keys: &[(MetricKey, MetricValue)],
    workload: impl Fn(u32) -> Workload,
    facts: impl Fn(u32) -> Facts,
    which: &Which,
) -> Vec<ContainerProfile> {
    let mut namespaces: BTreeMap<u32, Workload> = BTreeMap::new();
    for (key, _) in keys {
        if namespaces.contains_key(&key.pid_ns) {
            continue;
        }
        let w = workload(key.pid_ns);
        let wanted = match which {
            Which::Kns(kns) => key.pid_ns == *kns,
            Which::Pod { namespace, pod } => {
                !pod.is_empty() && w.namespace == *namespace && w.pod == *pod
            }
        };
        if wanted {
            namespaces.insert(key.pid_ns, w);
        }
    }
    let mut containers: BTreeMap<Workload, Vec<u32>> = BTreeMap::new();
    for (ns, w) in namespaces {
        containers.entry(w).or_default().push(ns);
    }
    containers
        .into_iter()
        .map(|(w, kns)| {
            let observed = keys
                .iter()
                .filter(|(k, _)| kns.contains(&k.pid_ns))
                .map(|(k, v)| Observed {
                    nr: k.nr,
                    errno: k.errno,
                    count: v.count,
                });
            let facts: Vec<(u32, Facts)> = kns.iter().map(|&ns| (ns, facts(ns))).collect();
            let in_progress: BTreeSet<u32> = facts
                .iter()
                .flat_map(|(_, f)| f.in_progress.iter().copied())
                .collect();
            let built = build(arch, observed, &in_progress);
            let reasons: Vec<String> = facts
                .iter()
                .flat_map(|(ns, f)| {
                    let unreadable = (f.unreadable > 0).then(|| {
                        format!(
                            "pid namespace {ns}: what {} of its threads are blocked in could not \
                             be read (/proc/<tid>/syscall needs CAP_SYS_PTRACE): calls in \
                             progress there may be missing",
                            f.unreadable
                        )
                    });
                    f.dating.reason(*ns).into_iter().chain(unreadable)
                })
                .collect();
            ContainerProfile {
                namespace: w.namespace,
                pod: w.pod,
                container: w.container,
                complete: reasons.is_empty(),
                notes: reasons.into_iter().chain(built.notes).collect(),
                kns,
                profile: built.profile,
            }
        })
        .collect()
}

/// API version of the Security Profiles Operator's namespaced `SeccompProfile`.
pub const SPO_API_VERSION: &str = "security-profiles-operator.x-k8s.io/v1beta1";

/// Prefix of the annotations that carry a [`ContainerProfile`]'s context into a
/// `SeccompProfile`.
const ANNOTATION: &str = "swoll";

/// `profile` as a Security Profiles Operator `SeccompProfile` (v1beta1, namespaced in the
/// pod's namespace), named `<pod>-<container>` (`kns-<inode>` outside a pod). SPO's spec has no
/// `defaultErrnoRet`: runtimes give `SCMP_ACT_ERRNO` `EPERM` without one. Completeness and
/// notes go into annotations, the pid namespaces and container too.
pub fn spo(profile: &ContainerProfile) -> serde_json::Value {
    let name = if profile.pod.is_empty() {
        format!("kns-{}", profile.kns.first().copied().unwrap_or_default())
    } else {
        dns_name(&format!("{}-{}", profile.pod, profile.container))
    };
    let mut metadata = serde_json::json!({
        "name": name,
        "annotations": {
            format!("{ANNOTATION}/container"): profile.container,
            format!("{ANNOTATION}/kns"): profile.kns.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            format!("{ANNOTATION}/complete"): profile.complete.to_string(),
            format!("{ANNOTATION}/notes"): profile.notes.join("\n"),
        },
    });
    if !profile.namespace.is_empty() {
        metadata["namespace"] = profile.namespace.clone().into();
    }
    serde_json::json!({
        "apiVersion": SPO_API_VERSION,
        "kind": "SeccompProfile",
        "metadata": metadata,
        "spec": {
            "defaultAction": profile.profile.default_action,
            "architectures": profile.profile.architectures,
            "syscalls": profile.profile.syscalls,
        },
    })
}

/// `s` as a Kubernetes object name (a DNS subdomain): lowercase letters, digits, `-` and
/// `.`, starting and ending with an alphanumeric, at most 253 characters.
fn dns_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(253)
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "profile".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// What the live processes of a pid namespace say: when its oldest started, and which
/// syscalls its threads are in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Start of its oldest live process, after boot (to the clock tick).
    pub first_start: Option<Duration>,
    /// The syscalls its threads are blocked in (`/proc/<tid>/syscall`).
    pub in_progress: BTreeSet<u32>,
    /// Threads whose `syscall` file could not be read (it needs `CAP_SYS_PTRACE` over them).
    pub unreadable: usize,
}

/// [`Live`] of each of `wanted` pid namespaces that has a live process, from procfs at
/// `proc_root` (one walk).
pub fn live(proc_root: &Path, wanted: &BTreeSet<u32>) -> BTreeMap<u32, Live> {
    let mut found: BTreeMap<u32, Live> = BTreeMap::new();
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let Ok(ticks) = u64::try_from(ticks) else {
        return found;
    };
    if ticks == 0 || wanted.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let dir = entry.path();
        let Ok(ns) = crate::host::pid_ns_inode(&dir.join("ns/pid")) else {
            continue;
        };
        if !wanted.contains(&ns) {
            continue;
        }
        let Some(start) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .as_deref()
            .and_then(start_ticks)
        else {
            continue;
        };
        let start = Duration::from_secs(start / ticks)
            + Duration::from_nanos((start % ticks) * 1_000_000_000 / ticks);
        let facts = found.entry(ns).or_default();
        facts.first_start = Some(facts.first_start.map_or(start, |s| s.min(start)));
        let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            match std::fs::read_to_string(task.path().join("syscall")) {
                Ok(text) => facts.in_progress.extend(blocked_in(&text)),
                // The thread ended in between.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => facts.unreadable += 1,
            }
        }
    }
    found
}

/// The syscall a thread is blocked in, from its `/proc/<tid>/syscall` (`61 0x… …`); `None`
/// when it is running, or blocked outside a syscall (`-1 …`).
fn blocked_in(text: &str) -> Option<u32> {
    text.split_whitespace().next()?.parse().ok()
}

/// Field 22 of a `/proc/<pid>/stat` line (start time in clock ticks after boot), counted from
/// the last `)` because the command name may hold spaces and parentheses.
fn start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The routes, merged into the agent's router by [`crate::http::router`].
pub fn routes() -> Router<Arc<Exposition>> {
    Router::new()
        .route("/seccomp/kns/{inode}", get(kns_handler))
        .route("/seccomp/{namespace}/{pod}", get(pod_handler))
}

/// The format of an answer, from `?format=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Oci,
    Spo,
}

/// The `format` of a profile's query string, decoded as a form (`%XX`, `+`); anything else in
/// it is an error, so a misspelt parameter is not silently ignored.
fn format_of(query: Option<&str>) -> Result<Format, String> {
    let mut format = Format::Oci;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match (name.as_ref(), value.as_ref()) {
            ("format", "oci" | "") => format = Format::Oci,
            ("format", "spo") => format = Format::Spo,
            ("format", other) => {
                return Err(format!("unknown format {other:?} (oci or spo)"));
            }
            (other, _) => return Err(format!("unknown parameter {other:?} (format)")),
        }
    }
    Ok(format)
}

fn answer(code: StatusCode, text: String) -> Response {
    (code, text).into_response()
}

fn json(value: &impl Serialize) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(err) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the profile: {err}\n"),
        ),
    }
}

/// The profiles of `which` from the last map read, built off the async runtime (the procfs
/// walk that dates the namespaces reads every process).
async fn profiles(state: &Exposition, which: Which) -> Result<Vec<ContainerProfile>, Response> {
    let rows = state.rows();
    let origin = state.seccomp_origin();
    tokio::task::spawn_blocking(move || {
        let keys = rows.keys();
        let wanted: BTreeSet<u32> = match &which {
            Which::Kns(kns) => BTreeSet::from([*kns]),
            Which::Pod { .. } => keys.iter().map(|(k, _)| k.pid_ns).collect(),
        };
        let wanted: BTreeSet<u32> = wanted
            .into_iter()
            .filter(|&ns| match &which {
                Which::Kns(_) => true,
                Which::Pod { namespace, pod } => rows
                    .workload(ns)
                    .is_some_and(|w| w.namespace == *namespace && w.pod == *pod),
            })
            .collect();
        let live = origin
            .as_ref()
            .map(|o| live(&o.proc_root, &wanted))
            .unwrap_or_default();
        let since = origin.as_ref().and_then(|o| o.counting_since);
        select(
            Arch::NATIVE,
            keys,
            |ns| rows.workload(ns).cloned().unwrap_or_default(),
            |ns| {
                let live = live.get(&ns).cloned().unwrap_or_default();
                Facts {
                    dating: dating(since, live.first_start),
                    in_progress: live.in_progress,
                    unreadable: live.unreadable,
                }
            },
            &which,
        )
    })
    .await
    .map_err(|err| {
        tracing::warn!(error = %err, "building a seccomp profile");
        answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "building the profile failed\n".to_owned(),
        )
    })
}

async fn pod_handler(
    State(state): State<Arc<Exposition>>,
    UrlPath((namespace, pod)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let format = match format_of(query.as_deref()) {
        Ok(f) => f,
        Err(err) => return answer(StatusCode::BAD_REQUEST, format!("bad query: {err}\n")),
    };
    let which = Which::Pod {
        namespace: namespace.clone(),
        pod: pod.clone(),
    };
    let found = match profiles(&state, which).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if found.is_empty() {
        return answer(
            StatusCode::NOT_FOUND,
            format!(
                "no container of pod {namespace}/{pod} has calls counted on this node (not \
                 running here, not known to the agent's pod watch, or gone)\n"
            ),
        );
    }
    match format {
        Format::Oci => json(&found),
        Format::Spo => json(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": found.iter().map(spo).collect::<Vec<_>>(),
        })),
    }
}

async fn kns_handler(
    State(state): State<Arc<Exposition>>,
    UrlPath(inode): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let format = match format_of(query.as_deref()) {
        Ok(f) => f,
        Err(err) => return answer(StatusCode::BAD_REQUEST, format!("bad query: {err}\n")),
    };
    let Ok(kns) = inode.parse::<u32>() else {
        return answer(
            StatusCode::BAD_REQUEST,
            format!("{inode:?} is not a pid namespace inode (a number, the kns label)\n"),
        );
    };
    let found = match profiles(&state, Which::Kns(kns)).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match (found.first(), format) {
        (None, _) => answer(
            StatusCode::NOT_FOUND,
            format!("pid namespace {kns} has no calls counted on this node\n"),
        ),
        (Some(profile), Format::Oci) => json(profile),
        (Some(profile), Format::Spo) => json(&spo(profile)),
    }
}

/// The client side: `swoll seccomp` asks a running agent, which alone holds the counters since
/// each container started.
///
/// One `GET` over HTTP/1.0 that ends when the agent closes the connection, on a blocking
/// socket (with rustls for `https://`): the command has no async runtime, and a client library
/// would bring one for a single request.
pub mod client {
    use std::{
        io::{Read, Write},
        net::{TcpStream, ToSocketAddrs as _},
        path::{Path, PathBuf},
        sync::Arc,
        time::Duration,
    };

    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};

    use super::ContainerProfile;

    /// What to ask the agent for, and how.
    #[derive(Clone, Debug)]
    pub struct SeccompOptions {
        /// The agent's metrics listener, `http://host:port` or `https://host:port`.
        pub agent: String,
        /// A file holding the bearer token to send (e.g. a service-account token): an agent
        /// that runs with `--auth` answers only requests whose token may `get` the path.
        pub token_file: Option<PathBuf>,
        /// PEM certificates to verify an `https://` agent's certificate against (its CA); the
        /// system's trusted roots without it.
        pub ca_file: Option<PathBuf>,
        /// The name an `https://` agent's certificate must hold, when it is not the host of
        /// `agent`: the chart's certificate names the Service (`swoll.swoll.svc`) while a
        /// profile is asked of one node's agent, by pod IP or through a port-forward.
        pub tls_server_name: Option<String>,
        /// `/seccomp/<namespace>/<pod>` with the container to print, or `/seccomp/kns/<inode>`.
        pub target: Target,
        /// Print a Security Profiles Operator `SeccompProfile` instead of the OCI profile.
        pub spo: bool,
    }

    /// One container, by pod or by pid namespace.
    #[derive(Clone, Debug)]
    pub enum Target {
        /// A container of a pod: the only one, or the one named.
        Pod {
            /// Kubernetes namespace.
            namespace: String,
            /// Pod name.
            pod: String,
            /// Container name; needed when the pod has several.
            container: Option<String>,
        },
        /// A pid namespace.
        Kns(u32),
    }

    /// Why `swoll seccomp` printed nothing.
    #[derive(Debug, thiserror::Error)]
    pub enum ClientError {
        /// `--agent` is not `http://host:port` or `https://host:port`.
        #[error("--agent {0:?}: expected http://host:port or https://host:port")]
        Address(String),
        /// `--token-file` cannot be read, or is empty.
        #[error(transparent)]
        Token(#[from] crate::auth::TokenFileError),
        /// The certificates to verify the agent against cannot be used.
        #[error("--ca-file {path}: {reason}")]
        Roots {
            /// The file.
            path: PathBuf,
            /// Why.
            reason: String,
        },
        /// TLS with the agent could not be set up.
        #[error("TLS with the agent at {agent}: {reason}")]
        Tls {
            /// Its address.
            agent: String,
            /// Why.
            reason: String,
        },
        /// The agent could not be reached or read.
        #[error("asking the agent at {agent}")]
        Io {
            /// Its address.
            agent: String,
            /// Why.
            #[source]
            source: std::io::Error,
        },
        /// The agent answered with an error.
        #[error("the agent answered {code}: {body}")]
        Status {
            /// The HTTP status.
            code: u16,
            /// Its explanation.
            body: String,
        },
        /// The answer is not what an agent sends.
        #[error("the agent's answer is not a profile: {0}")]
        Answer(String),
        /// The pod has no such container, or several and none was named.
        #[error("{0}")]
        Container(String),
    }

    /// How long the agent has to answer.
    const TIMEOUT: Duration = Duration::from_secs(30);

    /// Where the agent is and what to send it: parsed and read once, before any request.
    struct Agent {
        /// `--agent` as given, for messages.
        url: String,
        /// `host:port`.
        hostport: String,
        /// TLS, with the name the agent's certificate must hold, for `https://`.
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        /// The bearer token, if one is sent.
        token: Option<Arc<str>>,
    }

    impl Agent {
        fn new(opts: &SeccompOptions) -> Result<Agent, ClientError> {
            let url = opts.agent.clone();
            let bad = || ClientError::Address(url.clone());
            let (https, rest) = match url.split_once("://") {
                Some(("http", rest)) => (false, rest),
                Some(("https", rest)) => (true, rest),
                _ => return Err(bad()),
            };
            let hostport = rest.trim_end_matches('/');
            if hostport.is_empty() || hostport.contains('/') {
                return Err(bad());
            }
            let tls = if https {
                let host = hostport
                    .rsplit_once(':')
                    .map_or(hostport, |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = match &opts.tls_server_name {
                    Some(name) => {
                        ServerName::try_from(name.clone()).map_err(|e| ClientError::Tls {
                            agent: url.clone(),
                            reason: format!("--tls-server-name {name:?}: {e}"),
                        })?
                    }
                    None => ServerName::try_from(host.to_owned()).map_err(|_| bad())?,
                };
                Some((tls_config(opts.ca_file.as_deref(), &url)?, name))
            } else {
                None
            };
            let token = opts
                .token_file
                .as_deref()
                .map(crate::auth::read_token)
                .transpose()?;
            Ok(Agent {
                hostport: hostport.to_owned(),
                url,
                tls,
                token,
            })
        }

        /// `GET path`: the body of a 200 answer.
        fn get(&self, path: &str) -> Result<String, ClientError> {
            let io = |source| ClientError::Io {
                agent: self.url.clone(),
                source,
            };
            let addr = self
                .hostport
                .to_socket_addrs()
                .map_err(io)?
                .next()
                .ok_or_else(|| ClientError::Address(self.url.clone()))?;
            let stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
            stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
            stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
            let mut stream: Box<dyn ReadWrite> = match &self.tls {
                Some((config, name)) => {
                    let conn = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                        .map_err(|e| ClientError::Tls {
                            agent: self.url.clone(),
                            reason: e.to_string(),
                        })?;
                    Box::new(rustls::StreamOwned::new(conn, stream))
                }
                None => Box::new(stream),
            };
            let auth = self
                .token
                .as_deref()
                .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            // HTTP/1.0: the answer is not chunked and ends when the agent closes the connection.
            write!(
                stream,
                "GET {path} HTTP/1.0\r\nHost: {}\r\n{auth}\r\n",
                self.hostport
            )
            .and_then(|()| stream.flush())
            .map_err(io)?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).map_err(io)?;
            let text = String::from_utf8_lossy(&raw);
            let (head, body) = text
                .split_once("\r\n\r\n")
                .ok_or_else(|| ClientError::Answer("no HTTP header".to_owned()))?;
            let code: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| ClientError::Answer(format!("status line {head:?}")))?;
            if code != 200 {
                return Err(ClientError::Status {
                    code,
                    body: body.trim().to_owned(),
                });
            }
            Ok(body.to_owned())
        }
    }

    /// A socket, plain or TLS.
    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    /// A TLS client verifying against the certificates of `ca_file`, or the system's roots.
    fn tls_config(
        ca_file: Option<&Path>,
        agent: &str,
    ) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let roots_error = |reason: String| ClientError::Roots {
                    path: path.to_owned(),
                    reason,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(|e| roots_error(format!("not PEM certificates: {e}")))?;
                if certs.is_empty() {
                    return Err(roots_error("no CERTIFICATE block".to_owned()));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| roots_error(format!("not a usable CA certificate: {e}")))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            agent: agent.to_owned(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Asks the agent; returns the JSON to print and the warnings (notes of an incomplete
    /// profile) to print on stderr.
    pub fn run(opts: &SeccompOptions) -> Result<(String, Vec<String>), ClientError> {
        let format = if opts.spo { "?format=spo" } else { "" };
        let answer = |e: serde_json::Error| ClientError::Answer(e.to_string());
        let agent = Agent::new(opts)?;
        let profile: ContainerProfile = match &opts.target {
            Target::Kns(kns) => {
                serde_json::from_str(&agent.get(&format!("/seccomp/kns/{kns}"))?).map_err(answer)?
            }
            Target::Pod {
                namespace,
                pod,
                container,
            } => {
                let path = format!("/seccomp/{namespace}/{pod}");
                let all: Vec<ContainerProfile> =
                    serde_json::from_str(&agent.get(&path)?).map_err(answer)?;
                let names: Vec<&str> = all.iter().map(|p| p.container.as_str()).collect();
                let chosen = match container {
                    Some(c) => all.iter().position(|p| p.container == *c).ok_or_else(|| {
                        ClientError::Container(format!(
                            "pod {namespace}/{pod} has no container {c:?} with calls counted \
                             (it has {names:?})"
                        ))
                    })?,
                    None if all.len() == 1 => 0,
                    None => {
                        return Err(ClientError::Container(format!(
                            "pod {namespace}/{pod} has containers {names:?}: name one with -c"
                        )));
                    }
                };
                all.into_iter()
                    .nth(chosen)
                    .ok_or_else(|| ClientError::Answer("empty list".to_owned()))?
            }
        };
        let mut warnings = Vec::new();
        if !profile.complete {
            warnings.push(
                "the profile may lack calls: the agent did not see this container from its \
                 start"
                    .to_owned(),
            );
        }
        warnings.extend(profile.notes.iter().cloned());
        let text = if format.is_empty() {
            serde_json::to_string_pretty(&profile.profile)
        } else {
            serde_json::to_string_pretty(&super::spo(&profile))
        }
        .map_err(answer)?;
        Ok((text, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`build`] with no call in progress.
    fn build_all(arch: Arch, observed: impl IntoIterator<Item = Observed>) -> Built {
        build(arch, observed, &BTreeSet::new())
    }

    fn nr(name: &str) -> u32 {
        syscalls::number(Arch::NATIVE, name).expect(name)
    }

    fn ok(name: &str, count: u64) -> Observed {
        Observed {
            nr: nr(name),
            errno: 0,
            count,
        }
    }

    fn failed(name: &str, errno: u32) -> Observed {
        Observed {
            nr: nr(name),
            errno,
            count: 3,
        }
    }

    #[test]
    fn allows_what_was_counted_and_the_calls_counters_cannot_show() {
        let built = build_all(
            Arch::X86_64,
            [
                ok("read", 10),
                ok("openat", 1),
                // A failed call ran: allowed.
                failed("openat", 2),
                failed("stat", 2),
                ok("execve", 1),
                // A zero count is no call.
                Observed {
                    nr: nr("mount"),
                    errno: 0,
                    count: 0,
                },
            ],
        );
        assert!(built.notes.is_empty(), "{:?}", built.notes);
        let p = &built.profile;
        assert_eq!(
            (p.default_action.as_str(), p.default_errno_ret),
            ("SCMP_ACT_ERRNO", 1)
        );
        assert_eq!(
            p.architectures,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert_eq!(p.syscalls.len(), 1);
        assert_eq!(
            p.allowed(),
            [
                "execve",
                "exit",
                "exit_group",
                "openat",
                "read",
                "restart_syscall",
                "rt_sigreturn",
                "sigreturn",
                "stat",
            ]
        );
    }

    #[test]
    fn the_always_allowed_are_real_syscalls_with_reasons() {
        for always in ALWAYS {
            assert!(!always.why.is_empty(), "{}", always.name);
            let native = [Arch::X86_64, Arch::Aarch64]
                .into_iter()
                .filter(|&arch| syscalls::number(arch, always.name).is_some())
                .count();
            // sigreturn exists on the compat architectures only.
            let want = if always.name == "sigreturn" { 0 } else { 2 };
            assert_eq!(native, want, "{}", always.name);
        }
    }

    #[test]
    fn names_are_the_architectures() {
        // openat is 257 on x86_64 and 56 on aarch64 (the generic table).
        let x86 = build_all(
            Arch::X86_64,
            [Observed {
                nr: 257,
                errno: 0,
                count: 1,
            }],
        );
        let arm = build_all(
            Arch::Aarch64,
            [Observed {
                nr: 56,
                errno: 0,
                count: 1,
            }],
        );
        assert!(x86.profile.allowed().contains(&"openat"));
        assert!(arm.profile.allowed().contains(&"openat"));
        assert_eq!(
            arm.profile.architectures,
            ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
        );
    }

    #[test]
    fn the_exit_of_rt_sigreturn_is_named() {
        let built = build_all(
            Arch::X86_64,
            [Observed {
                nr: syscalls::NO_SYSCALL,
                errno: 0,
                count: 4,
            }],
        );
        assert!(built.notes.is_empty(), "{:?}", built.notes);
        assert!(built.profile.allowed().contains(&"rt_sigreturn"));
    }

    #[test]
    fn calls_only_denied_keep_failing_as_they_did() {
        let built = build_all(
            Arch::X86_64,
            [
                failed("clone3", ENOSYS),
                failed("unshare", DEFAULT_ERRNO),
                // EPERM and success: it ran, allowed.
                failed("setuid", DEFAULT_ERRNO),
                ok("setuid", 1),
                // Both errors and nothing else: allowed rather than guessed.
                failed("mount", DEFAULT_ERRNO),
                failed("mount", ENOSYS),
            ],
        );
        let p = &built.profile;
        assert!(p.allowed().contains(&"setuid"));
        assert!(p.allowed().contains(&"mount"));
        assert!(!p.allowed().contains(&"unshare"));
        assert!(!p.allowed().contains(&"clone3"));
        assert_eq!(
            p.syscalls[1],
            Rule {
                names: vec!["clone3".to_owned()],
                action: "SCMP_ACT_ERRNO".to_owned(),
                errno_ret: Some(38),
            }
        );
        assert_eq!(built.notes.len(), 2, "{:?}", built.notes);
        assert!(built.notes[0].starts_with("clone3: "), "{:?}", built.notes);
        assert!(built.notes[1].starts_with("unshare: "), "{:?}", built.notes);
    }

    #[test]
    fn numbers_without_a_name_are_left_out_and_said() {
        for nr in [400, 99_999, u32::MAX - 1] {
            let built = build_all(
                Arch::X86_64,
                [Observed {
                    nr,
                    errno: 0,
                    count: 2,
                }],
            );
            assert_eq!(built.profile.allowed().len(), ALWAYS.len());
            assert!(
                built
                    .profile
                    .allowed()
                    .iter()
                    .all(|n| !n.contains("unknown")),
                "{:?}",
                built.profile
            );
            assert_eq!(built.notes.len(), 1);
            assert!(
                built.notes[0].starts_with(&format!("syscall number {nr} ")),
                "{:?}",
                built.notes
            );
        }
    }

    #[test]
    fn the_json_is_the_oci_profile_format() {
        let built = build_all(Arch::X86_64, [ok("read", 1), failed("clone3", ENOSYS)]);
        let value = serde_json::to_value(&built.profile).expect("json");
        assert_eq!(value["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(value["defaultErrnoRet"], 1);
        assert_eq!(value["syscalls"][0]["action"], "SCMP_ACT_ALLOW");
        assert!(value["syscalls"][0].get("errnoRet").is_none());
        assert_eq!(value["syscalls"][1]["errnoRet"], 38);
        let back: Profile = serde_json::from_value(value).expect("reads back");
        assert_eq!(back, built.profile);
    }

    #[test]
    fn dating_against_the_probes() {
        let s = Duration::from_secs;
        assert_eq!(dating(Some(s(10)), Some(s(10))), Dating::Complete);
        assert_eq!(dating(Some(s(10)), Some(s(11))), Dating::Complete);
        assert_eq!(
            dating(Some(s(10)), Some(s(9))),
            Dating::StartedBefore {
                started: s(9),
                counting_since: s(10)
            }
        );
        assert_eq!(dating(Some(s(10)), None), Dating::Gone);
        assert_eq!(dating(None, Some(s(10))), Dating::Undated);
        assert_eq!(Dating::Complete.reason(7), None);
        for d in [
            dating(Some(s(10)), Some(s(9))),
            Dating::Gone,
            Dating::Undated,
        ] {
            assert!(d.reason(7).is_some_and(|r| r.contains(" 7 ")), "{d:?}");
        }
    }

    fn key(pid_ns: u32, name: &str, errno: u32) -> (MetricKey, MetricValue) {
        (
            MetricKey {
                pid_ns,
                nr: nr(name),
                errno,
            },
            MetricValue {
                count: 1,
                time_ns: 0,
            },
        )
    }

    fn labels(ns: u32) -> Workload {
        let w = |n: &str, p: &str, c: &str| Workload {
            namespace: n.into(),
            pod: p.into(),
            container: c.into(),
        };
        match ns {
            // Two runs of one container, and its sidecar.
            1 | 2 => w("shop", "web", "app"),
            3 => w("shop", "web", "sidecar"),
            4 => w("other", "web", "app"),
            // A container outside Kubernetes, and the host.
            5 => w("", "", "0123456789ab"),
            _ => Workload::default(),
        }
    }

    #[test]
    fn one_profile_per_container_of_the_pod() {
        let keys = [
            key(1, "read", 0),
            key(2, "write", 0),
            key(3, "nanosleep", 0),
            key(4, "mount", 0),
            key(5, "chroot", 0),
            key(6, "reboot", 0),
        ];
        let dates = |ns| Facts {
            dating: if ns == 2 {
                Dating::Gone
            } else {
                Dating::Complete
            },
            // The sidecar is blocked in a wait4 it has not returned from.
            in_progress: if ns == 3 {
                BTreeSet::from([nr("wait4")])
            } else {
                BTreeSet::new()
            },
            unreadable: 0,
        };
        let pod = Which::Pod {
            namespace: "shop".into(),
            pod: "web".into(),
        };
        let found = select(Arch::NATIVE, &keys, labels, dates, &pod);
        let summary: Vec<_> = found
            .iter()
            .map(|p| (p.container.as_str(), p.kns.clone(), p.complete))
            .collect();
        assert_eq!(
            summary,
            [("app", vec![1, 2], false), ("sidecar", vec![3], true)]
        );
        let app = found[0].profile.allowed();
        assert!(app.contains(&"read") && app.contains(&"write"), "{app:?}");
        assert!(!app.contains(&"mount") && !app.contains(&"nanosleep"));
        assert!(found[0].notes[0].contains("pid namespace 2 "));
        let sidecar = found[1].profile.allowed();
        assert!(sidecar.contains(&"wait4"), "{sidecar:?}");
        assert_eq!(found[1].notes.len(), 1, "{:?}", found[1].notes);
        assert!(found[1].notes[0].starts_with("wait4: not counted yet"));
        // Only pods match by name: the host's and unresolved namespaces have none.
        for which in [
            Which::Pod {
                namespace: String::new(),
                pod: String::new(),
            },
            Which::Pod {
                namespace: "shop".into(),
                pod: "nope".into(),
            },
        ] {
            assert!(select(Arch::NATIVE, &keys, labels, dates, &which).is_empty());
        }
        let local = select(Arch::NATIVE, &keys, labels, dates, &Which::Kns(5));
        assert_eq!(local.len(), 1);
        assert_eq!(local[0].container, "0123456789ab");
        assert!(local[0].profile.allowed().contains(&"chroot"));
        assert!(select(Arch::NATIVE, &keys, labels, dates, &Which::Kns(99)).is_empty());
    }

    #[test]
    fn spo_profiles_are_namespaced_and_say_what_is_missing() {
        let keys = [key(1, "read", 0), key(5, "read", 0)];
        let dates = |ns| Facts {
            dating: if ns == 1 {
                Dating::Complete
            } else {
                Dating::Gone
            },
            in_progress: BTreeSet::new(),
            unreadable: 0,
        };
        let pod = Which::Pod {
            namespace: "shop".into(),
            pod: "web".into(),
        };
        let app = &select(Arch::NATIVE, &keys, labels, dates, &pod)[0];
        let v = spo(app);
        assert_eq!(v["apiVersion"], SPO_API_VERSION);
        assert_eq!(v["kind"], "SeccompProfile");
        assert_eq!(v["metadata"]["name"], "web-app");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(v["metadata"]["annotations"]["swoll/complete"], "true");
        assert_eq!(v["spec"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["spec"]["syscalls"][0]["action"], "SCMP_ACT_ALLOW");
        assert!(v["spec"].get("defaultErrnoRet").is_none());
        let local = &select(Arch::NATIVE, &keys, labels, dates, &Which::Kns(5))[0];
        let v = spo(local);
        assert_eq!(v["metadata"]["name"], "kns-5");
        assert!(v["metadata"].get("namespace").is_none());
        assert_eq!(v["metadata"]["annotations"]["swoll/complete"], "false");
        assert_eq!(dns_name("My_Pod-x.Container_"), "my-pod-x.container");
        assert_eq!(dns_name("__"), "profile");
        assert_eq!(dns_name(&"a".repeat(300)).len(), 253);
    }

    #[test]
    fn queries() {
        assert_eq!(format_of(None), Ok(Format::Oci));
        assert_eq!(format_of(Some("format=spo")), Ok(Format::Spo));
        assert_eq!(format_of(Some("format=oci")), Ok(Format::Oci));
        assert!(format_of(Some("format=yaml")).is_err());
        assert!(format_of(Some("pod=x")).is_err());
        assert_eq!(format_of(Some("form%61t=sp%6F")), Ok(Format::Spo));
        assert_eq!(format_of(Some("")), Ok(Format::Oci));
    }

    #[test]
    fn start_ticks_of_a_stat_line() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 \
                    123456 1000 10 18446744073709551615";
        assert_eq!(start_ticks(line), Some(123_456));
        assert_eq!(start_ticks("garbage"), None);
        assert_eq!(start_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn calls_in_progress_are_allowed_and_said() {
        let in_progress = BTreeSet::from([nr("wait4"), nr("read"), 99_999]);
        let built = build(Arch::X86_64, [ok("read", 2)], &in_progress);
        let allowed = built.profile.allowed();
        assert!(allowed.contains(&"wait4") && allowed.contains(&"read"));
        assert_eq!(built.notes.len(), 2, "{:?}", built.notes);
        assert!(built.notes[0].starts_with("wait4: "), "{:?}", built.notes);
        assert!(built.notes[1].starts_with("syscall number 99999 "));
        assert_eq!(
            blocked_in("61 0x1 0x2 0x3 0x0 0x0 0x0 0x7ffd 0x7f12"),
            Some(61)
        );
        assert_eq!(blocked_in("running"), None);
        assert_eq!(blocked_in("-1 0x7ffd 0x7f12"), None);
        assert_eq!(blocked_in(""), None);
    }

    #[test]
    fn live_facts_of_this_process() {
        let own = crate::host::pid_ns_inode(Path::new("/proc/self/ns/pid")).expect("own pid ns");
        let found = live(Path::new("/proc"), &BTreeSet::from([own]));
        let facts = found.get(&own).expect("a process of our own namespace");
        let started = facts.first_start.expect("a start time");
        assert!(started <= crate::host::since_boot().expect("boot time"));
        assert!(live(Path::new("/nonexistent"), &BTreeSet::from([own])).is_empty());
    }
}
