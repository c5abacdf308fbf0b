//! [`NatsTransport`]: the bus's [`Transport`] over JetStream, synchronous on
//! the outside, on its own tokio runtime or on the application's inside.

use crate::backstop;
use crate::codec;
use crate::config::{Discard, NatsConfig, Storage};
use crate::error::NatsError;
use crate::runtime::{drives, wait_on};
use crate::settle::Outstanding;
use crate::state::{ConnectionState, Counters, NatsStats, Outages};
use crate::subscription::{GroupShared, NatsSubscription};
use async_nats::jetstream::{self, consumer, stream};
use bus_core::{
    BrokerConnection, BusLetters, Confirm, DeadLetterStore, Envelope, PublishError, QueueDepth,
    Receipt, Route, SubscribeOptions, Subscription, Topic, Transport, TransportError,
};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, Runtime};

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn other(e: impl std::fmt::Display) -> TransportError {
    TransportError::Other(e.to_string().into())
}

/// What the transport shares with its subscriptions and background tasks.
pub(crate) struct Inner {
    pub(crate) rt: Mutex<Option<Runtime>>,
    pub(crate) handle: Handle,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) config: NatsConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) closed: Arc<AtomicBool>,
    /// Woken when the connection is (re)established.
    link: Arc<tokio::sync::Notify>,
    /// Settles sent and not yet confirmed, for `close` to wait on.
    pub(crate) settles: Arc<Outstanding>,
    pub(crate) dlq: Arc<Mutex<Option<Arc<dyn DeadLetterStore>>>>,
    /// The streams this process uses, each with the first sequence it may
    /// have stored there: a delivery below it is an earlier process's work.
    streams: Mutex<HashMap<String, u64>>,
    backstops: Mutex<HashSet<String>>,
    /// Replay consumers known to exist on the server.
    replays: Mutex<HashSet<String>>,
    pub(crate) groups: Mutex<HashMap<String, Arc<GroupShared>>>,
    routes: Mutex<HashMap<Topic, (u32, Instant)>>,
    /// Publishes started on the transport's own runtime, handed over in
    /// call order by one task (started at the first).
    sender: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Queued>>,
    /// The thread last seen driving the runtime, when it is a
    /// current-thread one: the only thread that must never wait for it.
    driver: Mutex<Option<ThreadId>>,
}

/// A publish started on the transport's runtime, waiting for its turn to
/// be handed to the connection.
pub(crate) struct Queued {
    envelope: Envelope,
    group: Option<String>,
    timeout: Duration,
    confirm: Confirm,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        if let Some(rt) = lock(&self.rt).take() {
            // Never blocks, so it is safe even on a runtime thread.
            rt.shutdown_background();
        }
    }
}

impl Inner {
    /// Runs `fut` on the runtime and waits at most `timeout` for it (see
    /// [`wait_on`]); `None` when it did not end in time or could not be
    /// waited for here.
    pub(crate) fn call<F>(&self, timeout: Duration, fut: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.wait(timeout, fut).ok()
    }

    /// [`call`](Self::call), telling a timeout from a call that would have
    /// blocked the runtime it waits for.
    pub(crate) fn wait<F>(&self, timeout: Duration, fut: F) -> Result<F::Output, TransportError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        wait_on(&self.handle, *lock(&self.driver), timeout, fut)
    }

    /// Whether the calling thread drives the transport's current-thread
    /// runtime: it must not wait for it.
    pub(crate) fn drives_runtime(&self) -> bool {
        drives(&self.handle, *lock(&self.driver))
    }

    /// Notes that the calling thread drives the transport's runtime, when
    /// that is a current-thread runtime (called from the transport's own
    /// tasks and polls, so it follows a runtime driven by another thread).
    pub(crate) fn note_driver(&self) {
        if self.handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            let me = std::thread::current().id();
            let mut driver = lock(&self.driver);
            if *driver != Some(me) {
                *driver = Some(me);
            }
        }
    }

    /// Whether the caller runs inside the transport's runtime (a task, a
    /// `block_on` or its blocking pool): a publish from there is handed to
    /// a task rather than waited for.
    pub(crate) fn on_runtime(&self) -> bool {
        Handle::try_current().is_ok_and(|h| h.id() == self.handle.id())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) async fn wait_connected(client: &async_nats::Client) {
        while client.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the connection, woken by the reconnect rather than by a
    /// timer: many settles may wait through one outage.
    pub(crate) async fn connected(&self) {
        loop {
            let reconnected = self.link.notified();
            tokio::pin!(reconnected);
            reconnected.as_mut().enable();
            if self.client.connection_state() == async_nats::connection::State::Connected {
                return;
            }
            // The client's state and its event are not ordered: look again
            // now and then.
            let _ = tokio::time::timeout(Duration::from_millis(250), reconnected).await;
        }
    }

    fn stream_config(&self, name: String, subjects: Vec<String>) -> stream::Config {
        stream::Config {
            name,
            subjects,
            storage: match self.config.storage {
                Storage::Memory => stream::StorageType::Memory,
                Storage::File => stream::StorageType::File,
            },
            num_replicas: self.config.replicas,
            duplicate_window: self.config.duplicate_window,
            // Limits retention with no limit by default: a message stays
            // until the stream is deleted, nothing ages out, and a full
            // stream refuses (discard new) rather than deleting what a group
            // still owes. Interest retention would free settled messages,
            // but nats-server 2.9 with filtered consumers and a max_bytes
            // limit removed messages some groups had not settled (7 595 of
            // 77 279 deliveries in a 15 s demo run).
            retention: stream::RetentionPolicy::Limits,
            max_age: self.config.max_age,
            max_bytes: self.config.max_bytes,
            max_messages: self.config.max_messages,
            discard: match self.config.discard {
                Discard::New => stream::DiscardPolicy::New,
                Discard::Old => stream::DiscardPolicy::Old,
            },
            ..Default::default()
        }
    }

    /// Refuses a stream found on the server that may drop unsettled
    /// messages (made by an older version, or by hand), unless allowed.
    fn check_stream(&self, info: &stream::Info) -> Result<(), TransportError> {
        let c = &info.config;
        let discard = match c.discard {
            stream::DiscardPolicy::Old => Discard::Old,
            _ => Discard::New,
        };
        match NatsConfig::loss_risk(discard, c.max_bytes, c.max_messages, c.max_age) {
            Some(why) if !self.config.allow_message_loss => {
                Err(TransportError::Other(Box::new(NatsError::LossyStream {
                    stream: c.name.clone(),
                    why,
                })))
            }
            _ => Ok(()),
        }
    }

    /// Creates the topic's stream and its advisory stream, once per process.
    pub(crate) async fn ensure_stream(&self, topic: &Topic) -> Result<String, TransportError> {
        let name = self.config.stream_for(topic);
        if lock(&self.streams).contains_key(&name) {
            return Ok(name);
        }
        let first = topic.as_str().split('.').next().unwrap_or_default();
        let sp = &self.config.subject_prefix;
        let cfg = self.stream_config(
            name.clone(),
            vec![format!("{sp}.{first}"), format!("{sp}.{first}.>")],
        );
        let stream = self.js.get_or_create_stream(cfg).await.map_err(other)?;
        self.check_stream(stream.cached_info())?;
        // Read before this process could publish here: a caller racing on
        // the same stream may read a later value, and the smaller one wins.
        let fresh_from = stream.cached_info().state.last_sequence.saturating_add(1);
        let adv = NatsConfig::advisory_stream_for(&name);
        let mut adv_cfg = self.stream_config(
            adv,
            vec![format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{name}.*"
            )],
        );
        adv_cfg.duplicate_window = Duration::from_secs(60);
        adv_cfg.max_bytes = -1;
        adv_cfg.max_messages = -1;
        self.js.get_or_create_stream(adv_cfg).await.map_err(other)?;
        lock(&self.streams)
            .entry(name.clone())
            .and_modify(|f| *f = (*f).min(fresh_from))
            .or_insert(fresh_from);
        Ok(name)
    }

    /// The durable consumer of `group` on `topic` and its settings: `replay`
    /// picks the one reading the group's replay subject, which starts at
    /// the stream's first message so a replay stored before it existed is
    /// still delivered; the topic's consumer starts at what is new.
    pub(crate) fn consumer_config(
        &self,
        topic: &Topic,
        group: &str,
        replay: bool,
    ) -> (String, consumer::pull::Config) {
        let cfg = &self.config;
        let (name, filter, deliver_policy) = if replay {
            (
                cfg.replay_consumer_for(topic, group),
                cfg.replay_subject_for(topic, group),
                consumer::DeliverPolicy::All,
            )
        } else {
            (
                cfg.consumer_for(topic, group),
                cfg.subject_for(topic),
                consumer::DeliverPolicy::New,
            )
        };
        let pull = consumer::pull::Config {
            durable_name: Some(name.clone()),
            // The MaxDeliver backstop names the group from this.
            description: Some(group.to_owned()),
            filter_subject: filter,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: cfg.ack_wait,
            max_deliver: cfg.max_deliver,
            max_ack_pending: i64::try_from(cfg.max_ack_pending).unwrap_or(i64::MAX),
            deliver_policy,
            ..Default::default()
        };
        (name, pull)
    }

    /// Gets or creates the durable consumer of `group` on `topic` (see
    /// [`consumer_config`](Self::consumer_config)) in `stream_name`.
    async fn consumer(
        &self,
        stream_name: &str,
        topic: &Topic,
        group: &str,
        replay: bool,
    ) -> Result<consumer::PullConsumer, TransportError> {
        let (name, pull) = self.consumer_config(topic, group, replay);
        let stream = self.js.get_stream(stream_name).await.map_err(other)?;
        let consumer = stream
            .get_or_create_consumer(&name, pull)
            .await
            .map_err(other)?;
        if replay {
            lock(&self.replays).insert(name);
        }
        Ok(consumer)
    }

    /// How many consumer groups receive `topic` (cached briefly).
    async fn groups_of(&self, topic: &Topic, stream_name: &str) -> Result<u32, TransportError> {
        let cached = lock(&self.routes).get(topic).copied();
        if let Some((n, at)) = cached
            && n > 0
            && at.elapsed() < self.config.consumer_cache_ttl
        {
            return Ok(n);
        }
        let subject = self.config.subject_for(topic);
        let counted = async {
            let stream = self.js.get_stream(stream_name).await.map_err(other)?;
            let mut list = stream.consumers();
            let mut n = 0_u32;
            while let Some(info) = list.next().await {
                let info = info.map_err(other)?;
                if info.config.filter_subject == subject {
                    n += 1;
                }
            }
            Ok::<u32, TransportError>(n)
        }
        .await;
        match (counted, cached) {
            (Ok(n), _) => {
                lock(&self.routes).insert(topic.clone(), (n, Instant::now()));
                Ok(n)
            }
            // An outage: keep publishing with what we knew.
            (Err(_), Some((n, _))) => Ok(n),
            (Err(e), None) => Err(e),
        }
    }

    /// Prepares the publish of `env`: waits at most `timeout` for the
    /// connection, the stream and the group count, and answers the subject
    /// and how many groups get a copy. With `group`, the message goes to
    /// that group alone, on the group's replay subject; the group's replay
    /// consumer is created first if this process has not seen it, so the
    /// message is owed (and its stream kept) even while no member runs.
    async fn prepare(
        &self,
        env: &Envelope,
        group: Option<&str>,
        timeout: Duration,
    ) -> Result<(String, u32), PublishFail> {
        let prepared = tokio::time::timeout(timeout, async {
            Self::wait_connected(&self.client).await;
            let stream_name = self
                .ensure_stream(&env.topic)
                .await
                .map_err(PublishFail::Transport)?;
            let copies = match group {
                Some(group) => {
                    let name = self.config.replay_consumer_for(&env.topic, group);
                    if !lock(&self.replays).contains(&name) {
                        self.consumer(&stream_name, &env.topic, group, true)
                            .await
                            .map_err(PublishFail::Transport)?;
                    }
                    1
                }
                None => self
                    .groups_of(&env.topic, &stream_name)
                    .await
                    .map_err(PublishFail::Transport)?,
            };
            if copies == 0 && self.config.require_consumer {
                return Err(PublishFail::NoSubscribers);
            }
            Self::wait_connected(&self.client).await;
            Ok(copies)
        })
        .await;
        let copies = match prepared {
            Ok(r) => r?,
            Err(_) => return Err(PublishFail::NotSent),
        };
        let subject = match group {
            Some(group) => self.config.replay_subject_for(&env.topic, group),
            None => self.config.subject_for(&env.topic),
        };
        Ok((subject, copies))
    }

    /// Prepares the publish of `env` and hands it to the client.
    async fn hand(
        &self,
        env: &Envelope,
        group: Option<&str>,
        timeout: Duration,
    ) -> Result<Handed, PublishFail> {
        let (subject, copies) = self.prepare(env, group, timeout).await?;
        match self.hand_over(env, &subject).await {
            Ok(ack) => Ok((subject, copies, ack)),
            // Not handed to the connection: nothing can be stored.
            Err(e) => Err(PublishFail::Transport(TransportError::Disconnected(
                e.to_string(),
            ))),
        }
    }

    /// Hands `env` to the client (in call order, on the connection) and
    /// answers the future of its PubAck.
    async fn hand_over(
        &self,
        env: &Envelope,
        subject: &str,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        let msg = jetstream::message::PublishMessage::build()
            .payload(env.payload.clone())
            .headers(codec::to_headers(env));
        self.js.send_publish(subject.to_owned(), msg).await
    }

    /// Waits for the server's answer to a message handed over. A lost
    /// PubAck (a server restart, a cut connection) is resent with the same
    /// `Nats-Msg-Id` until the server confirms it or `resend_deadline`
    /// passes, always inside the duplicate window, so the message is stored
    /// once and counted once, never reported refused while stored.
    async fn confirm(
        &self,
        env: &Envelope,
        subject: &str,
        copies: u32,
        first: jetstream::context::PublishAckFuture,
    ) -> Result<u32, PublishFail> {
        let deadline = tokio::time::Instant::now() + self.config.resend_deadline();
        let mut resent = false;
        let mut answer = first.await;
        loop {
            match answer {
                // A duplicate of our own resend is the first send, stored:
                // it counts. A duplicate on the first send is a message
                // someone published before (stored and counted then).
                Ok(ack) if ack.duplicate && !resent => {
                    Counters::inc(&self.counters.duplicate_publishes);
                    return Ok(0);
                }
                Ok(_) => return Ok(copies),
                Err(e) => {
                    use async_nats::jetstream::context::PublishErrorKind as K;
                    if e.kind() == K::Other
                        && let Some(refusal) = std::error::Error::source(&e)
                            .and_then(|s| s.downcast_ref::<jetstream::Error>())
                    {
                        // The server answered no: nothing was stored.
                        return Err(PublishFail::Refused(NatsError::refused(refusal)));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(PublishFail::InDoubt(e.to_string()));
                    }
                    Counters::inc(&self.counters.publish_resends);
                    tracing::debug!(message_id = %env.id, error = %e, "publish unconfirmed; resending with the same Nats-Msg-Id");
                    resent = true;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ =
                        tokio::time::timeout_at(deadline, Self::wait_connected(&self.client)).await;
                    answer = match self.hand_over(env, subject).await {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    };
                }
            }
        }
    }
}

/// A publish handed to the connection: its subject, how many groups get a
/// copy, and the future of its PubAck.
type Handed = (String, u32, jetstream::context::PublishAckFuture);

enum PublishFail {
    NoSubscribers,
    /// Never handed to the server within the caller's timeout.
    NotSent,
    Refused(NatsError),
    /// Handed over, and no confirmation came before the resend deadline.
    InDoubt(String),
    Transport(TransportError),
}

/// The bus over NATS JetStream.
///
/// * a stream per first topic segment (`<stream_prefix>_<segment>`, subjects
///   `<subject_prefix>.<segment>` and `<subject_prefix>.<segment>.>`);
/// * a durable pull consumer per (topic, group), explicit ack, filtered on
///   the topic's subject; members of a group share it, every group gets
///   every message published after the group was created;
/// * a second durable consumer per (topic, group) on the group's replay
///   subject, for messages published to that group alone
///   ([`publish_to_group`](Transport::publish_to_group)); members pull from
///   both;
/// * no per-subscriber queue: a group's messages wait in the stream, bounded
///   by `max_ack_pending` (delivered, unsettled), so a subscription asking
///   for a capacity or overflow policy (any value, the defaults too) is
///   refused with [`NatsError::NoQueueBound`];
/// * publish waits for the JetStream ack (`Nats-Msg-Id` = envelope id, so a
///   retried publish is stored once); [`send`](Transport::send) hands the
///   message over and awaits its ack on the runtime, so a
///   [`Publisher`](bus_core::Publisher) keeps many in flight; metadata
///   travels in headers;
/// * settles map onto JetStream acks: ack → `+ACK`, nak(delay) →
///   `-NAK {"delay":…}`, term → `+TERM`, in-progress → `+WPI`;
/// * the attempt number follows the delivery count, and the attempt history
///   the bus records is kept across redeliveries within this process;
/// * a MaxDeliver backstop: the server's advisories are captured in a stream
///   and turned into dead letters (see [`set_dead_letters`](Self::set_dead_letters)).
///
/// Every method of [`Transport`] is synchronous; the async client runs on
/// a runtime the transport owns (two threads named
/// [`RUNTIME_THREAD_NAME`](crate::RUNTIME_THREAD_NAME)) or on the application's
/// ([`NatsConfig::with_runtime`], [`connect_async`](Self::connect_async)).
/// On the application's runtime an async subscriber polls its
/// subscription from a task ([`Subscription::poll_next`]) and a
/// `publish_async` from a task is handed over by the transport's sender
/// task, so async code never crosses to another runtime nor blocks a
/// runtime thread. The synchronous methods work from ordinary threads (the
/// bus's workers are) and from a multi-thread runtime's tasks (they move
/// off the worker while they wait). On the thread driving the
/// current-thread runtime the transport runs on, one that would wait for
/// that runtime fails at once with [`NatsError::WouldBlock`] instead of
/// deadlocking (a publish from there is handed to the sender task); from
/// that runtime's blocking pool (`spawn_blocking`) they wait as usual.
#[derive(Clone)]
pub struct NatsTransport {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("url", &self.inner.config.url)
            .field("state", &self.connection_state())
            .finish_non_exhaustive()
    }
}

impl NatsTransport {
    /// The transport around a connected client.
    pub(crate) fn assemble(
        config: NatsConfig,
        rt: Option<Runtime>,
        handle: Handle,
        client: async_nats::Client,
        counters: Arc<Counters>,
        link: Arc<tokio::sync::Notify>,
    ) -> NatsTransport {
        Counters::inc(&counters.connects);
        // The client's queue of commands and JetStream's count of PubAcks
        // awaited both bound what is in flight: sized together, so a full
        // window of publishes is handed over without waiting on either.
        let in_flight = config.max_publishes_in_flight.max(1);
        let js = {
            let _runtime = handle.enter();
            jetstream::ContextBuilder::new()
                .timeout(config.request_timeout)
                .max_ack_inflight(in_flight)
                .backpressure_on_inflight(true)
                .build(client.clone())
        };
        let transport = NatsTransport {
            inner: Arc::new(Inner {
                rt: Mutex::new(rt),
                handle,
                client,
                js,
                config,
                counters,
                closed: Arc::new(AtomicBool::new(false)),
                link,
                settles: Arc::new(Outstanding::default()),
                dlq: Arc::new(Mutex::new(None)),
                streams: Mutex::new(HashMap::new()),
                backstops: Mutex::new(HashSet::new()),
                replays: Mutex::new(HashSet::new()),
                groups: Mutex::new(HashMap::new()),
                routes: Mutex::new(HashMap::new()),
                sender: std::sync::OnceLock::new(),
                driver: Mutex::new(None),
            }),
        };
        if transport.inner.handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            let weak = Arc::downgrade(&transport.inner);
            transport.inner.handle.spawn(async move {
                if let Some(inner) = weak.upgrade() {
                    inner.note_driver();
                }
            });
        }
        transport
    }

    /// The configuration.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// Where the MaxDeliver backstop puts messages JetStream stopped
    /// redelivering (reason `retries_exhausted`). Until one is set, the
    /// advisories wait in their stream; nothing is lost. A bus built on
    /// this transport sets its own store ([`Transport::attach`]), which
    /// also counts each letter in the bus's ledger; a later call here
    /// replaces it.
    pub fn set_dead_letters(&self, store: Arc<dyn DeadLetterStore>) {
        *lock(&self.inner.dlq) = Some(store);
    }

    /// Whether the connection is up.
    pub fn connection_state(&self) -> ConnectionState {
        if self.inner.is_closed() {
            return ConnectionState::Closed;
        }
        match self.inner.client.connection_state() {
            async_nats::connection::State::Connected => ConnectionState::Connected,
            _ => ConnectionState::Reconnecting,
        }
    }

    /// Connection and backstop counters.
    pub fn stats(&self) -> NatsStats {
        self.inner.counters.snapshot()
    }

    /// The underlying JetStream context (for administration and tests).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Runs `fut` on the transport's runtime and waits for it (at most
    /// `timeout`). For administration from synchronous code.
    pub fn block_on<F>(&self, timeout: Duration, fut: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.call(timeout, fut)
    }

    /// Deletes every stream this transport created (topic streams and their
    /// advisory streams). For tests and demos.
    pub fn delete_streams(&self) -> Result<(), TransportError> {
        let names: Vec<String> = lock(&self.inner.streams).drain().map(|(n, _)| n).collect();
        // Their consumers go with them: a later publish to a group creates
        // its replay consumer again, and a later subscription starts a
        // group afresh (a new stream numbers its messages from 1 again, so
        // the sequences settled here must not carry over).
        lock(&self.inner.replays).clear();
        lock(&self.inner.groups).retain(|_, g| !names.contains(&g.stream));
        let js = self.inner.js.clone();
        self.inner
            .wait(self.inner.config.request_timeout * 2, async move {
                for n in names {
                    let _ = js.delete_stream(&n).await;
                    let _ = js.delete_stream(NatsConfig::advisory_stream_for(&n)).await;
                }
            })
    }

    /// What the durable group `group` of `topic` owes on the server (pending
    /// plus delivered and unsettled, replays to the group included), zero
    /// if it does not exist yet: before subscribing, what an earlier process
    /// left for this one to resume.
    pub fn owed(&self, topic: &Topic, group: &str) -> Result<u64, TransportError> {
        let js = self.inner.js.clone();
        let stream = self.inner.config.stream_for(topic);
        let consumers = [
            self.inner.config.consumer_for(topic, group),
            self.inner.config.replay_consumer_for(topic, group),
        ];
        let wait = self.inner.config.request_timeout;
        self.inner.wait(wait, async move {
            let Ok(stream) = js.get_stream(&stream).await else {
                return 0;
            };
            let mut owed = 0;
            for c in consumers {
                if let Ok(i) = stream.consumer_info(&c).await {
                    owed += i.num_pending + i.num_ack_pending as u64;
                }
            }
            owed
        })
    }

    /// Deletes the streams this transport created whose groups have settled
    /// everything, and keeps the others (with their advisory streams) so a
    /// later process on the same names resumes them. Returns the kept ones
    /// with the number of deliveries still owed in each (pending plus
    /// delivered and unsettled, over all groups). The count is the
    /// server's and errs high, never low: a message handed back while a
    /// pull request of a closed subscription is still waiting can be
    /// counted both as pending and as unsettled (seen on server 2.9), which
    /// keeps a stream one run longer but never deletes one that owes.
    pub fn delete_streams_if_settled(&self) -> Result<Vec<(String, u64)>, TransportError> {
        let names: Vec<String> = lock(&self.inner.streams).keys().cloned().collect();
        let js = self.inner.js.clone();
        let wait = self.inner.config.request_timeout * 4;
        let kept = self.inner.wait(wait, async move {
            let mut kept = Vec::new();
            for n in names {
                let stream = js.get_stream(&n).await.map_err(other)?;
                let mut owed = 0_u64;
                let mut list = stream.consumers();
                while let Some(info) = list.next().await {
                    let info = info.map_err(other)?;
                    owed += info.num_pending + info.num_ack_pending as u64;
                }
                if owed == 0 {
                    js.delete_stream(&n).await.map_err(other)?;
                    let _ = js.delete_stream(NatsConfig::advisory_stream_for(&n)).await;
                } else {
                    kept.push((n, owed));
                }
            }
            Ok::<_, TransportError>(kept)
        })??;
        let mut streams = lock(&self.inner.streams);
        streams.retain(|n, _| kept.iter().any(|(k, _)| k == n));
        // Deleted streams took their consumers along: the replay consumer
        // cache is refilled (idempotently) by the next publish to a group,
        // and groups on them start afresh (see `delete_streams`).
        lock(&self.inner.replays).clear();
        lock(&self.inner.groups).retain(|_, g| streams.contains_key(&g.stream));
        Ok(kept)
    }

    /// The state of every consumer group this process subscribed to:
    /// pending (never delivered) and ack-pending (delivered, unsettled)
    /// counts. A group whose ack-pending count has reached
    /// `max_ack_pending` is stalled: the server delivers it nothing more.
    pub fn consumer_status(&self) -> Vec<ConsumerStatus> {
        let groups: Vec<Arc<GroupShared>> = lock(&self.inner.groups).values().cloned().collect();
        let max = self.inner.config.max_ack_pending;
        // Health reads this on every report: while the server is away it
        // answers from the last known counts instead of waiting on requests.
        let connected = self.connection_state() == ConnectionState::Connected;
        let mut first_seqs: HashMap<String, Option<u64>> = HashMap::new();
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            let (c, r) = (g.consumer.clone(), g.replay.clone());
            // The group's two consumers, read as one: what it owes is what
            // both owe; it stalls when either reaches its limit.
            let info = if connected {
                self.inner
                    .call(self.inner.config.request_timeout, async move {
                        let (c, r) = futures::join!(c.get_info(), r.get_info());
                        let (c, r) = (c.ok()?, r.ok()?);
                        Some(GroupInfo {
                            num_pending: c.num_pending + r.num_pending,
                            num_ack_pending: c.num_ack_pending + r.num_ack_pending,
                            num_redelivered: c.num_redelivered + r.num_redelivered,
                            stalled: c.num_ack_pending.max(r.num_ack_pending) >= max,
                        })
                    })
                    .flatten()
            } else {
                None
            };
            let (pending, ack_pending, redelivered, stalled, known) = match info {
                Some(i) => {
                    let p = usize::try_from(i.num_pending).unwrap_or(usize::MAX);
                    g.remember(p, i.num_ack_pending);
                    // Only a stream allowed to drop can have dropped.
                    if self.inner.config.allow_message_loss {
                        let first = *first_seqs
                            .entry(g.stream.clone())
                            .or_insert_with(|| self.first_seq(&g.stream));
                        if let Some(first) = first {
                            let lost = g.count_dropped(first);
                            if lost > 0 {
                                tracing::error!(stream = %g.stream, group = %g.group, lost, "the stream's limits deleted messages this group had not settled");
                                self.inner
                                    .counters
                                    .dropped_by_limits
                                    .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    (p, i.num_ack_pending, i.num_redelivered, i.stalled, true)
                }
                None => {
                    let (p, a) = g.last_known();
                    (p, a, 0, a >= max, false)
                }
            };
            out.push(ConsumerStatus {
                topic: g.topic.to_string(),
                group: g.group.clone(),
                stream: g.stream.clone(),
                consumer: g.consumer_name.clone(),
                num_pending: pending,
                num_ack_pending: ack_pending,
                num_redelivered: redelivered,
                max_ack_pending: max,
                stalled,
                fresh: known,
            });
        }
        out.sort_by(|a, b| (&a.topic, &a.group).cmp(&(&b.topic, &b.group)));
        out
    }

    fn first_seq(&self, stream: &str) -> Option<u64> {
        let js = self.inner.js.clone();
        let name = stream.to_owned();
        self.inner
            .call(self.inner.config.request_timeout, async move {
                let mut s = js.get_stream(name).await.ok()?;
                s.info().await.ok().map(|i| i.state.first_sequence)
            })
            .flatten()
    }

    fn start_backstop(&self, stream_name: &str) {
        if !lock(&self.inner.backstops).insert(stream_name.to_owned()) {
            return;
        }
        backstop::spawn(&self.inner, stream_name.to_owned());
    }
}

/// The counts of a group's two consumers, added up.
struct GroupInfo {
    num_pending: u64,
    num_ack_pending: usize,
    num_redelivered: usize,
    stalled: bool,
}

/// One consumer group's state on the server (see
/// [`NatsTransport::consumer_status`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ConsumerStatus {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// The JetStream stream.
    pub stream: String,
    /// The durable consumer's name (the group's replay consumer is named
    /// after it, with `__replay`; its counts are included below).
    pub consumer: String,
    /// Messages not yet delivered to the group.
    pub num_pending: usize,
    /// Messages delivered and not yet settled.
    pub num_ack_pending: usize,
    /// Messages redelivered after an ack timeout.
    pub num_redelivered: usize,
    /// The configured limit of `num_ack_pending`.
    pub max_ack_pending: usize,
    /// The group reached `max_ack_pending`: nothing more is delivered to it
    /// until it settles something.
    pub stalled: bool,
    /// False when the server could not be asked and the counts are the last known.
    pub fresh: bool,
}

impl NatsTransport {
    /// Starts a publish: prepares it and hands it to the client on the
    /// caller's thread (so one thread's messages keep their order), then
    /// waits for the PubAck in a task and resolves `confirm` from there.
    /// Called on the transport's own runtime, where waiting could stall
    /// (or, on a current-thread runtime, deadlock) the very tasks it waits
    /// for, the publish is queued to the transport's sender task instead,
    /// which hands publishes over one by one in call order.
    fn start_publish(
        &self,
        envelope: Envelope,
        group: Option<&str>,
        timeout: Duration,
        confirm: Confirm,
    ) {
        if self.inner.is_closed() {
            return confirm.resolve(Err(PublishError::Closed { envelope }));
        }
        if self.inner.on_runtime() {
            let queued = Queued {
                envelope,
                group: group.map(str::to_owned),
                timeout,
                confirm,
            };
            if let Err(tokio::sync::mpsc::error::SendError(q)) = self.sender().send(queued) {
                q.confirm.resolve(Err(PublishError::Closed {
                    envelope: q.envelope,
                }));
            }
            return;
        }
        let inner = Arc::clone(&self.inner);
        let to = group.map(str::to_owned);
        let env = envelope.clone();
        let handed = self.inner.call(timeout, async move {
            inner.hand(&env, to.as_deref(), timeout).await
        });
        self.after_hand_over(
            envelope,
            timeout,
            confirm,
            handed.unwrap_or(Err(PublishFail::NotSent)),
        );
    }

    /// Resolves a publish that was not handed over, or starts the wait for
    /// the PubAck of one that was.
    fn after_hand_over(
        &self,
        envelope: Envelope,
        timeout: Duration,
        confirm: Confirm,
        handed: Result<Handed, PublishFail>,
    ) {
        let (subject, copies, ack) = match handed {
            Ok(handed) => handed,
            Err(fail) => return confirm.resolve(Err(self.refusal(envelope, fail, timeout))),
        };
        let transport = self.clone();
        self.inner.handle.spawn(async move {
            let outcome = transport
                .inner
                .confirm(&envelope, &subject, copies, ack)
                .await;
            confirm.resolve(match outcome {
                Ok(copies) => Ok(Receipt::copies(copies)),
                Err(fail) => Err(transport.refusal(envelope, fail, timeout)),
            });
        });
    }

    /// The queue of the sender task, started at the first use. The task
    /// holds the transport weakly, so it ends when the transport goes.
    fn sender(&self) -> &tokio::sync::mpsc::UnboundedSender<Queued> {
        self.inner.sender.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Queued>();
            let weak = Arc::downgrade(&self.inner);
            self.inner.handle.spawn(async move {
                while let Some(q) = rx.recv().await {
                    let Some(inner) = weak.upgrade() else {
                        q.confirm.resolve(Err(PublishError::Closed {
                            envelope: q.envelope,
                        }));
                        continue;
                    };
                    inner.note_driver();
                    let transport = NatsTransport { inner };
                    let handed = match tokio::time::timeout(
                        q.timeout,
                        transport
                            .inner
                            .hand(&q.envelope, q.group.as_deref(), q.timeout),
                    )
                    .await
                    {
                        Ok(handed) => handed,
                        Err(_) => Err(PublishFail::NotSent),
                    };
                    transport.after_hand_over(q.envelope, q.timeout, q.confirm, handed);
                }
            });
            tx
        })
    }

    /// Publishes and waits for the outcome: [`start_publish`](Self::start_publish),
    /// one message in flight.
    fn publish_routed(
        &self,
        envelope: Envelope,
        group: Option<&str>,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let id = envelope.id;
        self.start_publish(
            envelope,
            group,
            timeout,
            Confirm::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        // The caller's timeout bounds the wait before the message is handed
        // over; confirming one already handed over may take up to the
        // resend deadline on top. The confirm always resolves within that,
        // unless the transport is torn down with the message in flight.
        let bound = timeout
            .saturating_add(self.inner.config.resend_deadline())
            .saturating_add(Duration::from_secs(1));
        rx.recv_timeout(bound)
            .unwrap_or(Err(PublishError::Unanswered { id }))
    }

    /// The error a failed publish hands back, logged and counted.
    fn refusal(&self, envelope: Envelope, fail: PublishFail, timeout: Duration) -> PublishError {
        let source = match fail {
            PublishFail::NoSubscribers => return PublishError::NoSubscribers { envelope },
            PublishFail::Transport(source) => source,
            PublishFail::Refused(refusal) => {
                tracing::warn!(message_id = %envelope.id, topic = %envelope.topic, %refusal, "publish refused by the server");
                TransportError::Other(Box::new(refusal))
            }
            PublishFail::InDoubt(why) => {
                Counters::inc(&self.inner.counters.publishes_in_doubt);
                tracing::error!(message_id = %envelope.id, topic = %envelope.topic, %why, "publish unconfirmed past the resend deadline; the server may still hold it");
                let source = TransportError::Disconnected(format!(
                    "no confirmation from {} within {:?}: {why}",
                    self.inner.config.url,
                    self.inner.config.resend_deadline()
                ));
                return PublishError::InDoubt { envelope, source };
            }
            PublishFail::NotSent => {
                if self.connection_state() == ConnectionState::Connected {
                    TransportError::Timeout(timeout)
                } else {
                    TransportError::Disconnected(format!(
                        "not connected to {} within {timeout:?}",
                        self.inner.config.url
                    ))
                }
            }
        };
        PublishError::Transport { envelope, source }
    }
}

impl Transport for NatsTransport {
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError> {
        self.publish_routed(envelope, None, timeout)
    }

    /// Pipelined: returns once the message is handed to the connection;
    /// the PubAck is awaited on the transport's runtime, so many messages
    /// share the round trips. See [`publish`](Transport::publish) for how
    /// a lost PubAck is resent.
    fn send(&self, envelope: Envelope, route: Route<'_>, timeout: Duration, confirm: Confirm) {
        match route {
            Route::Topic => self.start_publish(envelope, None, timeout, confirm),
            Route::Group("") => confirm.resolve(Err(PublishError::NoSuchGroup {
                envelope,
                group: String::new(),
            })),
            Route::Group(group) => self.start_publish(envelope, Some(group), timeout, confirm),
        }
    }

    /// Stores the message on `group`'s replay subject, read by the group's
    /// second durable consumer (nats-server 2.9 allows one filter per
    /// consumer, and the group's first one filters on the topic). Every
    /// member of the group pulls from both. A group is durable here: when no
    /// member runs, the replay consumer is created and holds the message
    /// until one subscribes, so a named group is never `NoSuchGroup`.
    fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        if group.is_empty() {
            return Err(PublishError::NoSuchGroup {
                envelope,
                group: String::new(),
            });
        }
        self.publish_routed(envelope, Some(group), timeout)
    }

    fn subscribe(
        &self,
        topic: &Topic,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        if self.inner.is_closed() {
            return Err(TransportError::Closed);
        }
        if options.group.is_empty() {
            return Err(TransportError::InvalidOptions("group name is empty".into()));
        }
        let cfg = &self.inner.config;
        // The stream holds a group's messages; max_ack_pending bounds what
        // is delivered and unsettled. A chosen queue bound cannot be kept,
        // so it is refused, not ignored.
        if options.chooses_queue_bound() {
            return Err(TransportError::Other(Box::new(NatsError::NoQueueBound {
                group: options.group.clone(),
                capacity: options.capacity,
                overflow: options.overflow,
                max_ack_pending: cfg.max_ack_pending,
            })));
        }
        let consumer_name = cfg.consumer_for(topic, &options.group);
        let inner = Arc::clone(&self.inner);
        let t = topic.clone();
        let g = options.group.clone();
        let wait = cfg.request_timeout * 3;
        let created = self.inner.wait(wait, async move {
            let stream_name = inner.ensure_stream(&t).await?;
            let main = inner.consumer(&stream_name, &t, &g, false).await?;
            let replay = inner.consumer(&stream_name, &t, &g, true).await?;
            Ok::<_, TransportError>((stream_name, main, replay))
        })??;
        let (stream_name, consumer, replay) = created;
        let fresh_from = lock(&self.inner.streams)
            .get(&stream_name)
            .copied()
            .unwrap_or(0);
        let group = {
            let mut groups = lock(&self.inner.groups);
            Arc::clone(groups.entry(consumer_name.clone()).or_insert_with(|| {
                Arc::new(
                    GroupShared::new(
                        topic.clone(),
                        options.group.clone(),
                        stream_name.clone(),
                        consumer_name,
                        consumer,
                        replay,
                        cfg.max_ack_pending,
                    )
                    .resuming_below(fresh_from),
                )
            }))
        };
        lock(&self.inner.routes).remove(topic);
        self.start_backstop(&stream_name);
        Ok(Box::new(NatsSubscription::new(
            Arc::clone(&self.inner),
            group,
        )))
    }

    fn reconnect(&self) -> Result<(), TransportError> {
        if self.inner.is_closed() {
            return Err(TransportError::Closed);
        }
        if self.connection_state() == ConnectionState::Connected {
            return Ok(());
        }
        let client = self.inner.client.clone();
        let wait = self.inner.config.connect_timeout;
        self.inner
            .call(wait, async move {
                let _ = client.force_reconnect().await;
                Inner::wait_connected(&client).await;
            })
            .ok_or_else(|| {
                TransportError::Disconnected(format!(
                    "{} unreachable after {wait:?}",
                    self.inner.config.url
                ))
            })
    }

    fn queue_depths(&self) -> Vec<QueueDepth> {
        self.consumer_status()
            .into_iter()
            .map(|s| QueueDepth {
                topic: s.topic,
                group: s.group,
                depth: s.num_pending.saturating_add(s.num_ack_pending),
                capacity: s.max_ack_pending,
                in_flight: s.num_ack_pending,
            })
            .collect()
    }

    fn broker_connection(&self) -> Option<BrokerConnection> {
        let (down_for, outages, total) = Outages::read(&self.inner.counters.outages);
        // The client notices a cut before its event is handled: trust
        // whichever says down first.
        let down_for = match (down_for, self.connection_state()) {
            (None, ConnectionState::Reconnecting) => Some(Duration::ZERO),
            (d, _) => d,
        };
        let mut link =
            BrokerConnection::new(self.inner.config.url.clone(), down_for, outages, total);
        let st = self.stats();
        link.dropped = st.dropped_by_limits + st.backstop_lost;
        Some(link)
    }

    /// Messages live on in the streams: what a bus leaves unsettled is
    /// pending, owed to the next run.
    fn messaging_system(&self) -> &'static str {
        "nats"
    }

    fn durable(&self) -> bool {
        true
    }

    /// The MaxDeliver backstop dead-letters through the bus's store, so
    /// each letter it writes is counted in the bus's ledger.
    fn attach(&self, letters: BusLetters) {
        self.set_dead_letters(Arc::new(letters));
    }

    /// Waits, at most `ack_wait` (past it the server redelivers anyway),
    /// for the settles already sent to be confirmed, so a shutdown leaves
    /// no ack unsent; those still unconfirmed are logged and counted in
    /// [`NatsStats::settle_failures`].
    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            let unconfirmed = self.inner.settles.close(self.inner.config.ack_wait);
            if unconfirmed > 0 {
                tracing::warn!(
                    unconfirmed,
                    "closed with settles the server did not confirm; it redelivers those messages after ack_wait"
                );
                self.inner
                    .counters
                    .settle_failures
                    .fetch_add(unconfirmed as u64, Ordering::Relaxed);
            }
            // Push out the unconfirmed keep-alives still buffered in the client.
            let client = self.inner.client.clone();
            let flush = async move { client.flush().await };
            if self.inner.drives_runtime() {
                // On the thread that drives the runtime: flushed by a task.
                self.inner.handle.spawn(flush);
            } else {
                let _ = self.inner.call(Duration::from_secs(2), flush);
            }
        }
        // Messages live on in the streams.
        Vec::new()
    }
}
