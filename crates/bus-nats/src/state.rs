//! The connection's state, as health reports show it.

use std::sync::atomic::{AtomicU64, Ordering};

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
#[non_exhaustive]
pub struct NatsStats {
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Times it was (re)established, the first connect included.
    pub connects: u64,
    /// Publishes JetStream reported as duplicates (same envelope id inside
    /// the duplicate window): stored once, delivered once.
    pub duplicate_publishes: u64,
    /// Redeliveries of a message this process had already acked (the ack was
    /// lost, for example in a server restart), acked again without running
    /// the handler.
    pub duplicates_suppressed: u64,
    /// Messages dead-lettered by the MaxDeliver backstop.
    pub backstop_dead_letters: u64,
    /// Settle messages (ack, nak, term) that could not be sent; the server
    /// redelivers those messages after `ack_wait`.
    pub settle_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) disconnects: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) duplicate_publishes: AtomicU64,
    pub(crate) duplicates_suppressed: AtomicU64,
    pub(crate) backstop_dead_letters: AtomicU64,
    pub(crate) settle_failures: AtomicU64,
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
            settle_failures: l(&self.settle_failures),
        }
    }
}
