//! The bus: publish, subscribe, and the pipeline that settles every delivery.

mod stats;
mod worker;

pub use stats::{BusStats, Ledger};

use crate::dlq::{DeadLetter, DeadLetterReason, DeadLetterStore, MemoryDeadLetters};
use crate::guard::{GuardProvider, NoGuard};
use crate::memory::MemoryTransport;
use crate::observe::{BusEvent, ErrorSink, NoObserver, NoSink, Observer};
use crate::recovery::{RecoveryPolicy, SimpleRetry};
use crate::time::{SharedClock, system_clock};
use crate::{
    Envelope, Handler, MessageId, OverflowPolicy, PublishError, QueueDepth, SubscribeOptions,
    Topic, TopicError, Transport, TransportError,
};
use bus_errors::{
    Classification, Classifier, DefaultClassifier, ErrorCategory, ErrorReport, Sanitizer, Severity,
};
use bytes::Bytes;
use stats::{Counter, Counters};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// How often an idle worker checks for shutdown (default 50 ms).
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
    state: AtomicU8,
}

impl Shared {
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
    observer: Arc<dyn Observer>,
    clock: SharedClock,
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
            observer: Arc::new(NoObserver),
            clock: system_clock(),
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
    /// The observer (default: none; use [`Observers`](crate::Observers) for several).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
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
        let counters = Arc::new(Counters::default());
        self.observer.attach(&Ledger(Arc::clone(&counters)));
        Bus {
            shared: Arc::new(Shared {
                transport,
                plugs: Plugs {
                    classifier: self.classifier,
                    guards: self.guards,
                    recovery: self.recovery,
                    dlq: self.dlq,
                    sink: self.sink,
                    observing: self.observer.listening(),
                    observer: self.observer,
                    clock: self.clock,
                },
                config: self.config,
                counters,
                dlq_failing: AtomicBool::new(false),
                state: AtomicU8::new(RUNNING),
            }),
            subscribers: Arc::new(Mutex::new(Vec::new())),
            next_id: Arc::new(AtomicU64::new(1)),
        }
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
    /// deadline, plus a grace of two poll intervals to notice the stop):
    /// left running, detached. Their deliveries are counted in flight
    /// (`stats.in_flight()`), and the ledger closes when their handlers
    /// return (acked, or dead-lettered with reason `shutdown`).
    pub stuck_workers: usize,
    /// The final counters; the invariant holds exactly unless workers were
    /// left stuck.
    pub stats: BusStats,
}

// Shared by the bus and the handle, so whichever stops it joins the workers.
#[derive(Debug)]
struct Subscriber {
    stop: AtomicBool,
    workers: Mutex<Vec<JoinHandle<()>>>,
    // Nanoseconds after `epoch` until which the workers take no message
    // (the DLQ refused a write); 0 when not paused. One relaxed load per
    // message on the hot path.
    paused_until: AtomicU64,
    epoch: Instant,
}

impl Default for Subscriber {
    fn default() -> Self {
        Self {
            stop: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
            paused_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Subscriber {
    pub(crate) fn pause_for(&self, d: Duration) {
        let until = self.epoch.elapsed() + d;
        let nanos = crate::time::saturating_nanos(until).max(1);
        self.paused_until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// How much longer the pause lasts, if one is in force.
    pub(crate) fn paused_for(&self) -> Option<Duration> {
        let until = self.paused_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let now = crate::time::saturating_nanos(self.epoch.elapsed());
        if now >= until {
            let _ =
                self.paused_until
                    .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
            return None;
        }
        Some(Duration::from_nanos(until - now))
    }

    /// Stops the workers and waits for all of them.
    fn stop_and_join(&self) {
        self.stop_and_join_until(None);
    }

    /// Stops the workers and joins those that finish by `until` (all, with
    /// `None`); the others (a handler that does not return) are left
    /// running, detached. Returns how many were left.
    fn stop_and_join_until(&self, until: Option<Instant>) -> usize {
        self.stop.store(true, Ordering::Release);
        let mut workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let Some(until) = until else {
            for w in workers {
                let _ = w.join();
            }
            return 0;
        };
        loop {
            let (done, running): (Vec<_>, Vec<_>) =
                workers.into_iter().partition(JoinHandle::is_finished);
            for w in done {
                let _ = w.join();
            }
            workers = running;
            let now = Instant::now();
            if workers.is_empty() || now >= until {
                return workers.len();
            }
            std::thread::park_timeout((until - now).min(Duration::from_millis(1)));
        }
    }
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
        let payload = payload.into();
        match Topic::new(topic) {
            Ok(t) => self.publish_envelope(Envelope::new(t, payload)),
            Err(source) => {
                let err = PublishError::InvalidTopic {
                    topic: topic.to_owned(),
                    source,
                    payload,
                };
                Err(self.rejected(topic, err))
            }
        }
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
        let s = &self.shared;
        if s.state.load(Ordering::Acquire) != RUNNING {
            let topic = envelope.topic.clone();
            return Err(self.rejected(topic.as_str(), PublishError::Closed { envelope }));
        }
        let size = envelope.payload.len();
        if size > s.config.max_payload_bytes {
            let topic = envelope.topic.clone();
            let err = PublishError::PayloadTooLarge {
                envelope,
                size,
                limit: s.config.max_payload_bytes,
            };
            return Err(self.rejected(topic.as_str(), err));
        }
        let id = envelope.id;
        match s.transport.publish(envelope, timeout) {
            Ok(receipt) => {
                // Observers read publishes from this ledger (`Observer::attach`):
                // a call per publish was most of what error handling still
                // added to a publish.
                s.counters.add(Counter::accepted, u64::from(receipt.copies));
                if let Some(leftovers) = receipt.leftovers {
                    self.leftovers(*leftovers);
                }
                Ok(id)
            }
            Err(PublishError::NoSubscribers { envelope })
                if s.config.unrouted == Unrouted::Discard =>
            {
                s.counters.inc(Counter::accepted);
                self.discard(
                    "-",
                    &envelope,
                    "no subscriber for the topic (unrouted: discard)",
                );
                Ok(id)
            }
            Err(e) => {
                let topic = e.envelope().map(|env| env.topic.clone());
                let name = topic.as_ref().map_or("-", Topic::as_str);
                Err(self.rejected(name, e))
            }
        }
    }

    /// Settles what a publish's receipt handed back: copies enqueued as the
    /// transport closed, copies spilled by a full queue, messages discarded.
    #[cold]
    fn leftovers(&self, leftovers: crate::Leftovers) {
        for (group, env) in leftovers.closed {
            // The transport closed mid-publish (shutdown): the copy was
            // accepted, so it is dead-lettered like what close returned.
            dead_letter_late(&self.shared, &group, env);
        }
        for (group, env) in leftovers.spilled {
            self.spill(&group, env);
        }
        for (group, env) in leftovers.discarded {
            self.discard(
                &group,
                &env,
                "queue full: discarded under the discard_lowest overflow policy",
            );
        }
    }

    fn rejected(&self, topic: &str, err: PublishError) -> PublishError {
        let c = &self.shared.counters;
        c.inc(Counter::rejected_at_publish);
        self.shared.event(&BusEvent::Rejected {
            topic,
            reason: err.kind(),
        });
        err
    }

    fn discard(&self, component: &str, env: &Envelope, reason: &str) {
        tracing::warn!(message_id = %env.id, topic = %env.topic, component, reason, "message discarded by policy");
        self.shared.counters.inc(Counter::discarded_by_policy);
        self.shared.event(&BusEvent::Discarded {
            topic: &env.topic,
            component,
            reason,
        });
    }

    // A copy refused by a full queue under the DeadLetter overflow policy.
    fn spill(&self, group: &str, env: Envelope) {
        let class = Classification::new(ErrorCategory::QueueOverflow, Severity::High);
        let mut report =
            ErrorReport::new(class, group, format!("queue of group {group:?} is full"))
                .with_topic(env.topic.as_str())
                .with_message_id(env.id);
        report.record_recovery(false, Some(false), "dead-letter: queue_overflow");
        self.shared.plugs.sink.record(&report);
        self.shared.event(&BusEvent::Failed { report: &report });
        let letter = DeadLetter::new(env, report, DeadLetterReason::QueueOverflow, group, group);
        if let Err(leftover) = worker::store_letter(&self.shared, letter) {
            // The copy was accepted; with the DLQ refusing, it goes back into
            // its own group's queue past the bound rather than be lost.
            if let Err(env) = self.shared.transport.requeue(group, leftover.envelope) {
                tracing::error!(message_id = %env.id, group, "overflow copy could neither be dead-lettered nor re-queued (transport closed, or it keeps no queues of its own); counted as returned_at_shutdown and dropped");
                self.shared.counters.inc(Counter::returned_at_shutdown);
            }
        }
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
    /// running (`stuck_workers`; the wait for it ends two poll intervals
    /// after the deadline at the latest), its delivery stays in flight, and
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
            if self.stats().in_flight() == 0 {
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
            sub.stop.store(true, Ordering::Release);
        }
        // A worker sees the stop between deliveries, within a poll interval
        // when idle; one whose handler never returns must not hold the
        // shutdown past its deadline.
        let join_by = deadline.max(Instant::now() + 2 * s.config.poll_interval);
        let stuck: usize = subscribers
            .iter()
            .map(|sub| sub.stop_and_join_until(Some(join_by)))
            .sum();
        if stuck > 0 {
            tracing::error!(
                stuck,
                "shutdown left workers whose handlers did not return; their deliveries stay in flight"
            );
        }
        let leftovers = s.transport.close();
        let mut dead = 0;
        let mut unsaved = Vec::new();
        for (group, env) in leftovers {
            match dead_letter_at_shutdown(s, &group, env) {
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

/// Dead-letters a message the transport handed back at close (reason
/// shutdown); if the store refuses, counts it as returned and hands it back.
fn dead_letter_at_shutdown(s: &Shared, group: &str, env: Envelope) -> Result<(), Envelope> {
    let class = Classification::new(ErrorCategory::MessageProcessing, Severity::Medium);
    let mut report = ErrorReport::new(
        class,
        group,
        "the bus shut down before the message was delivered",
    )
    .with_topic(env.topic.as_str())
    .with_message_id(env.id)
    .with_attempt(env.attempt);
    report.record_recovery(false, Some(false), "dead-letter: shutdown");
    let letter = DeadLetter::new(env, report, DeadLetterReason::Shutdown, group, group);
    worker::store_letter(s, letter).map_err(|letter| {
        s.counters.inc(Counter::returned_at_shutdown);
        letter.envelope
    })
}

/// [`dead_letter_at_shutdown`] for a message that reaches the end after the
/// shutdown report was made (no `unsaved` list to hand it back in): if the
/// store refuses, it is counted as returned and logged with its id.
fn dead_letter_late(s: &Shared, group: &str, env: Envelope) {
    if let Err(env) = dead_letter_at_shutdown(s, group, env) {
        tracing::error!(message_id = %env.id, group, "a message settled during or after shutdown could not be dead-lettered; it is counted as returned_at_shutdown and dropped");
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
        self.options.capacity = capacity;
        self
    }
    /// Overflow policy (default: block 1 s, then reject).
    pub fn overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.options.overflow = overflow;
        self
    }
    /// Starts the workers.
    pub fn start(self, handler: impl Handler) -> Result<SubscriptionHandle, SubscribeError> {
        let shared = &self.bus.shared;
        if shared.state.load(Ordering::Acquire) != RUNNING {
            return Err(SubscribeError::Closed);
        }
        if self.workers == 0 {
            return Err(SubscribeError::NoWorkers);
        }
        let topic = Topic::new(self.topic.as_deref().unwrap_or_default())?;
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let guard = shared.plugs.guards.guard(&self.component);
        let component: Arc<str> = Arc::from(self.component.as_str());
        let group: Arc<str> = Arc::from(self.options.group.as_str());
        let subscriber = Arc::new(Subscriber::default());
        // Every subscription first: a refusal then leaves no worker running.
        let subs = (0..self.workers)
            .map(|_| shared.transport.subscribe(&topic, &self.options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut workers = Vec::with_capacity(self.workers);
        for (i, sub) in subs.into_iter().enumerate() {
            let ctx = worker::Worker {
                shared: Arc::clone(shared),
                sub,
                handler: Arc::clone(&handler),
                guard: Arc::clone(&guard),
                component: Arc::clone(&component),
                group: Arc::clone(&group),
                subscriber: Arc::clone(&subscriber),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("bus-{}-{i}", self.component))
                .spawn(move || ctx.run());
            match spawned {
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
}

impl SubscriptionHandle {
    /// The subscriber's name.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Stops the workers after their current message and waits for them.
    pub fn close(self) {
        self.subscriber.stop_and_join();
    }
}
