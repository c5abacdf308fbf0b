//! [`RetryPolicy`]: how one category (or one topic's, or one subscriber's
//! failures) is retried, and what happens when retrying stops.

use crate::{Backoff, ConfigError, Jitter};
use bus_errors::{ErrorCategory, ErrorReport};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How each retry is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// Redeliver after the backoff ([`Decision::Retry`](bus_core::Decision::Retry)).
    #[default]
    Retry,
    /// Ask the transport to reconnect, then redeliver after the backoff
    /// ([`Decision::Reconnect`](bus_core::Decision::Reconnect)).
    Reconnect,
    /// Retry only after transcoding the payload with the topic's fallback
    /// codec, and only once per payload; otherwise the payload is poison and
    /// is dead-lettered at once.
    FallbackCodec,
}

/// What happens when a failure will not be retried (retries spent, or the
/// error is not retryable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Exhausted {
    /// Move it to the dead-letter queue.
    #[default]
    DeadLetter,
    /// Move it to the dead-letter queue and raise an alert.
    Escalate,
    /// Drop it (logged and counted). Only ever by explicit configuration.
    Discard,
}

/// Decides whether an error may be retried at all.
pub type RetryPredicate = Arc<dyn Fn(&ErrorReport) -> bool + Send + Sync>;

/// How failures are retried.
///
/// ```
/// use bus_errors::{ErrorCategory, Severity};
/// use bus_recovery::{Backoff, Exhausted, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::new(4, Backoff::constant(Duration::from_millis(200)))
///     .on_exhausted(Exhausted::Escalate)
///     .retry_on(|report| report.severity < Severity::Critical);
/// assert_eq!(policy.max_retries, 4);
/// assert_eq!(RetryPolicy::for_category(ErrorCategory::Authentication).max_retries, 0);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retried).
    pub max_retries: u32,
    /// Delay before each retry.
    #[serde(default = "no_delay")]
    pub backoff: Backoff,
    /// How each retry is carried out.
    #[serde(default)]
    pub strategy: Strategy,
    /// What happens when retrying stops.
    #[serde(default)]
    pub exhausted: Exhausted,
    /// If not empty, an error is retried only if one of these accepts it.
    #[serde(skip)]
    retry_on: Vec<RetryPredicate>,
}

fn no_delay() -> Backoff {
    Backoff::constant(Duration::ZERO)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl RetryPolicy {
    /// `max_retries` retries with `backoff`, then dead-letter.
    pub fn new(max_retries: u32, backoff: Backoff) -> Self {
        Self {
            max_retries,
            backoff,
            strategy: Strategy::Retry,
            exhausted: Exhausted::DeadLetter,
            retry_on: Vec::new(),
        }
    }

    /// Never retry; `exhausted` applies at once.
    pub fn never(exhausted: Exhausted) -> Self {
        Self::new(0, no_delay()).on_exhausted(exhausted)
    }

    /// Sets the strategy.
    #[must_use]
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets what happens when retrying stops.
    #[must_use]
    pub fn on_exhausted(mut self, exhausted: Exhausted) -> Self {
        self.exhausted = exhausted;
        self
    }

    /// Adds a predicate: once any is set, only errors one of them accepts are
    /// retried; the others go straight to the `exhausted` outcome.
    #[must_use]
    pub fn retry_on(
        mut self,
        predicate: impl Fn(&ErrorReport) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_on.push(Arc::new(predicate));
        self
    }

    /// Whether `report` may be retried under the `retry_on` predicates.
    pub fn retries(&self, report: &ErrorReport) -> bool {
        self.retry_on.is_empty() || self.retry_on.iter().any(|p| p(report))
    }

    /// The defaults taken from the original requirements:
    ///
    /// | category | retries | backoff | each retry | then |
    /// |---|---|---|---|---|
    /// | CONNECTION | 3 | 2 s x2 up to 30 s, full jitter | reconnect | dead-letter |
    /// | MESSAGE_PROCESSING | 2 | 1 s x2 up to 30 s | retry | dead-letter |
    /// | TIMEOUT | 2 | 1.5 s x2 up to 30 s (deadline grows x1.5) | retry | dead-letter |
    /// | SERIALIZATION | 1 | 0.5 s | fallback codec, else poison | dead-letter |
    /// | QUEUE_OVERFLOW | 2 | 1 s x2 up to 30 s, equal jitter | retry | dead-letter |
    /// | AUTHENTICATION | 0 | - | - | escalate |
    /// | RESOURCE_EXHAUSTION | 2 | 2 s x2 up to 60 s | retry | escalate |
    /// | CONFIGURATION | 0 | - | - | escalate |
    pub fn for_category(category: ErrorCategory) -> Self {
        let ms = Duration::from_millis;
        match category {
            ErrorCategory::Connection => Self::new(
                3,
                Backoff::exponential(secs(2), 2.0, secs(30)).with_jitter(Jitter::Full),
            )
            .strategy(Strategy::Reconnect),
            ErrorCategory::MessageProcessing => {
                Self::new(2, Backoff::exponential(secs(1), 2.0, secs(30)))
            }
            ErrorCategory::Timeout => Self::new(2, Backoff::exponential(ms(1_500), 2.0, secs(30))),
            ErrorCategory::Serialization => {
                Self::new(1, Backoff::constant(ms(500))).strategy(Strategy::FallbackCodec)
            }
            ErrorCategory::QueueOverflow => Self::new(
                2,
                Backoff::exponential(secs(1), 2.0, secs(30)).with_jitter(Jitter::Equal),
            ),
            ErrorCategory::ResourceExhaustion => {
                Self::new(2, Backoff::exponential(secs(2), 2.0, secs(60)))
                    .on_exhausted(Exhausted::Escalate)
            }
            ErrorCategory::Authentication | ErrorCategory::Configuration => {
                Self::never(Exhausted::Escalate)
            }
        }
    }

    /// Checks the backoff (keys are prefixed with `backoff.`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.backoff.validate().map_err(|e| e.within("backoff"))
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("strategy", &self.strategy)
            .field("exhausted", &self.exhausted)
            .field("retry_on", &self.retry_on.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_errors::{Classification, Severity};

    #[test]
    fn predicates_filter_which_errors_are_retried() {
        let report = |sev| {
            ErrorReport::new(
                Classification::new(ErrorCategory::MessageProcessing, sev),
                "c",
                "m",
            )
        };
        let any = RetryPolicy::new(1, no_delay());
        assert!(any.retries(&report(Severity::Critical)));
        let p = any
            .retry_on(|r| r.severity == Severity::Low)
            .retry_on(|r| r.severity == Severity::Medium);
        assert!(p.retries(&report(Severity::Low)));
        assert!(p.retries(&report(Severity::Medium)));
        assert!(!p.retries(&report(Severity::High)));
    }

    #[test]
    fn policies_deserialize_with_defaults_and_reject_unknown_keys() {
        let p: RetryPolicy = serde_json::from_str(
            r#"{"max_retries":5,"backoff":{"kind":"linear","base":"1s","step":"500ms","cap":"3s"},
                "strategy":"reconnect","exhausted":"escalate"}"#,
        )
        .unwrap();
        assert_eq!(p.max_retries, 5);
        assert_eq!(p.strategy, Strategy::Reconnect);
        assert_eq!(p.exhausted, Exhausted::Escalate);
        assert_eq!(p.backoff.nominal(4), secs(3));
        let minimal: RetryPolicy = serde_json::from_str(r#"{"max_retries":0}"#).unwrap();
        assert_eq!(minimal.exhausted, Exhausted::DeadLetter);
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_retries":1,"oops":1}"#).is_err());
    }

    #[test]
    fn every_default_is_valid() {
        for c in ErrorCategory::ALL {
            RetryPolicy::for_category(c).validate().unwrap();
        }
    }
}
