//! The bus: publish, subscribe, and the pipeline that settles every delivery.

mod pipeline;
#[cfg(feature = "tokio")]
mod publish_async;
mod publisher;
mod settle;
#[cfg(feature = "tokio")]
mod slots;
mod stats;
mod subscriber;
#[cfg(feature = "tokio")]
mod tasks;
mod worker;

pub use publisher::{Confirmation, FlushTimeout, Publisher, PublisherOptions, WhenFull};
pub use settle::BusLetters;
pub use stats::{BusStats, Ledger};

use crate::dlq::{DeadLetterStore, MemoryDeadLetters};
use crate::guard::{GuardProvider, NoGuard};
use crate::memory::MemoryTransport;
use crate::observe::{BusEvent, ErrorSink, NoObserver, NoSink, Observer};
use crate::recovery::{RecoveryPolicy, SimpleRetry};
use crate::time::{SharedClock, system_clock};
use crate::trace::{NoPropagation, TracePropagator};
use crate::{
    Envelope, Handler, MessageId, OverflowPolicy, PublishError, QueueDepth, SubscribeOptions,
    Topic, TopicError, Transport, TransportError,
};
use bus_errors::{Classifier, DefaultClassifier, Sanitizer};
use bytes::Bytes;
use stats::{Counter, Counters};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
#[cfg(feature = "tokio")]
use subscriber::StopHook;
use subscriber::Subscriber;

/// What happens to a publish on a topic nobody subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unrouted {
    /// Refuse it: the publisher gets [`PublishError::NoSubscribers`] and keeps the message.
    #[default]
    Reject,
    /// Accept and discard it, logged and counted in `discarded_by_policy`.
    Discard,
}

/// Settings of the bus itself (the plugs are set on the [`BusBuilder`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BusConfig {
    /// Largest payload accepted, in bytes (default 1 MiB).
    pub max_payload_bytes: usize,
    /// How long `publish` may wait for room in a full queue (default 1 s).
    pub publish_timeout: Duration,
    /// How long a worker waits for a message in a transport that cannot
    /// wake it (one whose subscriptions have no
    /// [`waker`](crate::Subscription::waker), such as JetStream's blocking
    /// fetch) before it checks for shutdown again; also the pause after a
    /// transport error or a panicking plug (default 50 ms). Workers of the
    /// memory transport do not poll: an idle one sleeps until a message, a
    /// due redelivery or a stop wakes it.
    pub poll_interval: Duration,
    /// How long a subscriber pauses after the dead-letter store refused a
    /// write; its message is redelivered after this delay (default 1 s).
    pub dlq_retry_delay: Duration,
    /// Publishes to topics nobody subscribes to.
    pub unrouted: Unrouted,
    /// Truncation and redaction applied to every report.
    pub sanitizer: Sanitizer,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            publish_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            dlq_retry_delay: Duration::from_secs(1),
            unrouted: Unrouted::Reject,
            sanitizer: Sanitizer::default(),
        }
    }
}

pub(crate) struct Plugs {
    pub(crate) classifier: Arc<dyn Classifier>,
    pub(crate) guards: Arc<dyn GuardProvider>,
    pub(crate) recovery: Arc<dyn RecoveryPolicy>,
    pub(crate) dlq: Arc<dyn DeadLetterStore>,
    pub(crate) sink: Arc<dyn ErrorSink>,
    pub(crate) observer: Arc<dyn Observer>,
    /// `observer.listening()`, asked once at build.
    pub(crate) observing: bool,
    pub(crate) clock: SharedClock,
    pub(crate) propagator: Arc<dyn TracePropagator>,
}

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;

pub(crate) struct Shared {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) plugs: Plugs,
    pub(crate) config: BusConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) dlq_failing: AtomicBool,
    /// Pipelined publishes sent and not yet confirmed or refused: not in
    /// the ledger yet, and shutdown waits for them.
    pub(crate) confirming: AtomicUsize,
    state: AtomicU8,
    /// The overflow policy of each group the bus subscribed, by topic, as
    /// its first subscriber set it (as the transport keeps it): read only
    /// to settle a copy a full queue refused.
    overflow: Mutex<Vec<(Topic, Arc<str>, OverflowPolicy)>>,
}

impl Shared {
    /// The overflow policy of `group` of `topic`, if the bus subscribed it.
    pub(crate) fn overflow_policy(&self, topic: &Topic, group: &str) -> Option<OverflowPolicy> {
        self.overflow
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(t, g, _)| t == topic && **g == *group)
            .map(|(_, _, policy)| *policy)
    }

    fn record_overflow(&self, topic: &Topic, group: &Arc<str>, policy: OverflowPolicy) {
        let mut known = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
        if !known.iter().any(|(t, g, _)| t == topic && g == group) {
            known.push((topic.clone(), Arc::clone(group), policy));
        }
    }

    /// Whether shutdown has closed the transport: a delivery settled now
    /// cannot be redelivered.
    pub(crate) fn closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    /// Tells the observer, stamped now (no clock is read if nobody listens).
    pub(crate) fn event(&self, event: &BusEvent<'_>) {
        if self.plugs.observing {
            self.plugs
                .observer
                .on_event(self.plugs.clock.stamp(), event);
        }
    }

    /// Tells the observer, stamped with a time the caller already read.
    pub(crate) fn event_at(&self, at: crate::time::Stamp, event: &BusEvent<'_>) {
        if self.plugs.observing {
            self.plugs.observer.on_event(at, event);
        }
    }
}

/// Builds a [`Bus`]. Every plug has a default so the core works alone; the
/// `bus` facade crate wires the production components.
#[must_use]
pub struct BusBuilder {
    transport: Option<Arc<dyn Transport>>,
    classifier: Arc<dyn Classifier>,
    guards: Arc<dyn GuardProvider>,
    recovery: Arc<dyn RecoveryPolicy>,
    dlq: Arc<dyn DeadLetterStore>,
    sink: Arc<dyn ErrorSink>,
    observers: Vec<Arc<dyn Observer>>,
    clock: SharedClock,
    propagator: Arc<dyn TracePropagator>,
    config: BusConfig,
}

impl std::fmt::Debug for BusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for BusBuilder {
    fn default() -> Self {
        Self {
            transport: None,
            classifier: Arc::new(DefaultClassifier::default()),
            guards: Arc::new(NoGuard),
            recovery: Arc::new(SimpleRetry::default()),
            dlq: Arc::new(MemoryDeadLetters::new()),
            sink: Arc::new(NoSink),
            observers: Vec::new(),
            clock: system_clock(),
            propagator: Arc::new(NoPropagation),
            config: BusConfig::default(),
        }
    }
}

impl BusBuilder {
    /// The transport (default: a new [`MemoryTransport`] on the builder's clock).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }
    /// The classifier (default: [`DefaultClassifier`]).
    pub fn classifier(mut self, classifier: Arc<dyn Classifier>) -> Self {
        self.classifier = classifier;
        self
    }
    /// The guards, one per subscriber (default: [`NoGuard`]).
    pub fn guards(mut self, guards: Arc<dyn GuardProvider>) -> Self {
        self.guards = guards;
        self
    }
    /// Carries trace context in message headers (default:
    /// [`NoPropagation`]; `bus-otel` has the W3C one).
    pub fn trace_propagator(mut self, propagator: Arc<dyn TracePropagator>) -> Self {
        self.propagator = propagator;
        self
    }
    /// The recovery policy (default: [`SimpleRetry`]).
    pub fn recovery(mut self, recovery: Arc<dyn RecoveryPolicy>) -> Self {
        self.recovery = recovery;
        self
    }
    /// The dead-letter store (default: [`MemoryDeadLetters`]).
    pub fn dead_letters(mut self, dlq: Arc<dyn DeadLetterStore>) -> Self {
        self.dlq = dlq;
        self
    }
    /// The error sink (default: none).
    pub fn error_sink(mut self, sink: Arc<dyn ErrorSink>) -> Self {
        self.sink = sink;
        self
    }
    /// Adds an observer (default: none). Each call adds one: every
    /// observer added sees every event, in the order they were added.
    ///
    /// ```
    /// use bus_core::time::Stamp;
    /// use bus_core::{Bus, BusEvent, Message, Observer};
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::Duration;
    ///
    /// #[derive(Default)]
    /// struct Acks(AtomicU32);
    /// impl Observer for Acks {
    ///     fn on_event(&self, _: Stamp, event: &BusEvent<'_>) {
    ///         if matches!(event, BusEvent::Acked { .. }) {
    ///             self.0.fetch_add(1, Ordering::SeqCst);
    ///         }
    ///     }
    /// }
    /// let (first, second) = (Arc::new(Acks::default()), Arc::new(Acks::default()));
    /// let bus = Bus::builder()
    ///     .observer(first.clone())
    ///     .observer(second.clone())
    ///     .build();
    /// bus.subscriber("billing")
    ///     .topic("orders")
    ///     .start(|_: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
    ///     .unwrap();
    /// bus.publish("orders", &b"{}"[..]).unwrap();
    /// assert!(bus.shutdown(Duration::from_secs(5)).drained);
    /// assert_eq!(first.0.load(Ordering::SeqCst), 1);
    /// assert_eq!(second.0.load(Ordering::SeqCst), 1);
    /// ```
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }
    /// The clock for handler timing, event stamps and the default
    /// transport's timer. Plugs that keep time windows (a health monitor, a
    /// retry budget) must use the same clock: they count each event at the
    /// time this clock gave it.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// The bus settings.
    pub fn config(mut self, config: BusConfig) -> Self {
        self.config = config;
        self
    }
    /// Builds the bus.
    pub fn build(self) -> Bus {
        let transport = self
            .transport
            .unwrap_or_else(|| Arc::new(MemoryTransport::with_clock(Arc::clone(&self.clock))));
        // One observer is called directly, not through a fan-out.
        let mut observers = self.observers;
        let observer: Arc<dyn Observer> = match observers.len() {
            0 => Arc::new(NoObserver),
            1 => observers.remove(0),
            _ => {
                let mut all = crate::observe::Observers::new();
                for o in observers {
                    all.push(o);
                }
                Arc::new(all)
            }
        };
        // The system clock calibrates its counter on its first stamp (half
        // a millisecond or more): here, not in the first delivery's timing.
        let _ = self.clock.stamp();
        let counters = Arc::new(Counters::default());
        observer.attach(&Ledger(Arc::clone(&counters)));
        let bus = Bus {
            shared: Arc::new(Shared {
                transport,
                plugs: Plugs {
                    classifier: self.classifier,
                    guards: self.guards,
                    recovery: self.recovery,
                    dlq: self.dlq,
                    sink: self.sink,
                    observing: observer.listening(),
                    observer,
                    clock: self.clock,
                    propagator: self.propagator,
                },
                config: self.config,
                counters,
                dlq_failing: AtomicBool::new(false),
                confirming: AtomicUsize::new(0),
                state: AtomicU8::new(RUNNING),
                overflow: Mutex::new(Vec::new()),
            }),
            subscribers: Arc::new(Mutex::new(Vec::new())),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        bus.shared
            .transport
            .attach(BusLetters(Arc::downgrade(&bus.shared)));
        bus
    }
}

/// A subscriber could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The topic name is invalid.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
    /// The transport refused.
    #[error("transport refused the subscription: {0}")]
    Transport(#[from] TransportError),
    /// The bus is shutting down.
    #[error("the bus is shut down")]
    Closed,
    /// A worker thread could not be spawned.
    #[error("cannot spawn a worker thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// Zero workers were asked for.
    #[error("a subscriber needs at least one worker")]
    NoWorkers,
}

/// The outcome of [`Bus::shutdown`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether every delivery reached an end before the deadline.
    pub drained: bool,
    /// Deliveries dead-lettered with reason `shutdown` (undelivered by the deadline).
    pub dead_lettered_at_shutdown: usize,
    /// Deliveries the DLQ refused during shutdown, handed back to the caller.
    pub unsaved: Vec<Envelope>,
    /// Workers still inside a handler when shutdown gave up on them (the
    /// deadline, plus a grace to notice the stop: 100 ms, or two
    /// poll intervals in a transport that cannot wake its workers):
    /// left running, detached. Their deliveries are counted in flight
    /// (`stats.in_flight()`), and the ledger closes when their handlers
    /// return (acked, or dead-lettered with reason `shutdown`).
    pub stuck_workers: usize,
    /// The final counters; the invariant holds exactly unless workers were
    /// left stuck.
    pub stats: BusStats,
}

/// The message bus.
///
/// ```
/// use bus_core::{Bus, Message};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
///
/// let bus = Bus::builder().build();
/// let seen = Arc::new(AtomicUsize::new(0));
/// let counter = Arc::clone(&seen);
/// bus.subscriber("billing")
///     .topic("orders.created")
///     .start(move |_msg: &Message<'_>| -> Result<(), std::io::Error> {
///         counter.fetch_add(1, Ordering::SeqCst);
///         Ok(())
///     })
///     .unwrap();
/// bus.publish("orders.created", &b"{\"id\":1}"[..]).unwrap();
/// let report = bus.shutdown(Duration::from_secs(5));
/// assert!(report.drained);
/// assert_eq!(seen.load(Ordering::SeqCst), 1);
/// assert!(report.stats.invariant_holds());
/// ```
#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
    subscribers: Arc<Mutex<Vec<Arc<Subscriber>>>>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Starts a builder.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// The live counters.
    pub fn stats(&self) -> BusStats {
        self.shared.counters.snapshot()
    }

    /// The transport's queue depths.
    pub fn queue_depths(&self) -> Vec<QueueDepth> {
        self.shared.transport.queue_depths()
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// Whether the dead-letter store refused its last write.
    pub fn dlq_failing(&self) -> bool {
        self.shared.dlq_failing.load(Ordering::Relaxed)
    }

    /// Publishes `payload` to `topic` (normal priority). On `Err` the caller
    /// gets the payload back (see [`PublishError::into_payload`]).
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<MessageId, PublishError> {
        self.publish_envelope(envelope_for(&self.shared, topic, payload.into())?)
    }

    /// Publishes a prepared envelope (priority, headers, correlation id).
    pub fn publish_envelope(&self, envelope: Envelope) -> Result<MessageId, PublishError> {
        self.publish_envelope_timeout(envelope, self.shared.config.publish_timeout)
    }

    /// Publishes, waiting at most `timeout` for room in a full queue.
    pub fn publish_envelope_timeout(
        &self,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<MessageId, PublishError> {
        self.publish_routed(envelope, None, timeout)
    }

    /// Publishes a prepared envelope to the one consumer group `group` of
    /// its topic (a replayed dead letter goes back to the group that failed
    /// it, not to the groups that settled it), bounded and counted like any
    /// publish. [`PublishError::NoSuchGroup`] when no such group subscribes.
    ///
    /// ```
    /// use bus_core::{Bus, Envelope, Message, PublishError, Topic};
    ///
    /// let bus = Bus::builder().build();
    /// for group in ["billing", "audit"] {
    ///     bus.subscriber(group)
    ///         .topic("orders.created")
    ///         .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
    ///         .unwrap();
    /// }
    /// let topic = Topic::new("orders.created").unwrap();
    /// bus.publish_to_group("billing", Envelope::new(topic.clone(), &b"{}"[..]))
    ///     .unwrap();
    /// let err = bus
    ///     .publish_to_group("shipping", Envelope::new(topic, &b"{}"[..]))
    ///     .unwrap_err();
    /// assert!(matches!(err, PublishError::NoSuchGroup { .. }));
    /// assert_eq!(bus.stats().accepted, 1);
    /// ```
    pub fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
    ) -> Result<MessageId, PublishError> {
        self.publish_routed(envelope, Some(group), self.shared.config.publish_timeout)
    }

    /// Publishes to every group of the topic, or to `group` alone.
    fn publish_routed(
        &self,
        envelope: Envelope,
        group: Option<&str>,
        timeout: Duration,
    ) -> Result<MessageId, PublishError> {
        let s = &self.shared;
        let mut envelope = envelope;
        if let Err(refusal) = admit(s, &mut envelope) {
            return Err(refusal.reject(s, envelope));
        }
        let id = envelope.id;
        let published = match group {
            None => s.transport.publish(envelope, timeout),
            Some(group) => s.transport.publish_to_group(group, envelope, timeout),
        };
        count_outcome(s, id, published)
    }

    /// A [`Publisher`] with the default window (256 messages in flight,
    /// blocking when full): many publishes in flight, each confirmed later.
    pub fn publisher(&self) -> Publisher {
        self.publisher_with(PublisherOptions::default())
    }

    /// A [`Publisher`] with `options`.
    pub fn publisher_with(&self, options: PublisherOptions) -> Publisher {
        Publisher::new(Arc::clone(&self.shared), options)
    }

    /// Starts configuring a subscriber named `component` (its name in
    /// reports, breakers and health; also its consumer group unless set).
    pub fn subscriber(&self, component: &str) -> SubscriberBuilder<'_> {
        SubscriberBuilder {
            bus: self,
            component: component.to_owned(),
            topic: None,
            options: SubscribeOptions::group(component),
            workers: 1,
            #[cfg(feature = "tokio")]
            asynchronous: tasks::AsyncOptions::default(),
        }
    }

    /// Subscribes `handler` to `topic` in a group of its own (so it gets every
    /// message), with one worker and default options.
    pub fn subscribe(
        &self,
        topic: &str,
        handler: impl Handler,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subscriber(&format!("{topic}.sub{n}"))
            .topic(topic)
            .start(handler)
    }

    /// Stops intake, lets workers drain until everything is settled or
    /// `timeout` passes, stops the workers, and dead-letters whatever is
    /// still undelivered (reason `shutdown`). The returned stats satisfy the
    /// invariant exactly, unless a handler did not return: its worker is left
    /// running (`stuck_workers`; the wait for it ends a grace after the
    /// deadline, see [`ShutdownReport::stuck_workers`]), its delivery stays
    /// in flight, and
    /// it is settled when the handler returns (acked, or dead-lettered with
    /// reason `shutdown`).
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        let s = &self.shared;
        if s.state
            .compare_exchange(RUNNING, DRAINING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return ShutdownReport {
                drained: true,
                dead_lettered_at_shutdown: 0,
                unsaved: Vec::new(),
                stuck_workers: 0,
                stats: self.stats(),
            };
        }
        let mut drained = false;
        loop {
            // Pipelined publishes still unconfirmed are not in the ledger
            // yet: their answers are waited for like deliveries.
            if self.stats().in_flight() == 0 && s.confirming.load(Ordering::Acquire) == 0 {
                drained = true;
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::park_timeout((deadline - now).min(Duration::from_millis(2)));
        }
        s.state.store(CLOSED, Ordering::Release);
        let subscribers = std::mem::take(
            &mut *self
                .subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for sub in &subscribers {
            sub.request_stop();
            // Past the deadline: async calls still in flight are cancelled.
            sub.run_hooks(true);
        }
        // A worker sees the stop between deliveries, at once when idle (or
        // within a poll interval, in a transport that cannot wake it); one
        // whose handler never returns must not hold the shutdown past its
        // deadline.
        let now = Instant::now();
        let stuck: usize = subscribers
            .iter()
            .map(|sub| {
                let join_by = deadline.max(now + sub.stop_grace(s.config.poll_interval));
                sub.stop_and_join_until(Some(join_by))
            })
            .sum();
        if stuck > 0 {
            tracing::error!(
                stuck,
                "shutdown left workers whose handlers did not return; their deliveries stay in flight"
            );
        }
        let leftovers = s.transport.close();
        if s.transport.durable() {
            settle::left_in_broker(s, self.stats().in_flight());
        }
        let mut dead = 0;
        let mut unsaved = Vec::new();
        for (group, env) in leftovers {
            match settle::at_shutdown(s, &group, env) {
                Ok(()) => dead += 1,
                Err(env) => unsaved.push(env),
            }
        }
        ShutdownReport {
            drained: drained && dead == 0 && stuck == 0,
            dead_lettered_at_shutdown: dead,
            unsaved,
            stuck_workers: stuck,
            stats: self.stats(),
        }
    }
}

/// The envelope of a publish by topic name; an invalid name is a counted
/// refusal that hands the payload back.
fn envelope_for(s: &Shared, topic: &str, payload: Bytes) -> Result<Envelope, PublishError> {
    match Topic::new(topic) {
        Ok(t) => Ok(Envelope::new(t, payload)),
        Err(source) => {
            let err = PublishError::InvalidTopic {
                topic: topic.to_owned(),
                source,
                payload,
            };
            Err(settle::rejected(s, topic, err))
        }
    }
}

/// The checks every publish passes before the transport sees it: the bus
/// is running and the payload within its limit; then the conversation and
/// trace headers. Takes the envelope by reference: a publish moved it into
/// and out of here, two 184-byte copies a message. A refusal is handed to
/// [`Refusal::reject`] with the envelope.
fn admit(s: &Shared, envelope: &mut Envelope) -> Result<(), Refusal> {
    if s.state.load(Ordering::Acquire) != RUNNING {
        return Err(Refusal::Closed);
    }
    let size = envelope.payload.len();
    if size > s.config.max_payload_bytes {
        return Err(Refusal::TooLarge { size });
    }
    crate::trace::continue_conversation(envelope);
    let span = crate::trace::producer_span(envelope, &*s.transport);
    if !span.is_disabled() {
        s.plugs.propagator.inject(&span, &mut envelope.headers);
    }
    Ok(())
}

/// Why [`admit`] refused a publish.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Closed,
    TooLarge { size: usize },
}

impl Refusal {
    /// The error handing `envelope` back, counted and reported.
    #[cold]
    fn reject(self, s: &Shared, envelope: Envelope) -> PublishError {
        let topic = envelope.topic.clone();
        let err = match self {
            Refusal::Closed => PublishError::Closed { envelope },
            Refusal::TooLarge { size } => PublishError::PayloadTooLarge {
                envelope,
                size,
                limit: s.config.max_payload_bytes,
            },
        };
        settle::rejected(s, topic.as_str(), err)
    }
}

/// Counts what the transport answered for message `id`, once, whether the
/// publish waited for it or a [`Publisher`] learned it later.
fn count_outcome(
    s: &Shared,
    id: MessageId,
    published: Result<crate::Receipt, PublishError>,
) -> Result<MessageId, PublishError> {
    match published {
        Ok(receipt) => {
            // Observers read publishes from this ledger (`Observer::attach`):
            // a call per publish was most of what error handling still
            // added to a publish.
            s.counters.add(Counter::accepted, u64::from(receipt.copies));
            if let Some(leftovers) = receipt.leftovers {
                settle::leftovers(s, *leftovers);
            }
            Ok(id)
        }
        Err(PublishError::NoSubscribers { envelope }) if s.config.unrouted == Unrouted::Discard => {
            s.counters.inc(Counter::accepted);
            settle::discard(
                s,
                "-",
                &envelope,
                "no subscriber for the topic (unrouted: discard)",
                None,
            );
            Ok(id)
        }
        Err(e) => {
            let topic = e.envelope().map(|env| env.topic.clone());
            let name = topic.as_ref().map_or("-", Topic::as_str);
            Err(settle::rejected(s, name, e))
        }
    }
}

/// Configures and starts a subscriber.
#[must_use]
pub struct SubscriberBuilder<'a> {
    bus: &'a Bus,
    component: String,
    topic: Option<String>,
    options: SubscribeOptions,
    workers: usize,
    #[cfg(feature = "tokio")]
    asynchronous: tasks::AsyncOptions,
}

impl std::fmt::Debug for SubscriberBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberBuilder")
            .field("component", &self.component)
            .field("topic", &self.topic)
            .field("options", &self.options)
            .field("workers", &self.workers)
            .finish()
    }
}

impl SubscriberBuilder<'_> {
    /// The topic to subscribe to (required).
    pub fn topic(mut self, topic: &str) -> Self {
        self.topic = Some(topic.to_owned());
        self
    }
    /// The consumer group (default: the component name).
    pub fn group(mut self, group: &str) -> Self {
        self.options.group = group.to_owned();
        self
    }
    /// Worker threads (default 1; members of the same group).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Queue capacity (default 1024).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.options = self.options.with_capacity(capacity);
        self
    }
    /// Overflow policy (default: block 1 s, then reject).
    pub fn overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.options = self.options.with_overflow(overflow);
        self
    }
    /// Starts the workers.
    pub fn start(self, handler: impl Handler) -> Result<SubscriptionHandle, SubscribeError> {
        let handler: Arc<dyn Handler> = Arc::new(handler);
        self.launch(|pipe, sub, wakeable, name| {
            let ctx = worker::Worker {
                pipe,
                sub,
                handler: Arc::clone(&handler),
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || ctx.run(wakeable))
                .map(subscriber::Worker::Thread)
        })
    }

    /// What starting a subscriber takes, whichever runner it has: the
    /// checks, its pipeline, one subscription per worker, and `spawn`
    /// called once per subscription to start the thread or task that runs
    /// it (told whether the subscription can be woken, and its name).
    fn launch(
        self,
        mut spawn: impl FnMut(
            Arc<pipeline::Pipeline>,
            Box<dyn crate::Subscription>,
            bool,
            String,
        ) -> std::io::Result<subscriber::Worker>,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        let shared = &self.bus.shared;
        if shared.state.load(Ordering::Acquire) != RUNNING {
            return Err(SubscribeError::Closed);
        }
        if self.workers == 0 {
            return Err(SubscribeError::NoWorkers);
        }
        let topic = Topic::new(self.topic.as_deref().unwrap_or_default())?;
        let guard = shared.plugs.guards.guard(&self.component);
        let component: Arc<str> = Arc::from(self.component.as_str());
        let group: Arc<str> = Arc::from(self.options.group.as_str());
        let subscriber = Arc::new(Subscriber::default());
        shared.record_overflow(&topic, &group, self.options.overflow);
        let pipe = Arc::new(pipeline::Pipeline {
            shared: Arc::clone(shared),
            guard,
            component: Arc::clone(&component),
            group,
            subscriber: Arc::clone(&subscriber),
        });
        // Every subscription first: a refusal then leaves no worker running.
        let subs = (0..self.workers)
            .map(|_| shared.transport.subscribe(&topic, &self.options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| match e {
                TransportError::Spawn(e) => SubscribeError::Spawn(e),
                e => SubscribeError::Transport(e),
            })?;
        let mut workers = Vec::with_capacity(self.workers);
        for (i, sub) in subs.into_iter().enumerate() {
            let waker = sub.waker();
            let wakeable = waker.is_some();
            match waker {
                Some(w) => subscriber
                    .wakers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(w),
                None => subscriber.polls.store(true, Ordering::Relaxed),
            }
            let name = format!("bus-{}-{i}", self.component);
            match spawn(Arc::clone(&pipe), sub, wakeable, name) {
                Ok(j) => workers.push(j),
                Err(e) => {
                    *subscriber
                        .workers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = workers;
                    subscriber.stop_and_join();
                    return Err(SubscribeError::Spawn(e));
                }
            }
        }
        *subscriber
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = workers;
        self.bus
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&subscriber));
        Ok(SubscriptionHandle {
            subscriber,
            component,
            poll_interval: self.bus.shared.config.poll_interval,
        })
    }
}

/// A running subscriber. Dropping the handle leaves it running until the bus
/// shuts down; [`close`](SubscriptionHandle::close) stops its workers early
/// (its queue keeps receiving messages for a later subscriber of the group).
#[derive(Debug)]
pub struct SubscriptionHandle {
    subscriber: Arc<Subscriber>,
    component: Arc<str>,
    /// The bus's poll interval, for the grace a polling worker needs.
    poll_interval: Duration,
}

impl SubscriptionHandle {
    /// The subscriber's name.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Stops the workers after their current message and waits for them
    /// up to `timeout` (at least the grace a worker needs to notice the
    /// stop). Returns how many workers were left running because their
    /// handler did not return: their deliveries stay in flight, and
    /// [`Bus::shutdown`] waits for them and counts them again.
    ///
    /// ```
    /// use bus_core::{Bus, Message};
    /// use std::time::Duration;
    ///
    /// let bus = Bus::builder().build();
    /// let handle = bus
    ///     .subscriber("audit")
    ///     .topic("orders.created")
    ///     .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
    ///     .unwrap();
    /// assert_eq!(handle.close(Duration::from_secs(1)), 0);
    /// ```
    pub fn close(self, timeout: Duration) -> usize {
        let grace = self.subscriber.stop_grace(self.poll_interval);
        // No limit when the deadline would overflow an Instant.
        let until = Instant::now().checked_add(timeout.max(grace));
        self.subscriber.stop_and_join_until(until)
    }
}
