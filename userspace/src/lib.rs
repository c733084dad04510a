//! swoll: per-container system call metrics, counted and timed inside the kernel.
//!
//! The binary (`main.rs`) only parses arguments and reports errors; everything else lives in
//! these modules, each named after what it holds.

pub mod auth;
pub mod charts;
pub mod cli;
pub mod conn;
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
pub mod tls;
pub mod top;
pub mod trace;

pub use swoll_decode::{btf, errno, error_chain, syscalls};
