//! [`Permit`]: one admitted call, and [`CircuitBreaker::call`] built on it.

use crate::breaker::{CircuitBreaker, Verdict};
use bus_core::{CircuitState, Rejected};
use bus_errors::ErrorCategory;
use std::error::Error;
use std::time::Duration;

/// Permission to run one call, issued by [`CircuitBreaker::try_acquire`].
///
/// Report how the call ended with [`success`](Self::success),
/// [`failure`](Self::failure), [`failure_with`](Self::failure_with) or
/// [`ignore`](Self::ignore). Dropping it unreported counts as ignored: a
/// half-open probe slot is given back, nothing is lost. A permit issued before
/// the breaker changed state is stale: its outcome is counted nowhere.
#[must_use = "report the outcome with success(), failure() or ignore()"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    kind: CircuitState,
    generation: u64,
    started: Option<bus_core::time::Stamp>,
    done: bool,
}

impl<'a> Permit<'a> {
    #[inline]
    pub(crate) fn new(breaker: &'a CircuitBreaker, kind: CircuitState, generation: u64) -> Self {
        Self {
            breaker,
            kind,
            generation,
            // The clock is read only when slow calls are detected.
            started: breaker.started(),
            done: false,
        }
    }

    /// The state that admitted the call (`HalfOpen` for a probe).
    pub fn state(&self) -> CircuitState {
        self.kind
    }

    #[inline]
    fn finish(mut self, verdict: impl FnOnce(Option<Duration>) -> Verdict) {
        self.done = true;
        let elapsed = self.breaker.elapsed_since(self.started);
        self.breaker
            .finish(self.kind, self.generation, verdict(elapsed));
    }

    /// The call succeeded (it is slow if it ran at least the slow-call threshold).
    #[inline]
    pub fn success(self) {
        self.finish(Verdict::Success);
    }

    /// The call failed.
    pub fn failure(self) {
        self.finish(Verdict::Failure);
    }

    /// The call failed with `category`: a failure unless the configuration
    /// ignores that category, in which case it is ignored.
    pub fn failure_with(self, category: ErrorCategory) {
        if self.breaker.config().counts(category) {
            self.failure();
        } else {
            self.ignore();
        }
    }

    /// The call counts neither way (a half-open slot is given back).
    pub fn ignore(self) {
        self.finish(|_| Verdict::Ignored);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker
                .finish(self.kind, self.generation, Verdict::Ignored);
        }
    }
}

/// Why [`CircuitBreaker::call`] returned no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The breaker refused; the closure did not run.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The closure ran and returned this error.
    #[error("protected call failed: {0}")]
    Failed(E),
}

impl CircuitBreaker {
    /// Runs `f` if the breaker permits, and records its result: `Ok` is a
    /// success, `Err` a failure unless the breaker's
    /// [failure predicate](crate::CircuitBreakerBuilder::failure_predicate)
    /// says it does not count (then the call is ignored). A panic in `f`
    /// unwinds through; the permit's drop records the call as ignored.
    #[inline]
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, CallError<E>>
    where
        E: Error + 'static,
    {
        let permit = self.try_acquire()?;
        match f() {
            Ok(v) => {
                permit.success();
                Ok(v)
            }
            Err(e) => {
                if self.predicate().is_none_or(|p| p(&e)) {
                    permit.failure();
                } else {
                    permit.ignore();
                }
                Err(CallError::Failed(e))
            }
        }
    }
}
