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
    /// Policies for single categories; in a file, each entry says only what it
    /// changes: the rest keeps the category's default.
    #[serde(deserialize_with = "merged_onto_defaults")]
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
    /// ([`RetryPolicy::for_category`]); in a file, each entry says only what it
    /// changes: the rest keeps the category's default.
    #[serde(deserialize_with = "merged_onto_defaults")]
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

/// Reads a table of category policies where each entry says only what it
/// changes: the keys it gives replace those of
/// [`RetryPolicy::for_category`], the others keep their defaults. Overriding
/// CONNECTION's backoff keeps its `reconnect` strategy, and a backoff of the
/// same kind keeps the fields it does not name (its jitter among them); a
/// backoff of another kind starts afresh but for the jitter, which is kept
/// unless it is given.
///
fn merged_onto_defaults<'de, D>(
    deserializer: D,
) -> Result<BTreeMap<ErrorCategory, RetryPolicy>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let given = BTreeMap::<ErrorCategory, serde_json::Value>::deserialize(deserializer)?;
    given
        .into_iter()
        .map(|(category, patch)| {
            let mut policy = serde_json::to_value(RetryPolicy::for_category(category))
                .map_err(|e| D::Error::custom(format!("categories.{category}: {e}")))?;
            merge(&mut policy, patch);
            serde_json::from_value(policy)
                .map(|p| (category, p))
                .map_err(|e| D::Error::custom(format!("categories.{category}: {e}")))
        })
        .collect()
}

/// Merges `patch` onto `base`: objects key by key, anything else replaced. A
/// `backoff` whose `kind` changes is replaced whole but for its `jitter`.
fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    use serde_json::Value;
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                match base.get_mut(&key) {
                    Some(old) if key == "backoff" && kind_changes(old, &value) => {
                        let jitter = old.get("jitter").cloned();
                        *old = value;
                        if let (Some(j), Value::Object(new)) = (jitter, old) {
                            new.entry("jitter").or_insert(j);
                        }
                    }
                    Some(old) => merge(old, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, patch) => *base = patch,
    }
}

fn kind_changes(old: &serde_json::Value, new: &serde_json::Value) -> bool {
    new.get("kind").is_some_and(|k| Some(k) != old.get("kind"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn a_partial_category_override_keeps_the_defaults_it_does_not_name() {
        use crate::{Jitter, Strategy};
        let cfg: RecoveryConfig = toml::from_str(
            r#"
            [categories.CONNECTION]
            max_retries = 10
            backoff = { kind = "exponential", base = "10ms", factor = 2.0, cap = "100ms" }

            [topics.orders.categories.TIMEOUT]
            backoff = { kind = "constant", delay = "20ms" }
            "#,
        )
        .unwrap();
        let connection = &cfg.categories[&ErrorCategory::Connection];
        assert_eq!(connection.max_retries, 10);
        assert_eq!(connection.strategy, Strategy::Reconnect);
        assert_eq!(
            connection.backoff.jitter,
            Jitter::Full,
            "same kind: jitter kept"
        );
        assert_eq!(
            connection.backoff.curve,
            crate::Curve::Exponential {
                base: Duration::from_millis(10),
                factor: 2.0,
                cap: Duration::from_millis(100)
            }
        );
        let default = RetryPolicy::for_category(ErrorCategory::Connection);
        assert_eq!(connection.exhausted, default.exhausted);

        let timeout = &cfg.topics["orders"].categories[&ErrorCategory::Timeout];
        let default = RetryPolicy::for_category(ErrorCategory::Timeout);
        assert_eq!(timeout.max_retries, default.max_retries);
        assert_eq!(
            timeout.backoff.jitter, default.backoff.jitter,
            "new kind: jitter kept"
        );
        assert_eq!(
            timeout.backoff.curve,
            crate::Curve::Constant {
                delay: Duration::from_millis(20)
            }
        );
        // A mistake is still named.
        let err = toml::from_str::<RecoveryConfig>("[categories.TIMEOUT]\nmax_retriess = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_retriess"), "{err}");
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
