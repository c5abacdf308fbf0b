//! [`CircuitBreaker`]: the atomics behind the state machine of
//! [`state`](crate::state).

use crate::config::{BreakerConfig, ConfigError, SlidingWindow};
use crate::events::{BreakerMetrics, Listener, Listeners, Transition};
use crate::permit::Permit;
use crate::state::{Probes, Word};
use crate::sync::{AtomicU32, AtomicU64, Mutex, Ordering};
use crate::window::{Counts, Mark, Window};
use bus_core::time::{SharedClock, Stamp, saturating_nanos, system_clock};
use bus_core::{CircuitState, Rejected};
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

mod finish;

/// Decides whether an error returned through [`CircuitBreaker::call`] counts
/// as a failure (`false`: the call is ignored, neither success nor failure).
pub type FailurePredicate = Arc<dyn Fn(&(dyn Error + 'static)) -> bool + Send + Sync>;

/// The longest `retry_after` a full half-open breaker suggests.
const HALF_OPEN_RETRY: Duration = Duration::from_secs(1);

/// How a permitted call ended, as the breaker records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success(Option<Duration>),
    Failure(Option<Duration>),
    Ignored,
}

/// A lock-free circuit breaker. See [`state`](crate::state) for the state
/// machine and [`window`](crate::window) for what is counted when.
///
/// ```
/// use bus_breaker::{BreakerConfig, CallError, CircuitBreaker};
/// use bus_core::CircuitState;
/// use bus_core::time::ManualClock;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder("payments")
///     .config(BreakerConfig::builder().consecutive_failures(Some(2)).build().unwrap())
///     .clock(Arc::new(clock.clone()))
///     .build()
///     .unwrap();
/// let boom = || Err::<(), _>(std::io::Error::other("down"));
/// assert!(matches!(breaker.call(boom), Err(CallError::Failed(_))));
/// assert!(matches!(breaker.call(boom), Err(CallError::Failed(_))));
/// assert_eq!(breaker.state(), CircuitState::Open);
/// assert!(matches!(breaker.call(|| Ok::<_, std::io::Error>(1)), Err(CallError::Rejected(_))));
///
/// clock.advance(Duration::from_secs(60));
/// let probe = breaker.try_acquire().unwrap();
/// assert_eq!(breaker.state(), CircuitState::HalfOpen);
/// probe.success();
/// ```
pub struct CircuitBreaker {
    name: Arc<str>,
    config: BreakerConfig,
    clock: SharedClock,
    base: Stamp,
    slow_nanos: Option<u64>,
    state: AtomicU64,
    probes: AtomicU64,
    /// Open: when it may probe. Half-open: when it reopens. Nanos since `base`.
    deadline: AtomicU64,
    /// When the current state began. Nanos since `base`.
    since: AtomicU64,
    window: Window,
    consecutive: AtomicU32,
    trips: AtomicU64,
    rejected: AtomicU64,
    /// Trips without a close in between (exponential open wait).
    transition: Mutex<u32>,
    listeners: Listeners,
    shared_listeners: Option<Arc<Listeners>>,
    predicate: Option<FailurePredicate>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`CircuitBreaker`].
#[must_use = "a builder does nothing until build() is called"]
pub struct CircuitBreakerBuilder {
    name: Arc<str>,
    config: BreakerConfig,
    clock: Option<SharedClock>,
    listeners: Vec<Listener>,
    shared: Option<Arc<Listeners>>,
    predicate: Option<FailurePredicate>,
}

impl std::fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerBuilder {
    /// The configuration (default: [`BreakerConfig::default`]).
    pub fn config(mut self, config: BreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Which errors returned through [`CircuitBreaker::call`] count as
    /// failures (default: all of them).
    pub fn failure_predicate(
        mut self,
        predicate: impl Fn(&(dyn Error + 'static)) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Adds a transition listener.
    pub fn on_transition(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    pub(crate) fn shared_listeners(mut self, shared: Arc<Listeners>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The breaker, closed; fails if the configuration is invalid.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.config.validate()?;
        Ok(self.build_validated())
    }

    /// `build` for a configuration already validated.
    pub(crate) fn build_validated(self) -> CircuitBreaker {
        let clock = self.clock.unwrap_or_else(system_clock);
        let base = clock.stamp();
        let listeners = Listeners::default();
        for l in self.listeners {
            listeners.push(l);
        }
        CircuitBreaker {
            name: self.name,
            slow_nanos: self.config.slow_call_threshold.map(saturating_nanos),
            window: Window::new(self.config.window),
            config: self.config,
            clock,
            base,
            state: AtomicU64::new(Word::new(CircuitState::Closed, 0).pack()),
            probes: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            since: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            trips: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            transition: Mutex::new(0),
            listeners,
            shared_listeners: self.shared,
            predicate: self.predicate,
        }
    }
}

fn rate(part: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| part as f64 * 100.0 / of as f64)
}

impl CircuitBreaker {
    /// A builder for a breaker named `name` (the component it guards).
    pub fn builder(name: impl Into<Arc<str>>) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            name: name.into(),
            config: BreakerConfig::default(),
            clock: None,
            listeners: Vec::new(),
            shared: None,
            predicate: None,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state (one atomic load; a half-open breaker past its max
    /// wait reports half-open until the next acquire or report reopens it).
    pub fn state(&self) -> CircuitState {
        Word::unpack(self.state.load(Ordering::Acquire)).kind
    }

    /// The state the next call would meet: like [`state`](Self::state), but
    /// an open breaker whose wait has run out reports half-open (it moves
    /// there lazily, on that next call). Health reports use this, so an
    /// open breaker does not hold health down once traffic stops.
    pub fn effective_state(&self) -> CircuitState {
        match self.state() {
            CircuitState::Open if self.now() >= self.deadline.load(Ordering::Acquire) => {
                CircuitState::HalfOpen
            }
            state => state,
        }
    }

    /// Adds a transition listener.
    pub fn on_transition(&self, listener: Listener) {
        self.listeners.push(listener);
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.stamp().nanos_since(self.base)
    }

    #[inline]
    pub(crate) fn started(&self) -> Option<Stamp> {
        self.slow_nanos.map(|_| self.clock.stamp())
    }

    #[inline]
    pub(crate) fn elapsed_since(&self, started: Option<Stamp>) -> Option<Duration> {
        started.map(|s| self.clock.stamp().saturating_since(s))
    }

    pub(crate) fn predicate(&self) -> Option<&FailurePredicate> {
        self.predicate.as_ref()
    }

    /// Asks to run one call. Closed: one atomic load. The permit must be
    /// reported with [`Permit::success`], [`Permit::failure`] or
    /// [`Permit::ignore`]; dropping it unreported counts as ignored.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.acquire()
            .map(|(kind, generation)| Permit::new(self, kind, generation))
    }

    /// The acquire logic: the state and generation the permit belongs to.
    #[inline]
    pub(crate) fn acquire(&self) -> Result<(CircuitState, u64), Rejected> {
        match Word::closed_generation(self.state.load(Ordering::Acquire)) {
            Some(generation) => Ok((CircuitState::Closed, generation)),
            None => self.acquire_slow(),
        }
    }

    #[inline(never)]
    fn acquire_slow(&self) -> Result<(CircuitState, u64), Rejected> {
        loop {
            let raw = self.state.load(Ordering::Acquire);
            let w = Word::unpack(raw);
            match w.kind {
                CircuitState::Open => {
                    let now = self.now();
                    let until = self.deadline.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(CircuitState::Open, until - now));
                    }
                    self.transition(Some(w), CircuitState::HalfOpen, now);
                }
                CircuitState::HalfOpen => {
                    let now = self.now();
                    let until = self.deadline.load(Ordering::Acquire);
                    if now >= until {
                        self.transition(Some(w), CircuitState::Open, now);
                        continue;
                    }
                    if w.admitted >= self.config.permitted_calls_in_half_open {
                        let wait = Duration::from_nanos(until - now).min(HALF_OPEN_RETRY);
                        return Err(self.reject(CircuitState::HalfOpen, saturating_nanos(wait)));
                    }
                    let next = Word {
                        admitted: w.admitted + 1,
                        ..w
                    };
                    if self
                        .state
                        .compare_exchange(raw, next.pack(), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Ok((CircuitState::HalfOpen, w.generation));
                    }
                }
                CircuitState::ForcedOpen => {
                    return Err(self.reject(
                        CircuitState::ForcedOpen,
                        saturating_nanos(self.config.wait_in_open),
                    ));
                }
                kind => return Ok((kind, w.generation)),
            }
        }
    }

    fn reject(&self, state: CircuitState, retry_after: u64) -> Rejected {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Rejected {
            state,
            retry_after: Duration::from_nanos(retry_after),
        }
    }

    /// Holds the breaker open until [`reset`](Self::reset) (operator).
    pub fn force_open(&self) {
        self.transition(None, CircuitState::ForcedOpen, self.now());
    }

    /// Lets every call through and records nothing (operator).
    pub fn disable(&self) {
        self.transition(None, CircuitState::Disabled, self.now());
    }

    /// Lets every call through; records outcomes but never trips (operator).
    pub fn metrics_only(&self) {
        self.transition(None, CircuitState::MetricsOnly, self.now());
    }

    /// Closes the breaker with an empty window, from any state (operator).
    pub fn reset(&self) {
        self.transition(None, CircuitState::Closed, self.now());
    }

    /// A snapshot of its state and counts.
    pub fn metrics(&self) -> BreakerMetrics {
        let now = self.now();
        let w = Word::unpack(self.state.load(Ordering::Acquire));
        let c = self.window.counts(now);
        let since = self.since.load(Ordering::Acquire);
        let until = self.deadline.load(Ordering::Acquire);
        BreakerMetrics {
            name: self.name.to_string(),
            state: w.kind,
            time_in_state: Duration::from_nanos(now.saturating_sub(since)),
            calls: c.calls,
            failed_calls: c.failures,
            slow_calls: c.slow,
            failure_rate: rate(c.failures, c.calls),
            slow_call_rate: rate(c.slow, c.calls),
            consecutive_failures: self.consecutive.load(Ordering::Acquire),
            trips: self.trips.load(Ordering::Relaxed),
            rejected_calls: self.rejected.load(Ordering::Relaxed),
            retry_after: (w.kind == CircuitState::Open)
                .then(|| Duration::from_nanos(until.saturating_sub(now))),
        }
    }
}
