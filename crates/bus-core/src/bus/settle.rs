//! Settling: every end a delivery can reach, one function per end, and
//! every count of the ledger's terms but `accepted` (counted by `publish`).
//!
//! A delivery arrives here from one of three places:
//!
//! - the pipeline (`pipeline.rs`), after a handler ran: [`ack`] on success;
//!   on failure, with the recovery policy's decision, [`retry`],
//!   [`dead_letter`] (the store's [`Answer`] then settles the delivery in
//!   [`AwaitingStore::answered`]) or [`discard_delivery`];
//! - a publish (`mod.rs`): [`rejected`] when refused, [`leftovers`] for the
//!   copies the transport could not place (a full queue, an eviction, a
//!   close racing the publish), settled by the group's overflow policy;
//! - the shutdown (`mod.rs`): [`at_shutdown`] for what the transport still
//!   held at close, [`late`] for what reaches an end after the report,
//!   [`left_in_broker`] for what a durable transport keeps.
//!
//! A transport that ends deliveries on its own (a broker's redelivery
//! limit) dead-letters them through [`BusLetters`], counted here too.
//!
//! | end | ledger term |
//! |---|---|
//! | acked | `acked` |
//! | stored in the dead-letter store | `dead_lettered` |
//! | refused at publish | `rejected_at_publish` |
//! | discarded by a configured policy | `discarded_by_policy` |
//! | handed back to the application at shutdown | `returned_at_shutdown` |
//! | left in a durable transport at shutdown | `pending` |

use super::pipeline::Pipeline;
use super::stats::Counter;
use super::{Shared, Subscriber};
use crate::dlq::{DeadLetter, DeadLetterReason, DeadLetterStore, DlqError, LetterId};
use crate::observe::BusEvent;
use crate::recovery::Success;
use crate::time::Stamp;
use crate::{Delivery, Envelope, Leftovers, OverflowPolicy, PublishError};
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The handler succeeded: the delivery is done. Runs on every successful
/// delivery, so it adds nothing to what the worker already read.
#[inline]
pub(super) fn ack(w: &Pipeline, delivery: &mut Delivery, elapsed: Duration, ended: Stamp) {
    let s = &*w.shared;
    let env = delivery.envelope();
    s.plugs
        .recovery
        .on_success(&Success::new(env, &w.component, elapsed, ended));
    s.event_at(
        ended,
        &BusEvent::Acked {
            topic: &env.topic,
            component: &w.component,
            created_at: env.created_at,
            handler_time: elapsed,
            attempt: env.attempt,
        },
    );
    if env.attempt > 1 {
        s.plugs
            .sink
            .recovered(&w.component, &env.topic, env.attempt);
    }
    delivery.ack_in_place();
    s.counters.inc(Counter::acked);
}

/// The policy asked for another attempt after `after` (after a reconnect
/// first, with `reconnect`): the transport redelivers it then; the worker
/// never sleeps. Once the transport is closed a retry has nowhere to wait,
/// and the delivery is settled as one that outlived the shutdown.
pub(super) fn retry(
    w: &Pipeline,
    mut delivery: Delivery,
    after: Duration,
    reconnect: bool,
    ended: Stamp,
) {
    let s = &*w.shared;
    if s.closed() {
        // A handler that outlived the shutdown deadline.
        after_close(s, &w.group, delivery);
        return;
    }
    if reconnect && let Err(e) = s.transport.reconnect() {
        tracing::warn!(error = %e, component = %w.component, "reconnect failed; retrying anyway");
    }
    let env = delivery.envelope_mut();
    let failed_attempt = env.attempt;
    env.attempt += 1;
    s.counters.inc(Counter::retried);
    s.event_at(
        ended,
        &BusEvent::Retried {
            topic: &delivery.envelope().topic,
            component: &w.component,
            attempt: failed_attempt,
            delay: after,
        },
    );
    delivery.nak(after);
}

/// The policy gave up on the delivery (and, with `escalate`, raises an
/// alert): the letter goes to the store, and the worker moves on while the
/// store makes it durable. The delivery is settled only once the store has
/// answered ([`AwaitingStore::answered`]), so a crash before then
/// redelivers it.
pub(super) fn dead_letter(
    w: &Pipeline,
    delivery: Delivery,
    report: ErrorReport,
    reason: DeadLetterReason,
    escalate: bool,
) {
    let mut letter = DeadLetter::new(
        delivery.envelope().clone(),
        report,
        reason,
        &*w.component,
        &*w.group,
    );
    if w.shared.transport.durable() {
        // A run killed after the store took the letter and before the
        // delivery was settled leaves the delivery to the next run, which
        // dead-letters it again: the same id lets the store keep one.
        letter.id = DeadLetter::id_for(letter.envelope.id, &w.group);
    }
    let waiting = AwaitingStore {
        shared: Arc::clone(&w.shared),
        subscriber: Arc::clone(&w.subscriber),
        delivery,
        escalate,
    };
    w.shared.plugs.dlq.push_then(
        letter,
        Box::new(move |result, letter| waiting.answered(Answer::from(result), letter)),
    );
}

/// What the dead-letter store answered about one letter, as the bus acts on
/// it. Every refusal (the store full, read-only, poisoned by an earlier
/// failed commit, an I/O error) is acted on alike: the message is kept.
#[derive(Debug)]
pub(super) enum Answer {
    /// The letter is durable (per the store's fsync policy).
    Stored,
    /// The store refused it; nothing may be assumed stored.
    Refused(DlqError),
}

impl From<Result<LetterId, DlqError>> for Answer {
    fn from(result: Result<LetterId, DlqError>) -> Self {
        match result {
            Ok(_) => Answer::Stored,
            Err(error) => Answer::Refused(error),
        }
    }
}

/// A failed delivery whose letter is with the store: settled when the
/// store answers, on whichever thread it answers on.
pub(super) struct AwaitingStore {
    shared: Arc<Shared>,
    subscriber: Arc<Subscriber>,
    delivery: Delivery,
    escalate: bool,
}

impl AwaitingStore {
    /// Stored: the delivery is terminated (never redelivered). Refused: the
    /// message is kept, with this attempt's record undone, redelivered after
    /// the DLQ retry delay while its subscriber pauses as long.
    pub(super) fn answered(self, answer: Answer, letter: DeadLetter) {
        let Self {
            shared,
            subscriber,
            mut delivery,
            escalate,
        } = self;
        match answer {
            Answer::Stored => {
                letter_stored(&shared, &letter);
                if escalate {
                    tracing::error!(message_id = %letter.envelope.id, component = %letter.component, category = %letter.report.category, escalated = true, "failure escalated");
                    shared.event(&BusEvent::Escalated {
                        report: &letter.report,
                    });
                }
                delivery.term();
            }
            Answer::Refused(error) => {
                letter_refused(&shared, &letter, &error);
                if shared.closed() {
                    after_close(&shared, &letter.group, delivery);
                    return;
                }
                delivery.envelope_mut().history.pop();
                let wait = shared.config.dlq_retry_delay;
                delivery.nak(wait);
                subscriber.pause_for(wait);
            }
        }
    }
}

/// The policy discarded the delivery (only a policy the user configured
/// does): logged, counted, never redelivered.
pub(super) fn discard_delivery(w: &Pipeline, delivery: Delivery, reason: &str, ended: Stamp) {
    discard(
        &w.shared,
        &w.component,
        delivery.envelope(),
        reason,
        Some(ended),
    );
    delivery.term();
}

/// Counts and logs a discard by a configured policy (a recovery policy,
/// an overflow policy, unrouted publishes), stamped `at` if the caller has
/// read the clock.
pub(super) fn discard(
    s: &Shared,
    component: &str,
    env: &Envelope,
    reason: &str,
    at: Option<Stamp>,
) {
    tracing::warn!(message_id = %env.id, topic = %env.topic, component, reason, "message discarded by policy");
    s.counters.inc(Counter::discarded_by_policy);
    let event = BusEvent::Discarded {
        topic: &env.topic,
        component,
        reason,
    };
    match at {
        Some(at) => s.event_at(at, &event),
        None => s.event(&event),
    }
}

/// A publish refused before any group got a copy: the publisher keeps the
/// message, handed back in `err`.
pub(super) fn rejected(s: &Shared, topic: &str, err: PublishError) -> PublishError {
    s.counters.inc(Counter::rejected_at_publish);
    s.event(&BusEvent::Rejected {
        topic,
        reason: err.kind(),
    });
    err
}

/// Settles what a publish's receipt handed back: copies a full queue
/// refused, by their group's overflow policy; evicted messages, discarded;
/// copies enqueued as the transport closed, dead-lettered like what close
/// returned.
#[cold]
pub(super) fn leftovers(s: &Shared, leftovers: Leftovers) {
    for (group, env) in leftovers.closed {
        late(s, &group, env);
    }
    for (group, env) in leftovers.full {
        match s.overflow_policy(&env.topic, &group) {
            Some(OverflowPolicy::DiscardLowest) => discard(
                s,
                &group,
                &env,
                "queue full: discarded under the discard_lowest overflow policy",
                None,
            ),
            // DeadLetter, and any group the bus did not subscribe itself:
            // a copy the transport accepted is never dropped unrecorded.
            _ => spill(s, &group, env),
        }
    }
    for (group, env) in leftovers.evicted {
        discard(
            s,
            &group,
            &env,
            "queue full: discarded under the discard_lowest overflow policy",
            None,
        );
    }
}

/// A copy refused by a full queue under the DeadLetter overflow policy.
fn spill(s: &Shared, group: &str, env: Envelope) {
    let class = Classification::new(ErrorCategory::QueueOverflow, Severity::High);
    let mut report = ErrorReport::new(class, group, format!("queue of group {group:?} is full"))
        .with_topic(env.topic.as_str())
        .with_message_id(env.id);
    report.record_recovery(false, Some(false), "dead-letter: queue_overflow");
    s.plugs.sink.record(&report);
    s.event(&BusEvent::Failed { report: &report });
    let letter = DeadLetter::new(env, report, DeadLetterReason::QueueOverflow, group, group);
    let Err(leftover) = store_letter(s, letter) else {
        return;
    };
    // The copy was accepted; with the DLQ refusing, it goes back into its
    // own group's queue past the bound rather than be lost, as far as the
    // transport's own limit for that allows. Past it, or once the transport
    // is closed, it is discarded: never handed back to the application, so
    // never counted as returned.
    if let Err(env) = s.transport.requeue(group, leftover.envelope) {
        let reason = if s.closed() {
            "queue full, the dead-letter store refuses, and the transport is closed"
        } else {
            "queue full past its limit for re-queued copies, and the dead-letter store refuses"
        };
        discard(s, group, &env, reason, None);
    }
}

/// Dead-letters a message the transport handed back at close (reason
/// shutdown); if the store refuses, it is handed back to the application
/// (the shutdown report's `unsaved`) and counted as returned.
pub(super) fn at_shutdown(s: &Shared, group: &str, env: Envelope) -> Result<(), Envelope> {
    let class = Classification::new(ErrorCategory::MessageProcessing, Severity::Medium);
    let mut report = ErrorReport::new(
        class,
        group,
        "the bus shut down before the message was delivered",
    )
    .with_topic(env.topic.as_str())
    .with_message_id(env.id)
    .with_attempt(env.attempt);
    report.record_recovery(false, Some(false), "dead-letter: shutdown");
    let letter = DeadLetter::new(env, report, DeadLetterReason::Shutdown, group, group);
    store_letter(s, letter).map_err(|letter| {
        s.counters.inc(Counter::returned_at_shutdown);
        letter.envelope
    })
}

/// At shutdown, on a durable transport: the `n` deliveries not settled now
/// stay in the broker, owed to the next run. Counted once, as pending.
pub(super) fn left_in_broker(s: &Shared, n: u64) {
    s.counters.add(Counter::pending, n);
}

/// [`at_shutdown`] for a message that reaches the end after the shutdown
/// report was made (no `unsaved` list to hand it back in): if the store
/// refuses, it is counted as returned and logged with its id.
pub(super) fn late(s: &Shared, group: &str, env: Envelope) {
    if let Err(env) = at_shutdown(s, group, env) {
        tracing::error!(message_id = %env.id, group, "a message settled during or after shutdown could not be dead-lettered; it is counted as returned_at_shutdown and dropped");
    }
}

/// A delivery that can no longer be redelivered because the bus has shut
/// down (its handler outlived the deadline): dead-lettered with reason
/// shutdown, or, if the store refuses, counted as returned and logged.
pub(super) fn after_close(s: &Shared, group: &str, delivery: Delivery) {
    late(s, group, delivery.envelope().clone());
    delivery.term();
}

/// Pushes a letter and waits for the store's answer (publish and shutdown
/// paths). On a refusal the letter is handed back so the caller keeps the
/// message.
fn store_letter(s: &Shared, letter: DeadLetter) -> Result<(), Box<DeadLetter>> {
    match s.plugs.dlq.push(&letter) {
        Ok(_) => {
            letter_stored(s, &letter);
            Ok(())
        }
        Err(error) => {
            letter_refused(s, &letter, &error);
            Err(Box::new(letter))
        }
    }
}

/// Books a letter the store accepted.
fn letter_stored(s: &Shared, letter: &DeadLetter) {
    s.counters.inc(Counter::dead_lettered);
    if s.dlq_failing.swap(false, Ordering::AcqRel) {
        tracing::warn!(component = %letter.component, "dead-letter store accepts writes again");
        s.event(&BusEvent::DlqRecovered {
            component: &letter.component,
        });
    }
    s.event(&BusEvent::DeadLettered {
        topic: &letter.envelope.topic,
        component: &letter.component,
        category: letter.report.category,
        reason: &letter.reason,
    });
}

/// Books a letter the store refused: the store is unhealthy, the message stays.
fn letter_refused(s: &Shared, letter: &DeadLetter, error: &DlqError) {
    s.counters.inc(Counter::dlq_write_failures);
    // Said once per outage (a full disk refuses every write): the count
    // is in dlq_write_failures and health is critical until a write works.
    if s.dlq_failing.swap(true, Ordering::AcqRel) {
        tracing::debug!(%error, message_id = %letter.envelope.id, "dead-letter store refused a write; the message stays queued");
    } else {
        tracing::error!(%error, message_id = %letter.envelope.id, "dead-letter store refused a write; the message stays queued, and further refusals are counted (dlq_write_failures) until a write succeeds");
    }
    s.event(&BusEvent::DlqWriteFailed {
        component: &letter.component,
        error,
    });
}

/// The bus's dead-letter store, lent to its transport
/// ([`Transport::attach`](crate::Transport::attach)): a letter pushed here
/// goes to the bus's store and, once stored, is counted in the bus's ledger
/// as `dead_lettered` and reported to its observer, like a letter the bus
/// wrote itself. For deliveries a transport ends on its own, such as those
/// JetStream stopped redelivering after `MaxDeliver`.
///
/// It holds the bus weakly: once the bus is dropped, pushes are refused
/// with [`DlqError::Closed`] and the transport keeps the message.
#[derive(Clone)]
pub struct BusLetters(pub(super) Weak<Shared>);

impl std::fmt::Debug for BusLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusLetters")
            .field("bus_alive", &(self.0.strong_count() > 0))
            .finish()
    }
}

impl DeadLetterStore for BusLetters {
    fn push(&self, letter: &DeadLetter) -> Result<LetterId, DlqError> {
        let s = self.0.upgrade().ok_or(DlqError::Closed)?;
        match s.plugs.dlq.push(letter) {
            Ok(id) => {
                letter_stored(&s, letter);
                Ok(id)
            }
            Err(error) => {
                letter_refused(&s, letter, &error);
                Err(error)
            }
        }
    }
}
