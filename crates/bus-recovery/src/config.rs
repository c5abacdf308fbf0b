//! [`RecoveryConfig`]: everything about a [`Recovery`](crate::Recovery) that
//! can be written in a file (TOML, JSON); predicates, codecs and the clock are
//! added in code through the [builder](crate::RecoveryBuilder).

use crate::{BudgetConfig, ConfigError, DeadlineConfig, RetryPolicy};
use bus_errors::ErrorCategory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Policies for one topic or one subscriber.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeConfig {
    /// The policy for every category (unless `categories` names one).
    pub all: Option<RetryPolicy>,
    /// Policies for single categories.
    pub categories: BTreeMap<ErrorCategory, RetryPolicy>,
}

impl ScopeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.all {
            p.validate().map_err(|e| e.within("all"))?;
        }
        for (c, p) in &self.categories {
            p.validate()
                .map_err(|e| e.within(&format!("categories.{c}")))?;
        }
        Ok(())
    }
}

/// The serializable configuration of a [`Recovery`](crate::Recovery). The
/// most specific policy wins: subscriber (component) over topic over category.
///
/// ```
/// let cfg: bus_recovery::RecoveryConfig = serde_json::from_str(r#"{
///     "seed": 7,
///     "budget": { "percent": 0.1, "window": "30s" },
///     "categories": { "TIMEOUT": { "max_retries": 5,
///         "backoff": { "kind": "constant", "delay": "250ms" } } },
///     "topics": { "orders": { "all": { "max_retries": 0, "exhausted": "escalate" } } }
/// }"#).unwrap();
/// let recovery = bus_recovery::Recovery::from_config(cfg).unwrap();
/// # let _ = recovery;
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Seed of the jitter generator (random when `None`).
    pub seed: Option<u64>,
    /// The retry budget; `None` switches it off.
    pub budget: Option<BudgetConfig>,
    /// Adaptive handler deadlines.
    pub deadlines: DeadlineConfig,
    /// Replacements for entries of the default table
    /// ([`RetryPolicy::for_category`]).
    pub categories: BTreeMap<ErrorCategory, RetryPolicy>,
    /// Overrides by exact topic name.
    pub topics: BTreeMap<String, ScopeConfig>,
    /// Overrides by subscriber (component) name.
    pub components: BTreeMap<String, ScopeConfig>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            seed: None,
            budget: Some(BudgetConfig::default()),
            deadlines: DeadlineConfig::default(),
            categories: BTreeMap::new(),
            topics: BTreeMap::new(),
            components: BTreeMap::new(),
        }
    }
}

impl RecoveryConfig {
    /// Checks every value; the error names the dotted key
    /// (`topics.orders.categories.TIMEOUT.backoff.factor`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(b) = &self.budget {
            b.validate().map_err(|e| e.within("budget"))?;
        }
        self.deadlines
            .validate()
            .map_err(|e| e.within("deadlines"))?;
        for (c, p) in &self.categories {
            p.validate()
                .map_err(|e| e.within(&format!("categories.{c}")))?;
        }
        for (t, s) in &self.topics {
            s.validate().map_err(|e| e.within(&format!("topics.{t}")))?;
        }
        for (n, s) in &self.components {
            s.validate()
                .map_err(|e| e.within(&format!("components.{n}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_full_dotted_key_and_value() {
        let cfg: RecoveryConfig = serde_json::from_str(
            r#"{"topics":{"orders":{"categories":{"TIMEOUT":{"max_retries":1,
                "backoff":{"kind":"exponential","base":"1s","factor":0.5,"cap":"2s"}}}}}}"#,
        )
        .unwrap();
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.key(), "topics.orders.categories.TIMEOUT.backoff.factor");
        assert!(err.to_string().contains("0.5"), "{err}");

        let cfg: RecoveryConfig = serde_json::from_str(r#"{"budget":{"percent":-0.1}}"#).unwrap();
        assert_eq!(cfg.validate().unwrap_err().key(), "budget.percent");

        let cfg: RecoveryConfig = serde_json::from_str(
            r#"{"components":{"billing":{"all":{"max_retries":1,
                "backoff":{"kind":"linear","base":"5s","step":"1s","cap":"1s"}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.validate().unwrap_err().key(),
            "components.billing.all.backoff.cap"
        );
    }

    #[test]
    fn an_empty_document_is_the_default_and_valid() {
        let cfg: RecoveryConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.budget, Some(BudgetConfig::default()));
        cfg.validate().unwrap();
        let off: RecoveryConfig = serde_json::from_str(r#"{"budget":null}"#).unwrap();
        assert_eq!(off.budget, None);
        assert!(serde_json::from_str::<RecoveryConfig>(r#"{"budgett":{}}"#).is_err());
    }
}
