//! swoll: per-container system call metrics, counted and timed inside the kernel.
//!
//! The binary (`main.rs`) only parses arguments and reports errors; everything else lives in
//! these modules, each named after what it holds.

pub mod btf;
pub mod cli;
pub mod errno;
pub mod host;
pub mod http;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod resolver;
pub mod serve;
pub mod syscalls;
