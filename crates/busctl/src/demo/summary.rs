//! The demo's final summary: one JSON object, or a human report.

use bus::ShutdownReport;
use bus::dlq::DlqQuery;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

pub(crate) struct Inputs<'a> {
    pub(crate) bus: &'a bus::Bus,
    pub(crate) report: &'a ShutdownReport,
    pub(crate) seed: u64,
    pub(crate) orders: u64,
    pub(crate) orders_rejected: u64,
    pub(crate) burst: (u64, u64),
    pub(crate) elapsed: Duration,
}

/// Counters are deliveries (one per subscriber group reached), as in
/// `BusStats`; `orders` counts publish calls.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) published: u64,
    pub(crate) acked: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) rejected_at_publish: u64,
    pub(crate) discarded_by_policy: u64,
    pub(crate) returned_at_shutdown: u64,
    pub(crate) invariant_holds: bool,
    failed: u64,
    panics: u64,
    retried: u64,
    parked: u64,
    dlq_write_failures: u64,
    drained: bool,
    dead_lettered_at_shutdown: usize,
    seed: u64,
    orders: u64,
    orders_rejected: u64,
    burst: Burst,
    elapsed_seconds: f64,
    messages_per_second: f64,
    health: Health,
    dlq: Dlq,
    breakers: BTreeMap<String, Breaker>,
    data_dir: String,
}

#[derive(Debug, Serialize)]
struct Burst {
    published: u64,
    rejected: u64,
    overflow_policy: &'static str,
}

#[derive(Debug, Serialize)]
struct Health {
    status: String,
    reasons: Vec<String>,
    success_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Dlq {
    total: u64,
    by_reason: BTreeMap<String, u64>,
    by_category: BTreeMap<String, u64>,
    by_state: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct Breaker {
    state: String,
    trips: u64,
    rejected_calls: u64,
}

impl Summary {
    pub(crate) fn collect(i: Inputs<'_>) -> Result<Self, Box<dyn std::error::Error>> {
        let st = i.report.stats;
        let health = i.bus.health().map_or(
            Health {
                status: "unknown".into(),
                reasons: Vec::new(),
                success_rate: None,
            },
            |h| Health {
                status: format!("{:?}", h.status).to_lowercase(),
                reasons: h.reasons.clone(),
                success_rate: h.success_rate,
            },
        );
        let dlq = match i.bus.dlq() {
            Some(d) => {
                let s = d.stats()?;
                Dlq {
                    total: s.total,
                    by_reason: s.by_reason,
                    by_category: s.by_category,
                    by_state: s.by_state,
                }
            }
            None => Dlq {
                total: 0,
                by_reason: BTreeMap::new(),
                by_category: BTreeMap::new(),
                by_state: BTreeMap::new(),
            },
        };
        let breakers = i
            .bus
            .breakers()
            .map(|r| {
                r.list()
                    .into_iter()
                    .map(|(name, state, m)| {
                        let b = Breaker {
                            state: state.to_string(),
                            trips: m.trips,
                            rejected_calls: m.rejected_calls,
                        };
                        (name, b)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let secs = i.elapsed.as_secs_f64();
        Ok(Self {
            published: st.published,
            acked: st.acked,
            dead_lettered: st.dead_lettered,
            rejected_at_publish: st.rejected_at_publish,
            discarded_by_policy: st.discarded_by_policy,
            returned_at_shutdown: st.returned_at_shutdown,
            invariant_holds: st.invariant_holds(),
            failed: st.failed,
            panics: st.panics,
            retried: st.retried,
            parked: st.parked,
            dlq_write_failures: st.dlq_write_failures,
            drained: i.report.drained,
            dead_lettered_at_shutdown: i.report.dead_lettered_at_shutdown,
            seed: i.seed,
            orders: i.orders,
            orders_rejected: i.orders_rejected,
            burst: Burst {
                published: i.burst.0,
                rejected: i.burst.1,
                overflow_policy: "reject",
            },
            elapsed_seconds: secs,
            messages_per_second: if secs > 0.0 {
                st.published as f64 / secs
            } else {
                0.0
            },
            health,
            dlq,
            breakers,
            data_dir: i.bus.data_dir().display().to_string(),
        })
    }

    pub(crate) fn write_json(&self, out: &mut dyn Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        writeln!(out)
    }

    pub(crate) fn write_human(
        &self,
        out: &mut dyn Write,
        health: Option<&bus::health::HealthReport>,
    ) -> std::io::Result<()> {
        writeln!(
            out,
            "busctl demo: {} orders (seed {}) in {:.2}s, {:.0} deliveries/s",
            self.orders, self.seed, self.elapsed_seconds, self.messages_per_second
        )?;
        writeln!(out)?;
        writeln!(out, "  published            {:>10}", self.published)?;
        writeln!(out, "  acked                {:>10}", self.acked)?;
        writeln!(out, "  dead_lettered        {:>10}", self.dead_lettered)?;
        writeln!(
            out,
            "  rejected_at_publish  {:>10}",
            self.rejected_at_publish
        )?;
        writeln!(
            out,
            "  discarded_by_policy  {:>10}",
            self.discarded_by_policy
        )?;
        if self.returned_at_shutdown > 0 {
            writeln!(
                out,
                "  returned_at_shutdown {:>10}",
                self.returned_at_shutdown
            )?;
        }
        writeln!(
            out,
            "  invariant            {:>10}",
            if self.invariant_holds {
                "holds"
            } else {
                "BROKEN"
            }
        )?;
        writeln!(
            out,
            "  (failed {}, of which panics {}; retried {}; parked by open breakers {})",
            self.failed, self.panics, self.retried, self.parked
        )?;
        writeln!(
            out,
            "  burst: {} to a 32-slot queue, {} rejected at publish (overflow policy: reject)",
            self.burst.published, self.burst.rejected
        )?;
        writeln!(out)?;
        writeln!(out, "circuit breakers:")?;
        for (name, b) in &self.breakers {
            writeln!(
                out,
                "  {name:<12} {:<10} trips {:<4} refused {}",
                b.state, b.trips, b.rejected_calls
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "dead-letter queue ({}): {} letters",
            self.data_dir, self.dlq.total
        )?;
        for (reason, n) in &self.dlq.by_reason {
            writeln!(out, "  reason   {reason:<24} {n}")?;
        }
        for (cat, n) in &self.dlq.by_category {
            writeln!(out, "  category {cat:<24} {n}")?;
        }
        writeln!(out)?;
        if let Some(h) = health {
            write!(out, "{}", h.render_table())?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "next: busctl dlq groups --data-dir {0}   busctl health --data-dir {0}",
            self.data_dir
        )
    }
}
