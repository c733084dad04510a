//! Facts about the host the agent runs on, read from procfs.
use std::{io, os::unix::fs::MetadataExt as _, path::Path};

/// Inode number of the pid namespace a `/proc/PID/ns/pid` link points at.
pub fn pid_ns_inode(link: &Path) -> io::Result<u32> {
    let ino = std::fs::metadata(link)?.ino();
    u32::try_from(ino)
        .map_err(|_| io::Error::other(format!("{}: inode {ino} is not 32-bit", link.display())))
}

/// The host's pid namespace: that of PID 1 under `proc_root`, or, where reading it is denied
/// (some sandboxes refuse even root), the agent's own.
pub fn host_pid_ns(proc_root: &Path) -> io::Result<u32> {
    let init = proc_root.join("1/ns/pid");
    match pid_ns_inode(&init) {
        Ok(ns) => Ok(ns),
        Err(err) => {
            tracing::info!(
                path = %init.display(),
                error = %err,
                "cannot read PID 1's pid namespace; treating the agent's own as the host's"
            );
            pid_ns_inode(Path::new("/proc/self/ns/pid"))
        }
    }
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
