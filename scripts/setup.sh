#!/usr/bin/env bash
# Installs everything swoll needs to build and test, and skips what is already there.
#
# Idempotent: a second run on a prepared machine takes a few seconds. Called by the README's
# commands and by .ci/run, so nothing installed by hand is ever needed.
#
#   scripts/setup.sh            build toolchain (Rust nightly + rust-src, LLVM 22, bpf-linker)
#                               and echarts for the /metrics/charts page
#   scripts/setup.sh --cross    plus the toolchain that builds for the image's other platform
#                               (aarch64 on x86_64, x86_64 on aarch64)
#   scripts/setup.sh --test     plus --cross and what the test suite runs against (prometheus,
#                               bpftool, QEMU and virtme-ng for the other kernels, Chromium and
#                               playwright-core for the charts page, cargo-fuzz)
#   scripts/setup.sh --bench    plus the benchmark's peers (bpftrace, bcc, clang, libbpf)
set -euo pipefail

want_test=0 want_bench=0 want_cross=0
for arg in "$@"; do
	case "$arg" in
	--test) want_test=1 want_cross=1 ;;
	--cross) want_cross=1 ;;
	--bench) want_bench=1 ;;
	*) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
	esac
done

log() { printf 'setup: %s\n' "$*" >&2; }

export PATH="$HOME/.cargo/bin:$PATH"

# apt-get with one retry: a transient "rename failed" has been seen on these machines.
apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	log "apt-get install ${missing[*]}"
	if [[ ! -f /var/lib/apt/periodic/swoll-updated ]] || ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
		apt-get update -qq || { sleep 5; apt-get update -qq; }
		mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/swoll-updated
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
		{ sleep 5; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
}

command -v rustup >/dev/null || { log "rustup is required (it is on every machine of this kind)"; exit 1; }

# The probes build with nightly's -Z build-std=core for bpfel-unknown-none.
if ! rustup toolchain list | grep -q '^nightly'; then
	log "rustup toolchain install nightly"
	rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --installed --toolchain nightly | grep -q '^rust-src'; then
	log "rustup component add rust-src --toolchain nightly"
	rustup component add rust-src --toolchain nightly
fi

# bpf-linker links the probes; it needs LLVM 22 (Debian's llvm-config is LLVM 14).
apt_install llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
if ! bpf-linker --version >/dev/null 2>&1; then
	log "cargo install bpf-linker (about 75 s)"
	LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --locked \
		--no-default-features --features llvm-22
fi

# echarts, which userspace/build.rs embeds into the binary for the /metrics/charts page (served by
# swoll itself, no CDN): the npm package's tarball at a pinned version, checked against the
# integrity the registry recorded for it, and only its dist/echarts.min.js kept. Keep the version
# in step with ECHARTS_VERSION in userspace/build.rs (a unit test compares them).
# SWOLL_ECHARTS=<file> makes build.rs embed another copy instead, SWOLL_ECHARTS=none none.
echarts_version=6.1.0
echarts_integrity=sha512-q0yaFPggC9FUdsWH4blavRWFmxdrIodbkoKNAjJudAI6CA9gNPxHtV2RcZNEepZVlk4yvBYkOkbk6HIVpIyHZA==
echarts_dir=${XDG_CACHE_HOME:-$HOME/.cache}/swoll/echarts-$echarts_version
if [[ -z ${SWOLL_ECHARTS:-} && $(cat "$echarts_dir/integrity" 2>/dev/null) != "$echarts_integrity" ]]; then
	command -v npm >/dev/null || apt_install npm
	log "npm pack echarts@$echarts_version into $echarts_dir"
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "echarts@$echarts_version" >/dev/null)
	got=$(node -e 'const c = require("crypto"), fs = require("fs");
		process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' \
		"$tmp/echarts-$echarts_version.tgz")
	if [[ $got != "$echarts_integrity" ]]; then
		log "echarts-$echarts_version.tgz has integrity $got, not the pinned $echarts_integrity"
		exit 1
	fi
	tar -xzmf "$tmp/echarts-$echarts_version.tgz" -C "$tmp" \
		package/dist/echarts.min.js package/package.json package/LICENSE package/NOTICE
	rm -rf "$echarts_dir"
	mkdir -p "$(dirname "$echarts_dir")"
	mv "$tmp/package" "$echarts_dir"
	echo "$echarts_integrity" >"$echarts_dir/integrity"
	rm -rf "$tmp"
fi

# The other image platform's toolchain (scripts/image-binary.sh; scripts/arm64.sh cross-builds
# the kernel tests with it too): Rust's std for the target, Debian's cross gcc as the linker and
# the target's libc to link against.
if ((want_cross)); then
	case $(uname -m) in
	x86_64) cross=aarch64-unknown-linux-gnu debs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
	aarch64) cross=x86_64-unknown-linux-gnu debs=(gcc-x86-64-linux-gnu libc6-dev-amd64-cross) ;;
	*) log "--cross: no cross toolchain for $(uname -m)"; exit 1 ;;
	esac
	if ! rustup target list --installed | grep -qx "$cross"; then
		log "rustup target add $cross"
		rustup target add "$cross"
	fi
	apt_install "${debs[@]}"
fi
if ((want_test)); then
	apt_install prometheus bpftool python3-venv tmux
	# tests/kernel/tests/runtime.rs runs workloads and the agent itself in real containers: podman
	# with runc (crun refuses the hybrid cgroup layout some machines have), and busybox-static for
	# the workload image, which is built locally (no registry is used).
	apt_install podman runc busybox-static
	# scripts/fuzz.sh builds and runs fuzz/ with cargo-fuzz (on the nightly installed above).
	if ! cargo fuzz --version >/dev/null 2>&1; then
		log "cargo install cargo-fuzz (about 30 s)"
		cargo install cargo-fuzz --locked
	fi
	"$(dirname "$0")/setup-vm.sh"
	# Helm's own template engine (Helm's Go SDK as a library, from PyPI: no helm binary can be
	# had here), so tests compare the chart's rendering with deploy/kubernetes/.
	helm_venv=${SWOLL_HELM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/swoll/helm-venv}
	if ! "$helm_venv/bin/python" -c 'import helm_python' 2>/dev/null; then
		log "pip install helm-python-sdk into $helm_venv"
		python3 -m venv "$helm_venv"
		"$helm_venv/bin/pip" install --quiet --disable-pip-version-check helm-python-sdk==0.2.2
	fi
	# tests/kernel/tests/charts.rs loads /metrics/charts in Debian's Chromium, driven by
	# playwright-core (pinned in tests/kernel/charts/package-lock.json; it downloads no browser).
	apt_install chromium
	command -v npm >/dev/null || apt_install npm
	charts_dir=$(cd "$(dirname "$0")/../tests/kernel/charts" && pwd)
	if ! (cd "$charts_dir" && node -e 'const want = require("./package-lock.json").packages["node_modules/playwright-core"].version;
		process.exit(require("playwright-core/package.json").version === want ? 0 : 1)') 2>/dev/null; then
		log "npm ci in $charts_dir (playwright-core)"
		(cd "$charts_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)
	fi
fi
if ((want_bench)); then
	apt_install bpftrace bpftool bpfcc-tools linux-perf clang-19 libbpf-dev linux-headers-amd64 gcc make
fi
log "ready"
