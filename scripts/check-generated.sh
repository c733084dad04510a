#!/usr/bin/env bash
# Fails if the generated syscall tables (decode/src/syscalls/table_*.rs) are not what
# `cargo xtask gen-syscalls` makes from the pinned inputs in decode/syscalls/, and shows the
# difference. xtask is std-only, so it is built with plain rustc: no eBPF build, no dependencies.
# Fix a failure with: cargo xtask gen-syscalls
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rustc --edition 2024 -O -o "$tmp/xtask" xtask/src/main.rs
"$tmp/xtask" gen-syscalls --root decode --out-dir "$tmp"
status=0
for arch in x86_64 aarch64; do
	git diff --no-index --exit-code -- "decode/src/syscalls/table_$arch.rs" "$tmp/table_$arch.rs" || status=1
done
((status == 0)) || echo "check-generated: stale tables; regenerate with: cargo xtask gen-syscalls" >&2
exit $status
