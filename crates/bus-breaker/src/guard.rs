//! The bus-core plug: [`BreakerGuard`] adapts a [`CircuitBreaker`] to
//! [`Guard`], [`BreakerRegistry`] is a [`GuardProvider`].
//!
//! An adapter rather than `impl Guard for CircuitBreaker`: bus-core implements
//! `Guard` for `Arc<T>`, so with the trait in scope `arc_breaker.try_acquire()`
//! would resolve to the token-based `Guard::try_acquire` instead of the
//! breaker's own method.
//!
//! The [`bus_core::Permit`] token is the breaker's state word at acquire time
//! (state kind and generation, see [`state`](crate::state)), so a stale
//! permit is recognised exactly as with the breaker's own [`Permit`](crate::Permit).
//! `Outcome::Failure` counts unless its category is in
//! [`BreakerConfig::ignored_categories`](crate::BreakerConfig::ignored_categories);
//! `Outcome::Ignored` gives a half-open slot back.

use crate::breaker::{CircuitBreaker, Verdict};
use crate::registry::BreakerRegistry;
use crate::state::{Word, token};
use bus_core::{CircuitState, Guard, GuardProvider, Outcome, Permit, Rejected};
use std::sync::Arc;

/// A [`CircuitBreaker`] as a bus-core [`Guard`].
///
/// A `bus_core::Permit` has no drop hook: a half-open probe permit the
/// pipeline loses without calling [`Guard::record`] holds its slot until
/// `max_wait_in_half_open` reopens the breaker.
#[derive(Debug, Clone)]
pub struct BreakerGuard {
    breaker: Arc<CircuitBreaker>,
}

impl BreakerGuard {
    /// Wraps `breaker`.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }

    /// The breaker behind it.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }
}

impl Guard for BreakerGuard {
    fn try_acquire(&self) -> Result<Permit, Rejected> {
        self.breaker
            .acquire()
            .map(|(kind, generation)| Permit::new(token(kind, generation)))
    }

    fn record(&self, permit: Permit, outcome: Outcome) {
        let w = Word::unpack(permit.token());
        let verdict = match outcome {
            Outcome::Success { elapsed } => Verdict::Success(Some(elapsed)),
            Outcome::Failure { elapsed, class } if self.breaker.config().counts(class.category) => {
                Verdict::Failure(Some(elapsed))
            }
            _ => Verdict::Ignored,
        };
        self.breaker.finish(w.kind, w.generation, verdict);
    }

    fn state(&self) -> CircuitState {
        self.breaker.state()
    }
}

impl GuardProvider for BreakerRegistry {
    fn guard(&self, component: &str) -> Arc<dyn Guard> {
        Arc::new(BreakerGuard::new(self.get(component)))
    }
}
