#!/usr/bin/env bash
# The agent's own costs with many series (needs root): scrape latency of /metrics while the
# maps are being updated, its resident memory, and its CPU at the default 5 s interval.
#
#   bench/agent.sh                    NAMESPACES=1200 live pid namespaces, SCRAPES=200, CPU_SECONDS=60
#   NAMESPACES=300 SCRAPES=50 CPU_SECONDS=20 bench/agent.sh
#
# Each namespace is a swoll-workload that makes a few kinds of calls (getppid, a failing openat,
# a 5 ms sleep, plus its setup's) and then sleeps, so its keys stay in the map; a steady getppid
# load keeps the maps changing while /metrics is scraped. Prints the series count, scrape
# latency p50/p99, the agent's RSS and its CPU as a share of one core.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q
cargo build --release --locked -q -p swoll-kernel-tests --bin swoll-workload
NAMESPACES=${NAMESPACES:-1200}
SCRAPES=${SCRAPES:-200}
CPU_SECONDS=${CPU_SECONDS:-60}
addr=127.0.0.1:19097
tmp=$(mktemp -d)
pids=()
cleanup() {
	((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

target/release/swoll serve --listen "$addr" --interval 5s --no-traces 2>"$tmp/agent.log" &
agent=$!
pids+=("$agent")
until curl -sf "http://$addr/readyz" >/dev/null; do sleep 0.2; done

hold=$(((CPU_SECONDS + 120) * 1000))
for ((i = 0; i < NAMESPACES; i++)); do
	target/release/swoll-workload --new-pidns --hold "$hold" getppid 1 openat-missing 1 \
		nanosleep-5ms 1 >/dev/null &
	pids+=("$!")
done
target/release/swoll-workload --repeat-for $((CPU_SECONDS + 120)) getppid 2000 >/dev/null &
pids+=("$!")
sleep 12 # two reads: every namespace resolved and rendered

series=$(curl -s "http://$addr/metrics" | awk '/^swoll_syscall_series / {print $2}')
for ((i = 0; i < SCRAPES; i++)); do
	curl -s -o /dev/null -w '%{time_total}\n' "http://$addr/metrics"
done | sort -n >"$tmp/latency"
p50=$(awk -v n="$SCRAPES" 'NR == int(n * 0.5 + 0.5) {printf "%.1f", $1 * 1000}' "$tmp/latency")
p99=$(awk -v n="$SCRAPES" 'NR == int(n * 0.99 + 0.5) {printf "%.1f", $1 * 1000}' "$tmp/latency")
rss=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$agent/status")
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
before=$(cpu)
sleep "$CPU_SECONDS"
after=$(cpu)
share=$(awk -v d=$((after - before)) -v hz="$ticks" -v s="$CPU_SECONDS" \
	'BEGIN {printf "%.2f", 100 * d / hz / s}')
entries=$(curl -s "http://$addr/metrics" | awk '/^swoll_map_entries\{map="SWOLL_METRICS"\}/ {print $2}')

printf 'series per family  %s (map entries %s)\n' "$series" "$entries"
printf 'scrape /metrics    p50 %s ms, p99 %s ms (%s scrapes)\n' "$p50" "$p99" "$SCRAPES"
printf 'agent RSS          %s MiB\n' "$rss"
printf 'agent CPU          %s%% of one core over %s s at a 5 s interval\n' "$share" "$CPU_SECONDS"
