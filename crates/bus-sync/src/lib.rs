//! Internal to the bus crates: the concurrency primitives their hot paths
//! share. No stability promise: anything here may change in any release;
//! depend on `bus-core` and the plug crates instead.
//!
//! Everything here is built on [`prim`], which takes its atomics, lock and
//! thread-locals from `loom` under `--cfg bus_loom` and from std otherwise
//! (the switch crossbeam uses), so `tests/loom.rs` explores the
//! interleavings of the very code the bus runs:
//!
//! - [`stripe`]: counters with one copy per stripe of threads, so threads
//!   counting at once never write a shared cache line;
//! - [`ring`]: time cut into ticks laid on a ring of slots, for sliding windows;
//! - [`tagged`]: a window cell that restarts itself when its slot is reused
//!   for a newer tick, without a lock and without losing a count;
//! - [`line`](mod@line): a mutex whose data shares the lock word's cache line.
//!
//! The cfg is `bus_loom`, not `loom`: under a bare `loom` other crates of the
//! build (tokio among them) would switch too.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod line;
pub mod prim;
pub mod ring;
pub mod stripe;
pub mod tagged;

pub use ring::{RingPos, TickRing};
pub use stripe::{Stripe, Striped, Writer};
pub use tagged::TaggedCount;
