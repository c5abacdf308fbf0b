//! [`BreakerRegistry`]: one breaker per component, created on first use.

use crate::breaker::CircuitBreaker;
use crate::config::{BreakerConfig, ConfigError};
use crate::events::{BreakerMetrics, Listener, Listeners};
use bus_core::CircuitState;
use bus_core::time::{SharedClock, system_clock};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Breakers per component key, created on first use from a per-key or the
/// default configuration. Listeners added here hear every breaker's
/// transitions (with the component's name in [`Transition::component`](crate::Transition)).
///
/// ```
/// use bus_breaker::{BreakerConfig, BreakerRegistry};
/// use bus_core::CircuitState;
///
/// let registry = BreakerRegistry::new(BreakerConfig::default()).unwrap();
/// registry
///     .configure("payments", BreakerConfig::builder().consecutive_failures(Some(1)).build().unwrap())
///     .unwrap();
/// let payments = registry.get("payments");
/// payments.try_acquire().unwrap().failure();
/// assert_eq!(payments.state(), CircuitState::Open);
/// assert_eq!(registry.get("emails").state(), CircuitState::Closed);
/// assert_eq!(registry.list().len(), 2);
/// ```
pub struct BreakerRegistry {
    default: BreakerConfig,
    per_key: RwLock<HashMap<String, BreakerConfig>>,
    breakers: RwLock<HashMap<String, Arc<CircuitBreaker>>>,
    clock: SharedClock,
    listeners: Arc<Listeners>,
}

impl std::fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("default", &self.default)
            .field("breakers", &self.names())
            .finish_non_exhaustive()
    }
}

impl BreakerRegistry {
    /// A registry using `default` for components without their own
    /// configuration, and the system clock.
    pub fn new(default: BreakerConfig) -> Result<Self, ConfigError> {
        Self::with_clock(default, system_clock())
    }

    /// A registry whose breakers all use `clock`.
    pub fn with_clock(default: BreakerConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        default.validate()?;
        Ok(Self {
            default,
            per_key: RwLock::default(),
            breakers: RwLock::default(),
            clock,
            listeners: Arc::default(),
        })
    }

    /// Sets the configuration `component`'s breaker is created with. A breaker
    /// already created keeps its configuration.
    pub fn configure(&self, component: &str, config: BreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.per_key
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(component.to_owned(), config);
        Ok(())
    }

    /// Adds a listener for every breaker's transitions, present and future.
    pub fn on_transition(&self, listener: Listener) {
        self.listeners.push(listener);
    }

    /// The breaker for `component`, created on first use.
    pub fn get(&self, component: &str) -> Arc<CircuitBreaker> {
        if let Some(b) = self
            .breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(component)
        {
            return b.clone();
        }
        let config = self
            .per_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(component)
            .cloned()
            .unwrap_or_else(|| self.default.clone());
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(component.to_owned())
            .or_insert_with(|| Arc::new(self.build(component, config)))
            .clone()
    }

    fn build(&self, component: &str, config: BreakerConfig) -> CircuitBreaker {
        let builder = CircuitBreaker::builder(component)
            .clock(self.clock.clone())
            .shared_listeners(self.listeners.clone());
        // Every configuration here was validated on the way in.
        builder.config(config).build_validated()
    }

    /// The names of the breakers created so far, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Every breaker's name, [effective state](CircuitBreaker::effective_state)
    /// and metrics, sorted by name (for health reports).
    pub fn list(&self) -> Vec<(String, CircuitState, BreakerMetrics)> {
        let mut all: Vec<_> = self
            .breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, b)| (name.clone(), b.effective_state(), b.metrics()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}
