//! The bus-core plug: [`CircuitBreaker`] is a [`Guard`], [`BreakerRegistry`]
//! a [`GuardProvider`].
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

impl Guard for CircuitBreaker {
    fn try_acquire(&self) -> Result<Permit, Rejected> {
        self.acquire()
            .map(|(kind, generation)| Permit::new(token(kind, generation)))
    }

    fn record(&self, permit: Permit, outcome: Outcome) {
        let w = Word::unpack(permit.token());
        let verdict = match outcome {
            Outcome::Success { elapsed } => Verdict::Success(Some(elapsed)),
            Outcome::Failure { elapsed, class } if self.config().counts(class.category) => {
                Verdict::Failure(Some(elapsed))
            }
            _ => Verdict::Ignored,
        };
        self.finish(w.kind, w.generation, verdict);
    }

    fn state(&self) -> CircuitState {
        CircuitBreaker::state(self)
    }
}

impl GuardProvider for BreakerRegistry {
    fn guard(&self, component: &str) -> Arc<dyn Guard> {
        self.get(component)
    }
}
