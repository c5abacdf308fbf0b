//! [`HealthConfig`]: window size, status thresholds, alert pacing and label
//! bounds, readable from JSON/TOML with humantime durations (`"60s"`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the monitor judges health. Every field has a default taken from the
/// design (60 s window, healthy at 95 %, degraded at 80 %).
///
/// ```
/// use bus_health::HealthConfig;
/// let cfg: HealthConfig = serde_json::from_str(r#"{"window": "2m", "buckets": 120}"#).unwrap();
/// assert_eq!(cfg.window, std::time::Duration::from_secs(120));
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Length of the sliding window the rates are computed over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How many buckets the window is cut into (its time resolution).
    pub buckets: u32,
    /// Success rate at or above which the bus is healthy.
    pub healthy_threshold: f64,
    /// Success rate at or above which the bus is degraded; below is critical.
    pub degraded_threshold: f64,
    /// Handler outcomes (acks + failed attempts) needed in the window before
    /// the success rate is judged; fewer counts as healthy.
    pub min_samples: u64,
    /// Whether an open circuit makes the bus at least degraded (a half-open one
    /// never does: it is testing recovery).
    pub open_circuit_degrades: bool,
    /// Queue fill ratio (depth / capacity) at or above which the bus is degraded.
    pub queue_fill_degraded: f64,
    /// At most one alert per key per this interval; the rest are counted.
    #[serde(with = "humantime_serde")]
    pub alert_interval: Duration,
    /// Capacity of the queue to the alert thread; alerts beyond it are dropped
    /// and counted (delivery threads never wait).
    pub alert_queue_capacity: usize,
    /// How often the alert thread re-evaluates the status to catch a
    /// transition to critical that no event announced.
    #[serde(with = "humantime_serde")]
    pub evaluate_every: Duration,
    /// Most distinct values of one label (topic, component) in the metrics;
    /// the rest are folded into `"other"`.
    pub max_label_values: usize,
    /// A lost broker connection makes the bus degraded at once, and
    /// critical once it has been down this long (default 10 s).
    #[serde(with = "humantime_serde")]
    pub broker_critical_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            buckets: 60,
            healthy_threshold: 0.95,
            degraded_threshold: 0.80,
            min_samples: 1,
            open_circuit_degrades: true,
            queue_fill_degraded: 0.9,
            alert_interval: Duration::from_secs(60),
            alert_queue_capacity: 256,
            evaluate_every: Duration::from_secs(1),
            max_label_values: 50,
            broker_critical_after: Duration::from_secs(10),
        }
    }
}

/// A configuration value is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The key `key` has the value `value`, which is not allowed.
    #[error("invalid health config: {key} = {value}: {reason}")]
    Invalid {
        /// The field name.
        key: &'static str,
        /// The offending value, as text.
        value: String,
        /// What is expected.
        reason: &'static str,
    },
}

fn bad(key: &'static str, value: impl std::fmt::Debug, reason: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: format!("{value:?}"),
        reason,
    }
}

impl HealthConfig {
    /// Checks every field; the error names the first bad key and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() {
            return Err(bad("window", self.window, "must be above zero"));
        }
        if self.buckets == 0 || self.buckets > 3600 {
            return Err(bad("buckets", self.buckets, "must be in 1..=3600"));
        }
        if self.window / self.buckets < Duration::from_millis(1) {
            return Err(bad(
                "buckets",
                self.buckets,
                "window / buckets must be at least 1ms",
            ));
        }
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if !unit(self.healthy_threshold) {
            return Err(bad(
                "healthy_threshold",
                self.healthy_threshold,
                "must be in 0..=1",
            ));
        }
        if !unit(self.degraded_threshold) || self.degraded_threshold > self.healthy_threshold {
            return Err(bad(
                "degraded_threshold",
                self.degraded_threshold,
                "must be in 0..=1 and not above healthy_threshold",
            ));
        }
        if !(self.queue_fill_degraded > 0.0 && self.queue_fill_degraded <= 1.0) {
            return Err(bad(
                "queue_fill_degraded",
                self.queue_fill_degraded,
                "must be in (0, 1]",
            ));
        }
        if self.alert_interval.is_zero() {
            return Err(bad(
                "alert_interval",
                self.alert_interval,
                "must be above zero",
            ));
        }
        if self.alert_queue_capacity == 0 {
            return Err(bad(
                "alert_queue_capacity",
                self.alert_queue_capacity,
                "must be at least 1",
            ));
        }
        if self.evaluate_every.is_zero() {
            return Err(bad(
                "evaluate_every",
                self.evaluate_every,
                "must be above zero",
            ));
        }
        if self.max_label_values == 0 {
            return Err(bad(
                "max_label_values",
                self.max_label_values,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_seed() {
        let c = HealthConfig::default();
        c.validate().unwrap();
        assert_eq!(c.window, Duration::from_secs(60));
        assert_eq!((c.healthy_threshold, c.degraded_threshold), (0.95, 0.80));
    }

    #[test]
    fn errors_name_the_bad_key_and_value() {
        let c = HealthConfig {
            degraded_threshold: 0.99,
            ..HealthConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key: "degraded_threshold", value, .. } if value == "0.99")
        );
        assert!(
            err.to_string().contains("degraded_threshold = 0.99"),
            "{err}"
        );

        let c = HealthConfig {
            buckets: 0,
            ..HealthConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid { key: "buckets", .. })
        ));
    }

    #[test]
    fn humantime_durations_round_trip_and_unknown_keys_are_refused() {
        let c: HealthConfig =
            serde_json::from_str(r#"{"window":"5m","alert_interval":"30s"}"#).unwrap();
        assert_eq!(c.window, Duration::from_secs(300));
        assert_eq!(c.alert_interval, Duration::from_secs(30));
        let back: HealthConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<HealthConfig>(r#"{"windw":"5m"}"#).is_err());
    }
}
