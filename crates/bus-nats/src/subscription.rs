//! A group member pulling from its durable consumer, and the settler that
//! maps the bus's settles onto JetStream acknowledgements.

use crate::codec;
use crate::state::Counters;
use crate::transport::{Inner, other};
use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker};
use bus_core::{AttemptRecord, Delivery, Envelope, Settle, Subscription, Topic, TransportError};
use futures::{FutureExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bounded map with FIFO eviction.
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
        }
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() > self.cap * 2 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
    fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k)
    }
    fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }
}

const SIDE_CAP: usize = 100_000;

/// What the members of one group in this process share.
pub(crate) struct GroupShared {
    pub(crate) topic: Topic,
    pub(crate) group: String,
    pub(crate) stream: String,
    pub(crate) consumer_name: String,
    pub(crate) consumer: PullConsumer,
    /// Attempt and history of naked messages, by stream sequence: JetStream
    /// redelivers the stored message, not the bus's updated envelope.
    retries: Mutex<Bounded<u64, (u32, Vec<AttemptRecord>)>>,
    /// Ids acked here recently, to recognise a redelivery whose ack was lost.
    acked: Mutex<Bounded<Uuid, ()>>,
    last: Mutex<(usize, usize)>,
}

impl GroupShared {
    pub(crate) fn new(
        topic: Topic,
        group: String,
        stream: String,
        consumer_name: String,
        consumer: PullConsumer,
    ) -> Self {
        Self {
            topic,
            group,
            stream,
            consumer_name,
            consumer,
            retries: Mutex::new(Bounded::new(SIDE_CAP)),
            acked: Mutex::new(Bounded::new(SIDE_CAP)),
            last: Mutex::new((0, 0)),
        }
    }

    pub(crate) fn remember(&self, pending: usize, ack_pending: usize) {
        *lock(&self.last) = (pending, ack_pending);
    }

    pub(crate) fn last_known(&self) -> (usize, usize) {
        *lock(&self.last)
    }
}

struct InFlight {
    reply: Option<async_nats::Subject>,
    seq: u64,
    since: Instant,
}

/// Settles deliveries of one subscription.
pub(crate) struct Settler {
    inner: Arc<Inner>,
    group: Arc<GroupShared>,
    in_flight: Mutex<HashMap<u64, InFlight>>,
    next_token: AtomicU64,
}

impl Settler {
    fn send(&self, acker: Acker, kind: AckKind) {
        let counters = Arc::clone(&self.inner.counters);
        let done = self.inner.call(
            Duration::from_secs(2),
            async move { acker.ack_with(kind).await },
        );
        if !matches!(done, Some(Ok(()))) {
            tracing::warn!(
                ?kind,
                "could not send a settle; the server will redeliver after ack_wait"
            );
            Counters::inc(&counters.settle_failures);
        }
    }

    fn acker(&self, reply: Option<async_nats::Subject>) -> Acker {
        Acker::new(self.inner.js.clone(), reply)
    }

    fn take(&self, token: u64) -> Option<InFlight> {
        lock(&self.in_flight).remove(&token)
    }

    /// In-progress acks for deliveries held longer than `every`.
    fn progress(&self, every: Duration, limit: Duration) -> Vec<Acker> {
        let now = Instant::now();
        lock(&self.in_flight)
            .values()
            .filter(|f| {
                let held = now.saturating_duration_since(f.since);
                held >= every && held < limit
            })
            .map(|f| self.acker(f.reply.clone()))
            .collect()
    }
}

impl Settle for Settler {
    fn ack(&self, token: u64, envelope: &Envelope) {
        if let Some(f) = self.take(token) {
            lock(&self.group.acked).insert(envelope.id, ());
            self.send(self.acker(f.reply), AckKind::Ack);
        }
    }

    fn nak(&self, token: u64, envelope: Envelope, delay: Duration) {
        if let Some(f) = self.take(token) {
            lock(&self.group.retries).insert(f.seq, (envelope.attempt, envelope.history));
            let kind = if delay.is_zero() {
                AckKind::Nak(None)
            } else {
                AckKind::Nak(Some(delay))
            };
            self.send(self.acker(f.reply), kind);
        }
    }

    fn term(&self, token: u64, _envelope: &Envelope) {
        if let Some(f) = self.take(token) {
            self.send(self.acker(f.reply), AckKind::Term);
        }
    }

    fn in_progress(&self, token: u64) {
        let reply = lock(&self.in_flight).get(&token).map(|f| f.reply.clone());
        let acker = reply.map(|r| self.acker(r));
        if let Some(a) = acker {
            self.send(a, AckKind::Progress);
        }
    }
}

/// A member of a consumer group: a continuous pull from the group's durable
/// consumer, at most `prefetch` messages ahead of the handler.
pub(crate) struct NatsSubscription {
    inner: Arc<Inner>,
    group: Arc<GroupShared>,
    settler: Arc<Settler>,
    messages: Option<pull::Stream>,
}

impl NatsSubscription {
    pub(crate) fn new(inner: Arc<Inner>, group: Arc<GroupShared>) -> Self {
        let settler = Arc::new(Settler {
            inner: Arc::clone(&inner),
            group: Arc::clone(&group),
            in_flight: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
        });
        spawn_progress(&inner, Arc::downgrade(&settler));
        Self {
            inner,
            group,
            settler,
            messages: None,
        }
    }

    fn open(&mut self) -> Result<&mut pull::Stream, TransportError> {
        if self.messages.is_none() {
            let consumer = self.group.consumer.clone();
            let batch = self.inner.config.prefetch_batch();
            let stream = self
                .inner
                .call(self.inner.config.request_timeout, async move {
                    consumer
                        .stream()
                        .max_messages_per_batch(batch)
                        .expires(Duration::from_secs(5))
                        .heartbeat(Duration::from_secs(2))
                        .messages()
                        .await
                })
                .ok_or(TransportError::Timeout(self.inner.config.request_timeout))?
                .map_err(|e| TransportError::Disconnected(e.to_string()))?;
            self.messages = Some(stream);
        }
        self.messages
            .as_mut()
            .ok_or_else(|| other("pull stream missing"))
    }

    /// Turns a JetStream message into a delivery, or `None` when it is the
    /// redelivery of a message already acked here (acked again silently).
    fn deliver(&self, msg: async_nats::jetstream::Message) -> Option<Delivery> {
        let (delivered, seq) = match msg.info() {
            Ok(i) => (
                u32::try_from(i.delivered.max(1)).unwrap_or(u32::MAX),
                i.stream_sequence,
            ),
            Err(_) => (1, 0),
        };
        let acker = Acker::new(self.inner.js.clone(), msg.message.reply.clone());
        let msg = msg.message;
        let topic = self
            .inner
            .config
            .topic_of(msg.subject.as_str())
            .unwrap_or_else(|| self.group.topic.clone());
        let fallback = Uuid::from_u64_pair(hash(&self.group.stream), seq);
        let mut env = codec::from_message(topic, msg.payload, msg.headers.as_ref(), fallback);
        match lock(&self.group.retries).remove(&seq) {
            Some((attempt, history)) => {
                env.attempt = attempt;
                env.history = history;
            }
            // First delivery here: the attempt follows JetStream's count (a
            // redelivery after an ack timeout or a crash counts as a try).
            None => env.attempt = env.attempt.saturating_add(delivered - 1),
        }
        if delivered > 1 && lock(&self.group.acked).contains(&env.id) {
            Counters::inc(&self.inner.counters.duplicates_suppressed);
            tracing::debug!(message_id = %env.id, "redelivery of an acked message suppressed");
            let _ = self
                .inner
                .call(Duration::from_secs(2), async move { acker.ack().await });
            return None;
        }
        let token = self.settler.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&self.settler.in_flight).insert(
            token,
            InFlight {
                reply: msg.reply,
                seq,
                since: Instant::now(),
            },
        );
        let settler: Arc<dyn Settle> = self.settler.clone();
        Some(Delivery::new(env, token, settler))
    }
}

fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Subscription for NatsSubscription {
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        if self.inner.is_closed() {
            return Err(TransportError::Closed);
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(other("Subscription::next was called from an async context"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let handle = self.inner.handle.clone();
            let stream = self.open()?;
            let got = handle.block_on(async { tokio::time::timeout(left, stream.next()).await });
            match got {
                Err(_elapsed) => return Ok(None),
                Ok(None) => {
                    self.messages = None;
                    return Err(TransportError::Disconnected("pull stream ended".into()));
                }
                Ok(Some(Err(e))) => {
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
                    return Err(match e.kind() {
                        K::MissingHeartbeat => TransportError::Disconnected(e.to_string()),
                        K::ConsumerDeleted | K::NoResponders => {
                            self.messages = None;
                            TransportError::Disconnected(e.to_string())
                        }
                        _ => other(e),
                    });
                }
                Ok(Some(Ok(msg))) => {
                    if let Some(d) = self.deliver(msg) {
                        return Ok(Some(d));
                    }
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        // Hand back what was prefetched but never delivered, so other members
        // get it now rather than after ack_wait.
        let Some(mut stream) = self.messages.take() else {
            return;
        };
        let _enter = self.inner.handle.enter();
        let mut naks = Vec::new();
        while let Some(Some(Ok(m))) = stream.next().now_or_never() {
            naks.push(m);
        }
        drop(stream);
        if !naks.is_empty() {
            let _ = self.inner.call(Duration::from_secs(2), async move {
                for m in naks {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
            });
        }
    }
}

/// Keeps held deliveries alive with in-progress acks.
fn spawn_progress(inner: &Arc<Inner>, settler: Weak<Settler>) {
    let limit = inner.config.auto_progress_limit;
    if limit.is_zero() {
        return;
    }
    let every = (inner.config.ack_wait / 3).max(Duration::from_millis(100));
    let closed = Arc::clone(&inner.closed);
    inner.handle.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if closed.load(Ordering::Acquire) {
                return;
            }
            let Some(s) = settler.upgrade() else { return };
            let ackers = s.progress(every, limit);
            drop(s);
            for a in ackers {
                let _ = a.ack_with(AckKind::Progress).await;
            }
        }
    });
}
