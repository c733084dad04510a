//! Linux capabilities by name, and the DaemonSet's that this machine can grant: shared by the
//! deployed runs (`crate::deployed`) and the real-runtime tests (`crate::runtime`).
use crate::manifest::Deployment;

/// Capability numbers by name (`include/uapi/linux/capability.h`), lower case without `cap_`.
const CAPABILITIES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The bit of capability `name` (lower case, without `cap_`).
pub fn capability_bit(name: &str) -> u32 {
    let name = name.trim_start_matches("cap_");
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .and_then(|b| u32::try_from(b).ok())
        .unwrap_or_else(|| panic!("unknown capability {name}"))
}

/// A capability mask from `/proc/<pid>/status` (`CapBnd`, `CapEff`, …).
pub fn capability_mask(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| {
            u64::from_str_radix(l.strip_prefix(field)?.strip_prefix(':')?.trim(), 16).ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The capabilities of DaemonSet `d` this machine lets a container have, and those it does not.
///
/// A runtime (or [`crate::deployed`]) can only give a container capabilities in its own
/// bounding set. On a node that is every one; this sandbox's root lacks some
/// (`CAP_SYS_RESOURCE`), and podman (runc) would leave them out silently. The tests ask for
/// exactly the ones they can have and say which they left out: `CAP_SYS_RESOURCE` only lifts the memlock limit that kernels before 5.11 charge
/// BPF maps to, which these kernels do not.
pub fn grantable(d: &Deployment) -> (Vec<String>, Vec<String>) {
    let bounding = capability_mask("self", "CapBnd");
    d.capabilities()
        .into_iter()
        .partition(|c| bounding & (1 << capability_bit(c)) != 0)
}

/// Asserts that process `pid` holds exactly the capabilities of `d` that this machine can grant
/// (effective, permitted and bounding sets alike, as a runtime gives root) and runs with
/// `no_new_privs` if `d` asks for it.
pub fn assert_deployed(pid: &str, d: &Deployment) {
    let (granted, _) = grantable(d);
    let want = granted
        .iter()
        .fold(0_u64, |mask, c| mask | (1 << capability_bit(c)));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            capability_mask(pid, set),
            want,
            "{set} of process {pid}, want {granted:?}"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert_eq!(
        status.contains("NoNewPrivs:\t1"),
        d.no_new_privs,
        "NoNewPrivs of {pid}:\n{status}"
    );
}
