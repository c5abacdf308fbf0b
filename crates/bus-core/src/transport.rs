//! Moving messages: the [`Transport`] trait, its [`Subscription`]s and the
//! [`Delivery`] each one hands out, settled exactly once.

use crate::{Envelope, Topic, TopicError};
use bytes::Bytes;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    /// Whether the caller chose the capacity or the overflow policy, even if
    /// it chose the default value: a transport without a per-subscriber
    /// queue refuses a choice it cannot honour rather than ignore it.
    bound_chosen: bool,
}

impl SubscribeOptions {
    /// Options for `group` with the defaults (capacity 1024, block 1 s then reject).
    pub fn group(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            capacity: 1024,
            overflow: OverflowPolicy::default(),
            bound_chosen: false,
        }
    }

    /// Sets the capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self.bound_chosen = true;
        self
    }

    /// Sets the overflow policy.
    #[must_use]
    pub fn with_overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.overflow = overflow;
        self.bound_chosen = true;
        self
    }

    /// Whether [`with_capacity`](Self::with_capacity) or
    /// [`with_overflow`](Self::with_overflow) was called, with any value.
    ///
    /// ```
    /// use bus_core::SubscribeOptions;
    /// assert!(!SubscribeOptions::group("billing").chooses_queue_bound());
    /// assert!(SubscribeOptions::group("billing").with_capacity(1024).chooses_queue_bound());
    /// ```
    pub fn chooses_queue_bound(&self) -> bool {
        self.bound_chosen
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

/// What a publish handed back to its caller to settle: the copies the
/// transport could not place. The transport only reports what happened to
/// each copy; the bus settles it (dead-letters it, or discards it and
/// counts the discard) by the group's [`OverflowPolicy`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Leftovers {
    /// Copies refused by a full queue whose policy accepts the publish
    /// anyway ([`OverflowPolicy::DeadLetter`], or
    /// [`OverflowPolicy::DiscardLowest`] with nothing lower to evict), with
    /// their group. Under `Block` and `Reject` a full queue refuses the
    /// whole publish instead ([`PublishError::QueueFull`]).
    pub full: Vec<(Arc<str>, Envelope)>,
    /// Messages a queue evicted to make room for a higher-priority one
    /// ([`OverflowPolicy::DiscardLowest`]), with their group.
    pub evicted: Vec<(Arc<str>, Envelope)>,
    /// Copies a queue handed back because the transport closed while they
    /// were being enqueued, with their group: the bus dead-letters them
    /// (as the shutdown dead-letters what close returned).
    pub closed: Vec<(Arc<str>, Envelope)>,
}

/// Where a publish goes: every consumer group of the envelope's topic, or
/// one of them (a replayed dead letter goes back to the group that failed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// Every group of the topic.
    Topic,
    /// The one group named.
    Group(&'a str),
}

/// Receives the outcome of a publish that [`Transport::send`] started:
/// resolved exactly once, now or later, from whichever thread learns it.
/// A confirm dropped unresolved is a transport bug; the bus that made it
/// then counts the message refused (see the bus's `Publisher`).
///
/// ```
/// use bus_core::{Confirm, Receipt};
/// use std::sync::mpsc;
///
/// let (tx, rx) = mpsc::channel();
/// let confirm = Confirm::new(move |outcome| {
///     let _ = tx.send(outcome.map(|r: Receipt| r.copies));
/// });
/// confirm.resolve(Ok(Receipt::copies(2)));
/// assert_eq!(rx.recv().unwrap().unwrap(), 2);
/// ```
pub struct Confirm(Option<ConfirmFn>);

type ConfirmFn = Box<dyn FnOnce(Option<Result<Receipt, PublishError>>) + Send>;

impl Confirm {
    /// A confirm that hands the outcome to `f`. If the confirm is dropped
    /// unresolved, `f` is not called.
    pub fn new(f: impl FnOnce(Result<Receipt, PublishError>) + Send + 'static) -> Self {
        Self(Some(Box::new(move |outcome| {
            if let Some(outcome) = outcome {
                f(outcome);
            }
        })))
    }

    /// A confirm that also hears of being dropped unresolved (`None`): the
    /// bus's publisher must end every message it counted as in flight.
    pub(crate) fn tracked(
        f: impl FnOnce(Option<Result<Receipt, PublishError>>) + Send + 'static,
    ) -> Self {
        Self(Some(Box::new(f)))
    }

    /// Hands over the outcome.
    pub fn resolve(mut self, outcome: Result<Receipt, PublishError>) {
        if let Some(f) = self.0.take() {
            f(Some(outcome));
        }
    }
}

impl Drop for Confirm {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(None);
        }
    }
}

impl fmt::Debug for Confirm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Confirm")
    }
}

/// A publish that failed. Every variant that had a message hands it back, so a
/// caller can never lose a payload by receiving an error.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic name is invalid.
    #[error("invalid topic {}: {source}", crate::topic::Shown(topic))]
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
    /// A publish meant for one consumer group found no such group on the
    /// topic (it never subscribed, or not in this process).
    #[error("no group {group:?} subscribes to topic {}", envelope.topic)]
    NoSuchGroup {
        /// The message, handed back.
        envelope: Envelope,
        /// The group asked for.
        group: String,
    },
    /// The bus or transport is shut down.
    #[error("the bus is closed")]
    Closed {
        /// The message, handed back.
        envelope: Envelope,
    },
    /// A [`Publisher`](crate::Publisher)'s window of unconfirmed messages
    /// was full (after waiting, under [`WhenFull::Block`](crate::WhenFull)).
    #[error("{window} messages already await confirmation (the publisher's window)")]
    WindowFull {
        /// The message, handed back.
        envelope: Envelope,
        /// The window's size.
        window: usize,
    },
    /// The broker took the message and its answer never came, even after
    /// resending within the broker's duplicate window: it may or may not be
    /// stored. Publishing it again (same id) is safe where the broker
    /// de-duplicates by id within that window.
    #[error("no confirmation came: {source}")]
    InDoubt {
        /// The message, handed back.
        envelope: Envelope,
        /// What went wrong.
        source: TransportError,
    },
    /// The transport ended without confirming or refusing a pipelined
    /// publish (a transport bug, or one torn down mid-publish): the message
    /// may or may not be stored, and only its id is left to report.
    #[error("message {id} was neither confirmed nor refused by the transport")]
    Unanswered {
        /// The message's id.
        id: crate::MessageId,
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
    /// The message, if the error carries one (all but `InvalidTopic` and
    /// `Unanswered`).
    pub fn envelope(&self) -> Option<&Envelope> {
        match self {
            PublishError::InvalidTopic { .. } | PublishError::Unanswered { .. } => None,
            PublishError::PayloadTooLarge { envelope, .. }
            | PublishError::QueueFull { envelope, .. }
            | PublishError::NoSubscribers { envelope }
            | PublishError::NoSuchGroup { envelope, .. }
            | PublishError::Closed { envelope }
            | PublishError::WindowFull { envelope, .. }
            | PublishError::InDoubt { envelope, .. }
            | PublishError::Transport { envelope, .. } => Some(envelope),
        }
    }

    /// Takes the message back.
    pub fn into_envelope(self) -> Option<Envelope> {
        match self {
            PublishError::InvalidTopic { .. } | PublishError::Unanswered { .. } => None,
            PublishError::PayloadTooLarge { envelope, .. }
            | PublishError::QueueFull { envelope, .. }
            | PublishError::NoSubscribers { envelope }
            | PublishError::NoSuchGroup { envelope, .. }
            | PublishError::Closed { envelope }
            | PublishError::WindowFull { envelope, .. }
            | PublishError::InDoubt { envelope, .. }
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
            PublishError::NoSuchGroup { .. } => "no_such_group",
            PublishError::Closed { .. } => "closed",
            PublishError::WindowFull { .. } => "window_full",
            PublishError::InDoubt { .. } => "in_doubt",
            PublishError::Unanswered { .. } => "unanswered",
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
    /// The transport cannot do what was asked (it names what).
    #[error("not supported by this transport: {0}")]
    Unsupported(&'static str),
    /// The connection to a broker is down.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// An operation timed out.
    #[error("transport operation timed out after {0:?}")]
    Timeout(Duration),
    /// Options were refused.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A thread the transport needs could not be started (the OS refused:
    /// a thread or memory limit). Nothing was subscribed.
    #[error("cannot spawn a transport thread: {0}")]
    Spawn(#[source] std::io::Error),
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

    /// Publishes `envelope` to the one consumer group `group` of its topic,
    /// bounded like [`publish`](Transport::publish): a replayed dead letter
    /// goes back to the group whose handler failed it, never to groups that
    /// already settled it. [`PublishError::NoSuchGroup`] when that group
    /// does not subscribe to the topic.
    fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Receipt, PublishError>;

    /// Starts a publish along `route` and returns once the transport has
    /// taken the message, waiting at most `timeout` for that (for room, for
    /// a connection); the outcome goes to `confirm`, now or later, exactly
    /// once. Messages sent from one thread to one topic are stored in call
    /// order. A transport whose broker confirms each message (JetStream's
    /// PubAck) keeps many in flight this way instead of one round trip per
    /// publish.
    ///
    /// The default publishes synchronously ([`publish`](Self::publish) or
    /// [`publish_to_group`](Self::publish_to_group)) and resolves before
    /// returning: an in-process transport confirms at enqueue.
    fn send(&self, envelope: Envelope, route: Route<'_>, timeout: Duration, confirm: Confirm) {
        confirm.resolve(match route {
            Route::Topic => self.publish(envelope, timeout),
            Route::Group(group) => self.publish_to_group(group, envelope, timeout),
        });
    }

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

    /// The connection to a broker, for health reports; `None` (the
    /// default) for in-process transports. Must answer at once, from state
    /// the transport keeps, never by asking the broker.
    fn broker_connection(&self) -> Option<BrokerConnection> {
        None
    }

    /// Puts one group's copy back into that group's queue, past its bound
    /// but within a bound of its own (the memory transport: twice the
    /// queue's capacity in all): a copy a [`Receipt`] handed back as
    /// [`full`](Leftovers::full) that the dead-letter store then refused. Only that group
    /// gets it (publishing it again would give every group a second copy).
    /// Only the bus's settling calls it.
    /// Hands it back if it cannot: the transport is closed, the queue is
    /// that far past its bound, or the transport keeps no bounded queues of
    /// its own (the default).
    fn requeue(&self, group: &str, envelope: Envelope) -> Result<(), Envelope> {
        let _ = group;
        Err(envelope)
    }

    /// Whether messages outlive the process in a broker (JetStream): what
    /// the bus has not settled when it shuts down stays there, owed to the
    /// next run, and the ledger counts it `pending`. `false` (the default)
    /// for in-process transports, whose leftovers [`close`](Self::close)
    /// hands back.
    fn durable(&self) -> bool {
        false
    }

    /// The `messaging.system` the bus's spans name for this transport
    /// (`"bus"`, the in-process one, by default).
    fn messaging_system(&self) -> &'static str {
        "bus"
    }

    /// Whether [`send`](Self::send) waits only for room in an in-process
    /// queue, never for I/O: an async publish then sends with no wait and
    /// awaits room itself (retrying a [`PublishError::QueueFull`]) rather
    /// than block a runtime thread. `false` (the default): `send` is handed
    /// the whole publish timeout.
    fn waits_only_for_room(&self) -> bool {
        false
    }

    /// Registers `cx` to be woken when group `group` of `topic` may have
    /// room again, after a [`send`](Self::send) answered
    /// [`PublishError::QueueFull`] for it, so async code awaits room
    /// instead of retrying on a timer. `Ready(Ok(()))`: there is room now
    /// (or the group or the transport is gone): send again. For transports
    /// that [`waits_only_for_room`](Self::waits_only_for_room); the default
    /// answers [`TransportError::Unsupported`] and the caller retries on
    /// its own.
    ///
    /// ```
    /// use bus_core::memory::MemoryTransport;
    /// use bus_core::{Topic, Transport};
    /// use std::task::{Context, Poll, Waker};
    ///
    /// let transport = MemoryTransport::new();
    /// let topic = Topic::new("orders").unwrap();
    /// let mut cx = Context::from_waker(Waker::noop());
    /// // No such group: nothing to wait for.
    /// assert!(matches!(transport.poll_room(&topic, "billing", &mut cx), Poll::Ready(Ok(()))));
    /// ```
    fn poll_room(
        &self,
        topic: &Topic,
        group: &str,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        let _ = (topic, group, cx);
        Poll::Ready(Err(TransportError::Unsupported("poll_room")))
    }

    /// Called once by the bus that runs on this transport, when it is
    /// built: `letters` dead-letters through the bus's store and counts each
    /// letter in the bus's ledger. A transport that ends deliveries on its
    /// own (a broker's redelivery limit) settles them there, so the ledger
    /// balances. Ignored by default.
    fn attach(&self, letters: crate::BusLetters) {
        let _ = letters;
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
    fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        (**self).publish_to_group(group, envelope, timeout)
    }
    fn send(&self, envelope: Envelope, route: Route<'_>, timeout: Duration, confirm: Confirm) {
        (**self).send(envelope, route, timeout, confirm)
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
    fn broker_connection(&self) -> Option<BrokerConnection> {
        (**self).broker_connection()
    }
    fn requeue(&self, group: &str, envelope: Envelope) -> Result<(), Envelope> {
        (**self).requeue(group, envelope)
    }
    fn durable(&self) -> bool {
        (**self).durable()
    }
    fn messaging_system(&self) -> &'static str {
        (**self).messaging_system()
    }

    fn waits_only_for_room(&self) -> bool {
        (**self).waits_only_for_room()
    }
    fn poll_room(
        &self,
        topic: &Topic,
        group: &str,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        (**self).poll_room(topic, group, cx)
    }
    fn attach(&self, letters: crate::BusLetters) {
        (**self).attach(letters)
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
    /// Messages handed to the group's consumers and not settled yet (being
    /// handled, or taken ahead of the handler). On the memory transport and
    /// bus-sqlite they are not in `depth`; on NATS, whose bound (max ack
    /// pending) covers them, `depth` counts them too. bus-sqlite counts
    /// this process's consumers only.
    #[serde(default)]
    pub in_flight: usize,
}

/// The state of a transport's connection to its broker, for health
/// reports. Times are seconds, so the value serializes as it reads.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct BrokerConnection {
    /// The broker (a URL).
    pub broker: String,
    /// Whether the connection is up now.
    pub connected: bool,
    /// How long it has been down, while it is down.
    pub down_seconds: Option<f64>,
    /// Times it was lost since the transport started.
    pub outages: u64,
    /// Time it spent down since the transport started, the current outage
    /// included.
    pub total_down_seconds: f64,
    /// Messages the broker deleted before they were settled (a stream the
    /// user allowed to drop them hit a limit). Any is a loss.
    #[serde(default)]
    pub dropped: u64,
}

impl BrokerConnection {
    /// A connection to `broker`: up when `down_for` is `None`.
    pub fn new(
        broker: impl Into<String>,
        down_for: Option<Duration>,
        outages: u64,
        total_down: Duration,
    ) -> Self {
        Self {
            broker: broker.into(),
            connected: down_for.is_none(),
            down_seconds: down_for.map(|d| d.as_secs_f64()),
            outages,
            total_down_seconds: total_down.as_secs_f64(),
            dropped: 0,
        }
    }
}

/// A member of a consumer group, pulling deliveries.
pub trait Subscription: Send {
    /// Waits up to `timeout` for the next delivery (`Duration::MAX`: for as
    /// long as it takes). `Ok(None)` on timeout, or when a [`Wake`] from
    /// [`waker`](Self::waker) ended the wait; `Err(TransportError::Closed)`
    /// once the transport is closed.
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError>;

    /// A handle that ends this subscription's wait in `next` early, from
    /// another thread: its owner can then wait without a timeout and still
    /// stop at once. `None` (the default): the transport cannot be woken,
    /// so its owner bounds every wait instead.
    fn waker(&self) -> Option<Wake> {
        None
    }

    /// Whether [`poll_next`](Self::poll_next) works: the transport hands
    /// deliveries to async code itself, with no thread waiting in
    /// [`next`](Self::next) on its behalf. `false` (the default): async
    /// code waits through a bridge thread (`runtime::AsyncSubscription`,
    /// with the `tokio` feature).
    ///
    /// ```
    /// use bus_core::memory::MemoryTransport;
    /// use bus_core::{SubscribeOptions, Topic, Transport};
    ///
    /// let transport = MemoryTransport::new();
    /// let topic = Topic::new("orders").unwrap();
    /// let sub = transport.subscribe(&topic, &SubscribeOptions::group("billing")).unwrap();
    /// // Its queue wakes threads, not tasks: the bridge waits on it.
    /// assert!(!sub.can_poll());
    /// ```
    fn can_poll(&self) -> bool {
        false
    }

    /// Polls for the next delivery without blocking: `Pending` registers
    /// `cx`'s waker, woken when one may be ready. `Err(Closed)` once the
    /// transport is closed; other errors are worth another poll later
    /// (a connection coming back). Only where [`can_poll`](Self::can_poll);
    /// the default answers [`TransportError::Unsupported`].
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, TransportError>> {
        let _ = cx;
        Poll::Ready(Err(TransportError::Unsupported("poll_next")))
    }
}

/// Ends a [`Subscription`]'s wait in [`next`](Subscription::next): the call
/// waiting now, or else the next call, returns `Ok(None)` promptly if no
/// delivery is ready. Wake-ups do not add up: several before a `next` end
/// one wait.
///
/// ```
/// use bus_core::memory::MemoryTransport;
/// use bus_core::{SubscribeOptions, Topic, Transport};
/// use std::time::Duration;
///
/// let transport = MemoryTransport::new();
/// let topic = Topic::new("orders").unwrap();
/// let mut sub = transport.subscribe(&topic, &SubscribeOptions::group("billing")).unwrap();
/// let wake = sub.waker().expect("the memory transport can be woken");
/// let waker = std::thread::spawn(move || wake.wake());
/// // Would wait forever for a message; the wake-up ends the wait.
/// assert!(sub.next(Duration::MAX).unwrap().is_none());
/// waker.join().unwrap();
/// ```
#[derive(Clone)]
pub struct Wake(Arc<dyn Fn() + Send + Sync>);

impl Wake {
    /// A wake-up that runs `wake` (a transport's own signal).
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(wake))
    }

    /// Ends the subscription's current or next wait.
    pub fn wake(&self) {
        (self.0)();
    }
}

impl fmt::Debug for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Wake")
    }
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
