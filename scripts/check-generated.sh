#!/usr/bin/env bash
# Fails if the generated syscall tables (userspace/src/syscalls/table_*.rs) are not what
# gen-syscalls makes from the pinned inputs in userspace/syscalls/, and shows the difference.
# The generator is std-only, so it is built with plain rustc: no eBPF build, no dependencies.
# Fix a failure with: cargo run -p swoll --bin gen-syscalls
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rustc --edition 2024 -O -o "$tmp/gen-syscalls" userspace/src/bin/gen-syscalls.rs
"$tmp/gen-syscalls" --root userspace --out-dir "$tmp"
status=0
for arch in x86_64 aarch64; do
	git diff --no-index --exit-code -- "userspace/src/syscalls/table_$arch.rs" "$tmp/table_$arch.rs" || status=1
done
((status == 0)) || echo "check-generated: stale tables; regenerate with: cargo run -p swoll --bin gen-syscalls" >&2
exit $status
