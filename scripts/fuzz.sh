#!/usr/bin/env bash
# Builds swoll's fuzz targets (fuzz/, cargo-fuzz on nightly with AddressSanitizer, debug
# assertions and overflow checks) and runs each for a bounded time: the parsers of what swoll
# does not control (ring-buffer events, trace specs from the ConfigMap, /proc/<pid>/cgroup, the
# running kernel's BTF).
# Exits non-zero if any target crashes, hangs or runs out of memory, and prints the input that
# did it with the command that replays it. Needs what `scripts/setup.sh --test` installs
# (nightly, cargo-fuzz).
#
#   scripts/fuzz.sh                           every target, 30 s each (about 2 minutes of runs
#                                             after a first build of about 2 minutes)
#   SWOLL_FUZZ_SECONDS=600 scripts/fuzz.sh    longer runs
#   scripts/fuzz.sh cgroup_path trace_spec    only these targets
#
# The seeds in fuzz/corpus/<target>/ are copied to a temporary directory first, so the runs never
# write into the repository; that directory is removed on success and kept when a target fails.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf 'fuzz: %s\n' "$*" >&2; }

seconds=${SWOLL_FUZZ_SECONDS:-30}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { log "SWOLL_FUZZ_SECONDS=$seconds is not a whole number of seconds"; exit 2; }
targets=("$@")
((${#targets[@]})) || targets=(decode_event trace_spec cgroup_path btf)

cargo +nightly fuzz --version >/dev/null 2>&1 || { log "cargo-fuzz is missing: run scripts/setup.sh --test"; exit 1; }

# cargo-fuzz has no --locked: check that fuzz/Cargo.lock needs no change before building.
cargo +nightly metadata --locked --format-version 1 >/dev/null
log "building ${targets[*]}"
for target in "${targets[@]}"; do
	cargo +nightly fuzz build "$target"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/swoll-fuzz.XXXXXX")
failed=()
for target in "${targets[@]}"; do
	mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
	cp -R "corpus/$target/." "$work/corpus/$target/"
	log "running $target for ${seconds}s"
	status=0
	# -timeout: an input that takes 10 s is a hang (libFuzzer's default would outlast the run).
	RUST_BACKTRACE=1 cargo +nightly fuzz run "$target" "$work/corpus/$target" -- \
		-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
		-artifact_prefix="$work/artifacts/$target/" -print_final_stats=1 \
		>"$work/$target.log" 2>&1 || status=$?
	# What libFuzzer keeps of a failure (not its slow-unit-* reports).
	found=$(find "$work/artifacts/$target" -type f \( -name 'crash-*' -o -name 'timeout-*' \
		-o -name 'oom-*' -o -name 'leak-*' \) | sort)
	if ((status == 0)) && [[ -z $found ]]; then
		grep -E '^Done [0-9]+ runs' "$work/$target.log" | sed "s/^/fuzz: $target: /" >&2 || true
		continue
	fi
	failed+=("$target")
	# The failure's report (panic message and backtrace, or sanitizer report) without the input's
	# hex dump; the whole log's end if no report is recognised.
	awk '/panicked at|==[0-9]+== ?ERROR|ALARM: working on/ { on = 1 }
		on && /^(0x|stat::)/ { next }
		on && n++ < 150 { print }
		END { exit !on }' "$work/$target.log" >&2 || tail -n 60 "$work/$target.log" >&2
	log "$target FAILED (exit $status)"
	for input in $found; do
		log "  input: $input"
		log "  replay: (cd fuzz && cargo +nightly fuzz run $target $input)"
	done
done

if ((${#failed[@]})); then
	log "FAILED: ${failed[*]}; corpora, logs and inputs are kept in $work"
	exit 1
fi
rm -rf "$work"
log "all ${#targets[@]} targets ran ${seconds}s each without a failure"
