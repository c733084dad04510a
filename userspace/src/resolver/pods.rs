//! The pods of this node, from a kube-rs reflector: the [`PodIndex`] of a Kubernetes node.
//!
//! One watch, field-selected on `spec.nodeName`, so the API server sends only this node's pods
//! (never the whole cluster, as swoll's original did on every node). Objects are slimmed before
//! they are stored; the watcher retries with backoff when the API server is unreachable, and
//! every failure is counted, while counting in the kernel goes on and known labels stay.
use std::future::Future;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{WatchStreamExt as _, reflector, watcher},
};

use super::PodIndex;
use crate::metrics::Workload;

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

/// Starts watching the pods of `node` (every node's with `None`, for `swoll trace` off a
/// node). Returns the index at once (empty until the first list arrives) and the future that
/// drives the watch; spawn it. `on_error` is called for every failed request (the watch
/// retries with backoff).
pub fn watch(
    client: Client,
    node: Option<&str>,
    on_error: impl Fn(&watcher::Error) + Send + 'static,
) -> (KubePods, impl Future<Output = ()> + Send + 'static) {
    let api: Api<Pod> = Api::all(client);
    let (reader, writer) = reflector::store();
    let config = match node {
        Some(node) => watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        None => watcher::Config::default(),
    };
    let stream = watcher(api, config)
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
            .find(|pod| statuses(pod).any(|c| same_container(c, id)))
    }

    /// Every pod in the cache.
    pub fn pods(&self) -> Vec<std::sync::Arc<Pod>> {
        self.store.state()
    }
}

impl PodIndex for KubePods {
    fn container(&self, id: &str) -> Option<Workload> {
        self.store.state().iter().find_map(|pod| {
            let found = statuses(pod).find(|c| same_container(c, id))?;
            Some(Workload {
                namespace: pod.namespace().unwrap_or_default(),
                pod: pod.name_any(),
                container: found.name.clone(),
            })
        })
    }

    fn pod(&self, uid: &str) -> Option<Workload> {
        self.store
            .state()
            .iter()
            .find(|pod| pod.metadata.uid.as_deref() == Some(uid))
            .map(|pod| Workload {
                namespace: pod.namespace().unwrap_or_default(),
                pod: pod.name_any(),
                container: String::new(),
            })
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

/// The ids of `pod`'s containers, without the runtime prefix (`containerd://`): what their
/// cgroups name them.
pub fn container_ids(pod: &Pod) -> impl Iterator<Item = &str> {
    statuses(pod)
        .filter_map(|c| c.container_id.as_deref())
        .map(|cid| cid.split_once("://").map_or(cid, |(_, rest)| rest))
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
