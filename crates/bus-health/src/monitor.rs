//! [`HealthMonitor`]: the [`Observer`] that counts, and the status logic.

use crate::AlertSink;
use crate::alert::{AlertKind, Alerter};
use crate::config::{ConfigError, HealthConfig};
use crate::report::{Counts, HealthReport, HealthStatus, LatencySummary};
use crate::window::{Cursor, Kind, Latency, SLOTS, Totals, Window, category_slot, reason_index};
use bus_core::time::{SharedClock, Stamp, system_clock};
use bus_core::{BrokerConnection, BusEvent, CircuitState, Ledger, Observer, QueueDepth};
use bus_errors::{ErrorCategory, Severity};
use bus_sync::Stripe;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

mod judge;

/// Reads the subscriber queues (usually `Transport::queue_depths`).
pub type QueueSource = Arc<dyn Fn() -> Vec<QueueDepth> + Send + Sync>;
/// Reads a transport's broker connection (see
/// [`Transport::broker_connection`](bus_core::Transport::broker_connection)).
/// Called on every report, so it must answer at once.
pub type BrokerSource = Arc<dyn Fn() -> Option<BrokerConnection> + Send + Sync>;
/// Reads the circuits (usually a breaker registry's states).
pub type CircuitSource = Arc<dyn Fn() -> Vec<(String, CircuitState)> + Send + Sync>;
/// Reads the age of the oldest waiting message.
pub type AgeSource = Arc<dyn Fn() -> Option<Duration> + Send + Sync>;

/// Watches the bus through [`Observer::on_event`] and judges its health.
///
/// Cheap to clone (an `Arc`). `on_event` takes no lock for message events
/// (acked, failed, retried, dead-lettered, ...): it bumps atomic counters in
/// a ring of time buckets. Circuit transitions and dead-letter write failures
/// (rare) update a small map under a mutex. Publishes are read from the
/// ledger of each bus the monitor is attached to ([`Observer::attach`]), on
/// each report.
///
/// ```
/// use bus_core::{BusEvent, Observer, Topic};
/// use bus_health::{HealthMonitor, HealthStatus};
/// use bus_core::time::{Clock, SystemClock};
/// use std::time::Duration;
///
/// let monitor = HealthMonitor::new();
/// let topic = Topic::new("orders.created").unwrap();
/// monitor.on_event(SystemClock.stamp(), &BusEvent::Acked {
///     topic: &topic, component: "billing",
///     created_at: std::time::SystemTime::UNIX_EPOCH, handler_time: Duration::from_millis(1), attempt: 1,
/// });
/// let report = monitor.report();
/// assert_eq!(report.status, HealthStatus::Healthy);
/// assert_eq!(report.window.acked, 1);
/// ```
#[derive(Clone)]
pub struct HealthMonitor {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: HealthConfig,
    pub(crate) clock: SharedClock,
    window: Window,
    pub(crate) totals: Totals,
    pub(crate) latency: Latency,
    circuits: Mutex<BTreeMap<String, CircuitState>>,
    dlq_failing: Mutex<BTreeSet<String>>,
    queue_source: Option<QueueSource>,
    circuit_source: Option<CircuitSource>,
    age_source: Option<AgeSource>,
    broker_source: Option<BrokerSource>,
    pub(crate) alerts: Alerter,
    last_status: AtomicU8,
    /// The ledgers of the buses this monitor observes: they count publishes.
    /// Kept after a bus is gone (its publishes stay in the totals); each
    /// costs a sum of one striped counter per report.
    ledgers: Mutex<Vec<Ledger>>,
    /// Publishes already filed in the window (see `publishes`).
    publishes_filed: AtomicU64,
}

/// What the queue, circuit and age sources returned at one moment: the
/// inputs of a report that may take long to read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readings {
    queues: Vec<QueueDepth>,
    circuits: Vec<(String, CircuitState)>,
    oldest: Option<Duration>,
}

/// Builds a [`HealthMonitor`].
#[must_use]
pub struct HealthMonitorBuilder {
    config: HealthConfig,
    clock: SharedClock,
    queue_source: Option<QueueSource>,
    circuit_source: Option<CircuitSource>,
    age_source: Option<AgeSource>,
    broker_source: Option<BrokerSource>,
    sinks: Vec<Arc<dyn AlertSink>>,
}

impl std::fmt::Debug for HealthMonitorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitorBuilder")
            .field("config", &self.config)
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl HealthMonitorBuilder {
    /// Uses this configuration (validated by [`build`](Self::build)).
    pub fn with_config(mut self, config: HealthConfig) -> Self {
        self.config = config;
        self
    }
    /// Uses this clock (a `ManualClock` in tests). It must be the clock of
    /// the bus the monitor observes: the bus stamps each event with its own
    /// clock's time, and the monitor reads its windows at this clock's time.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// Reads queue depths from `source` on each report.
    pub fn with_queue_source(mut self, source: QueueSource) -> Self {
        self.queue_source = Some(source);
        self
    }
    /// Reads circuit states from `source` on each report (overrides what
    /// transition events said).
    pub fn with_circuit_source(mut self, source: CircuitSource) -> Self {
        self.circuit_source = Some(source);
        self
    }
    /// Reads the oldest waiting message's age from `source` on each report.
    pub fn with_oldest_age_source(mut self, source: AgeSource) -> Self {
        self.age_source = Some(source);
        self
    }
    /// Reads the broker connection from `source` on each report: down is
    /// degraded, down for `broker_critical_after` or longer is critical.
    pub fn with_broker_source(mut self, source: BrokerSource) -> Self {
        self.broker_source = Some(source);
        self
    }
    /// Adds an alert sink. With none, alerts go to [`TracingAlertSink`](crate::TracingAlertSink).
    pub fn with_alert_sink(mut self, sink: Arc<dyn AlertSink>) -> Self {
        self.sinks.push(sink);
        self
    }
    /// Validates the configuration and starts the alert thread.
    pub fn build(self) -> Result<HealthMonitor, ConfigError> {
        self.config.validate()?;
        let mut sinks = self.sinks;
        if sinks.is_empty() {
            sinks.push(Arc::new(crate::TracingAlertSink));
        }
        let started = self.clock.stamp();
        let inner = Arc::new_cyclic(|weak| Inner {
            window: Window::new(started, self.config.window, self.config.buckets),
            alerts: Alerter::start(&self.config, sinks, weak.clone()),
            config: self.config,
            clock: self.clock,
            totals: Totals::new(),
            latency: Latency::new(),
            circuits: Mutex::new(BTreeMap::new()),
            dlq_failing: Mutex::new(BTreeSet::new()),
            queue_source: self.queue_source,
            circuit_source: self.circuit_source,
            age_source: self.age_source,
            broker_source: self.broker_source,
            last_status: AtomicU8::new(HealthStatus::Healthy.code()),
            ledgers: Mutex::new(Vec::new()),
            publishes_filed: AtomicU64::new(0),
        });
        Ok(HealthMonitor { inner })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for HealthMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthMonitor {
    /// A monitor with the default configuration and the system clock.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|e| unreachable!("the default config is valid: {e}"))
    }

    /// Starts a builder.
    pub fn builder() -> HealthMonitorBuilder {
        HealthMonitorBuilder {
            config: HealthConfig::default(),
            clock: system_clock(),
            queue_source: None,
            circuit_source: None,
            age_source: None,
            broker_source: None,
            sinks: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HealthConfig {
        &self.inner.config
    }

    /// Computes the report now. A transition to critical raises an alert.
    pub fn report(&self) -> HealthReport {
        self.inner.report()
    }

    /// Counts `event` as happening now on the monitor's clock: for events
    /// that do not come from a bus (tools, tests). A bus calls
    /// [`Observer::on_event`] with the time it already read, on its own clock;
    /// give the monitor that same clock.
    pub fn observe(&self, event: &BusEvent<'_>) {
        self.inner.on_event(self.inner.clock.stamp(), event);
    }

    /// Waits until the alert thread has handled every alert raised so far
    /// (for tests and shutdown). False if it did not answer within `timeout`.
    pub fn flush_alerts(&self, timeout: Duration) -> bool {
        self.inner.alerts.flush(timeout)
    }
}

impl Inner {
    fn count(&self, tick: Cursor, slot: usize, me: Stripe) {
        self.totals.add(slot, me);
        self.window.add(tick, slot, me);
    }

    fn since_start(&self, now: Stamp) -> u64 {
        self.window.nanos(now)
    }

    /// Publishes accepted by the observed buses so far
    /// ([`Ledger::accepted`]: one per subscriber group reached), read from
    /// their ledgers. Those not seen
    /// by an earlier call are filed in the window's bucket of `now`: the
    /// alert thread reports every `evaluate_every`, so a publish lands in
    /// the window at most that late. The total is exact.
    fn publishes(&self, now: Stamp) -> u64 {
        let total: u64 = lock(&self.ledgers).iter().map(Ledger::accepted).sum();
        // A maximum, not a swap: two reports racing each file their part once.
        let filed = self.publishes_filed.fetch_max(total, Ordering::Relaxed);
        if total > filed {
            self.window.add_n(
                self.window.cursor(now),
                Kind::Published as usize,
                total - filed,
                Stripe::current(),
            );
        }
        // Never less than another report's read: each ledger only grows, but
        // two reports race, and a Prometheus counter that goes down reads as
        // a reset.
        total.max(filed)
    }

    /// The totals since start, publishes included (filed into the window
    /// first, so read the window after this).
    pub(crate) fn totals(&self, now: Stamp) -> [u64; SLOTS] {
        let published = self.publishes(now);
        let mut t = self.totals.snapshot();
        t[Kind::Published as usize] = published;
        t
    }

    fn on_event(&self, now: Stamp, event: &BusEvent<'_>) {
        let tick = self.window.cursor(now);
        // One thread-local lookup for every count this event makes.
        let me = Stripe::current();
        match *event {
            BusEvent::Rejected { reason, .. } => {
                self.count(tick, Kind::Rejected as usize, me);
                // The broker refused or could not confirm a publish: the
                // bus failed to take work it was given, so it weighs on
                // the success rate like a failed attempt. A full queue or
                // a bad input is the caller's to handle and does not.
                if *reason == *"transport" {
                    self.count(tick, Kind::BrokerRefused as usize, me);
                }
            }
            BusEvent::Acked {
                handler_time,
                attempt,
                ..
            } => {
                self.count(tick, Kind::Acked as usize, me);
                if attempt > 1 {
                    self.count(tick, Kind::Recovered as usize, me);
                }
                self.latency.record(handler_time, me);
            }
            BusEvent::Failed { report } => {
                self.count(tick, Kind::Failed as usize, me);
                self.count(tick, category_slot(report.category), me);
                if report.severity == Severity::Critical {
                    self.alerts.raise_report(
                        self.since_start(now),
                        AlertKind::CriticalReport,
                        report,
                    );
                }
            }
            BusEvent::Retried { .. } => self.count(tick, Kind::Retried as usize, me),
            BusEvent::DeadLettered { reason, .. } => {
                self.count(tick, Kind::DeadLettered as usize, me);
                self.totals.dlq_reasons[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
            }
            BusEvent::Escalated { report } => {
                self.count(tick, Kind::Escalated as usize, me);
                self.alerts
                    .raise_report(self.since_start(now), AlertKind::Escalated, report);
            }
            BusEvent::Discarded { .. } => self.count(tick, Kind::Discarded as usize, me),
            BusEvent::Parked { .. } => self.count(tick, Kind::Parked as usize, me),
            BusEvent::CircuitTransition { component, to, .. } => {
                self.totals
                    .circuit_transitions
                    .fetch_add(1, Ordering::Relaxed);
                self.set_circuit(component, to);
                if to == CircuitState::ForcedOpen {
                    self.alerts.raise(
                        self.since_start(now),
                        AlertKind::CircuitForcedOpen,
                        None,
                        component,
                        format!("circuit {component} was forced open"),
                    );
                }
            }
            BusEvent::DlqWriteFailed { component, error } => {
                self.totals
                    .dlq_write_failures
                    .fetch_add(1, Ordering::Relaxed);
                lock(&self.dlq_failing).insert(component.to_owned());
                self.alerts.raise(
                    self.since_start(now),
                    AlertKind::DlqWriteFailed,
                    None,
                    component,
                    format!("dead-letter queue cannot write for {component}: {error}"),
                );
            }
            BusEvent::DlqRecovered { component } => {
                lock(&self.dlq_failing).remove(component);
            }
            _ => {}
        }
    }

    fn set_circuit(&self, component: &str, state: CircuitState) {
        let mut map = lock(&self.circuits);
        let cap = self.config.max_label_values;
        if map.len() >= cap && !map.contains_key(component) {
            map.insert("other".to_owned(), state);
        } else {
            map.insert(component.to_owned(), state);
        }
    }
}

impl Observer for HealthMonitor {
    fn on_event(&self, at: Stamp, event: &BusEvent<'_>) {
        self.inner.on_event(at, event);
    }

    fn attach(&self, ledger: &Ledger) {
        lock(&self.inner.ledgers).push(ledger.clone());
    }
}
