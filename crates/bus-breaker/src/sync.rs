//! The atomics and lock the breaker uses: bus-sync's switch, so they are
//! `loom`'s under `--cfg bus_loom` and `tests/loom.rs` can explore their
//! interleavings.

pub(crate) use bus_sync::prim::Mutex;
pub(crate) use bus_sync::prim::atomic::*;
