#!/usr/bin/env bash
# Downloads Debian kernel packages and unpacks them (no install: /boot, /lib/modules and /etc/apt
# are not touched) for scripts/multikernel.sh.
#
#   scripts/fetch-kernels.sh              the default set: the newest kernel of bullseye (5.10),
#                                         bookworm (6.1), trixie (6.12) and trixie-backports (7.x)
#   scripts/fetch-kernels.sh 6.1 7.3      the newest kernel whose version starts with 6.1. / 7.3.
#   scripts/fetch-kernels.sh linux-image-6.1.0-56-amd64 ...   exact packages
#   scripts/fetch-kernels.sh --list       what the mirror has: version -> image package
#   SWOLL_ARCH=arm64 scripts/fetch-kernels.sh bookworm trixie   Debian's arm64 kernels instead
#                                         (for scripts/arm64.sh), kept apart from the amd64 ones
#
# Package names are resolved at run time from apt metadata (the linux-image-amd64 meta package of
# each suite), so the script keeps working when Debian bumps ABI numbers.
#
# Prints the kernel release of each requested kernel on stdout, one a line (logs go to stderr).
# Each kernel ends up in ${SWOLL_CACHE:-/var/cache/swoll}/kernels/<kver>/ with
#   boot/vmlinuz-<kver> (or usr/lib/modules/<kver>/vmlinuz for the split 7.x packages),
#   the uncompressed ELF vmlinux next to it (faster to boot under TCG), modules with modules.dep,
# and its raw BTF (byte-identical to the guest's /sys/kernel/btf/vmlinux) in btf/<kver>.btf.
# With SWOLL_ARCH=arm64: in kernels-arm64/<kver>/, with the uncompressed arm64 Image next to
# vmlinuz if that is compressed (boot/Image-<kver>), and no modules; no BTF file is
# extracted (a raw Image has no sections to take it from; the guest has /sys/kernel/btf/vmlinux),
# and btf/ keeps holding amd64 blobs only, which decode/tests/btf_kernels.rs matches by version.
# Idempotent: an unpacked kernel is skipped, and apt's lists (kept in the cache, not in /var/lib/apt)
# are refreshed only when older than SWOLL_APT_MAX_AGE minutes (default 1440).
set -euo pipefail
export LC_ALL=C # join and sort must agree on the order

CACHE=${SWOLL_CACHE:-/var/cache/swoll}
HERE=$(cd "$(dirname "$0")" && pwd)
ARCH=${SWOLL_ARCH:-amd64}
case $ARCH in
amd64) KDIR="$CACHE/kernels" A="$CACHE/apt-x" ;;
arm64) KDIR="$CACHE/kernels-arm64" A="$CACHE/apt-x-arm64" ;;
*) echo "fetch-kernels: SWOLL_ARCH=$ARCH: only amd64 and arm64" >&2; exit 2 ;;
esac
BTFDIR="$CACHE/btf" DEBS="$CACHE/debs"
DEFAULT_SUITES=(bullseye bookworm trixie trixie-backports)
log() { printf 'fetch-kernels: %s\n' "$*" >&2; }

mkdir -p "$KDIR" "$BTFDIR" "$DEBS" "$A/lists/partial" "$A/cache/archives/partial"
exec 9>"$CACHE/fetch.lock"
flock 9

# --- apt configuration of our own, in the cache folder ---
SRC=/etc/apt/sources.list.d/debian.sources
MAIN=$(awk '/^URIs:/{print $2; exit}' "$SRC" 2>/dev/null || true)
SEC=$(awk '/^URIs:/{n++; if (n==2) {print $2; exit}}' "$SRC" 2>/dev/null || true)
MAIN=${MAIN:-http://deb.debian.org/debian} SEC=${SEC:-http://deb.debian.org/debian-security}
K="signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
{
	for s in bullseye bookworm trixie; do
		echo "deb [$K] $MAIN $s main"
		echo "deb [$K] $SEC $s-security main"
	done
	for s in bookworm-backports trixie-backports sid; do echo "deb [$K] $MAIN $s main"; done
} >"$A/x.list.new"
cmp -s "$A/x.list.new" "$A/x.list" 2>/dev/null || { mv "$A/x.list.new" "$A/x.list"; rm -f "$A/updated"; }
rm -f "$A/x.list.new"
AX=(-o Dir::Etc::sourcelist="$A/x.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$A/lists"
	-o Dir::Cache="$A/cache" -o APT::Sandbox::User=root -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
	-o APT::Architecture="$ARCH" -o APT::Architectures="$ARCH")

have_lists() { [[ -f $A/updated ]] && compgen -G "$A/lists/*_Packages*" >/dev/null; }
apt_update() {
	log "apt-get update (lists in $A)"
	if apt-get "${AX[@]}" update -qq || { sleep 5; apt-get "${AX[@]}" update -qq; }; then
		touch "$A/updated"
	elif have_lists; then
		log "warning: apt-get update failed; using the lists from $(date -r "$A/updated")"
	else
		log "apt-get update failed and there are no lists"
		exit 1
	fi
}
updated=0
ensure_lists() {
	((updated)) && return 0
	updated=1
	if ! have_lists || [[ -n $(find "$A/updated" -mmin +"${SWOLL_APT_MAX_AGE:-1440}") ]]; then
		apt_update
	fi
}

# "version suite image-package" of every linux-image-$ARCH meta package, e.g.
# "6.1.192-2 bookworm-security linux-image-6.1.0-56-amd64". apt-cache takes ~2 s a call on these
# lists (the machine's apt config turns its binary cache off), so the table is built once per update.
meta_table() {
	local t=$A/meta.txt
	if [[ ! -s $t || $A/updated -nt $t ]]; then
		# awk reads all its input: an early exit would kill apt-cache with SIGPIPE under pipefail.
		join <(apt-cache "${AX[@]}" madison "linux-image-$ARCH" |
			awk -F'|' '{ gsub(/ /, "", $2); split($3, a, " "); sub(/\/.*/, "", a[2]); print $2, a[2] }' | sort -k1,1) \
			<(apt-cache "${AX[@]}" show "linux-image-$ARCH" |
				awk '/^Version:/ { v = $2 }
				     /^Depends:/ && match($0, /linux-image-[^ ,]*/) { print v, substr($0, RSTART, RLENGTH) }' | sort -k1,1) |
			sort -u -k1,1V >"$t.tmp"
		mv "$t.tmp" "$t"
	fi
	cat "$t"
}
newest() { sort -k1,1V | tail -1 | cut -d' ' -f3; }

# Resolves a suite ("bookworm", matching -security and -updates too), a version prefix ("6.1")
# or a package name to a linux-image-<kver> package name.
resolve() {
	local spec=$1 pkg
	case $spec in
	linux-image-*) echo "$spec"; return ;;
	[0-9]*) pkg=$(meta_table | awk -v p="$spec." 'index($1, p) == 1' | newest) ;;
	*) pkg=$(meta_table | awk -v s="$spec" '$2 == s || $2 == s "-security" || $2 == s "-updates"' | newest) ;;
	esac
	[[ -n $pkg ]] || { log "no kernel found for '$spec' (see --list)"; return 1; }
	echo "$pkg"
}

unpack() {
	local pkg=$1 kv=${1#linux-image-} tmp parts p img vmlinux base
	tmp="$KDIR/.tmp-$kv"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	# Since 7.x, Debian splits linux-image-<abi> into linux-{binary,modules,base}-<abi>.
	if apt-cache "${AX[@]}" show "linux-binary-$kv" >/dev/null 2>&1; then
		parts=("linux-binary-$kv" "linux-modules-$kv" "linux-base-$kv")
	else
		parts=("$pkg")
	fi
	for p in "${parts[@]}"; do
		log "downloading $p"
		rm -f "$DEBS/${p}"_*.deb
		(cd "$DEBS" && { apt-get "${AX[@]}" download -qq "$p" || { sleep 5; apt-get "${AX[@]}" download -qq "$p"; }; })
		dpkg-deb -f "$DEBS/${p}"_*.deb Package Version | paste -sd' ' >>"$tmp/swoll-packages.txt"
		dpkg-deb -x "$DEBS/${p}"_*.deb "$tmp"
		rm -f "$DEBS/${p}"_*.deb
	done
	if [[ -f $tmp/boot/vmlinuz-$kv ]]; then
		img=$tmp/boot/vmlinuz-$kv vmlinux=$tmp/boot/vmlinux-$kv
	elif [[ -f $tmp/usr/lib/modules/$kv/vmlinuz ]]; then
		img=$tmp/usr/lib/modules/$kv/vmlinuz vmlinux=$tmp/usr/lib/modules/$kv/vmlinux
	else
		log "$pkg: no vmlinuz found in the package"
		return 1
	fi
	if [[ $ARCH == arm64 ]]; then
		# scripts/arm64.sh boots the Image with an initramfs of its own and no modules (what the
		# tests need is built in): the ~300 MB of modules are dropped. Debian's arm64 vmlinuz is
		# an uncompressed Image so far; a compressed one is unpacked to spare the guest the work.
		python3 "$HERE/extract-vmlinux.py" "$img" "$tmp/boot/Image-$kv" >&2
		if cmp -s "$img" "$tmp/boot/Image-$kv"; then rm "$tmp/boot/Image-$kv"; fi
		rm -rf "$tmp/lib/modules" "$tmp/usr/lib/modules"
		mv "$tmp" "$KDIR/$kv"
		log "$kv ready: $(du -sh "$KDIR/$kv" | cut -f1) unpacked"
		return
	fi
	# Next to vmlinuz, because vng finds the modules by walking up from the image's path.
	python3 "$HERE/extract-vmlinux.py" "$img" "$vmlinux" >&2
	objcopy -O binary --only-section=.BTF "$vmlinux" "$BTFDIR/$kv.btf.tmp"
	[[ -s $BTFDIR/$kv.btf.tmp ]] || { log "$pkg: vmlinux has no .BTF section"; return 1; }
	chmod 644 "$BTFDIR/$kv.btf.tmp"
	mv "$BTFDIR/$kv.btf.tmp" "$BTFDIR/$kv.btf"
	# vng would run depmod on the first boot; doing it here keeps boot times even.
	if [[ -d $tmp/lib/modules/$kv ]]; then base=$tmp; else base=$tmp/usr; fi
	depmod -a -b "$base" "$kv" || log "warning: depmod failed for $kv (vng will retry at boot)"
	mv "$tmp" "$KDIR/$kv"
	log "$kv ready: $(du -sh "$KDIR/$kv" | cut -f1) unpacked, BTF $(stat -c %s "$BTFDIR/$kv.btf") bytes"
}

if [[ ${1:-} == --list ]]; then
	ensure_lists
	meta_table | awk '{ printf "%-20s %-20s %s\n", $1, $2, $3 }'
	exit 0
fi

specs=("$@")
((${#specs[@]})) || specs=("${DEFAULT_SUITES[@]}")

# Fast path: only package names, all unpacked already -> no apt at all.
pkgs=()
for spec in "${specs[@]}"; do
	if [[ $spec == linux-image-* && -d $KDIR/${spec#linux-image-} ]]; then
		pkgs+=("$spec")
	else
		ensure_lists
		pkgs+=("$(resolve "$spec")")
	fi
done

for pkg in "${pkgs[@]}"; do
	kv=${pkg#linux-image-}
	if [[ ! -d $KDIR/$kv ]]; then
		ensure_lists
		unpack "$pkg"
	fi
	echo "$kv"
done
