//! Reading the trace ring buffer and the probes' per-trace loss counters.
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{MapData, PerCpuHashMap, RingBuf};
use swoll_maps_schema::trace::{MAX_TRACES, TraceEvent};

/// Why reading the trace stream failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// Waiting on the ring buffer failed.
    #[error("waiting for trace events")]
    Poll(#[source] std::io::Error),
    /// Reading the loss counters failed.
    #[error("reading the trace loss counters")]
    Lost(#[source] aya::maps::MapError),
}

/// Waits up to `timeout` for events in `ring`; true if some may be ready. An interrupted wait
/// (a signal) returns false, so the caller can look at its stop flag.
pub fn wait(ring: &RingBuf<MapData>, timeout: std::time::Duration) -> Result<bool, RingError> {
    let mut fds = [libc::pollfd {
        fd: ring.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(RingError::Poll(err));
    }
    Ok(n > 0)
}

/// Takes the next event out of `ring`, if any. Records of another size (a probe of another
/// layout) are skipped and counted in `malformed`.
pub fn next(ring: &mut RingBuf<MapData>, malformed: &mut u64) -> Option<TraceEvent> {
    loop {
        let item = ring.next()?;
        if item.len() != size_of::<TraceEvent>() {
            *malformed += 1;
            continue;
        }
        // SAFETY: the record holds exactly `size_of::<TraceEvent>()` bytes, written by the probe
        // as a `TraceEvent`; every bit pattern of that all-integer `#[repr(C)]` type is valid, and
        // `read_unaligned` needs no alignment.
        return Some(unsafe { item.as_ptr().cast::<TraceEvent>().read_unaligned() });
    }
}

/// Events lost so far by each trace slot, summed over CPUs and over the masks they were lost
/// for (an event lost for traces 1 and 3 is one lost event of each).
pub fn lost(
    map: &PerCpuHashMap<MapData, u64, u64>,
) -> Result<[u64; MAX_TRACES as usize], RingError> {
    let mut totals = [0u64; MAX_TRACES as usize];
    for entry in map.iter() {
        let (mask, values) = entry.map_err(RingError::Lost)?;
        let n: u64 = values.iter().sum();
        for (slot, total) in totals.iter_mut().enumerate() {
            if mask & (1 << slot) != 0 {
                *total += n;
            }
        }
    }
    Ok(totals)
}
