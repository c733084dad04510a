# syntax=docker/dockerfile:1
# The swoll agent's image: the release binary, its eBPF programs embedded, and nothing else.
#
#   docker build -t ghcr.io/swoll-rs/swoll:0.1.0 .
#
# Run it the way the DaemonSet (deploy/) does: as root with only the capabilities BPF, PERFMON,
# SYS_PTRACE and SYS_RESOURCE, no_new_privs, a read-only root, seccomp and AppArmor unconfined
# (deploy/README.md says why), the host's /proc at /host/proc, its BTF and cgroups read-only,
# and its bpffs for the pins, e.g.
#
#   docker run --rm --cap-drop ALL --cap-add BPF --cap-add PERFMON --cap-add SYS_PTRACE \
#     --cap-add SYS_RESOURCE --security-opt no-new-privileges --read-only \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined -p 9095:9095 \
#     -v /proc:/host/proc:ro -v /sys/kernel/btf:/sys/kernel/btf:ro \
#     -v /sys/fs/cgroup:/sys/fs/cgroup:ro -v /sys/fs/bpf:/sys/fs/bpf:rslave \
#     ghcr.io/swoll-rs/swoll:0.1.0 serve --pin-path=/sys/fs/bpf/swoll

# Build: the toolchain a developer's machine gets from scripts/setup.sh (nightly's rust-src for
# the probes, LLVM 22 from Debian, bpf-linker), then one release build, which builds the probes
# too. setup.sh runs before the sources are copied, so the toolchain layer survives code changes.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    scripts/setup.sh
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/swoll /out/swoll

# Run: glibc and libgcc_s are all the binary links (rustls, no OpenSSL); no shell, no package
# manager.
FROM gcr.io/distroless/cc-debian12 AS runtime
COPY --from=build /out/swoll /usr/local/bin/swoll
# Defaults for a container: listen beyond loopback, read the host's procfs where the DaemonSet
# mounts it. Flags override them.
ENV SWOLL_LISTEN=0.0.0.0:9095 \
    SWOLL_PROC_ROOT=/host/proc
EXPOSE 9095
# Root on purpose: Kubernetes and Docker grant added capabilities only to uid 0 (a non-root
# process gets them in its bounding set, not its effective set, and cannot load BPF). Drop every
# other capability where it runs (deploy/ does: drop ALL, add the four above).
USER 0:0
ENTRYPOINT ["/usr/local/bin/swoll"]
CMD ["serve"]
