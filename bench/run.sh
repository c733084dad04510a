#!/usr/bin/env bash
# Measures the ns swoll adds to every syscall, next to the floor (empty raw_tracepoint programs)
# and its peers, in one interleaved run (needs root). The harness is ../shared/bench's
# overhead.sh, vendored here; swoll slots in through its AGENT_CMD_<name> hooks.
#
#   bench/run.sh                      K=7 rounds, getppid/ebadf/enoent/mixed (~15 min)
#   K=3 WORKLOADS=getppid bench/run.sh
#   SWOLL_BIN=/path/to/swoll bench/run.sh   a given binary instead of building this tree
# Results: bench/results/<date>/summary.md
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
export PATH="$HOME/.cargo/bin:$PATH"
if [[ -z ${SWOLL_BIN:-} ]]; then
    cargo build --release --locked
fi
swoll=${SWOLL_BIN:-$PWD/target/release/swoll}

export AGENT_CMD_swoll="$swoll serve --listen 127.0.0.1:19095 --interval 5s --no-pin"
export AGENT_READY_RE_swoll="probes attached"
export AGENT_CMD_swoll_no_time="$swoll serve --listen 127.0.0.1:19096 --interval 5s --no-pin --no-time"
export AGENT_READY_RE_swoll_no_time="probes attached"
# Count-only swoll attaches sys_exit alone; the harness's default check waits for both programs.
export AGENT_CHECK_swoll_no_time=none
export AGENT_CMD_swoll_histogram="$swoll serve --listen 127.0.0.1:19097 --interval 5s --no-pin --histogram"
export AGENT_READY_RE_swoll_histogram="probes attached"
export TOOLS=${TOOLS:-"empty_raw ref_count bt_count syscount"}
export K=${K:-7}
exec bench/overhead.sh
