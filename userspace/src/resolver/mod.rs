//! Resolves pid namespaces to the containers and pods that own them, and decides when a
//! namespace is gone for good.
//!
//! No CRI socket and no per-namespace API call: the probes record a process and its cgroup id
//! for every new pid namespace ([`swoll_maps_schema::pidns`]); the process's cgroup path (or,
//! once it has exited, the path of that cgroup id) names the container and the pod UID
//! ([`cgroup`]); a node-scoped pod cache ([`PodIndex`]) maps the container id to its
//! namespace, pod and container name. What a namespace *is* (host, container id, unknown) is
//! cached in a bounded LRU; who it *belongs to* is asked of the pod cache at every render, so a
//! pod that appears late re-labels its series at once.
pub mod cgroup;
pub mod pods;
pub mod procfs;

use std::{num::NonZeroUsize, time::Instant};

use lru::LruCache;
use swoll_maps_schema::pidns::PidNsSeen;

use self::{cgroup::ContainerRef, procfs::Procfs};
use crate::metrics::Workload;

/// The pods of this node, by container id; what a Kubernetes pod cache offers the resolver.
pub trait PodIndex: Send + Sync {
    /// The namespace, pod and container name of container `id` (64 hex characters, without
    /// the `runtime://` prefix), if a pod on this node runs it.
    fn container(&self, id: &str) -> Option<Workload>;
    /// The namespace and name of the pod with `uid` (container left empty): for a container
    /// that kubelet has not reported in the pod's status yet.
    fn pod(&self, uid: &str) -> Option<Workload>;
}

/// What a pid namespace is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The host's own pid namespace.
    Host,
    /// A container, as its cgroup names it.
    Container(ContainerRef),
    /// Not resolved (yet): no live process and no cgroup said what it is.
    Unknown,
}

#[derive(Debug)]
struct Entry {
    identity: Identity,
    seen: Option<PidNsSeen>,
    /// When the namespace was first found without any process or cgroup.
    gone_since: Option<Instant>,
}

/// Resolves pid namespaces; see the module docs.
pub struct Resolver {
    procfs: Procfs,
    host_pid_ns: u32,
    known: LruCache<u32, Entry>,
    pods: Option<Box<dyn PodIndex>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("host_pid_ns", &self.host_pid_ns)
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

/// Namespaces remembered at once; more are forgotten least recently used first (and
/// re-resolved if seen again).
const CAPACITY: usize = 16_384;

impl Resolver {
    /// A resolver over `procfs`, treating `host_pid_ns` as the host, with an optional pod cache
    /// (none in local mode: containers are labelled by short id only).
    pub fn new(procfs: Procfs, host_pid_ns: u32, pods: Option<Box<dyn PodIndex>>) -> Resolver {
        let capacity = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Resolver {
            procfs,
            host_pid_ns,
            known: LruCache::new(capacity),
            pods,
        }
    }

    /// Learns about `pid_ns`, recorded by the probes as `seen`. Cheap when already resolved;
    /// call it as soon as a namespace shows up so that short-lived containers are caught alive.
    pub fn observe(&mut self, pid_ns: u32, seen: Option<PidNsSeen>) {
        if let Some(entry) = self.known.get_mut(&pid_ns) {
            // A record from another cgroup means the inode number now belongs to a new pid
            // namespace (the kernel reuses freed ones at once): identify it afresh.
            let reused = matches!((entry.seen, seen), (Some(old), Some(new)) if old.cgroup_id != new.cgroup_id);
            if seen.is_some() {
                entry.seen = seen;
            }
            if entry.identity != Identity::Unknown && !reused {
                return;
            }
            entry.gone_since = None;
        }
        let identity = self.identify(pid_ns, seen);
        let entry = self.known.get_or_insert_mut(pid_ns, || Entry {
            identity: Identity::Unknown,
            seen,
            gone_since: None,
        });
        entry.identity = identity;
    }

    fn identify(&mut self, pid_ns: u32, seen: Option<PidNsSeen>) -> Identity {
        if pid_ns == self.host_pid_ns {
            return Identity::Host;
        }
        if let Some(seen) = seen {
            if self.procfs.pid_ns_of(seen.tgid) == Some(pid_ns)
                && let Some(container) = self.procfs.container_of(seen.tgid)
            {
                return Identity::Container(container);
            }
            if let Some(container) = self.procfs.container_of_cgroup(seen.cgroup_id) {
                return Identity::Container(container);
            }
        }
        Identity::Unknown
    }

    /// Tries once more, with one walk of procfs, every namespace of `pid_namespaces` that is
    /// still unknown (processes that were not recorded by the probes, e.g. a namespace whose
    /// recording was recycled).
    pub fn retry_unknown(&mut self, pid_namespaces: impl IntoIterator<Item = u32>) {
        let unknown: Vec<u32> = pid_namespaces
            .into_iter()
            .filter(|ns| *ns != self.host_pid_ns)
            .filter(|ns| {
                self.known
                    .peek(ns)
                    .is_none_or(|e| e.identity == Identity::Unknown)
            })
            .collect();
        for (ns, pid) in self.procfs.find_processes(&unknown) {
            if let Some(container) = self.procfs.container_of(pid) {
                let entry = self.known.get_or_insert_mut(ns, || Entry {
                    identity: Identity::Unknown,
                    seen: None,
                    gone_since: None,
                });
                entry.identity = Identity::Container(container);
            }
        }
    }

    /// What `pid_ns` is, as far as known.
    pub fn identity(&self, pid_ns: u32) -> Identity {
        if pid_ns == self.host_pid_ns {
            return Identity::Host;
        }
        self.known
            .peek(&pid_ns)
            .map_or(Identity::Unknown, |e| e.identity.clone())
    }

    /// The labels of `pid_ns` now: empty for the host and for unknown namespaces; the pod's
    /// namespace, name and container name when the pod cache knows the container; otherwise
    /// the container's short id alone.
    pub fn workload(&self, pid_ns: u32) -> Workload {
        match self.identity(pid_ns) {
            Identity::Host | Identity::Unknown => Workload::default(),
            Identity::Container(container) => {
                let pods = self.pods.as_deref();
                if let Some(known) = pods.and_then(|p| p.container(&container.id)) {
                    return known;
                }
                let pod = pods
                    .zip(container.pod_uid.as_deref())
                    .and_then(|(p, uid)| p.pod(uid))
                    .unwrap_or_default();
                Workload {
                    container: container.short_id().to_owned(),
                    ..pod
                }
            }
        }
    }

    /// Checks whether the container namespaces among `pid_namespaces` still exist; returns those
    /// gone for at least `grace` (their series have been exported with their final values), and
    /// forgets them. A namespace exists while a process recorded in it lives or its cgroup
    /// directory does; failing both, one procfs walk looks for any process in it.
    pub fn expired(
        &mut self,
        pid_namespaces: &[u32],
        now: Instant,
        grace: std::time::Duration,
    ) -> Vec<u32> {
        let mut maybe_gone = Vec::new();
        let mut by_cgroup = Vec::new();
        for &ns in pid_namespaces {
            if ns == self.host_pid_ns {
                continue;
            }
            let Some(entry) = self.known.peek(&ns) else {
                continue;
            };
            match entry.seen {
                Some(seen) if self.procfs.pid_ns_of(seen.tgid) == Some(ns) => self.still_alive(ns),
                Some(seen) => by_cgroup.push((ns, seen.cgroup_id)),
                None => maybe_gone.push(ns),
            }
        }
        self.procfs
            .index_cgroups_of(by_cgroup.iter().map(|&(_, id)| id));
        for (ns, cgroup_id) in by_cgroup {
            if self.procfs.cgroup_alive(cgroup_id) {
                self.still_alive(ns);
            } else {
                maybe_gone.push(ns);
            }
        }
        let live = self.procfs.find_processes(&maybe_gone);
        let mut expired = Vec::new();
        for ns in maybe_gone {
            let Some(entry) = self.known.peek_mut(&ns) else {
                continue;
            };
            if let Some(pid) = live.get(&ns) {
                entry.gone_since = None;
                entry.seen = Some(PidNsSeen {
                    tgid: *pid,
                    ..entry.seen.unwrap_or_default()
                });
                continue;
            }
            let since = *entry.gone_since.get_or_insert(now);
            if now.duration_since(since) >= grace {
                expired.push(ns);
            }
        }
        for ns in &expired {
            self.known.pop(ns);
        }
        expired
    }

    fn still_alive(&mut self, pid_ns: u32) {
        if let Some(entry) = self.known.peek_mut(&pid_ns) {
            entry.gone_since = None;
        }
    }
}
