//! The workspace's end-to-end scenarios, in one place beside `crates/`,
//! `xtask/` and `docs/`, as tokio's `tests-integration` keeps its own: what
//! proves the whole bus rather than one crate.
//!
//! - `soak.rs`: the whole promise on the assembled bus: publishers and
//!   subscribers, transient failures, poison messages, panics, slow
//!   handlers and an outage, then shutdown and a reopen of the dead-letter
//!   queue from its files (`cargo xtask soak` runs it at a million
//!   messages).
//! - `examples.rs`: every example of the facade, run as a test.
//! - `docs.rs`: the configuration and the replay format the docs show, as
//!   the code reads and builds them.
//! - `nats_replay.rs`: a dead letter replayed across the facade, the SQLite
//!   store and NATS reaches the group that failed it, and no other.
//!
//! Each crate keeps its own tests in its `tests/`; the transport
//! conformance suite lives in `bus-test` and runs from each transport's
//! crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
