#!/usr/bin/env bash
# Sets up and runs swoll's whole test suite: formatting, lints, unit tests, and the kernel tests
# that load the real probes into this kernel (root needed; under CI=true they must run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*" >&2; }

step "format"
cargo fmt --all --check

step "generated tables are up to date"
scripts/check-generated.sh

step "clippy (userspace, schema, tests)"
cargo clippy --locked --workspace --exclude swoll-probes --all-targets -- -D warnings
step "clippy (probes, for bpfel-unknown-none)"
(cd probes && cargo +nightly clippy --locked --target bpfel-unknown-none -Z build-std=core -- -D warnings)

step "build"
cargo build --locked --release

step "unit and kernel tests"
if [[ $(id -u) != 0 ]]; then
	echo "not root: the kernel tests will skip (CI runs them as root)" >&2
fi
cargo test --locked --release --workspace --exclude swoll-probes
