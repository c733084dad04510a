//! Facts about the host the agent runs on: its initial pid namespace, procfs, kernel release,
//! boot clock, capabilities.
use std::{io, os::unix::fs::MetadataExt as _, path::Path, time::Duration};

/// The inode number of the kernel's initial pid namespace, the host's: `PROC_PID_INIT_INO`
/// (`include/linux/proc_ns.h`), fixed since Linux 3.8. A constant rather than a read of
/// `/proc/1/ns/pid`, which in a pod without `hostPID` is the pod's own init, and needs ptrace
/// access besides: taking that for the host would label every host process as the agent's pod.
pub const INIT_PID_NS: u32 = 0xEFFF_FFFC;

/// Inode number of the pid namespace a `/proc/PID/ns/pid` link points at.
pub fn pid_ns_inode(link: &Path) -> io::Result<u32> {
    let ino = std::fs::metadata(link)?.ino();
    u32::try_from(ino)
        .map_err(|_| io::Error::other(format!("{}: inode {ino} is not 32-bit", link.display())))
}

/// The agent's process id as the kernel's BPF helpers see it (the host's pid namespace): the
/// `self` link of the host's procfs at `proc_root`, which names the reader as that procfs's
/// namespace numbers it. In a container `getpid()` gives the container's own number, which the
/// probes would compare with some unrelated host process. Falls back to `getpid()`.
pub fn own_tgid(proc_root: &Path) -> u32 {
    std::fs::read_link(proc_root.join("self"))
        .ok()
        .and_then(|target| target.to_str()?.parse().ok())
        .unwrap_or_else(std::process::id)
}

/// (major, minor) of a kernel release string.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The time since boot (`CLOCK_BOOTTIME`, the clock of `/proc/<pid>/stat` start times and of
/// BPF programs' load times).
pub fn since_boot() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

/// Capability numbers (`include/uapi/linux/capability.h`) of the ones swoll asks about.
pub mod cap {
    /// `CAP_SYS_PTRACE`.
    pub const SYS_PTRACE: u32 = 19;
    /// `CAP_SYS_ADMIN`.
    pub const SYS_ADMIN: u32 = 21;
    /// `CAP_SYS_RESOURCE`.
    pub const SYS_RESOURCE: u32 = 24;
    /// `CAP_PERFMON`.
    pub const PERFMON: u32 = 38;
    /// `CAP_BPF`.
    pub const BPF: u32 = 39;
}

/// This process's effective capability set (`CapEff` of `/proc/self/status`), as a bit mask
/// indexed by the numbers of [`cap`]; `None` where it cannot be read.
pub fn effective_caps() -> Option<u64> {
    parse_cap_eff(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `CapEff` of a `/proc/PID/status` text.
fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Whether the capability set `caps` holds capability `cap`.
pub fn has_cap(caps: u64, cap: u32) -> bool {
    cap < 64 && caps & (1 << cap) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0-46-amd64"), Some((5, 10)));
        assert_eq!(parse_release("7.3.4+deb13-amd64"), Some((7, 3)));
        assert_eq!(parse_release(""), None);
        assert!(parse_release("5.4.0").is_some_and(|v| v < (5, 8)));
    }

    #[test]
    fn the_initial_pid_namespace_is_proc_pid_init_ino() {
        assert_eq!(INIT_PID_NS, 4_026_531_836);
    }

    #[test]
    fn cap_eff_is_parsed() {
        let status = "Name:\tswoll\nCapInh:\t0000000000000000\nCapEff:\t000000c000080000\n";
        let caps = parse_cap_eff(status).expect("parses");
        assert!(has_cap(caps, cap::BPF) && has_cap(caps, cap::PERFMON));
        assert!(has_cap(caps, cap::SYS_PTRACE));
        assert!(!has_cap(caps, cap::SYS_ADMIN));
        assert!(!has_cap(caps, 64));
        assert_eq!(parse_cap_eff("Name:\tswoll\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tnot hex\n"), None);
    }
}
