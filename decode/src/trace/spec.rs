//! Trace specs: what users write in a `Trace` resource's `spec` or in the `swoll-traces`
//! ConfigMap, and their validation. Both are the same [`TraceSpec`], validated the same way.
//!
//! Each data key of the ConfigMap holds one spec in YAML, with the fields of the original
//! project's Trace resource (a `Trace`'s spec has the same fields less `name` and `namespace`,
//! which come from its metadata):
//!
//! ```yaml
//! name: web-files            # optional: defaults to the data key (without .yaml/.yml)
//! namespace: shop            # pods of every namespace if absent (refused unless the agent
//!                            # runs with --allow-cluster-wide-traces)
//! syscalls: [openat, sys_read, close]   # or ["*"] for every syscall
//! labelSelector:
//!   matchLabels: {app: web}
//!   matchExpressions:
//!     - {key: tier, operator: In, values: [front, edge]}
//! fieldSelector: status.phase=Running,spec.nodeName!=node-3
//! # or, as the original's Trace resource wrote it:
//! # fieldSelector: {matchLabels: {status.phase: Running}}
//! hostSelector: [app, sidecar]   # optional: only these container names
//! duration: 1h30m            # optional: runs until the spec is removed if absent
//! sampleRate: 10             # optional: one call in 10
//! captureBytes: 64           # optional: first bytes of read/write buffers (max 256)
//! ```
//!
//! Every key (and every `Trace`) is parsed on its own ([`parse_configmap`], [`parse_resource`]),
//! so one malformed spec never stops the others; each error names its key (or the Trace's
//! `namespace/name`) and says what to fix, because users only see it in the agent's log, its
//! metrics or the Trace's status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::selector::{FieldRequirement, LabelOperator, LabelRequirement, PodField, Selector};
use crate::syscalls::{self, Arch};

/// Most bytes of a read/write buffer a trace may capture per call: one data slot of the event.
const MAX_CAPTURE_BYTES: u32 = swoll_maps_schema::trace::DATA_BYTES as u32;
/// Longest DNS-1123 label: names are used in URL paths and as metric labels.
const MAX_NAME_LEN: usize = 63;
/// The `syscalls` entry that selects every syscall.
const ALL_SYSCALLS: &str = "*";

/// Fields a spec accepts, checked before typed parsing so an unknown one gets its own error.
const SPEC_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "syscalls",
    "labelSelector",
    "fieldSelector",
    "hostSelector",
    "duration",
    "sampleRate",
    "captureBytes",
];
/// Fields a `Trace` resource's spec accepts: its name and namespace are its metadata's.
const RESOURCE_SPEC_FIELDS: &[&str] = &[
    "syscalls",
    "labelSelector",
    "fieldSelector",
    "hostSelector",
    "duration",
    "sampleRate",
    "captureBytes",
];
/// Fields of `fieldSelector` written as a map: only `matchLabels` (field path → value).
const FIELD_SELECTOR_FIELDS: &[&str] = &["matchLabels"];
const LABEL_SELECTOR_FIELDS: &[&str] = &["matchLabels", "matchExpressions"];
const EXPRESSION_FIELDS: &[&str] = &["key", "operator", "values"];

/// One trace spec as written in YAML, before validation. Mirrors the original project's Trace
/// resource, so its specs carry over with the same field names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceSpec {
    /// The trace's name, unique across the ConfigMap; empty or absent means the data key.
    #[serde(default)]
    pub name: String,
    /// Namespace of the pods to trace; `None` traces pods of every namespace.
    pub namespace: Option<String>,
    /// Syscall names (`openat` or `sys_openat`), or `"*"` for all; at least one.
    #[serde(default)]
    pub syscalls: Vec<String>,
    /// Which pods to trace by label, as in a Deployment's selector.
    pub label_selector: Option<LabelSelector>,
    /// Which pods to trace by field.
    pub field_selector: Option<FieldSelector>,
    /// Names of the containers to trace in the selected pods; empty traces all of them.
    #[serde(default)]
    pub host_selector: Vec<String>,
    /// How long the trace runs, Go style (`90s`, `1h30m`); `None` runs until removed.
    pub duration: Option<String>,
    /// Keep one call in N; 0 or 1 keeps every call.
    pub sample_rate: Option<u32>,
    /// First bytes of read/write buffers to capture; 0 (the default) captures none.
    pub capture_bytes: Option<u32>,
}

/// A field selector, in either form a user may know: `kubectl --field-selector` syntax, or the
/// original project's `{matchLabels: {status.phase: Running}}` (each entry `field=value`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum FieldSelector {
    /// `status.phase=Running,spec.nodeName!=node-3`.
    Terms(String),
    /// `matchLabels` from field path to value: every one must be equal.
    Map(FieldSelectorMap),
}

/// The map form of a [`FieldSelector`].
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldSelectorMap {
    /// Field path → value, each one `field=value`.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A Kubernetes label selector, parsed by swoll so that its errors name the trace and the label.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry: a label key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label's key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values for `In`/`NotIn` (at least one); none for `Exists`/`DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A validated trace, ready for the agent to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Unique name: used in the `/traces/<name>` path and as a metric label.
    pub name: String,
    /// Namespace of the pods to trace; `None` for every namespace (the selector checks it too).
    pub namespace: Option<String>,
    /// Syscall numbers on this host's architecture, sorted and deduplicated; empty means all.
    pub syscalls: Vec<u32>,
    /// The pods the trace follows.
    pub selector: Selector,
    /// When the trace stops after it starts; `None` runs until the spec is removed.
    pub duration: Option<Duration>,
    /// Keep one call in this many (at least 1).
    pub sample_rate: u32,
    /// First bytes of read/write buffers to capture (0 to 256).
    pub capture_bytes: u32,
}

/// Why a ConfigMap key does not hold a valid trace spec. Every variant names the key, because
/// the user reads this in a log and must find which spec to fix.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not YAML, or a field of the wrong type.
    #[error("trace spec `{key}`: not a valid trace spec")]
    Yaml {
        key: String,
        #[source]
        source: yaml_serde::Error,
    },
    /// A field swoll does not know (usually a typo, which would otherwise be silently ignored).
    #[error("trace spec `{key}`: unknown field `{field}` (expected one of: {expected})")]
    UnknownField {
        key: String,
        field: String,
        expected: String,
    },
    /// `syscalls` is missing or empty.
    #[error("trace spec `{key}`: `syscalls` is empty: list at least one syscall, or \"*\" for all")]
    EmptySyscalls { key: String },
    /// Names that are not syscalls on this host's architecture.
    #[error("trace spec `{key}`: unknown syscalls on {arch:?}: {}", names.join(", "))]
    UnknownSyscalls {
        key: String,
        arch: Arch,
        names: Vec<String>,
    },
    /// `duration` is not a Go-style duration.
    #[error(
        "trace spec `{key}`: duration `{value}`: {reason}; write e.g. 90s, 5m, 1h30m or 250ms \
         (units ns, us, ms, s, m, h)"
    )]
    Duration {
        key: String,
        value: String,
        reason: &'static str,
    },
    /// A `matchExpressions` operator Kubernetes does not have.
    #[error(
        "trace spec `{key}`: labelSelector: operator `{operator}` for label `{label}` is not one \
         of In, NotIn, Exists, DoesNotExist"
    )]
    LabelOperator {
        key: String,
        label: String,
        operator: String,
    },
    /// `In`/`NotIn` without values: Kubernetes rejects them, as they would match nothing.
    #[error(
        "trace spec `{key}`: labelSelector: operator {operator} for label `{label}` needs values"
    )]
    LabelValuesMissing {
        key: String,
        label: String,
        operator: String,
    },
    /// `Exists`/`DoesNotExist` with values, which Kubernetes rejects as they are ignored.
    #[error(
        "trace spec `{key}`: labelSelector: operator {operator} for label `{label}` takes no values"
    )]
    LabelValuesUnexpected {
        key: String,
        label: String,
        operator: String,
    },
    /// A label selector entry with an empty key.
    #[error("trace spec `{key}`: labelSelector: a label key is empty")]
    LabelKeyEmpty { key: String },
    /// A field-selector term that is not `field=value`, `field==value` or `field!=value`.
    #[error(
        "trace spec `{key}`: fieldSelector term `{term}` is not field=value, field==value or \
         field!=value"
    )]
    FieldSelectorSyntax { key: String, term: String },
    /// A field the API server cannot select pods by.
    #[error(
        "trace spec `{key}`: fieldSelector: unsupported field `{field}` (supported: {supported})"
    )]
    FieldSelectorField {
        key: String,
        field: String,
        supported: String,
    },
    /// `captureBytes` above what an event can carry.
    #[error("trace spec `{key}`: captureBytes {value} is more than the maximum {max}")]
    CaptureBytes { key: String, value: u32, max: u32 },
    /// A ConfigMap spec without `namespace` while the agent does not allow cluster-wide traces:
    /// whoever edits the ConfigMap would read every pod's calls.
    #[error(
        "trace spec `{key}`: no `namespace`: a trace of every namespace needs an agent run with \
         --allow-cluster-wide-traces; set `namespace:`, or use a Trace resource in the pods' \
         namespace"
    )]
    ClusterWide { key: String },
    /// A `hostSelector` entry that is empty.
    #[error("trace spec `{key}`: hostSelector: a container name is empty")]
    ContainerNameEmpty { key: String },
    /// A name or namespace that is not a DNS-1123 label.
    #[error(
        "trace spec `{key}`: {field} `{value}` is not a DNS-1123 label: {reason}{}",
        if *from_key { " (the name defaults to the data key: set `name:`)" } else { "" }
    )]
    InvalidName {
        key: String,
        field: &'static str,
        value: String,
        reason: &'static str,
        /// The name was not given, so it is the key's.
        from_key: bool,
    },
    /// Two keys give their traces the same name; the later key (in key order) loses.
    #[error("trace spec `{key}`: name `{name}` is already used by the spec in key `{first}`")]
    DuplicateName {
        key: String,
        name: String,
        first: String,
    },
}

/// Parses and validates the spec in ConfigMap data key `key`.
pub fn parse(key: &str, yaml: &str) -> Result<Trace, SpecError> {
    let yaml_err = |source| SpecError::Yaml {
        key: key.to_owned(),
        source,
    };
    let value: yaml_serde::Value = yaml_serde::from_str(yaml).map_err(yaml_err)?;
    check_fields(key, &value, SPEC_FIELDS)?;
    let spec: TraceSpec = yaml_serde::from_value(value).map_err(yaml_err)?;
    spec.validate(key)
}

/// The name a `Trace` resource's trace goes by (its stream's path, its metric label, the
/// `trace` of its events): `<namespace>.<name>`. Unique, since a namespace has no dot, and never
/// a ConfigMap trace's, whose names are DNS labels.
pub fn resource_trace_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// Parses and validates the `spec` of `Trace` `namespace/name`: it selects pods of its own
/// namespace only, whatever its spec says.
pub fn parse_resource(
    namespace: &str,
    name: &str,
    spec: &serde_json::Value,
) -> Result<Trace, SpecError> {
    let key = format!("{namespace}/{name}");
    let yaml_err = |source| SpecError::Yaml {
        key: key.clone(),
        source,
    };
    let value = yaml_serde::to_value(spec).map_err(yaml_err)?;
    check_fields(&key, &value, RESOURCE_SPEC_FIELDS)?;
    let mut spec: TraceSpec = yaml_serde::from_value(value).map_err(yaml_err)?;
    check_dns_label(&key, "namespace", namespace, false)?;
    spec.name = resource_trace_name(namespace, name);
    spec.namespace = Some(namespace.to_owned());
    spec.validate_named(&key)
}

/// Parses every key of the ConfigMap's data independently: the valid traces, and an error for
/// each key that is invalid, reuses an earlier key's trace name (keys in order), or has no
/// namespace without `allow_cluster_wide`.
pub fn parse_configmap(
    data: &BTreeMap<String, String>,
    allow_cluster_wide: bool,
) -> (Vec<Trace>, Vec<(String, SpecError)>) {
    let mut traces = Vec::new();
    let mut errors = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (key, yaml) in data {
        let parsed = parse(key, yaml).and_then(|trace| {
            if trace.namespace.is_none() && !allow_cluster_wide {
                return Err(SpecError::ClusterWide { key: key.clone() });
            }
            Ok(trace)
        });
        match parsed {
            Ok(trace) => {
                if let Some(first) = names.get(&trace.name) {
                    let err = SpecError::DuplicateName {
                        key: key.clone(),
                        name: trace.name,
                        first: first.clone(),
                    };
                    errors.push((key.clone(), err));
                } else {
                    names.insert(trace.name.clone(), key.clone());
                    traces.push(trace);
                }
            }
            Err(err) => errors.push((key.clone(), err)),
        }
    }
    (traces, errors)
}

impl TraceSpec {
    /// Validates a ConfigMap spec: its name (or its key's) must be a DNS label.
    fn validate(mut self, key: &str) -> Result<Trace, SpecError> {
        let from_key = self.name.is_empty();
        if from_key {
            default_name(key).clone_into(&mut self.name);
        }
        check_dns_label(key, "name", &self.name, from_key)?;
        self.validate_named(key)
    }

    /// Validates everything but the name, which the caller has checked or made.
    fn validate_named(self, key: &str) -> Result<Trace, SpecError> {
        let name = self.name;
        if let Some(namespace) = &self.namespace {
            check_dns_label(key, "namespace", namespace, false)?;
        }
        let syscalls = syscall_numbers(key, &self.syscalls)?;
        let labels = match &self.label_selector {
            Some(selector) => label_requirements(key, selector)?,
            None => Vec::new(),
        };
        let fields = match &self.field_selector {
            Some(FieldSelector::Terms(selector)) => field_requirements(key, selector)?,
            Some(FieldSelector::Map(map)) => {
                let terms: Vec<String> = map
                    .match_labels
                    .iter()
                    .map(|(field, value)| format!("{field}={value}"))
                    .collect();
                field_requirements(key, &terms.join(","))?
            }
            None => Vec::new(),
        };
        if self.host_selector.iter().any(String::is_empty) {
            return Err(SpecError::ContainerNameEmpty {
                key: key.to_owned(),
            });
        }
        let duration = match &self.duration {
            Some(text) => parse_duration(text).map_err(|reason| SpecError::Duration {
                key: key.to_owned(),
                value: text.clone(),
                reason,
            })?,
            None => Duration::ZERO,
        };
        let capture_bytes = self.capture_bytes.unwrap_or(0);
        if capture_bytes > MAX_CAPTURE_BYTES {
            return Err(SpecError::CaptureBytes {
                key: key.to_owned(),
                value: capture_bytes,
                max: MAX_CAPTURE_BYTES,
            });
        }
        Ok(Trace {
            name,
            syscalls,
            selector: Selector::new(self.namespace.clone(), labels, fields)
                .with_containers(self.host_selector.into_iter().collect()),
            namespace: self.namespace,
            // A zero duration would end the trace as it starts: like no duration, it means
            // "until removed".
            duration: (!duration.is_zero()).then_some(duration),
            sample_rate: self.sample_rate.unwrap_or(1).max(1),
            capture_bytes,
        })
    }
}

/// The name a spec without `name:` gets: its key, less a `.yaml`/`.yml` suffix left by
/// `kubectl create configmap --from-file`.
fn default_name(key: &str) -> &str {
    key.strip_suffix(".yaml")
        .or_else(|| key.strip_suffix(".yml"))
        .unwrap_or(key)
}

/// Rejects fields the spec does not have (`known` at the top level, and inside `labelSelector`
/// and a map `fieldSelector`), naming the field; the typed parse then only fails on syntax and
/// types.
fn check_fields(key: &str, value: &yaml_serde::Value, known: &[&str]) -> Result<(), SpecError> {
    let Some(spec) = value.as_mapping() else {
        return Ok(());
    };
    check_keys(key, spec, "", known)?;
    if let Some(fields) = spec.get("fieldSelector").and_then(|v| v.as_mapping()) {
        check_keys(key, fields, "fieldSelector.", FIELD_SELECTOR_FIELDS)?;
    }
    let Some(selector) = spec.get("labelSelector").and_then(|v| v.as_mapping()) else {
        return Ok(());
    };
    check_keys(key, selector, "labelSelector.", LABEL_SELECTOR_FIELDS)?;
    let Some(expressions) = selector
        .get("matchExpressions")
        .and_then(|v| v.as_sequence())
    else {
        return Ok(());
    };
    for (i, expression) in expressions.iter().enumerate() {
        if let Some(expression) = expression.as_mapping() {
            let prefix = format!("labelSelector.matchExpressions[{i}].");
            check_keys(key, expression, &prefix, EXPRESSION_FIELDS)?;
        }
    }
    Ok(())
}

fn check_keys(
    key: &str,
    mapping: &yaml_serde::Mapping,
    prefix: &str,
    known: &[&str],
) -> Result<(), SpecError> {
    for field in mapping.keys().filter_map(|k| k.as_str()) {
        if !known.contains(&field) {
            return Err(SpecError::UnknownField {
                key: key.to_owned(),
                field: format!("{prefix}{field}"),
                expected: known.join(", "),
            });
        }
    }
    Ok(())
}

/// Checks that `value` is a DNS-1123 label: 1 to 63 lowercase letters, digits and '-', starting
/// and ending with a letter or digit.
fn check_dns_label(
    key: &str,
    field: &'static str,
    value: &str,
    from_key: bool,
) -> Result<(), SpecError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > MAX_NAME_LEN {
        Some("it is longer than 63 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lowercase letters, digits and '-' are allowed")
    } else if value.starts_with('-') || value.ends_with('-') {
        Some("it must start and end with a letter or digit")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SpecError::InvalidName {
            key: key.to_owned(),
            field,
            value: value.to_owned(),
            reason,
            from_key,
        }),
        None => Ok(()),
    }
}

/// The syscall numbers of `names` on this host, sorted and deduplicated; empty if `"*"` is
/// among them. Every unknown name is reported at once.
fn syscall_numbers(key: &str, names: &[String]) -> Result<Vec<u32>, SpecError> {
    if names.is_empty() {
        return Err(SpecError::EmptySyscalls {
            key: key.to_owned(),
        });
    }
    let mut numbers = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in names.iter().filter(|n| *n != ALL_SYSCALLS) {
        match syscalls::number(Arch::NATIVE, name) {
            Some(nr) => {
                numbers.insert(nr);
            }
            None => unknown.push(name.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(SpecError::UnknownSyscalls {
            key: key.to_owned(),
            arch: Arch::NATIVE,
            names: unknown,
        });
    }
    if names.iter().any(|n| n == ALL_SYSCALLS) {
        return Ok(Vec::new());
    }
    Ok(numbers.into_iter().collect())
}

/// The requirements of a label selector: one `In` per `matchLabels` entry, then each
/// `matchExpressions` entry, checked as the API server checks them.
fn label_requirements(
    key: &str,
    selector: &LabelSelector,
) -> Result<Vec<LabelRequirement>, SpecError> {
    let mut requirements = Vec::new();
    for (label, value) in &selector.match_labels {
        if label.is_empty() {
            return Err(SpecError::LabelKeyEmpty {
                key: key.to_owned(),
            });
        }
        requirements.push(LabelRequirement {
            key: label.clone(),
            operator: LabelOperator::In,
            values: BTreeSet::from([value.clone()]),
        });
    }
    for expr in &selector.match_expressions {
        if expr.key.is_empty() {
            return Err(SpecError::LabelKeyEmpty {
                key: key.to_owned(),
            });
        }
        let operator = match expr.operator.as_str() {
            "In" => LabelOperator::In,
            "NotIn" => LabelOperator::NotIn,
            "Exists" => LabelOperator::Exists,
            "DoesNotExist" => LabelOperator::DoesNotExist,
            _ => {
                return Err(SpecError::LabelOperator {
                    key: key.to_owned(),
                    label: expr.key.clone(),
                    operator: expr.operator.clone(),
                });
            }
        };
        let takes_values = matches!(operator, LabelOperator::In | LabelOperator::NotIn);
        if takes_values && expr.values.is_empty() {
            return Err(SpecError::LabelValuesMissing {
                key: key.to_owned(),
                label: expr.key.clone(),
                operator: expr.operator.clone(),
            });
        }
        if !takes_values && !expr.values.is_empty() {
            return Err(SpecError::LabelValuesUnexpected {
                key: key.to_owned(),
                label: expr.key.clone(),
                operator: expr.operator.clone(),
            });
        }
        requirements.push(LabelRequirement {
            key: expr.key.clone(),
            operator,
            values: expr.values.iter().cloned().collect(),
        });
    }
    Ok(requirements)
}

/// The terms of a field selector (`a=b,c!=d`), as the API server splits them: empty terms are
/// skipped, each term splits at its first operator (`!=`, `==` or `=`).
fn field_requirements(key: &str, selector: &str) -> Result<Vec<FieldRequirement>, SpecError> {
    let mut requirements = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let syntax = || SpecError::FieldSelectorSyntax {
            key: key.to_owned(),
            term: term.to_owned(),
        };
        let (field, equal, value) = split_term(term).ok_or_else(syntax)?;
        if field.is_empty() || value.contains('=') {
            return Err(syntax());
        }
        let Some(field_key) = PodField::from_key(field) else {
            let supported: Vec<&str> = PodField::ALL.iter().map(|(name, _)| *name).collect();
            return Err(SpecError::FieldSelectorField {
                key: key.to_owned(),
                field: field.to_owned(),
                supported: supported.join(", "),
            });
        };
        requirements.push(FieldRequirement {
            field: field_key,
            value: value.to_owned(),
            equal,
        });
    }
    Ok(requirements)
}

/// Splits `field<op>value` at its first operator: the field, whether it is an equality, and the
/// value, both trimmed.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    let (i, _) = term.char_indices().find(|&(_, c)| c == '=' || c == '!')?;
    let rest = &term[i..];
    let (equal, len) = if rest.starts_with("!=") {
        (false, 2)
    } else if rest.starts_with("==") {
        (true, 2)
    } else if rest.starts_with('=') {
        (true, 1)
    } else {
        return None;
    };
    Some((term[..i].trim(), equal, term[i + len..].trim()))
}

/// Parses a Go-style duration: a sequence of decimal numbers, each with an optional fraction
/// and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), such as `1h30m` or `1.5s`; `0` alone is
/// allowed too. Negative durations and ones beyond `u64::MAX` nanoseconds are rejected.
fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    const TOO_LONG: &str = "it is too long";
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty");
    }
    if text.starts_with('-') {
        return Err("it is negative");
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("expected a number");
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => {
                let frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(frac_len)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err("expected a number");
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err("a number has no unit");
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err("unknown unit");
        };
        let mut nanos: u128 = 0;
        for digit in int.bytes() {
            nanos = nanos
                .checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(digit - b'0')))
                .ok_or(TOO_LONG)?;
        }
        nanos = nanos.checked_mul(scale).ok_or(TOO_LONG)?;
        // Fraction digits past nanosecond precision of the largest unit cannot matter.
        let mut numerator: u128 = 0;
        let mut denominator: u128 = 1;
        for digit in frac.bytes().take(20) {
            numerator = numerator * 10 + u128::from(digit - b'0');
            denominator *= 10;
        }
        nanos += numerator * scale / denominator;
        total = total.checked_add(nanos).ok_or(TOO_LONG)?;
        rest = after;
    }
    let nanos = u64::try_from(total).map_err(|_| TOO_LONG)?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a valid case must produce.
    type TraceCheck = fn(&Trace) -> bool;
    /// Which error an invalid case must give.
    type ErrorCheck = fn(&SpecError) -> bool;

    fn nr(name: &str) -> u32 {
        syscalls::number(Arch::NATIVE, name).expect("a known syscall")
    }

    #[test]
    fn minimal_spec() {
        let trace = parse("files", "syscalls: [openat]").expect("valid");
        assert_eq!(trace.name, "files");
        assert_eq!(trace.namespace, None);
        assert_eq!(trace.syscalls, vec![nr("openat")]);
        assert_eq!(trace.selector, Selector::default());
        assert_eq!(trace.duration, None);
        assert_eq!(trace.sample_rate, 1);
        assert_eq!(trace.capture_bytes, 0);
    }

    #[test]
    fn full_spec() {
        let yaml = r#"
name: web-files
namespace: shop
syscalls: [openat, sys_read, close, openat]
labelSelector:
  matchLabels: {app: web}
  matchExpressions:
    - {key: tier, operator: In, values: [front, edge]}
    - {key: canary, operator: DoesNotExist}
fieldSelector: status.phase=Running, spec.nodeName!=node-3
duration: 1h30m
sampleRate: 10
captureBytes: 64
"#;
        let trace = parse("web.yaml", yaml).expect("valid");
        let mut want = vec![nr("openat"), nr("read"), nr("close")];
        want.sort_unstable();
        let labels = vec![
            LabelRequirement {
                key: "app".into(),
                operator: LabelOperator::In,
                values: BTreeSet::from(["web".into()]),
            },
            LabelRequirement {
                key: "tier".into(),
                operator: LabelOperator::In,
                values: BTreeSet::from(["front".into(), "edge".into()]),
            },
            LabelRequirement {
                key: "canary".into(),
                operator: LabelOperator::DoesNotExist,
                values: BTreeSet::new(),
            },
        ];
        let fields = vec![
            FieldRequirement {
                field: PodField::Phase,
                value: "Running".into(),
                equal: true,
            },
            FieldRequirement {
                field: PodField::NodeName,
                value: "node-3".into(),
                equal: false,
            },
        ];
        let expected = Trace {
            name: "web-files".into(),
            namespace: Some("shop".into()),
            syscalls: want,
            selector: Selector::new(Some("shop".into()), labels, fields),
            duration: Some(Duration::from_secs(5400)),
            sample_rate: 10,
            capture_bytes: 64,
        };
        assert_eq!(trace, expected);
    }

    #[test]
    fn valid_variants() {
        let cases: &[(&str, &str, TraceCheck)] = &[
            ("sys_ prefix", "syscalls: [sys_openat]", |t| {
                t.syscalls == vec![nr("openat")]
            }),
            ("all syscalls", r#"syscalls: ["*"]"#, |t| {
                t.syscalls.is_empty()
            }),
            ("all with others", r#"syscalls: ["*", read]"#, |t| {
                t.syscalls.is_empty()
            }),
            ("sample rate 0", "syscalls: [read]\nsampleRate: 0", |t| {
                t.sample_rate == 1
            }),
            ("zero duration", "syscalls: [read]\nduration: 0s", |t| {
                t.duration.is_none()
            }),
            ("max capture", "syscalls: [read]\ncaptureBytes: 256", |t| {
                t.capture_bytes == 256
            }),
            ("yml key", "syscalls: [read]", |t| t.name == "k"),
            (
                "empty fieldSelector",
                "syscalls: [read]\nfieldSelector: ''",
                |t| t.selector == Selector::default(),
            ),
        ];
        for (what, yaml, check) in cases {
            let trace = parse("k.yml", yaml).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(check(&trace), "{what}: {trace:?}");
        }
    }

    #[test]
    fn invalid_specs() {
        use SpecError as E;
        let cases: &[(&str, &str, ErrorCheck)] = &[
            ("syscalls: [openat", "syntax", |e| {
                matches!(e, E::Yaml { .. })
            }),
            ("syscalls: [read]\nsampleRate: many", "type", |e| {
                matches!(e, E::Yaml { .. })
            }),
            ("- read", "not a mapping", |e| matches!(e, E::Yaml { .. })),
            (
                "syscalls: [read]\nsyscall: [write]",
                "unknown field",
                |e| matches!(e, E::UnknownField { field, .. } if field == "syscall"),
            ),
            (
                "syscalls: [read]\nlabelSelector: {matchLabel: {a: b}}",
                "unknown nested field",
                |e| matches!(e, E::UnknownField { field, .. } if field == "labelSelector.matchLabel"),
            ),
            (
                "syscalls: [read]\nlabelSelector:\n  matchExpressions: [{key: a, op: In}]",
                "unknown expression field",
                |e| matches!(e, E::UnknownField { field, .. } if field.ends_with("[0].op")),
            ),
            ("name: x", "missing syscalls", |e| {
                matches!(e, E::EmptySyscalls { .. })
            }),
            ("syscalls: []", "empty syscalls", |e| {
                matches!(e, E::EmptySyscalls { .. })
            }),
            (
                "syscalls: [openatt, read, frobnicate]",
                "unknown syscalls",
                |e| matches!(e, E::UnknownSyscalls { names, .. } if *names == ["openatt", "frobnicate"]),
            ),
            (
                "syscalls: [read]\nduration: 5x",
                "bad duration",
                |e| matches!(e, E::Duration { value, .. } if value == "5x"),
            ),
            (
                "syscalls: [read]\nlabelSelector:\n  matchExpressions: [{key: a, operator: Has}]",
                "bad operator",
                |e| matches!(e, E::LabelOperator { operator, label, .. } if operator == "Has" && label == "a"),
            ),
            (
                "syscalls: [read]\nlabelSelector:\n  matchExpressions: [{key: a, operator: NotIn}]",
                "NotIn without values",
                |e| matches!(e, E::LabelValuesMissing { .. }),
            ),
            (
                "syscalls: [read]\nlabelSelector:\n  matchExpressions: [{key: a, operator: Exists, values: [x]}]",
                "Exists with values",
                |e| matches!(e, E::LabelValuesUnexpected { .. }),
            ),
            (
                "syscalls: [read]\nlabelSelector:\n  matchExpressions: [{key: '', operator: Exists}]",
                "empty label key",
                |e| matches!(e, E::LabelKeyEmpty { .. }),
            ),
            (
                "syscalls: [read]\nfieldSelector: status.phase",
                "no operator",
                |e| matches!(e, E::FieldSelectorSyntax { .. }),
            ),
            (
                "syscalls: [read]\nfieldSelector: =Running",
                "no field",
                |e| matches!(e, E::FieldSelectorSyntax { .. }),
            ),
            (
                "syscalls: [read]\nfieldSelector: a!b",
                "bad operator",
                |e| matches!(e, E::FieldSelectorSyntax { .. }),
            ),
            (
                "syscalls: [read]\nfieldSelector: spec.hostname=x",
                "unsupported field",
                |e| matches!(e, E::FieldSelectorField { field, .. } if field == "spec.hostname"),
            ),
            (
                "syscalls: [read]\ncaptureBytes: 257",
                "capture too large",
                |e| matches!(e, E::CaptureBytes { value: 257, .. }),
            ),
            ("name: Web_Files\nsyscalls: [read]", "bad name", |e| {
                matches!(e, E::InvalidName { field: "name", .. })
            }),
            ("name: -web\nsyscalls: [read]", "leading dash", |e| {
                matches!(e, E::InvalidName { field: "name", .. })
            }),
            ("namespace: Shop\nsyscalls: [read]", "bad namespace", |e| {
                matches!(
                    e,
                    E::InvalidName {
                        field: "namespace",
                        ..
                    }
                )
            }),
        ];
        for (yaml, what, check) in cases {
            let err = parse("bad-key", yaml).expect_err(what);
            assert!(check(&err), "{what}: got {err:?}");
            assert!(
                crate::error_chain(&err).contains("`bad-key`"),
                "{what}: message does not name the key: {err}"
            );
        }
    }

    #[test]
    fn name_length_and_default() {
        let long = "a".repeat(64);
        let err = parse(&long, "syscalls: [read]").expect_err("64 characters");
        assert!(matches!(err, SpecError::InvalidName { .. }), "{err:?}");
        assert!(parse(&"a".repeat(63), "syscalls: [read]").is_ok());
        let err = parse("web_files", "syscalls: [read]").expect_err("underscore key");
        assert!(err.to_string().contains("set `name:`"), "{err}");
        let err = parse("k", "name: Web\nsyscalls: [read]").expect_err("explicit name");
        assert!(!err.to_string().contains("set `name:`"), "{err}");
        let trace = parse("web_files", "name: web-files\nsyscalls: [read]").expect("named");
        assert_eq!(trace.name, "web-files");
    }

    #[test]
    fn durations() {
        let ok = [
            ("1h30m", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
            ("5m", Duration::from_secs(300)),
            ("1.5s", Duration::from_millis(1500)),
            (".5m", Duration::from_secs(30)),
            ("2h45m30.5s", Duration::from_millis(9_930_500)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("+1s", Duration::from_secs(1)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        let bad = [
            "",
            "+",
            "5x",
            "-1s",
            "5",
            "s",
            "1h30",
            ".s",
            "1..5s",
            "abc",
            "1 h",
            "99999999999h",
        ];
        for text in bad {
            assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn field_selector_splitting() {
        let cases = [
            ("a=b", Some(("a", true, "b"))),
            ("a==b", Some(("a", true, "b"))),
            ("a!=b", Some(("a", false, "b"))),
            ("a = b", Some(("a", true, "b"))),
            ("a=", Some(("a", true, ""))),
            ("a", None),
            ("a!b", None),
        ];
        for (term, want) in cases {
            assert_eq!(split_term(term), want, "{term}");
        }
    }

    #[test]
    fn configmap_keys_are_independent() {
        let data = BTreeMap::from([
            ("good".to_owned(), "syscalls: [openat]".to_owned()),
            ("bad".to_owned(), "syscalls: [nope]".to_owned()),
        ]);
        let (traces, errors) = parse_configmap(&data, true);
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].name, "good");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "bad");
        assert!(matches!(errors[0].1, SpecError::UnknownSyscalls { .. }));
    }

    #[test]
    fn configmap_duplicate_names() {
        let data = BTreeMap::from([
            ("a".to_owned(), "name: files\nsyscalls: [read]".to_owned()),
            ("b".to_owned(), "name: files\nsyscalls: [write]".to_owned()),
            ("files".to_owned(), "syscalls: [close]".to_owned()),
        ]);
        let (traces, errors) = parse_configmap(&data, true);
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].syscalls, vec![nr("read")]);
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "files"]);
        for (_, err) in &errors {
            assert!(
                matches!(err, SpecError::DuplicateName { first, .. } if first == "a"),
                "{err:?}"
            );
        }
    }

    /// The original project's README example, as a Trace's spec (JSON, as the API server sends
    /// it): its `fieldSelector.matchLabels` and `hostSelector` mean what they meant there.
    #[test]
    fn the_original_readme_trace_parses() {
        let spec = serde_json::json!({
            "syscalls": ["connect", "accept4", "bind", "listen", "execve", "openat"],
            "labelSelector": {"matchLabels": {"app": "nginx"}},
            "fieldSelector": {"matchLabels": {"status.phase": "Running"}},
            "hostSelector": ["nginx"],
        });
        let trace = parse_resource("swoll", "trace-nginx-hosts", &spec).expect("valid");
        assert_eq!(trace.name, "swoll.trace-nginx-hosts");
        assert_eq!(trace.namespace.as_deref(), Some("swoll"));
        assert_eq!(trace.syscalls.len(), 6);
        let labels = vec![LabelRequirement {
            key: "app".into(),
            operator: LabelOperator::In,
            values: BTreeSet::from(["nginx".into()]),
        }];
        let fields = vec![FieldRequirement {
            field: PodField::Phase,
            value: "Running".into(),
            equal: true,
        }];
        let selector = Selector::new(Some("swoll".into()), labels, fields)
            .with_containers(BTreeSet::from(["nginx".into()]));
        assert_eq!(trace.selector, selector);
        assert!(trace.selector.follows_container("nginx"));
        assert!(!trace.selector.follows_container("sidecar"));
    }

    #[test]
    fn a_trace_resource_selects_its_own_namespace_only() {
        use SpecError as E;
        let trace = parse_resource("team-a", "all", &serde_json::json!({"syscalls": ["read"]}))
            .expect("valid");
        assert_eq!(trace.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            trace.selector,
            Selector::new(Some("team-a".into()), vec![], vec![])
        );
        let cases: &[(serde_json::Value, ErrorCheck)] = &[
            (
                serde_json::json!({"syscalls": ["read"], "namespace": "team-b"}),
                |e| matches!(e, E::UnknownField { field, .. } if field == "namespace"),
            ),
            (
                serde_json::json!({"syscalls": ["read"], "name": "x"}),
                |e| matches!(e, E::UnknownField { field, .. } if field == "name"),
            ),
            (
                serde_json::json!({"syscalls": ["read"], "fieldSelector": {"matchExpressions": []}}),
                |e| matches!(e, E::UnknownField { field, .. } if field == "fieldSelector.matchExpressions"),
            ),
            (
                serde_json::json!({"syscalls": ["read"], "hostSelector": [""]}),
                |e| matches!(e, E::ContainerNameEmpty { .. }),
            ),
            (serde_json::Value::Null, |e| {
                matches!(e, E::EmptySyscalls { .. })
            }),
            (serde_json::json!({"syscalls": 5}), |e| {
                matches!(e, E::Yaml { .. })
            }),
        ];
        for (spec, check) in cases {
            let err = parse_resource("team-a", "t", spec).expect_err("invalid");
            assert!(check(&err), "{spec}: got {err:?}");
            assert!(err.to_string().contains("`team-a/t`"), "{err}");
        }
    }

    #[test]
    fn configmap_specs_without_namespace_need_allowing() {
        let data = BTreeMap::from([
            ("wide".to_owned(), "syscalls: [read]".to_owned()),
            (
                "shop".to_owned(),
                "namespace: shop\nsyscalls: [read]".to_owned(),
            ),
        ]);
        let (traces, errors) = parse_configmap(&data, false);
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].name, "shop");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "wide");
        assert!(matches!(errors[0].1, SpecError::ClusterWide { .. }));
        assert!(
            errors[0]
                .1
                .to_string()
                .contains("--allow-cluster-wide-traces")
        );
        let (traces, errors) = parse_configmap(&data, true);
        assert_eq!((traces.len(), errors.len()), (2, 0));
    }

    #[test]
    fn field_selector_forms_agree() {
        let terms = parse("k", "syscalls: [read]\nfieldSelector: status.phase=Running").unwrap();
        let map = parse(
            "k",
            "syscalls: [read]\nfieldSelector: {matchLabels: {status.phase: Running}}",
        )
        .unwrap();
        assert_eq!(terms.selector, map.selector);
    }
}
