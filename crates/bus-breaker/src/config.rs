//! [`BreakerConfig`]: when a breaker trips, how long it stays open, how it
//! probes. Built with [`BreakerConfig::builder`] or read with serde.

use bus_errors::ErrorCategory;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The largest count-based window (outcomes are packed in 21-bit counters).
pub const MAX_WINDOW_CALLS: u32 = 1_000_000;
/// The largest number of buckets a time-based window is split into.
pub const MAX_TIME_BUCKETS: u32 = 60;

/// Which calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SlidingWindow {
    /// The last `size` recorded calls.
    Count {
        /// How many calls.
        size: u32,
    },
    /// The calls recorded in the last `length`, in `min(length in s, 60)`
    /// buckets (at least one): a call leaves the window when its bucket does.
    Time {
        /// How far back.
        #[serde(with = "humantime_serde")]
        length: Duration,
    },
}

/// Everything that decides a breaker's behaviour. Defaults come from the
/// seed: open after 5 consecutive failures or a failure rate of 50 % over the
/// last 100 calls (at least 20 recorded), stay open 60 s.
///
/// ```
/// use bus_breaker::{BreakerConfig, SlidingWindow};
/// use std::time::Duration;
///
/// let config = BreakerConfig::builder()
///     .consecutive_failures(Some(3))
///     .window(SlidingWindow::Time { length: Duration::from_secs(30) })
///     .wait_in_open(Duration::from_secs(10))
///     .open_wait_multiplier(2.0)
///     .max_wait_in_open(Duration::from_secs(300))
///     .build()
///     .unwrap();
/// assert_eq!(config.consecutive_failures, Some(3));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Trip after this many failures in a row in the closed state (`None`: never
    /// on this rule). A success or a slow success resets the run; an ignored call
    /// does not.
    pub consecutive_failures: Option<u32>,
    /// Trip when at least this percentage of the window's calls failed
    /// (`None`: never on this rule). Also the probe failure rate that reopens
    /// a half-open breaker.
    pub failure_rate_threshold: Option<f64>,
    /// The window the failure and slow-call rates are computed over.
    pub window: SlidingWindow,
    /// No rate is evaluated before the window holds this many calls (capped
    /// at the size of a count-based window).
    pub minimum_calls: u32,
    /// A call that runs at least this long is slow (`None`: no slow-call rule,
    /// and no clock is read on the permit path).
    #[serde(with = "humantime_serde")]
    pub slow_call_threshold: Option<Duration>,
    /// Trip when at least this percentage of the window's calls were slow.
    pub slow_call_rate_threshold: f64,
    /// How long a tripped breaker stays open before probing.
    #[serde(with = "humantime_serde")]
    pub wait_in_open: Duration,
    /// Each trip that follows a failed half-open episode (without closing in
    /// between) multiplies the open wait by this (1.0: constant).
    pub open_wait_multiplier: f64,
    /// The cap of the growing open wait.
    #[serde(with = "humantime_serde")]
    pub max_wait_in_open: Duration,
    /// How many probe calls a half-open episode admits, in total.
    pub permitted_calls_in_half_open: u32,
    /// A half-open breaker whose probes have not all reported by then reopens
    /// (probes that never report cannot hold it half-open forever).
    #[serde(with = "humantime_serde")]
    pub max_wait_in_half_open: Duration,
    /// Failures of these categories count neither way (as if ignored). By
    /// default SERIALIZATION: a poison message is not the dependency's fault.
    pub ignored_categories: Vec<ErrorCategory>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            failure_rate_threshold: Some(50.0),
            window: SlidingWindow::Count { size: 100 },
            minimum_calls: 20,
            slow_call_threshold: None,
            slow_call_rate_threshold: 100.0,
            wait_in_open: Duration::from_secs(60),
            open_wait_multiplier: 1.0,
            max_wait_in_open: Duration::from_secs(600),
            permitted_calls_in_half_open: 3,
            max_wait_in_half_open: Duration::from_secs(60),
            ignored_categories: vec![ErrorCategory::Serialization],
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A percentage outside `(0, 100]`.
    #[error("{field} must be in (0, 100], got {value}")]
    Percentage {
        /// The field.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count or duration that must not be zero, or is too large.
    #[error("{field} is out of range: {reason}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl BreakerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every field; [`BreakerConfigBuilder::build`] calls this, call it
    /// yourself after deserializing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pct = |field, value: f64| {
            if value > 0.0 && value <= 100.0 {
                Ok(())
            } else {
                Err(ConfigError::Percentage { field, value })
            }
        };
        if let Some(rate) = self.failure_rate_threshold {
            pct("failure_rate_threshold", rate)?;
        }
        pct("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        let range = |ok: bool, field, reason| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange { field, reason })
            }
        };
        match self.window {
            SlidingWindow::Count { size } => range(
                (1..=MAX_WINDOW_CALLS).contains(&size),
                "window.size",
                "must be in 1..=1_000_000",
            )?,
            SlidingWindow::Time { length } => range(
                length >= Duration::from_millis(1),
                "window.length",
                "must be at least 1 ms",
            )?,
        }
        range(
            self.consecutive_failures != Some(0),
            "consecutive_failures",
            "must be at least 1",
        )?;
        range(
            (1..=0xFFFF).contains(&self.permitted_calls_in_half_open),
            "permitted_calls_in_half_open",
            "must be in 1..=65535",
        )?;
        range(
            self.open_wait_multiplier >= 1.0 && self.open_wait_multiplier.is_finite(),
            "open_wait_multiplier",
            "must be a finite number >= 1.0",
        )?;
        range(
            self.max_wait_in_open >= self.wait_in_open,
            "max_wait_in_open",
            "must be at least wait_in_open",
        )?;
        range(
            !self.max_wait_in_half_open.is_zero(),
            "max_wait_in_half_open",
            "must not be zero",
        )
    }

    /// The open wait after `trips_in_row` trips without closing in between
    /// (1 for the first): `wait_in_open * multiplier^(trips_in_row - 1)`, capped.
    pub fn open_wait(&self, trips_in_row: u32) -> Duration {
        let exp = trips_in_row.saturating_sub(1).min(64) as i32;
        let secs = self.wait_in_open.as_secs_f64() * self.open_wait_multiplier.powi(exp);
        let cap = self.max_wait_in_open;
        if !secs.is_finite() || secs >= cap.as_secs_f64() {
            cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// Whether a failure of `category` counts against the breaker.
    pub fn counts(&self, category: ErrorCategory) -> bool {
        !self.ignored_categories.contains(&category)
    }
}

/// Builds a [`BreakerConfig`]; every setter replaces one field.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct BreakerConfigBuilder {
    config: BreakerConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl BreakerConfigBuilder {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            })*
        }
    };
}

setters! {
    /// See [`BreakerConfig::consecutive_failures`].
    consecutive_failures: Option<u32>;
    /// See [`BreakerConfig::failure_rate_threshold`].
    failure_rate_threshold: Option<f64>;
    /// See [`BreakerConfig::window`].
    window: SlidingWindow;
    /// See [`BreakerConfig::minimum_calls`].
    minimum_calls: u32;
    /// See [`BreakerConfig::slow_call_threshold`].
    slow_call_threshold: Option<Duration>;
    /// See [`BreakerConfig::slow_call_rate_threshold`].
    slow_call_rate_threshold: f64;
    /// See [`BreakerConfig::wait_in_open`].
    wait_in_open: Duration;
    /// See [`BreakerConfig::open_wait_multiplier`].
    open_wait_multiplier: f64;
    /// See [`BreakerConfig::max_wait_in_open`].
    max_wait_in_open: Duration;
    /// See [`BreakerConfig::permitted_calls_in_half_open`].
    permitted_calls_in_half_open: u32;
    /// See [`BreakerConfig::max_wait_in_half_open`].
    max_wait_in_half_open: Duration;
    /// See [`BreakerConfig::ignored_categories`].
    ignored_categories: Vec<ErrorCategory>;
}

impl BreakerConfigBuilder {
    /// The validated configuration.
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json_with_human_durations() {
        let config = BreakerConfig::builder()
            .slow_call_threshold(Some(Duration::from_millis(250)))
            .build()
            .unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"250ms\""), "{json}");
        let back: BreakerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let partial: BreakerConfig = serde_json::from_str(
            r#"{"wait_in_open":"5s","window":{"kind":"time","length":"10s"}}"#,
        )
        .unwrap();
        assert_eq!(partial.wait_in_open, Duration::from_secs(5));
        assert_eq!(
            partial.window,
            SlidingWindow::Time {
                length: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        let bad = BreakerConfig::builder()
            .failure_rate_threshold(Some(0.0))
            .build();
        assert!(matches!(bad, Err(ConfigError::Percentage { .. })));
        let bad = BreakerConfig::builder()
            .permitted_calls_in_half_open(0)
            .build();
        assert!(matches!(bad, Err(ConfigError::OutOfRange { .. })));
        let bad = BreakerConfig::builder()
            .window(SlidingWindow::Count { size: 0 })
            .build();
        assert!(matches!(bad, Err(ConfigError::OutOfRange { .. })));
    }
}
