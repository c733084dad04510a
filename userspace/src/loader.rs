//! Loads the embedded probes into the running kernel and attaches them.
//!
//! The only module that touches `aya::programs`: it reads the running kernel's struct offsets
//! from BTF, patches them and the agent's filter settings into the probes' config global, sizes
//! the maps, and attaches the two raw tracepoints. Dropping the returned [`Probes`] detaches
//! everything.
use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::RawTracePoint,
};
use swoll_maps_schema::{
    config::{
        self, FLAG_COUNT_HOST, FLAG_COUNT_SELF, FLAG_HISTOGRAM, FLAG_TASK_BTF, FLAG_TIME,
        ProbeConfig,
    },
    histogram::{self, LatencyBuckets},
    metrics::{self, MetricKey, MetricValue},
    pidns::{self, PidNsSeen},
    programs, start, stats,
    trace::{self, Rule, RuleKey, SyscallCapture, TraceConfig},
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
    /// Keep a latency histogram per key (`--histogram`; needs `time`). Off by default: it
    /// costs every syscall a second map lookup, and its map `map_size × CPUs × 256` bytes.
    pub histogram: bool,
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
            histogram: false,
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
    /// The trace ring buffer size is not a power of two between 4 KiB and 1 GiB.
    #[error("trace ring buffer size {0} is not a power of two in 4096..=1073741824")]
    RingSize(u32),
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
        Some([
            recursion_misses(&self.ebpf, programs::SYS_ENTER)?,
            recursion_misses(&self.ebpf, programs::SYS_EXIT)?,
        ])
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

/// Runs of program `name` the kernel skipped (see [`Probes::recursion_misses`]).
fn recursion_misses(ebpf: &Ebpf, name: &'static str) -> Option<(&'static str, u64)> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = ebpf.program(name)?.fd().ok()?.as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let n = info
        .lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))?
        .trim()
        .parse()
        .ok()?;
    Some((name, n))
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
    // Only timed calls have a latency to place.
    let histogram = opts.histogram && opts.time;
    let mut flags = 0;
    for (on, flag) in [
        (opts.count_host, FLAG_COUNT_HOST),
        (opts.count_self, FLAG_COUNT_SELF),
        (opts.time, FLAG_TIME),
        (has_task_btf(), FLAG_TASK_BTF),
        (histogram, FLAG_HISTOGRAM),
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
        .map_max_entries(
            histogram::MAP,
            if histogram {
                opts.map_size
            } else {
                unused_map_entries()
            },
        )
        .map_max_entries(start::MAP, start::DEFAULT_ENTRIES)
        // The trace maps belong to `load_trace`'s load: the least the kernel accepts here.
        .map_max_entries(trace::RULES_MAP, 1)
        .map_max_entries(trace::ENTRY_MAP, unused_map_entries())
        .map_max_entries(trace::ENTER_DATA_MAP, unused_map_entries())
        .map_max_entries(trace::EVENTS_MAP, page_size())
        .load(PROBES)
        .map_err(LoadError::Load)?;

    // Attach exit first: a call is only timed if both hooks see it, but it is counted as soon
    // as sys_exit runs.
    attach(&mut ebpf, &[programs::SYS_EXIT, programs::SYS_ENTER])?;
    let metrics_map: PerCpuHashMap<MapData, MetricKey, MetricValue> =
        take_map(&mut ebpf, metrics::MAP)?;
    let stats_map: PerCpuArray<MapData, u64> = take_map(&mut ebpf, stats::MAP)?;
    let pidns_map: HashMap<MapData, u32, PidNsSeen> = take_map(&mut ebpf, pidns::MAP)?;
    let histogram_map: Option<PerCpuHashMap<MapData, MetricKey, LatencyBuckets>> = if histogram {
        Some(take_map(&mut ebpf, histogram::MAP)?)
    } else {
        None
    };
    Ok(Probes {
        ebpf,
        maps: Maps::new(
            metrics_map,
            histogram_map,
            stats_map,
            pidns_map,
            opts.map_size,
        ),
    })
}

/// The trace programs' maps, for `crate::trace` to fill the filter and read the events.
pub struct TraceMaps {
    /// The filter: (pid-ns, syscall) → trace slots and sampling, per CPU.
    pub rules: PerCpuHashMap<MapData, RuleKey, Rule>,
    /// What to capture per syscall number.
    pub syscalls: Array<MapData, SyscallCapture>,
    /// Events lost, per CPU, by trace mask.
    pub lost: PerCpuHashMap<MapData, u64, u64>,
    /// The events.
    pub events: RingBuf<MapData>,
}

impl std::fmt::Debug for TraceMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceMaps").finish_non_exhaustive()
    }
}

/// The trace programs, attached, with their maps. A load of its own, apart from the metrics
/// probes, so an agent loads it only while a trace runs (and frees its ring buffer after) and the
/// metrics programs never pay for tracing. Dropping it detaches the programs.
pub struct TraceProbes {
    /// Holds the programs (and with them the attachments).
    ebpf: Ebpf,
    /// The maps.
    pub maps: TraceMaps,
}

impl TraceProbes {
    /// Runs of `trace_enter` and `trace_exit` the kernel skipped, as
    /// [`Probes::recursion_misses`]: a skipped `trace_exit` is an event neither sent nor
    /// counted lost.
    pub fn recursion_misses(&self) -> Option<[(&'static str, u64); 2]> {
        Some([
            recursion_misses(&self.ebpf, programs::TRACE_ENTER)?,
            recursion_misses(&self.ebpf, programs::TRACE_EXIT)?,
        ])
    }
}

impl std::fmt::Debug for TraceProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceProbes").finish_non_exhaustive()
    }
}

/// Entries for the maps a load does not use (every map of the object is created): the least
/// the kernel accepts, one per possible CPU, since LRU maps with per-CPU lists need that many.
fn unused_map_entries() -> u32 {
    aya::util::nr_cpus()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1024)
        .max(1)
}

/// The smallest ring buffer the kernel accepts: one page.
fn page_size() -> u32 {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// Loads the trace programs with a ring buffer of `ring_bytes` and attaches them to
/// `raw_syscalls` `sys_enter`/`sys_exit`. Nothing is captured until a rule is added to
/// [`TraceMaps::rules`].
pub fn load_trace(
    btf_path: &std::path::Path,
    self_tgid: u32,
    ring_bytes: u32,
) -> Result<TraceProbes, LoadError> {
    if !ring_bytes.is_power_of_two() || !(4096..=1 << 30).contains(&ring_bytes) {
        return Err(LoadError::RingSize(ring_bytes));
    }
    raise_memlock_limit();
    let btf = Btf::from_file(btf_path)?;
    let probe_config = ProbeConfig {
        flags: if has_task_btf() { FLAG_TASK_BTF } else { 0 },
        self_tgid,
        host_pid_ns: 0,
        _pad: 0,
        offsets: btf::kernel_offsets(&btf)?,
    };
    let trace_config = TraceConfig {
        offsets: btf::trace_offsets(&btf)?,
    };
    let mut ebpf = EbpfLoader::new()
        .override_global(config::GLOBAL, &probe_config, true)
        .override_global(trace::GLOBAL, &trace_config, true)
        .map_max_entries(metrics::MAP, unused_map_entries())
        .map_max_entries(histogram::MAP, unused_map_entries())
        .map_max_entries(start::MAP, unused_map_entries())
        .map_max_entries(pidns::MAP, unused_map_entries())
        .map_max_entries(trace::EVENTS_MAP, ring_bytes)
        .load(PROBES)
        .map_err(LoadError::Load)?;
    // Attach exit first, so no call is entered with nobody to send it at exit.
    attach(&mut ebpf, &[programs::TRACE_EXIT, programs::TRACE_ENTER])?;
    let maps = TraceMaps {
        rules: take_map(&mut ebpf, trace::RULES_MAP)?,
        syscalls: take_map(&mut ebpf, trace::SYSCALLS_MAP)?,
        lost: take_map(&mut ebpf, trace::LOST_MAP)?,
        events: take_map(&mut ebpf, trace::EVENTS_MAP)?,
    };
    Ok(TraceProbes { ebpf, maps })
}

/// Loads and attaches raw tracepoint programs, each to the tracepoint its name's suffix names
/// (`sys_enter`/`sys_exit`).
fn attach(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), LoadError> {
    for &name in names {
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
        let tracepoint = if name.ends_with("enter") {
            "sys_enter"
        } else {
            "sys_exit"
        };
        prog.attach(tracepoint).map_err(program)?;
    }
    Ok(())
}

/// Takes map `name` out of `ebpf` as the typed map `M`.
fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, LoadError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    ebpf.take_map(name)
        .ok_or(LoadError::MissingMap(name))?
        .try_into()
        .map_err(|source| LoadError::Map { name, source })
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
