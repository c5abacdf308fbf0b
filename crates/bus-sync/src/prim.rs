//! The primitives everything else here is built on: `loom`'s under
//! `--cfg bus_loom`, so a model explores their interleavings, std's
//! otherwise. Code that hands cells to this crate ([`Writer::add`](crate::Writer::add)
//! takes an [`atomic::AtomicU64`]) takes its atomics from here too, so both
//! sides switch together.

/// Atomics: `loom::sync::atomic` under `bus_loom`, `std::sync::atomic` otherwise.
pub mod atomic {
    #[cfg(bus_loom)]
    pub use loom::sync::atomic::*;
    #[cfg(not(bus_loom))]
    pub use std::sync::atomic::*;
}

#[cfg(bus_loom)]
pub use loom::sync::{Mutex, MutexGuard};
#[cfg(not(bus_loom))]
pub use std::sync::{Mutex, MutexGuard};

/// Threads: `loom::thread` under `bus_loom`, `std::thread` otherwise.
pub mod thread {
    #[cfg(bus_loom)]
    pub use loom::thread::*;
    #[cfg(not(bus_loom))]
    pub use std::thread::*;
}
