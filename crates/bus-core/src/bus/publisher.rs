//! Pipelined publishing: a [`Publisher`] keeps a window of messages in
//! flight, each with a [`Confirmation`] the caller waits on when it wants,
//! so a broker that confirms every message (JetStream's PubAck) is not paid
//! one round trip per publish.

use super::{Shared, settle};
use crate::{Confirm, Envelope, MessageId, PublishError, Route};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a [`Publisher`] does when its window is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// Wait for a confirmation to free a place, at most the bus's publish
    /// timeout, then refuse with [`PublishError::WindowFull`].
    #[default]
    Block,
    /// Refuse at once with [`PublishError::WindowFull`].
    Refuse,
}

/// How a [`Publisher`] behaves.
///
/// ```
/// use bus_core::{PublisherOptions, WhenFull};
/// let options = PublisherOptions::default().window(16).when_full(WhenFull::Refuse);
/// assert_eq!(options.window_size(), 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherOptions {
    window: usize,
    when_full: WhenFull,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            window: 256,
            when_full: WhenFull::Block,
        }
    }
}

impl PublisherOptions {
    /// At most `window` messages unconfirmed at once (default 256; at
    /// least 1).
    #[must_use]
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// What a publish does when the window is full (default: block).
    #[must_use]
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// The window's size.
    pub fn window_size(&self) -> usize {
        self.window
    }

    /// Whether a publish waits for a place in a full window.
    #[cfg(feature = "tokio")]
    pub(super) fn blocks_when_full(&self) -> bool {
        self.when_full == WhenFull::Block
    }
}

/// The places in flight, and the failures nobody was left to receive.
#[derive(Default)]
pub(super) struct Window {
    pub(super) state: Mutex<WindowState>,
    /// Signalled whenever a place frees up.
    freed: Condvar,
}

#[derive(Default)]
pub(super) struct WindowState {
    pub(super) in_flight: usize,
    /// Async publishes waiting for a place.
    pub(super) waiting: Vec<std::task::Waker>,
    /// Refusals whose [`Confirmation`] was dropped before it was read.
    unclaimed: Vec<PublishError>,
}

impl Window {
    fn take_place(&self, size: usize, wait: Option<Duration>) -> bool {
        let mut st = lock(&self.state);
        if st.in_flight < size {
            st.in_flight += 1;
            return true;
        }
        let Some(wait) = wait else { return false };
        let deadline = Instant::now() + wait;
        while st.in_flight >= size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.in_flight += 1;
        true
    }

    fn free_place(&self, unclaimed: Option<PublishError>) {
        let mut st = lock(&self.state);
        st.in_flight -= 1;
        st.unclaimed.extend(unclaimed);
        let waiting = std::mem::take(&mut st.waiting);
        drop(st);
        self.freed.notify_all();
        waiting.into_iter().for_each(std::task::Waker::wake);
    }
}

/// Where a message's outcome waits for its [`Confirmation`].
pub(super) struct Slot {
    pub(super) state: Mutex<SlotState>,
    ready: Condvar,
}

// Lives behind an `Arc` and a lock, one per message: its size costs nothing
// to move.
#[allow(clippy::large_enum_variant)]
pub(super) enum SlotState {
    /// With the task awaiting it, if one is.
    Waiting(Option<std::task::Waker>),
    /// The confirmation was dropped: a refusal goes to the publisher's
    /// unclaimed list instead.
    Abandoned,
    Done(Result<MessageId, PublishError>),
}

/// The outcome of one message published through a [`Publisher`], to wait
/// on (or poll) when the caller wants it.
///
/// A confirmation dropped before its outcome was read does not lose a
/// refusal: the refused message goes to [`Publisher::flush`]'s answer.
#[must_use = "a confirmation carries the message back if it is refused"]
pub struct Confirmation {
    pub(super) id: MessageId,
    /// `None` once the outcome was read.
    pub(super) slot: Option<Arc<Slot>>,
    window: Arc<Window>,
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmation")
            .field("id", &self.id)
            .field("settled", &self.is_settled())
            .finish()
    }
}

impl Confirmation {
    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// Whether the outcome is known (waiting for it would not block).
    pub fn is_settled(&self) -> bool {
        self.slot
            .as_ref()
            .is_none_or(|slot| matches!(*lock(&slot.state), SlotState::Done(_)))
    }

    /// Waits for the outcome: the message's id once confirmed, or the
    /// refusal with the message handed back.
    pub fn wait(self) -> Result<MessageId, PublishError> {
        match self.wait_timeout(Duration::MAX) {
            Ok(outcome) => outcome,
            Err(_) => unreachable!("a wait without a deadline ended early"),
        }
    }

    /// Waits at most `timeout`; `Err(self)` if the outcome is still unknown.
    pub fn wait_timeout(
        mut self,
        timeout: Duration,
    ) -> Result<Result<MessageId, PublishError>, Self> {
        let Some(slot) = self.slot.clone() else {
            unreachable!("a confirmation is consumed when its outcome is read")
        };
        let deadline = Instant::now().checked_add(timeout);
        let mut st = lock(&slot.state);
        loop {
            if let SlotState::Done(_) = &*st {
                let SlotState::Done(outcome) =
                    std::mem::replace(&mut *st, SlotState::Waiting(None))
                else {
                    unreachable!()
                };
                drop(st);
                self.slot = None;
                return Ok(outcome);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                drop(st);
                return Err(self);
            }
            st = slot
                .ready
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The outcome if it is known, without waiting.
    pub fn try_wait(self) -> Result<Result<MessageId, PublishError>, Self> {
        self.wait_timeout(Duration::ZERO)
    }
}

impl Drop for Confirmation {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let unclaimed = match std::mem::replace(&mut *lock(&slot.state), SlotState::Abandoned) {
            SlotState::Done(outcome) => outcome.err(),
            _ => None,
        };
        if let Some(err) = unclaimed {
            lock(&self.window.state).unclaimed.push(err);
        }
    }
}

/// Publishes with many messages in flight: each publish returns as soon as
/// the transport has taken the message, with a [`Confirmation`]; at most
/// the window's size are unconfirmed at once. Made by
/// [`Bus::publisher`](crate::Bus::publisher). Clones share the window.
///
/// Every message ends one way, counted once in the bus's ledger: confirmed
/// (then delivered under the usual rules), or refused with the message
/// handed back. Messages one thread publishes to one topic are stored in
/// the order of its calls.
///
/// ```
/// use bus_core::{Bus, Message};
///
/// let bus = Bus::builder().build();
/// bus.subscriber("billing")
///     .topic("orders.created")
///     .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
///     .unwrap();
/// let publisher = bus.publisher();
/// let confirmations: Vec<_> = (0..10)
///     .map(|n| publisher.publish("orders.created", format!("order {n}")).unwrap())
///     .collect();
/// for c in confirmations {
///     c.wait().unwrap();
/// }
/// // A batch answers for each item, in order; the invalid topic alone fails.
/// let outcomes = publisher.publish_batch([
///     ("orders.created", "a"),
///     ("not a topic!", "b"),
///     ("orders.created", "c"),
/// ]);
/// assert!(outcomes[0].is_ok() && outcomes[1].is_err() && outcomes[2].is_ok());
/// assert!(publisher.flush(std::time::Duration::from_secs(5)).unwrap().is_empty());
/// ```
#[derive(Clone)]
pub struct Publisher {
    pub(super) shared: Arc<Shared>,
    pub(super) window: Arc<Window>,
    pub(super) options: PublisherOptions,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("options", &self.options)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// [`Publisher::flush`] ran out of time with messages still unconfirmed.
#[derive(Debug, thiserror::Error)]
#[error("{in_flight} messages still unconfirmed after {waited:?}")]
pub struct FlushTimeout {
    /// Messages still in flight.
    pub in_flight: usize,
    /// How long flush waited.
    pub waited: Duration,
}

impl Publisher {
    pub(super) fn new(shared: Arc<Shared>, options: PublisherOptions) -> Self {
        Self {
            shared,
            window: Arc::new(Window::default()),
            options,
        }
    }

    /// Publishes `payload` to `topic` (normal priority).
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Confirmation, PublishError> {
        self.publish_envelope(super::envelope_for(&self.shared, topic, payload.into())?)
    }

    /// Publishes a prepared envelope to every group of its topic.
    pub fn publish_envelope(&self, envelope: Envelope) -> Result<Confirmation, PublishError> {
        self.send(envelope, None)
    }

    /// Publishes a prepared envelope to the one consumer group `group`.
    pub fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
    ) -> Result<Confirmation, PublishError> {
        self.send(envelope, Some(group))
    }

    /// Publishes every `(topic, payload)` item, keeping up to the window in
    /// flight, and waits for all: one outcome per item, in order. Items
    /// refused (an invalid topic, a payload too large, a broker's refusal)
    /// come back alone; the others are published.
    pub fn publish_batch<T, P>(
        &self,
        items: impl IntoIterator<Item = (T, P)>,
    ) -> Vec<Result<MessageId, PublishError>>
    where
        T: AsRef<str>,
        P: Into<Bytes>,
    {
        wait_all(
            items
                .into_iter()
                .map(|(topic, payload)| self.publish(topic.as_ref(), payload))
                .collect(),
        )
    }

    /// [`publish_batch`](Self::publish_batch) for prepared envelopes.
    pub fn publish_envelopes(
        &self,
        envelopes: impl IntoIterator<Item = Envelope>,
    ) -> Vec<Result<MessageId, PublishError>> {
        wait_all(
            envelopes
                .into_iter()
                .map(|e| self.publish_envelope(e))
                .collect(),
        )
    }

    /// Messages sent and not yet confirmed or refused.
    pub fn in_flight(&self) -> usize {
        lock(&self.window.state).in_flight
    }

    /// Waits at most `timeout` until nothing is in flight, then hands over
    /// the refusals whose [`Confirmation`] was dropped unread (each with
    /// its message): publish, drop the confirmation, and flush.
    pub fn flush(&self, timeout: Duration) -> Result<Vec<PublishError>, FlushTimeout> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.window.state);
        while st.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FlushTimeout {
                    in_flight: st.in_flight,
                    waited: timeout,
                });
            }
            st = self
                .window
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(std::mem::take(&mut st.unclaimed))
    }

    fn send(&self, envelope: Envelope, group: Option<&str>) -> Result<Confirmation, PublishError> {
        let s = &self.shared;
        let mut envelope = envelope;
        if let Err(refusal) = super::admit(s, &mut envelope) {
            return Err(refusal.reject(s, envelope));
        }
        let wait = match self.options.when_full {
            WhenFull::Block => Some(s.config.publish_timeout),
            WhenFull::Refuse => None,
        };
        if !self.window.take_place(self.options.window, wait) {
            let topic = envelope.topic.clone();
            let err = PublishError::WindowFull {
                envelope,
                window: self.options.window,
            };
            return Err(settle::rejected(s, topic.as_str(), err));
        }
        let (answered, confirmation) = self.track(envelope.id);
        let route = match group {
            Some(g) => Route::Group(g),
            None => Route::Topic,
        };
        s.transport
            .send(envelope, route, s.config.publish_timeout, answered);
        Ok(confirmation)
    }

    /// The confirm to hand the transport for message `id`, which counts
    /// its outcome once and frees its place, and the [`Confirmation`] it
    /// answers. The place must be taken.
    pub(super) fn track(&self, id: MessageId) -> (Confirm, Confirmation) {
        let s = &self.shared;
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting(None)),
            ready: Condvar::new(),
        });
        // The outcome may arrive on this thread before `send` returns (an
        // in-process transport) or on the transport's; either way it is
        // counted once, here.
        let answered = {
            let (shared, window, slot) =
                (Arc::clone(s), Arc::clone(&self.window), Arc::clone(&slot));
            Confirm::tracked(move |outcome| {
                let outcome = match outcome {
                    Some(outcome) => super::count_outcome(&shared, id, outcome),
                    None => Err(unanswered(&shared, id)),
                };
                shared.confirming.fetch_sub(1, Ordering::AcqRel);
                let mut st = lock(&slot.state);
                let (unclaimed, waker) = match &mut *st {
                    SlotState::Abandoned => (outcome.err(), None),
                    SlotState::Waiting(waker) => {
                        let waker = waker.take();
                        *st = SlotState::Done(outcome);
                        (None, waker)
                    }
                    SlotState::Done(_) => (None, None),
                };
                drop(st);
                slot.ready.notify_all();
                waker.into_iter().for_each(std::task::Waker::wake);
                window.free_place(unclaimed);
            })
        };
        s.confirming.fetch_add(1, Ordering::AcqRel);
        let confirmation = Confirmation {
            id,
            slot: Some(slot),
            window: Arc::clone(&self.window),
        };
        (answered, confirmation)
    }
}

/// Waits for every publish of a batch, all started first so they share the
/// window: one outcome per item, in order.
fn wait_all(
    started: Vec<Result<Confirmation, PublishError>>,
) -> Vec<Result<MessageId, PublishError>> {
    started
        .into_iter()
        .map(|c| c.and_then(Confirmation::wait))
        .collect()
}

/// A transport dropped a confirm without answering: the message may or may
/// not be stored, and the bus no longer has it to hand back.
pub(super) fn unanswered(s: &Shared, id: MessageId) -> PublishError {
    tracing::error!(message_id = %id, "the transport dropped a publish without confirming or refusing it");
    let err = PublishError::Unanswered { id };
    settle::rejected(s, "-", err)
}
