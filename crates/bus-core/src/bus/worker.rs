//! The delivery pipeline, run by each worker thread: guard, handler (panics
//! caught), classify, report, observe, decide, settle. Written once for every
//! transport.

use super::Shared;
use super::stats::Counter;
use crate::dlq::DeadLetter;
use crate::guard::{Guard, Outcome};
use crate::observe::BusEvent;
use crate::recovery::{Decision, Failure, Success};
use crate::time::Stamp;
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

/// Books a letter the store accepted.
pub(super) fn letter_stored(shared: &Shared, letter: &DeadLetter) {
    shared.counters.inc(Counter::dead_lettered);
    if shared.dlq_failing.swap(false, Ordering::AcqRel) {
        shared.event(&BusEvent::DlqRecovered {
            component: &letter.component,
        });
    }
    shared.event(&BusEvent::DeadLettered {
        topic: &letter.envelope.topic,
        component: &letter.component,
        category: letter.report.category,
        reason: &letter.reason,
    });
}

/// Books a letter the store refused: the store is unhealthy, the message stays.
pub(super) fn letter_refused(shared: &Shared, letter: &DeadLetter, error: &crate::DlqError) {
    shared.counters.inc(Counter::dlq_write_failures);
    shared.dlq_failing.store(true, Ordering::Release);
    tracing::error!(%error, message_id = %letter.envelope.id, "dead-letter store refused a write; the message stays queued");
    shared.event(&BusEvent::DlqWriteFailed {
        component: &letter.component,
        error,
    });
}

/// Pushes a letter and waits for the store's answer (publish and shutdown
/// paths). On failure the letter is handed back so the caller keeps the message.
pub(super) fn store_letter(shared: &Shared, letter: DeadLetter) -> Result<(), Box<DeadLetter>> {
    match shared.plugs.dlq.push(&letter) {
        Ok(_) => {
            letter_stored(shared, &letter);
            Ok(())
        }
        Err(error) => {
            letter_refused(shared, &letter, &error);
            Err(Box::new(letter))
        }
    }
}

/// Settles a delivery that can no longer be redelivered because the bus has
/// shut down (its handler outlived the deadline): dead-lettered with reason
/// shutdown, or, if the store refuses, counted as returned and logged.
fn settle_after_close(shared: &Shared, group: &str, delivery: Delivery) {
    super::dead_letter_late(shared, group, delivery.envelope().clone());
    delivery.term();
}

impl Worker {
    pub(super) fn run(mut self) {
        let poll = self.shared.config.poll_interval;
        while !self.subscriber.stop.load(Ordering::Acquire) {
            if let Some(left) = self.subscriber.paused_for() {
                self.pause(left.min(poll));
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
                    self.pause(rejected.retry_after.clamp(Duration::from_millis(1), poll));
                    continue;
                }
            };
            // The delivery stays where the transport put it, in this frame:
            // the pipeline borrows its slot. (Each move of a delivery copies
            // the envelope: catch_unwind moves its closure, and rebinding
            // the delivery out of the result was one more copy.)
            let mut next = self.sub.next(poll);
            match &mut next {
                Ok(slot @ Some(_)) => {
                    // The pipeline does not panic, but plugs are user code: a
                    // panicking plug must not kill the worker. The delivery,
                    // dropped unsettled after the unwind, is redelivered
                    // (never lost).
                    if catch_unwind(AssertUnwindSafe(|| self.process(slot, permit))).is_err() {
                        tracing::error!(component = %self.component, "a bus plug panicked; the delivery will be redelivered");
                        self.pause(poll);
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
                    self.pause(poll);
                }
            }
        }
    }

    // A paused worker waits without taking messages; stop ends the wait early.
    fn pause(&self, d: Duration) {
        let until = std::time::Instant::now() + d;
        while !self.subscriber.stop.load(Ordering::Acquire) {
            let now = std::time::Instant::now();
            if now >= until {
                break;
            }
            std::thread::park_timeout((until - now).min(Duration::from_millis(10)));
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
        let result = {
            let msg = Message::new(delivery.envelope(), &self.component, deadline);
            catch_unwind(AssertUnwindSafe(|| self.handler.handle(&msg)))
        };
        // The one clock read after the handler: it times the handler and
        // stamps every event of this delivery.
        let ended = s.plugs.clock.stamp();
        let elapsed = ended.saturating_since(started);
        let (error, panicked) = match result {
            Ok(Ok(())) => {
                self.guard.record(permit, Outcome::Success { elapsed });
                let env = delivery.envelope();
                s.plugs
                    .recovery
                    .on_success(&Success::new(env, &self.component, elapsed, ended));
                s.event_at(
                    ended,
                    &BusEvent::Acked {
                        topic: &env.topic,
                        component: &self.component,
                        created_at: env.created_at,
                        handler_time: elapsed,
                        attempt: env.attempt,
                    },
                );
                delivery.ack_in_place();
                s.counters.inc(Counter::acked);
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

        let (decision, action) = {
            let mut failure =
                Failure::new(&report, delivery.envelope_mut(), &self.component, elapsed);
            let decision = s.plugs.recovery.decide(&mut failure);
            let action = failure.note.take().unwrap_or_else(|| decision.describe());
            (decision, action)
        };
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
            Decision::Retry { .. } | Decision::Reconnect { .. } if s.closed() => {
                // A handler that outlived the shutdown deadline: the
                // transport is closed, so a retry has nowhere to wait.
                settle_after_close(s, &self.group, delivery);
            }
            Decision::Retry { after } | Decision::Reconnect { after } => {
                if matches!(decision, Decision::Reconnect { .. })
                    && let Err(e) = s.transport.reconnect()
                {
                    tracing::warn!(error = %e, component = %self.component, "reconnect failed; retrying anyway");
                }
                let env = delivery.envelope_mut();
                let failed_attempt = env.attempt;
                env.attempt += 1;
                s.counters.inc(Counter::retried);
                s.event_at(
                    ended,
                    &BusEvent::Retried {
                        topic: &delivery.envelope().topic,
                        component: &self.component,
                        attempt: failed_attempt,
                        delay: after,
                    },
                );
                delivery.nak(after);
            }
            Decision::DeadLetter { ref reason } | Decision::Escalate { ref reason } => {
                let escalate = matches!(decision, Decision::Escalate { .. });
                let letter = DeadLetter::new(
                    delivery.envelope().clone(),
                    report,
                    reason.clone(),
                    &*self.component,
                    &*self.group,
                );
                // The worker moves on while the store makes the letter durable;
                // the delivery is settled in the callback, only once the store
                // has answered, so a crash before then redelivers it.
                let shared = Arc::clone(&self.shared);
                let subscriber = Arc::clone(&self.subscriber);
                let done = move |result: Result<crate::LetterId, crate::DlqError>,
                                 letter: DeadLetter| {
                    match result {
                        Ok(_) => {
                            letter_stored(&shared, &letter);
                            if escalate {
                                tracing::error!(message_id = %letter.envelope.id, component = %letter.component, category = %letter.report.category, escalated = true, "failure escalated");
                                shared.event(&BusEvent::Escalated {
                                    report: &letter.report,
                                });
                            }
                            delivery.term();
                        }
                        Err(error) => {
                            letter_refused(&shared, &letter, &error);
                            if shared.closed() {
                                settle_after_close(&shared, &letter.group, delivery);
                                return;
                            }
                            // Keep the message: undo this attempt's record,
                            // redeliver after a pause, and pause the subscriber.
                            let mut delivery = delivery;
                            delivery.envelope_mut().history.pop();
                            let wait = shared.config.dlq_retry_delay;
                            delivery.nak(wait);
                            subscriber.pause_for(wait);
                        }
                    }
                };
                s.plugs.dlq.push_then(letter, Box::new(done));
            }
            Decision::Discard { reason } => {
                let env = delivery.envelope();
                tracing::warn!(message_id = %env.id, topic = %env.topic, component = %self.component, %reason, "message discarded by recovery policy");
                s.counters.inc(Counter::discarded_by_policy);
                s.event_at(
                    ended,
                    &BusEvent::Discarded {
                        topic: &env.topic,
                        component: &self.component,
                        reason: &reason,
                    },
                );
                delivery.term();
            }
        }
    }
}
