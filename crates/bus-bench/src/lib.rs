//! Fixtures for the cross-crate benchmarks: the same bus built with error
//! handling switched off and on, a failing handler, and peak-RSS readings.
//!
//! The benches in `benches/` (throughput, latency, error path) and the `rss`
//! binary build their buses here, so every figure in `docs/benchmarks.md`
//! compares exactly these configurations:
//!
//! - [`Fixture::off`]: `Bus::builder()` with `NoGuard`, `NoRetry`,
//!   `MemoryDeadLetters`, `NoSink`, `NoObserver` (error handling off).
//! - [`Fixture::on`]: `BreakerRegistry` guards, `bus_recovery::Recovery`,
//!   `SqliteDlq` (`Durability::Normal`) in a scratch directory, `ErrorLogger`
//!   and `HealthMonitor` (error handling on).
//!
//! ```
//! use bus_bench::{Fixture, OnOptions, TOPIC};
//! use bus_core::Message;
//! use std::time::Duration;
//!
//! let fx = Fixture::on(OnOptions::default()).unwrap();
//! fx.bus
//!     .subscriber("bench")
//!     .topic(TOPIC)
//!     .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
//!     .unwrap();
//! fx.bus.publish(TOPIC, bus_bench::payload(0)).unwrap();
//! assert!(fx.wait_settled(1, Duration::from_secs(5)));
//! assert_eq!(fx.bus.stats().acked, 1);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fixture;

pub use bus_test::{ProcStatus, proc_status, quartiles};
pub use fixture::{
    BenchError, FailEvery, Fixture, OnOptions, OnRecovery, PAYLOAD_BYTES, TOPIC, payload,
};

/// `true` when the process was started with `--quick` (criterion's short
/// mode); the benches then move fewer messages per iteration.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// The directory for scratch files and results: `<workspace>/target`
/// (or `CARGO_TARGET_DIR`).
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => d.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}
