#!/usr/bin/env bash
# Builds the release `swoll` that the image ships, for one of the image's platforms, and installs
# it at OUT. The Dockerfile's build stage runs this (on the build machine's own platform, so an
# arm64 image is cross-compiled rather than built under emulation), and scripts/test.sh runs it
# for both platforms, so a change that breaks either image's build fails the suite without Docker.
#
#   scripts/image-binary.sh amd64|arm64 OUT      (Docker's TARGETARCH names)
#
# A platform other than this machine's is cross-compiled: Rust's std for the target (rustup) and
# Debian's cross gcc as the linker, both installed by `scripts/setup.sh --cross`.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# == 2)) || { echo "usage: $0 amd64|arm64 OUT" >&2; exit 2; }
arch=$1 out=$2
case $arch in
amd64) triple=x86_64-unknown-linux-gnu gcc=x86_64-linux-gnu-gcc machine=62 ;;
arm64) triple=aarch64-unknown-linux-gnu gcc=aarch64-linux-gnu-gcc machine=183 ;;
*) echo "image-binary: $arch: the image is built for amd64 and arm64" >&2; exit 2 ;;
esac
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
if [[ $(uname -m) == "${triple%%-*}" ]]; then
	# The native build, the command scripts/test.sh builds with (no rebuild there).
	cargo build --release --locked
	bin=target/release/swoll
else
	# CARGO_TARGET_<TRIPLE>_LINKER: cargo links the target's binaries with the cross gcc.
	var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$triple")_LINKER
	export "$var=$gcc"
	cargo build --release --locked --target "$triple"
	bin=target/$triple/release/swoll
fi
# The ELF header's e_machine (bytes 18-19): 62 is x86-64, 183 is AArch64.
got=$(od -An -tu2 -j18 -N2 "$bin" | tr -d ' ')
[[ $got == "$machine" ]] || { echo "image-binary: $bin has e_machine $got, not $machine ($arch)" >&2; exit 1; }
install -D -m 0755 "$bin" "$out"
