//! The pods of this node, from a kube-rs reflector: the [`PodIndex`] of a Kubernetes node.
//!
//! One watch, field-selected on `spec.nodeName`, so the API server sends only this node's pods
//! (never the whole cluster, as swoll's original did on every node). Objects are slimmed before
//! they are stored; the watcher retries with backoff when the API server is unreachable, and
//! every failure is counted, while counting in the kernel goes on and known labels stay.
use std::{future::Future, sync::mpsc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use swoll_decode::trace::{event::Container, selector::PodQuery};

use super::{PodIndex, Workload};

/// The node's pods, as the reflector last saw them.
#[derive(Clone)]
pub struct KubePods {
    store: reflector::Store<Pod>,
}

impl std::fmt::Debug for KubePods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePods")
            .field("pods", &self.store.state().len())
            .finish()
    }
}

/// The list/watch parameters of `query`.
fn watch_config(query: &PodQuery) -> watcher::Config {
    let mut config = watcher::Config::default();
    let fields: Vec<String> = query
        .node
        .iter()
        .map(|node| format!("spec.nodeName={node}"))
        .chain(query.fields.iter().cloned())
        .collect();
    if !fields.is_empty() {
        config = config.fields(&fields.join(","));
    }
    if let Some(labels) = &query.labels {
        config = config.labels(labels);
    }
    config
}

/// Starts watching the pods `query` selects. Returns the index at once (empty until the first
/// list arrives) and the future that drives the watch; spawn it. `on_error` is called for
/// every failed request (the watch retries with backoff).
pub fn watch(
    client: Client,
    query: &PodQuery,
    on_error: impl Fn(&watcher::Error) + Send + 'static,
) -> (KubePods, impl Future<Output = ()> + Send + 'static) {
    let api: Api<Pod> = match &query.namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watch_config(query))
        .default_backoff()
        .modify(slim)
        .reflect(writer);
    let drive = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                on_error(&err);
            }
        }
    };
    (KubePods { store: reader }, drive)
}

/// How long the first map read waits for the first list of the node's pods. Namespaces read
/// before it arrives are labelled by container id alone, so each would show up as a series
/// that ends once its pod is known (after every restart of the agent): waiting a moment avoids
/// that. Bounded, so that an API server that does not answer only delays the metrics (they then
/// carry the container id until the list comes), well within the liveness probe's first 10 s.
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// No Kubernetes client configuration (KUBECONFIG or in-cluster) could be found.
#[derive(Debug, thiserror::Error)]
#[error(
    "configuring the Kubernetes client, which --node-name, --auth and pod selectors need (set KUBECONFIG or run in a pod)"
)]
pub struct KubeConfigError(#[source] kube::Error);

/// A client from KUBECONFIG or the in-cluster config, without the client's own retries of
/// 429/503/504 (up to minutes per request): the watcher's backoff retries instead, so every
/// failure surfaces and is counted.
pub async fn kube_client() -> Result<kube::Client, KubeConfigError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| KubeConfigError(kube::Error::InferConfig(e)))?;
    config.default_retry = false;
    kube::Client::try_from(config).map_err(KubeConfigError)
}

/// Why the pod watch of a local tool (`swoll top`, `swoll trace`) could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchThreadError {
    /// The watch's thread or its runtime could not be started.
    #[error("starting the pod watch")]
    Start(#[source] std::io::Error),
    /// No Kubernetes client configuration (KUBECONFIG or in-cluster).
    #[error(transparent)]
    Client(#[from] KubeConfigError),
}

/// [`watch`], from a thread of its own with its own runtime: for the local tools (`swoll top`,
/// `swoll trace`), which run no async runtime, so that they label and select pods with the same
/// watch and cache as `swoll serve`. Returns once the first list has arrived, or after `wait`
/// (the cache then fills when it comes, while the watch retries with backoff). The thread logs
/// to the caller's subscriber: `swoll top`'s UI keeps warnings off the screen that way.
pub fn watch_from_thread(query: &PodQuery, wait: Duration) -> Result<KubePods, WatchThreadError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WatchThreadError::Start)?;
    let client = runtime.block_on(kube_client())?;
    let (pods, drive) = watch(client, query, |err| {
        tracing::warn!(error = %err, "watching pods failed; retrying with backoff");
    });
    let listed = pods.clone();
    let (first_list, first_listed) = mpsc::channel::<()>();
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    std::thread::Builder::new()
        .name("swoll-pods".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                runtime.block_on(async move {
                    let first = async move {
                        if listed.listed().await {
                            let _ = first_list.send(());
                        }
                    };
                    futures::join!(drive, first);
                });
            });
        })
        .map_err(WatchThreadError::Start)?;
    if let Err(mpsc::RecvTimeoutError::Timeout) = first_listed.recv_timeout(wait) {
        tracing::warn!(
            ?wait,
            "no list of pods yet: containers are labelled by id until it comes"
        );
    }
    Ok(pods)
}

/// Drops what neither the resolver nor trace selectors read (labels and the spec's scalar
/// fields stay, for label and field selectors), to keep the cache small on busy nodes.
fn slim(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.annotations_mut().clear();
    if let Some(spec) = &mut pod.spec {
        spec.containers.clear();
        spec.init_containers = None;
        spec.ephemeral_containers = None;
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
        spec.topology_spread_constraints = None;
    }
}

impl KubePods {
    /// Resolves once the watch has delivered its first complete list (false if the watch ended
    /// before that).
    pub async fn listed(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }

    /// The pod that runs container `id`, if the cache has it.
    pub fn pod_of_container(&self, id: &str) -> Option<std::sync::Arc<Pod>> {
        self.store
            .state()
            .into_iter()
            .find(|pod| container_status(pod, id).is_some())
    }

    /// Every pod in the cache.
    pub fn pods(&self) -> Vec<std::sync::Arc<Pod>> {
        self.store.state()
    }
}

impl PodIndex for KubePods {
    fn container(&self, id: &str) -> Option<Workload> {
        self.store.state().iter().find_map(|pod| {
            let found = container_status(pod, id)?;
            Some(Workload {
                namespace: pod.namespace().unwrap_or_default(),
                pod: pod.name_any(),
                container: found.name.clone(),
            })
        })
    }

    fn pod(&self, uid: &str) -> Option<Workload> {
        self.pod_with_uid(uid).map(|pod| pod_workload(&pod))
    }

    fn shared_pid_namespace(&self, uid: &str) -> Option<Workload> {
        self.pod_with_uid(uid)
            .filter(|pod| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.share_process_namespace)
                    .unwrap_or(false)
            })
            .map(|pod| pod_workload(&pod))
    }
}

impl KubePods {
    fn pod_with_uid(&self, uid: &str) -> Option<std::sync::Arc<Pod>> {
        self.store
            .state()
            .into_iter()
            .find(|pod| pod.metadata.uid.as_deref() == Some(uid))
    }
}

/// A pod's namespace and name, container left empty.
fn pod_workload(pod: &Pod) -> Workload {
    Workload {
        namespace: pod.namespace().unwrap_or_default(),
        pod: pod.name_any(),
        container: String::new(),
    }
}

/// Every container status of `pod`: app, init and ephemeral containers.
fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status.iter().flat_map(|status| {
        [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
    })
}

/// The status of container `id` (without the runtime prefix) in `pod`, if it runs there.
pub fn container_status<'a>(pod: &'a Pod, id: &str) -> Option<&'a ContainerStatus> {
    statuses(pod).find(|c| same_container(c, id))
}

/// Container `id` of `pod`, as trace events name it: its name and image from the pod's
/// status, the pod's namespace, name and labels.
pub fn container(pod: &Pod, id: &str) -> Container {
    let status = container_status(pod, id);
    Container {
        id: id.to_owned(),
        namespace: pod.namespace().unwrap_or_default(),
        pod: pod.name_any(),
        name: status.map(|s| s.name.clone()).unwrap_or_default(),
        image: status.map(|s| s.image.clone()).unwrap_or_default(),
        labels: pod.labels().clone(),
    }
}

/// `(id, name)` of `pod`'s containers that have an id, the id without the runtime prefix
/// (`containerd://`): what their cgroups name them. The name is for a trace's `hostSelector`.
pub fn containers(pod: &Pod) -> impl Iterator<Item = (&str, &str)> {
    statuses(pod).filter_map(|c| {
        let cid = c.container_id.as_deref()?;
        let id = cid.split_once("://").map_or(cid, |(_, rest)| rest);
        Some((id, c.name.as_str()))
    })
}

/// True if kubelet's `containerID` (`<runtime>://<id>`) names container `id`.
fn same_container(status: &ContainerStatus, id: &str) -> bool {
    status
        .container_id
        .as_deref()
        .map(|cid| cid.split_once("://").map_or(cid, |(_, rest)| rest))
        == Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_match_without_the_runtime_prefix() {
        let status = |cid: &str| ContainerStatus {
            container_id: Some(cid.to_owned()),
            ..ContainerStatus::default()
        };
        let id = "a".repeat(64);
        assert!(same_container(&status(&format!("containerd://{id}")), &id));
        assert!(same_container(&status(&format!("cri-o://{id}")), &id));
        assert!(same_container(&status(&id), &id));
        assert!(!same_container(
            &status(&format!("containerd://{}", "b".repeat(64))),
            &id
        ));
        assert!(!same_container(&ContainerStatus::default(), &id));
    }
}
