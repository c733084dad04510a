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
//!
//! A pod with `shareProcessNamespace: true` runs all its containers in one pid namespace, so
//! one kernel key sums the calls of several containers and no container can be named for it.
//! Such a namespace is labelled with its pod and `container=""`, from the first read when the
//! pod cache says the pod shares (and, without it, once a second container of the pod is seen
//! in the namespace): its series never flip from one container's name to another's. The
//! containers' names joined would change whenever a container is added or seen late, and would
//! still not say which container made a call.
pub mod pods;
pub mod procfs;

pub use swoll_decode::cgroup;

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use lru::LruCache;
use swoll_maps_schema::pidns::PidNsSeen;

use self::{cgroup::ContainerRef, procfs::Procfs};

/// How often new pid namespaces are looked for between map reads: a container is resolved
/// while its processes live, however short its life.
pub const DISCOVER_EVERY: Duration = Duration::from_millis(200);

/// The Kubernetes identity of a pid namespace: empty strings for host processes and for
/// namespaces not (yet) resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// Kubernetes namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
}

/// The pods of this node, by container id; what a Kubernetes pod cache offers the resolver.
pub trait PodIndex: Send + Sync {
    /// The namespace, pod and container name of container `id` (64 hex characters, without
    /// the `runtime://` prefix), if a pod on this node runs it.
    fn container(&self, id: &str) -> Option<Workload>;
    /// The namespace and name of the pod with `uid` (container left empty): for a container
    /// that kubelet has not reported in the pod's status yet.
    fn pod(&self, uid: &str) -> Option<Workload>;
    /// As [`PodIndex::pod`], but only if that pod runs its containers in one shared pid
    /// namespace (`shareProcessNamespace: true`).
    fn shared_pid_namespace(&self, uid: &str) -> Option<Workload>;
}

/// What the resolver asks of the host's processes and cgroups: [`Procfs`] reads them; a trait
/// so that the resolver's decisions (host or container, a reused inode or a shared namespace,
/// retry back-off, retirement) are tested on their own.
pub trait Processes {
    /// The pid namespace inode of process `pid`, if it is alive and visible.
    fn pid_ns_of(&self, pid: u32) -> Option<u32>;
    /// The container of process `pid`, from its cgroup.
    fn container_of(&self, pid: u32) -> Option<ContainerRef>;
    /// The container a cgroup id names, if its directory still exists.
    fn container_of_cgroup(&mut self, cgroup_id: u64) -> Option<ContainerRef>;
    /// One live process of each of the `wanted` pid namespaces that has one, by namespace.
    fn find_processes(&self, wanted: &[u32]) -> HashMap<u32, u32>;
    /// Makes sure [`Processes::cgroup_alive`] knows `cgroup_ids`.
    fn index_cgroups_of(&mut self, cgroup_ids: &mut dyn Iterator<Item = u64>);
    /// True while the cgroup directory `cgroup_id` exists.
    fn cgroup_alive(&self, cgroup_id: u64) -> bool;
}

impl Processes for Procfs {
    fn pid_ns_of(&self, pid: u32) -> Option<u32> {
        Procfs::pid_ns_of(self, pid)
    }

    fn container_of(&self, pid: u32) -> Option<ContainerRef> {
        Procfs::container_of(self, pid)
    }

    fn container_of_cgroup(&mut self, cgroup_id: u64) -> Option<ContainerRef> {
        Procfs::container_of_cgroup(self, cgroup_id)
    }

    fn find_processes(&self, wanted: &[u32]) -> HashMap<u32, u32> {
        Procfs::find_processes(self, wanted)
    }

    fn index_cgroups_of(&mut self, cgroup_ids: &mut dyn Iterator<Item = u64>) {
        Procfs::index_cgroups_of(self, cgroup_ids);
    }

    fn cgroup_alive(&self, cgroup_id: u64) -> bool {
        Procfs::cgroup_alive(self, cgroup_id)
    }
}

/// What a pid namespace is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// The host's own pid namespace.
    Host,
    /// A container, as its cgroup names it.
    Container(ContainerRef),
    /// The pid namespace that the containers of the pod with this UID share: a second
    /// container of the pod was seen in it while it lived (or the pod says it shares).
    SharedPod(String),
    /// Not resolved (yet): no live process and no cgroup said what it is.
    #[default]
    Unknown,
}

#[derive(Debug, Default)]
struct Entry {
    identity: Identity,
    seen: Option<PidNsSeen>,
    /// When the namespace was first found without any process or cgroup.
    gone_since: Option<Instant>,
    /// Failed procfs retries of an unknown namespace so far.
    retries: u32,
    /// The [`Resolver::retry_unknown`] pass at which the namespace is retried next.
    retry_at: u64,
    /// The [`Resolver::expired`] pass at which the namespace was last checked.
    checked_at: u64,
}

/// Resolves pid namespaces; see the module docs.
pub struct Resolver<P: Processes = Procfs> {
    procfs: P,
    host_pid_ns: u32,
    known: LruCache<u32, Entry>,
    pods: Option<Box<dyn PodIndex>>,
    /// Calls of [`Resolver::retry_unknown`] so far.
    passes: u64,
    /// Calls of [`Resolver::expired`] so far.
    checks: u64,
}

impl<P: Processes> std::fmt::Debug for Resolver<P> {
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

/// Most [`Resolver::retry_unknown`] passes between two retries of a namespace that stays
/// unknown. Each retry walks procfs (a stat per process on the host); a namespace that has no
/// container (a plain `unshare`, say) stays unknown for good, so its retries back off
/// exponentially up to this (at the default 5 s interval, one walk every 80 s).
const MAX_RETRY_GAP: u64 = 16;

/// [`Resolver::expired`] passes between two liveness checks of an idle namespace that was
/// alive at its last check. Each check costs a stat or two in procfs; an idle namespace that
/// ends is found at most this many reads later (then retired after the grace period).
const CHECK_IDLE_EVERY: u64 = 4;

impl<P: Processes> Resolver<P> {
    /// A resolver over `procfs`, treating `host_pid_ns` as the host, with an optional pod cache
    /// (none in local mode: containers are labelled by short id only).
    pub fn new(procfs: P, host_pid_ns: u32, pods: Option<Box<dyn PodIndex>>) -> Resolver<P> {
        let capacity = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Resolver {
            procfs,
            host_pid_ns,
            known: LruCache::new(capacity),
            pods,
            passes: 0,
            checks: 0,
        }
    }

    /// Learns about `pid_ns`, recorded by the probes as `seen`. Cheap when already resolved;
    /// call it as soon as a namespace shows up so that short-lived containers are caught alive.
    pub fn observe(&mut self, pid_ns: u32, seen: Option<PidNsSeen>) {
        let mut before = None;
        if let Some(entry) = self.known.get_mut(&pid_ns) {
            // A record from another cgroup means either that the inode number now belongs to a
            // new pid namespace (the kernel reuses freed ones at once), or that another container
            // of a pod that shares its pid namespace made a call in it.
            let moved = matches!((entry.seen, seen), (Some(old), Some(new)) if old.cgroup_id != new.cgroup_id);
            let old_seen = entry.seen;
            if seen.is_some() {
                entry.seen = seen;
            }
            // A namespace still unknown is identified again only from a new record: the same
            // process and cgroup were tried already, and `retry_unknown` retries them with
            // backoff (re-trying every unknown namespace at each new record anywhere walked
            // procfs for all of them, many times an interval, on a node of plain namespaces).
            let repeated = seen.is_none() || seen == old_seen;
            if (entry.identity != Identity::Unknown || repeated) && !moved {
                return;
            }
            entry.gone_since = None;
            before = moved.then(|| (entry.identity.clone(), old_seen));
        }
        let mut identity = self.identify(pid_ns, seen);
        if let Some((old, old_seen)) = before
            && self.shared(pid_ns, &old, old_seen, &identity)
            && let Some(uid) = pod_uid(&old)
        {
            identity = Identity::SharedPod(uid.to_owned());
        }
        let entry = self.known.get_or_insert_mut(pid_ns, || Entry {
            seen,
            ..Entry::default()
        });
        entry.identity = identity;
    }

    /// Whether `pid_ns`, known as `old` (recorded with `old_seen`) and now recorded from a
    /// process of `new`, is one namespace that two containers of one pod share, rather than a
    /// freed inode number reused by a new namespace: both containers are the same pod's, and
    /// the pod says it shares its pid namespace or the process recorded before still lives in
    /// this namespace (so it was never freed), or it was already known as shared (the pod's
    /// spec cannot change that). A namespace reused by another pod, or by a restarted container
    /// of a pod that does not share, is identified afresh.
    fn shared(
        &self,
        pid_ns: u32,
        old: &Identity,
        old_seen: Option<PidNsSeen>,
        new: &Identity,
    ) -> bool {
        let (Some(uid), Identity::Container(new)) = (pod_uid(old), new) else {
            return false;
        };
        match old {
            _ if new.pod_uid.as_deref() != Some(uid) => return false,
            Identity::SharedPod(_) => return true,
            Identity::Container(old) if old.id == new.id => return false,
            _ => {}
        }
        let pod_says = self
            .pods
            .as_deref()
            .is_some_and(|p| p.shared_pid_namespace(uid).is_some());
        pod_says || old_seen.is_some_and(|s| self.procfs.pid_ns_of(s.tgid) == Some(pid_ns))
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

    /// Tries once more, with one walk of procfs, the namespaces of `pid_namespaces` that are
    /// still unknown (processes that were not recorded by the probes, e.g. a namespace whose
    /// recording was recycled), each at exponentially spaced passes: at every pass at first,
    /// then every 2, 4, … up to [`MAX_RETRY_GAP`] passes while it stays unknown, at passes that
    /// are multiples of its gap.
    pub fn retry_unknown(&mut self, pid_namespaces: impl IntoIterator<Item = u32>) {
        self.passes += 1;
        let passes = self.passes;
        let due: Vec<u32> = pid_namespaces
            .into_iter()
            .filter(|ns| *ns != self.host_pid_ns)
            .filter(|ns| {
                self.known
                    .peek(ns)
                    .is_none_or(|e| e.identity == Identity::Unknown && e.retry_at <= passes)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let found = self.procfs.find_processes(&due);
        for ns in due {
            let container = found
                .get(&ns)
                .and_then(|&pid| self.procfs.container_of(pid));
            let entry = self.known.get_or_insert_mut(ns, Entry::default);
            match container {
                Some(container) => entry.identity = Identity::Container(container),
                None => {
                    // The next multiple of the gap, not `passes + gap`: namespaces with the same
                    // gap then come due together and share a walk, instead of each due pass
                    // walking procfs for a few of them.
                    let gap = (1_u64 << entry.retries.min(4)).min(MAX_RETRY_GAP);
                    entry.retry_at = (passes / gap + 1) * gap;
                    entry.retries = entry.retries.saturating_add(1);
                }
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
    /// namespace and name with `container=""` for a namespace the pod's containers share (see
    /// the module docs); the pod's namespace, name and container name when the pod cache knows
    /// the container; otherwise the container's short id alone.
    pub fn workload(&self, pid_ns: u32) -> Workload {
        let pods = self.pods.as_deref();
        match self.identity(pid_ns) {
            Identity::Host | Identity::Unknown => Workload::default(),
            Identity::SharedPod(uid) => pods.and_then(|p| p.pod(&uid)).unwrap_or_default(),
            Identity::Container(container) => {
                let shared = pods
                    .zip(container.pod_uid.as_deref())
                    .and_then(|(p, uid)| p.shared_pid_namespace(uid));
                if let Some(pod) = shared {
                    return pod;
                }
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
    /// directory does; failing both, one procfs walk looks for any process in it. A namespace
    /// for which `active` is true made calls since the last read, so it is alive without
    /// asking procfs; an idle one is checked every [`CHECK_IDLE_EVERY`] calls (every call once
    /// it has been found gone), so a namespace that ends is found within that many reads.
    pub fn expired(
        &mut self,
        pid_namespaces: &[u32],
        active: impl Fn(u32) -> bool,
        now: Instant,
        grace: std::time::Duration,
    ) -> Vec<u32> {
        self.checks += 1;
        let mut maybe_gone = Vec::new();
        let mut by_cgroup = Vec::new();
        for &ns in pid_namespaces {
            if ns == self.host_pid_ns {
                continue;
            }
            if active(ns) {
                self.still_alive(ns);
                continue;
            }
            let Some(entry) = self.known.peek_mut(&ns) else {
                continue;
            };
            if entry.gone_since.is_none() && self.checks < entry.checked_at + CHECK_IDLE_EVERY {
                continue;
            }
            entry.checked_at = self.checks;
            let entry = &*entry;
            match entry.seen {
                Some(seen) if self.procfs.pid_ns_of(seen.tgid) == Some(ns) => self.still_alive(ns),
                Some(seen) => by_cgroup.push((ns, seen.cgroup_id)),
                None => maybe_gone.push(ns),
            }
        }
        self.procfs
            .index_cgroups_of(&mut by_cgroup.iter().map(|&(_, id)| id));
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

/// The pod UID of a container's or a shared namespace's identity.
fn pod_uid(identity: &Identity) -> Option<&str> {
    match identity {
        Identity::Container(c) => c.pod_uid.as_deref(),
        Identity::SharedPod(uid) => Some(uid),
        Identity::Host | Identity::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, time::Duration};

    use super::*;

    const HOST: u32 = 1000;
    const POD_A: &str = "aaaaaaaa-0000-0000-0000-000000000001";
    const POD_B: &str = "bbbbbbbb-0000-0000-0000-000000000002";

    /// The host's processes and cgroups as plain maps; `walks` counts procfs walks.
    #[derive(Default)]
    struct Host {
        /// pid → (its pid namespace, its cgroup id).
        processes: HashMap<u32, (u32, u64)>,
        /// Live cgroup directories: id → the container they name.
        cgroups: HashMap<u64, ContainerRef>,
        walks: Cell<usize>,
    }

    impl Processes for Host {
        fn pid_ns_of(&self, pid: u32) -> Option<u32> {
            self.processes.get(&pid).map(|&(ns, _)| ns)
        }

        fn container_of(&self, pid: u32) -> Option<ContainerRef> {
            let (_, cgroup) = self.processes.get(&pid)?;
            self.cgroups.get(cgroup).cloned()
        }

        fn container_of_cgroup(&mut self, cgroup_id: u64) -> Option<ContainerRef> {
            self.cgroups.get(&cgroup_id).cloned()
        }

        fn find_processes(&self, wanted: &[u32]) -> HashMap<u32, u32> {
            self.walks.set(self.walks.get() + 1);
            self.processes
                .iter()
                .filter(|(_, (ns, _))| wanted.contains(ns))
                .map(|(&pid, &(ns, _))| (ns, pid))
                .collect()
        }

        fn index_cgroups_of(&mut self, _: &mut dyn Iterator<Item = u64>) {}

        fn cgroup_alive(&self, cgroup_id: u64) -> bool {
            self.cgroups.contains_key(&cgroup_id)
        }
    }

    /// A pod: uid, namespace, name, whether it shares its pid namespace, and its containers
    /// (id, name).
    type Pod = (
        &'static str,
        &'static str,
        &'static str,
        bool,
        Vec<(String, &'static str)>,
    );

    /// The node's pods.
    struct Pods(Vec<Pod>);

    impl PodIndex for Pods {
        fn container(&self, id: &str) -> Option<Workload> {
            self.0.iter().find_map(|(_, ns, pod, _, containers)| {
                let (_, name) = containers.iter().find(|(c, _)| c == id)?;
                Some(workload(ns, pod, name))
            })
        }

        fn pod(&self, uid: &str) -> Option<Workload> {
            let (_, ns, pod, _, _) = self.0.iter().find(|p| p.0 == uid)?;
            Some(workload(ns, pod, ""))
        }

        fn shared_pid_namespace(&self, uid: &str) -> Option<Workload> {
            self.0
                .iter()
                .find(|p| p.0 == uid && p.3)
                .and_then(|_| self.pod(uid))
        }
    }

    fn workload(namespace: &str, pod: &str, container: &str) -> Workload {
        Workload {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        }
    }

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    /// A container of pod `uid` with id `id(n)`.
    fn container(uid: &str, n: u8) -> ContainerRef {
        cgroup::from_path(&format!("/kubepods/pod{uid}/{}", id(n))).expect("a kubelet path")
    }

    fn seen(tgid: u32, cgroup_id: u64) -> Option<PidNsSeen> {
        Some(PidNsSeen {
            tgid,
            cgroup_id,
            ..PidNsSeen::default()
        })
    }

    fn shop(shares: bool) -> Pods {
        Pods(vec![
            (
                POD_A,
                "shop",
                "web",
                shares,
                vec![(id(1), "app"), (id(2), "sidecar")],
            ),
            (POD_B, "bank", "ledger", false, vec![(id(3), "db")]),
        ])
    }

    fn resolver(host: Host, pods: Pods) -> Resolver<Host> {
        Resolver::new(host, HOST, Some(Box::new(pods)))
    }

    #[test]
    fn the_host_and_a_pods_container_get_their_labels() {
        let mut host = Host::default();
        host.cgroups.insert(11, container(POD_A, 1));
        host.processes.insert(500, (7, 11));
        let mut r = resolver(host, shop(false));
        r.observe(HOST, seen(1, 1));
        r.observe(7, seen(500, 11));
        assert_eq!(r.identity(HOST), Identity::Host);
        assert_eq!(r.workload(HOST), Workload::default());
        assert_eq!(r.workload(7), workload("shop", "web", "app"));
    }

    #[test]
    fn a_container_the_pod_list_lacks_gets_the_pod_and_its_short_id() {
        let mut host = Host::default();
        host.cgroups.insert(19, container(POD_A, 9));
        host.processes.insert(500, (7, 19));
        let mut r = resolver(host, shop(false));
        r.observe(7, seen(500, 19));
        assert_eq!(r.workload(7), workload("shop", "web", "090909090909"));
    }

    #[test]
    fn an_exited_process_is_resolved_by_its_cgroup() {
        let mut host = Host::default();
        host.cgroups.insert(13, container(POD_B, 3));
        let mut r = resolver(host, shop(false));
        r.observe(8, seen(600, 13));
        assert_eq!(r.workload(8), workload("bank", "ledger", "db"));
    }

    #[test]
    fn a_reused_inode_is_relabelled_but_a_shared_namespace_is_the_pods() {
        // Pod A's app, then the inode reused by pod B's db (the app's process is gone).
        let mut host = Host::default();
        host.cgroups.insert(11, container(POD_A, 1));
        host.cgroups.insert(13, container(POD_B, 3));
        host.processes.insert(500, (7, 11));
        let mut r = resolver(host, shop(false));
        r.observe(7, seen(500, 11));
        r.procfs.processes.remove(&500);
        r.procfs.processes.insert(600, (7, 13));
        r.observe(7, seen(600, 13));
        assert_eq!(r.workload(7), workload("bank", "ledger", "db"));

        // The app, then its sidecar in the same namespace while the app still lives.
        let mut host = Host::default();
        host.cgroups.insert(11, container(POD_A, 1));
        host.cgroups.insert(12, container(POD_A, 2));
        host.processes.insert(500, (7, 11));
        host.processes.insert(501, (7, 12));
        let mut r = resolver(host, shop(false));
        r.observe(7, seen(500, 11));
        r.observe(7, seen(501, 12));
        assert_eq!(r.identity(7), Identity::SharedPod(POD_A.into()));
        assert_eq!(r.workload(7), workload("shop", "web", ""));
    }

    #[test]
    fn a_pod_that_says_it_shares_is_labelled_without_container_from_the_first_read() {
        let mut host = Host::default();
        host.cgroups.insert(11, container(POD_A, 1));
        host.processes.insert(500, (7, 11));
        let mut r = resolver(host, shop(true));
        r.observe(7, seen(500, 11));
        assert_eq!(r.workload(7), workload("shop", "web", ""));
    }

    #[test]
    fn unknown_namespaces_are_retried_with_back_off() {
        let mut r = resolver(Host::default(), shop(false));
        let mut walked_at = Vec::new();
        for pass in 1..=40 {
            let before = r.procfs.walks.get();
            r.retry_unknown([9]);
            if r.procfs.walks.get() > before {
                walked_at.push(pass);
            }
        }
        assert_eq!(walked_at, [1, 2, 4, 8, 16, 32]);
        r.retry_unknown([HOST]);
        assert_eq!(r.procfs.walks.get(), 6, "the host is never looked for");
    }

    #[test]
    fn a_namespace_retires_after_its_grace_and_an_active_one_never() {
        let mut host = Host::default();
        host.cgroups.insert(11, container(POD_A, 1));
        host.cgroups.insert(13, container(POD_B, 3));
        host.processes.insert(500, (7, 11));
        host.processes.insert(600, (8, 13));
        let mut r = resolver(host, shop(false));
        r.observe(7, seen(500, 11));
        r.observe(8, seen(600, 13));
        // Both end: processes and cgroups gone.
        r.procfs.processes.clear();
        r.procfs.cgroups.clear();
        let grace = Duration::from_secs(30);
        let start = Instant::now();
        let active = |ns| ns == 8;
        // An idle namespace is checked every CHECK_IDLE_EVERY reads; the check that finds it
        // gone starts its grace, and from then on it is checked at every read.
        for _ in 1..CHECK_IDLE_EVERY {
            assert!(r.expired(&[7, 8], active, start, grace).is_empty());
        }
        let walks = r.procfs.walks.get();
        assert!(r.expired(&[7, 8], active, start, grace).is_empty());
        assert_eq!(r.procfs.walks.get(), walks + 1, "one walk for the idle one");
        let almost = start + grace - Duration::from_secs(1);
        assert!(r.expired(&[7, 8], active, almost, grace).is_empty());
        assert_eq!(r.expired(&[7, 8], active, start + grace, grace), [7]);
        assert_eq!(r.identity(7), Identity::Unknown, "forgotten");
        assert_eq!(r.workload(8), workload("bank", "ledger", "db"));
    }
}
