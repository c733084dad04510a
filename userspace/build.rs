//! Builds the probes crate for `bpfel-unknown-none` and leaves the object in `OUT_DIR`, so one
//! `cargo build` produces a `swoll` binary with its eBPF programs embedded. Copies echarts into
//! `OUT_DIR` too, for the `/metrics/charts` page (`src/charts.rs`) to embed.
//!
//! aya-build prints the nested build's compiler output as `cargo:warning` lines: an eBPF compile
//! error shows up there.
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use aya_build::{Package, Toolchain};

/// The echarts version `scripts/setup.sh` fetches from npm (`echarts_version` there; a unit test
/// in `src/charts.rs` checks the two agree).
const ECHARTS_VERSION: &str = "6.1.0";

fn main() -> anyhow::Result<()> {
    echarts()?;
    let probes = concat!(env!("CARGO_MANIFEST_DIR"), "/../probes");
    aya_build::build_ebpf(
        [Package {
            name: "swoll-probes",
            root_dir: probes,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

/// Copies `echarts.min.js` to `OUT_DIR`: from `$SWOLL_ECHARTS` if set, else from where
/// `scripts/setup.sh` unpacks the pinned npm package. A missing copy fails the build with what
/// to run, so no binary ships a charts page without its chart by accident;
/// `SWOLL_ECHARTS=none` builds without it on purpose (the page then shows its tables only).
fn echarts() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SWOLL_ECHARTS");
    println!("cargo:rustc-env=SWOLL_ECHARTS_VERSION={ECHARTS_VERSION}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR is not set")?)
        .join("echarts.min.js");
    let src = match std::env::var_os("SWOLL_ECHARTS") {
        Some(v) if v == "none" => {
            println!(
                "cargo:warning=SWOLL_ECHARTS=none: /metrics/charts will show its tables without the Sankey"
            );
            std::fs::write(&out, b"").context("writing an empty echarts.min.js")?;
            return Ok(());
        }
        Some(path) => PathBuf::from(path),
        None => {
            println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");
            println!("cargo:rerun-if-env-changed=HOME");
            let cache = match std::env::var_os("XDG_CACHE_HOME") {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
            };
            cache.join(format!(
                "swoll/echarts-{ECHARTS_VERSION}/dist/echarts.min.js"
            ))
        }
    };
    let js = std::fs::read(&src).with_context(|| {
        format!(
            "reading {} (echarts {ECHARTS_VERSION} for /metrics/charts): run scripts/setup.sh, \
             which fetches it from npm; or set SWOLL_ECHARTS to another echarts.min.js, or to \
             `none` to build without the chart",
            src.display()
        )
    })?;
    println!("cargo:rerun-if-changed={}", src.display());
    let stamp = format!("version=\"{ECHARTS_VERSION}\"");
    if !js.windows(stamp.len()).any(|w| w == stamp.as_bytes()) {
        bail!(
            "{} is not echarts {ECHARTS_VERSION} (no `{stamp}` in it): run scripts/setup.sh",
            src.display()
        );
    }
    std::fs::write(&out, js).with_context(|| format!("writing {}", out.display()))
}
