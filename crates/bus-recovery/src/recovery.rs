//! [`Recovery`]: the [`RecoveryPolicy`] built from this crate's parts.

use crate::budget::RetryBudget;
use crate::codec::{FALLBACK_HEADER, FallbackCodecs};
use crate::timeout::AdaptiveDeadlines;
use crate::{
    Exhausted, Jitter, RecoveryBuilder, RecoveryConfig, RetryPolicy, ScopeConfig, Strategy,
};
use bus_core::dlq::DeadLetterReason;
use bus_core::{Decision, Failure, RecoveryPolicy, Resolution, Success};
use bus_errors::ErrorCategory;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The header holding the last retry delay in nanoseconds (read by
/// decorrelated jitter, which grows from the previous delay).
pub const DELAY_HEADER: &str = "bus-retry-delay-ns";

/// Where the policy that decided came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicySource {
    /// A subscriber (component) override.
    Component,
    /// A topic override.
    Topic,
    /// The category's default.
    Category,
}

impl PolicySource {
    fn as_str(self) -> &'static str {
        match self {
            PolicySource::Component => "component policy",
            PolicySource::Topic => "topic policy",
            PolicySource::Category => "category policy",
        }
    }
}

#[derive(Debug, Default)]
struct Scope {
    all: Option<RetryPolicy>,
    by_category: [Option<RetryPolicy>; 8],
}

impl Scope {
    fn from_config(cfg: ScopeConfig) -> Self {
        let mut s = Scope {
            all: cfg.all,
            by_category: Default::default(),
        };
        for (c, p) in cfg.categories {
            s.by_category[c.index()] = Some(p);
        }
        s
    }

    fn get(&self, category: ErrorCategory) -> Option<&RetryPolicy> {
        self.by_category[category.index()]
            .as_ref()
            .or(self.all.as_ref())
    }
}

/// Per-category recovery with retry budget, adaptive deadlines and fallback
/// codecs: the [`RecoveryPolicy`] this crate provides. See the
/// [crate docs](crate) for an example.
#[derive(Debug)]
pub struct Recovery {
    categories: [RetryPolicy; 8],
    topics: HashMap<String, Scope>,
    components: HashMap<String, Scope>,
    budget: Option<RetryBudget>,
    deadlines: AdaptiveDeadlines,
    codecs: FallbackCodecs,
    rng: Mutex<fastrand::Rng>,
}

impl Default for Recovery {
    /// The defaults of [`RetryPolicy::for_category`], the default budget, the
    /// system clock and a random seed.
    fn default() -> Self {
        Self::assemble(RecoveryBuilder::default())
    }
}

impl Recovery {
    /// Starts a builder with the defaults.
    pub fn builder() -> RecoveryBuilder {
        RecoveryBuilder::default()
    }

    /// Builds from a (deserialized) configuration, validating it first.
    pub fn from_config(config: RecoveryConfig) -> Result<Self, crate::ConfigError> {
        Self::builder().config(config).build()
    }

    pub(crate) fn assemble(b: RecoveryBuilder) -> Self {
        let RecoveryConfig {
            seed,
            budget,
            deadlines,
            mut categories,
            topics,
            components,
        } = b.config;
        let categories = ErrorCategory::ALL.map(|c| {
            categories
                .remove(&c)
                .unwrap_or_else(|| RetryPolicy::for_category(c))
        });
        let rng = seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        Self {
            categories,
            topics: topics
                .into_iter()
                .map(|(k, v)| (k, Scope::from_config(v)))
                .collect(),
            components: components
                .into_iter()
                .map(|(k, v)| (k, Scope::from_config(v)))
                .collect(),
            budget: budget.map(|cfg| RetryBudget::new(cfg, b.clock)),
            deadlines: AdaptiveDeadlines::new(deadlines, b.component_deadlines),
            codecs: b.codecs,
            rng: Mutex::new(rng),
        }
    }

    /// The policy that applies to a failure of `category` in `component` on
    /// `topic`, and where it came from.
    pub fn policy_for(
        &self,
        component: &str,
        topic: &str,
        category: ErrorCategory,
    ) -> (&RetryPolicy, PolicySource) {
        if let Some(p) = self.components.get(component).and_then(|s| s.get(category)) {
            return (p, PolicySource::Component);
        }
        if let Some(p) = self.topics.get(topic).and_then(|s| s.get(category)) {
            return (p, PolicySource::Topic);
        }
        (&self.categories[category.index()], PolicySource::Category)
    }

    /// The retry budget, if one is configured.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    /// The adaptive handler deadlines.
    pub fn deadlines(&self) -> &AdaptiveDeadlines {
        &self.deadlines
    }

    /// Decides like [`RecoveryPolicy::decide`] (which also logs the
    /// decision): the resolution always carries its note, and before a
    /// retry may rewrite the message: a fallback codec's payload with
    /// [`FALLBACK_HEADER`], decorrelated jitter's [`DELAY_HEADER`].
    pub fn explain(&self, failure: &Failure<'_>) -> Resolution {
        let category = failure.category();
        let topic = failure.envelope.topic.as_str().to_owned();
        let (policy, source) = self.policy_for(failure.component, &topic, category);
        let retries = failure.envelope.retries();
        let mut note = format!(
            "{category} attempt {} of {} ({})",
            failure.attempt(),
            policy.max_retries.saturating_add(1),
            source.as_str()
        );
        if category == ErrorCategory::Timeout {
            if let Some(d) = self.deadlines.on_timeout(failure.component) {
                let _ = write!(note, ", handler deadline now {d:?}");
            }
        }
        let give_up = |note: String, reason: DeadLetterReason, why: &str| {
            let decision = match policy.exhausted {
                Exhausted::DeadLetter => Decision::DeadLetter { reason },
                Exhausted::Escalate => Decision::Escalate { reason },
                Exhausted::Discard => Decision::Discard {
                    reason: format!("{note}: {why} (discard configured)"),
                },
            };
            let note = format!("{note}: {}; {why}", decision.describe());
            Resolution::new(decision).with_note(note)
        };
        if !policy.retries(failure.report) {
            return give_up(
                note,
                DeadLetterReason::NotRetryable,
                "retry_on rejected the error",
            );
        }
        if policy.strategy == Strategy::FallbackCodec {
            if let Some(used) = failure.envelope.headers.get(FALLBACK_HEADER) {
                let why = format!("poison: still failing after fallback codec {used:?}");
                return give_up(note, DeadLetterReason::NotRetryable, &why);
            }
        }
        if retries >= policy.max_retries {
            return if policy.max_retries == 0 {
                give_up(
                    note,
                    DeadLetterReason::NotRetryable,
                    "category is not retryable",
                )
            } else {
                let reason = match category {
                    ErrorCategory::QueueOverflow => DeadLetterReason::QueueOverflow,
                    _ => DeadLetterReason::RetriesExhausted,
                };
                let why = format!("all {} retries failed", policy.max_retries);
                give_up(note, reason, &why)
            };
        }
        let transcoded = if policy.strategy == Strategy::FallbackCodec {
            let Some(codec) = self.codecs.get(&topic) else {
                let why = format!("poison: no fallback codec for topic {topic:?}");
                return give_up(note, DeadLetterReason::NotRetryable, &why);
            };
            match codec.transcode(&failure.envelope.payload) {
                Ok(bytes) => Some((codec.name().to_owned(), bytes)),
                Err(e) => {
                    let why = format!("poison: fallback codec {:?} failed: {e}", codec.name());
                    return give_up(note, DeadLetterReason::NotRetryable, &why);
                }
            }
        } else {
            None
        };
        if let Some(budget) = &self.budget {
            if !budget.try_withdraw() {
                let decision = Decision::DeadLetter {
                    reason: DeadLetterReason::RetryBudgetExhausted,
                };
                let note = format!(
                    "{note}: {}; retries shed to protect the system",
                    decision.describe()
                );
                return Resolution::new(decision).with_note(note);
            }
        }
        // The decision is filled in below, once the delay is known.
        let mut resolution = Resolution::new(Decision::Retry {
            after: Duration::ZERO,
        });
        if let Some((name, bytes)) = transcoded {
            let _ = write!(note, ", payload transcoded with fallback codec {name:?}");
            resolution = resolution
                .with_payload(bytes)
                .with_header(FALLBACK_HEADER, name);
        }
        let after = self.delay(policy, retries, failure);
        if policy.backoff.jitter == Jitter::Decorrelated {
            resolution = resolution.with_header(DELAY_HEADER, after.as_nanos().to_string());
        }
        resolution.decision = match policy.strategy {
            Strategy::Reconnect => Decision::Reconnect { after },
            Strategy::Retry | Strategy::FallbackCodec => Decision::Retry { after },
        };
        let _ = write!(note, ": {}", resolution.decision.describe());
        resolution.with_note(note)
    }

    fn delay(&self, policy: &RetryPolicy, retries: u32, failure: &Failure<'_>) -> Duration {
        let decorrelated = policy.backoff.jitter == Jitter::Decorrelated;
        let previous = decorrelated
            .then(|| failure.envelope.headers.get(DELAY_HEADER))
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_nanos);
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        policy.backoff.delay(retries, previous, &mut rng)
    }
}

impl RecoveryPolicy for Recovery {
    fn decide(&self, failure: &Failure<'_>) -> Resolution {
        let resolution = self.explain(failure);
        tracing::debug!(
            component = failure.component,
            topic = failure.envelope.topic.as_str(),
            category = failure.report.category.as_str(),
            attempt = failure.attempt(),
            decision = %resolution.decision.describe(),
            "{}",
            resolution.note()
        );
        resolution
    }

    fn on_success(&self, success: &Success<'_>) {
        if let Some(b) = &self.budget {
            b.deposit_at(success.at);
        }
        self.deadlines.on_success(success.component);
    }

    fn handler_deadline(&self, component: &str) -> Option<Duration> {
        self.deadlines.deadline(component)
    }
}
