//! Container id and pod UID from a process's cgroup.
//!
//! The agent counts system calls per pid namespace, and to label a namespace it picks one
//! process inside it and reads `/proc/<pid>/cgroup`. The cgroup path is the only place where
//! the kernel, the container runtime and kubelet all agree on names: runtimes name the leaf
//! cgroup after the container id, and kubelet names the parent after the pod UID. Reading
//! it needs no runtime socket and no API call, so this module turns that text into a
//! [`ContainerRef`] that the caller matches against `status.containerStatuses[].containerID`
//! (`<runtime scheme>://<id>`) and `metadata.uid`.
//!
//! # Layouts recognised
//!
//! * cgroup v2 (`0::/path`) and v1 (`N:controllers:/path`, the `memory`, `pids` and
//!   `name=systemd` hierarchies first, then the v2 line of a hybrid host, then any other line
//!   that names a container);
//! * kubelet with the systemd driver: `kubepods[-<qos>]-pod<uid_with_underscores>.slice` over
//!   `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, also with a
//!   `kubelet-` prefix (kind, k3s) and under any other prefix;
//! * the `<slice>:<prefix>:<id>` form that some runtimes create literally as a directory name
//!   when the systemd driver is configured but systemd does not manage the cgroup
//!   (`/system.slice/containerd.service/kubepods-…-pod<uid>.slice:cri-containerd:<id>`);
//! * kubelet with the cgroupfs driver: `/kubepods[/<qos>]/pod<uid-with-dashes>/<id>` and cri-o's
//!   `…/pod<uid>/crio-<id>`;
//! * plain Docker (`/docker/<id>`, `docker-<id>.scope`), containerd without Kubernetes
//!   (nerdctl's `/default/<id>` and `nerdctl-<id>.scope`), podman (`libpod-<id>.scope`,
//!   `/libpod_parent/libpod-<id>`), all as containers without a pod;
//! * paths relative to another cgroup namespace (`/../../kubepods-…`): `..` is just a segment.
//!
//! # Decisions
//!
//! * **Ids are 64 lowercase hex characters, exactly.** Runtimes write them that way and
//!   kubelet reports them that way, so anything else (63 or 65 characters, upper case) is not
//!   a name a runtime made and yields no container. Upper case is rejected rather than
//!   lowered: cgroup names are case sensitive, so an upper-case directory is a different
//!   cgroup that some other tool created, and "fixing" it would invent a match.
//! * **Pod UIDs are returned dashed and lowercase** (`8-4-4-4-12`), the `metadata.uid` form;
//!   systemd slices carry them with underscores because `-` separates slice levels there.
//! * **Static pods** (kubelet's own manifests: etcd, kube-apiserver, …) are named in the cgroup
//!   by a 32-hex-character config hash, not by the UID the API server gives their mirror pod.
//!   The container is still returned but with `pod_uid: None`: the hash would match no
//!   `metadata.uid`, and the container id still matches the mirror pod's `containerStatuses`.
//! * **conmon** (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) is cri-o's and podman's
//!   monitor process. It runs in the host's pid namespace and is not part of the container,
//!   so it yields `None`, like any other process in a pod cgroup that sits in no container.
//! * **Nesting.** When the path names a pod, the answer is the first container below the
//!   outermost pod: that is the container the host's kubelet reports, and anything below it
//!   (`crio-<id>.scope/container`, Docker in Docker) belongs to it. A container above that
//!   pod (the node container of kind on cgroup v1) is ignored. When no pod is named, the
//!   outermost container wins for the same reason: it is the one the host runtime knows.
//! * A bare 64-hex segment (the cgroupfs driver) does not say which runtime made it; it is
//!   [`Runtime::Docker`] under `/docker`, [`Runtime::Containerd`] under containerd's
//!   `default` or `k8s.io` namespace, and [`Runtime::Unknown`] otherwise (under a pod both
//!   containerd and Docker name it so), in which case callers compare only the id.
//!
//! Parsing never panics, does not allocate until it builds the answer, and is linear in the
//! length of the text.

/// Which runtime named the cgroup.
///
/// Kubelet prefixes container ids with the runtime (`containerd://<id>`), so the resolver
/// needs the runtime to rebuild that string, or at least to know when it cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// containerd, through its CRI plugin (`cri-containerd-…`), nerdctl or its own namespaces.
    Containerd,
    /// CRI-O (`crio-…`).
    CriO,
    /// Docker, directly or as kubelet's runtime through dockershim or cri-dockerd.
    Docker,
    /// Podman (`libpod-…`).
    Podman,
    /// A bare id whose parent does not say which runtime made it (cgroupfs driver in a pod).
    Unknown,
}

impl Runtime {
    /// The prefix of a kubelet `containerID` before `://` for this runtime, so the caller can
    /// compare against `status.containerStatuses[].containerID` directly.
    ///
    /// [`Runtime::Unknown`] gives `""`: compare only the part after `://` then.
    #[must_use]
    pub fn scheme(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "",
        }
    }
}

/// A container as its cgroup names it: enough to find it in a pod's status, or to label it
/// when there is no pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// The runtime that named the cgroup, for the `containerID` scheme.
    pub runtime: Runtime,
    /// The full container id: 64 lowercase hex characters, as kubelet and `docker inspect`
    /// report it.
    pub id: String,
    /// The pod's `metadata.uid` in dashed form, or `None` when the container belongs to no
    /// pod (plain Docker, podman, nerdctl) or to a static pod (see the module docs).
    pub pod_uid: Option<String>,
}

impl ContainerRef {
    /// The first 12 characters of the id, as `docker ps` and `crictl ps` show it, for logs and
    /// labels that people read.
    #[must_use]
    pub fn short_id(&self) -> &str {
        // `get` instead of indexing: the fields are public, so the id may be anything.
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// Parses one cgroup path (the part of a `/proc/<pid>/cgroup` line after the second `:`).
///
/// Returns the container the path names, with its pod when the path is under a kubelet pod
/// cgroup, or `None` for host processes, conmon, pod cgroups without a container, and
/// anything unrecognised.
#[must_use]
pub fn from_path(path: &str) -> Option<ContainerRef> {
    parse_path(path).map(Found::into_container_ref)
}

/// Parses the whole text of `/proc/<pid>/cgroup`, v1, v2 or hybrid.
///
/// On v1 every hierarchy has its own line and they need not agree (a process can sit in a
/// container's `memory` cgroup but at `/` in `net_cls`), so the `memory`, `pids` and
/// `name=systemd` lines are trusted first, then the v2 line, then any other line that names
/// a container. Lines that are not `id:controllers:path` are skipped.
#[must_use]
pub fn from_proc_cgroup(text: &str) -> Option<ContainerRef> {
    let mut best: Option<(u8, Found<'_>)> = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let rank = line_rank(controllers);
        if best
            .as_ref()
            .is_some_and(|(best_rank, _)| *best_rank <= rank)
        {
            continue;
        }
        if let Some(found) = parse_path(path) {
            if rank == 0 {
                return Some(found.into_container_ref());
            }
            best = Some((rank, found));
        }
    }
    best.map(|(_, found)| found.into_container_ref())
}

/// How much a line's hierarchy is trusted: 0 for the hierarchies every container runtime
/// places a process in, 1 for the v2 line, 2 for the rest.
fn line_rank(controllers: &str) -> u8 {
    if controllers.is_empty() {
        1
    } else if controllers
        .split(',')
        .any(|c| matches!(c, "memory" | "pids" | "name=systemd"))
    {
        0
    } else {
        2
    }
}

/// A pod UID as it appears in the path, borrowed until the answer is built.
#[derive(Clone, Copy, Debug)]
enum PodUid<'a> {
    /// `8-4-4-4-12`, the cgroupfs driver.
    Dashed(&'a str),
    /// `8_4_4_4_12`, the systemd driver.
    Underscored(&'a str),
    /// A static pod's 32-hex config hash: a pod, but not a UID the API server knows.
    Static,
}

/// The answer before it is copied out of the input.
#[derive(Clone, Copy, Debug)]
struct Found<'a> {
    runtime: Runtime,
    id: &'a str,
    pod: Option<PodUid<'a>>,
}

impl Found<'_> {
    fn into_container_ref(self) -> ContainerRef {
        let pod_uid = match self.pod {
            Some(PodUid::Dashed(uid)) => Some(uid.to_owned()),
            Some(PodUid::Underscored(uid)) => Some(uid.replace('_', "-")),
            Some(PodUid::Static) | None => None,
        };
        ContainerRef {
            runtime: self.runtime,
            id: self.id.to_owned(),
            pod_uid,
        }
    }
}

/// What sits below the outermost pod, once something does.
#[derive(Clone, Copy, Debug)]
enum BelowPod<'a> {
    Nothing,
    Container(Runtime, &'a str),
    Conmon,
}

/// The walk over a path's segments, outermost first.
#[derive(Debug)]
struct Scan<'a> {
    pod: Option<PodUid<'a>>,
    below_pod: BelowPod<'a>,
    /// The outermost container, the answer when no pod is named.
    outermost: Option<(Runtime, &'a str)>,
}

impl<'a> Scan<'a> {
    fn pod(&mut self, uid: PodUid<'a>) {
        if self.pod.is_none() {
            self.pod = Some(uid);
        }
    }

    fn container(&mut self, runtime: Runtime, id: &'a str) {
        if self.pod.is_some() {
            if matches!(self.below_pod, BelowPod::Nothing) {
                self.below_pod = BelowPod::Container(runtime, id);
            }
        } else if self.outermost.is_none() {
            self.outermost = Some((runtime, id));
        }
    }

    fn conmon(&mut self) {
        if self.pod.is_some() && matches!(self.below_pod, BelowPod::Nothing) {
            self.below_pod = BelowPod::Conmon;
        }
    }

    fn finish(self) -> Option<Found<'a>> {
        match (self.pod, self.below_pod, self.outermost) {
            (Some(pod), BelowPod::Container(runtime, id), _) => Some(Found {
                runtime,
                id,
                pod: Some(pod),
            }),
            (None, _, Some((runtime, id))) => Some(Found {
                runtime,
                id,
                pod: None,
            }),
            // A pod with conmon or nothing below it, or no container at all.
            _ => None,
        }
    }
}

fn parse_path(path: &str) -> Option<Found<'_>> {
    let mut scan = Scan {
        pod: None,
        below_pod: BelowPod::Nothing,
        outermost: None,
    };
    let mut parent = "";
    for segment in path.split('/') {
        if let Some(uid) = pod_segment(segment) {
            scan.pod(uid);
        } else if is_container_id(segment) {
            scan.container(bare_runtime(parent), segment);
        } else if let Some((slice, prefix, id)) = colon_form(segment) {
            // `<slice>:<prefix>:<id>`: the pod (if the slice is one) and its container at once.
            if let Some(uid) = pod_segment(slice) {
                scan.pod(uid);
            }
            match prefix_kind(prefix) {
                Some(Prefixed::Container(runtime)) => scan.container(runtime, id),
                Some(Prefixed::Conmon) => scan.conmon(),
                None => {}
            }
        } else if let Some((prefix, id)) = prefixed_id(segment) {
            match prefix_kind(prefix) {
                Some(Prefixed::Container(runtime)) => scan.container(runtime, id),
                Some(Prefixed::Conmon) => scan.conmon(),
                None => {}
            }
        }
        parent = segment;
    }
    scan.finish()
}

/// The runtime of a bare id, from the cgroup it sits in.
fn bare_runtime(parent: &str) -> Runtime {
    match parent {
        "docker" => Runtime::Docker,
        // containerd's namespaces, which nerdctl and ctr use as the cgroupfs parent.
        "default" | "k8s.io" => Runtime::Containerd,
        _ => Runtime::Unknown,
    }
}

/// What the word before an id says.
enum Prefixed {
    Container(Runtime),
    Conmon,
}

fn prefix_kind(prefix: &str) -> Option<Prefixed> {
    Some(match prefix {
        "cri-containerd" | "nerdctl" => Prefixed::Container(Runtime::Containerd),
        "crio" => Prefixed::Container(Runtime::CriO),
        "docker" => Prefixed::Container(Runtime::Docker),
        "libpod" => Prefixed::Container(Runtime::Podman),
        "crio-conmon" | "libpod-conmon" => Prefixed::Conmon,
        _ => return None,
    })
}

/// `<prefix>-<id>` or `<prefix>-<id>.scope`, split; the prefix is not checked here.
fn prefixed_id(segment: &str) -> Option<(&str, &str)> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    // 64 id bytes and a dash; checking the id is ASCII first keeps both cuts on char bounds.
    let id_start = name.len().checked_sub(64)?;
    let id = name.get(id_start..)?;
    if !is_container_id(id) {
        return None;
    }
    let prefix = name.get(..id_start)?.strip_suffix('-')?;
    (!prefix.is_empty()).then_some((prefix, id))
}

/// `<slice>:<prefix>:<id>`, with an id that is one.
fn colon_form(segment: &str) -> Option<(&str, &str, &str)> {
    let mut parts = segment.splitn(3, ':');
    let (slice, prefix, id) = (parts.next()?, parts.next()?, parts.next()?);
    is_container_id(id).then_some((slice, prefix, id))
}

/// A segment that names a kubelet pod cgroup, in either driver's spelling.
fn pod_segment(segment: &str) -> Option<PodUid<'_>> {
    if let Some(name) = segment.strip_suffix(".slice") {
        // systemd: `kubepods-burstable-pod<uid>.slice`, `kubelet-kubepods-pod<uid>.slice`, …
        let (levels, last) = name.rsplit_once('-')?;
        if !levels.split('-').any(|level| level == "kubepods") {
            return None;
        }
        pod_uid(last.strip_prefix("pod")?)
    } else {
        // cgroupfs: `pod<uid>`. Not required to sit under `kubepods`: seen from another cgroup
        // namespace the path may start at `/../../burstable/`, and the UUID is specific enough.
        pod_uid(segment.strip_prefix("pod")?)
    }
}

fn pod_uid(uid: &str) -> Option<PodUid<'_>> {
    if is_uuid(uid, b'-') {
        Some(PodUid::Dashed(uid))
    } else if is_uuid(uid, b'_') {
        Some(PodUid::Underscored(uid))
    } else if uid.len() == 32 && is_lower_hex(uid) {
        Some(PodUid::Static)
    } else {
        None
    }
}

/// `8-4-4-4-12` lowercase hex with the given separator.
fn is_uuid(s: &str, separator: u8) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == separator,
            _ => is_lower_hex_byte(b),
        })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(is_lower_hex_byte)
}

fn is_lower_hex_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055";
    const C2: &str = "5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5";
    const C3: &str = "a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b";
    const C4: &str = "f4733d4ac29fe08600ca826d83fe98133c2a747bcf7a8d219a9881999ed2af47";
    const C5: &str = "15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c";
    const U1: &str = "fd6ac324-d650-4b11-9543-ea47e3879951";
    const U2: &str = "f47f5baf-ab8b-43f0-a1c2-9ee9a3d2dadd";
    const U3: &str = "6297c4c3-7f44-41e5-8bd5-311d46fc6396";
    const U4: &str = "e441a2be-370f-4df0-a1db-946e8af0be82";
    const U5: &str = "2ca4a155-3599-498d-bb9d-4446693fa3ea";

    use Runtime::{Containerd, CriO, Docker, Podman, Unknown};

    type Expected = Option<(Runtime, &'static str, Option<&'static str>)>;

    /// Whole `/proc/<pid>/cgroup` texts and what they name.
    const CASES: &[(&str, &str, Expected)] = &[
        // ---- systemd driver, cgroup v2 ----
        (
            "v2 systemd containerd burstable",
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podfd6ac324_d650_4b11_9543_ea47e3879951.slice/cri-containerd-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055.scope\n",
            Some((Containerd, C1, Some(U1))),
        ),
        (
            "v2 systemd containerd besteffort",
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podf47f5baf_ab8b_43f0_a1c2_9ee9a3d2dadd.slice/cri-containerd-5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5.scope\n",
            Some((Containerd, C2, Some(U2))),
        ),
        (
            "v2 systemd containerd guaranteed",
            "0::/kubepods.slice/kubepods-pod6297c4c3_7f44_41e5_8bd5_311d46fc6396.slice/cri-containerd-a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b.scope\n",
            Some((Containerd, C3, Some(U3))),
        ),
        (
            "v2 systemd cri-o burstable",
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pode441a2be_370f_4df0_a1db_946e8af0be82.slice/crio-f4733d4ac29fe08600ca826d83fe98133c2a747bcf7a8d219a9881999ed2af47.scope\n",
            Some((CriO, C4, Some(U4))),
        ),
        (
            "v2 systemd cri-o with crun's container sub-cgroup",
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pode441a2be_370f_4df0_a1db_946e8af0be82.slice/crio-f4733d4ac29fe08600ca826d83fe98133c2a747bcf7a8d219a9881999ed2af47.scope/container\n",
            Some((CriO, C4, Some(U4))),
        ),
        (
            "v2 systemd cri-o conmon",
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pode441a2be_370f_4df0_a1db_946e8af0be82.slice/crio-conmon-f4733d4ac29fe08600ca826d83fe98133c2a747bcf7a8d219a9881999ed2af47.scope\n",
            None,
        ),
        (
            "v2 systemd pod cgroup with no container",
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podf47f5baf_ab8b_43f0_a1c2_9ee9a3d2dadd.slice\n",
            None,
        ),
        (
            "v2 kind: kubelet.slice prefix",
            "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/cri-containerd-15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c.scope\n",
            Some((Containerd, C5, Some(U5))),
        ),
        (
            "v2 systemd.slice prefix, literal slice:prefix:id directory",
            "0::/system.slice/containerd.service/kubepods-burstable-podfd6ac324_d650_4b11_9543_ea47e3879951.slice:cri-containerd:f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055\n",
            Some((Containerd, C1, Some(U1))),
        ),
        (
            "v2 GitHub Actions runner, kind node under actions_job",
            "0::/actions_job/5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod6297c4c3_7f44_41e5_8bd5_311d46fc6396.slice/cri-containerd-a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b.scope\n",
            Some((Containerd, C3, Some(U3))),
        ),
        (
            "v2 seen from another cgroup namespace",
            "0::/../../kubepods-besteffort-podf47f5baf_ab8b_43f0_a1c2_9ee9a3d2dadd.slice/cri-containerd-5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5.scope\n",
            Some((Containerd, C2, Some(U2))),
        ),
        (
            "v2 static pod (32-hex config hash)",
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podc3fb29e54fb40a0290c90212bc9c19b2.slice/cri-containerd-f4733d4ac29fe08600ca826d83fe98133c2a747bcf7a8d219a9881999ed2af47.scope\n",
            Some((Containerd, C4, None)),
        ),
        // ---- systemd driver, cgroup v1 ----
        (
            "v1 systemd docker besteffort",
            "12:hugetlb:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/docker-15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c.scope\n\
             11:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/docker-15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c.scope\n\
             10:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/docker-15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c.scope\n\
             9:net_cls,net_prio:/\n\
             1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/docker-15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c.scope\n",
            Some((Docker, C5, Some(U5))),
        ),
        (
            "v1 hybrid: memory line wins over a stale cpuset line",
            "13:cpuset:/kubepods.slice/kubepods-pod6297c4c3_7f44_41e5_8bd5_311d46fc6396.slice/cri-containerd-5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5.scope\n\
             6:memory:/kubepods.slice/kubepods-pod6297c4c3_7f44_41e5_8bd5_311d46fc6396.slice/cri-containerd-a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b.scope\n\
             0::/kubepods.slice/kubepods-pod6297c4c3_7f44_41e5_8bd5_311d46fc6396.slice/cri-containerd-a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b.scope\n",
            Some((Containerd, C3, Some(U3))),
        ),
        (
            "v1 only a minor hierarchy names the container",
            "11:memory:/\n10:pids:/\n4:devices:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podfd6ac324_d650_4b11_9543_ea47e3879951.slice/crio-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055.scope\n1:name=systemd:/\n",
            Some((CriO, C1, Some(U1))),
        ),
        // ---- cgroupfs driver ----
        (
            "v1 cgroupfs burstable",
            "11:memory:/kubepods/burstable/podfd6ac324-d650-4b11-9543-ea47e3879951/f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055\n\
             10:pids:/kubepods/burstable/podfd6ac324-d650-4b11-9543-ea47e3879951/f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055\n\
             2:cpu,cpuacct:/kubepods/burstable/podfd6ac324-d650-4b11-9543-ea47e3879951/f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055\n",
            Some((Unknown, C1, Some(U1))),
        ),
        (
            "v2 cgroupfs besteffort",
            "0::/kubepods/besteffort/podf47f5baf-ab8b-43f0-a1c2-9ee9a3d2dadd/5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5\n",
            Some((Unknown, C2, Some(U2))),
        ),
        (
            "v2 cgroupfs guaranteed",
            "0::/kubepods/pod6297c4c3-7f44-41e5-8bd5-311d46fc6396/a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b\n",
            Some((Unknown, C3, Some(U3))),
        ),
        (
            "v1 cgroupfs cri-o",
            "7:memory:/kubepods/besteffort/pode441a2be-370f-4df0-a1db-946e8af0be82/crio-f4733d4ac29fe08600ca826d83fe98133c2a747bcf7a8d219a9881999ed2af47\n",
            Some((CriO, C4, Some(U4))),
        ),
        (
            "v1 kind node: pod below the node's docker container",
            "4:memory:/docker/15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c/kubepods/burstable/pod2ca4a155-3599-498d-bb9d-4446693fa3ea/f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055\n",
            Some((Unknown, C1, Some(U5))),
        ),
        (
            "v1 kind node: process in the pod cgroup itself is not the node",
            "4:memory:/docker/15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c/kubepods/burstable/pod2ca4a155-3599-498d-bb9d-4446693fa3ea\n",
            None,
        ),
        (
            "v1 kind node: kubelet itself, the node is a plain container",
            "4:memory:/docker/15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c/system.slice/kubelet.service\n",
            Some((Docker, C5, None)),
        ),
        // ---- no Kubernetes ----
        (
            "v2 plain docker, systemd driver",
            "0::/system.slice/docker-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055.scope\n",
            Some((Docker, C1, None)),
        ),
        (
            "v1 plain docker, cgroupfs driver",
            "12:pids:/docker/5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5\n\
             1:name=systemd:/docker/5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5\n",
            Some((Docker, C2, None)),
        ),
        (
            "v2 docker in docker keeps the outer container",
            "0::/docker/5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5/docker/a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b\n",
            Some((Docker, C2, None)),
        ),
        (
            "v2 nerdctl, cgroupfs",
            "0::/default/a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b\n",
            Some((Containerd, C3, None)),
        ),
        (
            "v2 nerdctl, systemd",
            "0::/system.slice/nerdctl-f4733d4ac29fe08600ca826d83fe98133c2a747bcf7a8d219a9881999ed2af47.scope\n",
            Some((Containerd, C4, None)),
        ),
        (
            "v2 podman, rootful",
            "0::/machine.slice/libpod-15fbe1f4c6c13e5043e1ba0fa0aa36fe1ef1034d51f2f9f9ca7d4ace0b0ce25c.scope/container\n",
            Some((Podman, C5, None)),
        ),
        (
            "v2 podman pod is not a Kubernetes pod",
            "0::/machine.slice/machine-libpod_pod_5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5.slice/libpod-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055.scope\n",
            Some((Podman, C1, None)),
        ),
        (
            "v2 podman, rootless",
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5.scope\n",
            Some((Podman, C2, None)),
        ),
        (
            "v1 podman, cgroupfs",
            "5:memory:/libpod_parent/libpod-a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b\n",
            Some((Podman, C3, None)),
        ),
        (
            "v2 podman conmon",
            "0::/machine.slice/libpod-conmon-a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b.scope\n",
            None,
        ),
        // ---- host processes ----
        ("v2 init", "0::/init.scope\n", None),
        (
            "v2 user session",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            None,
        ),
        ("v2 sshd", "0::/system.slice/sshd.service\n", None),
        (
            "v2 containerd itself",
            "0::/system.slice/containerd.service\n",
            None,
        ),
        ("v2 root", "0::/\n", None),
        (
            "v1 host",
            "12:pids:/\n11:memory:/user.slice\n1:name=systemd:/user.slice/user-0.slice/session-1.scope\n0::/user.slice/user-0.slice/session-1.scope\n",
            None,
        ),
        (
            "v1 memory under a 32-hex non-container cgroup",
            "4:memory:/process_api/71cd56422b16cba1dd351864b0eeb83a\n0::/\n",
            None,
        ),
        // ---- broken input ----
        ("empty", "", None),
        ("only newlines", "\n\n\n", None),
        ("garbage", "hello world\n:::\n::\n0:\n", None),
        (
            "truncated id (63 hex)",
            "0::/system.slice/docker-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c05.scope\n",
            None,
        ),
        (
            "truncated bare id (63 hex)",
            "0::/kubepods/besteffort/podf47f5baf-ab8b-43f0-a1c2-9ee9a3d2dadd/5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c\n",
            None,
        ),
        (
            "too long id (65 hex)",
            "0::/system.slice/docker-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c0555.scope\n",
            None,
        ),
        (
            "uppercase id is rejected",
            "0::/system.slice/docker-F51EBA5912A39EFD1973CA9AAFEEBEC725E58508074B57A332B6D5447813C055.scope\n",
            None,
        ),
        (
            "uppercase pod uid is not a pod, so its container is not named",
            "0::/kubepods/besteffort/podF47F5BAF-AB8B-43F0-A1C2-9EE9A3D2DADD/5865c5e5505df3d7676ad942a4046c5bb98d24c3ed4dc6d11202ab795f8112c5\n",
            Some((Unknown, C2, None)),
        ),
        (
            "unknown runtime prefix",
            "0::/system.slice/runc-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055.scope\n",
            None,
        ),
        (
            "malformed pod uid (dash in the wrong place)",
            "0::/kubepods/pod6297c4c37-f44-41e5-8bd5-311d46fc6396/a8cef012d30a6399edb81d65e52e9acbdcb00d15b394f25bd168e58552e5106b\n",
            Some((Unknown, C3, None)),
        ),
        (
            "CRLF line endings",
            "0::/system.slice/docker-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055.scope\r\n",
            Some((Docker, C1, None)),
        ),
        (
            "no trailing newline",
            "0::/system.slice/docker-f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055.scope",
            Some((Docker, C1, None)),
        ),
    ];

    fn expect(expected: Expected) -> Option<ContainerRef> {
        expected.map(|(runtime, id, pod_uid)| ContainerRef {
            runtime,
            id: id.to_owned(),
            pod_uid: pod_uid.map(str::to_owned),
        })
    }

    #[test]
    fn table() {
        assert!(CASES.len() >= 25);
        for (name, text, expected) in CASES {
            let got = from_proc_cgroup(text);
            assert_eq!(got, expect(*expected), "{name}: {text:?}");
            if let Some(found) = &got {
                check_invariants(found);
            }
            // A single-line text must read the same through `from_path`.
            if text.trim_end().lines().count() == 1
                && let Some((_, path)) = text.trim_end().split_once("::")
            {
                assert_eq!(from_path(path), expect(*expected), "{name}: from_path");
            }
        }
    }

    #[test]
    fn from_path_without_leading_slash_or_with_doubled_slashes() {
        let path = format!("kubepods//burstable/pod{U1}//{C1}/");
        assert_eq!(
            from_path(&path),
            Some(ContainerRef {
                runtime: Unknown,
                id: C1.to_owned(),
                pod_uid: Some(U1.to_owned()),
            })
        );
    }

    #[test]
    fn extremely_long_lines() {
        // A million bytes of segments before a real container still parse.
        let mut path = "/a".repeat(500_000);
        path.push_str("/kubepods/pod");
        path.push_str(U3);
        path.push('/');
        path.push_str(C3);
        let text = format!("0::{path}\n");
        let got = from_proc_cgroup(&text).expect("container after a long prefix");
        assert_eq!((got.id.as_str(), got.pod_uid.as_deref()), (C3, Some(U3)));

        // A million hex characters in one segment are not an id.
        let hex = "0123456789abcdef".repeat(65_536);
        assert_eq!(from_path(&format!("/docker/{hex}")), None);
        assert_eq!(
            from_path(&format!("/system.slice/docker-{hex}.scope")),
            None
        );
        // Nor a million colons, slashes or dashes.
        assert_eq!(from_proc_cgroup(&":".repeat(1 << 20)), None);
        assert_eq!(from_path(&"/".repeat(1 << 20)), None);
        assert_eq!(from_path(&"-".repeat(1 << 20)), None);
    }

    #[test]
    fn multibyte_characters_next_to_ids_do_not_panic() {
        for text in [
            format!("0::/docker-é{}.scope", &C1[1..]),
            format!("0::/docker-{}é.scope", &C1[..63]),
            format!("0::/é{C1}"),
            format!("0::/podé{}", &U1[1..]),
            format!("0::/kubepods-podé{}.slice", &U1[1..]),
            format!("0::/ééé:é:{}é", &C1[..62]),
            "0::/\u{1F980}\u{1F980}\u{1F980}.scope".to_owned(),
        ] {
            assert_eq!(from_proc_cgroup(&text), None, "{text}");
        }
    }

    #[test]
    fn short_id_and_scheme() {
        let found = from_path(&format!("/system.slice/docker-{C1}.scope")).unwrap();
        assert_eq!(found.short_id(), "f51eba5912a3");
        assert_eq!(
            format!("{}://{}", found.runtime.scheme(), found.id),
            format!("docker://{C1}")
        );
        let odd = ContainerRef {
            runtime: Unknown,
            id: "ééééééé".to_owned(), // two bytes a character: byte 12 ends the sixth
            pod_uid: None,
        };
        assert_eq!(odd.short_id(), "éééééé");
        let odd = ContainerRef {
            runtime: Unknown,
            id: "aéééééé".to_owned(), // byte 12 falls inside a character
            pod_uid: None,
        };
        assert_eq!(odd.short_id(), "aéééééé");
        let short = ContainerRef {
            runtime: Unknown,
            id: "abc".to_owned(),
            pod_uid: None,
        };
        assert_eq!(short.short_id(), "abc");
        let schemes = [Containerd, CriO, Docker, Podman, Unknown].map(Runtime::scheme);
        assert_eq!(schemes, ["containerd", "cri-o", "docker", "podman", ""]);
    }

    fn check_invariants(found: &ContainerRef) {
        assert!(is_container_id(&found.id), "bad id {:?}", found.id);
        if let Some(uid) = &found.pod_uid {
            assert!(is_uuid(uid, b'-'), "bad pod uid {uid:?}");
        }
    }

    /// xorshift64: deterministic, and enough to shuffle fragments.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            // n is small, the modulo bias does not matter here.
            (self.next() % n as u64) as usize
        }
    }

    fn hex_run(rng: &mut XorShift, len: usize, out: &mut String) {
        const LOWER: &[u8] = b"0123456789abcdef";
        const UPPER: &[u8] = b"0123456789ABCDEF";
        let digits = if rng.below(20) == 0 { UPPER } else { LOWER };
        for _ in 0..len {
            out.push(char::from(digits[rng.below(16)]));
        }
    }

    fn uuid_like(rng: &mut XorShift, separator: char, out: &mut String) {
        for (i, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
            if i > 0 {
                out.push(separator);
            }
            hex_run(rng, len, out);
        }
    }

    #[test]
    fn random_fragments_never_panic_and_answers_are_well_formed() {
        const FRAGMENTS: &[&str] = &[
            "kubepods",
            "kubepods-",
            "burstable-",
            "besteffort",
            "pod",
            "-",
            "_",
            ".slice",
            ".scope",
            "cri-containerd-",
            "crio-",
            "crio-conmon-",
            "docker",
            "docker-",
            "libpod-",
            "/",
            "/",
            "/",
            ":",
            "::",
            "0::",
            "\n",
            "memory",
            "name=systemd",
            "default",
            "..",
            "é",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut text = String::new();
        let mut named = 0;
        let mut with_pod = 0;
        for _ in 0..10_000 {
            text.clear();
            for _ in 0..1 + rng.below(24) {
                match rng.below(12) {
                    0 => {
                        let len = [8, 12, 32, 63, 64, 64, 64, 65][rng.below(8)];
                        hex_run(&mut rng, len, &mut text);
                    }
                    1 => {
                        let separator = if rng.below(2) == 0 { '-' } else { '_' };
                        uuid_like(&mut rng, separator, &mut text);
                    }
                    // Pod segments whole now and then, or a pod is almost never named.
                    2 => {
                        text.push_str("/pod");
                        uuid_like(&mut rng, '-', &mut text);
                        text.push('/');
                    }
                    3 => {
                        text.push_str("/kubepods-burstable-pod");
                        uuid_like(&mut rng, '_', &mut text);
                        text.push_str(".slice/");
                    }
                    _ => text.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]),
                }
            }
            for found in [from_path(&text), from_proc_cgroup(&text)]
                .into_iter()
                .flatten()
            {
                check_invariants(&found);
                named += 1;
                with_pod += usize::from(found.pod_uid.is_some());
            }
        }
        // The generator must reach the interesting paths, or the test proves nothing.
        assert!(named > 100, "only {named} random strings named a container");
        assert!(with_pod > 10, "only {with_pod} random strings named a pod");
    }
}
