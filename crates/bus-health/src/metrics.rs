//! Prometheus / OpenMetrics exposition through `prometheus-client`, reading
//! the monitor's own atomics on each scrape (no global registry, no copies).

use crate::monitor::{HealthMonitor, Inner, Readings};
use crate::window::{Kind, LATENCY_BOUNDS, REASONS, category_slot};
use bus_core::CircuitState;
use bus_errors::ErrorCategory;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The content type of [`HealthMonitor::render_metrics`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

const CIRCUIT_STATES: [CircuitState; 6] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
    CircuitState::ForcedOpen,
    CircuitState::Disabled,
    CircuitState::MetricsOnly,
];

/// The content type of [`HealthMonitor::render_metrics_text`]'s output.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A `prometheus-client` [`Collector`] over a [`HealthMonitor`]; register it
/// in your own [`Registry`] to expose the bus next to your metrics.
#[derive(Clone)]
pub struct MetricsCollector {
    inner: Arc<Inner>,
    /// Source readings taken earlier; `None` reads the sources on each encode.
    readings: Option<Readings>,
}

impl std::fmt::Debug for MetricsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsCollector").finish_non_exhaustive()
    }
}

impl HealthMonitor {
    /// A collector reading this monitor.
    pub fn collector(&self) -> MetricsCollector {
        MetricsCollector {
            inner: Arc::clone(&self.inner),
            readings: None,
        }
    }

    /// The metrics in the OpenMetrics text format (served as
    /// [`OPENMETRICS_CONTENT_TYPE`]), ending with `# EOF`.
    pub fn render_metrics(&self) -> String {
        encode_collector(self.collector())
    }

    /// [`render_metrics`](Self::render_metrics) (`openmetrics`) or
    /// [`render_metrics_text`](Self::render_metrics_text) with the sources
    /// as `readings` found them, so rendering never waits on a source.
    #[cfg(feature = "http")]
    pub(crate) fn render_metrics_with(&self, readings: Readings, openmetrics: bool) -> String {
        let text = encode_collector(MetricsCollector {
            inner: Arc::clone(&self.inner),
            readings: Some(readings),
        });
        if openmetrics {
            text
        } else {
            openmetrics_to_prometheus(&text)
        }
    }

    /// The same metrics in the classic Prometheus text format 0.0.4 (served
    /// as [`PROMETHEUS_TEXT_CONTENT_TYPE`]), for scrapers and tools such as
    /// `promtool check metrics` that do not speak OpenMetrics. Converted
    /// from the OpenMetrics encoding: counter families are named with their
    /// `_total` suffix, `# UNIT` and `# EOF` lines are dropped.
    pub fn render_metrics_text(&self) -> String {
        openmetrics_to_prometheus(&self.render_metrics())
    }
}

fn encode_collector(collector: MetricsCollector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "bus-health: metrics encoding failed");
    }
    out
}

fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_help: Option<&str> = None;
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = pending_help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let rename = kind == "counter" && !name.ends_with("_total");
            if let Some(h) = pending_help.take() {
                if rename {
                    let help = h
                        .strip_prefix("# HELP ")
                        .and_then(|r| r.strip_prefix(name))
                        .unwrap_or("");
                    out.push_str(&format!("# HELP {name}_total{help}\n"));
                } else {
                    out.push_str(h);
                    out.push('\n');
                }
            }
            if rename {
                out.push_str(&format!("# TYPE {name}_total counter\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if let Some(h) = pending_help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<V>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> std::fmt::Result
where
    V: prometheus_client::encoding::EncodeGaugeValue,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// Folds label values beyond `cap` distinct ones into `"other"`.
fn cap_labels<K: Ord + Clone>(items: Vec<(K, u64)>, cap: usize, other: K) -> BTreeMap<K, u64> {
    let mut out = BTreeMap::new();
    for (k, v) in items {
        let key = if out.len() >= cap && !out.contains_key(&k) {
            other.clone()
        } else {
            k
        };
        *out.entry(key).or_insert(0) += v;
    }
    out
}

impl Collector for MetricsCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        let t = inner.totals(inner.clock.stamp());
        let k = |kind: Kind| t[kind as usize];
        for (name, help, kind) in [
            (
                "bus_messages_published",
                "Deliveries published: one per subscriber group an accepted publish reached, plus unrouted publishes discarded by policy.",
                Kind::Published,
            ),
            (
                "bus_messages_acked",
                "Deliveries acknowledged.",
                Kind::Acked,
            ),
            (
                "bus_messages_rejected",
                "Publishes refused; the publisher kept the message.",
                Kind::Rejected,
            ),
            (
                "bus_messages_discarded",
                "Messages discarded by a configured policy.",
                Kind::Discarded,
            ),
            ("bus_retries", "Retries scheduled.", Kind::Retried),
            (
                "bus_recoveries",
                "Deliveries acked after at least one retry.",
                Kind::Recovered,
            ),
            (
                "bus_escalations",
                "Failures escalated to an operator.",
                Kind::Escalated,
            ),
            (
                "bus_deliveries_parked",
                "Deliveries parked by an open circuit.",
                Kind::Parked,
            ),
        ] {
            counter(&mut enc, name, help, k(kind))?;
        }
        {
            let c = ConstCounter::new(0u64);
            let mut m = enc.encode_descriptor(
                "bus_handler_failures",
                "Failed handler attempts by error category.",
                None,
                c.metric_type(),
            )?;
            for cat in ErrorCategory::ALL {
                let labels = [("category", cat.as_str())];
                ConstCounter::new(t[category_slot(cat)]).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "bus_dead_letters",
                "Messages stored in the dead-letter queue, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (i, reason) in REASONS.iter().enumerate() {
                let labels = [("reason", *reason)];
                ConstCounter::new(inner.totals.dlq_reasons[i].load(Relaxed))
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut enc,
            "bus_circuit_transitions",
            "Circuit state changes seen.",
            inner.totals.circuit_transitions.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "bus_dlq_write_failures",
            "Dead-letter writes that failed.",
            inner.totals.dlq_write_failures.load(Relaxed),
        )?;

        let report = match &self.readings {
            Some(readings) => inner.report_with(readings.clone()),
            None => inner.report(),
        };
        counter(
            &mut enc,
            "bus_alerts_dropped",
            "Alerts dropped because the alert queue was full.",
            report.alerts_dropped,
        )?;
        gauge(
            &mut enc,
            "bus_health_status",
            "Health status: 0 healthy, 1 degraded, 2 critical.",
            None,
            i64::from(report.status.code()),
        )?;
        gauge(
            &mut enc,
            "bus_window_success_ratio",
            "Acked / (acked + failed attempts) over the window (1 when idle).",
            None,
            report.success_rate.unwrap_or(1.0),
        )?;
        gauge(
            &mut enc,
            "bus_window_error_rate_per_minute",
            "Failed attempts per minute over the window.",
            None,
            report.error_rate_per_minute,
        )?;
        gauge(
            &mut enc,
            "bus_dlq_writable",
            "1 when the dead-letter queue accepts writes, 0 when it fails.",
            None,
            i64::from(report.dlq_failing.is_empty()),
        )?;
        if let Some(age) = report.oldest_message_age_seconds {
            gauge(
                &mut enc,
                "bus_oldest_message_age",
                "Age of the oldest waiting message.",
                Some(&Unit::Seconds),
                age,
            )?;
        }

        let cap = inner.config.max_label_values;
        let other = ("other".to_owned(), "other".to_owned());
        let depth = cap_labels(
            report
                .queues
                .iter()
                .map(|q| ((q.topic.clone(), q.group.clone()), q.depth as u64))
                .collect(),
            cap,
            other.clone(),
        );
        let capacity = cap_labels(
            report
                .queues
                .iter()
                .map(|q| ((q.topic.clone(), q.group.clone()), q.capacity as u64))
                .collect(),
            cap,
            other.clone(),
        );
        let in_flight = cap_labels(
            report
                .queues
                .iter()
                .map(|q| ((q.topic.clone(), q.group.clone()), q.in_flight as u64))
                .collect(),
            cap,
            other,
        );
        for (name, help, values) in [
            (
                "bus_queue_depth",
                "Messages waiting per subscriber queue.",
                depth,
            ),
            (
                "bus_queue_capacity",
                "Capacity per subscriber queue.",
                capacity,
            ),
            (
                "bus_queue_in_flight",
                "Messages handed to a subscriber queue's consumers and not settled yet.",
                in_flight,
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for ((topic, group), v) in values {
                let labels = [("topic", topic.as_str()), ("group", group.as_str())];
                ConstGauge::new(v as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            // report.circuits is already bounded for events; a circuit source may add more.
            let mut circuits: BTreeMap<&str, CircuitState> = BTreeMap::new();
            for (name, st) in &report.circuits {
                let key = if circuits.len() >= cap && !circuits.contains_key(name.as_str()) {
                    "other"
                } else {
                    name.as_str()
                };
                circuits.insert(key, *st);
            }
            let mut m = enc.encode_descriptor(
                "bus_circuit_state",
                "1 for the current state of each circuit, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for (component, st) in circuits {
                for s in CIRCUIT_STATES {
                    let labels = [("component", component), ("state", s.as_str())];
                    ConstGauge::new(i64::from(s == st)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let lat = inner.latency.read();
            // Non-cumulative counts: the encoder accumulates them.
            let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(lat.counts)
                .collect();
            let mut m = enc.encode_descriptor(
                "bus_handler_duration",
                "Handler run time of acked deliveries.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                lat.sum_nanos as f64 / 1e9,
                lat.count(),
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}
