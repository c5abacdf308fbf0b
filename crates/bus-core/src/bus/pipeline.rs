//! The delivery pipeline around a handler call, written once for every
//! runner (the worker threads of `worker.rs`, the tokio tasks of
//! `tasks.rs`): before the call, the guard's permit; after it, classify,
//! report, observe, decide. Each decision is carried out by the `settle`
//! module, the next step of a delivery.

use super::stats::Counter;
use super::{Shared, Subscriber, settle};
use crate::guard::{Guard, Outcome, Permit, Rejected};
use crate::observe::BusEvent;
use crate::recovery::{Decision, Failure};
use crate::time::{Clock, Stamp};
use crate::{AttemptRecord, Delivery};
use bus_errors::{ErrorContext, ErrorReport, HandlerError, PanicError};
use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How a handler call ended: returned (`Ok`), or panicked (`Err`, the
/// panic's payload).
pub(super) type Called = Result<Result<(), HandlerError>, Box<dyn Any + Send>>;

/// One subscriber's pipeline: what every delivery of it passes through,
/// whichever runner called its handler.
pub(super) struct Pipeline {
    pub(super) shared: Arc<Shared>,
    pub(super) guard: Arc<dyn Guard>,
    pub(super) component: Arc<str>,
    pub(super) group: Arc<str>,
    pub(super) subscriber: Arc<Subscriber>,
}

impl Pipeline {
    /// Asks the guard for a permit before a delivery is fetched. A refusal
    /// is counted and reported as a park: the caller pauses for
    /// `retry_after` and the messages wait in the transport.
    pub(super) fn admit(&self) -> Result<Permit, Rejected> {
        self.guard.try_acquire().inspect_err(|rejected| {
            self.shared.counters.inc(Counter::parked);
            self.shared.event(&BusEvent::Parked {
                component: &self.component,
                state: rejected.state,
                retry_after: rejected.retry_after,
            });
        })
    }

    /// A paused runner thread waits without taking messages, for `d` on
    /// `clock`; a stop ends the wait early (it unparks the runner's thread,
    /// and a manual clock wakes it when advanced). Timed by stamps, as a
    /// breaker times the `retry_after` it hands out: the system clock's
    /// stamps run at the CPU counter's rate, not its instants', and a pause
    /// timed by instants could end before the breaker's deadline and be
    /// refused again.
    pub(super) fn pause(&self, clock: &dyn Clock, d: Duration) {
        let until = clock.stamp() + d;
        while !self.subscriber.stop.load(Ordering::Acquire) {
            let now = clock.stamp();
            if now >= until {
                break;
            }
            match clock.now().checked_add(until.saturating_since(now)) {
                Some(deadline) => clock.park_until(deadline),
                None => std::thread::park(),
            }
        }
    }

    /// Hands back a permit that ran no handler (nothing fetched, or a
    /// call cancelled): it counts neither way, so a half-open probe slot
    /// is never kept.
    pub(super) fn release(&self, permit: Permit) {
        self.guard.record(permit, Outcome::Ignored);
    }

    /// The handler's deadline for the next call, if the recovery policy
    /// sets one (the TIMEOUT strategy grows it after timeouts).
    pub(super) fn deadline(&self) -> Option<Duration> {
        self.shared.plugs.recovery.handler_deadline(&self.component)
    }

    /// The consumer span of one attempt at `delivery`, a child of the
    /// publish its headers name.
    pub(super) fn span(&self, delivery: &Delivery) -> tracing::Span {
        let env = delivery.envelope();
        let span = crate::trace::consumer_span(env, &self.group, &*self.shared.transport);
        if !span.is_disabled() {
            self.shared.plugs.propagator.extract(&env.headers, &span);
        }
        span
    }

    /// The stamp a handler call starts at.
    pub(super) fn start(&self) -> Stamp {
        self.shared.plugs.clock.stamp()
    }

    /// Records how the handler ran on the delivery in `slot`, from
    /// `started`. A success settles it where it is; a failure takes it out
    /// (the failure path may hand it to the dead-letter store's callback).
    pub(super) fn complete(
        &self,
        slot: &mut Option<Delivery>,
        permit: Permit,
        called: Called,
        started: Stamp,
    ) {
        let Some(delivery) = slot.as_mut() else {
            self.release(permit);
            return;
        };
        // The one clock read after the handler: it times the handler and
        // stamps every event of this delivery.
        let ended = self.shared.plugs.clock.stamp();
        let elapsed = ended.saturating_since(started);
        let (error, panicked) = match called {
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
        permit: Permit,
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

    /// A delivery fetched but never handed to a handler (its runner
    /// stopped), or whose call was cancelled: once the bus has closed the
    /// transport it cannot be redelivered, so it is dead-lettered with
    /// reason shutdown, or left to a durable transport (counted pending by
    /// the shutdown); before that, it goes back to its group.
    #[cfg(feature = "tokio")]
    pub(super) fn unstarted(&self, delivery: Delivery) {
        if self.shared.closed() && !self.shared.transport.durable() {
            settle::after_close(&self.shared, &self.group, delivery);
        } else {
            // Dropped unsettled: redelivered at once, or, on a closed
            // durable transport, kept by the broker for the next run.
            drop(delivery);
        }
    }
}
