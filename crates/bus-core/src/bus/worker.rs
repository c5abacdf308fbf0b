//! The delivery pipeline, run by each worker thread: guard, handler (panics
//! caught), classify, report, observe, decide. Each decision is carried out
//! by the `settle` module, the next step of a delivery. Written once for
//! every transport.

use super::stats::Counter;
use super::{Shared, settle};
use crate::guard::{Guard, Outcome};
use crate::observe::BusEvent;
use crate::recovery::{Decision, Failure};
use crate::time::{Clock, Stamp, SystemClock};
use crate::{AttemptRecord, Delivery, Handler, Message, Subscription, TransportError};
use bus_errors::{ErrorContext, ErrorReport, HandlerError, PanicError};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) sub: Box<dyn Subscription>,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) guard: Arc<dyn Guard>,
    pub(super) component: Arc<str>,
    pub(super) group: Arc<str>,
    pub(super) subscriber: Arc<super::Subscriber>,
}

impl Worker {
    /// Runs until the subscriber is stopped or the transport closes.
    /// `wakeable`: the subscription has a [`Wake`](crate::Wake) (registered
    /// with the subscriber, which fires it on stop), so an idle wait needs
    /// no timeout; otherwise each wait is bounded by the poll interval.
    pub(super) fn run(mut self, wakeable: bool) {
        let poll = self.shared.config.poll_interval;
        let idle_wait = if wakeable { Duration::MAX } else { poll };
        while !self.subscriber.stop.load(Ordering::Acquire) {
            if let Some(left) = self.subscriber.paused_for() {
                self.pause(&SystemClock, left);
                continue;
            }
            // Ask the guard before fetching: an open breaker pauses the
            // subscriber and its messages stay in the transport (with
            // JetStream, a fetch-and-nak would count toward MaxDeliver).
            let permit = match self.guard.try_acquire() {
                Ok(permit) => permit,
                Err(rejected) => {
                    self.shared.counters.inc(Counter::parked);
                    self.shared.event(&BusEvent::Parked {
                        component: &self.component,
                        state: rejected.state,
                        retry_after: rejected.retry_after,
                    });
                    // On the bus's clock, which a breaker counts its wait by.
                    let clock = Arc::clone(&self.shared.plugs.clock);
                    self.pause(&*clock, rejected.retry_after.max(Duration::from_millis(1)));
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
                        tracing::error!(component = %self.component, "a bus plug panicked; the delivery will be redelivered");
                        self.pause(&SystemClock, poll);
                    }
                }
                Ok(None) => self.guard.record(permit, Outcome::Ignored),
                Err(TransportError::Closed) => {
                    self.guard.record(permit, Outcome::Ignored);
                    break;
                }
                Err(error) => {
                    self.guard.record(permit, Outcome::Ignored);
                    tracing::warn!(%error, component = %self.component, "transport error while receiving");
                    self.pause(&SystemClock, poll);
                }
            }
        }
    }

    /// A paused worker waits without taking messages, for `d` on `clock`;
    /// a stop ends the wait early (it unparks the worker's thread, and a
    /// manual clock wakes it when advanced).
    fn pause(&self, clock: &dyn Clock, d: Duration) {
        let until = clock.now().checked_add(d);
        while !self.subscriber.stop.load(Ordering::Acquire) {
            match until {
                Some(until) if clock.now() >= until => break,
                Some(until) => clock.park_until(until),
                None => std::thread::park(),
            }
        }
    }

    /// Runs the handler on the delivery in `slot`. A success settles it
    /// where it is; a failure takes it out (the failure path may hand it to
    /// the dead-letter store's callback).
    fn process(&self, slot: &mut Option<Delivery>, permit: crate::Permit) {
        let Some(delivery) = slot.as_mut() else {
            return;
        };
        let s = &*self.shared;
        let deadline = s.plugs.recovery.handler_deadline(&self.component);
        let started = s.plugs.clock.stamp();
        let span = crate::trace::consumer_span(delivery.envelope(), &self.group, &*s.transport);
        if !span.is_disabled() {
            s.plugs
                .propagator
                .extract(&delivery.envelope().headers, &span);
        }
        let _in_span = span.enter();
        let result = {
            let msg = Message::new(delivery.envelope(), &self.component, deadline);
            let _conversation = crate::trace::handling(delivery.envelope());
            catch_unwind(AssertUnwindSafe(|| self.handler.handle(&msg)))
        };
        // The one clock read after the handler: it times the handler and
        // stamps every event of this delivery.
        let ended = s.plugs.clock.stamp();
        let elapsed = ended.saturating_since(started);
        let (error, panicked) = match result {
            Ok(Ok(())) => {
                self.guard.record(permit, Outcome::Success { elapsed });
                settle::ack(self, delivery, elapsed, ended);
                return;
            }
            Ok(Err(e)) => (e, false),
            Err(payload) => (
                HandlerError::from(PanicError::from_payload(&*payload)),
                true,
            ),
        };
        if let Some(delivery) = slot.take() {
            self.fail(delivery, permit, &error, panicked, elapsed, ended);
        }
    }

    /// A failed delivery: classify, report, ask the recovery policy, apply
    /// its rewrite and record the attempt; the `settle` module carries the
    /// decision out. Kept out of line: the success path stays small.
    #[inline(never)]
    fn fail(
        &self,
        mut delivery: Delivery,
        permit: crate::Permit,
        error: &HandlerError,
        panicked: bool,
        elapsed: Duration,
        ended: Stamp,
    ) {
        let s = &*self.shared;
        s.counters.inc(Counter::failed);
        if panicked {
            s.counters.inc(Counter::panics);
        }
        let env = delivery.envelope();
        let ctx = ErrorContext::new(&self.component)
            .with_topic(env.topic.as_str())
            .with_attempt(env.attempt);
        let class = s.plugs.classifier.classify(error.as_error(), &ctx);
        crate::trace::record_failure(&tracing::Span::current(), class.category.as_str());
        self.guard
            .record(permit, Outcome::Failure { elapsed, class });

        let mut report = ErrorReport::from_error(error, class, &*self.component)
            .with_topic(env.topic.as_str())
            .with_message_id(env.id)
            .with_attempt(env.attempt);
        if let Some(c) = &env.correlation_id {
            report.correlation_id = Some(c.clone());
        }
        report.retry_count = env.retries();
        s.config.sanitizer.sanitize(&mut report);

        let resolution = s.plugs.recovery.decide(&Failure::new(
            &report,
            delivery.envelope(),
            &self.component,
            elapsed,
        ));
        let (decision, action) = resolution.apply(delivery.envelope_mut());
        let (attempted, successful) = match decision {
            Decision::Retry { .. } | Decision::Reconnect { .. } => (true, None),
            _ => (report.retry_count > 0, Some(false)),
        };
        report.record_recovery(attempted, successful, action.clone());
        s.plugs.sink.record(&report);
        s.event_at(ended, &BusEvent::Failed { report: &report });

        let env = delivery.envelope_mut();
        env.history.push(AttemptRecord {
            attempt: env.attempt,
            at: report.timestamp,
            component: self.component.to_string(),
            category: report.category,
            severity: report.severity,
            error_type: report.error_type.clone(),
            message: report.message.clone(),
            decision: action,
        });

        match decision {
            Decision::Retry { after } => settle::retry(self, delivery, after, false, ended),
            Decision::Reconnect { after } => settle::retry(self, delivery, after, true, ended),
            Decision::DeadLetter { reason } => {
                settle::dead_letter(self, delivery, report, reason, false);
            }
            Decision::Escalate { reason } => {
                settle::dead_letter(self, delivery, report, reason, true);
            }
            Decision::Discard { reason } => {
                settle::discard_delivery(self, delivery, &reason, ended);
            }
        }
    }
}
