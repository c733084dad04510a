//! Trace mode: which syscalls of which pods to follow, and their events.
//!
//! The kernel side is a filter of (pid namespace, syscall) rules with a trace mask, and a ring
//! buffer of raw events; here the filter is reference-counted ([`filter`]), the ring drained
//! ([`ring`]), each event decoded ([`decode`], [`flags`], [`sockaddr`]) into swoll's JSON shape
//! ([`event`]), and what to capture per syscall is told to the kernel ([`capture`]). Traces come
//! from the `swoll trace` command ([`command`]) or, in the agent ([`agent`]), from a
//! ConfigMap of specs and from `Trace` resources ([`spec`], [`selector`], [`resource`]); the
//! ConfigMap traces' starts are recorded in its annotation ([`started`]).

pub mod agent;
pub mod command;
pub mod filter;
pub mod resource;
pub mod ring;
pub mod started;

pub use swoll_decode::trace::{capture, decode, event, flags, selector, sockaddr, spec};
