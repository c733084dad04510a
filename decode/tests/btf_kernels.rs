//! The BTF offset reader against the BTF of each kernel CI boots (Debian's 5.10, 6.1, 6.12
//! and 7.3), extracted by `scripts/fetch-kernels.sh` into `$SWOLL_CACHE/btf/<kver>.btf`: a
//! layout change shows up here in seconds, before any VM boots. The expected values were
//! read with `bpftool btf dump file … format raw`.
use std::path::PathBuf;

use swoll_decode::btf::{Btf, kernel_offsets, trace_offsets};
use swoll_maps_schema::config::KernelOffsets;

fn cache() -> PathBuf {
    PathBuf::from(std::env::var_os("SWOLL_CACHE").unwrap_or_else(|| "/var/cache/swoll".into()))
        .join("btf")
}

/// (kernel version prefix, task.thread_pid, pid.level, pid.numbers, pid_namespace.ns + ns_common.inum,
/// task.start_time)
const EXPECTED: &[(&str, u32, u32, u32, u32, u32)] = &[
    ("5.10.", 2336, 4, 96, 120 + 16, 2536),
    ("6.1.", 2520, 4, 96, 112 + 16, 2776),
    ("6.12.", 2536, 4, 112, 112 + 16, 2776),
    // 6.18 moved `inum` behind a new leading `ns_type`; 7.3 grew ns_common to 320 bytes.
    ("7.3.", 2976, 4, 128, 256 + 88, 3216),
];

/// The blobs are Debian's amd64 kernels: their `pt_regs` is x86_64's.
#[cfg(target_arch = "x86_64")]
#[test]
fn offsets_of_every_ci_kernel() {
    let dir = cache();
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    for &(prefix, thread_pid, level, numbers, inum, start_time) in EXPECTED {
        let blob = std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
        });
        let Some(blob) = blob else {
            assert!(
                !in_ci,
                "CI=true and no BTF blob for {prefix}x in {} (scripts/fetch-kernels.sh)",
                dir.display()
            );
            eprintln!(
                "skipping test - no BTF blob for {prefix}x in {}",
                dir.display()
            );
            continue;
        };
        let btf = Btf::from_file(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
        let got = kernel_offsets(&btf).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
        let want = KernelOffsets {
            task_thread_pid: thread_pid,
            pid_level: level,
            pid_numbers: numbers,
            upid_size: 16,
            upid_ns: 8,
            pid_ns_inum: inum,
            regs_syscall_nr: 120,
            task_start_time: start_time,
        };
        assert_eq!(got, want, "{}", blob.display());
        // Trace mode's offsets resolve on every kernel too; the x86_64 argument registers
        // have not moved since pt_regs was defined.
        let trace = trace_offsets(&btf).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
        assert_eq!(
            trace.regs_args,
            [112, 104, 96, 56, 72, 64],
            "{}",
            blob.display()
        );
        assert_eq!(trace.upid_nr, 0, "{}", blob.display());
    }
}
