//! When each of the ConfigMap's traces started, recorded where every agent (one per node) sees
//! it, so that a trace whose duration passed does not start again when an agent restarts.
//!
//! The record is one annotation on the traces ConfigMap itself, [`ANNOTATION`]: a JSON object
//! `{"<data key>": {"startTime": "<RFC 3339>", "spec": "<hash of the key's YAML>"}}`. A
//! `Trace` resource keeps its start in its own status ([`super::resource`]); a ConfigMap has
//! no status, and the annotation travels with the specs, in the same watch event, so an agent
//! never sees specs without the starts recorded for them.
//!
//! - Only traces with a `duration` are recorded: one without never ends, so its start does not
//!   matter.
//! - The first agent to start a trace records it: its merge patch carries the
//!   `metadata.resourceVersion` it saw, so of several agents the first wins and the others get
//!   409; their watch then brings the winner's record, which they use. The annotation is one
//!   string, so a patch replaces it whole: that is why the precondition matters, an agent
//!   writes the whole record over the version it read.
//! - A recorded start whose `spec` hash is not that of the key's YAML now (the key was edited,
//!   or removed and added again) is ignored and replaced: an edited spec starts afresh.
//!   Entries of keys that are gone are dropped by the next write.
//! - An agent that starts computes `startTime + duration`: if it passed, the trace does not run
//!   (the log says it ended).

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{api::core::v1::ConfigMap, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The annotation of the traces ConfigMap that holds its traces' starts.
pub const ANNOTATION: &str = "tools.swoll.criticalstack.com/started";
/// How long a failed write waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One key's recorded start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// When the trace started, RFC 3339.
    pub start_time: String,
    /// [`spec_hash`] of the key's YAML when it started.
    pub spec: String,
}

impl Started {
    /// The start, if this entry was recorded for `yaml` (and its time reads).
    pub fn of(&self, yaml: &str) -> Option<Timestamp> {
        (self.spec == spec_hash(yaml))
            .then(|| self.start_time.parse().ok())
            .flatten()
    }
}

/// What the trace thread wants recorded: the whole annotation, over the ConfigMap's
/// `resourceVersion` it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub resource_version: String,
    pub started: BTreeMap<String, Started>,
}

/// A hash of a key's YAML (64-bit FNV-1a, hex): only tells an edited spec from the one that
/// started, so it needs to be stable across agents and versions, not secure.
pub fn spec_hash(yaml: &str) -> String {
    let hash = yaml.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The starts recorded in `annotations`. An annotation that does not read is treated as none
/// (the next write replaces it): every trace then starts as if for the first time.
pub fn recorded(annotations: Option<&BTreeMap<String, String>>) -> BTreeMap<String, Started> {
    annotations
        .and_then(|a| a.get(ANNOTATION))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// The merge patch that writes `record`.
fn patch(record: &Record) -> Result<Value, serde_json::Error> {
    Ok(json!({"metadata": {
        "resourceVersion": record.resource_version,
        "annotations": {ANNOTATION: serde_json::to_string(&record.started)?},
    }}))
}

/// Writes what the trace thread wants recorded on ConfigMap `namespace/name` as it changes.
/// A 409 (another agent wrote first) or 404 (the ConfigMap went) is not a failure: the watch
/// brings the new state and the trace thread decides again. Other failures go to `on_error`
/// and are retried after [`RETRY_AFTER`] with the latest wish; the traces run meanwhile.
pub async fn write(
    client: Client,
    namespace: String,
    name: String,
    mut wanted: watch::Receiver<Option<Record>>,
    on_error: impl Fn(&kube::Error) + Send + 'static,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    while wanted.changed().await.is_ok() {
        loop {
            let Some(record) = wanted.borrow_and_update().clone() else {
                break;
            };
            let result = match patch(&record) {
                Ok(body) => {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                        .await
                }
                Err(err) => Err(kube::Error::SerdeError(err)),
            };
            match result {
                Ok(_) => break,
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => break,
                Err(err) => on_error(&err),
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_annotation_written_over_the_version_read() {
        let started = Started {
            start_time: "2026-01-02T03:04:05Z".into(),
            spec: spec_hash("syscalls: [read]\nduration: 3s\n"),
        };
        let record = Record {
            resource_version: "42".into(),
            started: BTreeMap::from([("a.yaml".to_owned(), started.clone())]),
        };
        let body = patch(&record).unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        let text = body["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .unwrap();
        let annotations = BTreeMap::from([(ANNOTATION.to_owned(), text.to_owned())]);
        assert_eq!(recorded(Some(&annotations)), record.started);
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap(),
            json!({"a.yaml": {"startTime": "2026-01-02T03:04:05Z", "spec": started.spec}})
        );
    }

    #[test]
    fn an_edited_spec_does_not_match_its_old_start() {
        let started = Started {
            start_time: "2026-01-02T03:04:05Z".into(),
            spec: spec_hash("syscalls: [read]\nduration: 3s\n"),
        };
        assert_eq!(
            started.of("syscalls: [read]\nduration: 3s\n"),
            Some("2026-01-02T03:04:05Z".parse().unwrap())
        );
        assert_eq!(started.of("syscalls: [read]\nduration: 4s\n"), None);
        assert_eq!(spec_hash(""), "cbf29ce484222325");
    }

    #[test]
    fn an_unreadable_annotation_records_nothing() {
        let annotations = BTreeMap::from([(ANNOTATION.to_owned(), "{not json".to_owned())]);
        assert!(recorded(Some(&annotations)).is_empty());
        assert!(recorded(None).is_empty());
    }
}
