//! swoll's eBPF programs. The programs are the `swoll-probes` binary (`main.rs`), built for
//! `bpfel-unknown-none` by `userspace/build.rs`; this library target exists so that userspace
//! can name the crate as a build-dependency and be rebuilt when the probes change.
#![no_std]
