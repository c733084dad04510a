//! Trace mode's input and output: which pods and syscalls a trace follows ([`spec`],
//! [`selector`]), what the kernel captures for each syscall ([`capture`]), and each ring-buffer
//! event decoded ([`decode`], [`flags`], [`sockaddr`]) into swoll's JSON shape ([`event`]).

pub mod capture;
pub mod decode;
pub mod event;
pub mod flags;
pub mod selector;
pub mod sockaddr;
pub mod spec;
