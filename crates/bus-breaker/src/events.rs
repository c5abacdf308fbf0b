//! What a breaker tells the outside: [`Transition`] events for listeners and
//! the [`BreakerMetrics`] snapshot for health reports.

use bus_core::CircuitState;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A breaker changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The breaker's name (the component it guards).
    pub component: Arc<str>,
    /// The state it left.
    pub from: CircuitState,
    /// The state it entered.
    pub to: CircuitState,
    /// The generation of the new state (increments on every transition).
    pub generation: u64,
    /// For `to == Open`: how long it stays open.
    pub open_for: Option<Duration>,
}

/// A transition listener. Listeners run on the thread that caused the
/// transition, while the breaker's transition lock is held: they must be quick
/// and must not call `try_acquire`, `call`, or an operator method of the same
/// breaker (reading `state()` or `metrics()` is fine).
pub type Listener = Arc<dyn Fn(&Transition) + Send + Sync>;

/// A shared, growable list of listeners (a registry shares one with all its
/// breakers).
#[derive(Default)]
pub(crate) struct Listeners {
    list: RwLock<Vec<Listener>>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.list.read().map(|l| l.len()).unwrap_or(0);
        f.debug_struct("Listeners").field("count", &n).finish()
    }
}

impl Listeners {
    pub(crate) fn push(&self, listener: Listener) {
        self.list
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(listener);
    }

    pub(crate) fn notify(&self, t: &Transition) {
        let list = self
            .list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for l in list.iter() {
            l(t);
        }
    }
}

/// A point-in-time view of one breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BreakerMetrics {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: CircuitState,
    /// How long it has been in that state.
    #[serde(with = "humantime_serde")]
    pub time_in_state: Duration,
    /// Calls in the sliding window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failed_calls: u64,
    /// Slow calls (successful or not) in the window.
    pub slow_calls: u64,
    /// `failed_calls / calls` in percent (`None` while the window is empty).
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls` in percent (`None` while the window is empty).
    pub slow_call_rate: Option<f64>,
    /// Failures in a row (closed state).
    pub consecutive_failures: u32,
    /// Times it tripped open (from closed or half-open) since creation.
    pub trips: u64,
    /// Calls refused since creation.
    pub rejected_calls: u64,
    /// For an open breaker: how long until it probes.
    #[serde(with = "humantime_serde")]
    pub retry_after: Option<Duration>,
}
