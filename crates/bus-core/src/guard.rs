//! The [`Guard`] plug: a gate in front of a subscriber's handler (a circuit
//! breaker in `bus-breaker`). Workers ask it *before* fetching: while it
//! refuses, the subscriber pauses for `retry_after` and its messages wait in
//! the transport, neither failed nor redelivered. A permit taken for a fetch
//! that found nothing is handed back as [`Outcome::Ignored`].

use bus_errors::Classification;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The state of a circuit (breaker vocabulary shared with health reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls are rejected until the wait ends.
    Open,
    /// A bounded number of probe calls decide whether to close.
    HalfOpen,
    /// Held open by an operator.
    ForcedOpen,
    /// Every call flows and nothing is recorded.
    Disabled,
    /// Every call flows; outcomes are recorded but never trip.
    MetricsOnly,
}

impl CircuitState {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::Disabled => "disabled",
            CircuitState::MetricsOnly => "metrics_only",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Permission to run one call. Hand it back to [`Guard::record`] with the
/// outcome. The token's meaning belongs to the guard that issued it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be handed back to Guard::record with the outcome"]
pub struct Permit {
    token: u64,
}

impl Permit {
    /// A permit carrying a guard-defined token.
    pub const fn new(token: u64) -> Self {
        Self { token }
    }

    /// The guard-defined token.
    pub const fn token(&self) -> u64 {
        self.token
    }
}

/// A call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rejected by a {state} circuit; retry after {retry_after:?}")]
pub struct Rejected {
    /// The state that refused.
    pub state: CircuitState,
    /// When to try again.
    pub retry_after: Duration,
}

/// How a permitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It succeeded after `elapsed`.
    Success {
        /// How long it ran.
        elapsed: Duration,
    },
    /// It failed after `elapsed` with `class`.
    Failure {
        /// How long it ran.
        elapsed: Duration,
        /// How the failure was classified (a guard may ignore some categories).
        class: Classification,
    },
    /// It should not count either way (for example, it was cancelled).
    Ignored,
}

/// A gate for one component. Implementations must be cheap on the permit path:
/// it runs before every delivery.
pub trait Guard: Send + Sync {
    /// Asks to run one call.
    fn try_acquire(&self) -> Result<Permit, Rejected>;
    /// Reports how a permitted call ended.
    fn record(&self, permit: Permit, outcome: Outcome);
    /// The current state, for reports.
    fn state(&self) -> CircuitState {
        CircuitState::Closed
    }
}

impl<T: Guard + ?Sized> Guard for Arc<T> {
    fn try_acquire(&self) -> Result<Permit, Rejected> {
        (**self).try_acquire()
    }
    fn record(&self, permit: Permit, outcome: Outcome) {
        (**self).record(permit, outcome)
    }
    fn state(&self) -> CircuitState {
        (**self).state()
    }
}

/// Hands out one [`Guard`] per component (subscriber). Called once when a
/// subscriber starts, not per message.
pub trait GuardProvider: Send + Sync {
    /// The guard for `component`, created on first use.
    fn guard(&self, component: &str) -> Arc<dyn Guard>;
}

impl<T: GuardProvider + ?Sized> GuardProvider for Arc<T> {
    fn guard(&self, component: &str) -> Arc<dyn Guard> {
        (**self).guard(component)
    }
}

/// A guard that always permits: the default when no breaker is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGuard;

impl Guard for NoGuard {
    fn try_acquire(&self) -> Result<Permit, Rejected> {
        Ok(Permit::new(0))
    }
    fn record(&self, _permit: Permit, _outcome: Outcome) {}
}

impl GuardProvider for NoGuard {
    fn guard(&self, _component: &str) -> Arc<dyn Guard> {
        Arc::new(NoGuard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn _obj_safe(_: Box<dyn Guard>, _: Box<dyn GuardProvider>) {}
}
