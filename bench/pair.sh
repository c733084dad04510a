#!/usr/bin/env bash
# Two getppid loops at once, pinned to CPUs 0 and 1, in one new pid namespace together or in
# one each (issue #15 item 2: a probe that wrote a cache line another CPU writes would make the
# first slower than the second). Prints one sysloop line whose figures are the two loops' means,
# for overhead.sh's run_workload.
#
#   bench/pair.sh SYSLOOP 1ns|2ns N BATCHES    (sysloop's own argument order)
set -euo pipefail
sysloop=$1 mode=$2 n=$3 batches=$4
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
loop() { # cpu -> runs one pinned loop, its line into $out/<cpu>
	taskset -c "$1" "$sysloop" getppid "$n" "$batches" >"$out/$1" 2>&1
}
case $mode in
both) # both loops in this process's pid namespace (the new one of 1ns)
	loop 0 &
	loop 1
	wait
	cat "$out/0" "$out/1"
	exit
	;;
1ns) unshare --pid --fork "$0" "$sysloop" both "$n" "$batches" >"$out/lines" ;;
2ns)
	unshare --pid --fork "$0" "$sysloop" one "$n" "$batches" 0 >"$out/0" &
	unshare --pid --fork "$0" "$sysloop" one "$n" "$batches" 1 >"$out/1"
	wait
	cat "$out/0" "$out/1" >"$out/lines"
	;;
one) # one loop, on CPU $5, in this process's pid namespace (the new one of 2ns)
	loop "$5"
	cat "$out/$5"
	exit
	;;
*) echo "usage: $0 SYSLOOP 1ns|2ns N BATCHES" >&2; exit 2 ;;
esac
awk '
	match($0, /ns_per_call=[0-9.]+ ns_per_call_mean=[0-9.]+ ns_per_call_min=[0-9.]+/) {
		split(substr($0, RSTART, RLENGTH), f, /[= ]/)
		a += f[2]; b += f[4]; c += f[6]; k++
	}
	END {
		if (k != 2) exit 1
		printf "pair ns_per_call=%.1f ns_per_call_mean=%.1f ns_per_call_min=%.1f\n", a / 2, b / 2, c / 2
	}' "$out/lines"
