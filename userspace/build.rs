//! Builds the probes crate for `bpfel-unknown-none` and leaves the object in `OUT_DIR`, so one
//! `cargo build` produces a `swoll` binary with its eBPF programs embedded.
//!
//! aya-build prints the nested build's compiler output as `cargo:warning` lines: an eBPF compile
//! error shows up there.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
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
