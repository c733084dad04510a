//! Where the metrics probes are pinned, so that counting goes on while no agent runs.
//!
//! A *pin set* is one directory `<pin path>/<fingerprint>/` on a BPF filesystem holding the maps
//! userspace reads and the links that attach `sys_enter`/`sys_exit`. A pinned link keeps its
//! program attached after the agent that made it exits (a crash, `kill -9`, a rolling update);
//! the next agent with the same fingerprint opens the set instead of loading anything, so the
//! counters it exports continue exactly. The fingerprint covers everything that shapes the
//! programs or their maps (the probes' object, the ABI version, the load-time config and the
//! map sizes), so a changed binary or option gets a set of its own and the old one is removed.
//!
//! Only directories named like a fingerprint (16 hex digits) are ever removed, so a pin path
//! shared with other tools loses nothing of theirs.
use std::{
    io,
    path::{Path, PathBuf},
};

/// The default `--pin-path`.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/swoll";

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`: `statfs` of a bpffs.
const BPF_FS_MAGIC: libc::c_long = 0xcafe_4a11;

/// Why the pin path cannot hold pins.
#[derive(Debug, thiserror::Error)]
pub enum PinPathError {
    /// Neither the pin path nor its parent is on a BPF filesystem.
    #[error(
        "{} is not on a BPF filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`; in Kubernetes, \
         mount the host's /sys/fs/bpf) or run with --no-pin",
        path.display()
    )]
    NotBpffs {
        /// The directory checked.
        path: PathBuf,
    },
    /// The pin path could not be inspected, created or cleaned.
    #[error("{}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A 64-bit FNV-1a hash: written out rather than std's `DefaultHasher`, whose output may change
/// between Rust releases, since a fingerprint must be the same for every build of one source.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Adds `bytes`.
    pub fn with(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// The set's directory name: 16 lowercase hex digits.
    pub fn name(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Whether `name` is a pin set's directory name (and so ours to remove).
fn is_set_name(name: &str) -> bool {
    name.len() == 16
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PinPathError + '_ {
    move |source| PinPathError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` is on a BPF filesystem.
fn is_bpffs(path: &Path) -> Result<bool, PinPathError> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_err(path)(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: statfs writes into the zeroed struct we pass and reads the NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io_err(path)(io::Error::last_os_error()));
    }
    Ok(st.f_type == BPF_FS_MAGIC)
}

/// Makes sure `pin_path` is a directory on a BPF filesystem, creating it (not its parents,
/// which must be a mounted bpffs already) if needed.
pub fn prepare(pin_path: &Path) -> Result<(), PinPathError> {
    if !pin_path.exists() {
        let parent = pin_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.exists() || !is_bpffs(parent)? {
            return Err(PinPathError::NotBpffs {
                path: parent.to_owned(),
            });
        }
        match std::fs::create_dir(pin_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(pin_path)(e)),
        }
    }
    if !is_bpffs(pin_path)? {
        return Err(PinPathError::NotBpffs {
            path: pin_path.to_owned(),
        });
    }
    Ok(())
}

/// The pin sets under `pin_path`, by directory name.
fn sets(pin_path: &Path) -> Result<Vec<PathBuf>, PinPathError> {
    let entries = match std::fs::read_dir(pin_path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(pin_path)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(pin_path))?;
        if entry.file_name().to_str().is_some_and(is_set_name) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Removes every pin set under `pin_path` but `keep`: their links are unpinned, which detaches
/// their programs once no process holds them. Returns the sets removed.
pub fn remove_sets_except(
    pin_path: &Path,
    keep: Option<&Path>,
) -> Result<Vec<PathBuf>, PinPathError> {
    let mut removed = Vec::new();
    for set in sets(pin_path)? {
        if Some(set.as_path()) != keep {
            remove_set(&set)?;
            removed.push(set);
        }
    }
    Ok(removed)
}

/// Removes one pin set's directory and everything pinned in it.
pub fn remove_set(set: &Path) -> Result<(), PinPathError> {
    match std::fs::remove_dir_all(set) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(set)(e)),
        _ => Ok(()),
    }
}

/// `swoll unpin`: removes every pin set under `pin_path`, then `pin_path` itself if that left
/// it empty. Programs no running agent holds are detached at once. Returns the sets removed.
pub fn unpin_all(pin_path: &Path) -> Result<Vec<PathBuf>, PinPathError> {
    let removed = remove_sets_except(pin_path, None)?;
    if std::fs::read_dir(pin_path).is_ok_and(|mut d| d.next().is_none()) {
        std::fs::remove_dir(pin_path).map_err(io_err(pin_path))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_fnv1a_and_stable() {
        // The FNV-1a test vectors of its authors.
        assert_eq!(Fingerprint::default().name(), "cbf29ce484222325");
        assert_eq!(Fingerprint::default().with(b"a").name(), "af63dc4c8601ec8c");
        assert_eq!(
            Fingerprint::default().with(b"foobar").name(),
            "85944171f73967e8"
        );
        assert_eq!(
            Fingerprint::default().with(b"foo").with(b"bar").name(),
            Fingerprint::default().with(b"foobar").name()
        );
    }

    #[test]
    fn only_fingerprint_names_are_sets() {
        assert!(is_set_name("0123456789abcdef"));
        assert!(!is_set_name("0123456789ABCDEF"));
        assert!(!is_set_name("0123456789abcde"));
        assert!(!is_set_name("cilium"));
    }

    #[test]
    fn a_pin_path_off_bpffs_is_refused_with_the_fix() {
        let err = prepare(Path::new("/proc/swoll-pins")).expect_err("procfs is not bpffs");
        let msg = err.to_string();
        assert!(
            msg.contains("mount -t bpf") && msg.contains("--no-pin"),
            "{msg}"
        );
    }
}
