//! Which pods a trace follows: a namespace, a label selector and a field selector, matched the
//! way the Kubernetes API server matches them, so a spec selects here exactly the pods that
//! `kubectl get pods -n NS -l LABELS --field-selector FIELDS` lists.
//!
//! The selector is built from a validated spec ([`super::spec`]) and evaluated against the pods
//! in the agent's cache, so a trace picks up pods created after it started.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;

/// Which pods a watch asks the API server for. The server filters, so only those cross the
/// network and sit in the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodQuery {
    /// Only this node's pods (`spec.nodeName`); every node's with `None`.
    pub node: Option<String>,
    /// Only pods of this Kubernetes namespace.
    pub namespace: Option<String>,
    /// A label selector in the API's syntax (`app=web,tier in (a,b)`).
    pub labels: Option<String>,
    /// Field selector terms in the API's syntax (`status.phase=Running`), besides the node's.
    pub fields: Option<String>,
}

impl PodQuery {
    /// The pods of `node`: what `swoll serve` watches.
    pub fn node(node: &str) -> PodQuery {
        PodQuery {
            node: Some(node.to_owned()),
            ..PodQuery::default()
        }
    }
}

/// The pods a trace follows. Every part must match; an empty selector matches every pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
    /// Names of the containers followed in those pods (`hostSelector`); empty: all.
    containers: BTreeSet<String>,
}

impl Selector {
    /// A selector from a spec's already validated parts.
    pub(super) fn new(
        namespace: Option<String>,
        labels: Vec<LabelRequirement>,
        fields: Vec<FieldRequirement>,
    ) -> Self {
        Self {
            namespace,
            labels,
            fields,
            containers: BTreeSet::new(),
        }
    }

    /// Follows only the containers named `containers` of the selected pods (all if empty).
    pub(super) fn with_containers(mut self, containers: BTreeSet<String>) -> Self {
        self.containers = containers;
        self
    }

    /// Whether the trace follows a selected pod's container named `name`. The API server cannot
    /// select by container, so this is the agent's alone.
    pub fn follows_container(&self, name: &str) -> bool {
        self.containers.is_empty() || self.containers.contains(name)
    }

    /// The pods of `node` (every node's with `None`) this selects, as the API server's list
    /// and watch parameters: the server then sends only those. [`Selector::matches`] still
    /// decides, so a cache of more pods (the agent's, of its whole node) selects the same.
    pub fn query(&self, node: Option<&str>) -> PodQuery {
        let labels: Vec<String> = self.labels.iter().map(LabelRequirement::to_query).collect();
        let fields: Vec<String> = self.fields.iter().map(FieldRequirement::to_query).collect();
        PodQuery {
            node: node.map(str::to_owned),
            namespace: self.namespace.clone(),
            labels: (!labels.is_empty()).then(|| labels.join(",")),
            fields: (!fields.is_empty()).then(|| fields.join(",")),
        }
    }

    /// Whether the trace follows `pod`: in the namespace (if one is set), matching every label
    /// requirement and every field requirement.
    pub fn matches(&self, pod: &Pod) -> bool {
        if let Some(namespace) = &self.namespace
            && pod.metadata.namespace.as_deref() != Some(namespace.as_str())
        {
            return false;
        }
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        self.labels.iter().all(|req| req.matches(labels))
            && self.fields.iter().all(|req| req.matches(pod))
    }
}

/// How a label requirement compares a pod's label with its values (Kubernetes'
/// `LabelSelectorOperator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LabelOperator {
    /// The label is present and its value is one of the values.
    In,
    /// The label is absent, or its value is none of the values.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One requirement on a pod's labels: a `matchLabels` entry (`In` with one value) or a
/// `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LabelRequirement {
    pub(super) key: String,
    pub(super) operator: LabelOperator,
    /// Empty for `Exists` and `DoesNotExist`, non-empty for `In` and `NotIn`.
    pub(super) values: BTreeSet<String>,
}

impl LabelRequirement {
    /// The requirement in the API's label selector syntax: `k=v`, `k in (a,b)`,
    /// `k notin (a,b)`, `k`, `!k`.
    fn to_query(&self) -> String {
        let values = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            LabelOperator::In if self.values.len() == 1 => format!("{}={}", self.key, values()),
            LabelOperator::In => format!("{} in ({})", self.key, values()),
            LabelOperator::NotIn => format!("{} notin ({})", self.key, values()),
            LabelOperator::Exists => self.key.clone(),
            LabelOperator::DoesNotExist => format!("!{}", self.key),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::In => value.is_some_and(|v| self.values.contains(v)),
            LabelOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// A pod field a field selector can name: the ones the API server supports for pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PodField {
    Name,
    Namespace,
    NodeName,
    RestartPolicy,
    SchedulerName,
    ServiceAccountName,
    HostNetwork,
    Phase,
    PodIp,
    NominatedNodeName,
}

impl PodField {
    /// Every supported field with its field-selector key, for parsing and for error messages.
    pub(super) const ALL: [(&'static str, PodField); 10] = [
        ("metadata.name", PodField::Name),
        ("metadata.namespace", PodField::Namespace),
        ("spec.nodeName", PodField::NodeName),
        ("spec.restartPolicy", PodField::RestartPolicy),
        ("spec.schedulerName", PodField::SchedulerName),
        ("spec.serviceAccountName", PodField::ServiceAccountName),
        ("spec.hostNetwork", PodField::HostNetwork),
        ("status.phase", PodField::Phase),
        ("status.podIP", PodField::PodIp),
        ("status.nominatedNodeName", PodField::NominatedNodeName),
    ];

    /// The field a field-selector key names, if it is supported.
    pub(super) fn from_key(key: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == key)
            .map(|&(_, field)| field)
    }

    /// The field's value as the API server compares it: a missing string is empty, a missing
    /// `hostNetwork` is `false` (its Go zero value).
    fn value(self, pod: &Pod) -> Cow<'_, str> {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let text = match self {
            PodField::Name => meta.name.as_deref(),
            PodField::Namespace => meta.namespace.as_deref(),
            PodField::NodeName => spec.and_then(|s| s.node_name.as_deref()),
            PodField::RestartPolicy => spec.and_then(|s| s.restart_policy.as_deref()),
            PodField::SchedulerName => spec.and_then(|s| s.scheduler_name.as_deref()),
            PodField::ServiceAccountName => spec.and_then(|s| s.service_account_name.as_deref()),
            PodField::HostNetwork => {
                let host = spec.and_then(|s| s.host_network).unwrap_or(false);
                return Cow::Owned(host.to_string());
            }
            PodField::Phase => status.and_then(|s| s.phase.as_deref()),
            PodField::PodIp => status.and_then(|s| s.pod_ip.as_deref()),
            PodField::NominatedNodeName => status.and_then(|s| s.nominated_node_name.as_deref()),
        };
        Cow::Borrowed(text.unwrap_or(""))
    }
}

/// One term of a field selector: `field=value` (or `==`), or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldRequirement {
    pub(super) field: PodField,
    pub(super) value: String,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub(super) equal: bool,
}

impl FieldRequirement {
    /// The term in the API's field selector syntax, its value escaped as the API server
    /// unescapes it (`\\`, `\,`, `\=`).
    fn to_query(&self) -> String {
        let key = PodField::ALL
            .iter()
            .find(|(_, field)| *field == self.field)
            .map_or("", |(key, _)| key);
        let mut value = String::with_capacity(self.value.len());
        for c in self.value.chars() {
            if matches!(c, '\\' | ',' | '=') {
                value.push('\\');
            }
            value.push(c);
        }
        let op = if self.equal { "=" } else { "!=" };
        format!("{key}{op}{value}")
    }

    fn matches(&self, pod: &Pod) -> bool {
        (self.field.value(pod) == self.value.as_str()) == self.equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(
                    labels
                        .iter()
                        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".to_owned()),
                host_network: Some(true),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".to_owned()),
                pod_ip: Some("10.0.0.7".to_owned()),
                ..PodStatus::default()
            }),
        }
    }

    fn label(key: &str, operator: LabelOperator, values: &[&str]) -> LabelRequirement {
        LabelRequirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    fn field(key: &str, equal: bool, value: &str) -> FieldRequirement {
        FieldRequirement {
            field: PodField::from_key(key).expect("a supported field"),
            value: value.to_owned(),
            equal,
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let bare = Pod::default();
        assert!(Selector::default().matches(&bare));
        assert!(Selector::default().matches(&pod("ns", "p", &[])));
    }

    #[test]
    fn namespace() {
        let p = pod("shop", "web-1", &[]);
        let cases = [(Some("shop"), true), (Some("other"), false), (None, true)];
        for (namespace, want) in cases {
            let sel = Selector::new(namespace.map(str::to_owned), vec![], vec![]);
            assert_eq!(sel.matches(&p), want, "namespace {namespace:?}");
        }
        let unnamespaced = Pod::default();
        let sel = Selector::new(Some("shop".to_owned()), vec![], vec![]);
        assert!(!sel.matches(&unnamespaced));
    }

    #[test]
    fn label_operators() {
        use LabelOperator::*;
        let with = pod("ns", "p", &[("app", "web"), ("tier", "front")]);
        let without = pod("ns", "p", &[("tier", "front")]);
        let no_labels = Pod::default();
        // (requirement, matches `with`, matches `without`, matches a pod with no labels)
        let cases = [
            (label("app", In, &["web", "api"]), true, false, false),
            (label("app", In, &["api"]), false, false, false),
            (label("app", NotIn, &["api"]), true, true, true),
            (label("app", NotIn, &["web"]), false, true, true),
            (label("app", Exists, &[]), true, false, false),
            (label("app", DoesNotExist, &[]), false, true, true),
        ];
        for (req, want_with, want_without, want_none) in cases {
            let sel = Selector::new(None, vec![req.clone()], vec![]);
            assert_eq!(sel.matches(&with), want_with, "{req:?} on labelled pod");
            assert_eq!(sel.matches(&without), want_without, "{req:?} without app");
            assert_eq!(sel.matches(&no_labels), want_none, "{req:?} on no labels");
        }
    }

    #[test]
    fn label_requirements_are_anded() {
        use LabelOperator::*;
        let p = pod("ns", "p", &[("app", "web"), ("tier", "front")]);
        let both = vec![label("app", In, &["web"]), label("tier", In, &["front"])];
        assert!(Selector::new(None, both, vec![]).matches(&p));
        let one_fails = vec![label("app", In, &["web"]), label("tier", In, &["back"])];
        assert!(!Selector::new(None, one_fails, vec![]).matches(&p));
    }

    #[test]
    fn field_requirements() {
        let p = pod("shop", "web-1", &[]);
        let cases = [
            (field("metadata.name", true, "web-1"), true),
            (field("metadata.name", true, "web-2"), false),
            (field("metadata.name", false, "web-2"), true),
            (field("metadata.namespace", true, "shop"), true),
            (field("metadata.namespace", false, "shop"), false),
            (field("status.phase", true, "Running"), true),
            (field("status.phase", false, "Running"), false),
            (field("status.phase", true, "Pending"), false),
            (field("spec.nodeName", true, "node-1"), true),
            (field("spec.nodeName", false, "node-2"), true),
            (field("spec.hostNetwork", true, "true"), true),
            (field("status.podIP", true, "10.0.0.7"), true),
            // Missing fields compare as empty strings.
            (field("spec.restartPolicy", true, ""), true),
            (field("status.nominatedNodeName", false, ""), false),
            (field("spec.serviceAccountName", true, "default"), false),
        ];
        for (req, want) in cases {
            let sel = Selector::new(None, vec![], vec![req.clone()]);
            assert_eq!(sel.matches(&p), want, "{req:?}");
        }
    }

    #[test]
    fn missing_spec_and_status() {
        let bare = Pod::default();
        let cases = [
            (field("spec.nodeName", true, ""), true),
            (field("spec.hostNetwork", true, "false"), true),
            (field("status.phase", false, "Running"), true),
            (field("metadata.name", true, ""), true),
        ];
        for (req, want) in cases {
            let sel = Selector::new(None, vec![], vec![req.clone()]);
            assert_eq!(sel.matches(&bare), want, "{req:?}");
        }
    }

    #[test]
    fn query_is_the_api_servers_syntax() {
        use LabelOperator::*;
        let sel = Selector::new(
            Some("shop".to_owned()),
            vec![
                label("app", In, &["web"]),
                label("tier", In, &["front", "edge"]),
                label("env", NotIn, &["dev"]),
                label("team", Exists, &[]),
                label("legacy", DoesNotExist, &[]),
            ],
            vec![
                field("status.phase", true, "Running"),
                field("metadata.name", false, "a,b=c\\d"),
            ],
        );
        assert_eq!(
            sel.query(Some("node-1")),
            PodQuery {
                node: Some("node-1".to_owned()),
                namespace: Some("shop".to_owned()),
                labels: Some(
                    "app=web,tier in (edge,front),env notin (dev),team,!legacy".to_owned()
                ),
                fields: Some("status.phase=Running,metadata.name!=a\\,b\\=c\\\\d".to_owned()),
            }
        );
        assert_eq!(Selector::default().query(None), PodQuery::default());
    }

    #[test]
    fn all_parts_are_anded() {
        let p = pod("shop", "web-1", &[("app", "web")]);
        let labels = vec![label("app", LabelOperator::Exists, &[])];
        let sel = Selector::new(
            Some("shop".to_owned()),
            labels.clone(),
            vec![field("status.phase", true, "Running")],
        );
        assert!(sel.matches(&p));
        let sel = Selector::new(
            Some("shop".to_owned()),
            labels,
            vec![field("status.phase", true, "Pending")],
        );
        assert!(!sel.matches(&p));
    }
}
