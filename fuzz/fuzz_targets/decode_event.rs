//! Ring-buffer bytes → a [`TraceEvent`] → every decoder and writer of trace mode.
//!
//! The probe fills every byte of an event, but the decoder must not trust it: lengths
//! (`data_len`, `argv_len`, `argc`) may exceed their buffers, captures may be cut short or
//! missing, and the syscall number may be one no table knows. None of that may panic, and the
//! JSON line must stay valid JSON.
//!
//! Input: 4 bytes choosing the syscall number (below 1024 — every number the tables know, and
//! the holes between — unless the top bit is set, then the raw value), then the event's bytes
//! in its `#[repr(C)]` layout, as the ring buffer carries them; missing bytes stay zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swoll_decode::syscalls::Arch;
use swoll_decode::trace::decode::{args, cli_args};
use swoll_decode::trace::event::{Container, write_cli, write_json};
use swoll_maps_schema::trace::TraceEvent;

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(4));
    let ev = event(nr(head), body);

    for arch in [Arch::X86_64, Arch::Aarch64] {
        let _ = args(arch, &ev);
        let _ = cli_args(arch, &ev);
    }

    let container = Container {
        id: "f51eba5912a39efd1973ca9aafeebec725e58508074b57a332b6d5447813c055".to_owned(),
        namespace: "shop".to_owned(),
        pod: "web-0".to_owned(),
        name: "nginx".to_owned(),
        image: "docker.io/library/nginx:1.27".to_owned(),
        // Label values are user data: quotes and escapes must come out as valid JSON.
        labels: [("app".to_owned(), "we\"b\\".to_owned())].into(),
    };
    for container in [None, Some(&container)] {
        let mut out = Vec::new();
        write_json(&mut out, "fuzz", &ev, container).expect("write_json into a Vec");
        if let Err(err) = serde_json::from_slice::<serde_json::Value>(&out) {
            panic!(
                "write_json wrote invalid JSON ({err}): {}",
                String::from_utf8_lossy(&out)
            );
        }
        let mut out = Vec::new();
        write_cli(&mut out, &ev, container).expect("write_cli into a Vec");
    }
});

/// The syscall number the first (up to) 4 bytes choose.
fn nr(head: &[u8]) -> u32 {
    let mut bytes = [0; 4];
    bytes[..head.len()].copy_from_slice(head);
    let raw = u32::from_le_bytes(bytes);
    if raw & (1 << 31) != 0 {
        raw
    } else {
        raw % 1024
    }
}

/// An event whose first `min(body.len(), size_of::<TraceEvent>())` bytes are `body`'s, the
/// rest zero, with syscall number `nr`.
fn event(nr: u32, body: &[u8]) -> TraceEvent {
    let mut ev = TraceEvent::zeroed();
    let len = body.len().min(size_of::<TraceEvent>());
    // SAFETY: `TraceEvent` is `#[repr(C)]` with only integer and integer-array fields (padding
    // is named fields; maps-schema asserts the size), so every byte pattern is a valid value.
    // The destination is a live, exclusively borrowed `TraceEvent` of `size_of` bytes, `len`
    // is at most that and at most `body.len()`, `u8` needs no alignment, and a local cannot
    // overlap the input slice.
    unsafe {
        std::ptr::copy_nonoverlapping(body.as_ptr(), (&raw mut ev).cast::<u8>(), len);
    }
    ev.nr = nr;
    ev
}
