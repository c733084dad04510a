//! What procfs and the cgroup v2 tree say about a pid namespace: a live process in it, that
//! process's cgroup, and the path of a cgroup id.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::cgroup::{self, ContainerRef};

/// Reads procfs under a root (`/proc`, or `/host/proc` in a container) and the cgroup v2 tree.
#[derive(Debug)]
pub struct Procfs {
    root: PathBuf,
    cgroup2: Option<PathBuf>,
    /// cgroup id (directory inode) → path relative to the cgroup v2 root, rebuilt on a miss.
    cgroup_paths: HashMap<u64, String>,
}

impl Procfs {
    /// A reader of `root`; finds the cgroup v2 mount from `root/self/mounts`, falling back to
    /// `/proc/self/mounts` (the agent's own view).
    pub fn new(root: &Path) -> Procfs {
        let cgroup2 = [root.join("self/mounts"), PathBuf::from("/proc/self/mounts")]
            .iter()
            .find_map(|m| {
                std::fs::read_to_string(m)
                    .ok()
                    .and_then(|t| cgroup2_mount(&t))
            });
        Procfs {
            root: root.to_owned(),
            cgroup2,
            cgroup_paths: HashMap::new(),
        }
    }

    /// Where the cgroup v2 hierarchy is mounted, if it is.
    pub fn cgroup2_root(&self) -> Option<&Path> {
        self.cgroup2.as_deref()
    }

    /// The pid namespace inode of process `pid`, if it is alive and visible.
    pub fn pid_ns_of(&self, pid: u32) -> Option<u32> {
        let ino = std::fs::metadata(self.root.join(format!("{pid}/ns/pid")))
            .ok()?
            .ino();
        u32::try_from(ino).ok()
    }

    /// The container of process `pid`, from its cgroup file.
    pub fn container_of(&self, pid: u32) -> Option<ContainerRef> {
        let text = std::fs::read_to_string(self.root.join(format!("{pid}/cgroup"))).ok()?;
        cgroup::from_proc_cgroup(&text)
    }

    /// One live process of every pid namespace procfs shows, by walking it once.
    pub fn all_processes(&self) -> HashMap<u32, u32> {
        let mut found = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return found;
        };
        for entry in entries.flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(pid) = pid
                && let Some(ns) = self.pid_ns_of(pid)
            {
                found.entry(ns).or_insert(pid);
            }
        }
        found
    }

    /// One live process for each of `wanted` pid namespaces, by walking procfs once.
    pub fn find_processes(&self, wanted: &[u32]) -> HashMap<u32, u32> {
        let mut found = HashMap::new();
        if wanted.is_empty() {
            return found;
        }
        let wanted: HashSet<u32> = wanted.iter().copied().collect();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ns) = self.pid_ns_of(pid)
                && wanted.contains(&ns)
            {
                found.entry(ns).or_insert(pid);
                if found.len() == wanted.len() {
                    break;
                }
            }
        }
        found
    }

    /// The container a cgroup id names, if its directory still exists; re-walks the cgroup v2
    /// tree (bounded) when the id is not known yet.
    pub fn container_of_cgroup(&mut self, cgroup_id: u64) -> Option<ContainerRef> {
        if !self.cgroup_paths.contains_key(&cgroup_id) {
            self.index_cgroups();
        }
        cgroup::from_path(self.cgroup_paths.get(&cgroup_id)?)
    }

    /// Re-walks the cgroup v2 tree (bounded) once if any of `cgroup_ids` is not indexed yet:
    /// a namespace resolved through procfs never needed its cgroup's path until its recorded
    /// process exited, and [`Procfs::cgroup_alive`] only knows indexed ids.
    pub fn index_cgroups_of(&mut self, mut cgroup_ids: impl Iterator<Item = u64>) {
        if cgroup_ids.any(|id| !self.cgroup_paths.contains_key(&id)) {
            self.index_cgroups();
        }
    }

    /// True while the cgroup directory `cgroup_id` exists (an id that was never indexed counts
    /// as gone: see [`Procfs::index_cgroups_of`]).
    pub fn cgroup_alive(&self, cgroup_id: u64) -> bool {
        match (&self.cgroup2, self.cgroup_paths.get(&cgroup_id)) {
            (Some(root), Some(path)) => std::fs::metadata(root.join(path.trim_start_matches('/')))
                .is_ok_and(|m| m.ino() == cgroup_id),
            _ => false,
        }
    }

    fn index_cgroups(&mut self) {
        const MAX_DIRS: usize = 200_000;
        let Some(root) = &self.cgroup2 else { return };
        self.cgroup_paths.clear();
        let mut stack = vec![(root.clone(), String::from("/"))];
        while let Some((dir, rel)) = stack.pop() {
            if let Ok(meta) = std::fs::metadata(&dir) {
                self.cgroup_paths.insert(meta.ino(), rel.clone());
            }
            if self.cgroup_paths.len() >= MAX_DIRS {
                tracing::warn!(limit = MAX_DIRS, "cgroup tree too large to index fully");
                return;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(name) = entry.file_name().to_str()
                {
                    let child = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
    }
}

/// The mount point of the cgroup v2 hierarchy in a `mounts` file.
fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
        assert_eq!(cgroup2_mount(""), None);
    }

    #[test]
    fn this_process_is_found_by_its_namespace() {
        let procfs = Procfs::new(Path::new("/proc"));
        let me = std::process::id();
        let Some(ns) = procfs.pid_ns_of(me) else {
            return;
        };
        assert!(procfs.find_processes(&[ns]).contains_key(&ns));
        assert!(procfs.find_processes(&[]).is_empty());
    }
}
