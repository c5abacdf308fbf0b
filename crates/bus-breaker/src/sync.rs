//! The atomics and lock the breaker uses, switched to `loom`'s under
//! `--cfg bus_loom` so `tests/loom.rs` can explore their interleavings.

#[cfg(bus_loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(bus_loom)]
pub(crate) use loom::sync::atomic::*;

#[cfg(not(bus_loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(bus_loom))]
pub(crate) use std::sync::atomic::*;
