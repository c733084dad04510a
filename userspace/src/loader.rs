//! Loads the embedded probes into the running kernel and attaches them.
//!
//! The only module that touches `aya::programs`: it reads the running kernel's struct offsets
//! from BTF, patches them and the agent's filter settings into the probes' config global, sizes
//! the maps, and attaches the two raw tracepoints. With a pin path the metrics probes are pinned
//! (see [`crate::pins`]) and outlive the agent; without one, dropping the returned [`Probes`]
//! detaches everything. Nothing here looks a BPF object up by id (that needs `CAP_SYS_ADMIN`,
//! which the DaemonSet does not grant): pinned objects are opened by path.
use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, Queue, RingBuf},
    programs::{
        ProgramFd, ProgramType, RawTracePoint,
        links::{FdLink, PinnedLink},
        raw_trace_point::RawTracePointLinkId,
    },
    sys::{BpfHelper, is_helper_supported},
};
use swoll_maps_schema::{
    config::{
        self, FLAG_COUNT_HOST, FLAG_COUNT_SELF, FLAG_HISTOGRAM, FLAG_TASK_BTF, FLAG_TASK_REGS,
        FLAG_TIME, ProbeConfig,
    },
    histogram::{self, LatencyBuckets, SlotHistograms},
    metrics::{self, MetricKey, MetricValue},
    pidns::{self, PidNsSeen},
    programs,
    slots::{self, SlotCounts, SlotOwner},
    start, stats, thread,
    trace::{self, Rule, RuleKey, SyscallCapture, TraceConfig},
};

use crate::{
    btf::{self, Btf, BtfError},
    maps::{Maps, RunStats, Slots},
    pins::{self, Fingerprint, PinPathError},
};

/// The probes' object file, built by `build.rs` for `bpfel-unknown-none`.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/swoll-probes"));

/// What the probes count, and how big their maps are.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Entries of the metrics map: distinct (pid-ns, syscall, errno) keys kept in the kernel.
    pub map_size: u32,
    /// Namespace slots: pid namespaces whose calls are counted without a hash (see
    /// [`swoll_maps_schema::slots`]); 0 counts everything in the hash. Unused on kernels
    /// without `bpf_get_current_task_btf` (before 5.11).
    pub ns_slots: u32,
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
    /// Process id of the agent as the kernel knows it (the host's pid namespace), excluded
    /// unless `count_self`.
    pub self_tgid: u32,
    /// Where the kernel's BTF is read from.
    pub btf_path: PathBuf,
    /// The directory on a BPF filesystem to pin the metrics probes under, so they keep counting
    /// when the agent stops and the next agent continues their counters (`swoll serve`'s
    /// `--pin-path`); `None` pins nothing (`swoll serve` without `--pin-path` or with
    /// `--no-pin`, and every other subcommand, which must never touch an agent's pins).
    pub pin_path: Option<PathBuf>,
}

impl LoadOptions {
    /// The defaults of `swoll serve` for this process: count everything but ourselves, timed.
    pub fn for_this_process(host_pid_ns: u32) -> Self {
        Self {
            map_size: metrics::DEFAULT_ENTRIES,
            ns_slots: slots::DEFAULT_SLOTS,
            count_host: true,
            count_self: false,
            time: true,
            histogram: false,
            host_pid_ns,
            self_tgid: std::process::id(),
            btf_path: PathBuf::from(btf::VMLINUX),
            pin_path: None,
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
    /// `--ns-slots` is out of range.
    #[error("namespace slots {0} out of range (0..=65536)")]
    NsSlots(u32),
    /// The trace ring buffer size is not a power of two between 4 KiB and 1 GiB.
    #[error("trace ring buffer size {0} is not a power of two in 4096..=1073741824")]
    RingSize(u32),
    /// The pin path is not usable.
    #[error("the pin path")]
    PinPath(#[from] PinPathError),
    /// A map or link could not be pinned, or a pinned one opened.
    #[error("{what} {}", path.display())]
    Pin {
        /// What was done: "pinning", "opening the pinned".
        what: &'static str,
        /// The pin.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The loaded, attached probes and their maps. Dropping it detaches the programs and frees the
/// maps, unless they are pinned.
pub struct Probes {
    /// The attached programs (`sys_exit`, and `sys_enter` when timing), for their run
    /// statistics.
    programs: Vec<(&'static str, ProgramFd)>,
    /// Their attachments: closing a link detaches its program unless the link is pinned.
    _links: Vec<FdLink>,
    /// The pin set the probes live in, if pinned.
    pin_set: Option<PathBuf>,
    /// Whether the pin set was taken over from an earlier agent rather than loaded now.
    reused: bool,
    /// Since when, after boot, the probes count every call (see [`Probes::counting_since`]).
    counting_since: Option<std::time::Duration>,
    /// The maps userspace reads.
    pub maps: Maps,
}

impl Probes {
    /// Runs of each attached program the kernel skipped because the same program was already
    /// running on that CPU: on kernels whose syscall tracepoints run BPF preemptibly (seen on
    /// 7.x), a task preempted inside a probe makes the next task on its CPU skip the probe.
    /// Every skipped `sys_exit` is a lost call. Read from `/proc/self/fdinfo/<prog fd>`
    /// (`recursion_misses`, Linux 5.12+); `None` where absent.
    pub fn recursion_misses(&self) -> Option<Vec<(&'static str, u64)>> {
        self.programs
            .iter()
            .map(|(name, fd)| Some((*name, fdinfo(fd.as_fd(), "recursion_misses")?)))
            .collect()
    }

    /// The names of the attached programs: `sys_exit`, and `sys_enter` when timing.
    pub fn attached(&self) -> Vec<&'static str> {
        self.programs.iter().map(|(name, _)| *name).collect()
    }

    /// The probes' run statistics, if the kernel reports them.
    pub fn run_stats(&self) -> Option<RunStats> {
        let mut stats = RunStats::default();
        for (name, fd) in &self.programs {
            stats.run_time_ns = stats
                .run_time_ns
                .saturating_add(fdinfo(fd.as_fd(), "run_time_ns")?);
            if *name == programs::SYS_EXIT {
                stats.exits = fdinfo(fd.as_fd(), "run_cnt")?;
            }
        }
        Some(stats)
    }

    /// The pin set the probes live in; `None` when they are not pinned and stop with the agent.
    pub fn pin_set(&self) -> Option<&Path> {
        self.pin_set.as_deref()
    }

    /// Whether the probes were taken over, still counting, from a pin set an earlier agent left.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Since when the probes count every call, as time after boot (`CLOCK_BOOTTIME`, the clock
    /// of process start times): for probes loaded now, the moment they were attached; for
    /// probes taken over from pins, the moment the kernel loaded their `sys_exit` program (the
    /// earlier agent attached it moments later: calls in between were not counted). `None`
    /// if the kernel does not say (load times need Linux 4.13).
    pub fn counting_since(&self) -> Option<std::time::Duration> {
        self.counting_since
    }
}

/// A counter of the program behind `fd` from `/proc/self/fdinfo` (`run_time_ns`, `run_cnt`:
/// Linux 5.1+; `recursion_misses`: 5.12+); `None` where absent. One source for probes loaded
/// here and probes taken over from pins, which have no `aya` program object.
fn fdinfo(fd: BorrowedFd<'_>, key: &str) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .parse()
        .ok()
}

/// Runs of program `name` of `ebpf` the kernel skipped (see [`Probes::recursion_misses`]).
fn recursion_misses(ebpf: &Ebpf, name: &'static str) -> Option<(&'static str, u64)> {
    let fd = ebpf.program(name)?.fd().ok()?;
    Some((name, fdinfo(fd.as_fd(), "recursion_misses")?))
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

/// The maps a pin set holds, and so the maps userspace reads: `SWOLL_HISTOGRAM` only with
/// histograms, the namespace slots' only with slots (and their histograms only with both).
fn pinned_maps(histogram: bool, slots: bool) -> Vec<&'static str> {
    let mut maps = vec![metrics::MAP, pidns::MAP, stats::MAP, config::SELF_MAP];
    if histogram {
        maps.push(histogram::MAP);
    }
    if slots {
        maps.extend([
            slots::COUNTS_MAP,
            slots::OWNERS_MAP,
            slots::NS_MAP,
            slots::FREE_MAP,
        ]);
    }
    if histogram && slots {
        maps.push(histogram::SLOTS_MAP);
    }
    maps
}

/// A metrics program a load attaches, with the names of its pin files. The program is pinned
/// beside its link so the next agent can open it by path: the kernel finds a link's program
/// only by id, and a lookup by id needs `CAP_SYS_ADMIN`.
struct Hook {
    /// The program's name in the object, which also names its tracepoint.
    program: &'static str,
    /// The program's pin file.
    program_pin: &'static str,
    /// The pin file of the link that attaches it.
    link_pin: &'static str,
}

/// The metrics programs a load attaches, in the order they are attached: `sys_exit` first,
/// since a call is counted as soon as `sys_exit` runs (it is only timed if both hooks see it).
/// `sys_enter` only records start times, so without timing it is not attached at all: one
/// program run per syscall instead of two.
fn hooks(time: bool) -> &'static [Hook] {
    const ALL: [Hook; 2] = [
        Hook {
            program: programs::SYS_EXIT,
            program_pin: "prog_sys_exit",
            link_pin: "link_sys_exit",
        },
        Hook {
            program: programs::SYS_ENTER,
            program_pin: "prog_sys_enter",
            link_pin: "link_sys_enter",
        },
    ];
    if time { &ALL } else { &ALL[..1] }
}

/// Every file of a complete pin set: a set lacking one (an older agent's, which pinned no
/// programs, or one whose removal was cut short) is replaced, not taken over.
fn set_files(histogram: bool, slots: bool, time: bool) -> Vec<&'static str> {
    let mut files = pinned_maps(histogram, slots);
    for hook in hooks(time) {
        files.extend([hook.program_pin, hook.link_pin]);
    }
    files
}

/// The fingerprint of a load: the probes' object, the ABI version, the patched config and the
/// sizes the loader gives the maps userspace reads. Whatever else shapes a load (the start-time
/// map's size, the kernel's offsets, the flags) is in the config; a different fingerprint is a
/// different pin set.
fn fingerprint(plan: &Plan<'_>) -> Fingerprint {
    let config = &plan.config;
    // SAFETY: `ProbeConfig` is `#[repr(C)]` plain `u32`s without padding (`aya::Pod`, its size
    // checked at compile time), so all its bytes are initialised; the slice lives no longer
    // than the borrow of `config`.
    let config_bytes = unsafe {
        std::slice::from_raw_parts(
            (&raw const *config).cast::<u8>(),
            std::mem::size_of::<ProbeConfig>(),
        )
    };
    Fingerprint::default()
        .with(PROBES)
        .with(&swoll_maps_schema::ABI_VERSION.to_le_bytes())
        .with(config_bytes)
        .with(&plan.opts.map_size.to_le_bytes())
        .with(&plan.histogram_entries.to_le_bytes())
        .with(&plan.ns_slots.to_le_bytes())
}

/// A load's settings once resolved against the running kernel.
struct Plan<'a> {
    /// What was asked for.
    opts: &'a LoadOptions,
    /// The probes' config global, patched into the object.
    config: ProbeConfig,
    /// Whether latency histograms are kept (only timed calls have a latency to place).
    histogram: bool,
    /// Entries of the histogram map: the least the kernel accepts when it is unused.
    histogram_entries: u32,
    /// Namespace slots: `opts.ns_slots` where the kernel can use them, else 0.
    ns_slots: u32,
}

/// Loads the probes with `opts` and attaches them to `raw_syscalls` `sys_enter`/`sys_exit`.
///
/// With [`LoadOptions::pin_path`]: if the pin set of this load's fingerprint is complete there,
/// it is taken over (nothing is loaded, the counters go on) and every other set is removed.
/// Otherwise the new load is attached and pinned in a staging directory first; only once that
/// succeeded are the other sets removed (detaching the programs of earlier binaries or options)
/// and the new set renamed into place. If the kernel refuses the new load, nothing pinned is
/// touched: the earlier agent's probes keep counting, and the error is returned.
pub fn load(opts: &LoadOptions) -> Result<Probes, LoadError> {
    if opts.map_size == 0 || opts.map_size > 1 << 24 {
        return Err(LoadError::MapSize(opts.map_size));
    }
    if opts.ns_slots > slots::MAX_SLOTS {
        return Err(LoadError::NsSlots(opts.ns_slots));
    }
    raise_memlock_limit();
    let offsets = btf::kernel_offsets(&Btf::from_file(&opts.btf_path)?)?;
    let histogram = opts.histogram && opts.time;
    let mut flags = 0;
    for (on, flag) in [
        (opts.count_host, FLAG_COUNT_HOST),
        (opts.count_self, FLAG_COUNT_SELF),
        (opts.time, FLAG_TIME),
        (has_task_btf(), FLAG_TASK_BTF),
        (has_task_regs(), FLAG_TASK_REGS),
        (histogram, FLAG_HISTOGRAM),
    ] {
        if on {
            flags |= flag;
        }
    }
    let plan = Plan {
        opts,
        config: ProbeConfig {
            flags,
            host_pid_ns: opts.host_pid_ns,
            exit_nrs: exit_nrs(),
            start_slot_bits: start::slot_bits_for(pid_max()),
            offsets,
        },
        histogram,
        histogram_entries: if histogram {
            opts.map_size
        } else {
            unused_map_entries()
        },
        // The slots' cache is the thread's word, which needs the BTF-typed task.
        ns_slots: if has_task_btf() { opts.ns_slots } else { 0 },
    };
    match &opts.pin_path {
        None => load_new(&plan, None),
        Some(pin_path) => load_pinned(&plan, pin_path),
    }
}

/// [`load`] with a pin path: take over this load's set, or replace every set with a new one.
fn load_pinned(plan: &Plan<'_>, pin_path: &Path) -> Result<Probes, LoadError> {
    pins::prepare(pin_path)?;
    let name = fingerprint(plan).name();
    let set = pin_path.join(name);
    if let Some(probes) = take_over(&set, plan) {
        for old in pins::remove_sets_except(pin_path, Some(&set))? {
            log_removed(&old, &set);
        }
        return Ok(probes);
    }
    let staging = pins::staging(&set);
    // What a crash of an agent building this very set left.
    pins::remove_set(&staging)?;
    let replace = || {
        let mut probes = load_new(plan, Some(&staging))?;
        for old in pins::remove_sets_except(pin_path, Some(&staging))? {
            log_removed(&old, &set);
        }
        pins::commit(&staging, &set)?;
        probes.pin_set = Some(set.clone());
        Ok(probes)
    };
    replace().inspect_err(|_| {
        // Half a set would only cost every syscall until the next agent removed it.
        if let Err(err) = pins::remove_set(&staging) {
            tracing::warn!(set = %staging.display(), error = %crate::error_chain(&err), "cannot remove the new probes' staging pins; the next agent or `swoll unpin` will");
        }
        // A set counts while its `sys_exit` link is pinned.
        let kept: Vec<String> = pins::sets(pin_path)
            .unwrap_or_default()
            .iter()
            .filter(|s| hooks(false).iter().all(|h| s.join(h.link_pin).exists()))
            .map(|s| s.display().to_string())
            .collect();
        if !kept.is_empty() {
            tracing::warn!(
                kept = kept.join(","),
                "the new probes could not be loaded and pinned; nothing pinned was removed: \
                 the earlier agent's pinned probes keep counting"
            );
        }
    })
}

/// Logs the removal of `old`, a pin set or staging directory other than `set`'s.
fn log_removed(old: &Path, set: &Path) {
    let why = if old == set {
        "replaced the pinned probes of this binary and options, which could not be taken over"
    } else if pins::is_staging(old) {
        "removed the half-built pinned probes of an agent that stopped while loading"
    } else {
        "removed the pinned probes of another binary or other options"
    };
    tracing::info!(set = %old.display(), "{why}");
}

/// Loads and attaches the probes of `plan`; with `staging`, pins them there (a new directory).
/// The probes returned are not marked as pinned: the caller does that once the set is in place.
fn load_new(plan: &Plan<'_>, staging: Option<&Path>) -> Result<Probes, LoadError> {
    let opts = plan.opts;
    let threads = if opts.time || plan.ns_slots > 0 {
        1 << plan.config.start_slot_bits
    } else {
        1
    };
    let slot_entries = plan.ns_slots.max(1);
    let mut ebpf = EbpfLoader::new()
        .override_global(config::GLOBAL, &plan.config, true)
        .map_max_entries(metrics::MAP, opts.map_size)
        .map_max_entries(histogram::MAP, plan.histogram_entries)
        .map_max_entries(thread::MAP, threads)
        .map_max_entries(slots::COUNTS_MAP, slot_entries)
        .map_max_entries(slots::OWNERS_MAP, slot_entries)
        .map_max_entries(slots::NS_MAP, slot_entries)
        .map_max_entries(slots::FREE_MAP, slot_entries)
        .map_max_entries(
            histogram::SLOTS_MAP,
            if plan.histogram { slot_entries } else { 1 },
        )
        // The trace maps belong to `load_trace`'s load: the least the kernel accepts here.
        .map_max_entries(trace::RULES_MAP, 1)
        .map_max_entries(trace::ENTRY_MAP, unused_map_entries())
        .map_max_entries(trace::ENTER_DATA_MAP, unused_map_entries())
        .map_max_entries(trace::EVENTS_MAP, page_size())
        .load(PROBES)
        .map_err(LoadError::Load)?;

    set_self(&mut ebpf, self_entry(opts))?;
    fill_slots(&mut ebpf, plan.ns_slots)?;
    let mut programs = Vec::new();
    let mut links = Vec::new();
    for hook in hooks(opts.time) {
        let (fd, link) = attach_owned(&mut ebpf, hook.program)?;
        programs.push((hook.program, fd));
        links.push(link);
    }
    if let Some(staging) = staging {
        let maps = pinned_maps(plan.histogram, plan.ns_slots > 0);
        links = pin(&mut ebpf, staging, &maps, hooks(opts.time), links)?;
    }
    let counting_since = crate::host::since_boot();
    let maps = user_maps(plan, |name| {
        ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
    })?;
    Ok(Probes {
        programs,
        _links: links,
        pin_set: None,
        reused: false,
        counting_since,
        maps,
    })
}

/// What the probes' `SWOLL_SELF` entry holds: the agent's tgid, or 0 (nobody) with
/// `count_self`.
fn self_entry(opts: &LoadOptions) -> u32 {
    if opts.count_self { 0 } else { opts.self_tgid }
}

/// Writes `tgid` into the `SWOLL_SELF` map of `ebpf`.
fn set_self(ebpf: &mut Ebpf, tgid: u32) -> Result<(), LoadError> {
    let map = ebpf
        .map_mut(config::SELF_MAP)
        .ok_or(LoadError::MissingMap(config::SELF_MAP))?;
    write_self(map, tgid)
}

/// Gives the `ns_slots` namespace slots of a fresh load generation 1 and puts them on the free
/// queue (see [`swoll_maps_schema::slots`]), before anything is attached.
fn fill_slots(ebpf: &mut Ebpf, ns_slots: u32) -> Result<(), LoadError> {
    fn typed<'a, M: TryFrom<&'a mut Map, Error = aya::maps::MapError>>(
        ebpf: &'a mut Ebpf,
        name: &'static str,
    ) -> Result<M, LoadError> {
        ebpf.map_mut(name)
            .ok_or(LoadError::MissingMap(name))?
            .try_into()
            .map_err(|source| LoadError::Map { name, source })
    }
    let mut owners: Array<&mut MapData, SlotOwner> = typed(ebpf, slots::OWNERS_MAP)?;
    for slot in 0..ns_slots {
        owners
            .set(slot, SlotOwner::free(1), 0)
            .map_err(|source| LoadError::Map {
                name: slots::OWNERS_MAP,
                source,
            })?;
    }
    let mut free: Queue<&mut MapData, u32> = typed(ebpf, slots::FREE_MAP)?;
    for slot in 0..ns_slots {
        free.push(slot, 0).map_err(|source| LoadError::Map {
            name: slots::FREE_MAP,
            source,
        })?;
    }
    Ok(())
}

/// Writes `tgid` into the `SWOLL_SELF` map `map`.
fn write_self(map: &mut Map, tgid: u32) -> Result<(), LoadError> {
    let map_err = |source| LoadError::Map {
        name: config::SELF_MAP,
        source,
    };
    let mut array: Array<&mut MapData, u32> = map.try_into().map_err(map_err)?;
    array.set(config::SELF_TGID, tgid, 0).map_err(map_err)
}

/// The maps userspace reads, each taken by `take` (from a load, or from pins) and typed.
fn user_maps(
    plan: &Plan<'_>,
    mut take: impl FnMut(&'static str) -> Result<Map, LoadError>,
) -> Result<Maps, LoadError> {
    fn typed<M: TryFrom<Map, Error = aya::maps::MapError>>(
        map: Map,
        name: &'static str,
    ) -> Result<M, LoadError> {
        map.try_into()
            .map_err(|source| LoadError::Map { name, source })
    }
    let metrics_map: PerCpuHashMap<MapData, MetricKey, MetricValue> =
        typed(take(metrics::MAP)?, metrics::MAP)?;
    let stats_map: PerCpuArray<MapData, u64> = typed(take(stats::MAP)?, stats::MAP)?;
    let pidns_map: HashMap<MapData, u32, PidNsSeen> = typed(take(pidns::MAP)?, pidns::MAP)?;
    let histogram_map: Option<PerCpuHashMap<MapData, MetricKey, LatencyBuckets>> = if plan.histogram
    {
        Some(typed(take(histogram::MAP)?, histogram::MAP)?)
    } else {
        None
    };
    let slots = if plan.ns_slots > 0 {
        let counts: PerCpuArray<MapData, SlotCounts> =
            typed(take(slots::COUNTS_MAP)?, slots::COUNTS_MAP)?;
        let histograms: Option<PerCpuArray<MapData, SlotHistograms>> = if plan.histogram {
            Some(typed(take(histogram::SLOTS_MAP)?, histogram::SLOTS_MAP)?)
        } else {
            None
        };
        Some(Slots::new(
            counts,
            histograms,
            typed(take(slots::OWNERS_MAP)?, slots::OWNERS_MAP)?,
            typed(take(slots::NS_MAP)?, slots::NS_MAP)?,
            typed(take(slots::FREE_MAP)?, slots::FREE_MAP)?,
            typed(take(config::SELF_MAP)?, config::SELF_MAP)?,
            plan.ns_slots,
        ))
    } else {
        None
    };
    Ok(Maps::new(
        metrics_map,
        histogram_map,
        stats_map,
        pidns_map,
        slots,
        plan.opts.map_size,
    ))
}

/// Pins the maps userspace reads, the programs of `hooks` and then `links` (theirs, in their
/// order) into `dir`, a new directory. Returns the links, still attached through their pins.
fn pin(
    ebpf: &mut Ebpf,
    dir: &Path,
    maps: &[&'static str],
    hooks: &[Hook],
    links: Vec<FdLink>,
) -> Result<Vec<FdLink>, LoadError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source: Box<dyn std::error::Error + Send + Sync>| LoadError::Pin {
            what: "pinning",
            path,
            source,
        }
    };
    std::fs::create_dir(dir).map_err(|e| failed(dir)(e.into()))?;
    for &name in maps {
        let map = ebpf.map(name).ok_or(LoadError::MissingMap(name))?;
        let path = dir.join(name);
        map.pin(&path).map_err(|e| failed(&path)(e.into()))?;
    }
    for hook in hooks {
        let program = ebpf.program_mut(hook.program).ok_or(LoadError::Program {
            name: hook.program,
            source: aya::programs::ProgramError::UnexpectedProgramType,
        })?;
        let path = dir.join(hook.program_pin);
        program.pin(&path).map_err(|e| failed(&path)(e.into()))?;
    }
    links
        .into_iter()
        .zip(hooks)
        .map(|(link, hook)| {
            let path = dir.join(hook.link_pin);
            link.pin(&path)
                .map(FdLink::from)
                .map_err(|e| failed(&path)(e.into()))
        })
        .collect()
}

/// Takes over the complete pin set `set`, if there is one: opens its maps, programs and links
/// and writes this agent's tgid. `None` (after logging why, if a set was there) means loading
/// afresh.
fn take_over(set: &Path, plan: &Plan<'_>) -> Option<Probes> {
    if !set.exists() {
        return None;
    }
    let missing: Vec<&str> = set_files(plan.histogram, plan.ns_slots > 0, plan.opts.time)
        .into_iter()
        .filter(|name| !set.join(name).exists())
        .collect();
    if !missing.is_empty() {
        tracing::warn!(set = %set.display(), missing = missing.join(","), "the pinned probes are incomplete (an older agent's, or a removal cut short); loading them afresh");
        return None;
    }
    match open_set(set, plan) {
        Ok(probes) => Some(probes),
        Err(err) => {
            tracing::warn!(set = %set.display(), error = %crate::error_chain(&err), "cannot take over the pinned probes; loading them afresh");
            None
        }
    }
}

/// Opens the pinned program and link of `hook` in `set`, by path only, and checks that the
/// link attaches that program.
fn open_hook(set: &Path, hook: &Hook) -> Result<(ProgramFd, FdLink), LoadError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source: Box<dyn std::error::Error + Send + Sync>| LoadError::Pin {
            what: "opening the pinned",
            path,
            source,
        }
    };
    let prog_path = set.join(hook.program_pin);
    let prog = RawTracePoint::from_pin(&prog_path).map_err(|e| failed(&prog_path)(e.into()))?;
    let prog_id = prog.info().map_err(|e| failed(&prog_path)(e.into()))?.id();
    let fd = prog
        .fd()
        .map_err(|e| failed(&prog_path)(e.into()))?
        .try_clone()
        .map_err(|e| failed(&prog_path)(e.into()))?;
    let link_path = set.join(hook.link_pin);
    let link =
        FdLink::from(PinnedLink::from_pin(&link_path).map_err(|e| failed(&link_path)(e.into()))?);
    let linked = link
        .info()
        .map_err(|e| failed(&link_path)(e.into()))?
        .program_id();
    if linked != prog_id {
        return Err(failed(&link_path)(
            format!(
                "the link attaches program {linked}, not {} (program {prog_id})",
                hook.program_pin
            )
            .into(),
        ));
    }
    Ok((fd, link))
}

/// When the kernel loaded the `sys_exit` program pinned in `set`, as time after boot: the
/// kernel keeps it on that clock; aya gives it as wall-clock time, turned back here.
fn pinned_load_time(set: &Path) -> Option<std::time::Duration> {
    let hook = hooks(false)
        .iter()
        .find(|h| h.program == programs::SYS_EXIT)?;
    let loaded = RawTracePoint::from_pin(set.join(hook.program_pin))
        .ok()?
        .info()
        .ok()?
        .loaded_at()?;
    let ago = std::time::SystemTime::now().duration_since(loaded).ok()?;
    crate::host::since_boot()?.checked_sub(ago)
}

/// Opens the pin set `set` (see [`take_over`]).
fn open_set(set: &Path, plan: &Plan<'_>) -> Result<Probes, LoadError> {
    let opts = plan.opts;
    let open_map = |name: &'static str| {
        let path = set.join(name);
        MapData::from_pin(&path)
            .and_then(Map::from_map_data)
            .map_err(|e| LoadError::Pin {
                what: "opening the pinned",
                path,
                source: e.into(),
            })
    };
    write_self(&mut open_map(config::SELF_MAP)?, self_entry(opts))?;
    let maps = user_maps(plan, open_map)?;
    let mut programs = Vec::new();
    let mut links = Vec::new();
    for hook in hooks(opts.time) {
        let (fd, link) = open_hook(set, hook)?;
        programs.push((hook.program, fd));
        links.push(link);
    }
    Ok(Probes {
        programs,
        _links: links,
        pin_set: Some(set.to_owned()),
        reused: true,
        counting_since: pinned_load_time(set),
        maps,
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

/// The numbers of `exit` and `exit_group` on this architecture (both tables have them, a unit
/// test checks; a number no syscall has would only cost the probes a start they never clear).
fn exit_nrs() -> [u32; 2] {
    use crate::syscalls::{Arch, number};
    ["exit", "exit_group"].map(|name| number(Arch::NATIVE, name).unwrap_or(u32::MAX))
}

/// The running kernel's `pid_max` (thread ids are below it), or its largest possible value
/// (`PID_MAX_LIMIT` on 64-bit) if it cannot be read.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 22)
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
        flags: [
            (has_task_btf(), FLAG_TASK_BTF),
            (has_task_regs(), FLAG_TASK_REGS),
        ]
        .into_iter()
        .filter_map(|(on, flag)| on.then_some(flag))
        .fold(0, |flags, flag| flags | flag),
        host_pid_ns: 0,
        // Trace mode keeps no start times.
        exit_nrs: [0; 2],
        start_slot_bits: start::MIN_SLOT_BITS,
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
        .map_max_entries(thread::MAP, 1)
        .map_max_entries(slots::COUNTS_MAP, 1)
        .map_max_entries(slots::OWNERS_MAP, 1)
        .map_max_entries(slots::NS_MAP, 1)
        .map_max_entries(slots::FREE_MAP, 1)
        .map_max_entries(histogram::SLOTS_MAP, 1)
        .map_max_entries(pidns::MAP, unused_map_entries())
        .map_max_entries(trace::EVENTS_MAP, ring_bytes)
        .load(PROBES)
        .map_err(LoadError::Load)?;
    // Trace mode leaves the agent out always: its own writes of events would be traced.
    set_self(&mut ebpf, self_tgid)?;
    // Attach exit first, so no call is entered with nobody to send it at exit.
    for name in [programs::TRACE_EXIT, programs::TRACE_ENTER] {
        attach(&mut ebpf, name)?;
    }
    let maps = TraceMaps {
        rules: take_map(&mut ebpf, trace::RULES_MAP)?,
        syscalls: take_map(&mut ebpf, trace::SYSCALLS_MAP)?,
        lost: take_map(&mut ebpf, trace::LOST_MAP)?,
        events: take_map(&mut ebpf, trace::EVENTS_MAP)?,
    };
    Ok(TraceProbes { ebpf, maps })
}

/// Loads and attaches raw tracepoint program `name` to the tracepoint its name's suffix names
/// (`sys_enter`/`sys_exit`); the attachment stays with the program in `ebpf`.
fn attach<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<(&'a mut RawTracePoint, RawTracePointLinkId), LoadError> {
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
    let link = prog.attach(tracepoint).map_err(program)?;
    Ok((prog, link))
}

/// As [`attach`], but returns the program's fd and its link, so that they outlive `ebpf`.
fn attach_owned(ebpf: &mut Ebpf, name: &'static str) -> Result<(ProgramFd, FdLink), LoadError> {
    let program = |source| LoadError::Program { name, source };
    let (prog, link) = attach(ebpf, name)?;
    let link = FdLink::from(prog.take_link(link).map_err(program)?);
    let fd = prog
        .fd()
        .map_err(program)?
        .try_clone()
        .map_err(|e| program(e.into()))?;
    Ok((fd, link))
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

/// Whether the running kernel has `bpf_get_current_task_btf` (Linux 5.11 and newer, or a
/// vendor kernel with it backported).
pub fn has_task_btf() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| has_helper(BpfHelper::BPF_FUNC_get_current_task_btf))
}

/// Whether the running kernel has `bpf_task_pt_regs` (Linux 5.15 and newer, or backported).
fn has_task_regs() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| has_helper(BpfHelper::BPF_FUNC_task_pt_regs))
}

/// Whether raw tracepoint programs may call `helper`, asked of the verifier (a two-instruction
/// program, as libbpf probes), not of the release string, which says nothing of backports.
/// A probe that cannot run (no `CAP_BPF`: the load fails anyway) counts as no: the probes then
/// take the path every kernel from 5.8 has.
fn has_helper(helper: BpfHelper) -> bool {
    is_helper_supported(ProgramType::RawTracePoint, helper).unwrap_or_else(|err| {
        tracing::debug!(?helper, error = %err, "cannot probe for a BPF helper; assuming it is missing");
        false
    })
}

/// How the probes read the task on this kernel, for logs and `swoll selftest`.
pub fn task_read_path() -> &'static str {
    match (has_task_btf(), has_task_regs()) {
        (true, true) => {
            "namespace slots cached per thread, read with direct BTF loads (bpf_get_current_task_btf, 5.11+), syscall nr by bpf_task_pt_regs (5.15+)"
        }
        (true, false) => {
            "namespace slots cached per thread, read with direct BTF loads (bpf_get_current_task_btf, 5.11+)"
        }
        _ => {
            "pid-ns read with bpf_probe_read_kernel, every call counted in the hash (kernel before 5.11)"
        }
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
