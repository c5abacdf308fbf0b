//! The [`RecoveryPolicy`] plug: what to do with a failed delivery. The bus
//! asks; `bus-recovery` answers with per-category strategies and a budget.

use crate::time::Stamp;
use crate::{Envelope, dlq::DeadLetterReason};
use bus_errors::{ErrorCategory, ErrorReport};
use std::sync::Arc;
use std::time::Duration;

/// A failed delivery, as shown to a [`RecoveryPolicy`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Failure<'a> {
    /// The classified, sanitized report.
    pub report: &'a ErrorReport,
    /// The message. A policy may change it before a retry (for example, a
    /// fallback codec rewriting the payload, or a header noting it).
    pub envelope: &'a mut Envelope,
    /// The subscriber that failed.
    pub component: &'a str,
    /// How long the handler ran.
    pub elapsed: Duration,
    /// The policy's explanation of its decision (`"TIMEOUT attempt 2 of 3:
    /// retry in 3s"`). The pipeline records it as the report's
    /// `recovery_action` and in the attempt history; when unset,
    /// [`Decision::describe`] is used.
    pub note: Option<String>,
}

impl<'a> Failure<'a> {
    /// Bundles a failure (for policies' own tests and for transports).
    pub fn new(
        report: &'a ErrorReport,
        envelope: &'a mut Envelope,
        component: &'a str,
        elapsed: Duration,
    ) -> Self {
        Self {
            report,
            envelope,
            component,
            elapsed,
            note: None,
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
    fn decide(&self, failure: &mut Failure<'_>) -> Decision;

    /// Called once per successful delivery.
    fn on_success(&self, _success: &Success<'_>) {}

    /// The deadline to give `component`'s handler for its next delivery
    /// (adaptive timeouts), shown to handlers in their [`Message`](crate::Message).
    fn handler_deadline(&self, _component: &str) -> Option<Duration> {
        None
    }
}

impl<T: RecoveryPolicy + ?Sized> RecoveryPolicy for Arc<T> {
    fn decide(&self, failure: &mut Failure<'_>) -> Decision {
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
    fn decide(&self, failure: &mut Failure<'_>) -> Decision {
        if failure.envelope.retries() < self.max_retries {
            Decision::Retry { after: self.delay }
        } else {
            Decision::DeadLetter {
                reason: DeadLetterReason::RetriesExhausted,
            }
        }
    }
}

/// No retries: every failure goes to the dead-letter queue (the bus with error
/// handling switched off).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetry;

impl RecoveryPolicy for NoRetry {
    fn decide(&self, _failure: &mut Failure<'_>) -> Decision {
        Decision::DeadLetter {
            reason: DeadLetterReason::RetriesExhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn _obj_safe(_: Box<dyn RecoveryPolicy>) {}
}
