//! The [`RecoveryPolicy`] plug: what to do with a failed delivery. The bus
//! asks; `bus-recovery` answers with per-category strategies and a budget.

use crate::time::Stamp;
use crate::{Envelope, dlq::DeadLetterReason};
use bus_errors::{ErrorCategory, ErrorReport};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// A failed delivery, as shown to a [`RecoveryPolicy`]. Read-only: a
/// policy that wants the message changed before a retry says so in its
/// [`Resolution`]'s [`Rewrite`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Failure<'a> {
    /// The classified, sanitized report.
    pub report: &'a ErrorReport,
    /// The message, as its handler saw it.
    pub envelope: &'a Envelope,
    /// The subscriber that failed.
    pub component: &'a str,
    /// How long the handler ran.
    pub elapsed: Duration,
}

impl<'a> Failure<'a> {
    /// Bundles a failure (for policies' own tests and for transports).
    pub fn new(
        report: &'a ErrorReport,
        envelope: &'a Envelope,
        component: &'a str,
        elapsed: Duration,
    ) -> Self {
        Self {
            report,
            envelope,
            component,
            elapsed,
        }
    }

    /// The attempt that failed (1 for the first delivery).
    pub fn attempt(&self) -> u32 {
        self.envelope.attempt
    }

    /// The failure's category.
    pub fn category(&self) -> ErrorCategory {
        self.report.category
    }
}

/// What a [`RecoveryPolicy`] decided about a failure, and what it changes:
/// the bus applies the [`Rewrite`] to the message, then settles it by the
/// [`Decision`]. A plain decision converts (`Decision::Retry { .. }.into()`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resolution {
    /// What happens to the message.
    pub decision: Decision,
    /// What changes in it first, and why.
    pub rewrite: Rewrite,
}

/// The changes a [`Resolution`] makes to the message before it is settled
/// (a fallback codec's new payload, a header the next attempt reads), and
/// the policy's explanation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rewrite {
    /// A new payload, replacing the message's.
    pub payload: Option<Bytes>,
    /// Headers to set (replacing any of the same name), in order.
    pub headers: Vec<(String, String)>,
    /// The policy's explanation of its decision (`"TIMEOUT attempt 2 of 3:
    /// retry in 3s"`). The pipeline records it as the report's
    /// `recovery_action` and in the attempt history; when unset,
    /// [`Decision::describe`] is used.
    pub note: Option<String>,
}

impl Rewrite {
    /// Whether it changes the message (a note alone does not).
    pub fn changes_message(&self) -> bool {
        self.payload.is_some() || !self.headers.is_empty()
    }
}

impl Resolution {
    /// `decision`, changing nothing.
    pub fn new(decision: Decision) -> Self {
        Self {
            decision,
            rewrite: Rewrite::default(),
        }
    }

    /// Replaces the payload.
    #[must_use]
    pub fn with_payload(mut self, payload: Bytes) -> Self {
        self.rewrite.payload = Some(payload);
        self
    }

    /// Sets a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.rewrite.headers.push((name.into(), value.into()));
        self
    }

    /// Explains the decision.
    #[must_use]
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.rewrite.note = Some(note.into());
        self
    }

    /// The explanation: the note, or else [`Decision::describe`].
    pub fn note(&self) -> String {
        self.rewrite
            .note
            .clone()
            .unwrap_or_else(|| self.decision.describe())
    }

    /// Applies the rewrite to `envelope` and returns the decision with its
    /// explanation.
    pub fn apply(self, envelope: &mut Envelope) -> (Decision, String) {
        let Rewrite {
            payload,
            headers,
            note,
        } = self.rewrite;
        if let Some(payload) = payload {
            envelope.payload = payload;
        }
        envelope.headers.extend(headers);
        let note = note.unwrap_or_else(|| self.decision.describe());
        (self.decision, note)
    }
}

impl From<Decision> for Resolution {
    fn from(decision: Decision) -> Self {
        Self::new(decision)
    }
}

/// A successful delivery, as shown to a [`RecoveryPolicy`] (retry budgets earn
/// from these; adaptive timeouts shrink on them).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Success<'a> {
    /// The message.
    pub envelope: &'a Envelope,
    /// The subscriber.
    pub component: &'a str,
    /// How long the handler ran.
    pub elapsed: Duration,
    /// When it returned, on the bus's clock.
    pub at: Stamp,
}

impl<'a> Success<'a> {
    /// Bundles a success: the handler ran `elapsed` and returned `at`.
    pub fn new(envelope: &'a Envelope, component: &'a str, elapsed: Duration, at: Stamp) -> Self {
        Self {
            envelope,
            component,
            elapsed,
            at,
        }
    }
}

/// What to do with a failed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Redeliver after `after` (scheduled on the transport; no thread sleeps).
    Retry {
        /// The delay.
        after: Duration,
    },
    /// Ask the transport to reconnect, then redeliver after `after`.
    Reconnect {
        /// The delay.
        after: Duration,
    },
    /// Move to the dead-letter queue.
    DeadLetter {
        /// Why.
        reason: DeadLetterReason,
    },
    /// Move to the dead-letter queue and raise an alert.
    Escalate {
        /// Why.
        reason: DeadLetterReason,
    },
    /// Drop the message, logged and counted in `discarded_by_policy`. Only a
    /// policy the user configured may return this.
    Discard {
        /// Why (logged).
        reason: String,
    },
}

impl Decision {
    /// A one-line description for the report's `recovery_action`.
    pub fn describe(&self) -> String {
        match self {
            Decision::Retry { after } => format!("retry in {after:?}"),
            Decision::Reconnect { after } => format!("reconnect, then retry in {after:?}"),
            Decision::DeadLetter { reason } => format!("dead-letter: {reason}"),
            Decision::Escalate { reason } => format!("dead-letter and escalate: {reason}"),
            Decision::Discard { reason } => format!("discard: {reason}"),
        }
    }
}

/// Decides what happens to a failed delivery.
pub trait RecoveryPolicy: Send + Sync {
    /// Called once per failed delivery, on the worker thread: must not block.
    fn decide(&self, failure: &Failure<'_>) -> Resolution;

    /// Called once per successful delivery.
    fn on_success(&self, _success: &Success<'_>) {}

    /// The deadline to give `component`'s handler for its next delivery
    /// (adaptive timeouts), shown to handlers in their [`Message`](crate::Message).
    fn handler_deadline(&self, _component: &str) -> Option<Duration> {
        None
    }
}

impl<T: RecoveryPolicy + ?Sized> RecoveryPolicy for Arc<T> {
    fn decide(&self, failure: &Failure<'_>) -> Resolution {
        (**self).decide(failure)
    }
    fn on_success(&self, success: &Success<'_>) {
        (**self).on_success(success)
    }
    fn handler_deadline(&self, component: &str) -> Option<Duration> {
        (**self).handler_deadline(component)
    }
}

/// The core's default: retry every failure up to `max_retries` times after a
/// fixed delay, then dead-letter. `bus-recovery` replaces it with
/// per-category strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleRetry {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before each retry.
    pub delay: Duration,
}

impl Default for SimpleRetry {
    fn default() -> Self {
        Self {
            max_retries: 2,
            delay: Duration::from_millis(100),
        }
    }
}

impl RecoveryPolicy for SimpleRetry {
    fn decide(&self, failure: &Failure<'_>) -> Resolution {
        if failure.envelope.retries() < self.max_retries {
            Decision::Retry { after: self.delay }.into()
        } else {
            Decision::DeadLetter {
                reason: DeadLetterReason::RetriesExhausted,
            }
            .into()
        }
    }
}

/// No retries: every failure goes to the dead-letter queue (the bus with error
/// handling switched off), with the reason
/// [`NotRetried`](DeadLetterReason::NotRetried): no retry was tried, so none
/// was exhausted.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetry;

impl RecoveryPolicy for NoRetry {
    fn decide(&self, _failure: &Failure<'_>) -> Resolution {
        Decision::DeadLetter {
            reason: DeadLetterReason::NotRetried,
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn _obj_safe(_: Box<dyn RecoveryPolicy>) {}

    #[test]
    fn a_resolution_rewrites_the_message_then_names_its_decision() {
        let topic = crate::Topic::new("t").unwrap_or_else(|e| unreachable!("{e}"));
        let mut env = Envelope::new(topic, &b"v1"[..]).with_header("codec", "v1");
        let retry = Decision::Retry {
            after: Duration::from_secs(1),
        };
        let (decision, note) = Resolution::new(retry.clone())
            .with_payload(Bytes::from_static(b"v2"))
            .with_header("codec", "v2")
            .apply(&mut env);
        assert_eq!(decision, retry);
        assert_eq!(
            note,
            retry.describe(),
            "no note: the decision describes itself"
        );
        assert_eq!(&env.payload[..], b"v2");
        assert_eq!(env.headers["codec"], "v2");
        let (_, note) = Resolution::from(retry).with_note("why").apply(&mut env);
        assert_eq!(note, "why");
    }
}
