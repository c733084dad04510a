//! A decoded trace event, in the original swoll's JSON shape (one object per line), and its
//! one-line CLI form.
//!
//! Fixed from the original: `pid` is the process id and `tid` the thread id (they were
//! swapped), `return` is the signed 64-bit value (it was truncated to `u32`), and every syscall
//! decodes (unknown ones to raw arguments) instead of crashing the stream.
use std::{collections::BTreeMap, io::Write};

use serde::Serialize;
use swoll_maps_schema::trace::TraceEvent;

use super::decode;
use crate::{errno, syscalls};

/// Which container an event came from, when it came from one: what swoll's events said of it
/// (`container{id,pod,name,image,namespace,labels}`), so that a reader can select and group
/// events by workload without asking the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Container {
    /// The container id from its cgroup (full length).
    pub id: String,
    /// The pod's namespace (empty when the pod is not known).
    pub namespace: String,
    /// The pod's name (empty when not known).
    pub pod: String,
    /// The container's name in the pod (empty when not known).
    pub name: String,
    /// The image the container runs, as kubelet reports it in the pod's status (empty when
    /// not known).
    pub image: String,
    /// The pod's labels (empty when not known).
    pub labels: BTreeMap<String, String>,
}

impl Container {
    /// A container known by id alone: no pod runs it, or no pod cache was asked.
    pub fn new(id: &str) -> Container {
        Container {
            id: id.to_owned(),
            ..Container::default()
        }
    }
}

#[derive(Serialize)]
struct Syscall<'a> {
    nr: u32,
    name: &'a str,
    class: &'a str,
    group: &'a str,
}

/// The JSON line's shape (field order as swoll's).
#[derive(Serialize)]
struct Line<'a> {
    trace: &'a str,
    syscall: Syscall<'a>,
    pid: u32,
    tid: u32,
    container_pid: u32,
    container_tid: u32,
    uid: u32,
    gid: u32,
    comm: String,
    container: Option<&'a Container>,
    error: &'a str,
    #[serde(rename = "return")]
    ret: i64,
    pid_ns: u32,
    uts_ns: u32,
    mount_ns: u32,
    start: u64,
    finish: u64,
    args: serde_json::Map<String, serde_json::Value>,
}

/// The task's `comm` as text.
fn comm(ev: &TraceEvent) -> String {
    let end = ev
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(ev.comm.len());
    String::from_utf8_lossy(&ev.comm[..end]).into_owned()
}

/// The errno name of a return value (`OK` for success), as the metrics' `err` label.
fn error_name(ret: i64) -> std::borrow::Cow<'static, str> {
    errno::name(swoll_maps_schema::metrics::errno_of(ret))
}

/// Writes `ev` as one JSON line for trace `trace` to `out`.
pub fn write_json(
    out: &mut impl Write,
    trace: &str,
    ev: &TraceEvent,
    container: Option<&Container>,
) -> std::io::Result<()> {
    let info = syscalls::describe_native(ev.nr);
    let error = error_name(ev.ret);
    let line = Line {
        trace,
        syscall: Syscall {
            nr: ev.nr,
            name: &info.name,
            class: info.class,
            group: info.group,
        },
        pid: ev.pid(),
        tid: ev.tid(),
        container_pid: ev.ns_pid,
        container_tid: ev.ns_tid,
        uid: ev.uid(),
        gid: ev.gid(),
        comm: comm(ev),
        container,
        error: &error,
        ret: ev.ret,
        pid_ns: ev.pid_ns,
        uts_ns: ev.uts_ns,
        mount_ns: ev.mnt_ns,
        start: ev.enter_ns,
        finish: ev.exit_ns,
        args: decode::args(syscalls::Arch::NATIVE, ev),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// Writes `ev` as one readable line: latency, workload, comm, errno and the call.
pub fn write_cli(
    out: &mut impl Write,
    ev: &TraceEvent,
    container: Option<&Container>,
) -> std::io::Result<()> {
    let info = syscalls::describe_native(ev.nr);
    let micros = ev.exit_ns.saturating_sub(ev.enter_ns) as f64 / 1000.0;
    let workload = match container {
        Some(c) if !c.pod.is_empty() => format!("{}/{}/{}", c.namespace, c.pod, c.name),
        Some(c) => c.id.chars().take(12).collect(),
        None => "host".to_owned(),
    };
    let name = info.name.strip_prefix("sys_").unwrap_or(&info.name);
    writeln!(
        out,
        "{micros:>10.1}us {workload} {comm}[{pid}] {err:<8} {name}({args}) = {ret}",
        comm = comm(ev),
        pid = ev.pid(),
        err = error_name(ev.ret),
        args = decode::cli_args(syscalls::Arch::NATIVE, ev),
        ret = ev.ret,
    )
}

/// Writes the line that tells a stream's reader that `lost` events of `trace` were dropped
/// (`total` since the trace started), so a gap is never silent.
pub fn write_lost(out: &mut impl Write, trace: &str, lost: u64, total: u64) -> std::io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &serde_json::json!({ "trace": trace, "lost": lost, "lost_total": total }),
    )?;
    out.write_all(b"\n")
}
