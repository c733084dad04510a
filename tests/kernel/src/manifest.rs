//! What the shipped DaemonSet gives the agent, read from `deploy/kubernetes/daemonset.yaml`.
//!
//! Tests that start an agent run it with exactly these privileges, mounts and namespaces (see
//! [`crate::deployed`] and the real-runtime tests), so a change to the manifest changes what the
//! tests run with, and a guarantee the tests show holds for the agent users deploy.
use std::path::{Path, PathBuf};

/// The agent container of the DaemonSet, as far as the tests reproduce it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// `securityContext.capabilities.add`, upper case without `CAP_` (`BPF`, `PERFMON`, …).
    pub capabilities_add: Vec<String>,
    /// `securityContext.capabilities.drop` (`ALL`).
    pub capabilities_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false`: the agent runs with `no_new_privs`.
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// `runAsUser` (0 when absent).
    pub run_as_user: u32,
    /// `seccompProfile.type` (`Unconfined`, `RuntimeDefault`, `Localhost`).
    pub seccomp: String,
    /// `appArmorProfile.type`, if set.
    pub apparmor: Option<String>,
    /// `hostPID`: false means a pid namespace of the pod's own.
    pub host_pid: bool,
    /// `hostNetwork`.
    pub host_network: bool,
    /// The container's volume mounts, each with the host path of its `hostPath` volume.
    pub mounts: Vec<Mount>,
    /// The container's `args`, `$(VAR)` references left as written.
    pub args: Vec<String>,
    /// `resources.limits.memory` in bytes: the pod's memory cgroup limit, which the kernel
    /// also charges BPF maps to (Linux 5.11+).
    pub memory_limit: Option<u64>,
}

/// One `volumeMount` of a `hostPath` volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The volume's name.
    pub name: String,
    /// `hostPath.path`.
    pub host_path: PathBuf,
    /// `mountPath` in the container.
    pub mount_path: PathBuf,
    /// `readOnly`.
    pub read_only: bool,
}

impl Deployment {
    /// The capabilities the agent holds: `add`, lower case, as `setpriv` and `podman` take them.
    /// The manifest must drop `ALL` first (a test harness cannot reproduce a runtime's default
    /// set otherwise).
    pub fn capabilities(&self) -> Vec<String> {
        assert_eq!(
            self.capabilities_drop,
            ["ALL"],
            "the DaemonSet drops ALL capabilities before adding its own"
        );
        self.capabilities_add
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect()
    }

    /// The value of argument `--name=value` (or `--name value`) in the manifest's `args`.
    pub fn arg(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        self.args.iter().enumerate().find_map(|(i, a)| {
            if let Some(v) = a.strip_prefix(&flag).and_then(|r| r.strip_prefix('=')) {
                Some(v)
            } else if *a == flag {
                self.args.get(i + 1).map(String::as_str)
            } else {
                None
            }
        })
    }

    /// The mount whose `mountPath` is `path`.
    pub fn mount(&self, path: &str) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.mount_path == Path::new(path))
    }
}

/// The repository's root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The shipped DaemonSet, parsed once.
pub fn daemonset() -> &'static Deployment {
    static PARSED: std::sync::OnceLock<Deployment> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| parse_file(&repo_root().join("deploy/kubernetes/daemonset.yaml")))
}

/// The DaemonSet as the chart renders it with `sets` (`key=value`, as `helm install --set`
/// takes them), through `deploy/render.sh`: for a test of an option that changes the manifest
/// (e.g. `bpfStats=true`, which adds a capability). `Err` says why it cannot be rendered here
/// (no Helm).
pub fn rendered_with(sets: &[&str]) -> Result<Deployment, String> {
    let dir = crate::TempDir::new("swoll-render");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo_root().join("deploy/render.sh"));
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd
        .arg(&dir.0)
        .output()
        .map_err(|e| format!("running deploy/render.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "deploy/render.sh --set {sets:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(parse_file(&dir.0.join("daemonset.yaml")))
}

/// Parses the DaemonSet manifest at `path`, panicking with the path on failure.
fn parse_file(path: &Path) -> Deployment {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a DaemonSet manifest (the first document that is one) for its first container.
pub fn parse(text: &str) -> Result<Deployment, String> {
    use yaml_serde::Value;
    let docs: Vec<Value> = text
        .split("\n---")
        .filter(|d| !d.trim().is_empty())
        .map(yaml_serde::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .ok_or("no DaemonSet in the manifest")?;
    let pod = &ds["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let volumes = pod["volumes"].as_sequence().ok_or("no volumes")?;
    let host_path = |name: &str| -> Option<PathBuf> {
        volumes.iter().find(|v| v["name"].as_str() == Some(name))?["hostPath"]["path"]
            .as_str()
            .map(PathBuf::from)
    };
    let mut mounts = Vec::new();
    for m in container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let name = m["name"].as_str().ok_or("a volumeMount without name")?;
        mounts.push(Mount {
            name: name.to_owned(),
            host_path: host_path(name)
                .ok_or_else(|| format!("volume {name} is not a hostPath volume"))?,
            mount_path: PathBuf::from(m["mountPath"].as_str().ok_or("a mount without path")?),
            read_only: m["readOnly"].as_bool().unwrap_or(false),
        });
    }
    Ok(Deployment {
        capabilities_add: strings(&sc["capabilities"]["add"]),
        capabilities_drop: strings(&sc["capabilities"]["drop"]),
        no_new_privs: sc["allowPrivilegeEscalation"].as_bool() == Some(false),
        read_only_root: sc["readOnlyRootFilesystem"].as_bool() == Some(true),
        run_as_user: sc["runAsUser"]
            .as_u64()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(0),
        seccomp: sc["seccompProfile"]["type"]
            .as_str()
            .unwrap_or("RuntimeDefault")
            .to_owned(),
        apparmor: sc["appArmorProfile"]["type"].as_str().map(str::to_owned),
        host_pid: pod["hostPID"].as_bool() == Some(true),
        host_network: pod["hostNetwork"].as_bool() == Some(true),
        mounts,
        args: strings(&container["args"]),
        memory_limit: match &container["resources"]["limits"]["memory"] {
            Value::Null => None,
            v => Some(quantity(v).ok_or_else(|| format!("memory limit {v:?}"))?),
        },
    })
}

/// A Kubernetes memory quantity in bytes (`256Mi`, `1G`, `1048576`): the suffixes a memory
/// limit is written with.
fn quantity(v: &yaml_serde::Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?;
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let scale: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        let q = |s: &str| quantity(&yaml_serde::Value::String(s.into()));
        assert_eq!(q("256Mi"), Some(256 << 20));
        assert_eq!(q("1G"), Some(1_000_000_000));
        assert_eq!(q("4096"), Some(4096));
        assert_eq!(q("1.5Gi"), None);
    }

    #[test]
    fn the_shipped_daemonset_parses() {
        let d = daemonset();
        assert!(d.capabilities().contains(&"bpf".to_owned()), "{d:?}");
        assert!(d.mount("/host/proc").is_some_and(|m| m.read_only), "{d:?}");
        assert!(d.arg("pin-path").is_some(), "{d:?}");
        assert!(d.memory_limit.is_some(), "{d:?}");
    }
}
