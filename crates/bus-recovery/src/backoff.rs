//! Delays between retries: a curve (constant, linear, exponential) plus jitter.
//!
//! Every random choice comes from an `fastrand::Rng` the caller passes in, so a
//! seeded generator gives the same schedule on every run.

use crate::ConfigError;
use bus_core::time::saturating_nanos;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the un-jittered delay grows with the retry index.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Curve {
    /// The same delay every time.
    Constant {
        /// The delay.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// `base + step * retry_index`, at most `cap`.
    Linear {
        /// The first delay.
        #[serde(with = "humantime_serde")]
        base: Duration,
        /// Added per retry.
        #[serde(with = "humantime_serde")]
        step: Duration,
        /// The largest delay.
        #[serde(with = "humantime_serde")]
        cap: Duration,
    },
    /// `base * factor ^ retry_index`, at most `cap`.
    Exponential {
        /// The first delay.
        #[serde(with = "humantime_serde")]
        base: Duration,
        /// The growth factor (at least 1).
        factor: f64,
        /// The largest delay.
        #[serde(with = "humantime_serde")]
        cap: Duration,
    },
}

/// How randomness spreads retries out (see the AWS architecture blog,
/// "Exponential Backoff And Jitter"). `d` is the curve's delay for the retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly `d`.
    #[default]
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d/2, d]`.
    Equal,
    /// Uniform in `[base, min(cap, 3 * previous delay)]`: independent of the
    /// retry index, always within `[base, cap]`.
    Decorrelated,
}

/// A backoff: a [`Curve`] and a [`Jitter`].
///
/// ```
/// use bus_recovery::{Backoff, Jitter};
/// use std::time::Duration;
///
/// let b = Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(5));
/// let mut rng = fastrand::Rng::with_seed(7);
/// let delays: Vec<_> = (0..4).map(|i| b.delay(i, None, &mut rng)).collect();
/// assert_eq!(delays, [1, 2, 4, 5].map(Duration::from_secs));
///
/// let jittered = b.with_jitter(Jitter::Full);
/// assert!(jittered.delay(2, None, &mut rng) <= Duration::from_secs(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The curve.
    #[serde(flatten)]
    pub curve: Curve,
    /// The jitter.
    #[serde(default)]
    pub jitter: Jitter,
}

impl Backoff {
    /// The same delay every time, no jitter.
    pub const fn constant(delay: Duration) -> Self {
        Self {
            curve: Curve::Constant { delay },
            jitter: Jitter::None,
        }
    }

    /// `base + step * i` up to `cap`, no jitter.
    pub const fn linear(base: Duration, step: Duration, cap: Duration) -> Self {
        Self {
            curve: Curve::Linear { base, step, cap },
            jitter: Jitter::None,
        }
    }

    /// `base * factor ^ i` up to `cap`, no jitter.
    pub const fn exponential(base: Duration, factor: f64, cap: Duration) -> Self {
        Self {
            curve: Curve::Exponential { base, factor, cap },
            jitter: Jitter::None,
        }
    }

    /// The same curve with `jitter`.
    #[must_use]
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first (smallest un-jittered) delay.
    pub fn base(&self) -> Duration {
        match self.curve {
            Curve::Constant { delay } => delay,
            Curve::Linear { base, .. } | Curve::Exponential { base, .. } => base,
        }
    }

    /// The largest delay this backoff can return.
    pub fn cap(&self) -> Duration {
        match self.curve {
            Curve::Constant { delay } => delay,
            Curve::Linear { cap, .. } | Curve::Exponential { cap, .. } => cap,
        }
    }

    /// The curve's delay for retry `retry_index` (0 for the first retry),
    /// before jitter.
    pub fn nominal(&self, retry_index: u32) -> Duration {
        match self.curve {
            Curve::Constant { delay } => delay,
            Curve::Linear { base, step, cap } => step
                .checked_mul(retry_index)
                .and_then(|s| base.checked_add(s))
                .map_or(cap, |d| d.min(cap)),
            Curve::Exponential { base, factor, cap } => {
                let exp = i32::try_from(retry_index).unwrap_or(i32::MAX);
                let secs = base.as_secs_f64() * factor.powi(exp);
                Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
            }
        }
    }

    /// The delay before retry `retry_index` (0 for the first retry).
    /// `previous` is the delay used before the previous retry; only
    /// [`Jitter::Decorrelated`] reads it (it starts from `base` when `None`).
    pub fn delay(
        &self,
        retry_index: u32,
        previous: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        match self.jitter {
            Jitter::None => self.nominal(retry_index),
            Jitter::Full => uniform(rng, Duration::ZERO, self.nominal(retry_index)),
            Jitter::Equal => {
                let d = self.nominal(retry_index);
                uniform(rng, d / 2, d)
            }
            Jitter::Decorrelated => {
                let (base, cap) = (self.base(), self.cap());
                let prev = previous.unwrap_or(base).max(base);
                let hi = prev.saturating_mul(3).min(cap).max(base);
                uniform(rng, base, hi)
            }
        }
    }

    /// An endless iterator of delays for retries 0, 1, 2, ... (feeding each
    /// delay back as `previous`).
    pub fn schedule<'r>(&self, rng: &'r mut fastrand::Rng) -> Schedule<'r> {
        Schedule {
            backoff: *self,
            rng,
            index: 0,
            previous: None,
        }
    }

    /// Checks the values: a factor of at least 1, `cap >= base`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.curve {
            Curve::Constant { .. } => Ok(()),
            Curve::Linear { base, cap, .. } if cap < base => {
                Err(ConfigError::invalid("cap", cap, "at least `base`"))
            }
            Curve::Linear { .. } => Ok(()),
            Curve::Exponential { factor, .. } if !(factor.is_finite() && factor >= 1.0) => Err(
                ConfigError::invalid("factor", factor, "a finite number >= 1"),
            ),
            Curve::Exponential { base, cap, .. } if cap < base => {
                Err(ConfigError::invalid("cap", cap, "at least `base`"))
            }
            Curve::Exponential { .. } => Ok(()),
        }
    }
}

/// Uniform in `[lo, hi]` at nanosecond resolution.
fn uniform(rng: &mut fastrand::Rng, lo: Duration, hi: Duration) -> Duration {
    let lo = saturating_nanos(lo);
    let hi = saturating_nanos(hi).max(lo);
    Duration::from_nanos(rng.u64(lo..=hi))
}

/// The delays of a [`Backoff`], one per retry; see [`Backoff::schedule`].
#[derive(Debug)]
pub struct Schedule<'r> {
    backoff: Backoff,
    rng: &'r mut fastrand::Rng,
    index: u32,
    previous: Option<Duration>,
}

impl Iterator for Schedule<'_> {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.backoff.delay(self.index, self.previous, self.rng);
        self.index = self.index.saturating_add(1);
        self.previous = Some(d);
        Some(d)
    }
}

#[cfg(test)]
#[path = "backoff_tests.rs"]
mod tests;
