# syntax=docker/dockerfile:1
# The swoll agent's image: the release binary, its eBPF programs embedded, and nothing else.
#
#   docker build -t ghcr.io/swoll-rs/swoll:0.1.0 .
#
# For both platforms Kubernetes nodes run (one manifest list; the builder needs buildx with the
# docker-container driver, e.g. `docker buildx create --use`):
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/swoll-rs/swoll:0.1.0 --push .
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
# the probes, LLVM 22 from Debian, bpf-linker, and with --cross the other platform's Rust std and
# cross gcc), then one release build, which builds the probes too. setup.sh runs before the
# sources are copied, so the toolchain layer survives code changes. The stage runs on the build
# machine's own platform and cross-compiles for the target's (scripts/image-binary.sh; the probes
# are the same bpfel bytecode on both): no emulated compiler. scripts/test.sh runs the same script
# for amd64 and arm64.
FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    scripts/setup.sh --cross
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/image-binary.sh "$TARGETARCH" /out/swoll

# Run: glibc and libgcc_s are all the binary links (rustls, no OpenSSL); no shell, no package
# manager. The image is multi-platform: the target's variant is taken.
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
