#!/usr/bin/env bash
# Sets up, builds and runs swoll in local mode: every syscall on this host counted and timed in
# the kernel, Prometheus metrics on http://127.0.0.1:9095/metrics. Needs root (CAP_BPF and
# CAP_PERFMON). Extra arguments go to `swoll serve` (see `swoll serve --help`).
#
# Nothing is pinned: the probes are detached when the agent stops (Ctrl-C), so nothing stays
# attached to the host's syscalls. `--pin-path DIR` (on a mounted bpffs) keeps them counting
# across restarts instead, until `swoll unpin --pin-path DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
exec target/release/swoll serve "$@"
