//! A BTF blob → the kernel offsets the probes are given. The agent reads `/sys/kernel/btf/vmlinux`
//! of whatever kernel it lands on (or a file `--btf` names), so a truncated or corrupt blob must
//! give an error, never a panic or a read out of bounds.
//!
//! Input: raw bytes, parsed whole; the offsets, the trace offsets and one struct size are then
//! looked up, as the loader does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swoll_decode::btf::{Btf, kernel_offsets, trace_offsets};

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data) {
        let _ = kernel_offsets(&btf);
        let _ = trace_offsets(&btf);
        let _ = btf.struct_size("upid");
    }
});
