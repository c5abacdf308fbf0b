//! Moving messages: the [`Transport`] trait, its [`Subscription`]s and the
//! [`Delivery`] each one hands out, settled exactly once.

use crate::{Envelope, Topic, TopicError};
use bytes::Bytes;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a subscriber's queue does when it is full and a message arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Wait up to `timeout` (and at most the publish timeout) for room, then
    /// reject: the publisher gets [`PublishError::QueueFull`] and keeps the message.
    Block {
        /// How long a publisher may wait.
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
    /// Reject at once with [`PublishError::QueueFull`].
    Reject,
    /// Accept the publish, and move this subscriber's copy straight to the
    /// dead-letter queue with a QUEUE_OVERFLOW report.
    DeadLetter,
    /// Make room by discarding the oldest message of the lowest priority lane
    /// that is lower than the incoming message's priority (or the incoming
    /// message itself if none is lower). Each discard is logged and counted in
    /// `discarded_by_policy`. Only when configured.
    DiscardLowest,
}

impl Default for OverflowPolicy {
    fn default() -> Self {
        OverflowPolicy::Block {
            timeout: Duration::from_secs(1),
        }
    }
}

/// How to subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Consumer group: members of one group compete for messages; every group
    /// gets every message of the topic.
    pub group: String,
    /// Queue capacity (messages) for this group, across priority lanes.
    pub capacity: usize,
    /// What to do when the queue is full.
    pub overflow: OverflowPolicy,
}

impl SubscribeOptions {
    /// Options for `group` with the defaults (capacity 1024, block 1 s then reject).
    pub fn group(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            capacity: 1024,
            overflow: OverflowPolicy::default(),
        }
    }

    /// Sets the capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the overflow policy.
    #[must_use]
    pub fn with_overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.overflow = overflow;
        self
    }
}

/// What a successful publish did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Receipt {
    /// How many subscriber groups accepted a copy.
    pub copies: u32,
    /// Messages the caller must still settle, if any. `None` in the common
    /// case: a receipt with nothing left over is dropped with one check.
    pub leftovers: Option<Box<Leftovers>>,
}

impl Receipt {
    /// A receipt for `copies` copies enqueued, with nothing left over.
    pub fn copies(copies: u32) -> Self {
        Self {
            copies,
            leftovers: None,
        }
    }

    /// The leftovers, created empty on first use (transports filling them).
    pub fn leftovers_mut(&mut self) -> &mut Leftovers {
        self.leftovers.get_or_insert_with(Box::default)
    }
}

/// What a publish handed back to its caller to settle: the rare outcomes of
/// overflow policies and of a close racing the publish.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Leftovers {
    /// Copies refused by a full queue whose policy is
    /// [`OverflowPolicy::DeadLetter`], with their group: the caller must
    /// dead-letter them.
    pub spilled: Vec<(Arc<str>, Envelope)>,
    /// Messages discarded under [`OverflowPolicy::DiscardLowest`] to make room
    /// (possibly the published one), with their group: the caller must count
    /// and log them.
    pub discarded: Vec<(Arc<str>, Envelope)>,
    /// Copies a queue handed back because the transport closed while they
    /// were being enqueued, with their group: the caller must dead-letter
    /// them (as the shutdown dead-letters what close returned).
    pub closed: Vec<(Arc<str>, Envelope)>,
}

/// A publish that failed. Every variant that had a message hands it back, so a
/// caller can never lose a payload by receiving an error.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic name is invalid.
    #[error("invalid topic {topic:?}: {source}")]
    InvalidTopic {
        /// The name given.
        topic: String,
        /// Why it is invalid.
        source: TopicError,
        /// The payload, handed back.
        payload: Bytes,
    },
    /// The payload exceeds the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The message, handed back.
        envelope: Envelope,
        /// Its payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A subscriber group's queue was full (after waiting, under `Block`).
    /// Publish is all or nothing: no group got a copy.
    #[error("queue of group {group:?} is full")]
    QueueFull {
        /// The message, handed back.
        envelope: Envelope,
        /// The group that refused it.
        group: String,
    },
    /// Nobody subscribes to the topic, and unrouted messages are rejected.
    #[error("no subscriber for topic {}", envelope.topic)]
    NoSubscribers {
        /// The message, handed back.
        envelope: Envelope,
    },
    /// The bus or transport is shut down.
    #[error("the bus is closed")]
    Closed {
        /// The message, handed back.
        envelope: Envelope,
    },
    /// The transport failed (for example, a broker is unreachable past the timeout).
    #[error("transport error: {source}")]
    Transport {
        /// The message, handed back.
        envelope: Envelope,
        /// What went wrong.
        source: TransportError,
    },
}

impl PublishError {
    /// The message, if the error carries one (all but `InvalidTopic`).
    pub fn envelope(&self) -> Option<&Envelope> {
        match self {
            PublishError::InvalidTopic { .. } => None,
            PublishError::PayloadTooLarge { envelope, .. }
            | PublishError::QueueFull { envelope, .. }
            | PublishError::NoSubscribers { envelope }
            | PublishError::Closed { envelope }
            | PublishError::Transport { envelope, .. } => Some(envelope),
        }
    }

    /// Takes the message back.
    pub fn into_envelope(self) -> Option<Envelope> {
        match self {
            PublishError::InvalidTopic { .. } => None,
            PublishError::PayloadTooLarge { envelope, .. }
            | PublishError::QueueFull { envelope, .. }
            | PublishError::NoSubscribers { envelope }
            | PublishError::Closed { envelope }
            | PublishError::Transport { envelope, .. } => Some(envelope),
        }
    }

    /// Takes the payload back, whatever the variant.
    pub fn into_payload(self) -> Bytes {
        match self {
            PublishError::InvalidTopic { payload, .. } => payload,
            other => other.into_envelope().map(|e| e.payload).unwrap_or_default(),
        }
    }

    /// A short stable name of the variant, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::InvalidTopic { .. } => "invalid_topic",
            PublishError::PayloadTooLarge { .. } => "payload_too_large",
            PublishError::QueueFull { .. } => "queue_full",
            PublishError::NoSubscribers { .. } => "no_subscribers",
            PublishError::Closed { .. } => "closed",
            PublishError::Transport { .. } => "transport",
        }
    }
}

impl fmt::Debug for PublishError {
    // Written by hand so the payload is summarized, never dumped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("PublishError");
        d.field("kind", &self.kind());
        if let Some(e) = self.envelope() {
            d.field("id", &e.id).field("topic", &e.topic);
        }
        d.field("error", &self.to_string()).finish()
    }
}

/// A transport-level failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport is closed.
    #[error("transport closed")]
    Closed,
    /// The connection to a broker is down.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// An operation timed out.
    #[error("transport operation timed out after {0:?}")]
    Timeout(Duration),
    /// Options were refused.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Anything else.
    #[error(transparent)]
    Other(Box<dyn Error + Send + Sync>),
}

/// Carries messages between publishers and subscribers.
///
/// Implementations: [`MemoryTransport`](crate::memory::MemoryTransport) (the
/// embedded default) and `bus-nats` (JetStream). Every implementation must
/// pass the conformance suite in `bus-test`.
pub trait Transport: Send + Sync + 'static {
    /// Publishes `envelope` to every subscriber group of its topic, waiting at
    /// most `timeout` for room. On `Err` the publisher keeps the message.
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError>;

    /// Joins (creating if needed) the consumer group of `options` on `topic`.
    fn subscribe(
        &self,
        topic: &Topic,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, TransportError>;

    /// Re-establishes the connection to a broker (the CONNECTION recovery
    /// strategy calls this). A no-op for in-process transports.
    fn reconnect(&self) -> Result<(), TransportError> {
        Ok(())
    }

    /// The depth of every subscriber queue, for health reports.
    fn queue_depths(&self) -> Vec<QueueDepth> {
        Vec::new()
    }

    /// Puts one group's copy back into that group's queue, past its bound:
    /// a copy a [`Receipt`] handed back as `spilled` that the dead-letter
    /// store then refused. Only that group gets it (publishing it again
    /// would give every group a second copy). Hands it back if it cannot:
    /// the transport is closed, or keeps no bounded queues of its own (the
    /// default).
    fn requeue(&self, group: &str, envelope: Envelope) -> Result<(), Envelope> {
        let _ = group;
        Err(envelope)
    }

    /// Stops the transport and hands back every message it still holds that
    /// was never settled (queued or waiting for a delayed redelivery), with its
    /// group. Durable transports, whose messages survive in the broker, return
    /// nothing.
    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        Vec::new()
    }
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError> {
        (**self).publish(envelope, timeout)
    }
    fn subscribe(
        &self,
        topic: &Topic,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        (**self).subscribe(topic, options)
    }
    fn reconnect(&self) -> Result<(), TransportError> {
        (**self).reconnect()
    }
    fn queue_depths(&self) -> Vec<QueueDepth> {
        (**self).queue_depths()
    }
    fn requeue(&self, group: &str, envelope: Envelope) -> Result<(), Envelope> {
        (**self).requeue(group, envelope)
    }
    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        (**self).close()
    }
}

/// One subscriber queue's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueDepth {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Messages waiting (including those parked for a delayed redelivery).
    pub depth: usize,
    /// The capacity.
    pub capacity: usize,
}

/// A member of a consumer group, pulling deliveries.
pub trait Subscription: Send {
    /// Waits up to `timeout` for the next delivery. `Ok(None)` on timeout;
    /// `Err(TransportError::Closed)` once the transport is closed.
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError>;
}

/// Settles deliveries for a transport. A [`Delivery`] calls exactly one of
/// these, exactly once. They must not panic: a delivery whose `ack` or
/// `term` panics still holds its envelope, and redelivers it when dropped
/// (a duplicate rather than a loss).
pub trait Settle: Send + Sync {
    /// Processing succeeded: forget the message. Lent, not given: the
    /// delivery drops it where it lies (moving 184 bytes out to drop them
    /// was a copy per message).
    fn ack(&self, token: u64, envelope: &Envelope);
    /// Redeliver `envelope` (possibly updated: attempt, history) after `delay`.
    fn nak(&self, token: u64, envelope: Envelope, delay: Duration);
    /// Never redeliver (the message was dead-lettered or discarded).
    fn term(&self, token: u64, envelope: &Envelope);
    /// The handler is still working: extend the redelivery deadline if the
    /// transport has one. A no-op by default.
    fn in_progress(&self, _token: u64) {}
}

/// One message handed to one group member, to be settled exactly once:
/// [`ack`](Delivery::ack), [`nak`](Delivery::nak) or [`term`](Delivery::term).
/// A delivery dropped unsettled is redelivered at once (nak with no delay), so
/// a bug or a panic in a consumer cannot lose it.
pub struct Delivery {
    envelope: Option<Envelope>,
    token: u64,
    settler: Arc<dyn Settle>,
}

impl Delivery {
    /// Wraps an envelope delivered by a transport. `token` identifies it to
    /// `settler`.
    pub fn new(envelope: Envelope, token: u64, settler: Arc<dyn Settle>) -> Self {
        Self {
            envelope: Some(envelope),
            token,
            settler,
        }
    }

    /// The message.
    pub fn envelope(&self) -> &Envelope {
        // Invariant: `envelope` is Some until a settle method consumes self.
        self.envelope
            .as_ref()
            .unwrap_or_else(|| unreachable!("delivery envelope taken before settle"))
    }

    /// The message, to update before a nak (attempt count, history).
    pub fn envelope_mut(&mut self) -> &mut Envelope {
        self.envelope
            .as_mut()
            .unwrap_or_else(|| unreachable!("delivery envelope taken before settle"))
    }

    /// Signals that processing continues (see [`Settle::in_progress`]).
    pub fn in_progress(&self) {
        self.settler.in_progress(self.token);
    }

    /// Success: the message is done.
    pub fn ack(mut self) {
        self.ack_in_place();
    }

    /// [`ack`](Self::ack) for a delivery the caller keeps (the worker's,
    /// which lives in its frame so that the envelope is never moved): the
    /// envelope is dropped where it is, and the emptied delivery drops as a
    /// settled one.
    pub(crate) fn ack_in_place(&mut self) {
        if let Some(env) = &self.envelope {
            self.settler.ack(self.token, env);
        }
        // Settled: dropped in place, so `Drop` finds nothing to redeliver.
        self.envelope = None;
    }

    /// Redeliver after `delay`.
    pub fn nak(mut self, delay: Duration) {
        if let Some(env) = self.envelope.take() {
            self.settler.nak(self.token, env, delay);
        }
    }

    /// Never redeliver.
    pub fn term(mut self) {
        if let Some(env) = &self.envelope {
            self.settler.term(self.token, env);
        }
        self.envelope = None;
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(env) = self.envelope.take() {
            self.settler.nak(self.token, env, Duration::ZERO);
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("token", &self.token)
            .finish()
    }
}
