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
    /// The `reports` queue's capacity (`None` over NATS: no per-subscriber
    /// bound there).
    pub(crate) reports_queue: Option<usize>,
    pub(crate) outage: Outage,
    pub(crate) elapsed: Duration,
    pub(crate) interrupted_by: Option<bus::signal::Signal>,
    pub(crate) drain_timeout: Duration,
    pub(crate) broker: Option<Broker>,
}

/// What a run over a broker adds: work resumed from an earlier run, the
/// outages it went through, what it left.
#[derive(Debug, Serialize)]
pub(crate) struct Broker {
    pub(crate) url: String,
    /// Deliveries an earlier run on this data dir left unsettled, as the
    /// server counted them at the start (its count may err high).
    pub(crate) owed_at_start: u64,
    /// Of those, the ones this run was handed (each once): they add to
    /// `published` in the invariant. The rest are still in the kept
    /// streams (a delivery the killed run held comes back only when its
    /// `ack_wait` has passed).
    pub(crate) resumed: u64,
    pub(crate) outages: u64,
    pub(crate) unreachable_seconds: f64,
    /// Publishes whose confirmation was lost, sent again (stored once).
    pub(crate) publish_resends: u64,
    /// Redeliveries of settled messages, settled again without a handler.
    pub(crate) redeliveries_settled_again: u64,
    /// Deliveries a stream allowed to drop (`allow_message_loss`) deleted
    /// before they were settled: lost, and the invariant cannot hold.
    pub(crate) dropped_by_limits: u64,
    /// Deliveries the broker's MaxDeliver backstop dead-lettered (through
    /// the bus's store: they are in `dead_lettered` too).
    pub(crate) backstop_dead_letters: u64,
    /// Deliveries the backstop found already deleted: lost.
    pub(crate) backstop_lost: u64,
    /// Streams kept because deliveries are still owed, with their count.
    pub(crate) kept_streams: Vec<(String, u64)>,
}

/// Counters are deliveries (one per subscriber group reached), as in
/// `BusStats`; `orders` counts publish calls.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) published: u64,
    /// `published - rejected_at_publish`: the deliveries the bus took (what
    /// the health report counts as published).
    pub(crate) accepted: u64,
    pub(crate) acked: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) rejected_at_publish: u64,
    pub(crate) discarded_by_policy: u64,
    pub(crate) returned_at_shutdown: u64,
    /// Deliveries not at an end (non-zero only when a handler outlived the
    /// drain deadline).
    pub(crate) in_flight: u64,
    /// Deliveries this run did not settle that a durable transport still
    /// holds for the next run on this data dir (over NATS: the streams it
    /// kept owe at least this many); 0 in memory. The sixth term of the
    /// invariant, as in `BusStats::pending`.
    pub(crate) pending: u64,
    pub(crate) invariant_holds: bool,
    /// The signal that ended the run early (`"SIGTERM"`, `"SIGINT"`).
    interrupted_by: Option<&'static str>,
    drain_timeout_seconds: f64,
    stuck_workers: usize,
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
    outage: Outage,
    elapsed_seconds: f64,
    messages_per_second: f64,
    health: Health,
    dlq: Dlq,
    breakers: BTreeMap<String, Breaker>,
    data_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<Broker>,
}

#[derive(Debug, Serialize)]
struct Burst {
    published: u64,
    rejected: u64,
    /// `None` over NATS: the stream holds the burst, no queue bound applies.
    queue_capacity: Option<usize>,
    overflow_policy: Option<&'static str>,
}

/// The orders published while inventory's dependency was down: from the
/// first (`from_order`) up to the first after it came back (`to_order`).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Outage {
    pub(crate) from_order: Option<u64>,
    pub(crate) to_order: Option<u64>,
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
    /// Over a broker, the error for counts that do not reconcile, naming
    /// every term of the check.
    pub(crate) fn broker_ledger_error(&self) -> Option<super::outcome::DemoError> {
        let b = self.broker.as_ref().filter(|_| !self.invariant_holds)?;
        Some(super::outcome::DemoError::BrokerLedger {
            published: self.published,
            resumed: b.resumed,
            settled: self.acked
                + self.dead_lettered
                + self.rejected_at_publish
                + self.discarded_by_policy
                + self.returned_at_shutdown,
            pending: self.pending,
            owed: b.kept_streams.iter().map(|(_, owed)| owed).sum(),
        })
    }

    pub(crate) fn collect(i: Inputs<'_>) -> Result<Self, Box<dyn std::error::Error>> {
        // Over a broker, the ledger read now: the MaxDeliver backstop
        // dead-letters through the bus's store until the transport's close
        // stops it, possibly after the shutdown report was taken, and what
        // it wrote is no longer owed by the streams.
        let st = if i.broker.is_some() {
            i.bus.stats()
        } else {
            i.report.stats
        };
        // Over a broker, what this run did not settle must still be in the
        // streams it kept: every such delivery is pending, owed to the next
        // run on this data dir. The streams may owe more than that (a settle
        // the server lost in a restart is redelivered later), never less.
        // The bus counts its own pending; what an earlier run left and this
        // one was handed (resumed, counted by the transport) is the demo's
        // to add.
        let (pending, holds) = match &i.broker {
            None => (st.pending, st.invariant_holds()),
            Some(b) => {
                let owed: u64 = b.kept_streams.iter().map(|(_, owed)| owed).sum();
                let due = st.published + b.resumed;
                let ended = st.settled();
                let pending = due.saturating_sub(ended);
                (pending, ended <= due && pending <= owed)
            }
        };
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
            accepted: st.accepted,
            acked: st.acked,
            dead_lettered: st.dead_lettered,
            rejected_at_publish: st.rejected_at_publish,
            discarded_by_policy: st.discarded_by_policy,
            returned_at_shutdown: st.returned_at_shutdown,
            in_flight: st.in_flight(),
            pending,
            invariant_holds: holds,
            interrupted_by: i.interrupted_by.map(|s| s.name()),
            drain_timeout_seconds: i.drain_timeout.as_secs_f64(),
            stuck_workers: i.report.stuck_workers,
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
                queue_capacity: i.reports_queue,
                overflow_policy: i.reports_queue.map(|_| "reject"),
            },
            outage: i.outage,
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
            broker: i.broker,
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
        if let Some(signal) = self.interrupted_by {
            writeln!(
                out,
                "interrupted by {signal}: publishers stopped, drained for up to {:.0}s, {} left undelivered were dead-lettered (reason shutdown)",
                self.drain_timeout_seconds, self.dead_lettered_at_shutdown
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "  deliveries (one per subscriber group a publish reached):"
        )?;
        writeln!(out, "  published            {:>10}", self.published)?;
        writeln!(
            out,
            "  accepted             {:>10}   published - rejected_at_publish",
            self.accepted
        )?;
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
        if let Some(b) = self.broker.as_ref().filter(|b| b.resumed > 0) {
            writeln!(out, "  resumed              {:>10}", b.resumed)?;
        }
        writeln!(
            out,
            "  returned_at_shutdown {:>10}",
            self.returned_at_shutdown
        )?;
        if self.in_flight > 0 {
            writeln!(out, "  in_flight            {:>10}", self.in_flight)?;
        }
        // Every term, so the reader can add it up: the same six as the
        // bus's ledger, plus what an earlier run left over a broker.
        let resumed = match &self.broker {
            Some(b) if b.resumed > 0 => format!(" + resumed {}", b.resumed),
            _ => String::new(),
        };
        let in_flight = if self.in_flight > 0 && self.broker.is_none() {
            format!(" + in_flight {}", self.in_flight)
        } else {
            String::new()
        };
        writeln!(
            out,
            "  invariant: published {}{resumed} = acked {} + dead_lettered {} + rejected_at_publish {} + discarded_by_policy {} + returned_at_shutdown {} + pending {}{in_flight}: {}",
            self.published,
            self.acked,
            self.dead_lettered,
            self.rejected_at_publish,
            self.discarded_by_policy,
            self.returned_at_shutdown,
            self.pending,
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
        match (self.burst.queue_capacity, self.burst.overflow_policy) {
            (Some(capacity), Some(policy)) => writeln!(
                out,
                "  burst: {} to a {capacity}-slot queue, {} rejected at publish (overflow policy: {policy})",
                self.burst.published, self.burst.rejected
            )?,
            _ => writeln!(
                out,
                "  burst: {} to reports over NATS, {} rejected at publish (the stream holds them: no per-subscriber queue bound or overflow policy applies)",
                self.burst.published, self.burst.rejected
            )?,
        }
        match (self.outage.from_order, self.outage.to_order) {
            (Some(from), Some(to)) => writeln!(
                out,
                "  inventory's dependency was down from order {from} to order {to} ({:.0} % to {:.0} % of the run)",
                super::OUTAGE.start * 100.0,
                super::OUTAGE.end * 100.0
            )?,
            (Some(from), None) => writeln!(
                out,
                "  inventory's dependency was down from order {from} to the end of the run"
            )?,
            _ => {}
        }
        if let Some(b) = &self.broker {
            writeln!(
                out,
                "  broker {}: unreachable {} times, {:.1}s in all; {} publishes resent after a lost confirmation; {} redeliveries settled again",
                b.url,
                b.outages,
                b.unreachable_seconds,
                b.publish_resends,
                b.redeliveries_settled_again
            )?;
        }
        writeln!(out)?;
        // A bus without breakers (error handling off) has nothing to list.
        if !self.breakers.is_empty() {
            writeln!(out, "circuit breakers:")?;
            for (name, b) in &self.breakers {
                writeln!(
                    out,
                    "  {name:<12} {:<10} trips {:<4} refused {}",
                    b.state, b.trips, b.rejected_calls
                )?;
            }
            writeln!(out)?;
        }
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
