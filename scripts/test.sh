#!/usr/bin/env bash
# Sets up and runs swoll's whole test suite: formatting, lints, unit tests, the kernel tests that
# load the real probes into this kernel, the same kernel tests on Debian's 5.10, 6.1, 6.12 and
# 7.x kernels in VMs, the architecture's kernel tests on Debian's arm64 6.1 and 6.12 kernels in
# emulated aarch64 VMs, the image's binary for both its platforms, and a real Prometheus
# scraping the agent. Root is needed for everything
# that touches the kernel; under CI=true nothing that needs it may skip.
#
#   SWOLL_KERNELS="6.1 7.3" scripts/test.sh     only these VM kernels ("none": no VMs)
#   SWOLL_ARM64_KERNELS="trixie" scripts/test.sh  only these arm64 VM kernels ("none": none)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
# The chart must render to deploy/kubernetes/ exactly (setup installed Helm's engine).
export SWOLL_REQUIRE_HELM=1

step() { printf '\n== %s\n' "$*" >&2; }
root=0
[[ $(id -u) == 0 ]] && root=1
((root)) || echo "not root: kernel tests and VMs will skip (CI runs them as root)" >&2

step "format"
cargo fmt --all --check

step "generated tables are up to date"
scripts/check-generated.sh

step "the module graph points one way (no import cycle)"
scripts/module-graph.py userspace/src
scripts/module-graph.py decode/src

step "clippy (userspace, schema, tests)"
cargo clippy --locked --release --workspace --exclude swoll-probes --all-targets -- -D warnings
step "clippy (probes, for bpfel-unknown-none)"
(cd probes && cargo +nightly clippy --locked --release --target bpfel-unknown-none -Z build-std=core -- -D warnings)

step "fuzz (decode_event, trace_spec, cgroup_path, btf: ${SWOLL_FUZZ_SECONDS:=20}s each)"
SWOLL_FUZZ_SECONDS=$SWOLL_FUZZ_SECONDS scripts/fuzz.sh

step "build"
cargo build --locked --release
cargo test --locked --release --workspace --exclude swoll-probes --no-run

step "the image's binaries for linux/amd64 and linux/arm64 (as the Dockerfile builds them)"
image_out=$(mktemp -d)
for arch in amd64 arm64; do scripts/image-binary.sh "$arch" "$image_out/$arch/swoll"; done
rm -rf "$image_out"

# The seed README's `offset 5m` query needs five and a half minutes of scrapes: it runs on the
# host in the background while the VMs boot.
slow=seed_readme_offset_ratio_query
slow_log=$(mktemp)
step "background: $slow (about 5.5 minutes)"
# Run the test binary itself: `cargo test` would hold the build directory's lock meanwhile.
prometheus_bin=$(cargo test --locked --release -p swoll-kernel-tests --test prometheus --no-run 2>&1 |
	sed -nE 's/.*Executable .*\((.*)\)$/\1/p')
"$prometheus_bin" --exact "$slow" >"$slow_log" 2>&1 &
slow_pid=$!

vm_status=0
if [[ ${SWOLL_KERNELS:-} != none ]]; then
	step "kernel tests on other kernels (VMs)"
	if ((root)); then
		scripts/fetch-kernels.sh >/dev/null
		# In the VMs, the tests whose subject is not the kernel are filtered out (they run on the
		# host below): under TCG emulation Prometheus' one-second scrapes of an agent that also
		# watches an API server time out, and a terminal UI redraws too slowly for its timeouts.
		vm_only="--skip $slow --skip seed_readme_queries_verbatim_against_prometheus"
		vm_only+=" --skip ui_shows_filters_and_quits_in_tmux"
		# Millions of syscalls under emulation take minutes; the stress test's subject is the
		# agent's reads and scrapes, which the host run covers.
		vm_only+=" --skip four_namespaces_hammered_while_scraped_every_100ms_count_exactly"
		vm_only+=" --skip a_hundred_concurrent_scrapers_for_30s_all_succeed_with_flat_memory"
		vm_only+=" --skip a_small_map_under_10000_short_lived_namespaces_stays_bounded_and_monotonic"
		# Its subject is the agent's trace thread under a flood (bounded drain, timely ends, an
		# answering listener), with time bounds set for a real CPU, not for emulation.
		vm_only+=" --skip a_saturating_trace_never_starves_the_agent"
		# Likewise the agent's HTTP listeners under 500 stalled clients: time bounds for a real
		# CPU, and nothing in it depends on the kernel's version.
		vm_only+=" --skip clients_that_never_read_pin_nothing_and_are_cut_off"
		# A container runtime in an emulated guest whose root is the host's, shared read-only, is
		# not the subject of the real-runtime tests (tests/kernel/tests/{runtime,seccomp}.rs): the host run
		# covers them.
		vm_only+=" --skip containers_in_kubelet_pod_cgroups_are_counted_exactly_under_their_pods_by_a_containerized_agent"
		vm_only+=" --skip the_agents_container_killed_and_run_again_on_its_pins_continues_the_counts_exactly"
		vm_only+=" --skip a_profile_from_the_counters_runs_the_workload_under_runc_and_denies_what_it_never_did"
		# Authentication, TLS and the traces' recorded ends are the Kubernetes API's and the
		# listeners' subject, not the kernel's (trace.rs and trace_configmap.rs cover trace mode
		# there): tests/kernel/tests/{authn,trace_crd}.rs and the ConfigMap trace's restart run on the host.
		vm_only+=" --skip metrics_need_a_reviewed_token_and_a_grant"
		vm_only+=" --skip trace_streams_take_their_token_from_a_file"
		vm_only+=" --skip tls_serves_the_mounted_certificate_and_its_renewal"
		vm_only+=" --skip trace_streams_need_a_grant_of_their_path"
		vm_only+=" --skip a_trace_follows_pods_of_its_own_namespace_and_reports_them"
		vm_only+=" --skip an_ended_trace_stays_ended_when_the_agent_restarts"
		vm_only+=" --skip status_patches_of_two_nodes_do_not_clobber_each_other"
		vm_only+=" --skip an_ended_configmap_trace_stays_ended_when_the_agent_restarts"
		SWOLL_TEST_ARGS="$vm_only" scripts/multikernel.sh || vm_status=$?
	elif [[ ${CI:-} == true ]]; then
		echo "CI=true but not root: the VM kernel tests cannot run" >&2
		vm_status=1
	else
		echo "skipping VM kernel tests: not root" >&2
	fi
fi

arm64_status=0
if [[ ${SWOLL_ARM64_KERNELS:-} != none ]]; then
	step "architecture tests on arm64 kernels (aarch64 VMs)"
	if ((root)); then
		# scripts/arm64.sh runs, whole, the test targets whose subject is the architecture
		# (counts, pidns, latency, trace, selftest): about a minute per kernel under emulation.
		scripts/arm64.sh || arm64_status=$?
	elif [[ ${CI:-} == true ]]; then
		echo "CI=true but not root: the arm64 kernel tests cannot run" >&2
		arm64_status=1
	else
		echo "skipping arm64 kernel tests: not root" >&2
	fi
fi

slow_status=0
wait "$slow_pid" || slow_status=$?
step "$slow (host) output"
grep -E '^test |test result|panicked|skipping' "$slow_log" >&2 || true
((slow_status == 0)) || cat "$slow_log" >&2
rm -f "$slow_log"

step "unit tests and kernel tests on this kernel ($(uname -r))"
host_log=$(mktemp)
set +e
cargo test --locked --release --workspace --exclude swoll-probes -- --skip "$slow" 2>&1 |
	tee "$host_log"
host_status=${PIPESTATUS[0]}
set -e
# One closing line for the whole host run (cargo's last summary is that of a doctest target).
awk '/^test result:/ { p += $4; f += $6 } END { printf "host: %d passed, %d failed\n", p, f }' \
	"$host_log"
rm -f "$host_log"
((host_status == 0)) || exit "$host_status"

if ((vm_status || arm64_status || slow_status)); then
	echo "FAILED: VM kernel tests exit $vm_status, arm64 kernel tests exit $arm64_status, $slow exit $slow_status" >&2
	exit 1
fi
