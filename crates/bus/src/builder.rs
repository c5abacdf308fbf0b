//! [`BusBuilder`]: wires the production components around `bus-core`.

use crate::config::{Config, ConfigError};
use crate::facade::{Bus, Parts};
use bus_core::time::{SharedClock, system_clock};
use bus_core::trace::TracePropagator;
use bus_core::{
    DeadLetterStore, ErrorSink, GuardProvider, NoGuard, NoRetry, Observer, Observers,
    RecoveryPolicy, Transport, memory::MemoryTransport,
};
use bus_errors::Classifier;
use std::path::PathBuf;
use std::sync::Arc;

/// The assembled bus could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The SQLite transport (`[sqlite]`) could not be opened.
    #[cfg(feature = "sqlite")]
    #[error("cannot open the sqlite transport: {0}")]
    Sqlite(#[from] bus_sqlite::SqliteError),
    /// The dead-letter queue could not be opened.
    #[cfg(feature = "dlq")]
    #[error("cannot open the dead-letter queue: {0}")]
    Dlq(#[from] bus_core::DlqError),
    /// The error log could not be opened.
    #[cfg(feature = "logger")]
    #[error("cannot open the error log: {0}")]
    Logger(#[from] bus_logger::LoggerError),
    /// The health monitor rejected its configuration.
    #[cfg(feature = "health")]
    #[error("health: {0}")]
    Health(#[from] bus_health::ConfigError),
    /// The health endpoint could not start.
    #[cfg(feature = "http")]
    #[error("health endpoint: {0}")]
    Http(#[from] bus_health::HttpError),
    /// The console's operator token could not be read.
    #[cfg(feature = "console")]
    #[error("console: {0}")]
    Console(#[from] bus_console::TokenError),
    /// A thread could not be spawned.
    #[error("cannot spawn a thread: {0}")]
    Spawn(std::io::Error),
}

/// Builds a [`Bus`] ([`Bus::builder`]) with production defaults
/// (`docs/tuning.md`), each replaceable. It is the only builder of the bus:
/// settings go in its [`Config`] ([`configure`](Self::configure)), plugs
/// are set here.
///
/// | plug | default | replace with |
/// |---|---|---|
/// | guards | a circuit breaker per subscriber ([`BreakerRegistry`](crate::breaker::BreakerRegistry)) | [`guards`](Self::guards) |
/// | recovery | per-category retries with a budget ([`Recovery`](crate::recovery::Recovery)) | [`recovery`](Self::recovery) |
/// | dead letters | [`SqliteDlq`](crate::dlq::SqliteDlq) at `<data-dir>/dlq.sqlite` | [`dead_letters`](Self::dead_letters) |
/// | error sink | [`ErrorLogger`](crate::logger::ErrorLogger) at `<data-dir>/logs` | [`error_sink`](Self::error_sink) |
/// | observers | [`HealthMonitor`](crate::health::HealthMonitor) | [`observer`](Self::observer) adds more |
/// | classifier | [`DefaultClassifier`](crate::errors::DefaultClassifier) | [`classifier`](Self::classifier) |
///
/// [`enable_error_handling(false)`](Self::enable_error_handling) gives the
/// plain bus: no breakers and [`NoRetry`](crate::plug::NoRetry) (every
/// failure goes straight to the dead-letter queue); the invariant still
/// holds.
#[must_use]
pub struct BusBuilder {
    pub(crate) config: Config,
    pub(crate) clock: Option<SharedClock>,
    pub(crate) transport: Option<Arc<dyn Transport>>,
    pub(crate) classifier: Option<Arc<dyn Classifier>>,
    pub(crate) guards: Option<Arc<dyn GuardProvider>>,
    pub(crate) recovery: Option<Arc<dyn RecoveryPolicy>>,
    pub(crate) dead_letters: Option<Arc<dyn DeadLetterStore>>,
    pub(crate) error_sink: Option<Arc<dyn ErrorSink>>,
    pub(crate) observers: Vec<Arc<dyn Observer>>,
    pub(crate) propagator: Option<Arc<dyn TracePropagator>>,
}

impl std::fmt::Debug for BusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusBuilder")
            .field("config", &self.config)
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl Default for BusBuilder {
    fn default() -> Self {
        Self::from_config(Config::default())
    }
}

impl BusBuilder {
    /// A builder starting from `config` (validated in [`build`](Self::build)).
    pub fn from_config(config: Config) -> Self {
        Self {
            config,
            clock: None,
            transport: None,
            classifier: None,
            guards: None,
            recovery: None,
            dead_letters: None,
            error_sink: None,
            observers: Vec::new(),
            propagator: None,
        }
    }

    /// The current configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Edits the configuration in place.
    pub fn configure(mut self, edit: impl FnOnce(&mut Config)) -> Self {
        edit(&mut self.config);
        self
    }

    /// The data directory (default `./bus-data`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// `false` gives the plain bus: no breakers, no retries, failures go
    /// straight to the dead-letter queue. Plugs set explicitly still win.
    pub fn enable_error_handling(mut self, on: bool) -> Self {
        self.config.error_handling = on;
        self
    }

    /// The time source for every component (default: the system clock).
    /// Tests pass a [`ManualClock`](crate::time::ManualClock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The transport (default: a [`MemoryTransport`] on the builder's clock).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Runs the bus on the durable SQLite transport at
    /// `<data-dir>/queue.sqlite` (the `[sqlite]` section, with its defaults
    /// unless the configuration set them): confirmed messages, leases and
    /// scheduled retries survive a crash of the process.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let bus = bus::Bus::builder().data_dir(dir.path()).sqlite().build().unwrap();
    /// assert!(dir.path().join("queue.sqlite").exists());
    /// bus.shutdown(std::time::Duration::from_secs(5));
    /// ```
    #[cfg(feature = "sqlite")]
    pub fn sqlite(mut self) -> Self {
        self.config.sqlite.get_or_insert_with(Default::default);
        self
    }

    /// The classifier (default: [`DefaultClassifier`](crate::errors::DefaultClassifier)).
    pub fn classifier(mut self, classifier: Arc<dyn Classifier>) -> Self {
        self.classifier = Some(classifier);
        self
    }

    /// Replaces the per-subscriber circuit breakers.
    pub fn guards(mut self, guards: Arc<dyn GuardProvider>) -> Self {
        self.guards = Some(guards);
        self
    }

    /// Replaces the per-category retry policy.
    pub fn recovery(mut self, recovery: Arc<dyn RecoveryPolicy>) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Replaces the SQLite dead-letter queue (then [`Bus::dlq`] is `None` and
    /// no replay poller runs).
    pub fn dead_letters(mut self, store: Arc<dyn DeadLetterStore>) -> Self {
        self.dead_letters = Some(store);
        self
    }

    /// Replaces the file error log.
    pub fn error_sink(mut self, sink: Arc<dyn ErrorSink>) -> Self {
        self.error_sink = Some(sink);
        self
    }

    /// Adds an observer. Each call adds one beside the health monitor and
    /// those added before; none replaces another. Every observer sees every
    /// event, the health monitor first, then the others in the order added.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Carries trace context in message headers. Default: the W3C
    /// propagator of `bus-otel` with feature `otel` (it writes nothing
    /// unless an OpenTelemetry span is current), else none.
    pub fn trace_propagator(mut self, propagator: Arc<dyn TracePropagator>) -> Self {
        self.propagator = Some(propagator);
        self
    }

    /// Validates the configuration, opens the data directory's files and
    /// starts the bus.
    pub fn build(self) -> Result<Bus, BuildError> {
        self.config.validate()?;
        let cfg = &self.config;
        create_data_dir(&cfg.data_dir).map_err(|source| BuildError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let clock = self.clock.clone().unwrap_or_else(system_clock);
        let transport: Arc<dyn Transport> = match &self.transport {
            Some(t) => Arc::clone(t),
            None => default_transport(cfg, &clock)?,
        };
        let mut parts = Parts::new(cfg.data_dir.clone());

        // Dead letters.
        let dlq: Arc<dyn DeadLetterStore> = match &self.dead_letters {
            Some(d) => Arc::clone(d),
            None => default_dlq(cfg, &mut parts)?,
        };
        // Error sink.
        let sink: Arc<dyn ErrorSink> = match &self.error_sink {
            Some(s) => Arc::clone(s),
            None => default_sink(cfg, &clock, &mut parts)?,
        };
        // Guards.
        let guards: Arc<dyn GuardProvider> = match &self.guards {
            Some(g) => Arc::clone(g),
            None if cfg.error_handling => default_guards(cfg, &clock, &mut parts)?,
            None => Arc::new(NoGuard),
        };
        // Recovery.
        let recovery: Arc<dyn RecoveryPolicy> = match &self.recovery {
            Some(r) => Arc::clone(r),
            None if cfg.error_handling => default_recovery(cfg, &clock)?,
            None => Arc::new(NoRetry),
        };
        // Observers: the health monitor first, then the caller's.
        let mut observers = Observers::new();
        add_health(cfg, &clock, &transport, &mut parts, &mut observers)?;
        for o in &self.observers {
            observers.push(Arc::clone(o));
        }
        let observers = Arc::new(observers);
        forward_transitions(&parts, &observers, &clock);

        let mut core = bus_core::Bus::builder()
            .transport(transport)
            .guards(guards)
            .recovery(recovery)
            .dead_letters(dlq)
            .error_sink(sink)
            .observer(observers)
            .clock(clock)
            .config(cfg.core());
        if let Some(c) = &self.classifier {
            core = core.classifier(Arc::clone(c));
        }
        if let Some(p) = self.propagator.clone().or_else(default_propagator) {
            core = core.trace_propagator(p);
        }
        Bus::start(core.build(), parts, &self.config)
    }
}

#[cfg(feature = "otel")]
fn default_propagator() -> Option<Arc<dyn TracePropagator>> {
    Some(Arc::new(bus_otel::W3cPropagator))
}

#[cfg(not(feature = "otel"))]
fn default_propagator() -> Option<Arc<dyn TracePropagator>> {
    None
}

/// The transport the configuration names: SQLite when it has a `[sqlite]`
/// section, else memory.
fn default_transport(cfg: &Config, clock: &SharedClock) -> Result<Arc<dyn Transport>, BuildError> {
    #[cfg(feature = "sqlite")]
    if let Some(sqlite) = &cfg.sqlite {
        let mut sqlite = sqlite.clone();
        sqlite.data_dir = cfg.data_dir.clone();
        return Ok(Arc::new(bus_sqlite::SqliteTransport::open(sqlite)?));
    }
    #[cfg(not(feature = "sqlite"))]
    let _ = cfg;
    Ok(Arc::new(MemoryTransport::with_clock(Arc::clone(clock))))
}

/// Creates the data directory (and missing parents) readable by its owner
/// only: dead letters and error reports carry payloads and error text. An
/// existing directory keeps the mode its operator gave it.
fn create_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(feature = "dlq")]
fn default_dlq(cfg: &Config, parts: &mut Parts) -> Result<Arc<dyn DeadLetterStore>, BuildError> {
    let mut dc = bus_dlq::DlqConfig::new(&cfg.data_dir).with_durability(cfg.dlq.durability);
    if let Some(n) = cfg.dlq.max_letters {
        dc = dc.with_max_letters(n);
    }
    if let Some(n) = cfg.dlq.max_bytes {
        dc = dc.with_max_bytes(n);
    }
    let store = Arc::new(bus_dlq::SqliteDlq::open(dc)?);
    parts.dlq = Some(Arc::clone(&store));
    Ok(store)
}

#[cfg(not(feature = "dlq"))]
fn default_dlq(_: &Config, _: &mut Parts) -> Result<Arc<dyn DeadLetterStore>, BuildError> {
    Ok(Arc::new(bus_core::MemoryDeadLetters::new()))
}

#[cfg(feature = "logger")]
fn default_sink(
    cfg: &Config,
    clock: &SharedClock,
    parts: &mut Parts,
) -> Result<Arc<dyn ErrorSink>, BuildError> {
    let lc = bus_logger::LoggerConfig::default()
        .with_max_file_bytes(cfg.logger.max_file_bytes)
        .with_keep_files(cfg.logger.keep_files)
        .with_history_len(cfg.logger.history_len)
        .with_clock(Arc::clone(clock));
    let logger = Arc::new(bus_logger::ErrorLogger::open(&cfg.data_dir, lc)?);
    parts.logger = Some(Arc::clone(&logger));
    Ok(logger)
}

#[cfg(not(feature = "logger"))]
fn default_sink(
    _: &Config,
    _: &SharedClock,
    _: &mut Parts,
) -> Result<Arc<dyn ErrorSink>, BuildError> {
    Ok(Arc::new(bus_core::NoSink))
}

#[cfg(feature = "breaker")]
fn default_guards(
    cfg: &Config,
    clock: &SharedClock,
    parts: &mut Parts,
) -> Result<Arc<dyn GuardProvider>, BuildError> {
    let registry = bus_breaker::BreakerRegistry::with_clock(cfg.breaker.clone(), Arc::clone(clock))
        .map_err(|e| cfg.breaker_error(e))?;
    let registry = Arc::new(registry);
    parts.breakers = Some(Arc::clone(&registry));
    Ok(registry)
}

#[cfg(not(feature = "breaker"))]
fn default_guards(
    _: &Config,
    _: &SharedClock,
    _: &mut Parts,
) -> Result<Arc<dyn GuardProvider>, BuildError> {
    Ok(Arc::new(NoGuard))
}

#[cfg(feature = "recovery")]
fn default_recovery(
    cfg: &Config,
    clock: &SharedClock,
) -> Result<Arc<dyn RecoveryPolicy>, BuildError> {
    let r = bus_recovery::Recovery::builder()
        .config(cfg.recovery.clone())
        .clock(Arc::clone(clock))
        .build()
        .map_err(crate::config::recovery_error)?;
    Ok(Arc::new(r))
}

#[cfg(not(feature = "recovery"))]
fn default_recovery(_: &Config, _: &SharedClock) -> Result<Arc<dyn RecoveryPolicy>, BuildError> {
    Ok(Arc::new(bus_core::SimpleRetry::default()))
}

#[cfg(feature = "health")]
fn add_health(
    cfg: &Config,
    clock: &SharedClock,
    transport: &Arc<dyn Transport>,
    parts: &mut Parts,
    observers: &mut Observers,
) -> Result<(), BuildError> {
    let t = Arc::clone(transport);
    let broker = Arc::clone(transport);
    let mut b = bus_health::HealthMonitor::builder()
        .with_config(cfg.health.clone())
        .with_clock(Arc::clone(clock))
        .with_queue_source(Arc::new(move || t.queue_depths()))
        .with_broker_source(Arc::new(move || broker.broker_connection()));
    #[cfg(feature = "breaker")]
    if let Some(reg) = &parts.breakers {
        let reg = Arc::clone(reg);
        b = b.with_circuit_source(Arc::new(move || {
            reg.list()
                .into_iter()
                .map(|(name, state, _)| (name, state))
                .collect()
        }));
    }
    let sinks = cfg.alerts.sinks()?;
    if !sinks.is_empty() {
        // A sink given replaces the default one: keep the log too.
        b = b.with_alert_sink(Arc::new(bus_health::TracingAlertSink));
    }
    for sink in sinks {
        b = b.with_alert_sink(sink);
    }
    let monitor = b.build()?;
    observers.push(Arc::new(monitor.clone()));
    parts.health = Some(monitor);
    Ok(())
}

#[cfg(not(feature = "health"))]
fn add_health(
    _: &Config,
    _: &SharedClock,
    _: &Arc<dyn Transport>,
    _: &mut Parts,
    _: &mut Observers,
) -> Result<(), BuildError> {
    Ok(())
}

// Breaker transitions go to the observers (health) and to tracing.
#[cfg(feature = "breaker")]
fn forward_transitions(parts: &Parts, observers: &Arc<Observers>, clock: &SharedClock) {
    if let Some(reg) = &parts.breakers {
        let obs = Arc::clone(observers);
        let clock = Arc::clone(clock);
        reg.on_transition(Arc::new(move |t: &bus_breaker::Transition| {
            tracing::warn!(
                component = %t.component,
                from = %t.from,
                to = %t.to,
                open_for = ?t.open_for,
                "circuit breaker transition"
            );
            obs.on_event(
                clock.stamp(),
                &bus_core::BusEvent::CircuitTransition {
                    component: &t.component,
                    from: t.from,
                    to: t.to,
                },
            );
        }));
    }
}

#[cfg(not(feature = "breaker"))]
fn forward_transitions(_: &Parts, _: &Arc<Observers>, _: &SharedClock) {}
