#!/usr/bin/env bash
# The agent's own costs with many series (needs root): its resident memory with an empty map
# (the fixed cost) and with a full one, scrape latency of /metrics while the maps are being
# updated, and its CPU at the default 5 s interval.
#
#   bench/agent.sh                          1,200 namespaces x ~56 keys: the default 65,536-entry map, full
#   KEYS=0 bench/agent.sh                   1,200 namespaces x ~19 keys (~23,000 series)
#   NAMESPACES=300 SCRAPES=50 CPU_SECONDS=20 bench/agent.sh
#   SWOLL=/tmp/swoll-before bench/agent.sh  another build of the agent (a before/after comparison)
#
# Each namespace is a swoll-workload that makes a few kinds of calls (getppid, a failing openat,
# a 5 ms sleep, plus its setup's: about 19 keys) and KEYS calls of distinct syscall numbers no
# kernel has (ENOSYS: one key each), then sleeps, so its keys stay in the map; a steady getppid
# load keeps the maps changing while /metrics is scraped. With the defaults there are more keys
# than the map holds, so it stays full and the LRU evicts (the agent keeps exporting evicted
# keys' final values). Prints the RSS floor, the series and map entries, scrape latency
# p50/p99, the agent's RSS (now and peak) and its CPU as a share of one core.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SWOLL=${SWOLL:-}
if [[ -z $SWOLL ]]; then
	cargo build --release --locked -q
	SWOLL=target/release/swoll
fi
cargo build --release --locked -q -p swoll-kernel-tests --bin swoll-workload
NAMESPACES=${NAMESPACES:-1200}
KEYS=${KEYS:-36}
SCRAPES=${SCRAPES:-200}
CPU_SECONDS=${CPU_SECONDS:-60}
MAP_SIZE=${MAP_SIZE:-65536}
addr=127.0.0.1:19097
tmp=$(mktemp -d)
pids=()
cleanup() {
	((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
rss() { awk -v f="$2" '$1 == f ":" {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
metric() { curl -s "http://$addr/metrics" | awk -v m="$1" 'index($0, m " ") == 1 {print $2}'; }

# The floor: the agent with an empty map (host not counted, no other namespace), after a few
# reads.
"$SWOLL" serve --listen "$addr" --interval 1s --no-host --no-traces --no-pin \
	--map-size "$MAP_SIZE" 2>"$tmp/floor.log" &
floor=$!
until curl -sf "http://$addr/readyz" >/dev/null; do sleep 0.2; done
sleep 3
for ((i = 0; i < 5; i++)); do curl -s -o /dev/null "http://$addr/metrics"; done
floor_rss=$(rss "$floor" VmRSS)
floor_entries=$(metric 'swoll_map_entries{map="SWOLL_METRICS"}')
kill "$floor"
wait "$floor" 2>/dev/null || true

"$SWOLL" serve --listen "$addr" --interval 5s --no-traces --no-pin --map-size "$MAP_SIZE" \
	2>"$tmp/agent.log" &
agent=$!
pids+=("$agent")
until curl -sf "http://$addr/readyz" >/dev/null; do sleep 0.2; done

hold=$(((CPU_SECONDS + 120) * 1000))
extra=()
((KEYS > 0)) && extra=(enosys "$KEYS")
for ((i = 0; i < NAMESPACES; i++)); do
	target/release/swoll-workload --new-pidns --hold "$hold" getppid 1 openat-missing 1 \
		nanosleep-5ms 1 "${extra[@]}" >/dev/null &
	pids+=("$!")
done
target/release/swoll-workload --repeat-for $((CPU_SECONDS + 120)) getppid 2000 >/dev/null &
pids+=("$!")
sleep 12 # two reads: every namespace resolved and rendered

series=$(metric swoll_syscall_series)
for ((i = 0; i < SCRAPES; i++)); do
	curl -s -o /dev/null -w '%{time_total}\n' "http://$addr/metrics"
done | sort -n >"$tmp/latency"
p50=$(awk -v n="$SCRAPES" 'NR == int(n * 0.5 + 0.5) {printf "%.1f", $1 * 1000}' "$tmp/latency")
p99=$(awk -v n="$SCRAPES" 'NR == int(n * 0.99 + 0.5) {printf "%.1f", $1 * 1000}' "$tmp/latency")
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
before=$(cpu)
sleep "$CPU_SECONDS"
after=$(cpu)
share=$(awk -v d=$((after - before)) -v hz="$ticks" -v s="$CPU_SECONDS" \
	'BEGIN {printf "%.2f", 100 * d / hz / s}')
entries=$(metric 'swoll_map_entries{map="SWOLL_METRICS"}')
evictions=$(metric 'swoll_map_evictions_total{map="SWOLL_METRICS"}')

printf 'agent RSS, empty   %s MiB (map entries %s)\n' "$floor_rss" "$floor_entries"
printf 'series per family  %s (map entries %s of %s, evictions seen %s)\n' \
	"$series" "$entries" "$MAP_SIZE" "$evictions"
printf 'scrape /metrics    p50 %s ms, p99 %s ms (%s scrapes)\n' "$p50" "$p99" "$SCRAPES"
printf 'agent RSS          %s MiB (peak %s MiB)\n' "$(rss "$agent" VmRSS)" "$(rss "$agent" VmHWM)"
printf 'agent CPU          %s%% of one core over %s s at a 5 s interval\n' "$share" "$CPU_SECONDS"
