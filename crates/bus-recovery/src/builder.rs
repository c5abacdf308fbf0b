//! [`RecoveryBuilder`]: a [`Recovery`] assembled in code.

use crate::codec::{FallbackCodec, FallbackCodecs};
use crate::{
    BudgetConfig, ConfigError, DeadlineConfig, Exhausted, Recovery, RecoveryConfig, RetryPolicy,
};
use bus_core::time::{SharedClock, system_clock};
use bus_errors::{ErrorCategory, HandlerError};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;

/// Builds a [`Recovery`]; start with [`Recovery::builder`].
#[derive(Debug)]
#[must_use]
pub struct RecoveryBuilder {
    pub(crate) config: RecoveryConfig,
    pub(crate) codecs: FallbackCodecs,
    pub(crate) clock: SharedClock,
    pub(crate) component_deadlines: HashMap<String, Duration>,
    pub(crate) discard_on: Vec<ErrorCategory>,
}

impl Default for RecoveryBuilder {
    fn default() -> Self {
        Self {
            config: RecoveryConfig::default(),
            codecs: FallbackCodecs::default(),
            clock: system_clock(),
            component_deadlines: HashMap::new(),
            discard_on: Vec::new(),
        }
    }
}

impl RecoveryBuilder {
    /// Starts from `config` (replacing everything set so far except codecs,
    /// clock and component deadlines).
    pub fn config(mut self, config: RecoveryConfig) -> Self {
        self.config = config;
        self
    }

    /// Replaces the default policy of `category`.
    pub fn category(mut self, category: ErrorCategory, policy: RetryPolicy) -> Self {
        self.config.categories.insert(category, policy);
        self
    }

    /// A policy for `topic`: for one category, or for all (`None`).
    pub fn topic(
        mut self,
        topic: impl Into<String>,
        category: Option<ErrorCategory>,
        policy: RetryPolicy,
    ) -> Self {
        let scope = self.config.topics.entry(topic.into()).or_default();
        match category {
            Some(c) => {
                scope.categories.insert(c, policy);
            }
            None => scope.all = Some(policy),
        }
        self
    }

    /// A policy for the subscriber `component`: for one category, or for all
    /// (`None`). Beats topic and category policies.
    pub fn component(
        mut self,
        component: impl Into<String>,
        category: Option<ErrorCategory>,
        policy: RetryPolicy,
    ) -> Self {
        let scope = self.config.components.entry(component.into()).or_default();
        match category {
            Some(c) => {
                scope.categories.insert(c, policy);
            }
            None => scope.all = Some(policy),
        }
        self
    }

    /// Sets the retry budget.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.config.budget = Some(budget);
        self
    }

    /// Switches the retry budget off: only `max_retries` limits retries.
    pub fn no_budget(mut self) -> Self {
        self.config.budget = None;
        self
    }

    /// Sets the adaptive deadline configuration.
    pub fn deadlines(mut self, deadlines: DeadlineConfig) -> Self {
        self.config.deadlines = deadlines;
        self
    }

    /// The base handler deadline of `component`.
    pub fn component_deadline(mut self, component: impl Into<String>, base: Duration) -> Self {
        self.component_deadlines.insert(component.into(), base);
        self
    }

    /// Registers a fallback codec for `topic` (SERIALIZATION strategy).
    pub fn fallback_codec(
        mut self,
        topic: impl Into<String>,
        name: impl Into<String>,
        transcode: impl Fn(&[u8]) -> Result<Bytes, HandlerError> + Send + Sync + 'static,
    ) -> Self {
        self.codecs
            .insert(topic, FallbackCodec::new(name, transcode));
        self
    }

    /// Seeds the jitter generator (for reproducible schedules).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// The clock of the retry budget.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Opts `category` into discarding: when its failures stop being
    /// retried, they are dropped (logged and counted) instead of
    /// dead-lettered. Applies to the category's policy wherever it is set.
    pub fn discard_on(mut self, category: ErrorCategory) -> Self {
        self.discard_on.push(category);
        self
    }

    /// Validates the configuration and builds.
    pub fn build(mut self) -> Result<Recovery, ConfigError> {
        self.config.validate()?;
        for (name, base) in &self.component_deadlines {
            if *base > self.config.deadlines.cap {
                return Err(ConfigError::invalid(
                    format!("deadlines.components.{name}"),
                    base,
                    "at most `deadlines.cap`",
                ));
            }
        }
        for category in std::mem::take(&mut self.discard_on) {
            let c = &mut self.config;
            let policy = c
                .categories
                .entry(category)
                .or_insert_with(|| RetryPolicy::for_category(category));
            policy.exhausted = Exhausted::Discard;
            for scope in c.topics.values_mut().chain(c.components.values_mut()) {
                if let Some(p) = scope.categories.get_mut(&category) {
                    p.exhausted = Exhausted::Discard;
                }
            }
        }
        Ok(Recovery::assemble(self))
    }
}
