//! The assembled [`Bus`]: `bus_core::Bus` plus handles on its components.

// Some features switch off the code that uses these.
#![cfg_attr(
    not(all(feature = "dlq", feature = "http")),
    allow(unused_imports, unused_mut, unused_variables)
)]

use crate::builder::{BuildError, BusBuilder};
use crate::config::Config;
use bus_core::ShutdownReport;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The components the builder created (not the ones the caller replaced).
#[derive(Default)]
pub(crate) struct Parts {
    pub(crate) data_dir: PathBuf,
    #[cfg(feature = "breaker")]
    pub(crate) breakers: Option<Arc<bus_breaker::BreakerRegistry>>,
    #[cfg(feature = "dlq")]
    pub(crate) dlq: Option<Arc<bus_dlq::SqliteDlq>>,
    #[cfg(feature = "logger")]
    pub(crate) logger: Option<Arc<bus_logger::ErrorLogger>>,
    #[cfg(feature = "health")]
    pub(crate) health: Option<bus_health::HealthMonitor>,
}

impl Parts {
    pub(crate) fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            ..Self::default()
        }
    }
}

/// The message bus with its production components wired in.
///
/// Dereferences to [`bus_core::Bus`] for `publish`, `subscriber`, `stats`, ...
/// [`shutdown`](Bus::shutdown) also stops the replay poller and the health
/// endpoint, flushes the error log and writes `<data-dir>/health.json`.
///
/// The bus is shut down (with a 5 s deadline) when dropped if
/// [`shutdown`](Bus::shutdown) was not called.
pub struct Bus {
    core: bus_core::Bus,
    parts: Parts,
    background: Mutex<Background>,
}

#[derive(Default)]
struct Background {
    #[cfg(feature = "dlq")]
    poller: Option<crate::replay::ReplayPoller>,
    #[cfg(feature = "http")]
    http: Option<bus_health::HealthServer>,
    done: bool,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("data_dir", &self.parts.data_dir)
            .field("stats", &self.core.stats())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Bus {
    type Target = bus_core::Bus;
    fn deref(&self) -> &bus_core::Bus {
        &self.core
    }
}

impl Bus {
    /// A builder with the production defaults.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// Builds a bus from a validated configuration.
    pub fn from_config(config: Config) -> Result<Self, BuildError> {
        BusBuilder::from_config(config).build()
    }

    /// Builds a bus from a `.toml` or `.json` configuration file.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, BuildError> {
        let config = Config::from_file(path).map_err(BuildError::from)?;
        Self::from_config(config)
    }

    pub(crate) fn start(
        core: bus_core::Bus,
        parts: Parts,
        config: &Config,
    ) -> Result<Self, BuildError> {
        let bus = Self {
            core,
            parts,
            background: Mutex::new(Background::default()),
        };
        #[cfg(feature = "dlq")]
        if let Some(dlq) = &bus.parts.dlq {
            if !config.replay_poll_interval.is_zero() {
                let poller = crate::replay::ReplayPoller::start(
                    bus.core.clone(),
                    Arc::clone(dlq),
                    config.replay_poll_interval,
                )
                .map_err(BuildError::Spawn)?;
                bus.lock().poller = Some(poller);
            }
        }
        #[cfg(feature = "http")]
        if let (Some(addr), Some(monitor)) = (&config.http, &bus.parts.health) {
            let server = bus_health::HealthServer::start(addr.as_str(), monitor.clone())?;
            bus.lock().http = Some(server);
        }
        #[cfg(not(any(feature = "dlq", feature = "http")))]
        let _ = config;
        Ok(bus)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Background> {
        self.background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The `bus-core` bus underneath.
    pub fn core(&self) -> &bus_core::Bus {
        &self.core
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.parts.data_dir
    }

    /// The health report now (with the default health monitor).
    #[cfg(feature = "health")]
    pub fn health(&self) -> Option<bus_health::HealthReport> {
        self.parts.health.as_ref().map(|m| m.report())
    }

    /// The health monitor (unless error handling built none).
    #[cfg(feature = "health")]
    pub fn health_monitor(&self) -> Option<&bus_health::HealthMonitor> {
        self.parts.health.as_ref()
    }

    /// The circuit breakers, one per subscriber (`None` with
    /// `enable_error_handling(false)` or custom guards).
    #[cfg(feature = "breaker")]
    pub fn breakers(&self) -> Option<&Arc<bus_breaker::BreakerRegistry>> {
        self.parts.breakers.as_ref()
    }

    /// The SQLite dead-letter queue, for queries (`None` with a custom store).
    #[cfg(feature = "dlq")]
    pub fn dlq(&self) -> Option<&Arc<bus_dlq::SqliteDlq>> {
        self.parts.dlq.as_ref()
    }

    /// The error log (`None` with a custom error sink).
    #[cfg(feature = "logger")]
    pub fn logger(&self) -> Option<&Arc<bus_logger::ErrorLogger>> {
        self.parts.logger.as_ref()
    }

    /// Where the health endpoint listens, if it runs.
    #[cfg(feature = "http")]
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.lock().http.as_ref().map(|s| s.local_addr())
    }

    /// Stops the replay poller, shuts the core bus down (see
    /// [`bus_core::Bus::shutdown`]: leftovers are dead-lettered), flushes the
    /// error log, writes the final health snapshot to
    /// `<data-dir>/health.json` and stops the health endpoint.
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let bg = {
            let mut g = self.lock();
            let first = !g.done;
            g.done = true;
            first.then(|| Background {
                #[cfg(feature = "dlq")]
                poller: g.poller.take(),
                #[cfg(feature = "http")]
                http: g.http.take(),
                done: true,
            })
        };
        let Some(mut bg) = bg else {
            return self.core.shutdown(timeout);
        };
        #[cfg(feature = "dlq")]
        if let Some(p) = bg.poller.take() {
            p.stop();
        }
        let report = self.core.shutdown(timeout);
        #[cfg(feature = "logger")]
        if let Some(logger) = &self.parts.logger {
            if let Err(error) = logger.flush() {
                tracing::error!(%error, "could not flush the error log at shutdown");
            }
        }
        #[cfg(feature = "health")]
        if let Some(monitor) = &self.parts.health {
            if let Err(error) = monitor.write_snapshot(&self.parts.data_dir) {
                tracing::error!(%error, "could not write the final health snapshot");
            }
        }
        #[cfg(feature = "http")]
        if let Some(server) = bg.http.take() {
            server.stop();
        }
        report
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if !self.lock().done {
            let _ = self.shutdown(Duration::from_secs(5));
        }
    }
}
