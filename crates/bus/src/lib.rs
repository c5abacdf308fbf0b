//! One dependency for the whole message bus: an in-process publish/subscribe
//! bus where every failure is classified, logged, retried when that can help,
//! isolated by a circuit breaker, parked in a crash-safe dead-letter queue
//! when it cannot, and visible in a health report. Nothing is lost silently:
//!
//! ```text
//! published = acked + dead_lettered + rejected_at_publish + discarded_by_policy
//!           + returned_at_shutdown + pending
//! ```
//!
//! once the bus is idle or shut down (while it runs, add the deliveries still
//! in flight, [`BusStats::in_flight`]). `returned_at_shutdown` is only what was
//! handed back to the application at shutdown, in
//! [`ShutdownReport::unsaved`], because the dead-letter queue refused it;
//! `pending` is what a durable transport (NATS) still holds for a later run.
//!
//! [`Bus::builder()`] wires the production components with the defaults listed
//! in `docs/tuning.md` under a data directory (default `./bus-data`); each is
//! replaceable by any implementation of its trait in [`plug`].
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
//! The root holds what an application names: [`Bus`] and its [`BusBuilder`]
//! ([`Bus::builder()`]), [`Config`] (TOML or JSON, [`Config::from_file`]),
//! the message types ([`Envelope`], [`Message`], [`Topic`], [`MessageId`],
//! [`Priority`]), the ledger ([`BusStats`], [`ShutdownReport`]) and the
//! errors an application matches ([`BuildError`], [`ConfigError`],
//! [`PublishError`], [`SubscribeError`], [`TopicError`]).
//!
//! The rest sits in modules named for who needs it:
//!
//! - [`config`]: the sections of [`Config`] and the values they take.
//! - [`publish`]: the [`Publisher`](publish::Publisher) of
//!   [`Bus::publisher`], with many messages in flight, each confirmed later.
//! - [`subscribe`]: what [`Bus::subscriber`] builds and returns, and the
//!   [`Handler`](subscribe::Handler) trait.
//! - [`errors`]: categories, severities, reports, classification
//!   ([`errors::ErrorCategory`], [`errors::Classify`], ...).
//! - [`plug`]: the traits a component implements to replace a default one
//!   ([`plug::GuardProvider`], [`plug::RecoveryPolicy`],
//!   [`plug::DeadLetterStore`], [`plug::ErrorSink`], [`plug::Observer`]) and
//!   the values they exchange with the bus.
//! - [`transport`]: what a transport author implements
//!   ([`transport::Transport`]) and the embedded
//!   [`transport::memory::MemoryTransport`].
//! - [`time`]: clocks; tests pass a [`time::ManualClock`] to
//!   [`BusBuilder::clock`].
//! - [`trace`]: the spans the bus opens (`publish {topic}`, `process
//!   {topic}`), conversation and causation ids, and the
//!   [`trace::TracePropagator`] seam; feature `otel` adds `bus::otel`, the
//!   W3C propagator through OpenTelemetry, used by default.
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
//! - [`console`] (feature `console`): the operator console on the `http`
//!   endpoint, [`console::Console`] (see `docs/console.md`).
//!
#![cfg_attr(
    all(unix, feature = "signal"),
    doc = "**Signals** (feature `signal`, Unix, off by default): [`signal`]"
)]
#![cfg_attr(
    not(all(unix, feature = "signal")),
    doc = "**Signals** (feature `signal`, Unix, off by default): `signal`"
)]
//! catches SIGTERM and SIGINT only when asked, for a graceful
//! [`Bus::shutdown`] (drain, dead-letter the rest, write the health
//! snapshot).
//!
//! A replay requested from outside the process (`busctl dlq replay`) reaches
//! a running bus through its replay poller (see
//! [`Config::replay_poll_interval`]); a replay the bus refuses is recorded
//! on the letter with its reason and never holds up the ones behind it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
pub mod config;
mod config_logger;
#[cfg(feature = "console")]
#[path = "console.rs"]
mod console_wiring;
mod facade;
#[cfg(feature = "dlq")]
mod replay;
#[cfg(all(unix, feature = "signal"))]
pub mod signal;

pub use builder::{BuildError, BusBuilder};
pub use bus_core::{
    BusStats, Envelope, Message, MessageId, Priority, PublishError, ShutdownReport, SubscribeError,
    Topic, TopicError,
};
pub use config::{Config, ConfigError};
pub use facade::Bus;

pub mod publish {
    //! Pipelined publishing: a [`Publisher`] from
    //! [`Bus::publisher`](crate::Bus::publisher) keeps a window of messages
    //! in flight, each with a [`Confirmation`] to wait on, so a broker that
    //! confirms every message is not paid one round trip per publish.
    pub use bus_core::{Confirmation, FlushTimeout, Publisher, PublisherOptions, WhenFull};
}

pub mod subscribe {
    //! Subscribers: what [`Bus::subscriber`](crate::Bus::subscriber) builds
    //! and returns, and the [`Handler`] a subscriber runs.
    pub use bus_core::{Handler, OverflowPolicy, SubscriberBuilder, SubscriptionHandle};
}

pub mod plug {
    //! For authors of components: the traits each default component of the
    //! bus implements, one per concern, and the values they exchange with
    //! the pipeline. Give one to the [`BusBuilder`](crate::BusBuilder)
    //! ([`guards`](crate::BusBuilder::guards),
    //! [`recovery`](crate::BusBuilder::recovery),
    //! [`dead_letters`](crate::BusBuilder::dead_letters),
    //! [`error_sink`](crate::BusBuilder::error_sink),
    //! [`observer`](crate::BusBuilder::observer)) to replace the default.
    pub use bus_core::{
        AttemptRecord, BusEvent, CircuitState, DeadLetter, DeadLetterReason, DeadLetterStore,
        Decision, DlqError, ErrorSink, Failure, Guard, GuardProvider, Ledger, LetterId,
        MemoryDeadLetters, NoGuard, NoObserver, NoRetry, NoSink, Observer, Observers, Outcome,
        Permit, PushDone, RecoveryPolicy, Rejected, Resolution, Rewrite, SimpleRetry, Success,
    };
}

pub mod transport {
    //! For authors of transports: the [`Transport`] trait, the
    //! [`Delivery`] it hands out and the [`Receipt`] a publish returns, and
    //! the embedded [`memory::MemoryTransport`]. An application picks a
    //! transport with [`BusBuilder::transport`](crate::BusBuilder::transport).
    pub use bus_core::memory;
    pub use bus_core::{
        BrokerConnection, BusLetters, Bytes, Delivery, Leftovers, MAX_TOPIC_LEN, QueueDepth,
        Receipt, Settle, SubscribeOptions, Subscription, Transport, TransportError, Wake,
    };
}

/// Async handlers, async publishing and an async wait for deliveries on
/// tokio (feature `tokio`, off by default).
#[cfg(feature = "tokio")]
#[doc(inline)]
pub use bus_core::runtime;

/// Clocks: the system clock, and the [`ManualClock`](time::ManualClock)
/// tests pass to [`BusBuilder::clock`].
#[doc(inline)]
pub use bus_core::time;

/// Traces: the spans the bus opens, the trace context and conversation a
/// message carries ([`trace::TracePropagator`]).
#[doc(inline)]
pub use bus_core::trace;

/// OpenTelemetry: the W3C propagator the builder uses by default.
#[cfg(feature = "otel")]
#[doc(inline)]
pub use bus_otel as otel;

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

/// The durable embedded transport on SQLite.
#[cfg(feature = "sqlite")]
#[doc(inline)]
pub use bus_sqlite as sqlite;

/// Health monitoring, metrics and the HTTP endpoint.
#[cfg(feature = "health")]
#[doc(inline)]
pub use bus_health as health;

/// The operator console: a web page and JSON API on the health endpoint.
#[cfg(feature = "console")]
#[doc(inline)]
pub use bus_console as console;

/// The README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
