#!/usr/bin/env bash
# Runs swoll's kernel tests on other Linux kernels: boots each Debian kernel that
# scripts/fetch-kernels.sh provides (5.10, 6.1, 6.12, 7.x) in QEMU with virtme-ng, one VM at a time,
# and runs the tests inside the guest against that kernel.
#
#   scripts/multikernel.sh                       the kernel-test binaries of swoll-kernel-tests
#   scripts/multikernel.sh -- BINARY...          these libtest binaries instead
#
#   SWOLL_KERNELS="5.10 6.1"   only kernels whose release starts with one of these (a version with
#                              no kernel in the default set is fetched as the newest of its line)
#   SWOLL_VM_TIMEOUT=900       seconds one VM may take (boot + all binaries) before it is killed
#   SWOLL_TEST_ARGS="--skip x"  more arguments for every test binary (libtest filters, --skip)
#   SWOLL_CACHE                where kernels, logs and the vng venv live (/var/cache/swoll)
#   CI=true                    passed to the tests; a skipped test then fails the run
#
# The guest shares the host's root filesystem read-only (over 9p), so the binaries built here run
# there unchanged. Each binary runs with --test-threads=1 --nocapture (the tests print
# "skipping test - <why>" to stderr, which libtest would otherwise swallow). At the end one line
# per kernel:
#   6.1.0-56-amd64: 12 passed, 0 failed, 0 skipped
# where "skipped" counts the "skipping test -" lines, and "passed" the tests that passed without one.
# Exit status: non-zero if any kernel failed to boot, had a failed test, or (under CI=true) a skip.
# Full guest logs: $SWOLL_CACHE/logs/<kver>.log. QEMU runs without KVM (TCG): see
# shared/multikernel.md for why, and for the boot options used here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${SWOLL_CACHE:-/var/cache/swoll}
export SWOLL_CACHE=$CACHE
VM_TIMEOUT=${SWOLL_VM_TIMEOUT:-900}
log() { printf 'multikernel: %s\n' "$*" >&2; }

bins=() dirs=()
if (($#)); then
	[[ $1 == -- ]] || { echo "usage: $0 [-- TEST_BINARY...]" >&2; exit 2; }
	shift
	for b in "$@"; do
		[[ -x $b ]] || { log "$b: not an executable file"; exit 2; }
		bins+=("$(realpath "$b")") dirs+=("$ROOT")
	done
fi

# Serialise runs: the machine has 2 cores, and one VM under TCG keeps one busy.
mkdir -p "$CACHE/logs" "$CACHE/run"
exec 8>"$CACHE/multikernel.lock"
flock 8

scripts/setup-vm.sh
export PATH="$CACHE/venv-vng/bin:${HOME:-/root}/.cargo/bin:$PATH" # vng calls virtme-run through PATH

if ((${#bins[@]} == 0)); then
	log "building the kernel tests (cargo test --release --locked -p swoll-kernel-tests --no-run)"
	json=$(cargo test --release --locked -p swoll-kernel-tests --no-run --message-format=json) ||
		{ log "the kernel tests do not build"; exit 1; }
	# Executables of targets of kind "test", each run from its package's folder as cargo does.
	while IFS=$'\t' read -r exe dir; do
		bins+=("$exe") dirs+=("$dir")
	done < <(python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["executable"], os.path.dirname(m["manifest_path"]), sep="\t")
' <<<"$json" | sort -u)
	((${#bins[@]})) || { log "swoll-kernel-tests has no test binaries"; exit 1; }
fi
log "test binaries: ${bins[*]##*/}"

# --- which kernels ---
list=$(scripts/fetch-kernels.sh) || { log "fetching the kernels failed"; exit 1; }
mapfile -t all <<<"$list"
# "6.1" matches 6.1.0-56-amd64 but not 6.12.117+deb13-amd64.
matches() { [[ $1 == "$2" || ($1 == "$2"* && ${1:${#2}:1} != [0-9]) ]]; }
kernels=()
if [[ -n ${SWOLL_KERNELS:-} ]]; then
	for want in $SWOLL_KERNELS; do
		found=0
		for kv in "${all[@]}"; do
			if matches "$kv" "$want"; then kernels+=("$kv") found=1; fi
		done
		if ((!found)); then
			kv=$(scripts/fetch-kernels.sh "$want") || { log "no kernel matches $want"; exit 1; }
			kernels+=("$kv")
		fi
	done
else
	kernels=("${all[@]}")
fi
((${#kernels[@]})) || { log "no kernels to boot"; exit 1; }

# udev would load drivers for QEMU's emulated q35 hardware: 2-10 s per boot under TCG.
BL='modprobe.blacklist=kvm_amd,kvm,ahci,libahci,sr_mod,cdrom,sg,iTCO_wdt,lpc_ich,i2c_i801,psmouse,pcspkr,aesni_intel,ghash_clmulni_intel,sha512_ssse3,sha256_ssse3,sha1_ssse3,crc32_pclmul,crc32c_intel,crct10dif_pclmul,evdev,serio_raw,i6300esb,button,qemu_fw_cfg'

# The script run inside the guest. vng does not forward the host's environment.
write_guest_script() {
	local out=$1 i v extra
	{
		echo '#!/bin/bash'
		echo "OUT=$(printf %q "$out")"
		read -ra extra <<<"${SWOLL_TEST_ARGS:-}"
		echo "EXTRA=(${extra[*]@Q})"
		for v in CI RUST_BACKTRACE RUST_LOG; do
			if [[ -n ${!v+x} ]]; then echo "export $v=$(printf %q "${!v}")"; fi
		done
		cat <<-'EOF'
			echo "== guest: kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime) s, CI=${CI-}"
			rc=0
			run() { # dir binary
			    echo "== guest: running $2"
			    (cd "$1" && "$2" --test-threads=1 --nocapture "${EXTRA[@]}") 2>&1 | tee "$OUT/bin-$n.log"
			    local r=${PIPESTATUS[0]}
			    echo "$n $r $2" >>"$OUT/status"
			    echo "== guest: $2 exited $r"
			    ((r == 0)) || rc=1
			}
		EOF
		for i in "${!bins[@]}"; do
			echo "n=$i; run $(printf %q "${dirs[$i]}") $(printf %q "${bins[$i]}")"
		done
		# shellcheck disable=SC2016 # expanded in the guest
		echo 'echo "== guest: done, uptime $(cut -d" " -f1 /proc/uptime) s"; touch "$OUT/done"; exit $rc'
	} >"$out/guest.sh"
	chmod +x "$out/guest.sh"
}

image_of() { # the uncompressed vmlinux if fetch-kernels.sh extracted one, else vmlinuz
	local d=$CACHE/kernels/$1 f
	for f in "$d/boot/vmlinux-$1" "$d/usr/lib/modules/$1/vmlinux" "$d/boot/vmlinuz-$1" "$d/usr/lib/modules/$1/vmlinuz"; do
		[[ -f $f ]] && { echo "$f"; return; }
	done
	return 1
}

summary=() status=0
for kv in "${kernels[@]}"; do
	out=$CACHE/run/$kv logf=$CACHE/logs/$kv.log
	rm -rf "$out"
	mkdir -p "$out"
	write_guest_script "$out"
	img=$(image_of "$kv") || { summary+=("$kv: 0 passed, 1 failed, 0 skipped"); log "no kernel image for $kv"; status=1; continue; }
	log "booting $kv (timeout ${VM_TIMEOUT} s)"
	start=$SECONDS
	# --rodir: the guest mounts a tmpfs over /var/cache, which would hide the kernel's modules
	#   (vng links /lib/modules/<kver> to this tree); mounting the tree again makes them loadable.
	# --verbose: the kernel's console goes to the log too (the counts come from files in $out).
	# "| cat": QEMU reopens its stdout with O_TRUNC, so it must not write to a shared file.
	set +e
	timeout --kill-after=30 "$VM_TIMEOUT" \
		vng --verbose --run "$img" --disable-kvm --force-9p --cpus 1 --memory 1G --append "$BL" \
		--rodir="$CACHE/kernels/$kv" --rwdir="$out" --exec "$out/guest.sh" </dev/null 2>&1 | cat >"$logf"
	vrc=${PIPESTATUS[0]}
	set -e
	secs=$((SECONDS - start))

	passed=0 failed=0 ignored=0 note=""
	while read -r p f ig; do
		passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + ig))
	done < <(cat "$out"/bin-*.log 2>/dev/null |
		sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p')
	skipped=$(cat "$out"/bin-*.log 2>/dev/null | grep -c 'skipping test -' || true)
	# libtest counts a test that skipped (printed and returned) as passed.
	passed=$((passed > skipped ? passed - skipped : 0))
	# A binary that exited non-zero without a failed test in its summary (a crash, an abort,
	# a libtest error) counts as one failure.
	while read -r i r b; do
		if ((r != 0)) && ! grep -qE '^test result: [A-Za-z]+\. [0-9]+ passed; [1-9]' "$out/bin-$i.log"; then
			failed=$((failed + 1)) note+=" ${b##*/} exited $r;"
		fi
	done < <(cat "$out/status" 2>/dev/null)
	if [[ ! -f $out/done ]]; then
		if ((vrc == 124 || vrc == 137)); then note+=" timed out after ${VM_TIMEOUT} s;"; else note+=" boot failed or guest died (vng exit $vrc);"; fi
		failed=$((failed + 1))
	elif [[ $(wc -l <"$out/status") -ne ${#bins[@]} ]]; then
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
