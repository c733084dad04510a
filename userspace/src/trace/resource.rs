//! swoll's `Trace` custom resource (`tools.swoll.criticalstack.com/v1alpha1`, namespaced): a
//! team traces the pods of its own namespace with what namespace edit rights give, and reads
//! how its trace goes in the Trace's `status`.
//!
//! Traces are watched as [`DynamicObject`]s, not a typed resource: a Trace whose spec does not
//! parse must not fail the whole watch (serde would reject the list), but become an error of
//! that Trace alone, in its status and the agent's log ([`super::spec::parse_resource`]).
//!
//! # Status, written by every node's agent
//!
//! Each agent writes the status of the Traces it sees with JSON merge patches of the `status`
//! subresource (`Api::patch_status`), so that agents never clobber each other:
//!
//! - `status.nodes.<node>` (a map keyed by node name, so that a merge patch of one key leaves
//!   the others alone) holds what this node traces: its pods, its containers (`pod/container`)
//!   and the events it delivered and lost. Only the agent of that node writes it.
//! - `startTime` is recorded once, by the first agent to start the trace: its patch carries
//!   the `metadata.resourceVersion` it saw without one, so the API server refuses it (409) if
//!   another agent got there first; the loser takes the winner's time from its watch.
//! - `phase`, `reason`, `message` and `endTime` follow from the spec and `startTime` alone
//!   (`Running` until `startTime + duration`, then `Ended` with reason `DurationPassed`;
//!   `Failed` with reason `InvalidSpec` if the spec does not validate), so every agent writes
//!   the same values and the order of their patches does not matter. They are written only
//!   when they differ from what the agent last saw.
//!
//! An agent that starts reads `startTime` back: a trace whose end has passed is not started
//! again, on any node, however often agents restart.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The API group of swoll's resources.
pub const GROUP: &str = "tools.swoll.criticalstack.com";
/// The version of the `Trace` resource.
pub const VERSION: &str = "v1alpha1";
/// The least time between two status patches of one Trace by one agent that only change its
/// event counts: with one agent per node, counts written every second would cost the API server
/// a write per node per second per trace.
const COUNTS_EVERY: Duration = Duration::from_secs(5);

/// The `Trace` resource, for `Api`s of [`DynamicObject`]s.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "Trace".to_owned(),
        plural: "traces".to_owned(),
    }
}

/// Where a Trace stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Its pods are traced.
    Running,
    /// Its duration passed (`reason: DurationPassed`): it does not start again.
    Ended,
    /// Its spec does not validate (`reason: InvalidSpec`, the error in `message`).
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "Running",
            Phase::Ended => "Ended",
            Phase::Failed => "Failed",
        }
    }

    fn reason(self) -> Option<&'static str> {
        match self {
            Phase::Running => None,
            Phase::Ended => Some("DurationPassed"),
            Phase::Failed => Some("InvalidSpec"),
        }
    }
}

/// What this node's agent has to say about one Trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub phase: Phase,
    /// Why it failed (the spec error), for [`Phase::Failed`].
    pub message: Option<String>,
    /// `startTime` to record (with the `resourceVersion` seen without one), if none is.
    pub record_start: Option<(Timestamp, String)>,
    /// `endTime`: `startTime + duration`, once known.
    pub end_time: Option<Timestamp>,
    /// Whether the phase, reason, message or endTime differ from the Trace's status.
    pub shared_stale: bool,
    /// This node's entry: `None` if this agent never ran the trace (its entry, if any, is a
    /// previous agent's and stays).
    pub node: Option<NodeStatus>,
}

/// `status.nodes.<node>`: what one node traces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// `name` of each traced pod (of the Trace's namespace) on the node.
    pub pods: Vec<String>,
    /// `pod/container` of each traced container.
    pub containers: Vec<String>,
    /// Events handed on (to the streams, and stdout with `--trace-stdout`) by this agent.
    pub events_delivered: u64,
    /// Events the kernel could not hand over to this agent (ring buffer full).
    pub events_lost: u64,
}

/// Every Trace's [`Report`], by `(namespace, name)`: what the trace thread publishes after each
/// reconcile and [`write_status`] writes.
pub type Reports = BTreeMap<(String, String), Report>;

/// What the trace thread reads of one Trace object.
#[derive(Debug)]
pub struct Observed {
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub spec: Value,
    /// `status.startTime`, if recorded (and readable).
    pub start_time: Option<Timestamp>,
    pub phase: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub end_time: Option<String>,
}

impl Observed {
    /// The parts of `obj` the trace thread needs; `None` for an object without a namespace
    /// or name (which the API server never sends).
    pub fn of(obj: &DynamicObject) -> Option<Observed> {
        let status = obj.data.get("status");
        let text = |field: &str| {
            status
                .and_then(|s| s.get(field))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(Observed {
            namespace: obj.metadata.namespace.clone()?,
            name: obj.metadata.name.clone()?,
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            spec: obj.data.get("spec").cloned().unwrap_or(Value::Null),
            start_time: text("startTime").and_then(|t| t.parse().ok()),
            phase: text("phase"),
            reason: text("reason"),
            message: text("message"),
            end_time: text("endTime"),
        })
    }

    /// Whether `phase`, `message` and `end_time` differ from this status.
    pub fn differs(
        &self,
        phase: Phase,
        message: Option<&str>,
        end_time: Option<Timestamp>,
    ) -> bool {
        self.phase.as_deref() != Some(phase.as_str())
            || self.reason.as_deref() != phase.reason()
            || self.message.as_deref() != message
            || self.end_time != end_time.map(|t| t.to_string())
    }
}

/// `start + duration`, or `None` if it does not fit a timestamp.
pub fn end_of(start: Timestamp, duration: Duration) -> Option<Timestamp> {
    let duration = SignedDuration::try_from(duration).ok()?;
    start.checked_add(duration).ok()
}

/// Writes this node's [`Reports`] into the Traces' status as they change (see the module's
/// doc for how agents share it). Failures go to `on_error` and are retried with the next
/// report; a Trace deleted meanwhile (404) or a `startTime` another agent recorded first (409)
/// are not failures.
pub async fn write_status(
    client: Client,
    node: String,
    mut reports: watch::Receiver<Reports>,
    on_error: impl Fn(&kube::Error) + Send + 'static,
) {
    let resource = api_resource();
    let mut written: BTreeMap<(String, String), (Report, Instant)> = BTreeMap::new();
    while reports.changed().await.is_ok() {
        let now: Reports = reports.borrow_and_update().clone();
        written.retain(|key, _| now.contains_key(key));
        for (key, report) in now {
            let due = match written.get(&key) {
                None => true,
                Some((last, at)) => {
                    let traced = |r: &Report| {
                        r.node
                            .as_ref()
                            .map(|n| (n.pods.clone(), n.containers.clone()))
                    };
                    report.shared_stale
                        || report.record_start.is_some()
                        || last.phase != report.phase
                        || traced(last) != traced(&report)
                        || (last.node != report.node && at.elapsed() >= COUNTS_EVERY)
                }
            };
            if !due {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.0, &resource);
            let patch = status_patch(&node, &report);
            match api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    written.insert(key, (report, Instant::now()));
                }
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(err) => on_error(&err),
            }
        }
    }
}

/// The merge patch of `report` by the agent of `node`.
fn status_patch(node: &str, report: &Report) -> Value {
    let mut status = json!({});
    if let Some(entry) = &report.node {
        status["nodes"] = json!({
            node: {
                "pods": entry.pods,
                "containers": entry.containers,
                "eventsDelivered": entry.events_delivered,
                "eventsLost": entry.events_lost,
            }
        });
    }
    let mut patch = json!({});
    if report.shared_stale || report.record_start.is_some() {
        status["phase"] = json!(report.phase.as_str());
        status["reason"] = json!(report.phase.reason());
        status["message"] = json!(report.message);
        status["endTime"] = json!(report.end_time.map(|t| t.to_string()));
    }
    if let Some((start, resource_version)) = &report.record_start {
        status["startTime"] = json!(start.to_string());
        patch["metadata"] = json!({"resourceVersion": resource_version});
    }
    patch["status"] = status;
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(phase: Phase) -> Report {
        Report {
            phase,
            message: None,
            record_start: None,
            end_time: None,
            shared_stale: false,
            node: Some(NodeStatus {
                pods: vec!["web-0".into()],
                containers: vec!["web-0/app".into()],
                events_delivered: 7,
                events_lost: 1,
            }),
        }
    }

    #[test]
    fn a_node_patches_its_own_entry_only() {
        let patch = status_patch("node-a", &report(Phase::Running));
        assert_eq!(
            patch,
            json!({"status": {"nodes": {"node-a": {
                "pods": ["web-0"], "containers": ["web-0/app"],
                "eventsDelivered": 7, "eventsLost": 1,
            }}}})
        );
    }

    #[test]
    fn the_start_is_recorded_once_with_a_precondition() {
        let start: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let mut ended = report(Phase::Running);
        ended.record_start = Some((start, "42".into()));
        ended.end_time = end_of(start, Duration::from_secs(90));
        let patch = status_patch("node-a", &ended);
        assert_eq!(patch["metadata"], json!({"resourceVersion": "42"}));
        assert_eq!(patch["status"]["startTime"], "2026-01-02T03:04:05Z");
        assert_eq!(patch["status"]["endTime"], "2026-01-02T03:05:35Z");
        assert_eq!(patch["status"]["phase"], "Running");
        assert_eq!(patch["status"]["reason"], Value::Null);
    }
}
