//! One dependency for the whole message bus: an in-process publish/subscribe
//! bus where every failure is classified, logged, retried when that can help,
//! isolated by a circuit breaker, parked in a crash-safe dead-letter queue
//! when it cannot, and visible in a health report. Nothing is lost silently:
//!
//! `published = acked + dead_lettered + rejected_at_publish + discarded_by_policy`
//!
//! [`Bus::builder()`] wires the production components with the defaults of
//! DESIGN.md under a data directory (default `./bus-data`); each is
//! replaceable by any implementation of its `bus-core` trait.
//!
//! ```
//! use bus::Message;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let bus = bus::Bus::builder().data_dir(dir.path()).build()?;
//! bus.subscriber("billing")
//!     .topic("orders.created")
//!     .start(|msg: &Message<'_>| -> Result<(), std::str::Utf8Error> {
//!         let _order = std::str::from_utf8(&msg.payload)?;
//!         Ok(())
//!     })?;
//! bus.publish("orders.created", &b"{\"id\":1}"[..])?;
//!
//! let report = bus.shutdown(Duration::from_secs(5));
//! assert_eq!(report.stats.acked, 1);
//! assert!(report.stats.invariant_holds());
//! assert!(dir.path().join("dlq.sqlite").exists());
//! assert!(dir.path().join("health.json").exists());
//! # Ok(()) }
//! ```
//!
//! # Index
//!
//! **Assembling a bus**: [`Bus`], [`BusBuilder`], [`Config`] (TOML or JSON,
//! [`Config::from_file`]), [`ConfigError`], [`BuildError`].
//!
//! **Publishing and handling** (from `bus-core`, re-exported here):
//! [`Envelope`], [`Topic`], [`Priority`], [`Message`], [`Handler`],
//! [`SubscriberBuilder`], [`OverflowPolicy`], [`PublishError`],
//! [`BusStats`] (the invariant), [`ShutdownReport`].
//!
//! **Errors and classification**: [`errors`] ([`errors::ErrorCategory`],
//! [`errors::Severity`], [`errors::ErrorReport`], [`errors::Classify`],
//! [`errors::DefaultClassifier`]).
//!
//! **Plug traits**: [`GuardProvider`] / [`Guard`], [`RecoveryPolicy`],
//! [`DeadLetterStore`], [`ErrorSink`], [`Observer`], [`Transport`].
//!
//! **Components** (one feature each, all on by default):
//! - [`breaker`] (feature `breaker`): circuit breakers,
//!   [`breaker::BreakerRegistry`], [`breaker::BreakerConfig`].
//! - [`recovery`] (feature `recovery`): [`recovery::Recovery`], backoff,
//!   retry budget, [`recovery::RecoveryConfig`].
//! - [`dlq`] (feature `dlq`): [`dlq::SqliteDlq`], [`dlq::DlqQuery`] (list,
//!   groups, replay, purge).
//! - [`logger`] (feature `logger`): [`logger::ErrorLogger`], JSONL with
//!   rotation.
//! - [`health`] (feature `health`; `http` adds the endpoint):
//!   [`health::HealthMonitor`], [`health::HealthReport`].
//!
//! A replay requested from outside the process (`busctl dlq replay`) reaches
//! a running bus through its replay poller (see
//! [`Config::replay_poll_interval`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
mod config;
mod facade;
#[cfg(feature = "dlq")]
mod replay;

pub use builder::{BuildError, BusBuilder};
pub use config::{Config, ConfigError, DEFAULT_DATA_DIR, DlqSection, LoggerSection};
pub use facade::Bus;

pub use bus_core::{
    BusConfig, BusEvent, BusStats, CircuitState, DeadLetter, DeadLetterReason, DeadLetterStore,
    Decision, Delivery, DlqError, Envelope, ErrorSink, Failure, Guard, GuardProvider, Handler,
    Leftovers, LetterId, MemoryDeadLetters, Message, MessageId, NoGuard, NoObserver, NoRetry,
    NoSink, Observer, Observers, Outcome, OverflowPolicy, Permit, Priority, PublishError,
    QueueDepth, Receipt, RecoveryPolicy, Rejected, ShutdownReport, SimpleRetry, SubscribeError,
    SubscribeOptions, SubscriberBuilder, SubscriptionHandle, Success, Topic, TopicError, Transport,
    TransportError, Unrouted,
};
pub use bus_core::{Bytes, memory, time};

/// The `bus-core` engine (its `Bus` is wrapped by [`Bus`]).
#[doc(inline)]
pub use bus_core as core;

/// Error vocabulary: categories, severities, reports, classification.
#[doc(inline)]
pub use bus_errors as errors;

/// Circuit breakers.
#[cfg(feature = "breaker")]
#[doc(inline)]
pub use bus_breaker as breaker;

/// Retry policies, backoff and the retry budget.
#[cfg(feature = "recovery")]
#[doc(inline)]
pub use bus_recovery as recovery;

/// The dead-letter queue.
#[cfg(feature = "dlq")]
#[doc(inline)]
pub use bus_dlq as dlq;

/// The error log.
#[cfg(feature = "logger")]
#[doc(inline)]
pub use bus_logger as logger;

/// Health monitoring, metrics and the HTTP endpoint.
#[cfg(feature = "health")]
#[doc(inline)]
pub use bus_health as health;

/// The README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
