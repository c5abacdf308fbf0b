//! Lock-free circuit breakers with Resilience4j semantics, one per component.
//!
//! A [`CircuitBreaker`] stops calling a dependency that keeps failing, waits,
//! then lets a bounded number of probes decide whether to close again. It
//! costs one atomic load to permit a call in the closed state, and a success
//! writes no shared cache line while nothing has failed, so it does not
//! serialize the threads that go through it. [`state`] describes the state
//! machine, [`window`] what is counted when, [`BreakerConfig`] every knob.
//!
//! In a bus, a [`BreakerRegistry`] is the [`GuardProvider`](bus_core::GuardProvider):
//! each subscriber gets its own breaker, and a message that meets an open
//! breaker is parked until `retry_after` (not failed).
//!
//! ```
//! use bus_breaker::{BreakerConfig, CircuitBreaker};
//! use bus_core::CircuitState;
//! use bus_core::time::ManualClock;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let breaker = CircuitBreaker::builder("inventory")
//!     .clock(Arc::new(clock.clone()))
//!     .build()
//!     .unwrap();
//! for _ in 0..5 {
//!     breaker.try_acquire().unwrap().failure();
//! }
//! let rejected = breaker.try_acquire().unwrap_err();
//! assert_eq!(rejected.state, CircuitState::Open);
//! assert_eq!(rejected.retry_after, Duration::from_secs(60));
//!
//! clock.advance(Duration::from_secs(60));
//! for _ in 0..3 {
//!     breaker.try_acquire().unwrap().success(); // three half-open probes
//! }
//! assert_eq!(breaker.state(), CircuitState::Closed);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod breaker;
mod config;
mod events;
mod guard;
mod permit;
mod registry;
pub mod state;
mod sync;
pub mod window;

pub use breaker::{CircuitBreaker, CircuitBreakerBuilder, FailurePredicate};
pub use bus_core::{CircuitState, Rejected};
pub use config::{
    BreakerConfig, BreakerConfigBuilder, ConfigError, MAX_TIME_BUCKETS, MAX_WINDOW_CALLS,
    SlidingWindow,
};
pub use events::{BreakerMetrics, Listener, Transition};
pub use guard::BreakerGuard;
pub use permit::{CallError, Permit};
pub use registry::BreakerRegistry;
