//! swoll: per-container system call metrics, counted and timed inside the kernel.
//!
//! The binary (`main.rs`) only parses arguments and reports errors; everything else lives in
//! these modules, each named after what it holds.

pub mod btf;
pub mod charts;
pub mod cli;
pub mod conn;
pub mod errno;
pub mod exposition;
pub mod host;
pub mod http;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod pins;
pub mod process;
pub mod resolver;
pub mod seccomp;
pub mod selftest;
pub mod serve;
pub mod syscalls;
pub mod top;
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
