//! [`HealthReport`]: what [`HealthMonitor::report`](crate::HealthMonitor::report)
//! returns, serialisable to JSON and printable as a table.

use bus_core::{BrokerConnection, CircuitState, QueueDepth};
use bus_errors::ErrorCategory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Success rate at or above the healthy threshold, nothing forced open.
    Healthy,
    /// Working, but below the healthy threshold (or a circuit is open, or a
    /// queue is nearly full).
    Degraded,
    /// Below the degraded threshold, a circuit forced open, or the
    /// dead-letter queue cannot write.
    Critical,
}

impl HealthStatus {
    /// `"healthy"`, `"degraded"` or `"critical"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Critical => "critical",
        }
    }

    /// 0, 1 or 2 (the `bus_health_status` gauge).
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Event counts, over the window or since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counts {
    /// Deliveries published: one per subscriber group an accepted publish
    /// reached, plus unrouted publishes discarded by policy, read from the
    /// ledgers of the buses the monitor is attached to
    /// ([`Ledger::accepted`](bus_core::Ledger::accepted)).
    pub published: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Handler attempts that failed (each retry counts).
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Messages stored in the dead-letter queue.
    pub dead_lettered: u64,
    /// Publishes refused (the publisher kept the message).
    pub rejected: u64,
    /// Messages discarded by a configured policy.
    pub discarded: u64,
    /// Failures escalated to an operator.
    pub escalated: u64,
    /// Acks on an attempt above 1: a retry recovered the message.
    pub recovered: u64,
    /// Deliveries parked by an open circuit.
    pub parked: u64,
    /// Of `rejected`, publishes a broker refused or never confirmed (a
    /// transport error): they count against the success rate.
    #[serde(default)]
    pub refused_by_broker: u64,
}

/// Handler run time, from the cumulative histogram (bucket upper bounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Handler runs measured since start.
    pub count: u64,
    /// Mean run time.
    pub mean_seconds: Option<f64>,
    /// Upper bound of the bucket holding the median.
    pub p50_seconds: Option<f64>,
    /// Upper bound of the bucket holding the 99th percentile.
    pub p99_seconds: Option<f64>,
}

/// A point-in-time view of the bus's health.
///
/// Rates are over the sliding window:
/// - `success_rate = acked / (acked + failed + refused_by_broker)`,
///   counting every handler attempt, so a dependency that fails every first
///   try shows up even when retries save the messages, and every publish a
///   broker refused. `None` when neither happened in the window.
/// - `delivery_success_rate = acked / (acked + dead_lettered + discarded)`,
///   final outcomes only.
/// - `recovery_rate = recovered / (recovered + dead_lettered)`: of the
///   messages that needed a retry, how many ended acked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// Why the status is not healthy (empty when healthy).
    pub reasons: Vec<String>,
    /// When the report was made (wall clock).
    #[serde(with = "humantime_serde")]
    pub generated_at: SystemTime,
    /// Time since the monitor started.
    pub uptime_seconds: f64,
    /// The window length.
    pub window_seconds: f64,
    /// Counts over the window.
    pub window: Counts,
    /// Counts since start.
    pub totals: Counts,
    /// See the type docs.
    pub success_rate: Option<f64>,
    /// See the type docs.
    pub delivery_success_rate: Option<f64>,
    /// Failed attempts per minute over the window.
    pub error_rate_per_minute: f64,
    /// See the type docs.
    pub recovery_rate: Option<f64>,
    /// Failed attempts per category over the window (non-zero only).
    pub categories: BTreeMap<ErrorCategory, u64>,
    /// Failed attempts per category since start (non-zero only).
    pub category_totals: BTreeMap<ErrorCategory, u64>,
    /// Subscriber queues, from the queue source.
    pub queues: Vec<QueueDepth>,
    /// Age of the oldest waiting message, from the age source.
    pub oldest_message_age_seconds: Option<f64>,
    /// The transport's broker connection, from the broker source (`None`
    /// for in-process transports).
    #[serde(default)]
    pub broker: Option<BrokerConnection>,
    /// Last known state per circuit (events, overlaid by the circuit source).
    pub circuits: BTreeMap<String, CircuitState>,
    /// Subscribers whose dead-letter writes fail (until recovered).
    pub dlq_failing: Vec<String>,
    /// Handler run times.
    pub latency: LatencySummary,
    /// Alerts dropped because the alert queue was full.
    pub alerts_dropped: u64,
}

impl HealthReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A readable table (what `busctl health` prints).
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let pct =
            |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
        let secs = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), human_seconds);
        // Quantiles are the upper bounds of histogram buckets; the mean is
        // exact.
        let bound = |r: Option<f64>| {
            r.map_or_else(|| "-".to_owned(), |r| format!("<= {}", human_seconds(r)))
        };
        let _ = writeln!(
            s,
            "status            {}",
            self.status.as_str().to_uppercase()
        );
        for r in &self.reasons {
            let _ = writeln!(s, "  reason          {r}");
        }
        let _ = writeln!(
            s,
            "generated at      {}",
            humantime::format_rfc3339_seconds(self.generated_at)
        );
        let _ = writeln!(s, "uptime            {:.0}s", self.uptime_seconds);
        let _ = writeln!(
            s,
            "success rate      {}   (window {:.0}s)",
            pct(self.success_rate),
            self.window_seconds
        );
        let _ = writeln!(s, "delivery success  {}", pct(self.delivery_success_rate));
        let _ = writeln!(s, "recovery rate     {}", pct(self.recovery_rate));
        let _ = writeln!(s, "errors / minute   {:.2}", self.error_rate_per_minute);
        let _ = writeln!(s, "latency mean      {}", secs(self.latency.mean_seconds));
        let _ = writeln!(
            s,
            "latency p50/p99   {} / {}   (bucket bounds)",
            bound(self.latency.p50_seconds),
            bound(self.latency.p99_seconds)
        );
        let _ = writeln!(
            s,
            "\ndeliveries (one per subscriber group a message reached)"
        );
        let _ = writeln!(s, "{:<16}{:>12}{:>14}", "counter", "window", "total");
        // `published` here is what the bus accepted; the ledger's
        // `published` also counts publishes refused (`rejected` below).
        let rows = [
            ("accepted", self.window.published, self.totals.published),
            ("acked", self.window.acked, self.totals.acked),
            ("failed", self.window.failed, self.totals.failed),
            ("retried", self.window.retried, self.totals.retried),
            ("recovered", self.window.recovered, self.totals.recovered),
            (
                "dead_lettered",
                self.window.dead_lettered,
                self.totals.dead_lettered,
            ),
            ("rejected", self.window.rejected, self.totals.rejected),
            ("discarded", self.window.discarded, self.totals.discarded),
            ("escalated", self.window.escalated, self.totals.escalated),
            ("parked", self.window.parked, self.totals.parked),
        ];
        for (name, w, t) in rows {
            let _ = writeln!(s, "{name:<16}{w:>12}{t:>14}");
        }
        if !self.category_totals.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<22}{:>6}{:>14}",
                "failures by category", "window", "total"
            );
            for (c, t) in &self.category_totals {
                let w = self.categories.get(c).copied().unwrap_or(0);
                let _ = writeln!(s, "{:<22}{w:>6}{t:>14}", c.as_str());
            }
        }
        if !self.queues.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<24}{:<16}{:>8}{:>10}",
                "topic", "group", "depth", "capacity"
            );
            for q in &self.queues {
                let _ = writeln!(
                    s,
                    "{:<24}{:<16}{:>8}{:>10}",
                    q.topic, q.group, q.depth, q.capacity
                );
            }
        }
        if let Some(age) = self.oldest_message_age_seconds {
            let _ = writeln!(s, "oldest message    {age:.1}s");
        }
        if !self.circuits.is_empty() {
            let _ = writeln!(s, "\n{:<32}state", "circuit");
            for (c, st) in &self.circuits {
                let _ = writeln!(s, "{c:<32}{st}");
            }
        }
        if !self.dlq_failing.is_empty() {
            let _ = writeln!(s, "\nDLQ cannot write for: {}", self.dlq_failing.join(", "));
        }
        s
    }
}

/// A duration in seconds in the unit that resolves it: `87 µs`, `1.2 ms`,
/// `3.4 s` (handler latencies span nanoseconds to minutes; a fixed unit
/// shows most of them as zero).
fn human_seconds(secs: f64) -> String {
    let ns = secs * 1e9;
    let one = |v: f64, unit: &str| {
        if v < 10.0 {
            format!("{v:.1} {unit}")
        } else {
            format!("{v:.0} {unit}")
        }
    };
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        one(ns / 1e3, "µs")
    } else if ns < 1e9 {
        one(ns / 1e6, "ms")
    } else {
        one(secs, "s")
    }
}

#[cfg(test)]
mod tests {
    use super::human_seconds;

    #[test]
    fn latencies_are_shown_in_a_unit_that_resolves_them() {
        assert_eq!(human_seconds(0.000_000_5), "500 ns");
        assert_eq!(human_seconds(0.000_087), "87 µs");
        assert_eq!(human_seconds(0.000_1), "100 µs");
        assert_eq!(human_seconds(0.000_002_5), "2.5 µs");
        assert_eq!(human_seconds(0.001_2), "1.2 ms");
        assert_eq!(human_seconds(3.4), "3.4 s");
        assert_eq!(human_seconds(75.0), "75 s");
    }
}
