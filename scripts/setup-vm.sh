#!/usr/bin/env bash
# Installs what scripts/multikernel.sh needs to boot other Linux kernels in QEMU, and skips what
# is already there (a second run takes a few seconds):
#
#   - qemu-system-x86 and qemu-system-arm (for scripts/arm64.sh), on Debian bookworm from
#     bookworm-backports: bookworm's own QEMU 7.2 "Breaks" the image's qemu-utils 10.0.2 (from
#     backports), so apt would remove it. A temporary source list and lists folder in the cache
#     are used; /etc/apt and /var/lib/apt/lists are left alone. Elsewhere (e.g. Ubuntu in vagrant/) the distribution's own QEMU.
#   - busybox-static (virtme-ng builds an initramfs with the 9p/virtio modules), kmod (depmod for
#     the unpacked kernels), udev (its rules create /dev/virtio-ports/virtme.* in the guest;
#     without it the --exec output is lost and vng returns 255).
#   - virtme-ng 1.42 from PyPI, in a venv under ${SWOLL_CACHE:-/var/cache/swoll}/venv-vng.
#
# See shared/multikernel.md for why each step is needed on these machines.
set -euo pipefail

CACHE=${SWOLL_CACHE:-/var/cache/swoll}
VNG_VERSION=1.42
log() { printf 'setup-vm: %s\n' "$*" >&2; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed'; }

# apt-get with one retry: a transient "rename failed" has been seen on these machines.
apt_retry() { "$@" || { sleep 5; "$@"; }; }

mkdir -p "$CACHE"

# shellcheck source=/dev/null
CODENAME=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")

# 1. busybox-static, kmod, udev, zstd, binutils (and python3-venv where ensurepip is missing) from the machine's
#    own sources; on anything but bookworm (e.g. Ubuntu in vagrant/) also the distribution's QEMU.
want=(busybox-static kmod udev zstd binutils) # zstd, objcopy: fetch-kernels.sh
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || want+=(python3-venv)
[[ $CODENAME == bookworm ]] || want+=(qemu-system-x86 qemu-system-arm)
missing=()
for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
	log "apt-get install ${missing[*]}"
	if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
		apt_retry apt-get update -qq
	fi
	apt_retry env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. On bookworm: QEMU from bookworm-backports, through a list of our own.
qemu=()
installed qemu-system-x86 && command -v qemu-system-x86_64 >/dev/null || qemu+=(qemu-system-x86)
installed qemu-system-arm && command -v qemu-system-aarch64 >/dev/null || qemu+=(qemu-system-arm)
if [[ $CODENAME == bookworm ]] && ((${#qemu[@]})); then
	log "apt-get install -t bookworm-backports ${qemu[*]}"
	A="$CACHE/apt-bpo"
	mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
	MAIN=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	MAIN=${MAIN:-http://deb.debian.org/debian}
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MAIN bookworm-backports main" >"$A/bpo.list"
	# The machine's own sources (sourceparts, unchanged) plus backports, with lists and package
	# cache kept in the cache folder, so the machine's apt state does not learn about backports.
	AX=(-o Dir::Etc::sourcelist="$A/bpo.list" -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache"
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false)
	apt_retry apt-get "${AX[@]}" update -qq
	apt_retry env DEBIAN_FRONTEND=noninteractive apt-get "${AX[@]}" install -y -qq \
		--no-install-recommends -t bookworm-backports "${qemu[@]}"
	rm -rf "$A"
fi

# 3. virtme-ng in a venv (vng finds virtme-run through PATH: multikernel.sh puts the venv first).
VENV="$CACHE/venv-vng"
if ! "$VENV/bin/vng" --version 2>/dev/null | grep -qF "$VNG_VERSION"; then
	log "pip install virtme-ng==$VNG_VERSION into $VENV"
	rm -rf "$VENV"
	/usr/bin/python3 -m venv "$VENV"
	apt_retry "$VENV/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VNG_VERSION"
fi

log "ready: $(qemu-system-x86_64 --version | head -1), $(qemu-system-aarch64 --version | head -1 | cut -d' ' -f1,4); vng $("$VENV/bin/vng" --version 2>&1 | tail -1)"
