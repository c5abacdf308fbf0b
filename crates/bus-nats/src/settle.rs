//! The settler that maps the bus's settles onto JetStream acknowledgements,
//! each confirmed by the server (a double ack) and none waited for alone:
//! a settle hands its confirmation to a task on the transport's runtime and
//! returns, so a worker never spends a round trip per message.
//!
//! What keeps a lost settle harmless is decided before the send, on the
//! worker's thread: the final settle is recorded and the hold released (see
//! [`GroupShared`]), so a redelivery racing the confirmation is recognised
//! and settled again without reaching a handler.

use crate::state::Counters;
use crate::subscription::{Final, GroupShared};
use crate::transport::Inner;
use async_nats::jetstream::message::{AckKind, Acker};
use bus_core::{Envelope, Settle};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bound on the settles of one group awaiting their confirmation: a
/// settle past it waits on its worker's thread until one is confirmed
/// (moving off a multi-thread runtime's worker first; the thread driving a
/// current-thread runtime passes, see [`Window::force`]).
pub(crate) struct Window {
    cap: usize,
    state: Mutex<WindowState>,
    freed: Condvar,
}

#[derive(Default)]
struct WindowState {
    open: usize,
    waiting: usize,
}

impl Window {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            state: Mutex::new(WindowState::default()),
            freed: Condvar::new(),
        })
    }

    /// Takes a place, waiting while the window is full.
    fn acquire(self: &Arc<Self>) -> Place {
        let mut s = lock(&self.state);
        if s.open >= self.cap {
            s.waiting += 1;
            while s.open >= self.cap {
                s = self.freed.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            s.waiting -= 1;
        }
        s.open += 1;
        Place(Arc::clone(self))
    }

    /// Takes a place even when the window is full: for the thread that
    /// drives a current-thread runtime, where waiting would wait for the
    /// confirmations this very thread has to run. What it lets past the
    /// bound is bounded by the server, which delivers no group more than
    /// `max_ack_pending` per consumer unsettled.
    fn force(self: &Arc<Self>) -> Place {
        lock(&self.state).open += 1;
        Place(Arc::clone(self))
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let s = lock(&self.state);
        (s.open, s.waiting)
    }
}

/// A place in a [`Window`], given back when dropped.
struct Place(Arc<Window>);

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.0.state).open -= 1;
        self.0.freed.notify_one();
    }
}

/// The transport's settles awaiting confirmation, for [`close`] to wait on.
///
/// [`close`]: Outstanding::close
#[derive(Default)]
pub(crate) struct Outstanding {
    state: Mutex<Ledger>,
    idle: Condvar,
}

#[derive(Default)]
struct Ledger {
    /// Started before `close`, not finished.
    open: usize,
    closed: bool,
    /// Of `open`, those `close` already counted as unconfirmed: when they
    /// finish they are not counted again, whatever their outcome.
    written_off: bool,
}

/// One settle awaiting its confirmation.
struct Ticket {
    outstanding: Arc<Outstanding>,
    counters: Arc<Counters>,
    before_close: bool,
    finished: bool,
    _place: Place,
}

impl Outstanding {
    fn start(self: &Arc<Self>, counters: &Arc<Counters>, place: Place) -> Ticket {
        let mut l = lock(&self.state);
        let before_close = !l.closed;
        if before_close {
            l.open += 1;
        }
        counters.settles_unconfirmed.fetch_add(1, Ordering::Relaxed);
        Ticket {
            outstanding: Arc::clone(self),
            counters: Arc::clone(counters),
            before_close,
            finished: false,
            _place: place,
        }
    }

    /// Stops counting new settles as owed to the close, waits at most
    /// `within` for the owed ones to finish, and returns how many did not:
    /// those are counted unconfirmed now, and not again when they finish.
    pub(crate) fn close(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut l = lock(&self.state);
        l.closed = true;
        while l.open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            l = self
                .idle
                .wait_timeout(l, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        l.written_off = l.open > 0;
        l.open
    }
}

impl Ticket {
    /// Records the outcome; true when an unconfirmed one is to be counted
    /// here (it was not written off by `close`).
    fn finish(&mut self, confirmed: bool) -> bool {
        self.finished = true;
        self.counters
            .settles_unconfirmed
            .fetch_sub(1, Ordering::Relaxed);
        if !self.before_close {
            return !confirmed;
        }
        let mut l = lock(&self.outstanding.state);
        l.open -= 1;
        if l.open == 0 {
            self.outstanding.idle.notify_all();
        }
        !confirmed && !l.written_off
    }
}

impl Drop for Ticket {
    /// A task dropped unfinished (its runtime shut down with the transport).
    fn drop(&mut self) {
        if !self.finished {
            self.finish(false);
        }
    }
}

pub(crate) struct InFlight {
    pub(crate) reply: Option<async_nats::Subject>,
    pub(crate) seq: u64,
    pub(crate) since: Instant,
}

/// Settles deliveries of one subscription.
pub(crate) struct Settler {
    pub(crate) inner: Arc<Inner>,
    pub(crate) group: Arc<GroupShared>,
    pub(crate) in_flight: Mutex<HashMap<u64, InFlight>>,
    pub(crate) next_token: AtomicU64,
}

impl Settler {
    pub(crate) fn new(inner: Arc<Inner>, group: Arc<GroupShared>) -> Self {
        Self {
            inner,
            group,
            in_flight: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
        }
    }

    /// Sends a settle and returns; a task waits for the server to confirm
    /// it (double ack), resending through reconnects until `ack_wait` has
    /// passed: past that the server redelivers the message anyway, and the
    /// redelivery is recognised by its stream sequence and settled again.
    /// Waits only while the group's window of unconfirmed settles is full.
    fn send(&self, reply: Option<async_nats::Subject>, kind: AckKind) {
        let window = &self.group.window;
        let place = if self.inner.drives_runtime() {
            window.force()
        } else {
            crate::runtime::off_worker(|| window.acquire())
        };
        let mut ticket = self.inner.settles.start(&self.inner.counters, place);
        let inner = Arc::clone(&self.inner);
        self.inner.handle.spawn(async move {
            let confirmed = match reply {
                Some(reply) => confirm(&inner, reply, kind).await,
                None => false,
            };
            if ticket.finish(confirmed) {
                tracing::warn!(
                    ?kind,
                    "the server did not confirm a settle; it will redeliver after ack_wait and the redelivery is settled again"
                );
                Counters::inc(&inner.counters.settle_failures);
            }
        });
    }

    pub(crate) fn acker(&self, reply: Option<async_nats::Subject>) -> Acker {
        Acker::new(self.inner.js.clone(), reply)
    }

    fn take(&self, token: u64) -> Option<InFlight> {
        lock(&self.in_flight).remove(&token)
    }

    /// In-progress acks for deliveries held longer than `every`.
    pub(crate) fn progress(&self, every: Duration, limit: Duration) -> Vec<Acker> {
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

/// Sends `kind` to the delivery's `reply` subject until the server
/// confirms it, at most `ack_wait` in all. A request on the client's shared
/// reply subscription: the server answers an ack sent with a reply subject
/// once it has processed it (what async-nats calls a double ack, which
/// subscribes and unsubscribes an inbox of its own for each one).
async fn confirm(inner: &Inner, reply: async_nats::Subject, kind: AckKind) -> bool {
    let deadline = tokio::time::Instant::now() + inner.config.ack_wait;
    loop {
        if tokio::time::timeout_at(deadline, inner.connected())
            .await
            .is_err()
        {
            return false;
        }
        let sent = inner.client.request(reply.clone(), kind.into());
        match tokio::time::timeout_at(deadline, sent).await {
            Ok(Ok(_answer)) => return true,
            // Nobody listens on the subject: the consumer is gone, and
            // nothing will ever confirm this settle.
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return false;
            }
            Ok(Err(_)) => {
                let pause = tokio::time::Instant::now() + Duration::from_millis(50);
                tokio::time::sleep_until(pause.min(deadline)).await;
            }
            Err(_elapsed) => return false,
        }
    }
}

impl Settle for Settler {
    fn ack(&self, token: u64, _envelope: &Envelope) {
        if let Some(f) = self.take(token) {
            self.group.settle_for_good(f.seq, Final::Acked);
            self.group.release(f.seq);
            self.send(f.reply, AckKind::Ack);
        }
    }

    fn nak(&self, token: u64, envelope: Envelope, delay: Duration) {
        if let Some(f) = self.take(token) {
            self.group
                .remember_attempts(f.seq, envelope.attempt, envelope.history);
            self.group.release(f.seq);
            if self.inner.config.allow_message_loss && self.group.dropped_while_held(f.seq) {
                tracing::error!(stream = %self.group.stream, group = %self.group.group, seq = f.seq, "a message handed back for a retry was deleted by the stream's limits");
                Counters::inc(&self.inner.counters.dropped_by_limits);
            }
            let kind = if delay.is_zero() {
                AckKind::Nak(None)
            } else {
                AckKind::Nak(Some(delay))
            };
            self.send(f.reply, kind);
        }
    }

    fn term(&self, token: u64, _envelope: &Envelope) {
        if let Some(f) = self.take(token) {
            self.group.settle_for_good(f.seq, Final::Termed);
            self.group.release(f.seq);
            self.send(f.reply, AckKind::Term);
        }
    }

    fn in_progress(&self, token: u64) {
        let reply = lock(&self.in_flight).get(&token).map(|f| f.reply.clone());
        let acker = reply.map(|r| self.acker(r));
        // A keep-alive: not confirmed, as the periodic ones are not; a
        // lost one costs a redelivery that the hold check ignores.
        if let Some(a) = acker {
            self.inner.handle.spawn(async move {
                let _ = a.ack_with(AckKind::Progress).await;
            });
        }
    }
}

#[cfg(test)]
mod tests;
