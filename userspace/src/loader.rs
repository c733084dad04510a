//! Loads the embedded probes into the running kernel and attaches them.
//!
//! The only module that touches `aya::programs`: it reads the running kernel's struct offsets
//! from BTF, patches them and the agent's filter settings into the probes' config global, sizes
//! the maps, and attaches the two raw tracepoints. Dropping the returned [`Probes`] detaches
//! everything.
use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::RawTracePoint,
};
use swoll_maps_schema::{
    config::{self, FLAG_COUNT_HOST, FLAG_COUNT_SELF, FLAG_TASK_BTF, FLAG_TIME, ProbeConfig},
    metrics::{self, MetricKey, MetricValue},
    pidns::{self, PidNsSeen},
    programs, start, stats,
};

use crate::{
    btf::{self, Btf, BtfError},
    maps::Maps,
};

/// The probes' object file, built by `build.rs` for `bpfel-unknown-none`.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/swoll-probes"));

/// What the probes count, and how big their maps are.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Entries of the metrics map: distinct (pid-ns, syscall, errno) keys kept in the kernel.
    pub map_size: u32,
    /// Count processes of the host pid namespace.
    pub count_host: bool,
    /// Count the agent's own syscalls.
    pub count_self: bool,
    /// Time syscalls (the `sys_enter` hook); off means counts only.
    pub time: bool,
    /// Inode of the pid namespace treated as the host's.
    pub host_pid_ns: u32,
    /// Process id of the agent, excluded unless `count_self`.
    pub self_tgid: u32,
    /// Where the kernel's BTF is read from.
    pub btf_path: PathBuf,
}

impl LoadOptions {
    /// The defaults of `swoll serve` for this process: count everything but ourselves, timed.
    pub fn for_this_process(host_pid_ns: u32) -> Self {
        Self {
            map_size: metrics::DEFAULT_ENTRIES,
            count_host: true,
            count_self: false,
            time: true,
            host_pid_ns,
            self_tgid: std::process::id(),
            btf_path: PathBuf::from(btf::VMLINUX),
        }
    }
}

/// Why the probes could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The kernel's BTF could not be read or lacks a struct member the probes need.
    #[error("reading kernel struct offsets from BTF")]
    Btf(#[from] BtfError),
    /// The kernel refused the object (maps or programs); the source carries the verifier log.
    #[error("loading the probes into the kernel (are you root, with CAP_BPF and CAP_PERFMON?)")]
    Load(#[source] aya::EbpfError),
    /// A program the object should hold is missing or of the wrong type.
    #[error("program {name} in the probes")]
    Program {
        /// The program's name.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map the object should hold is missing or of the wrong type.
    #[error("map {name} in the probes")]
    Map {
        /// The map's name.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: aya::maps::MapError,
    },
    /// A map is absent from the object.
    #[error("map {0} is missing from the probes' object")]
    MissingMap(&'static str),
    /// `--map-size` is out of range.
    #[error("map size {0} is out of range (1..=16777216)")]
    MapSize(u32),
}

/// The loaded, attached probes and their maps. Dropping it detaches the programs and frees the
/// maps.
pub struct Probes {
    /// Holds the programs (and with them the attachments).
    ebpf: Ebpf,
    /// The maps userspace reads.
    pub maps: Maps,
}

/// The kernel's run statistics of the probes (`BPF_ENABLE_STATS`): time spent in them and how
/// often they ran, cumulative since load. Zero unless statistics are enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Nanoseconds spent in `sys_enter` and `sys_exit` together.
    pub run_time_ns: u64,
    /// Runs of `sys_exit`: one per syscall that returned.
    pub exits: u64,
}

impl Probes {
    /// Runs of each program (`sys_enter`, `sys_exit`) the kernel skipped because the same
    /// program was already running on that CPU: on kernels whose syscall tracepoints run BPF
    /// preemptibly (seen on 7.x), a task preempted inside a probe makes the next task on its CPU
    /// skip the probe. Every skipped `sys_exit` is a lost call. Read from
    /// `/proc/self/fdinfo/<prog fd>` (`recursion_misses`, Linux 5.12+); `None` where absent.
    pub fn recursion_misses(&self) -> Option<[(&'static str, u64); 2]> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let misses = |name: &'static str| -> Option<(&'static str, u64)> {
            let fd = self.ebpf.program(name)?.fd().ok()?.as_fd().as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
            let n = info
                .lines()
                .find_map(|l| l.strip_prefix("recursion_misses:"))?
                .trim()
                .parse()
                .ok()?;
            Some((name, n))
        };
        Some([misses(programs::SYS_ENTER)?, misses(programs::SYS_EXIT)?])
    }

    /// The probes' run statistics, if the kernel reports them.
    pub fn run_stats(&self) -> Option<RunStats> {
        let mut stats = RunStats::default();
        for name in [programs::SYS_ENTER, programs::SYS_EXIT] {
            let prog: &RawTracePoint = self.ebpf.program(name)?.try_into().ok()?;
            let info = prog.info().ok()?;
            let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            stats.run_time_ns = stats.run_time_ns.saturating_add(ns);
            if name == programs::SYS_EXIT {
                stats.exits = info.run_count();
            }
        }
        Some(stats)
    }
}

/// Turns on the kernel's BPF run-time statistics for as long as the returned fd lives
/// (`BPF_ENABLE_STATS`, Linux 5.8+). They cost every BPF program on the host two clock reads
/// per run (tens of ns), which is why they are opt-in.
pub fn enable_run_stats() -> std::io::Result<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("maps", &self.maps)
            .finish_non_exhaustive()
    }
}

/// Loads the probes with `opts` and attaches them to `raw_syscalls` `sys_enter`/`sys_exit`.
pub fn load(opts: &LoadOptions) -> Result<Probes, LoadError> {
    if opts.map_size == 0 || opts.map_size > 1 << 24 {
        return Err(LoadError::MapSize(opts.map_size));
    }
    raise_memlock_limit();
    let offsets = btf::kernel_offsets(&Btf::from_file(&opts.btf_path)?)?;
    let mut flags = 0;
    for (on, flag) in [
        (opts.count_host, FLAG_COUNT_HOST),
        (opts.count_self, FLAG_COUNT_SELF),
        (opts.time, FLAG_TIME),
        (has_task_btf(), FLAG_TASK_BTF),
    ] {
        if on {
            flags |= flag;
        }
    }
    let probe_config = ProbeConfig {
        flags,
        self_tgid: opts.self_tgid,
        host_pid_ns: opts.host_pid_ns,
        _pad: 0,
        offsets,
    };
    let mut ebpf = EbpfLoader::new()
        .override_global(config::GLOBAL, &probe_config, true)
        .map_max_entries(metrics::MAP, opts.map_size)
        .map_max_entries(start::MAP, start::DEFAULT_ENTRIES)
        .load(PROBES)
        .map_err(LoadError::Load)?;

    // Attach exit first: a call is only timed if both hooks see it, but it is counted as soon
    // as sys_exit runs.
    for name in [programs::SYS_EXIT, programs::SYS_ENTER] {
        let program = |source| LoadError::Program { name, source };
        let prog: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or(LoadError::Program {
                name,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(program)?;
        prog.load().map_err(program)?;
        prog.attach(name).map_err(program)?;
    }

    let metrics_map = ebpf
        .take_map(metrics::MAP)
        .ok_or(LoadError::MissingMap(metrics::MAP))?;
    let metrics_map: PerCpuHashMap<MapData, MetricKey, MetricValue> =
        metrics_map.try_into().map_err(|source| LoadError::Map {
            name: metrics::MAP,
            source,
        })?;
    let stats_map = ebpf
        .take_map(stats::MAP)
        .ok_or(LoadError::MissingMap(stats::MAP))?;
    let stats_map: PerCpuArray<MapData, u64> =
        stats_map.try_into().map_err(|source| LoadError::Map {
            name: stats::MAP,
            source,
        })?;
    let pidns_map = ebpf
        .take_map(pidns::MAP)
        .ok_or(LoadError::MissingMap(pidns::MAP))?;
    let pidns_map: HashMap<MapData, u32, PidNsSeen> =
        pidns_map.try_into().map_err(|source| LoadError::Map {
            name: pidns::MAP,
            source,
        })?;
    Ok(Probes {
        ebpf,
        maps: Maps::new(metrics_map, stats_map, pidns_map, opts.map_size),
    })
}

/// Whether the running kernel has `bpf_get_current_task_btf` (Linux 5.11 and newer).
pub fn has_task_btf() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| crate::selftest::parse_release(r.trim()))
        .is_some_and(|v| v >= (5, 11))
}

/// How the probes read the task on this kernel, for logs and `swoll selftest`.
pub fn task_read_path() -> &'static str {
    if has_task_btf() {
        "pid-ns read with direct BTF loads (bpf_get_current_task_btf, 5.11+)"
    } else {
        "pid-ns read with bpf_probe_read_kernel (kernel before 5.11)"
    }
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`; lift it so map creation does not
/// fail there. Newer kernels use memory cgroups and ignore it. Failure is not fatal: the load
/// itself reports a clear error if memory really is short.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and touches no other memory.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}
