//! The connection's state, as health reports show it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Whether the transport is connected to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected: publishes and fetches go through.
    Connected,
    /// Lost; the client reconnects in the background with backoff.
    /// Publishes wait up to their timeout, then fail.
    Reconnecting,
    /// Closed by [`close`](bus_core::Transport::close).
    Closed,
}

/// Counters of the connection and of what the transport did on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct NatsStats {
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Times it was (re)established, the first connect included.
    pub connects: u64,
    /// Publishes JetStream reported as duplicates (same envelope id inside
    /// the duplicate window): stored once, delivered once.
    pub duplicate_publishes: u64,
    /// Redeliveries of a message this process had already settled (the
    /// settle was lost, for example in a server restart) or still held in a
    /// handler: settled again, or left to the holder, without running the
    /// handler or counting the message a second time.
    pub duplicates_suppressed: u64,
    /// Messages dead-lettered by the MaxDeliver backstop. A bus on this
    /// transport counts them in its own ledger too (`dead_lettered`), as
    /// the backstop writes through the bus's store.
    pub backstop_dead_letters: u64,
    /// Messages the MaxDeliver backstop found gone from their stream (a
    /// limit or a purge deleted them first): lost, each one logged.
    pub backstop_lost: u64,
    /// Settle messages (ack, nak, term) the server did not confirm within
    /// `ack_wait`, or before [`close`](bus_core::Transport::close) stopped
    /// waiting for them; it redelivers those messages, and a redelivery of
    /// a settled one is settled again without reaching a handler.
    pub settle_failures: u64,
    /// Settles (ack, nak, term) sent and not yet confirmed by the server
    /// right now. A settle does not wait for its confirmation; a group's
    /// members wait only when the group has `max_ack_pending` of them.
    pub settles_unconfirmed: u64,
    /// Publishes whose PubAck was lost and that were sent again with the
    /// same `Nats-Msg-Id` (stored once).
    pub publish_resends: u64,
    /// Publishes still unconfirmed at the resend deadline, reported to the
    /// publisher as failed although the server may hold them.
    pub publishes_in_doubt: u64,
    /// Messages a stream's limits deleted before a group of this process
    /// settled them, seen when consumer status is read (health reports do).
    /// Only streams allowed to drop (`allow_message_loss`) can; each one is
    /// logged. Exact for a stream carrying one topic whose groups run in
    /// this process alone; may count too many otherwise, never too few.
    pub dropped_by_limits: u64,
    /// Deliveries of messages stored before this process first used their
    /// stream: work an earlier process on the same streams left unsettled,
    /// counted once per group and message. A bus on this transport counts
    /// how they end in its ledger but never published them, so its
    /// `published` plus this is what its ledger must account for.
    pub resumed: u64,
    /// Time the connection spent down, the current outage included.
    #[serde(with = "humantime_serde")]
    pub time_disconnected: Duration,
}

/// When the connection went down, and how long it was down before.
#[derive(Debug, Default)]
pub(crate) struct Outages {
    down_since: Option<Instant>,
    count: u64,
    before: Duration,
}

impl Outages {
    pub(crate) fn lost(m: &Mutex<Outages>) {
        let mut o = m.lock().unwrap_or_else(PoisonError::into_inner);
        if o.down_since.is_none() {
            o.down_since = Some(Instant::now());
            o.count += 1;
        }
    }

    pub(crate) fn restored(m: &Mutex<Outages>) {
        let mut o = m.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(since) = o.down_since.take() {
            o.before += since.elapsed();
        }
    }

    /// (down for, outages, total time down).
    pub(crate) fn read(m: &Mutex<Outages>) -> (Option<Duration>, u64, Duration) {
        let o = m.lock().unwrap_or_else(PoisonError::into_inner);
        let now = o.down_since.map(|t| t.elapsed());
        (now, o.count, o.before + now.unwrap_or_default())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) disconnects: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) duplicate_publishes: AtomicU64,
    pub(crate) duplicates_suppressed: AtomicU64,
    pub(crate) backstop_dead_letters: AtomicU64,
    pub(crate) backstop_lost: AtomicU64,
    pub(crate) settle_failures: AtomicU64,
    pub(crate) settles_unconfirmed: AtomicU64,
    pub(crate) publish_resends: AtomicU64,
    pub(crate) publishes_in_doubt: AtomicU64,
    pub(crate) outages: Mutex<Outages>,
    pub(crate) dropped_by_limits: AtomicU64,
    pub(crate) resumed: AtomicU64,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> NatsStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NatsStats {
            disconnects: l(&self.disconnects),
            connects: l(&self.connects),
            duplicate_publishes: l(&self.duplicate_publishes),
            duplicates_suppressed: l(&self.duplicates_suppressed),
            backstop_dead_letters: l(&self.backstop_dead_letters),
            backstop_lost: l(&self.backstop_lost),
            settle_failures: l(&self.settle_failures),
            settles_unconfirmed: l(&self.settles_unconfirmed),
            publish_resends: l(&self.publish_resends),
            publishes_in_doubt: l(&self.publishes_in_doubt),
            dropped_by_limits: l(&self.dropped_by_limits),
            resumed: l(&self.resumed),
            time_disconnected: Outages::read(&self.outages).2,
        }
    }
}
