//! Publishing from async code: the wait for room or for the transport's
//! confirmation is awaited, never blocked on a runtime thread.

use super::{Bus, admit, count_outcome, envelope_for};
use crate::{Confirm, Envelope, MessageId, PublishError, Route};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The first pause before a full queue is tried again; it doubles up to
/// [`MAX_ROOM_PAUSE`].
const ROOM_PAUSE: Duration = Duration::from_micros(50);
const MAX_ROOM_PAUSE: Duration = Duration::from_millis(5);

impl Bus {
    /// [`publish`](Self::publish) from async code: a full queue is waited
    /// on (up to the publish timeout) and the transport's confirmation
    /// awaited, without blocking the runtime's thread. Counted like any
    /// publish; on `Err` the caller gets the payload back.
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
        let mut envelope = admit(s, envelope)?;
        let id = envelope.id;
        let timeout = s.config.publish_timeout;
        let started = Instant::now();
        let deadline = started + timeout;
        // A transport that waits only for queue room is asked not to wait:
        // the wait is this future's. Any other gets the whole timeout.
        let local = s.transport.waits_only_for_room();
        let wait = if local { Duration::ZERO } else { timeout };
        let mut pause = ROOM_PAUSE;
        // Counted as confirming while unanswered: shutdown waits for it.
        s.confirming.fetch_add(1, Ordering::AcqRel);
        let outcome = loop {
            let (tx, rx) = oneshot::channel();
            s.transport.send(
                envelope,
                Route::Topic,
                wait,
                Confirm::new(move |outcome| {
                    let _ = tx.send(outcome);
                }),
            );
            match rx.await {
                // Only a queue whose overflow policy blocks is waited on, and
                // no longer than it says: under `Reject` a full queue
                // refuses at once, as a blocking publish would.
                Ok(Err(PublishError::QueueFull {
                    envelope: back,
                    group,
                })) if local
                    && Instant::now() < room_deadline(s, &back, &group, started, deadline) =>
                {
                    envelope = back;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_ROOM_PAUSE);
                }
                Ok(outcome) => break Some(outcome),
                Err(_) => break None,
            }
        };
        let result = match outcome {
            Some(outcome) => count_outcome(s, id, outcome),
            None => Err(super::publisher::unanswered(s, id)),
        };
        s.confirming.fetch_sub(1, Ordering::AcqRel);
        result
    }
}

/// How long a publish may wait for room in `group`'s full queue: its
/// `Block` policy's wait from `started`, within the publish's `deadline`;
/// no wait under any other policy.
fn room_deadline(
    s: &super::Shared,
    envelope: &Envelope,
    group: &str,
    started: Instant,
    deadline: Instant,
) -> Instant {
    match s.overflow_policy(&envelope.topic, group) {
        Some(crate::OverflowPolicy::Block { timeout }) => deadline.min(started + timeout),
        _ => started,
    }
}
