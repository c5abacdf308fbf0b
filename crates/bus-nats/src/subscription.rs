//! A group member pulling from its durable consumer in batches, and what
//! the members of a group share; their settles are in [`crate::settle`].

use crate::codec;
use crate::settle::{InFlight, Settler, Window};
use crate::state::Counters;
use crate::transport::{Inner, other};
use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker};
use bus_core::{AttemptRecord, Delivery, Settle, Subscription, Topic, TransportError};
use futures::{FutureExt, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
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
}

const SIDE_CAP: usize = 100_000;

/// Stream sequences as ranges (first -> last, inclusive). Settles come
/// nearly in order, so a long run takes a handful of ranges, never one entry
/// per message: every final settle of a run can be remembered.
#[derive(Debug, Default)]
pub(crate) struct SeqSet(BTreeMap<u64, u64>);

impl SeqSet {
    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.0
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &last)| seq <= last)
    }

    pub(crate) fn insert(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        let before = self
            .0
            .range(..seq)
            .next_back()
            .filter(|(_, last)| last.checked_add(1) == Some(seq))
            .map(|(&first, _)| first);
        let after = seq
            .checked_add(1)
            .and_then(|next| self.0.remove_entry(&next));
        let first = before.unwrap_or(seq);
        let last = after.map_or(seq, |(_, last)| last);
        self.0.insert(first, last);
    }

    /// Inserts `seq`; false if it was there already.
    pub(crate) fn insert_new(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        self.insert(seq);
        true
    }

    /// Removes `seq`; false if it was not there.
    pub(crate) fn remove(&mut self, seq: u64) -> bool {
        let Some((&first, &last)) = self.0.range(..=seq).next_back() else {
            return false;
        };
        if seq > last {
            return false;
        }
        self.0.remove(&first);
        if first < seq {
            self.0.insert(first, seq - 1);
        }
        if seq < last {
            self.0.insert(seq + 1, last);
        }
        true
    }

    #[cfg(test)]
    fn ranges(&self) -> usize {
        self.0.len()
    }
}

/// How a message was finally settled here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Final {
    Acked,
    Termed,
}

/// What the members of one group in this process share.
pub(crate) struct GroupShared {
    pub(crate) topic: Topic,
    pub(crate) group: String,
    pub(crate) stream: String,
    pub(crate) consumer_name: String,
    pub(crate) consumer: PullConsumer,
    /// The consumer of the group's replay subject: messages published to
    /// this group alone. They are stored in the same stream, so the
    /// bookkeeping by stream sequence below covers both consumers.
    pub(crate) replay: PullConsumer,
    /// Attempt and history of naked messages, by stream sequence: JetStream
    /// redelivers the stored message, not the bus's updated envelope.
    retries: Mutex<Bounded<u64, (u32, Vec<AttemptRecord>)>>,
    /// Stream sequences settled for good here (acked, or termed after their
    /// dead letter was stored). JetStream redelivers a message whose settle it
    /// lost, and after a server crash it may even redeliver it as a first
    /// delivery (the consumer's state on disk lags): either way it is the
    /// same stored message (one per envelope id, thanks to publish
    /// de-duplication), so it is settled again the same way and never
    /// reaches a handler, or the ledger, twice.
    settled: Mutex<(SeqSet, SeqSet)>,
    /// Stream sequences a member of this group holds right now (delivered,
    /// not yet settled). A redelivery of one of them (ack_wait passed, or
    /// the server lost the delivery state) is left to the holder's settle.
    held: Mutex<HashSet<u64>>,
    /// Stream sequences up to here were checked for drops by the stream's
    /// limits (starts where the group started).
    drop_mark: Mutex<u64>,
    /// Sequences counted as dropped; one that is delivered after all (it
    /// was prefetched before the stream deleted it) is taken back.
    dropped: Mutex<SeqSet>,
    last: Mutex<(usize, usize)>,
    /// Sequences below this were stored before this process used the
    /// stream: an earlier process's work, resumed here.
    fresh_from: u64,
    /// Earlier processes' messages delivered here, each counted once.
    resumed: Mutex<SeqSet>,
    /// Bounds the members' settles awaiting the server's confirmation.
    pub(crate) window: Arc<Window>,
}

impl GroupShared {
    pub(crate) fn new(
        topic: Topic,
        group: String,
        stream: String,
        consumer_name: String,
        consumer: PullConsumer,
        replay: PullConsumer,
        window: usize,
    ) -> Self {
        let start = consumer.cached_info().delivered.stream_sequence;
        Self {
            drop_mark: Mutex::new(start),
            dropped: Mutex::new(SeqSet::default()),
            topic,
            group,
            stream,
            consumer_name,
            consumer,
            replay,
            retries: Mutex::new(Bounded::new(SIDE_CAP)),
            settled: Mutex::new((SeqSet::default(), SeqSet::default())),
            held: Mutex::new(HashSet::new()),
            last: Mutex::new((0, 0)),
            fresh_from: 0,
            resumed: Mutex::new(SeqSet::default()),
            window: Window::new(window),
        }
    }

    /// Counts deliveries below `seq` as resumed: the stream's next
    /// sequence when this process first used it.
    pub(crate) fn resuming_below(mut self, seq: u64) -> Self {
        self.fresh_from = seq;
        self
    }

    pub(crate) fn remember(&self, pending: usize, ack_pending: usize) {
        *lock(&self.last) = (pending, ack_pending);
    }

    pub(crate) fn last_known(&self) -> (usize, usize) {
        *lock(&self.last)
    }

    fn settled_as(&self, seq: u64) -> Option<Final> {
        let s = lock(&self.settled);
        if s.0.contains(seq) {
            Some(Final::Acked)
        } else if s.1.contains(seq) {
            Some(Final::Termed)
        } else {
            None
        }
    }

    /// Records the final settle of `seq` (before its hold is released, so a
    /// racing redelivery always finds one of the two).
    pub(crate) fn settle_for_good(&self, seq: u64, how: Final) {
        let mut s = lock(&self.settled);
        match how {
            Final::Acked => s.0.insert(seq),
            Final::Termed => s.1.insert(seq),
        }
    }

    /// Counts the messages the stream deleted before this group settled
    /// them: those below the stream's first sequence that this process
    /// neither settled nor holds. (The server moves the group's ack floor
    /// past deleted messages, so the floor cannot tell.) Each sequence is
    /// examined once. Exact for a stream carrying one topic, with no
    /// replays to other groups, whose group runs in this process alone;
    /// otherwise it may count too many, never too few.
    pub(crate) fn count_dropped(&self, first_seq: u64) -> u64 {
        let mut mark = lock(&self.drop_mark);
        let from = mark.saturating_add(1);
        if first_seq <= from {
            return 0;
        }
        let settled = lock(&self.settled);
        let held = lock(&self.held);
        let mut dropped = lock(&self.dropped);
        let mut lost = 0;
        for seq in from..first_seq {
            if !settled.0.contains(seq) && !settled.1.contains(seq) && !held.contains(&seq) {
                dropped.insert(seq);
                lost += 1;
            }
        }
        *mark = first_seq - 1;
        lost
    }

    /// A message handed back for redelivery (a nak) that the stream had
    /// already deleted when drops were last counted will never come back:
    /// it was skipped then because a handler held it, so it counts now.
    pub(crate) fn dropped_while_held(&self, seq: u64) -> bool {
        let mark = lock(&self.drop_mark);
        seq <= *mark && lock(&self.dropped).insert_new(seq)
    }

    /// Takes the hold of `seq`; false when a member holds it already.
    fn hold(&self, seq: u64) -> bool {
        lock(&self.held).insert(seq)
    }

    pub(crate) fn release(&self, seq: u64) {
        lock(&self.held).remove(&seq);
    }

    /// Keeps the attempt and history of a message handed back for a retry,
    /// for its redelivery.
    pub(crate) fn remember_attempts(&self, seq: u64, attempt: u32, history: Vec<AttemptRecord>) {
        lock(&self.retries).insert(seq, (attempt, history));
    }
}

/// A member of a consumer group: continuous pulls from the group's two
/// durable consumers (the topic's messages and the replays to this group),
/// each at most `prefetch` messages ahead of the handler.
pub(crate) struct NatsSubscription {
    inner: Arc<Inner>,
    group: Arc<GroupShared>,
    settler: Arc<Settler>,
    messages: Option<pull::Stream>,
    replays: Option<pull::Stream>,
    /// The pulls being opened for [`poll_next`](Subscription::poll_next).
    opening: Option<Opening>,
    /// Which pull `poll_next` looks at first; alternated, so neither
    /// starves the other.
    replay_first: bool,
}

/// Opens the pulls a member lacks (topic, replay).
type Opening = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(Option<pull::Stream>, Option<pull::Stream>), TransportError>,
            > + Send,
    >,
>;

/// Opens a continuous pull on `consumer`, `batch` messages per request.
async fn open_pull(consumer: PullConsumer, batch: usize) -> Result<pull::Stream, TransportError> {
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| TransportError::Disconnected(e.to_string()))
}

/// Which of a member's two pulls a message came from.
#[derive(Clone, Copy)]
enum Pull {
    Topic,
    Replay,
}

impl NatsSubscription {
    pub(crate) fn new(inner: Arc<Inner>, group: Arc<GroupShared>) -> Self {
        let settler = Arc::new(Settler::new(Arc::clone(&inner), Arc::clone(&group)));
        spawn_progress(&inner, Arc::downgrade(&settler));
        Self {
            inner,
            group,
            settler,
            messages: None,
            replays: None,
            opening: None,
            replay_first: false,
        }
    }

    /// Opens the pulls that are not open.
    fn open(&mut self) -> Result<(), TransportError> {
        if self.messages.is_none() {
            self.messages = Some(self.pull(self.group.consumer.clone())?);
        }
        if self.replays.is_none() {
            self.replays = Some(self.pull(self.group.replay.clone())?);
        }
        Ok(())
    }

    fn pull(&self, consumer: PullConsumer) -> Result<pull::Stream, TransportError> {
        let batch = self.inner.config.prefetch_batch();
        self.inner.wait(
            self.inner.config.request_timeout,
            open_pull(consumer, batch),
        )?
    }

    /// Polls the opening of the pulls that are not open.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.messages.is_some() && self.replays.is_some() {
            return Poll::Ready(Ok(()));
        }
        let opening = self.opening.get_or_insert_with(|| {
            let topic = self.messages.is_none().then(|| self.group.consumer.clone());
            let replay = self.replays.is_none().then(|| self.group.replay.clone());
            let batch = self.inner.config.prefetch_batch();
            let wait = self.inner.config.request_timeout;
            Box::pin(async move {
                tokio::time::timeout(wait, async move {
                    let topic = match topic {
                        Some(c) => Some(open_pull(c, batch).await?),
                        None => None,
                    };
                    let replay = match replay {
                        Some(c) => Some(open_pull(c, batch).await?),
                        None => None,
                    };
                    Ok((topic, replay))
                })
                .await
                .unwrap_or(Err(TransportError::Timeout(wait)))
            })
        });
        let opened = std::task::ready!(opening.as_mut().poll(cx));
        self.opening = None;
        let (topic, replay) = opened?;
        if topic.is_some() {
            self.messages = topic;
        }
        if replay.is_some() {
            self.replays = replay;
        }
        Poll::Ready(Ok(()))
    }

    /// The error a pull ended with; a pull that cannot go on is dropped,
    /// so the next wait opens it again.
    fn pull_failed(
        &mut self,
        from: Pull,
        got: Option<Result<async_nats::jetstream::Message, pull::MessagesError>>,
    ) -> TransportError {
        use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
        match got {
            None => {
                self.reset(from);
                TransportError::Disconnected("pull stream ended".into())
            }
            Some(Err(e)) => match e.kind() {
                K::MissingHeartbeat => TransportError::Disconnected(e.to_string()),
                K::ConsumerDeleted | K::NoResponders => {
                    self.reset(from);
                    TransportError::Disconnected(e.to_string())
                }
                _ => other(e),
            },
            Some(Ok(_)) => other("a pull's message taken for an error"),
        }
    }

    /// Turns a JetStream message into a delivery, or `None` when it is a
    /// message this group already settled here (settled again the same way,
    /// silently) or one a member holds right now (its settle will do).
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
        let fallback = Uuid::from_u64_pair(crate::config::fnv1a(self.group.stream.as_bytes()), seq);
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
        if seq != 0 {
            if let Some(how) = self.group.settled_as(seq) {
                Counters::inc(&self.inner.counters.duplicates_suppressed);
                tracing::debug!(message_id = %env.id, seq, "redelivery of a settled message suppressed");
                let kind = match how {
                    Final::Acked => AckKind::Ack,
                    Final::Termed => AckKind::Term,
                };
                // Not waited for: if it is lost too, the next redelivery
                // lands here again.
                self.inner.handle.spawn(async move {
                    let _ = acker.ack_with(kind).await;
                });
                return None;
            }
            if !self.group.hold(seq) {
                Counters::inc(&self.inner.counters.duplicates_suppressed);
                tracing::debug!(message_id = %env.id, seq, "redelivery of a message still in a handler ignored");
                return None;
            }
            if lock(&self.group.dropped).remove(seq) {
                self.inner
                    .counters
                    .dropped_by_limits
                    .fetch_sub(1, Ordering::Relaxed);
            }
            if seq < self.group.fresh_from && lock(&self.group.resumed).insert_new(seq) {
                Counters::inc(&self.inner.counters.resumed);
            }
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

impl NatsSubscription {
    /// Drops one pull so the next call opens it again.
    fn reset(&mut self, which: Pull) {
        match which {
            Pull::Topic => self.messages = None,
            Pull::Replay => self.replays = None,
        }
    }
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
            self.open()?;
            let (Some(topic), Some(replays)) = (self.messages.as_mut(), self.replays.as_mut())
            else {
                return Err(other("pull stream missing"));
            };
            // Whichever pull has a message first; a random pick when both
            // do, so neither starves the other.
            let got = handle.block_on(async {
                tokio::time::timeout(left, async {
                    tokio::select! {
                        m = topic.next() => (Pull::Topic, m),
                        m = replays.next() => (Pull::Replay, m),
                    }
                })
                .await
            });
            let (from, got) = match got {
                Err(_elapsed) => return Ok(None),
                Ok(got) => got,
            };
            match got {
                Some(Ok(msg)) => {
                    if let Some(d) = self.deliver(msg) {
                        return Ok(Some(d));
                    }
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                got => return Err(self.pull_failed(from, got)),
            }
        }
    }

    /// Polled by an async runner on any runtime: the pulls' own tasks and
    /// timers stay on the transport's runtime (the same one when the
    /// transport runs on the application's).
    fn can_poll(&self) -> bool {
        true
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, TransportError>> {
        if self.inner.is_closed() {
            return Poll::Ready(Err(TransportError::Closed));
        }
        let _runtime = self.inner.handle.enter();
        self.inner.note_driver();
        loop {
            std::task::ready!(self.poll_open(cx))?;
            self.replay_first = !self.replay_first;
            let order = if self.replay_first {
                [Pull::Replay, Pull::Topic]
            } else {
                [Pull::Topic, Pull::Replay]
            };
            let mut got = None;
            for from in order {
                let pull = match from {
                    Pull::Topic => self.messages.as_mut(),
                    Pull::Replay => self.replays.as_mut(),
                };
                let Some(pull) = pull else {
                    return Poll::Ready(Err(other("pull stream missing")));
                };
                if let Poll::Ready(m) = pull.poll_next_unpin(cx) {
                    got = Some((from, m));
                    break;
                }
            }
            match got {
                None => return Poll::Pending,
                Some((_, Some(Ok(msg)))) => {
                    if let Some(d) = self.deliver(msg) {
                        return Poll::Ready(Ok(d));
                    }
                }
                Some((from, m)) => return Poll::Ready(Err(self.pull_failed(from, m))),
            }
        }
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        // Hand back what was prefetched but never delivered, so other members
        // get it now rather than after ack_wait.
        let pulls: Vec<pull::Stream> = [self.messages.take(), self.replays.take()]
            .into_iter()
            .flatten()
            .collect();
        if pulls.is_empty() {
            return;
        }
        let _enter = self.inner.handle.enter();
        let mut naks = Vec::new();
        for mut stream in pulls {
            while let Some(Some(Ok(m))) = stream.next().now_or_never() {
                naks.push(m);
            }
        }
        if naks.is_empty() {
            return;
        }
        let send = async move {
            for m in naks {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
        };
        // Dropped on the transport's runtime (an async runner ending), it
        // must not wait for that runtime: the naks go out in a task.
        if self.inner.on_runtime() {
            self.inner.handle.spawn(send);
        } else {
            let _ = self.inner.call(Duration::from_secs(2), send);
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

#[cfg(test)]
mod tests {
    use super::SeqSet;

    #[test]
    fn seq_set_merges_neighbours_and_answers_membership() {
        let mut s = SeqSet::default();
        for seq in [5, 3, 4, 10, 1, 2, 12, 11] {
            s.insert(seq);
        }
        assert_eq!(s.ranges(), 2, "1..=5 and 10..=12");
        for seq in [1, 2, 3, 4, 5, 10, 11, 12] {
            assert!(s.contains(seq), "{seq}");
        }
        for seq in [0, 6, 9, 13, u64::MAX] {
            assert!(!s.contains(seq), "{seq}");
        }
        s.insert(u64::MAX);
        s.insert(4);
        assert!(s.contains(u64::MAX));
        assert_eq!(s.ranges(), 3);
        for seq in 6..10 {
            s.insert(seq);
        }
        assert_eq!(s.ranges(), 2, "1..=12 and MAX");
        assert!(s.remove(7));
        assert!(!s.remove(7));
        assert!(!s.contains(7) && s.contains(6) && s.contains(8));
        assert!(s.remove(1) && s.remove(12) && s.remove(u64::MAX));
        assert_eq!(s.ranges(), 2, "2..=6 and 8..=11");
        assert!(!s.remove(0));
    }
}
