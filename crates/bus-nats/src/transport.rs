//! [`NatsTransport`]: the bus's [`Transport`] over JetStream, synchronous on
//! the outside, with its own tokio runtime inside.

use crate::backstop;
use crate::codec;
use crate::config::{NatsConfig, Storage};
use crate::state::{ConnectionState, Counters, NatsStats};
use crate::subscription::{GroupShared, NatsSubscription};
use async_nats::jetstream::{self, consumer, stream};
use bus_core::{
    DeadLetterStore, Envelope, PublishError, QueueDepth, Receipt, SubscribeOptions, Subscription,
    Topic, Transport, TransportError,
};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, Runtime};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn other(e: impl std::fmt::Display) -> TransportError {
    TransportError::Other(e.to_string().into())
}

/// What the transport shares with its subscriptions and background tasks.
pub(crate) struct Inner {
    rt: Mutex<Option<Runtime>>,
    pub(crate) handle: Handle,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) config: NatsConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) closed: Arc<AtomicBool>,
    pub(crate) dlq: Arc<Mutex<Option<Arc<dyn DeadLetterStore>>>>,
    streams: Mutex<HashSet<String>>,
    backstops: Mutex<HashSet<String>>,
    pub(crate) groups: Mutex<HashMap<String, Arc<GroupShared>>>,
    routes: Mutex<HashMap<Topic, (u32, Instant)>>,
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
    /// Runs `fut` on the runtime and waits at most `timeout` for it, from
    /// any thread: blocks a plain thread on it, or, called from inside an
    /// async context, runs it as a task and waits on a channel.
    pub(crate) fn call<F>(&self, timeout: Duration, fut: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if Handle::try_current().is_err() {
            self.handle
                .block_on(async move { tokio::time::timeout(timeout, fut).await.ok() })
        } else {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            self.handle.spawn(async move {
                let _ = tx.send(fut.await);
            });
            rx.recv_timeout(timeout).ok()
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) async fn wait_connected(client: &async_nats::Client) {
        while client.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
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
            max_age: self.config.max_age,
            ..Default::default()
        }
    }

    /// Creates the topic's stream and its advisory stream, once per process.
    pub(crate) async fn ensure_stream(&self, topic: &Topic) -> Result<String, TransportError> {
        let name = self.config.stream_for(topic);
        if lock(&self.streams).contains(&name) {
            return Ok(name);
        }
        let first = topic.as_str().split('.').next().unwrap_or_default();
        let sp = &self.config.subject_prefix;
        let cfg = self.stream_config(
            name.clone(),
            vec![format!("{sp}.{first}"), format!("{sp}.{first}.>")],
        );
        self.js.get_or_create_stream(cfg).await.map_err(other)?;
        let adv = NatsConfig::advisory_stream_for(&name);
        let mut adv_cfg = self.stream_config(
            adv,
            vec![format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{name}.*"
            )],
        );
        adv_cfg.duplicate_window = Duration::from_secs(60);
        self.js.get_or_create_stream(adv_cfg).await.map_err(other)?;
        lock(&self.streams).insert(name.clone());
        Ok(name)
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

    async fn publish_async(&self, env: &Envelope) -> Result<u32, PublishFail> {
        Self::wait_connected(&self.client).await;
        let stream_name = self
            .ensure_stream(&env.topic)
            .await
            .map_err(PublishFail::Transport)?;
        let copies = self
            .groups_of(&env.topic, &stream_name)
            .await
            .map_err(PublishFail::Transport)?;
        if copies == 0 && self.config.require_consumer {
            return Err(PublishFail::NoSubscribers);
        }
        Self::wait_connected(&self.client).await;
        let msg = jetstream::message::PublishMessage::build()
            .payload(env.payload.clone())
            .headers(codec::to_headers(env));
        let ack = self
            .js
            .send_publish(self.config.subject_for(&env.topic), msg)
            .await
            .map_err(|e| PublishFail::Transport(TransportError::Disconnected(e.to_string())))?
            .await
            .map_err(|e| PublishFail::Transport(TransportError::Disconnected(e.to_string())))?;
        if ack.duplicate {
            Counters::inc(&self.counters.duplicate_publishes);
            return Ok(0);
        }
        Ok(copies)
    }
}

enum PublishFail {
    NoSubscribers,
    Transport(TransportError),
}

/// The bus over NATS JetStream.
///
/// * a stream per first topic segment (`<stream_prefix>_<segment>`, subjects
///   `<subject_prefix>.<segment>` and `<subject_prefix>.<segment>.>`);
/// * a durable pull consumer per (topic, group), explicit ack, filtered on
///   the topic's subject; members of a group share it, every group gets
///   every message published after the group was created;
/// * publish waits for the JetStream ack (`Nats-Msg-Id` = envelope id, so a
///   retried publish is stored once); metadata travels in headers;
/// * settles map onto JetStream acks: ack → `+ACK`, nak(delay) →
///   `-NAK {"delay":…}`, term → `+TERM`, in-progress → `+WPI`;
/// * the attempt number follows the delivery count, and the attempt history
///   the bus records is kept across redeliveries within this process;
/// * a MaxDeliver backstop: the server's advisories are captured in a stream
///   and turned into dead letters (see [`set_dead_letters`](Self::set_dead_letters)).
///
/// Every method is synchronous; the async client runs on a runtime the
/// transport owns. Call them from ordinary threads (the bus's workers are).
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
    /// Connects to the server of `config`, waiting at most its
    /// `connect_timeout`. Once connected, a lost connection is
    /// re-established in the background with exponential backoff, forever.
    pub fn connect(config: NatsConfig) -> Result<NatsTransport, TransportError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bus-nats")
            .enable_all()
            .build()
            .map_err(|e| TransportError::Other(Box::new(e)))?;
        let handle = rt.handle().clone();
        let counters = Arc::new(Counters::default());
        let c2 = Arc::clone(&counters);
        let (min, max) = (config.reconnect_min_delay, config.reconnect_max_delay);
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                let shift = u32::try_from(attempts.min(16)).unwrap_or(16);
                min.saturating_mul(1_u32 << shift).min(max)
            })
            .event_callback(move |event| {
                let c = Arc::clone(&c2);
                async move {
                    match event {
                        async_nats::Event::Connected => Counters::inc(&c.connects),
                        async_nats::Event::Disconnected => Counters::inc(&c.disconnects),
                        _ => {}
                    }
                }
            });
        if let Some(name) = &config.name {
            opts = opts.name(name);
        }
        let url = config.url.clone();
        let timeout = config.connect_timeout;
        let client = handle
            .block_on(async move { tokio::time::timeout(timeout, opts.connect(url)).await })
            .map_err(|_| TransportError::Timeout(timeout))?
            .map_err(|e| TransportError::Disconnected(e.to_string()))?;
        Counters::inc(&counters.connects);
        let mut js = {
            let _runtime = handle.enter();
            jetstream::new(client.clone())
        };
        js.set_timeout(config.request_timeout);
        Ok(NatsTransport {
            inner: Arc::new(Inner {
                rt: Mutex::new(Some(rt)),
                handle,
                client,
                js,
                config,
                counters,
                closed: Arc::new(AtomicBool::new(false)),
                dlq: Arc::new(Mutex::new(None)),
                streams: Mutex::new(HashSet::new()),
                backstops: Mutex::new(HashSet::new()),
                groups: Mutex::new(HashMap::new()),
                routes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// Where the MaxDeliver backstop puts messages JetStream stopped
    /// redelivering (reason `retries_exhausted`). Until one is set, the
    /// advisories wait in their stream; nothing is lost.
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
        let names: Vec<String> = lock(&self.inner.streams).drain().collect();
        let js = self.inner.js.clone();
        self.inner
            .call(self.inner.config.request_timeout * 2, async move {
                for n in names {
                    let _ = js.delete_stream(&n).await;
                    let _ = js.delete_stream(NatsConfig::advisory_stream_for(&n)).await;
                }
            })
            .ok_or(TransportError::Timeout(
                self.inner.config.request_timeout * 2,
            ))
    }

    /// The state of every consumer group this process subscribed to:
    /// pending (never delivered) and ack-pending (delivered, unsettled)
    /// counts. A group whose ack-pending count has reached
    /// `max_ack_pending` is stalled: the server delivers it nothing more.
    pub fn consumer_status(&self) -> Vec<ConsumerStatus> {
        let groups: Vec<Arc<GroupShared>> = lock(&self.inner.groups).values().cloned().collect();
        let max = self.inner.config.max_ack_pending;
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            let c = g.consumer.clone();
            let info = self
                .inner
                .call(self.inner.config.request_timeout, async move {
                    c.get_info().await
                })
                .and_then(Result::ok);
            let (pending, ack_pending, redelivered, known) = match info {
                Some(i) => {
                    let p = usize::try_from(i.num_pending).unwrap_or(usize::MAX);
                    g.remember(p, i.num_ack_pending);
                    (p, i.num_ack_pending, i.num_redelivered, true)
                }
                None => {
                    let (p, a) = g.last_known();
                    (p, a, 0, false)
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
                stalled: ack_pending >= max,
                fresh: known,
            });
        }
        out.sort_by(|a, b| (&a.topic, &a.group).cmp(&(&b.topic, &b.group)));
        out
    }

    fn start_backstop(&self, stream_name: &str) {
        if !lock(&self.inner.backstops).insert(stream_name.to_owned()) {
            return;
        }
        backstop::spawn(&self.inner, stream_name.to_owned());
    }
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
    /// The durable consumer's name.
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

impl Transport for NatsTransport {
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError> {
        if self.inner.is_closed() {
            return Err(PublishError::Closed { envelope });
        }
        let inner = Arc::clone(&self.inner);
        let env = envelope.clone();
        let outcome = self
            .inner
            .call(timeout, async move { inner.publish_async(&env).await });
        match outcome {
            Some(Ok(copies)) => Ok(Receipt::copies(copies)),
            Some(Err(PublishFail::NoSubscribers)) => Err(PublishError::NoSubscribers { envelope }),
            Some(Err(PublishFail::Transport(source))) => {
                Err(PublishError::Transport { envelope, source })
            }
            None => {
                let source = if self.connection_state() == ConnectionState::Connected {
                    TransportError::Timeout(timeout)
                } else {
                    TransportError::Disconnected(format!(
                        "not connected to {} within {timeout:?}",
                        self.inner.config.url
                    ))
                };
                Err(PublishError::Transport { envelope, source })
            }
        }
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
        let consumer_name = cfg.consumer_for(topic, &options.group);
        let pull_cfg = consumer::pull::Config {
            durable_name: Some(consumer_name.clone()),
            description: Some(options.group.clone()),
            filter_subject: cfg.subject_for(topic),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: cfg.ack_wait,
            max_deliver: cfg.max_deliver,
            max_ack_pending: i64::try_from(cfg.max_ack_pending).unwrap_or(i64::MAX),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        };
        let inner = Arc::clone(&self.inner);
        let t = topic.clone();
        let name = consumer_name.clone();
        let created = self
            .inner
            .call(cfg.request_timeout * 2, async move {
                let stream_name = inner.ensure_stream(&t).await?;
                let stream = inner.js.get_stream(&stream_name).await.map_err(other)?;
                let consumer: consumer::PullConsumer = stream
                    .get_or_create_consumer(&name, pull_cfg)
                    .await
                    .map_err(other)?;
                Ok::<_, TransportError>((stream_name, consumer))
            })
            .ok_or(TransportError::Timeout(cfg.request_timeout * 2))??;
        let (stream_name, consumer) = created;
        let group = {
            let mut groups = lock(&self.inner.groups);
            Arc::clone(groups.entry(consumer_name.clone()).or_insert_with(|| {
                Arc::new(GroupShared::new(
                    topic.clone(),
                    options.group.clone(),
                    stream_name.clone(),
                    consumer_name,
                    consumer,
                ))
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
            })
            .collect()
    }

    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            // Push out settles still buffered in the client.
            let client = self.inner.client.clone();
            let _ = self
                .inner
                .call(Duration::from_secs(2), async move { client.flush().await });
        }
        // Messages live on in the streams.
        Vec::new()
    }
}
