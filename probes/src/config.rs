//! The load-time configuration, patched into `.rodata` by the loader.
use swoll_maps_schema::{
    config::{KernelOffsets, ProbeConfig},
    trace::{TraceConfig, TraceOffsets},
};

/// Patched by `EbpfLoader::override_global` before the programs are verified.
#[unsafe(no_mangle)]
static SWOLL_CONFIG: ProbeConfig = ProbeConfig::zeroed();

/// Trace mode's part, patched the same way.
#[unsafe(no_mangle)]
static SWOLL_TRACE_CONFIG: TraceConfig = TraceConfig::zeroed();

/// The flags (`FLAG_*`) of this load.
#[inline(always)]
pub fn flags() -> u32 {
    // SAFETY: `SWOLL_CONFIG` is a valid, aligned static; the volatile read keeps rustc from
    // folding in the zero initialiser that the loader replaces.
    unsafe { core::ptr::read_volatile(&raw const SWOLL_CONFIG.flags) }
}

/// The numbers of `exit` and `exit_group`, which never return.
#[inline(always)]
pub fn exit_nrs() -> [u32; 2] {
    // SAFETY: as in `flags`.
    unsafe { core::ptr::read_volatile(&raw const SWOLL_CONFIG.exit_nrs) }
}

/// log2 of the start-time array's size.
#[inline(always)]
pub fn start_slot_bits() -> u32 {
    // SAFETY: as in `flags`.
    unsafe { core::ptr::read_volatile(&raw const SWOLL_CONFIG.start_slot_bits) }
}

/// The host's pid namespace inode.
#[inline(always)]
pub fn host_pid_ns() -> u32 {
    // SAFETY: as in `flags`.
    unsafe { core::ptr::read_volatile(&raw const SWOLL_CONFIG.host_pid_ns) }
}

/// The running kernel's struct offsets.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: as in `flags`.
    unsafe { core::ptr::read_volatile(&raw const SWOLL_CONFIG.offsets) }
}

/// The running kernel's struct offsets that trace mode reads.
#[inline(always)]
pub fn trace_offsets() -> TraceOffsets {
    // SAFETY: as in `flags`.
    unsafe { core::ptr::read_volatile(&raw const SWOLL_TRACE_CONFIG.offsets) }
}
