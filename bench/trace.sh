#!/usr/bin/env bash
# Trace mode end to end: `swoll trace` decoding every getppid of a workload into JSON lines on
# a file, kernel -> ring buffer -> decoder -> JSON (needs root).
#
#   bench/trace.sh                    N=2000000 calls, ROUNDS=3
#   N=500000 ROUNDS=1 bench/trace.sh
#   RING_BYTES=65536 bench/trace.sh   a small ring: the loss accounting under overflow
#
# One line per round: calls made, events delivered, events reported lost (delivered + lost
# must equal the calls), the workload's wall time, delivered events per second over that time,
# and the CPU swoll trace used. The workload runs in a fresh pid namespace so its events are
# told apart from anyone else's getppid.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q
cargo build --release --locked -q -p swoll-kernel-tests --bin swoll-workload
N=${N:-2000000}
ROUNDS=${ROUNDS:-3}
RING_BYTES=${RING_BYTES:-8388608}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ticks=$(getconf CLK_TCK)

printf '%-6s %10s %10s %8s %8s %12s %12s\n' round calls delivered lost wall_s events/s trace_cpu_s
for ((r = 1; r <= ROUNDS; r++)); do
	rm -f "$tmp/out" "$tmp/err"
	target/release/swoll trace -s getppid --no-containers -o json --ring-bytes "$RING_BYTES" >"$tmp/out" 2>"$tmp/err" &
	pid=$!
	for _ in $(seq 100); do
		grep -q tracing "$tmp/err" && break
		sleep 0.1
	done
	start=$(date +%s.%N)
	ns=$(target/release/swoll-workload --new-pidns getppid "$N" | awk '/^pidns/ {print $2}')
	end=$(date +%s.%N)
	sleep 1 # the last events are drained
	read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
	kill -INT "$pid"
	wait "$pid"
	delivered=$(grep -c "\"pid_ns\":$ns," "$tmp/out" || true)
	lost=$({ grep '"lost_total"' "$tmp/out" || true; } | tail -1 | sed 's/.*"lost_total":\([0-9]*\).*/\1/')
	lost=${lost:-0}
	awk -v r="$r" -v n="$N" -v d="$delivered" -v l="$lost" -v s="$start" -v e="$end" \
		-v cpu=$((utime + stime)) -v hz="$ticks" \
		'BEGIN { w = e - s; printf "%-6s %10d %10d %8d %8.2f %12.0f %12.2f\n", r, n, d, l, w, d / w, cpu / hz }'
done
