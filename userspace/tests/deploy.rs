//! deploy/: what an operator installs, checked without a cluster.
//!
//! kubeconform and kind do not run on these machines, so every object of the plain manifests
//! (deploy/kubernetes, which deploy/render.sh renders from deploy/chart) is parsed into its
//! k8s-openapi type, strictly (a field the type does not know fails), and the invariants the
//! agent depends on are asserted: least privilege, host mounts, selectors, ports, probes, RBAC.
//! The DaemonSet's arguments are parsed by swoll's own CLI and checked against the binary's
//! `--help`, and the Grafana dashboard against deploy/grafana/queries.txt.
//!
//! Rendering the chart needs Helm (a `helm` binary or the helm-python-sdk package): where
//! neither is installed, that one comparison says so and skips, unless
//! `SWOLL_REQUIRE_HELM=1` makes it fail instead.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser as _;
use k8s_openapi::{
    Resource,
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::util::intstr::IntOrString,
    serde::{Deserialize as _, Serialize, de::DeserializeOwned},
    serde_json::{self, Value},
};
use swoll::cli::{Cli, Command as SwollCommand, ServeArgs};

/// What the DaemonSet mounts from the host: (host path, mount path, read-only).
const HOST_MOUNTS: [(&str, &str, bool); 4] = [
    ("/proc", "/host/proc", true),
    ("/sys/kernel/btf", "/sys/kernel/btf", true),
    ("/sys/fs/cgroup", "/sys/fs/cgroup", true),
    // Read-write: the probes are pinned under --pin-path.
    ("/sys/fs/bpf", "/sys/fs/bpf", false),
];

/// The one mount that sees the host's later mounts (`HostToContainer`): bpffs, so a bpffs the
/// host mounts after the pod started holds the pins. None propagates back to the host.
const PROPAGATED: &str = "/sys/fs/bpf";

/// The capabilities the agent adds, all others dropped.
const CAPABILITIES: [&str; 4] = ["BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE"];

/// Every object the plain manifests hold, by `apiVersion/kind`, in order: three ClusterRoles
/// (the agent's, and the Traces' edit and view roles aggregated into the built-in ones), one of
/// every other kind.
const KINDS: [&str; 14] = [
    "v1/Namespace",
    "v1/ConfigMap",
    "v1/ServiceAccount",
    "apiextensions.k8s.io/v1/CustomResourceDefinition",
    "rbac.authorization.k8s.io/v1/ClusterRole",
    "rbac.authorization.k8s.io/v1/ClusterRole",
    "rbac.authorization.k8s.io/v1/ClusterRole",
    "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
    "rbac.authorization.k8s.io/v1/Role",
    "rbac.authorization.k8s.io/v1/RoleBinding",
    "apps/v1/DaemonSet",
    "v1/Service",
    "networking.k8s.io/v1/NetworkPolicy",
    "monitoring.coreos.com/v1/ServiceMonitor",
];

/// The node name the tests pretend the downward API gave.
const NODE: &str = "node-1";
/// The namespace the manifests install into.
const NAMESPACE: &str = "swoll";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("userspace/ has a parent")
        .to_owned()
}

/// One object of the manifests and the file it came from.
#[derive(Debug)]
struct Object {
    file: String,
    value: Value,
}

impl Object {
    fn kind(&self) -> String {
        format!(
            "{}/{}",
            self.value["apiVersion"].as_str().unwrap_or("?"),
            self.value["kind"].as_str().unwrap_or("?")
        )
    }

    /// `kind namespace/name`, for messages and as an identity.
    fn id(&self) -> String {
        let meta = &self.value["metadata"];
        format!(
            "{} {}/{}",
            self.kind(),
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or("")
        )
    }
}

/// The YAML documents of `file`, as JSON values; empty documents are skipped.
fn documents(file: &Path) -> Vec<Value> {
    let text =
        fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    yaml_serde::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, doc)| {
            let yaml = yaml_serde::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} document {i}: {e}", file.display()));
            serde_json::to_value(yaml)
                .unwrap_or_else(|e| panic!("{} document {i}: {e}", file.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The `*.yaml` files of `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every object under `dir` (a rendering of the chart): its `*.yaml` and `monitoring/*.yaml`.
fn load(dir: &Path) -> Vec<Object> {
    let mut files = yaml_files(dir);
    files.extend(yaml_files(&dir.join("monitoring")));
    let mut objects = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(dir)
            .unwrap_or(&file)
            .display()
            .to_string();
        for value in documents(&file) {
            objects.push(Object {
                file: name.clone(),
                value,
            });
        }
    }
    objects
}

/// The checked-in plain manifests.
fn manifests() -> Vec<Object> {
    load(&repo().join("deploy/kubernetes"))
}

/// `value` as a `T`, failing on any field `T` does not have: what a strict schema check
/// (kubeconform --strict) catches, such as a misspelt `readOnlyRootFileSystem`.
fn strict<T: DeserializeOwned + Serialize>(value: &Value, id: &str) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{id}: {e}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    if let Some(path) = first_difference(value, &back, String::new()) {
        panic!(
            "{id}: {path} is not a field of {}",
            std::any::type_name::<T>()
        );
    }
    typed
}

/// Where `a` has something `b` lacks or has differently, as a path.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            Some(w) => first_difference(v, w, format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        _ => (a != b).then_some(path),
    }
}

/// The one object of type `T`, parsed strictly.
fn one<T: Resource + DeserializeOwned + Serialize>(objects: &[Object]) -> T {
    let kind = format!("{}/{}", T::API_VERSION, T::KIND);
    let found: Vec<_> = objects.iter().filter(|o| o.kind() == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}: {found:?}");
    strict(&found[0].value, &found[0].id())
}

/// The one object of the untyped `kind` (`apiVersion/kind`).
fn one_untyped<'a>(objects: &'a [Object], kind: &str) -> &'a Value {
    let found: Vec<_> = objects.iter().filter(|o| o.kind() == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    &found[0].value
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .template
        .spec
        .as_ref()
        .expect("the DaemonSet has a pod template spec")
}

fn pod_labels(ds: &DaemonSet) -> BTreeMap<String, String> {
    ds.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("the pod template has labels")
}

/// The agent's container: the only one.
fn agent(ds: &DaemonSet) -> &Container {
    let spec = pod_spec(ds);
    assert_eq!(spec.containers.len(), 1, "one container");
    assert!(spec.init_containers.is_none(), "no init containers");
    &spec.containers[0]
}

fn args(ds: &DaemonSet) -> &[String] {
    agent(ds).args.as_deref().expect("the container has args")
}

/// The `serve` flags of the DaemonSet, parsed by swoll's own CLI as the kubelet would pass them
/// (`$(NODE_NAME)` expanded).
fn serve_args(ds: &DaemonSet) -> ServeArgs {
    let argv = std::iter::once("swoll".to_owned()).chain(args(ds).iter().map(|a| {
        a.replace("$(NODE_NAME)", NODE)
            .replace("$(POD_NAMESPACE)", NAMESPACE)
    }));
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("swoll rejects the args: {e}"));
    #[allow(unreachable_patterns)] // when `serve` is the only subcommand
    match cli.command {
        SwollCommand::Serve(args) => args,
        _ => panic!("the DaemonSet runs a subcommand other than serve"),
    }
}

/// The container port named `metrics`.
fn metrics_port(ds: &DaemonSet) -> i32 {
    let ports = agent(ds).ports.as_deref().unwrap_or_default();
    let found: Vec<_> = ports
        .iter()
        .filter(|p| p.name.as_deref() == Some("metrics"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one container port named metrics: {ports:?}"
    );
    assert_eq!(found[0].protocol.as_deref().unwrap_or("TCP"), "TCP");
    found[0].container_port
}

/// A port as a probe or Service names it, resolved against the container's named ports.
fn resolve(ds: &DaemonSet, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            agent(ds)
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

fn is_subset(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k) == Some(v))
}

#[test]
fn every_object_parses_strictly() {
    let objects = manifests();
    let mut kinds: Vec<_> = objects.iter().map(Object::kind).collect();
    let mut expected: Vec<_> = KINDS.iter().map(|k| k.to_string()).collect();
    kinds.sort();
    expected.sort();
    assert_eq!(kinds, expected);
    for object in &objects {
        let id = object.id();
        match object.kind().as_str() {
            "v1/Namespace" => {
                strict::<Namespace>(&object.value, &id);
            }
            "v1/ServiceAccount" => {
                strict::<ServiceAccount>(&object.value, &id);
            }
            "v1/ConfigMap" => {
                strict::<k8s_openapi::api::core::v1::ConfigMap>(&object.value, &id);
            }
            "rbac.authorization.k8s.io/v1/ClusterRole" => {
                strict::<ClusterRole>(&object.value, &id);
            }
            "apiextensions.k8s.io/v1/CustomResourceDefinition" => {
                strict::<CustomResourceDefinition>(&object.value, &id);
            }
            "rbac.authorization.k8s.io/v1/ClusterRoleBinding" => {
                strict::<ClusterRoleBinding>(&object.value, &id);
            }
            "rbac.authorization.k8s.io/v1/Role" => {
                strict::<Role>(&object.value, &id);
            }
            "rbac.authorization.k8s.io/v1/RoleBinding" => {
                strict::<RoleBinding>(&object.value, &id);
            }
            "apps/v1/DaemonSet" => {
                strict::<DaemonSet>(&object.value, &id);
            }
            "v1/Service" => {
                strict::<Service>(&object.value, &id);
            }
            "networking.k8s.io/v1/NetworkPolicy" => {
                strict::<NetworkPolicy>(&object.value, &id);
            }
            // No k8s-openapi type: the Prometheus operator's CRD. Its own file, applied once
            // the CRDs exist.
            "monitoring.coreos.com/v1/ServiceMonitor" => {
                assert_eq!(object.file, "monitoring/servicemonitor.yaml", "{id}")
            }
            other => panic!("{id}: unexpected kind {other}"),
        }
        let namespace = object.value["metadata"]["namespace"].as_str();
        let cluster_scoped = [
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ]
        .contains(&object.value["kind"].as_str().unwrap_or(""));
        if cluster_scoped {
            assert_eq!(namespace, None, "{id} is cluster-scoped");
        } else {
            assert_eq!(namespace, Some(NAMESPACE), "{id}");
        }
        let labels = &object.value["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "swoll", "{id}");
    }
    let namespace: Namespace = one(&objects);
    assert_eq!(namespace.metadata.name.as_deref(), Some(NAMESPACE));
    let psa = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        psa.get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged"),
        "hostPath volumes and added capabilities need the privileged Pod Security level"
    );
}

#[test]
fn plain_manifests_say_they_are_rendered() {
    let dir = repo().join("deploy/kubernetes");
    let mut files = yaml_files(&dir);
    files.extend(yaml_files(&dir.join("monitoring")));
    for file in files {
        let text = fs::read_to_string(&file).expect("readable");
        assert!(
            text.starts_with("# Generated by deploy/render.sh"),
            "{} is not rendered from the chart: edit deploy/chart and run deploy/render.sh",
            file.display()
        );
    }
}

#[test]
fn daemonset_has_least_privilege() {
    let ds: DaemonSet = one(&manifests());
    let pod = pod_spec(&ds);
    assert_eq!(
        pod.host_pid,
        Some(false),
        "swoll reads /host/proc, not hostPID"
    );
    assert_eq!(pod.host_network, Some(false));
    assert_ne!(pod.host_ipc, Some(true));
    if let Some(sc) = &pod.security_context {
        assert_ne!(
            sc.run_as_non_root,
            Some(true),
            "root is needed for the capabilities"
        );
    }
    let sc = agent(&ds)
        .security_context
        .as_ref()
        .expect("the container has a securityContext");
    assert_eq!(sc.privileged, Some(false), "not privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.run_as_user,
        Some(0),
        "capabilities are granted to root only"
    );
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added: BTreeSet<_> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, CAPABILITIES.into_iter().collect());
    assert_eq!(
        caps.add.as_ref().map(Vec::len),
        Some(CAPABILITIES.len()),
        "no capability twice"
    );
}

#[test]
fn daemonset_mounts_exactly_the_host_paths() {
    let ds: DaemonSet = one(&manifests());
    let volumes: BTreeMap<_, _> = pod_spec(&ds)
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            let host = v
                .host_path
                .as_ref()
                .unwrap_or_else(|| panic!("volume {} is not a hostPath", v.name));
            assert_eq!(host.type_.as_deref(), Some("Directory"), "{}", v.name);
            (v.name.as_str(), host.path.as_str())
        })
        .collect();
    let mounts: BTreeSet<_> = agent(&ds)
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let host = volumes
                .get(m.name.as_str())
                .unwrap_or_else(|| panic!("mount of unknown volume {}", m.name));
            assert!(m.sub_path.is_none(), "{m:?}");
            let propagation = (m.mount_path == PROPAGATED).then_some("HostToContainer");
            assert_eq!(m.mount_propagation.as_deref(), propagation, "{m:?}");
            (*host, m.mount_path.as_str(), m.read_only.unwrap_or(false))
        })
        .collect();
    assert_eq!(mounts, HOST_MOUNTS.into_iter().collect());
    assert_eq!(volumes.len(), HOST_MOUNTS.len(), "no volume left unmounted");
}

#[test]
fn daemonset_args_are_swoll_serve_flags() {
    let ds: DaemonSet = one(&manifests());
    let args = args(&ds);
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    let help = Command::new(env!("CARGO_BIN_EXE_swoll"))
        .args(["serve", "--help"])
        .output()
        .expect("runs swoll serve --help");
    assert!(help.status.success(), "swoll serve --help: {help:?}");
    let help = String::from_utf8(help.stdout).expect("UTF-8 help");
    let known: BTreeSet<_> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--"))
        .collect();
    for arg in &args[1..] {
        assert!(
            arg.starts_with("--"),
            "{arg:?}: write flags as --flag=value"
        );
        let flag = arg.split('=').next().unwrap_or(arg);
        assert!(
            known.contains(flag),
            "{flag} is not a flag of `swoll serve --help`: {known:?}"
        );
    }
}

/// Trace events carry paths, argv and (when allowed) buffers: by default the DaemonSet writes
/// none to its log, which whoever may read the namespace's pod logs reads, and lets no trace
/// capture buffers.
#[test]
fn daemonset_keeps_trace_events_out_of_its_log_and_buffers_off() {
    let serve = serve_args(&one(&manifests()));
    assert!(
        !serve.trace_stdout,
        "--trace-stdout is the operator's choice"
    );
    assert_eq!(serve.max_capture_bytes, 0, "--max-capture-bytes");
}

#[test]
fn daemonset_args_agree_with_the_pod() {
    let ds: DaemonSet = one(&manifests());
    let serve = serve_args(&ds);
    // Listens beyond loopback, on the container port.
    assert!(serve.listen.ip().is_unspecified(), "{}", serve.listen);
    assert_eq!(i32::from(serve.listen.port()), metrics_port(&ds));
    // Reads the mounted host paths.
    let mount_of = |host: &str| {
        HOST_MOUNTS
            .iter()
            .find(|(h, _, _)| *h == host)
            .map(|(_, m, _)| Path::new(m))
            .expect("a host mount")
    };
    assert_eq!(serve.proc_root, mount_of("/proc"));
    // Pins on the host's bpffs, so they outlive the pod: `swoll serve` pins only when told.
    assert!(!serve.no_pin);
    assert!(
        serve
            .pin_path
            .as_deref()
            .is_some_and(|p| p.starts_with(mount_of("/sys/fs/bpf"))),
        "{:?}",
        serve.pin_path
    );
    assert!(
        serve.btf.starts_with(mount_of("/sys/kernel/btf")),
        "{:?}",
        serve.btf
    );
    // The node's pods label the series.
    assert_eq!(serve.node_name.as_deref(), Some(NODE));
    // `$(VAR)` expands only to the container's own env.
    let env: BTreeSet<_> = agent(&ds)
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    for arg in args(&ds) {
        for var in arg.split("$(").skip(1) {
            let var = var.split(')').next().unwrap_or(var);
            assert!(env.contains(var), "{arg} refers to ${var}, not in the env");
        }
    }
}

#[test]
fn the_traces_configmap_is_the_agents_and_its_specs_parse() {
    let objects = manifests();
    let ds: DaemonSet = one(&objects);
    let cm: k8s_openapi::api::core::v1::ConfigMap = one(&objects);
    let want = format!(
        "{}/{}",
        cm.metadata.namespace.as_deref().unwrap_or_default(),
        cm.metadata.name.as_deref().unwrap_or_default()
    );
    let serve = serve_args(&ds);
    assert_eq!(serve.trace_configmap.as_deref(), Some(want.as_str()));
    assert!(
        serve.traces_listen.ip().is_loopback(),
        "trace streams on loopback"
    );
    let (traces, errors) = swoll::trace::spec::parse_configmap(
        &cm.data.unwrap_or_default(),
        serve.allow_cluster_wide_traces,
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!traces.is_empty());
    let env = agent(&ds)
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAMESPACE");
    let field = env
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .expect("POD_NAMESPACE from a fieldRef");
    assert_eq!(field.field_path, "metadata.namespace");
}

#[test]
fn node_name_comes_from_the_downward_api() {
    let ds: DaemonSet = one(&manifests());
    let env: Vec<_> = agent(&ds)
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == "NODE_NAME")
        .collect();
    assert_eq!(env.len(), 1, "NODE_NAME once");
    assert_eq!(env[0].value, None);
    let field = env[0]
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME from a fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");
}

#[test]
fn selectors_match_the_pods() {
    let objects = manifests();
    let ds: DaemonSet = one(&objects);
    let labels = pod_labels(&ds);
    let selector = &ds.spec.selector;
    assert!(selector.match_expressions.is_none());
    let selector = selector.match_labels.clone().unwrap_or_default();
    assert!(!selector.is_empty() && is_subset(&selector, &labels));

    let service: Service = one(&objects);
    let service_selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .expect("the Service selects pods");
    assert!(
        is_subset(&service_selector, &labels),
        "{service_selector:?}"
    );

    let policy: NetworkPolicy = one(&objects);
    let policy_selector = policy
        .spec
        .as_ref()
        .and_then(|s| s.pod_selector.as_ref())
        .and_then(|s| s.match_labels.clone())
        .expect("the NetworkPolicy selects pods");
    assert!(is_subset(&policy_selector, &labels), "{policy_selector:?}");

    assert_eq!(
        pod_spec(&ds).service_account_name,
        one::<ServiceAccount>(&objects).metadata.name
    );
}

#[test]
fn ports_and_probes_agree() {
    let objects = manifests();
    let ds: DaemonSet = one(&objects);
    let port = metrics_port(&ds);
    assert_eq!(port, 9095);
    let container = agent(&ds);
    for (probe, path) in [
        (&container.liveness_probe, "/healthz"),
        (&container.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("an httpGet probe of {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(resolve(&ds, &get.port), port, "{path}");
        assert_eq!(get.scheme.as_deref().unwrap_or("HTTP"), "HTTP");
    }

    let service: Service = one(&objects);
    let spec = service.spec.expect("Service spec");
    let ports = spec.ports.expect("Service ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("metrics"));
    let target = ports[0]
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(ports[0].port));
    assert_eq!(resolve(&ds, &target), port);

    let policy: NetworkPolicy = one(&objects);
    let spec = policy.spec.expect("NetworkPolicy spec");
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    let rules = spec.ingress.expect("ingress rules");
    assert_eq!(rules.len(), 1, "one ingress rule");
    let allowed: Vec<_> = rules[0]
        .ports
        .iter()
        .flatten()
        .map(|p| {
            assert_eq!(p.protocol.as_deref().unwrap_or("TCP"), "TCP");
            assert!(p.end_port.is_none());
            resolve(&ds, p.port.as_ref().expect("a port"))
        })
        .collect();
    assert_eq!(allowed, [port], "ingress to the metrics port only");

    let annotations = ds
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    if let Some(p) = annotations.get("prometheus.io/port") {
        assert_eq!(p, &port.to_string());
    }
}

#[test]
fn tolerates_every_taint() {
    let ds: DaemonSet = one(&manifests());
    let tolerations = pod_spec(&ds).tolerations.clone().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "{tolerations:?}"
    );
}

/// `rules` grant exactly get, list and watch on the core group's `resource`.
fn assert_read_only(rules: &[PolicyRule], resource: &str) {
    assert_eq!(rules.len(), 1, "one rule: {rules:?}");
    assert_rule(&rules[0], "", resource, &["get", "list", "watch"]);
}

/// `rule` grants exactly `verbs` on `resource` of API group `group`.
fn assert_rule(rule: &PolicyRule, group: &str, resource: &str, verbs: &[&str]) {
    assert_eq!(rule.api_groups, Some(vec![group.to_owned()]), "{rule:?}");
    assert_eq!(rule.resources, Some(vec![resource.to_owned()]), "{rule:?}");
    assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
    let got: BTreeSet<_> = rule.verbs.iter().map(String::as_str).collect();
    assert_eq!(got, verbs.iter().copied().collect(), "{rule:?}");
    assert_eq!(rule.verbs.len(), verbs.len());
}

/// The ClusterRoles, by name.
fn cluster_roles(objects: &[Object]) -> BTreeMap<String, ClusterRole> {
    objects
        .iter()
        .filter(|o| o.kind() == "rbac.authorization.k8s.io/v1/ClusterRole")
        .map(|o| {
            let role: ClusterRole = strict(&o.value, &o.id());
            (role.metadata.name.clone().unwrap_or_default(), role)
        })
        .collect()
}

/// Namespace edit and admin users may create Traces, view users read them: swoll's roles are
/// aggregated into the built-in ones, and grant Traces only (never their status, which the
/// agents write).
#[test]
fn namespace_editors_may_create_traces() {
    let roles = cluster_roles(&manifests());
    let edit = &roles["swoll-traces-edit"];
    let labels = edit.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    let rules = edit.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let verbs = [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];
    assert_rule(&rules[0], "tools.swoll.criticalstack.com", "traces", &verbs);
    let view = &roles["swoll-traces-view"];
    let labels = view.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    let rules = view.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_rule(
        &rules[0],
        "tools.swoll.criticalstack.com",
        "traces",
        &["get", "list", "watch"],
    );
}

#[test]
fn rbac_grants_exactly_what_the_agent_needs() {
    let objects = manifests();
    let account: ServiceAccount = one(&objects);
    let account = (account.metadata.name, account.metadata.namespace);

    let cluster_role = cluster_roles(&objects)
        .remove("swoll")
        .expect("the agent's ClusterRole");
    assert!(cluster_role.aggregation_rule.is_none());
    let rules = cluster_role.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 3, "pods, traces, traces/status: {rules:?}");
    assert_read_only(&rules[..1], "pods");
    let group = "tools.swoll.criticalstack.com";
    assert_rule(&rules[1], group, "traces", &["get", "list", "watch"]);
    assert_rule(&rules[2], group, "traces/status", &["patch"]);
    let role: Role = one(&objects);
    let rules = role.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_read_only(&rules[..1], "configmaps");
    // Patch of the traces ConfigMap alone: its annotation records the traces' starts.
    let named = PolicyRule {
        resource_names: None,
        ..rules[1].clone()
    };
    assert_rule(&named, "", "configmaps", &["patch"]);
    assert_eq!(
        rules[1].resource_names,
        Some(vec!["swoll-traces".to_owned()]),
        "{rules:?}"
    );

    let binds = |role_ref: &RoleRef, subjects: Option<&Vec<_>>, kind: &str, name: &Option<_>| {
        assert_eq!(
            role_ref.api_group.as_deref(),
            Some("rbac.authorization.k8s.io")
        );
        assert_eq!(role_ref.kind, kind);
        assert_eq!(Some(&role_ref.name), name.as_ref());
        let subjects: Vec<&k8s_openapi::api::rbac::v1::Subject> =
            subjects.into_iter().flatten().collect();
        assert_eq!(subjects.len(), 1, "one subject");
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(
            (
                Some(subjects[0].name.clone()),
                subjects[0].namespace.clone()
            ),
            account
        );
    };
    let binding: ClusterRoleBinding = one(&objects);
    binds(
        &binding.role_ref,
        binding.subjects.as_ref(),
        "ClusterRole",
        &cluster_role.metadata.name,
    );
    let binding: RoleBinding = one(&objects);
    binds(
        &binding.role_ref,
        binding.subjects.as_ref(),
        "Role",
        &role.metadata.name,
    );
    assert_eq!(binding.metadata.namespace, role.metadata.namespace);
}

#[test]
fn service_monitor_scrapes_the_service() {
    let objects = manifests();
    let monitor = one_untyped(&objects, "monitoring.coreos.com/v1/ServiceMonitor");
    let service: Service = one(&objects);
    let service_labels = service.metadata.labels.clone().unwrap_or_default();

    let selector: BTreeMap<String, String> =
        serde_json::from_value(monitor["spec"]["selector"]["matchLabels"].clone())
            .expect("spec.selector.matchLabels");
    assert!(!selector.is_empty() && is_subset(&selector, &service_labels));
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!([service.metadata.namespace])
    );
    let endpoints = monitor["spec"]["endpoints"]
        .as_array()
        .expect("spec.endpoints");
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    let port_names: Vec<_> = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.name.clone())
        .collect();
    assert_eq!(
        endpoint["port"].as_str(),
        port_names.first().map(String::as_str)
    );
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        endpoint["honorLabels"], true,
        "namespace/pod/container are the workload's"
    );
    assert_eq!(endpoint["interval"], "15s");
}

/// The `expr`s of every panel, rows included.
fn panel_exprs(panels: &Value, out: &mut Vec<String>) {
    for panel in panels.as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("a target expr").to_owned());
        }
        panel_exprs(&panel["panels"], out);
    }
}

#[test]
fn dashboard_queries_are_swoll_queries() {
    let dir = repo().join("deploy/grafana");
    let text = fs::read_to_string(dir.join("swoll.json")).expect("swoll.json");
    let dashboard: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(dashboard["uid"], "swoll");
    assert_eq!(dashboard["title"], "swoll");

    let variables: BTreeMap<_, _> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("named"), v))
        .collect();
    assert_eq!(variables["datasource"]["type"], "datasource");
    assert_eq!(variables["datasource"]["query"], "prometheus");
    for name in ["namespace", "pod", "container", "class", "group"] {
        let v = variables
            .get(name)
            .unwrap_or_else(|| panic!("no ${name} variable"));
        let query = v["query"].as_str().expect("a string query");
        assert!(
            query.starts_with("label_values(swoll_node_metrics_syscall_count")
                && query.ends_with(&format!(", {name})")),
            "${name}: {query}"
        );
        // "All" must match the empty labels of host processes too.
        assert_eq!(v["allValue"], ".*", "${name}");
    }

    let mut exprs = Vec::new();
    panel_exprs(&dashboard["panels"], &mut exprs);
    assert!(!exprs.is_empty());
    for expr in &exprs {
        assert!(expr.contains("swoll_"), "{expr} reads no swoll metric");
        assert!(!expr.contains('\n'), "{expr}: one line, for queries.txt");
    }
    let queries = fs::read_to_string(dir.join("queries.txt")).expect("queries.txt");
    let queries: Vec<_> = queries.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        queries, exprs,
        "deploy/grafana/queries.txt lists every panel's expr, in order"
    );
}

#[test]
fn chart_templates_refer_to_defined_values() {
    let chart = repo().join("deploy/chart");
    let values: Value = documents(&chart.join("values.yaml"))
        .into_iter()
        .next()
        .expect("values.yaml");
    for file in fs::read_dir(chart.join("templates")).expect("templates/") {
        let file = file.expect("entry").path();
        let text = fs::read_to_string(&file).expect("readable");
        let name = file.display();
        assert_eq!(
            text.matches("{{").count(),
            text.matches("}}").count(),
            "{name}: unbalanced braces"
        );
        // Not a template engine: every `.Values.a.b` is looked up in values.yaml, so a typo
        // or a value removed from values.yaml fails here even where Helm is not installed.
        for (i, _) in text.match_indices(".Values.") {
            let path: String = text[i + ".Values.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                .collect();
            let found = path.split('.').try_fold(&values, |node, key| node.get(key));
            assert!(
                found.is_some(),
                "{name}: .Values.{path} is not in values.yaml"
            );
        }
    }
}

#[test]
fn chart_renders_the_plain_manifests() {
    let out = std::env::temp_dir().join(format!("swoll-deploy-{}", std::process::id()));
    let status = Command::new("bash")
        .arg(repo().join("deploy/render.sh"))
        .arg(&out)
        .status()
        .expect("runs deploy/render.sh");
    if status.code() == Some(3) {
        let msg = "no Helm here (deploy/render.sh said why): the chart is not compared";
        assert!(std::env::var_os("SWOLL_REQUIRE_HELM").is_none(), "{msg}");
        eprintln!("skipping: {msg}");
        return;
    }
    assert!(status.success(), "deploy/render.sh: {status}");
    let index = |objects: Vec<Object>| -> BTreeMap<String, (String, Value)> {
        let mut index = BTreeMap::new();
        for o in objects {
            let id = o.id();
            assert!(
                index.insert(id.clone(), (o.file, o.value)).is_none(),
                "{id} twice"
            );
        }
        index
    };
    let rendered = index(load(&out));
    let checked_in = index(manifests());
    let _ = fs::remove_dir_all(&out);
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        checked_in.keys().collect::<Vec<_>>(),
        "run deploy/render.sh"
    );
    for (id, (file, value)) in &checked_in {
        assert_eq!(
            (file, value),
            (&rendered[id].0, &rendered[id].1),
            "{id} differs from the chart's rendering: run deploy/render.sh"
        );
    }
}
