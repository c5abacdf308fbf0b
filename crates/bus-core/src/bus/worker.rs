//! The thread runner: each worker thread fetches deliveries and runs a
//! synchronous handler on them through the subscriber's [`Pipeline`].

use super::pipeline::Pipeline;
use crate::time::SystemClock;
use crate::{Delivery, Handler, Message, Subscription, TransportError};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(super) struct Worker {
    pub(super) pipe: Arc<Pipeline>,
    pub(super) sub: Box<dyn Subscription>,
    pub(super) handler: Arc<dyn Handler>,
}

impl Worker {
    /// Runs until the subscriber is stopped or the transport closes.
    /// `wakeable`: the subscription has a [`Wake`](crate::Wake) (registered
    /// with the subscriber, which fires it on stop), so an idle wait needs
    /// no timeout; otherwise each wait is bounded by the poll interval.
    pub(super) fn run(mut self, wakeable: bool) {
        let poll = self.pipe.shared.config.poll_interval;
        let idle_wait = if wakeable { Duration::MAX } else { poll };
        while !self.pipe.subscriber.stop.load(Ordering::Acquire) {
            if let Some(left) = self.pipe.subscriber.paused_for() {
                self.pipe.pause(&SystemClock, left);
                continue;
            }
            // Ask the guard before fetching: an open breaker pauses the
            // subscriber and its messages stay in the transport (with
            // JetStream, a fetch-and-nak would count toward MaxDeliver).
            let permit = match self.pipe.admit() {
                Ok(permit) => permit,
                Err(rejected) => {
                    // On the bus's clock, which a breaker counts its wait by.
                    let clock = Arc::clone(&self.pipe.shared.plugs.clock);
                    self.pipe
                        .pause(&*clock, rejected.retry_after.max(Duration::from_millis(1)));
                    continue;
                }
            };
            // The delivery stays where the transport put it, in this frame:
            // the pipeline borrows its slot. (Each move of a delivery copies
            // the envelope: catch_unwind moves its closure, and rebinding
            // the delivery out of the result was one more copy.)
            let mut next = self.sub.next(idle_wait);
            match &mut next {
                Ok(slot @ Some(_)) => {
                    // The pipeline does not panic, but plugs are user code: a
                    // panicking plug must not kill the worker. The delivery,
                    // dropped unsettled after the unwind, is redelivered
                    // (never lost).
                    if catch_unwind(AssertUnwindSafe(|| self.process(slot, permit))).is_err() {
                        tracing::error!(component = %self.pipe.component, "a bus plug panicked; the delivery will be redelivered");
                        self.pipe.pause(&SystemClock, poll);
                    }
                }
                Ok(None) => self.pipe.release(permit),
                Err(TransportError::Closed) => {
                    self.pipe.release(permit);
                    break;
                }
                Err(error) => {
                    self.pipe.release(permit);
                    tracing::warn!(%error, component = %self.pipe.component, "transport error while receiving");
                    self.pipe.pause(&SystemClock, poll);
                }
            }
        }
    }

    /// Runs the handler on the delivery in `slot` (panics caught) and
    /// hands the outcome to the pipeline.
    fn process(&self, slot: &mut Option<Delivery>, permit: crate::Permit) {
        let Some(delivery) = slot.as_ref() else {
            self.pipe.release(permit);
            return;
        };
        let pipe = &*self.pipe;
        let span = pipe.span(delivery);
        let _in_span = span.enter();
        let deadline = pipe.deadline();
        let started = pipe.start();
        let called = {
            let msg = Message::new(delivery.envelope(), &pipe.component, deadline);
            let _conversation = crate::trace::handling(delivery.envelope());
            catch_unwind(AssertUnwindSafe(|| self.handler.handle(&msg)))
        };
        pipe.complete(slot, permit, called, started);
    }
}
