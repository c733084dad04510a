//! The parts of swoll that read untrusted input and need no kernel, no network and no runtime:
//! syscall tables ([`syscalls`]) and errno names ([`errno`]), the kernel's BTF ([`btf`]),
//! `/proc/<pid>/cgroup` paths ([`cgroup`]), and trace mode's specs, selectors and events
//! ([`trace`]).
//!
//! They are a crate of their own so that the fuzzers (`fuzz/`) build them alone, and so that
//! the agent (`swoll`) depends on them and never the other way round.

pub mod btf;
pub mod cgroup;
pub mod errno;
pub mod syscalls;
pub mod trace;

/// An error and its sources on one line, `outer: inner: innermost`, for logs and checks.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}
