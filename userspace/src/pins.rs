//! Where the metrics probes are pinned, so that counting goes on while no agent runs.
//!
//! A *pin set* is one directory `<pin path>/<fingerprint>/` on a BPF filesystem holding the maps
//! userspace reads, the `sys_enter`/`sys_exit` programs and the links that attach them. A pinned
//! link keeps its program attached after the agent that made it exits (a crash, `kill -9`, a
//! rolling update); the next agent with the same fingerprint opens the set instead of loading
//! anything, so the counters it exports continue exactly. Every file is opened by path
//! (`BPF_OBJ_GET`, which checks only file permissions), never by id: looking an object up by id
//! needs `CAP_SYS_ADMIN`, which the agent does not have. The fingerprint covers everything that
//! shapes the programs or their maps (the probes' object, the ABI version, the load-time config
//! and the map sizes), so a changed binary or option gets a set of its own.
//!
//! A new set is built in a *staging* directory `<fingerprint>-new` and renamed into place only
//! once complete, after the sets it replaces are removed: if the kernel refuses the new load,
//! the old set keeps counting. A staging directory a crash left behind is removed by the next
//! agent's start (and by `swoll unpin`), so nothing stays attached forever.
//!
//! Only directories named like a fingerprint (16 hex digits) or its staging directory are ever
//! removed, so a pin path shared with other tools loses nothing of theirs.
use std::{
    io,
    path::{Path, PathBuf},
};

/// The pin path the DaemonSet gives `swoll serve`, and so the default of `swoll unpin`.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/swoll";

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`: `statfs` of a bpffs.
const BPF_FS_MAGIC: libc::c_long = 0xcafe_4a11;

/// Why the pin path cannot hold pins.
#[derive(Debug, thiserror::Error)]
pub enum PinPathError {
    /// Neither the pin path nor its parent is on a BPF filesystem.
    #[error(
        "{} is not on a BPF filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`; in Kubernetes, \
         mount the host's /sys/fs/bpf) or run without --pin-path",
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

/// The suffix of a staging directory's name. Not `.new`: bpffs refuses every name with a dot
/// in it (`EPERM`; dots are reserved for the kernel's own files).
const STAGING_SUFFIX: &str = "-new";

/// Whether `name` is a pin set's directory name.
fn is_set_name(name: &str) -> bool {
    name.len() == 16
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` is a pin set's or a staging directory's name (and so ours to remove).
fn is_ours(name: &str) -> bool {
    is_set_name(name) || name.strip_suffix(STAGING_SUFFIX).is_some_and(is_set_name)
}

/// Whether `dir` is a staging directory, not a pin set.
pub fn is_staging(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !is_set_name(n) && is_ours(n))
}

/// The staging directory a new pin set is built in before it is renamed to `set`.
pub fn staging(set: &Path) -> PathBuf {
    let mut name = set.as_os_str().to_owned();
    name.push(STAGING_SUFFIX);
    PathBuf::from(name)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PinPathError + '_ {
    move |source| PinPathError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` is on a BPF filesystem.
fn is_bpffs(path: &Path) -> Result<bool, PinPathError> {
    let st = rustix::fs::statfs(path).map_err(|e| io_err(path)(e.into()))?;
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

/// The pin sets and staging directories under `pin_path`, by directory name.
fn ours(pin_path: &Path) -> Result<Vec<PathBuf>, PinPathError> {
    let entries = match std::fs::read_dir(pin_path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(pin_path)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(pin_path))?;
        if entry.file_name().to_str().is_some_and(is_ours) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// The complete pin sets under `pin_path` (staging directories left out), by directory name.
pub fn sets(pin_path: &Path) -> Result<Vec<PathBuf>, PinPathError> {
    let mut sets = ours(pin_path)?;
    sets.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_set_name)
    });
    Ok(sets)
}

/// Removes every pin set and staging directory under `pin_path` but `keep`: their links are
/// unpinned, which detaches their programs once no process holds them. Returns those removed.
pub fn remove_sets_except(
    pin_path: &Path,
    keep: Option<&Path>,
) -> Result<Vec<PathBuf>, PinPathError> {
    let mut removed = Vec::new();
    for set in ours(pin_path)? {
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

/// Moves the complete staging directory `staging` to its set's name `set` (which must not
/// exist): one rename, so no agent ever sees a set half built under its final name.
pub fn commit(staging: &Path, set: &Path) -> Result<(), PinPathError> {
    std::fs::rename(staging, set).map_err(io_err(set))
}

/// `swoll unpin`: removes every pin set (and staging directory) under `pin_path`, then
/// `pin_path` itself if that left it empty. Programs no running agent holds are detached at once. Returns the sets removed.
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
        assert!(!is_set_name("0123456789abcdef-new"));
        assert!(is_ours("0123456789abcdef"));
        assert!(is_ours("0123456789abcdef-new"));
        assert!(!is_ours("0123456789abcde-new"));
        assert!(!is_ours("cilium-new"));
        assert!(!is_ours("0123456789abcdef-old"));
    }

    #[test]
    fn a_sets_staging_directory_is_its_sibling() {
        assert_eq!(
            staging(Path::new("/sys/fs/bpf/swoll/0123456789abcdef")),
            PathBuf::from("/sys/fs/bpf/swoll/0123456789abcdef-new")
        );
        assert!(is_staging(Path::new("/x/0123456789abcdef-new")));
        assert!(!is_staging(Path::new("/x/0123456789abcdef")));
        assert!(!is_staging(Path::new("/x/cilium-new")));
    }

    #[test]
    fn a_pin_path_off_bpffs_is_refused_with_the_fix() {
        let err = prepare(Path::new("/proc/swoll-pins")).expect_err("procfs is not bpffs");
        let msg = err.to_string();
        assert!(
            msg.contains("mount -t bpf") && msg.contains("without --pin-path"),
            "{msg}"
        );
    }
}
