//! Health for the bus: a [`HealthMonitor`] that watches every
//! [`BusEvent`](bus_core::BusEvent) through bus-core's
//! [`Observer`](bus_core::Observer) plug, judges the bus healthy, degraded or
//! critical over a sliding window, and reports it as JSON, as Prometheus /
//! OpenMetrics text, over HTTP (feature `http`), in a snapshot file and
//! through alerts.
//!
//! - Counting is lock-free: a ring of time buckets of atomic counters (see
//!   [`HealthConfig::window`] and [`HealthConfig::buckets`]) plus exact
//!   totals since start. Health recovers as the window drains.
//! - Status: critical when a circuit is forced open or the dead-letter queue
//!   cannot write; otherwise by the window's success rate
//!   ([`HealthReport`] defines it) against the thresholds (95 % / 80 %).
//! - [`HealthMonitor::render_metrics`] and [`MetricsCollector`] export through
//!   `prometheus-client`, reading the monitor's atomics on each scrape.
//! - [`AlertSink`]s ([`TracingAlertSink`], [`CommandAlertSink`],
//!   [`WebhookAlertSink`]) get escalations, critical reports and transitions
//!   to critical, de-duplicated and rate-limited per key.
//! - [`HealthMonitor::write_snapshot`] / [`read_snapshot`] /
//!   [`HealthReport::render_table`] for `busctl health`.
//!
//! ```
//! use bus_core::time::ManualClock;
//! use bus_core::{BusEvent, CircuitState, Observer};
//! use bus_health::{HealthMonitor, HealthStatus};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let monitor = HealthMonitor::builder().with_clock(Arc::new(clock.clone())).build().unwrap();
//! monitor.observe(&BusEvent::CircuitTransition {
//!     component: "billing", from: CircuitState::Closed, to: CircuitState::ForcedOpen,
//! });
//! assert_eq!(monitor.report().status, HealthStatus::Critical);
//! assert!(monitor.render_metrics().contains("bus_health_status 2"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod alert;
mod config;
#[cfg(feature = "http")]
mod http;
mod metrics;
mod monitor;
mod report;
mod snapshot;
mod window;

pub use alert::{
    Alert, AlertError, AlertKind, AlertSink, CommandAlertSink, TracingAlertSink, WebhookAlertSink,
};
pub use config::{ConfigError, HealthConfig};
#[cfg(feature = "http")]
pub use http::{
    AppContext, AppRequest, AppResponse, HealthServer, HttpApp, HttpError, HttpOptions,
};
pub use metrics::{MetricsCollector, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
pub use monitor::{
    AgeSource, BrokerSource, CircuitSource, HealthMonitor, HealthMonitorBuilder, QueueSource,
};
pub use report::{Counts, HealthReport, HealthStatus, LatencySummary};
pub use snapshot::{SNAPSHOT_FILE, SnapshotError, SnapshotWriter, read_snapshot, write_report};
