//! The assembled [`Bus`]: the pipeline of `bus-core` plus handles on its
//! components.

// Some features switch off the code that uses these.
#![cfg_attr(
    not(all(feature = "dlq", feature = "http")),
    allow(unused_imports, unused_mut, unused_variables)
)]

use crate::builder::{BuildError, BusBuilder};
use crate::config::Config;
use bus_core::{
    BusStats, Bytes, Envelope, Handler, MessageId, PublishError, QueueDepth, ShutdownReport,
    SubscribeError, SubscriberBuilder, SubscriptionHandle, Transport,
};
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
        // Field by field, not `..Self::default()`: with every component
        // feature off the path is the only field and the update is needless.
        Self {
            data_dir,
            #[cfg(feature = "breaker")]
            breakers: None,
            #[cfg(feature = "dlq")]
            dlq: None,
            #[cfg(feature = "logger")]
            logger: None,
            #[cfg(feature = "health")]
            health: None,
        }
    }
}

/// The message bus with its production components wired in: built by
/// [`Bus::builder`] (or from a [`Config`]), it publishes, starts
/// subscribers, reports its ledger ([`stats`](Bus::stats)) and health, and
/// shuts down gracefully.
///
/// While it runs, `<data-dir>/health.json` is rewritten every
/// [`health_snapshot_interval`](Config::health_snapshot_interval) (default
/// 10 s), so a process that is killed leaves a recent one.
/// [`shutdown`](Bus::shutdown) also stops the replay poller and the health
/// endpoint, flushes the error log and writes the final `health.json`.
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
    #[cfg(feature = "health")]
    snapshots: Option<bus_health::SnapshotWriter>,
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
        if let Some(dlq) = &bus.parts.dlq
            && !config.replay_poll_interval.is_zero()
        {
            let poller = crate::replay::ReplayPoller::start(
                bus.core.clone(),
                Arc::clone(dlq),
                config.replay_poll_interval,
            )
            .map_err(BuildError::Spawn)?;
            bus.lock().poller = Some(poller);
        }
        #[cfg(feature = "health")]
        if let Some(monitor) = &bus.parts.health
            && !config.health_snapshot_interval.is_zero()
        {
            let writer = bus_health::SnapshotWriter::start(
                monitor.clone(),
                bus.parts.data_dir.clone(),
                config.health_snapshot_interval,
            )
            .map_err(BuildError::Spawn)?;
            bus.lock().snapshots = Some(writer);
        }
        #[cfg(feature = "http")]
        if let (Some(addr), Some(monitor)) = (&config.http, &bus.parts.health) {
            let server = bus.start_http(addr, monitor, config)?;
            bus.lock().http = Some(server);
        }
        #[cfg(not(any(feature = "dlq", feature = "health")))]
        let _ = config;
        Ok(bus)
    }

    /// The health endpoint, with the console mounted (feature `console`).
    #[cfg(feature = "http")]
    fn start_http(
        &self,
        addr: &str,
        monitor: &bus_health::HealthMonitor,
        config: &Config,
    ) -> Result<bus_health::HealthServer, BuildError> {
        #[cfg(feature = "console")]
        {
            let console = crate::console_wiring::for_bus(&self.parts, config)?;
            Ok(bus_health::HealthServer::start_with_app(
                addr,
                monitor.clone(),
                bus_health::HttpOptions::default(),
                std::sync::Arc::new(console),
            )?)
        }
        #[cfg(not(feature = "console"))]
        {
            let _ = config;
            Ok(bus_health::HealthServer::start(addr, monitor.clone())?)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Background> {
        self.background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The pipeline underneath, for the crate's own threads (replay
    /// poller, signal watcher) that keep a handle on it.
    #[cfg_attr(not(all(unix, feature = "signal")), allow(dead_code))]
    pub(crate) fn core(&self) -> &bus_core::Bus {
        &self.core
    }

    /// Publishes `payload` to `topic` (normal priority), one copy to each
    /// group subscribed to it. On `Err` the caller gets the payload back
    /// ([`PublishError::into_payload`]); the refusal is counted in
    /// `rejected_at_publish`.
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<MessageId, PublishError> {
        self.core.publish(topic, payload)
    }

    /// Publishes a prepared envelope (priority, headers, correlation id).
    pub fn publish_envelope(&self, envelope: Envelope) -> Result<MessageId, PublishError> {
        self.core.publish_envelope(envelope)
    }

    /// Publishes, waiting at most `timeout` (instead of
    /// [`Config::publish_timeout`]) for room in a full queue.
    pub fn publish_envelope_timeout(
        &self,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<MessageId, PublishError> {
        self.core.publish_envelope_timeout(envelope, timeout)
    }

    /// Publishes a prepared envelope to the one consumer group `group` of
    /// its topic, bounded and counted like any publish;
    /// [`PublishError::NoSuchGroup`] when no such group subscribes.
    pub fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
    ) -> Result<MessageId, PublishError> {
        self.core.publish_to_group(group, envelope)
    }

    /// A publisher that keeps up to 256 messages in flight, each with a
    /// confirmation to wait on (see [`publish::Publisher`](crate::publish::Publisher)):
    /// over a broker that confirms every message, many publishes share its
    /// round trips. Blocks when the window is full.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let bus = bus::Bus::builder().data_dir(dir.path()).build()?;
    /// bus.subscribe("orders.created", |_m: &bus::Message<'_>| Ok::<(), std::io::Error>(()))?;
    /// let publisher = bus.publisher();
    /// let confirmations = (0..100)
    ///     .map(|n| publisher.publish("orders.created", format!("order {n}")))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// for c in confirmations {
    ///     c.wait()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn publisher(&self) -> crate::publish::Publisher {
        self.core.publisher()
    }

    /// A publisher with `options` (window size, what to do when it is full).
    pub fn publisher_with(
        &self,
        options: crate::publish::PublisherOptions,
    ) -> crate::publish::Publisher {
        self.core.publisher_with(options)
    }

    /// Starts configuring a subscriber named `component`: its name in error
    /// reports, breakers and health, and its consumer group unless
    /// [`group`](SubscriberBuilder::group) sets another.
    pub fn subscriber(&self, component: &str) -> SubscriberBuilder<'_> {
        self.core.subscriber(component)
    }

    /// Subscribes `handler` to `topic` in a group of its own (so it gets
    /// every message), with one worker and default options.
    pub fn subscribe(
        &self,
        topic: &str,
        handler: impl Handler,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        self.core.subscribe(topic, handler)
    }

    /// The ledger now. Once the bus is idle or shut down,
    /// [`BusStats::invariant_holds`]; while it runs, the deliveries in
    /// flight make up the difference.
    pub fn stats(&self) -> BusStats {
        self.core.stats()
    }

    /// The transport's queue depths, one per consumer group.
    pub fn queue_depths(&self) -> Vec<QueueDepth> {
        self.core.queue_depths()
    }

    /// The transport the bus runs on.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        self.core.transport()
    }

    /// Whether the dead-letter store refused its last write (subscribers
    /// pause and their messages wait in the transport until it accepts).
    pub fn dlq_failing(&self) -> bool {
        self.core.dlq_failing()
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

    /// Shuts the bus down gracefully: stops the replay poller and intake,
    /// lets workers drain until everything is settled or `timeout` passes,
    /// dead-letters whatever is still undelivered (reason `shutdown`),
    /// flushes the error log, writes the final health snapshot to
    /// `<data-dir>/health.json` and stops the health endpoint.
    ///
    /// The report's stats satisfy the invariant exactly unless a handler
    /// outlived the deadline ([`ShutdownReport::stuck_workers`]). Messages
    /// the dead-letter queue refused at shutdown are handed back in
    /// [`ShutdownReport::unsaved`]. A second call returns the ledger again
    /// and does nothing else.
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let Some(mut bg) = self.take_background() else {
            return self.core.shutdown(timeout);
        };
        Self::stop_intake(&mut bg);
        let report = self.core.shutdown(timeout);
        self.finish(bg);
        report
    }

    /// [`shutdown`](Self::shutdown) from async code (feature `tokio`): the
    /// drain is awaited on the runtime's blocking pool, so the runtime's
    /// own threads stay free to cancel and settle async calls in flight.
    #[cfg(feature = "tokio")]
    pub async fn shutdown_async(&self, timeout: Duration) -> ShutdownReport {
        let Some(mut bg) = self.take_background() else {
            return self.core.shutdown_async(timeout).await;
        };
        Self::stop_intake(&mut bg);
        let report = self.core.shutdown_async(timeout).await;
        self.finish(bg);
        report
    }

    /// The background parts to stop, on the first shutdown only.
    fn take_background(&self) -> Option<Background> {
        let mut g = self.lock();
        let first = !g.done;
        g.done = true;
        // Not `then(|| ..)`: with the features off nothing is taken and
        // the closure would be needless; with them on the takes must only
        // happen on the first call.
        if first {
            Some(Background {
                #[cfg(feature = "dlq")]
                poller: g.poller.take(),
                #[cfg(feature = "http")]
                http: g.http.take(),
                #[cfg(feature = "health")]
                snapshots: g.snapshots.take(),
                done: true,
            })
        } else {
            None
        }
    }

    /// Before the drain: no more replays from outside.
    fn stop_intake(bg: &mut Background) {
        #[cfg(feature = "dlq")]
        if let Some(p) = bg.poller.take() {
            p.stop();
        }
        let _ = bg;
    }

    /// After the drain: flush the error log, write the final health
    /// snapshot, stop the endpoint.
    fn finish(&self, mut bg: Background) {
        #[cfg(feature = "logger")]
        if let Some(logger) = &self.parts.logger
            && let Err(error) = logger.flush()
        {
            tracing::error!(%error, "could not flush the error log at shutdown");
        }
        #[cfg(feature = "health")]
        if let Some(writer) = bg.snapshots.take() {
            // Its last write, after the drain, is the final snapshot.
            writer.stop();
        } else if let Some(monitor) = &self.parts.health
            && let Err(error) = monitor.write_snapshot(&self.parts.data_dir)
        {
            tracing::error!(%error, "could not write the final health snapshot");
        }
        #[cfg(feature = "http")]
        if let Some(server) = bg.http.take() {
            server.stop();
        }
        let _ = (&mut bg, self);
    }

    /// [`publish`](Self::publish) from async code (feature `tokio`): a
    /// full queue and the transport's confirmation are awaited, never
    /// blocked on (see [`bus_core::Bus::publish_async`]).
    #[cfg(feature = "tokio")]
    pub async fn publish_async(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<MessageId, PublishError> {
        self.core.publish_async(topic, payload).await
    }

    /// [`publish_envelope`](Self::publish_envelope) from async code
    /// (feature `tokio`).
    #[cfg(feature = "tokio")]
    pub async fn publish_envelope_async(
        &self,
        envelope: Envelope,
    ) -> Result<MessageId, PublishError> {
        self.core.publish_envelope_async(envelope).await
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if !self.lock().done {
            let _ = self.shutdown(Duration::from_secs(5));
        }
    }
}
