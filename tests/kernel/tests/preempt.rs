//! Several busy threads on one CPU: on kernels that run the syscall tracepoints' programs with
//! preemption on (7.x), a thread preempted inside a probe makes the kernel skip that probe for
//! every other thread of its CPU until it runs again. The count must be exact where the kernel
//! skipped nothing (6.18 and older), and every call missing must be one the kernel reports
//! skipped (`recursion_misses`) where it did. The share skipped is printed: on 7.3 (one vCPU)
//! it was 19 to 33% of the calls in three runs (11 to 12% in two since the namespace slots
//! shortened `sys_exit`), and as much with the probes' bodies run with
//! preemption off through `bpf_preempt_disable` (an experiment not kept; see README,
//! Reliability: a preemption asked for inside the region happens at its end, still inside the
//! probe's run).
use swoll_kernel_tests::{
    assert_counted, exit_misses, is_root, load, options, skip, value, workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

/// Restores the calling thread's CPU affinity when dropped.
struct Pinned(libc::cpu_set_t);

impl Pinned {
    /// Pins the calling thread (and so the processes it spawns) to one CPU it may run on.
    fn to_one_cpu() -> Pinned {
        // SAFETY: `cpu_set_t` is plain bits; the calls read and write only the set passed, of
        // the size passed, for the calling thread (pid 0).
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(
                libc::sched_getaffinity(0, size, &mut old),
                0,
                "sched_getaffinity"
            );
            let cpu = (0..libc::CPU_SETSIZE as usize)
                .find(|&cpu| libc::CPU_ISSET(cpu, &old))
                .expect("a CPU to run on");
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            assert_eq!(
                libc::sched_setaffinity(0, size, &one),
                0,
                "sched_setaffinity"
            );
            Pinned(old)
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: as in `to_one_cpu`.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// Runs of `sys_enter` and `sys_exit` the kernel skipped so far.
fn all_misses(probes: &swoll::loader::Probes) -> u64 {
    probes
        .recursion_misses()
        .map_or(0, |m| m.iter().map(|(_, n)| n).sum())
}

#[test]
fn eight_threads_on_one_cpu_are_counted_exactly() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(probes) = load(&options()) else {
        return;
    };
    let (threads, per_thread) = (8u64, 4000u64);
    let (exits_before, all_before) = (exit_misses(&probes), all_misses(&probes));
    let ns = {
        let _pinned = Pinned::to_one_cpu();
        workload(
            WORKLOAD,
            &[
                "--new-pidns",
                "--threads",
                &threads.to_string(),
                "openat-missing",
                &per_thread.to_string(),
            ],
        )
    };
    let calls = threads * per_thread;
    let counted = value(&probes, ns, libc::SYS_openat, libc::ENOENT).count;
    let exit_missed = exit_misses(&probes) - exits_before;
    let missed = all_misses(&probes) - all_before;
    eprintln!(
        "{threads} threads on one CPU: {counted} of {calls} openat counted; the kernel skipped \
         {missed} probe runs ({exit_missed} of sys_exit, {:.2}% of the calls) while they ran",
        exit_missed as f64 * 100.0 / calls as f64,
    );
    assert_counted(
        &probes,
        ns,
        libc::SYS_openat,
        libc::ENOENT,
        calls,
        exits_before,
    );
}
