//! The message lifecycle, with no I/O and no policy of its own.
//!
//! `bus-core` owns what happens to a message between `publish` and its end
//! (acked, dead-lettered, rejected at publish, discarded by a configured
//! policy, handed back at shutdown, or left pending in a durable transport)
//! and asks its plugs for every decision:
//!
//! | plug | decides | default here | real one |
//! |---|---|---|---|
//! | [`Classifier`](bus_errors::Classifier) | category and severity | [`DefaultClassifier`](bus_errors::DefaultClassifier) | |
//! | [`GuardProvider`] / [`Guard`] | may this handler run now | [`NoGuard`] | `bus-breaker` |
//! | [`RecoveryPolicy`] | retry, dead-letter, escalate | [`SimpleRetry`] | `bus-recovery` |
//! | [`DeadLetterStore`] | where failures rest | [`MemoryDeadLetters`] | `bus-dlq` |
//! | [`ErrorSink`] | where reports are written | [`NoSink`] | `bus-logger` |
//! | [`Observer`] | who watches | [`NoObserver`] | `bus-health` |
//!
//! Messages move over a [`Transport`]; [`memory::MemoryTransport`] is the
//! embedded one.
//!
//! The invariant every test may check, from [`Bus::stats`], once the bus is
//! idle or shut down (see [`BusStats`] for each term):
//! `published = acked + dead_lettered + rejected_at_publish +
//! discarded_by_policy + returned_at_shutdown + pending`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bus;
pub mod dlq;
mod envelope;
pub mod guard;
mod handler;
pub mod memory;
pub mod observe;
pub mod recovery;
#[cfg(feature = "tokio")]
pub mod runtime;
pub mod time;
mod topic;
pub mod trace;
pub mod transport;

pub use bus::{
    Bus, BusBuilder, BusConfig, BusLetters, BusStats, Confirmation, FlushTimeout, Ledger,
    Publisher, PublisherOptions, ShutdownReport, SubscribeError, SubscriberBuilder,
    SubscriptionHandle, Unrouted, WhenFull,
};
pub use dlq::{
    DeadLetter, DeadLetterReason, DeadLetterStore, DlqError, LetterId, MemoryDeadLetters, PushDone,
};
pub use envelope::{AttemptRecord, Envelope, MessageId, Priority};
pub use guard::{CircuitState, Guard, GuardProvider, NoGuard, Outcome, Permit, Rejected};
pub use handler::{Handler, Message};
pub use observe::{BusEvent, ErrorSink, NoObserver, NoSink, Observer, Observers};
pub use recovery::{
    Decision, Failure, NoRetry, RecoveryPolicy, Resolution, Rewrite, SimpleRetry, Success,
};
pub use topic::{MAX_TOPIC_LEN, Topic, TopicError};
pub use transport::{
    BrokerConnection, Confirm, Delivery, Leftovers, OverflowPolicy, PublishError, QueueDepth,
    Receipt, Route, Settle, SubscribeOptions, Subscription, Transport, TransportError, Wake,
};

pub use bus_errors;
pub use bytes::Bytes;
