//! `raw_tracepoint/sys_exit`, trace mode: sends a call `trace_enter` saved to the ring buffer,
//! with its context, return value and pointed-to data. A record that cannot be reserved is
//! counted per trace as lost; nothing is dropped uncounted.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use swoll_maps_schema::{
    config::{FLAG_TASK_BTF, FLAG_TASK_REGS},
    stats::Stat,
    trace::{AT_ENTER, Captured, TraceEvent},
};

use crate::{
    capture::{self, When},
    config, maps, task,
    trace_enter::lost,
};

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn trace_exit(ctx: RawTracePointContext) -> i32 {
    try_trace_exit(&ctx);
    0
}

#[inline(always)]
fn try_trace_exit(ctx: &RawTracePointContext) {
    // SAFETY: a helper with no arguments and no preconditions.
    let task = unsafe { bpf_get_current_task() };
    let Some(entry) = maps::SWOLL_TRACE_ENTRY.get_ptr(task) else {
        return;
    };
    send(ctx, task, entry);
    let _ = maps::SWOLL_TRACE_ENTRY.remove(task);
}

#[inline(always)]
fn send(ctx: &RawTracePointContext, task: u64, entry: *const swoll_maps_schema::trace::TraceEntry) {
    let off = config::offsets();
    let regs: *const u8 = ctx.arg(0);
    let flags = config::flags();
    let current = task::current_btf(flags & FLAG_TASK_BTF != 0);
    let Ok(nr) = task::syscall_nr(regs, &off, current, flags & FLAG_TASK_REGS != 0) else {
        return maps::count(Stat::SyscallNrReadFailed);
    };
    // SAFETY: a live map value of plain data; only this task writes its entry.
    let (traces, saved_nr, enter_ns, pid_ns) = unsafe {
        (
            (*entry).traces,
            (*entry).nr,
            (*entry).enter_ns,
            (*entry).pid_ns,
        )
    };
    // A stale entry (its exit was never seen) is not this call's.
    if saved_nr != nr {
        return;
    }
    let ret: i64 = ctx.arg(1);
    let table = maps::SWOLL_TRACE_SYSCALLS
        .get(nr)
        .copied()
        .unwrap_or_default();
    let at_enter = table.captures.iter().any(|c| c.kind & AT_ENTER != 0);
    let Some(mut record) = maps::SWOLL_TRACE_EVENTS.reserve::<TraceEvent>(0) else {
        if at_enter {
            let _ = maps::SWOLL_TRACE_ENTER_DATA.remove(task);
        }
        return lost(traces);
    };
    let ev = record.as_mut_ptr();
    let toff = config::trace_offsets();
    let ids = task::ids(&off, &toff);
    // SAFETY: `ev` is a reserved ring buffer record of `size_of::<TraceEvent>()` bytes, 8-byte
    // aligned; every field is written below (`captured` is zeroed or copied whole first), so no
    // byte of an earlier record survives. `entry` is a live map value.
    unsafe {
        let tail = &raw mut (*ev).captured;
        let saved = if at_enter {
            maps::SWOLL_TRACE_ENTER_DATA.get_ptr(task)
        } else {
            None
        };
        match saved {
            Some(saved) => {
                if bpf_probe_read_kernel_buf(
                    saved.cast::<u8>(),
                    core::slice::from_raw_parts_mut(tail.cast::<u8>(), size_of::<Captured>()),
                )
                .is_err()
                {
                    capture::zero(tail.cast(), size_of::<Captured>());
                }
                let _ = maps::SWOLL_TRACE_ENTER_DATA.remove(task);
            }
            None => capture::zero(tail.cast(), size_of::<Captured>()),
        }
        (*ev).traces = traces;
        (*ev).enter_ns = enter_ns;
        (*ev).exit_ns = bpf_ktime_get_ns();
        (*ev).args = (*entry).args;
        (*ev).ret = ret;
        (*ev).pid_tgid = bpf_get_current_pid_tgid();
        (*ev).uid_gid = bpf_get_current_uid_gid();
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).nr = nr;
        (*ev).ns_tid = ids.ns_tid;
        (*ev).ns_pid = ids.ns_pid;
        (*ev).pid_ns = pid_ns;
        (*ev).uts_ns = ids.uts_ns;
        (*ev).mnt_ns = ids.mnt_ns;
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        capture::run(&table, When::Exit, &raw const (*entry).args, ret, tail);
    }
    // Wake the reader only once a batch is waiting: a wakeup per event (the default while the
    // reader keeps up) costs more than the rest of this program. The reader also polls with a
    // short timeout, so a lone event waits at most that long.
    let waiting = maps::SWOLL_TRACE_EVENTS.query(BPF_RB_AVAIL_DATA);
    let size = maps::SWOLL_TRACE_EVENTS.query(BPF_RB_RING_SIZE);
    record.submit(if waiting >= size / WAKEUP_FRACTION {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    });
}

/// An event's submit wakes the reader once this fraction of the ring (an eighth) is waiting:
/// late enough to batch, early enough that a burst does not fill the rest before it reads.
const WAKEUP_FRACTION: u64 = 8;
/// From `include/uapi/linux/bpf.h`: `bpf_ringbuf_query` flags and `bpf_ringbuf_submit` flags.
const BPF_RB_AVAIL_DATA: u64 = 0;
/// See [`BPF_RB_AVAIL_DATA`].
const BPF_RB_RING_SIZE: u64 = 1;
/// See [`BPF_RB_AVAIL_DATA`].
const BPF_RB_NO_WAKEUP: u64 = 1;
/// See [`BPF_RB_AVAIL_DATA`].
const BPF_RB_FORCE_WAKEUP: u64 = 2;
