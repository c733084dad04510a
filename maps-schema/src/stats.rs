//! The probes' own counters: every way a syscall can go uncounted is counted here.
//!
//! A per-CPU array of `u64`, one slot per [`Stat`]; userspace sums the CPUs and exports them, so
//! a full map or a failed kernel read is a visible, counted loss and never a silent one.

/// Name of the map in the probes' object file.
pub const MAP: &str = "SWOLL_STATS";

/// One slot of the stats map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// A new metrics key could not be inserted (`SWOLL_METRICS` update failed): that call's
    /// count and time are lost.
    MetricsUpdateFailed = 0,
    /// A start time replaced another thread's unfinished one in a shared slot of the start-time
    /// array (see `crate::start`): that other thread's call will be counted without time.
    StartDisplaced = 1,
    /// The pid namespace could not be read from the task: the call is lost.
    PidNsReadFailed = 2,
    /// A call returned with no start time recorded (entered before the probes attached, a
    /// forked child's first return, or its start displaced): counted, with no time added.
    StartMissing = 3,
    /// Who was seen in a new pid namespace could not be recorded: the namespace may stay
    /// unresolved if all its processes exit before the next read.
    PidNsUpdateFailed = 4,
    /// Records written to the pid namespace map: not an error, a change counter that tells
    /// userspace when there may be a new namespace to resolve without walking the map.
    PidNsRecorded = 5,
    /// A new key could not be inserted into the latency histogram map (`SWOLL_HISTOGRAM`): the
    /// call is counted and timed, but missing from `swoll_node_metrics_syscall_duration_seconds`.
    HistogramUpdateFailed = 6,
    /// The syscall number could not be read at `sys_exit` (from the task's saved registers):
    /// the call is lost. Apart from [`Stat::PidNsReadFailed`] so that a broken register offset
    /// is told from a broken namespace read.
    SyscallNrReadFailed = 7,
    /// A call of a pid namespace that found no free namespace slot (see `crate::slots`):
    /// counted in the metrics hash instead, so not lost, but at the hash's cost.
    NsSlotsFull = 8,
}

impl Stat {
    /// Every slot, in index order.
    pub const ALL: [Stat; 9] = [
        Stat::MetricsUpdateFailed,
        Stat::StartDisplaced,
        Stat::PidNsReadFailed,
        Stat::StartMissing,
        Stat::PidNsUpdateFailed,
        Stat::PidNsRecorded,
        Stat::HistogramUpdateFailed,
        Stat::SyscallNrReadFailed,
        Stat::NsSlotsFull,
    ];

    /// The slots that count losses or errors, exported as `swoll_probe_errors_total`.
    pub const ERRORS: [Stat; 7] = [
        Stat::MetricsUpdateFailed,
        Stat::StartDisplaced,
        Stat::PidNsReadFailed,
        Stat::StartMissing,
        Stat::PidNsUpdateFailed,
        Stat::HistogramUpdateFailed,
        Stat::SyscallNrReadFailed,
    ];

    /// A short label for metrics (`swoll_probe_errors_total{kind="…"}`).
    pub const fn label(self) -> &'static str {
        match self {
            Stat::MetricsUpdateFailed => "metrics_update_failed",
            Stat::StartDisplaced => "start_displaced",
            Stat::PidNsReadFailed => "pid_ns_read_failed",
            Stat::StartMissing => "start_missing",
            Stat::PidNsUpdateFailed => "pid_ns_update_failed",
            Stat::PidNsRecorded => "pid_ns_recorded",
            Stat::HistogramUpdateFailed => "histogram_update_failed",
            Stat::SyscallNrReadFailed => "syscall_nr_read_failed",
            Stat::NsSlotsFull => "ns_slots_full",
        }
    }
}

/// Number of slots in the map.
pub const ENTRIES: u32 = Stat::ALL.len() as u32;
