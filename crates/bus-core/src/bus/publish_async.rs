//! Publishing from async code: the wait for room or for the transport's
//! confirmation is awaited, never blocked on a runtime thread.

use super::publisher::{Confirmation, Publisher, SlotState, unanswered};
use super::{Bus, Shared, admit, count_outcome, envelope_for, settle};
use crate::{Confirm, Envelope, MessageId, PublishError, Receipt, Route};
use bytes::Bytes;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The first pause before a full queue is tried again; it doubles up to
/// [`MAX_ROOM_PAUSE`].
const ROOM_PAUSE: Duration = Duration::from_micros(50);
const MAX_ROOM_PAUSE: Duration = Duration::from_millis(5);

impl Bus {
    /// [`publish`](Self::publish) from async code: a full queue is waited
    /// on (as long as its `Block` overflow policy allows, within the
    /// publish timeout) and the transport's confirmation awaited, without
    /// blocking the runtime's thread. Counted like any publish; on `Err`
    /// the caller gets the payload back. A future dropped before it
    /// returns leaves the message refused (counted in
    /// `rejected_at_publish`).
    ///
    /// ```
    /// use bus_core::{Bus, Message};
    /// let bus = Bus::builder().build();
    /// bus.subscriber("audit")
    ///     .topic("orders")
    ///     .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
    ///     .unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// rt.block_on(bus.publish_async("orders", &b"{}"[..])).unwrap();
    /// ```
    pub async fn publish_async(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<MessageId, PublishError> {
        let envelope = envelope_for(&self.shared, topic, payload.into())?;
        self.publish_envelope_async(envelope).await
    }

    /// [`publish_envelope`](Self::publish_envelope) from async code (see
    /// [`publish_async`](Self::publish_async)).
    pub async fn publish_envelope_async(
        &self,
        envelope: Envelope,
    ) -> Result<MessageId, PublishError> {
        let s = &self.shared;
        let mut envelope = envelope;
        if let Err(refusal) = admit(s, &mut envelope) {
            return Err(refusal.reject(s, envelope));
        }
        let id = envelope.id;
        s.confirming.fetch_add(1, Ordering::AcqRel);
        let mut unsettled = Unsettled { s, id, done: false };
        let outcome = send_awaiting_room(s, envelope, Route::Topic).await;
        unsettled.done = true;
        match outcome {
            Some(outcome) => count_outcome(s, id, outcome),
            None => Err(unanswered(s, id)),
        }
    }
}

/// A publish started and not yet counted: shutdown waits for it, and if
/// its future is dropped first, the message is counted refused.
struct Unsettled<'a> {
    s: &'a Shared,
    id: MessageId,
    done: bool,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if !self.done {
            unanswered(self.s, self.id);
        }
        self.s.confirming.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends `envelope` along `route` and awaits the transport's answer
/// (`None`: it dropped the confirm unanswered). A transport that waits
/// only for queue room is asked not to wait; a full queue whose policy
/// blocks is tried again, with growing pauses, as long as the policy and
/// the publish timeout allow. Any other transport gets the whole timeout.
async fn send_awaiting_room(
    s: &Shared,
    mut envelope: Envelope,
    route: Route<'_>,
) -> Option<Result<Receipt, PublishError>> {
    let timeout = s.config.publish_timeout;
    let started = Instant::now();
    let local = s.transport.waits_only_for_room();
    let wait = if local { Duration::ZERO } else { timeout };
    let mut pause = ROOM_PAUSE;
    loop {
        let (tx, rx) = oneshot::channel();
        let confirm = Confirm::new(move |outcome| {
            let _ = tx.send(outcome);
        });
        s.transport.send(envelope, route, wait, confirm);
        match rx.await.ok()? {
            // Under `Reject` a full queue refuses at once, as a blocking
            // publish would.
            Err(PublishError::QueueFull {
                envelope: back,
                group,
            }) if local && Instant::now() < room_deadline(s, &back, &group, started) => {
                let until = room_deadline(s, &back, &group, started);
                envelope = back;
                let topic = envelope.topic.clone();
                let room = poll_fn(|cx| s.transport.poll_room(&topic, &group, cx));
                match tokio::time::timeout_at(until.into(), room).await {
                    // Room now, or the deadline: one more try says which.
                    Ok(Ok(())) | Err(_) => {}
                    // A transport that cannot say when: growing pauses.
                    Ok(Err(_)) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_ROOM_PAUSE);
                    }
                }
            }
            outcome => return Some(outcome),
        }
    }
}

/// Until when a publish started at `started` may wait for room in
/// `group`'s full queue: its `Block` policy's wait, within the publish
/// timeout; no wait under any other policy.
fn room_deadline(s: &Shared, envelope: &Envelope, group: &str, started: Instant) -> Instant {
    match s.overflow_policy(&envelope.topic, group) {
        Some(crate::OverflowPolicy::Block { timeout }) => {
            started + timeout.min(s.config.publish_timeout)
        }
        _ => started,
    }
}

impl Publisher {
    /// [`publish`](Self::publish) from async code: a full window and a
    /// full queue are awaited, never blocked on; the returned
    /// [`Confirmation`] is awaited with
    /// [`wait_async`](Confirmation::wait_async).
    ///
    /// ```
    /// use bus_core::{Bus, Message};
    /// let bus = Bus::builder().build();
    /// bus.subscriber("audit")
    ///     .topic("orders")
    ///     .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
    ///     .unwrap();
    /// let publisher = bus.publisher();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// rt.block_on(async {
    ///     let confirmation = publisher.publish_async("orders", &b"{}"[..]).await.unwrap();
    ///     confirmation.wait_async().await.unwrap();
    /// });
    /// ```
    pub async fn publish_async(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Confirmation, PublishError> {
        let envelope = envelope_for(&self.shared, topic, payload.into())?;
        self.publish_envelope_async(envelope).await
    }

    /// [`publish_envelope`](Self::publish_envelope) from async code (see
    /// [`publish_async`](Self::publish_async)).
    pub async fn publish_envelope_async(
        &self,
        envelope: Envelope,
    ) -> Result<Confirmation, PublishError> {
        let s = Arc::clone(&self.shared);
        let mut envelope = envelope;
        if let Err(refusal) = admit(&s, &mut envelope) {
            return Err(refusal.reject(&s, envelope));
        }
        if !self.take_place_async().await {
            let topic = envelope.topic.clone();
            let err = PublishError::WindowFull {
                envelope,
                window: self.options.window_size(),
            };
            return Err(settle::rejected(&s, topic.as_str(), err));
        }
        let (answered, confirmation) = self.track(envelope.id);
        if s.transport.waits_only_for_room() {
            // Dropped unresolved (the future cancelled, or no answer), the
            // confirm counts the message refused and frees its place.
            if let Some(outcome) = send_awaiting_room(&s, envelope, Route::Topic).await {
                answered.resolve(outcome);
            }
        } else {
            s.transport
                .send(envelope, Route::Topic, s.config.publish_timeout, answered);
        }
        Ok(confirmation)
    }

    /// Takes a place in the window, awaiting one under
    /// [`WhenFull::Block`] (at most the publish timeout).
    async fn take_place_async(&self) -> bool {
        let block = self.options.blocks_when_full();
        let size = self.options.window_size();
        let window = &self.window;
        let place = poll_fn(|cx| {
            let mut st = window.state.lock().unwrap_or_else(PoisonError::into_inner);
            if st.in_flight < size {
                st.in_flight += 1;
                Poll::Ready(true)
            } else if !block {
                Poll::Ready(false)
            } else {
                st.waiting.push(cx.waker().clone());
                Poll::Pending
            }
        });
        tokio::time::timeout(self.shared.config.publish_timeout, place)
            .await
            .unwrap_or(false)
    }
}

impl Confirmation {
    /// Awaits the outcome without blocking a thread: the message's id once
    /// confirmed, or the refusal with the message handed back.
    pub async fn wait_async(mut self) -> Result<MessageId, PublishError> {
        // Kept in `self` until read: a wait cancelled before then leaves
        // a refusal to the publisher's flush, as a dropped confirmation does.
        let Some(slot) = self.slot.clone() else {
            unreachable!("a confirmation is consumed when its outcome is read")
        };
        let outcome = poll_fn(|cx| {
            let mut st = slot.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *st {
                SlotState::Done(_) => {
                    let SlotState::Done(outcome) =
                        std::mem::replace(&mut *st, SlotState::Waiting(None))
                    else {
                        unreachable!()
                    };
                    Poll::Ready(outcome)
                }
                SlotState::Waiting(waker) => {
                    *waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                SlotState::Abandoned => unreachable!("abandoned only by a dropped confirmation"),
            }
        })
        .await;
        self.slot = None;
        outcome
    }
}
