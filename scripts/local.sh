#!/usr/bin/env bash
# Sets up, builds and runs swoll in local mode: every syscall on this host counted and timed in
# the kernel, Prometheus metrics on http://127.0.0.1:9095/metrics. Needs root (CAP_BPF and
# CAP_PERFMON). Extra arguments go to `swoll serve` (see `swoll serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
# The agent pins its probes under /sys/fs/bpf (they keep counting across restarts); systemd
# mounts the BPF filesystem there, minimal hosts and containers may not.
if ! mountpoint -q /sys/fs/bpf; then
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
fi
exec target/release/swoll serve "$@"
