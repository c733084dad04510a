#!/usr/bin/env bash
# Runs swoll's architecture-specific kernel tests on aarch64, from this x86_64 machine:
# cross-builds swoll and the kernel-test binaries for aarch64-unknown-linux-gnu, boots Debian's
# arm64 kernels (scripts/fetch-kernels.sh with SWOLL_ARCH=arm64) in qemu-system-aarch64 under TCG
# (no KVM here, and none for another architecture anyway), one VM at a time, and runs the tests
# inside.
#
#   scripts/arm64.sh
#
#   SWOLL_ARM64_KERNELS="bookworm trixie"  the kernels (suites, version prefixes or packages, as
#                                          fetch-kernels.sh takes them): 6.1 and 6.12 by default
#   SWOLL_ARM64_TESTS="counts pidns latency slots trace selftest"   the test targets of swoll-kernel-tests
#                                          to run: the ones whose subject is the architecture
#                                          (syscall numbers and names, pt_regs, the pid-namespace
#                                          read through task_struct, the argument registers)
#   SWOLL_TEST_ARGS="--skip x"  more arguments for every test binary (libtest filters, --skip)
#   SWOLL_VM_TIMEOUT=600        seconds one VM may take (boot + all binaries) before it is killed
#                               (a run takes about a minute)
#   SWOLL_CACHE                 where kernels, the guest userland and logs live (/var/cache/swoll)
#   CI=true                     passed to the tests; a skipped test then fails the run
#
# The x86_64 VMs (scripts/multikernel.sh) share the host's root over 9p; an aarch64 guest cannot
# run the host's binaries, so here the guest's whole root is an initramfs: a minimal Debian arm64
# userland (libc6, libgcc-s1, busybox-static, util-linux's unshare and setpriv for the deployed
# runs of tests/kernel/src/deployed.rs, libcap-ng0 for setpriv, coreutils' true), the host's CA
# certificates, the cross-built binaries and the repository's tracked files (the tests read deploy/kubernetes/ through their source path), each
# at its path on the host. No kernel module is needed: Debian's arm64 kernels build in the PL011
# console, BPF, BTF, cgroup2 and tmpfs. The console is QEMU's serial port, written to a file of
# its own (kernel messages kept off it by loglevel=1); the counts are read from it.
#
# One line per kernel at the end, as multikernel.sh prints:
#   6.1.0-57-arm64: 20 passed, 0 failed, 0 skipped
# Exit status: non-zero if a kernel failed to boot, had a failed test, or (under CI=true) a skip.
# Full console logs: $SWOLL_CACHE/logs/<kver>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${SWOLL_CACHE:-/var/cache/swoll}
export SWOLL_CACHE=$CACHE
VM_TIMEOUT=${SWOLL_VM_TIMEOUT:-600}
TRIPLE=aarch64-unknown-linux-gnu
log() { printf 'arm64: %s\n' "$*" >&2; }

for tool in qemu-system-aarch64 aarch64-linux-gnu-gcc busybox; do
	command -v "$tool" >/dev/null || { log "$tool is missing: run scripts/setup.sh --test"; exit 1; }
done
export PATH="${HOME:-/root}/.cargo/bin:$PATH"

# Serialise with multikernel.sh: one VM under TCG keeps one of the 2 cores busy.
mkdir -p "$CACHE/logs" "$CACHE/run"
exec 8>"$CACHE/multikernel.lock"
flock 8

# --- 1. cross-build: Debian's cross gcc links, against its arm64 libc (libc6-dev-arm64-cross) ---
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
log "cross-building swoll and the kernel tests for $TRIPLE"
cargo build --release --locked --target "$TRIPLE" # as scripts/image-binary.sh builds the image's
read -ra tests <<<"${SWOLL_ARM64_TESTS:-counts pidns latency slots trace selftest}"
json=$(cargo test --release --locked --target "$TRIPLE" -p swoll-kernel-tests --no-run \
	"${tests[@]/#/--test=}" --message-format=json) ||
	{ log "the kernel tests do not build for $TRIPLE"; exit 1; }
bins=() dirs=()
# Executables of the named targets of kind "test", each run from its package's folder as cargo does.
while IFS=$'\t' read -r exe dir; do
	bins+=("$exe") dirs+=("$dir")
done < <(python3 -c '
import json, os, sys
want = set(sys.argv[1:])
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and "test" in m["target"]["kind"] and m["target"]["name"] in want):
        print(m["executable"], os.path.dirname(m["manifest_path"]), sep="\t")
' "${tests[@]}" <<<"$json" | sort -u)
((${#bins[@]} == ${#tests[@]})) || { log "found ${bins[*]##*/} for the tests ${tests[*]}"; exit 1; }
rel=$ROOT/target/$TRIPLE/release
# What the tests spawn: the agent (swoll_bin(): next to deps/) and the workload (CARGO_BIN_EXE_).
for f in "$rel/swoll" "$rel/swoll-workload"; do
	[[ -x $f ]] || { log "$f was not built"; exit 1; }
done

# --- 2. the guest userland, from Debian bookworm's arm64 packages (cached; rebuilt when this
# list changes) ---
US=$CACHE/arm64-userland
PKGS=(libc6 libgcc-s1 libcap-ng0 busybox-static util-linux coreutils)
# busybox applets the guest's init and the tests call (mount -t bpf/cgroup2 by the tests);
# util-linux gives the real unshare and setpriv, coreutils the real /bin/true that trace.rs
# execs with argv [a, b, c] (busybox would look for an applet named "a").
APPLETS=(sh mount umount mkdir cat echo ls sleep poweroff ip false uname env id ps kill rm cp
	ln grep sed tr head tail wc cut)
stamp="${PKGS[*]} | ${APPLETS[*]}"
if [[ $(cat "$US/stamp" 2>/dev/null) != "$stamp" ]]; then
	log "building the guest userland from Debian's arm64 packages: ${PKGS[*]}"
	rm -rf "$US"
	A=$US/apt
	mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$US/debs" "$US/root"
	SRC=/etc/apt/sources.list.d/debian.sources
	MAIN=$(awk '/^URIs:/{print $2; exit}' "$SRC" 2>/dev/null || true)
	SEC=$(awk '/^URIs:/{n++; if (n==2) {print $2; exit}}' "$SRC" 2>/dev/null || true)
	MAIN=${MAIN:-http://deb.debian.org/debian} SEC=${SEC:-http://deb.debian.org/debian-security}
	K="signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
	printf 'deb [%s] %s bookworm main\ndeb [%s] %s bookworm-security main\n' "$K" "$MAIN" "$K" "$SEC" >"$A/x.list"
	# An apt of our own: arm64 only, no installed-package state, the machine's apt left alone.
	AX=(-o Dir::Etc::sourcelist="$A/x.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$A/lists"
		-o Dir::Cache="$A/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
		-o APT::Architecture=arm64 -o APT::Architectures=arm64)
	apt-get "${AX[@]}" update -qq || { sleep 5; apt-get "${AX[@]}" update -qq; }
	(cd "$US/debs" && { apt-get "${AX[@]}" download -qq "${PKGS[@]}" ||
		{ sleep 5; apt-get "${AX[@]}" download -qq "${PKGS[@]}"; }; })
	r=$US/root
	# Merged /usr, as Debian 12 has it (and as deployed.rs expects: it binds /usr and links
	# /bin, /lib and /sbin into it). --keep-directory-symlink keeps the links when the packages'
	# ./lib, ./bin and ./sbin are unpacked.
	mkdir -p "$r/usr/bin" "$r/usr/lib" "$r/usr/sbin"
	for d in bin lib sbin; do ln -s "usr/$d" "$r/$d"; done
	for p in libc6 libgcc-s1 libcap-ng0 busybox-static; do
		dpkg-deb --fsys-tarfile "$US"/debs/"${p}"_*.deb | tar -x --keep-directory-symlink -C "$r"
	done
	dpkg-deb --fsys-tarfile "$US"/debs/util-linux_*.deb |
		tar -x --keep-directory-symlink -C "$r" ./usr/bin/unshare ./usr/bin/setpriv
	dpkg-deb --fsys-tarfile "$US"/debs/coreutils_*.deb | tar -x --keep-directory-symlink -C "$r" ./bin/true
	# Documentation, and glibc's charset converters (20 MB no test uses) out of the initramfs.
	rm -rf "$r/usr/share" "$r/etc"/* "$r/usr/lib/aarch64-linux-gnu/gconv"
	for a in "${APPLETS[@]}"; do ln -sf busybox "$r/usr/bin/$a"; done
	mkdir -p "$r/etc/ssl" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/root" "$r/run"
	# The kernel opens /dev/console for init's stdout before anything is mounted.
	mknod -m 600 "$r/dev/console" c 5 1
	echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
	echo 'root:x:0:' >"$r/etc/group"
	# Every library the guest's dynamic executables need must be in it.
	for f in "$r/usr/bin/unshare" "$r/usr/bin/setpriv" "$r/usr/bin/true" "$rel/swoll"; do
		for lib in $(aarch64-linux-gnu-readelf -d "$f" | sed -nE 's/.*NEEDED.*\[(.*)\]/\1/p'); do
			compgen -G "$r/usr/lib/aarch64-linux-gnu/$lib" >/dev/null || compgen -G "$r/usr/lib/$lib" >/dev/null ||
				{ log "$lib (needed by ${f##*/}) is not in the guest userland"; exit 1; }
		done
	done
	echo "$stamp" >"$US/stamp"
	log "guest userland ready: $(du -sh "$r" | cut -f1)"
fi

# --- 3. the initramfs: userland + /init + binaries + repository, at their host paths ---
run=$CACHE/run/arm64
rm -rf "$run"
mkdir -p "$run/root"
cp -a "$US/root/." "$run/root/"
copy() { mkdir -p "$run/root$(dirname "$1")" && cp -a "$1" "$run/root$1"; }
# The host's CA bundle (text, the same for every architecture; Debian's ca-certificates package
# generates it at install time, so an unpacked package has none): the agent's Kubernetes client
# loads the system's roots, as it does from distroless's /etc/ssl in the image.
copy /etc/ssl/certs/ca-certificates.crt
for b in "${bins[@]}" "$rel/swoll" "$rel/swoll-workload"; do copy "$b"; done
git ls-files -z | while IFS= read -r -d '' f; do [[ -e $f ]] && copy "$ROOT/$f"; done
# The tests' environment (vng-less: nothing is forwarded from the host but this).
read -ra extra <<<"${SWOLL_TEST_ARGS:-}"
{
	echo '#!/bin/sh'
	echo 'export PATH=/usr/local/bin:/usr/bin:/usr/sbin HOME=/root'
	for v in CI RUST_BACKTRACE RUST_LOG; do
		if [[ -n ${!v+x} ]]; then echo "export $v=$(printf %q "${!v}")"; fi
	done
	cat <<-'EOF'
		mount -t proc proc /proc
		mount -t sysfs sysfs /sys
		mount -t devtmpfs devtmpfs /dev
		mount -t tmpfs tmpfs /tmp
		mount -t tmpfs tmpfs /run
		mount -t cgroup2 cgroup2 /sys/fs/cgroup
		mount -t bpf bpf /sys/fs/bpf
		mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
		ip link set lo up
		echo "== guest: kernel $(uname -r) $(uname -m), uptime $(cut -d' ' -f1 /proc/uptime) s, BTF $(wc -c </sys/kernel/btf/vmlinux) bytes, CI=${CI-}"
		rc=0
		run() { # n dir binary args...
		    n=$1 dir=$2 bin=$3
		    shift 3
		    echo "== guest: running $bin"
		    (cd "$dir" && "$bin" --test-threads=1 --nocapture "$@") 2>&1
		    r=$?
		    echo "== guest: status $n $r $bin"
		    [ "$r" = 0 ] || rc=1
		}
	EOF
	for i in "${!bins[@]}"; do
		echo "run $i $(printf %q "${dirs[$i]}") $(printf %q "${bins[$i]}") ${extra[*]@Q}"
	done
	# shellcheck disable=SC2016 # expanded in the guest
	echo 'echo "== guest: done $rc, uptime $(cut -d" " -f1 /proc/uptime) s"'
	echo 'poweroff -f'
} >"$run/root/init"
chmod +x "$run/root/init"
(cd "$run/root" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null) >"$run/initrd"
log "initramfs: $(du -h "$run/initrd" | cut -f1); test binaries: ${bins[*]##*/}"
rm -rf "$run/root"

# --- 4. boot each kernel ---
read -ra specs <<<"${SWOLL_ARM64_KERNELS:-bookworm trixie}"
list=$(SWOLL_ARCH=arm64 scripts/fetch-kernels.sh "${specs[@]}") || { log "fetching the arm64 kernels failed"; exit 1; }
mapfile -t kernels <<<"$list"

summary=() status=0
for kv in "${kernels[@]}"; do
	d=$CACHE/kernels-arm64/$kv logf=$CACHE/logs/$kv.log
	img=$d/boot/Image-$kv
	[[ -f $img ]] || img=$d/boot/vmlinuz-$kv
	log "booting $kv (timeout ${VM_TIMEOUT} s)"
	start=$SECONDS
	rm -f "$logf"
	# -cpu max: every feature the kernel may use (RNDR seeds the guest's RNG at once); with
	#   pauth-impdef, pointer authentication uses QEMU's cheap hash instead of emulating QARMA.
	# 1 vCPU: the host has 2 cores (as for the x86_64 VMs). 2 GiB: the initramfs is in RAM.
	# -no-reboot: a panic (panic=-1 reboots at once) ends QEMU instead of looping.
	set +e
	timeout --kill-after=30 "$VM_TIMEOUT" \
		qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -accel tcg -smp 1 -m 2G \
		-nodefaults -display none -monitor none -no-reboot -serial "file:$logf" \
		-kernel "$img" -initrd "$run/initrd" \
		-append "console=ttyAMA0 rdinit=/init loglevel=1 panic=-1" </dev/null
	vrc=$?
	set -e
	secs=$((SECONDS - start))

	passed=0 failed=0 ignored=0 note=""
	while read -r p f ig; do
		passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + ig))
	done < <(tr -d '\r' <"$logf" |
		sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p')
	skipped=$(grep -c 'skipping test -' "$logf" || true)
	# libtest counts a test that skipped (printed and returned) as passed.
	passed=$((passed > skipped ? passed - skipped : 0))
	# A binary that exited non-zero without a failed test in its summary (a crash, an abort, a
	# libtest error) counts as one failure.
	nstatus=0
	while read -r _ _ _ _ r b; do
		nstatus=$((nstatus + 1))
		if ((r != 0)); then
			note+=" ${b##*/} exited $r;"
			((failed)) || failed=1
		fi
	done < <(tr -d '\r' <"$logf" | grep '^== guest: status ')
	if ! tr -d '\r' <"$logf" | grep -q '^== guest: done '; then
		if ((vrc == 124 || vrc == 137)); then note+=" timed out after ${VM_TIMEOUT} s;"; else note+=" boot failed or guest died (qemu exit $vrc);"; fi
		failed=$((failed + 1))
	elif ((nstatus != ${#bins[@]})); then
		note+=" not every binary ran;"
		failed=$((failed + 1))
	fi
	((ignored == 0)) || note+=" $ignored ignored;"
	bad=0
	((failed == 0)) || bad=1
	if [[ ${CI:-} == true ]] && ((skipped)); then bad=1 note+=" CI=true: a skip is a failure;"; fi
	log "kernel $kv took ${secs} s${note:+ (${note%;})}"
	line="$kv: $passed passed, $failed failed, $skipped skipped"
	summary+=("$line")
	log "$line"
	if ((bad)); then
		status=1
		log "last 60 lines of $logf:"
		tail -n 60 "$logf" >&2
	fi
done

printf '%s\n' "${summary[@]}"
exit "$status"
