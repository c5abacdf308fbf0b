//! Adaptive handler deadlines: a TIMEOUT failure grows a component's deadline
//! by `factor` (up to `cap`); every `shrink_after` successes in a row shrink
//! it by the same factor, back toward its base. Handlers see the deadline as
//! [`Message::deadline`](bus_core::Message::deadline).
//!
//! Growth starts only from a configured base (the default, or a component's
//! own). How long a failing call ran is no base: a timeout error returned in
//! microseconds would set a deadline of microseconds, and a handler that
//! bounds its remote call by that deadline would then fail every call.
//!
//! Reads and successes are lock-free (an `ArcSwap` of the map and atomics);
//! only the first timeout of a component takes a lock to add its entry.

use crate::ConfigError;
use arc_swap::ArcSwap;
use bus_core::time::saturating_nanos;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Configuration of [`AdaptiveDeadlines`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlineConfig {
    /// The deadline of a component with no base of its own. `None` (the
    /// default): such a component has no deadline, and its timeouts do not
    /// give it one (adaptive deadlines are off for it).
    #[serde(with = "humantime_serde")]
    pub default: Option<Duration>,
    /// Growth per timeout, and shrink per `shrink_after` successes (default 1.5).
    pub factor: f64,
    /// The largest deadline (default 60 s).
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
    /// Successes in a row that shrink the deadline one step (default 10).
    pub shrink_after: u32,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self {
            default: None,
            factor: 1.5,
            cap: Duration::from_secs(60),
            shrink_after: 10,
        }
    }
}

impl DeadlineConfig {
    /// Checks the values: `factor >= 1`, `cap >= default`, `shrink_after >= 1`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(ConfigError::invalid(
                "factor",
                self.factor,
                "a finite number >= 1",
            ));
        }
        if self.default.is_some_and(|d| d > self.cap) {
            return Err(ConfigError::invalid("cap", self.cap, "at least `default`"));
        }
        if self.shrink_after == 0 {
            return Err(ConfigError::invalid("shrink_after", 0, "at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Entry {
    base: u64,
    current: AtomicU64,
    streak: AtomicU32,
}

/// Per-component adaptive deadlines: a TIMEOUT grows a component's deadline
/// by `factor` up to `cap`; every `shrink_after` successes in a row shrink it
/// one step back toward its base. Reads and successes are lock-free.
#[derive(Debug)]
pub struct AdaptiveDeadlines {
    config: DeadlineConfig,
    bases: HashMap<String, Duration>,
    entries: ArcSwap<HashMap<String, Arc<Entry>>>,
    /// Whether `entries` has ever held one: until a first timeout, every
    /// delivery's lookups are one load of this flag instead of a map load
    /// and a string hash.
    adapted: AtomicBool,
    insert: Mutex<()>,
}

impl AdaptiveDeadlines {
    /// Deadlines with `config` and per-component bases.
    pub fn new(config: DeadlineConfig, bases: HashMap<String, Duration>) -> Self {
        Self {
            config,
            bases,
            entries: ArcSwap::from_pointee(HashMap::new()),
            adapted: AtomicBool::new(false),
            insert: Mutex::new(()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DeadlineConfig {
        &self.config
    }

    fn base_of(&self, component: &str) -> Option<Duration> {
        if self.bases.is_empty() {
            return self.config.default;
        }
        self.bases.get(component).copied().or(self.config.default)
    }

    /// The deadline for `component`'s next delivery.
    pub fn deadline(&self, component: &str) -> Option<Duration> {
        if self.adapted.load(Ordering::Acquire)
            && let Some(e) = self.entries.load().get(component)
        {
            return Some(Duration::from_nanos(e.current.load(Ordering::Relaxed)));
        }
        self.base_of(component)
    }

    fn entry(&self, component: &str) -> Option<Arc<Entry>> {
        if let Some(e) = self.entries.load().get(component) {
            return Some(Arc::clone(e));
        }
        let base = self.base_of(component)?;
        let _guard = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let mut map = HashMap::clone(&self.entries.load());
        let entry = Arc::clone(map.entry(component.to_owned()).or_insert_with(|| {
            Arc::new(Entry {
                base: saturating_nanos(base),
                current: AtomicU64::new(saturating_nanos(base)),
                streak: AtomicU32::new(0),
            })
        }));
        self.entries.store(Arc::new(map));
        self.adapted.store(true, Ordering::Release);
        Some(entry)
    }

    /// Records a TIMEOUT failure of `component`: grows its deadline. Returns
    /// the new deadline, or `None` when the component has no base deadline
    /// (none configured for it and no default), which stays so.
    pub fn on_timeout(&self, component: &str) -> Option<Duration> {
        let entry = self.entry(component)?;
        entry.streak.store(0, Ordering::Relaxed);
        let cap = saturating_nanos(self.config.cap);
        let factor = self.config.factor;
        let grown = entry
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                Some(grow(cur, factor).min(cap).max(cur))
            })
            .map_or_else(|v| v, |old| grow(old, factor).min(cap).max(old));
        Some(Duration::from_nanos(grown))
    }

    /// Records a success of `component`: every `shrink_after`-th success in a
    /// row shrinks its deadline one step toward the base. Lock-free.
    pub fn on_success(&self, component: &str) {
        if !self.adapted.load(Ordering::Acquire) {
            return;
        }
        let map = self.entries.load();
        let Some(entry) = map.get(component) else {
            return;
        };
        if entry.current.load(Ordering::Relaxed) <= entry.base {
            return;
        }
        let streak = entry.streak.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if streak % self.config.shrink_after.max(1) != 0 {
            return;
        }
        let (base, factor) = (entry.base, self.config.factor);
        let _ = entry
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                Some(shrink(cur, factor).max(base))
            });
    }
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn grow(n: u64, factor: f64) -> u64 {
    let v = (n as f64 * factor).round();
    if v >= u64::MAX as f64 {
        u64::MAX
    } else {
        v as u64
    }
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn shrink(n: u64, factor: f64) -> u64 {
    (n as f64 / factor).round() as u64
}

#[cfg(test)]
#[path = "timeout_tests.rs"]
mod tests;
