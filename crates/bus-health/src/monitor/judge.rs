//! The status logic: a report from the counters and the sources, judged
//! against the configured thresholds.

use super::*;

impl Inner {
    /// Calls the sources. They may be slow (a queue source over a broker
    /// asks the broker), so a caller that must answer promptly reads them
    /// elsewhere and passes the result to [`report_with`](Self::report_with).
    pub(crate) fn read_sources(&self) -> Readings {
        Readings {
            queues: self.queue_source.as_ref().map(|s| s()).unwrap_or_default(),
            circuits: self
                .circuit_source
                .as_ref()
                .map(|s| s())
                .unwrap_or_default(),
            oldest: self.age_source.as_ref().and_then(|s| s()),
        }
    }

    pub(crate) fn report(&self) -> HealthReport {
        self.report_with(self.read_sources())
    }

    /// The report from the counters now and the sources as `readings` found them.
    pub(crate) fn report_with(&self, readings: Readings) -> HealthReport {
        let Readings {
            queues,
            circuits: circuit_readings,
            oldest,
        } = readings;
        let now = self.clock.stamp();
        let t = self.totals(now);
        let w = self.window.sum(self.window.tick(now));
        let window = counts(&w);
        let totals = counts(&t);
        let mut circuits = lock(&self.circuits).clone();
        circuits.extend(circuit_readings);
        let dlq_failing: Vec<String> = lock(&self.dlq_failing).iter().cloned().collect();
        // Read live, not from the readings: it is local state (no broker
        // round trip), and a lost broker must show in the next answer.
        let broker = self.broker_source.as_ref().and_then(|s| s());
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        let attempts = window.acked + window.failed + window.refused_by_broker;
        let success_rate = ratio(window.acked, attempts);
        let window_secs = self.config.window.as_secs_f64();

        let (status, reasons) = self.judge(
            attempts,
            success_rate,
            &circuits,
            &dlq_failing,
            &queues,
            broker.as_ref(),
        );
        let prev = self.last_status.swap(status.code(), Ordering::AcqRel);
        if status == HealthStatus::Critical && prev != HealthStatus::Critical.code() {
            self.alerts.raise(
                self.since_start(now),
                AlertKind::StatusCritical,
                None,
                "bus",
                format!("health is critical: {}", reasons.join("; ")),
            );
        }

        let lat = self.latency.read();
        let cat_map = |v: &[u64; SLOTS]| {
            ErrorCategory::ALL
                .into_iter()
                .filter_map(|c| {
                    let n = v[category_slot(c)];
                    (n > 0).then_some((c, n))
                })
                .collect::<BTreeMap<_, _>>()
        };
        HealthReport {
            status,
            reasons,
            generated_at: SystemTime::now(),
            uptime_seconds: Duration::from_nanos(self.since_start(now)).as_secs_f64(),
            window_seconds: window_secs,
            success_rate,
            delivery_success_rate: ratio(
                window.acked,
                window.acked + window.dead_lettered + window.discarded,
            ),
            error_rate_per_minute: window.failed as f64 * 60.0 / window_secs,
            recovery_rate: ratio(window.recovered, window.recovered + window.dead_lettered),
            categories: cat_map(&w),
            category_totals: cat_map(&t),
            window,
            totals,
            queues,
            oldest_message_age_seconds: oldest.map(|d| d.as_secs_f64()),
            broker,
            circuits,
            dlq_failing,
            latency: LatencySummary {
                count: lat.count(),
                mean_seconds: ratio(lat.sum_nanos, lat.count()).map(|n| n / 1e9),
                p50_seconds: lat.quantile_bound(0.5),
                p99_seconds: lat.quantile_bound(0.99),
            },
            alerts_dropped: self.alerts.dropped(),
        }
    }

    fn judge(
        &self,
        attempts: u64,
        success_rate: Option<f64>,
        circuits: &BTreeMap<String, CircuitState>,
        dlq_failing: &[String],
        queues: &[QueueDepth],
        broker: Option<&BrokerConnection>,
    ) -> (HealthStatus, Vec<String>) {
        let cfg = &self.config;
        let mut status = HealthStatus::Healthy;
        let mut reasons = Vec::new();
        let mut raise = |to: HealthStatus, why: String| {
            status = status.max(to);
            reasons.push(why);
        };
        for (name, st) in circuits {
            match st {
                CircuitState::ForcedOpen => raise(
                    HealthStatus::Critical,
                    format!("circuit {name} is forced open"),
                ),
                // Half-open is a breaker testing recovery: the failures that
                // opened it already weigh on the success rate, and an idle one
                // (no traffic left to probe it) must not hold health down.
                CircuitState::Open if cfg.open_circuit_degrades => {
                    raise(HealthStatus::Degraded, format!("circuit {name} is {st}"))
                }
                _ => {}
            }
        }
        if !dlq_failing.is_empty() {
            raise(
                HealthStatus::Critical,
                format!(
                    "dead-letter queue cannot write ({})",
                    dlq_failing.join(", ")
                ),
            );
        }
        if let Some(rate) = success_rate.filter(|_| attempts >= cfg.min_samples) {
            let pct = rate * 100.0;
            if rate < cfg.degraded_threshold {
                raise(
                    HealthStatus::Critical,
                    format!(
                        "success rate {pct:.1}% is below {:.1}%",
                        cfg.degraded_threshold * 100.0
                    ),
                );
            } else if rate < cfg.healthy_threshold {
                raise(
                    HealthStatus::Degraded,
                    format!(
                        "success rate {pct:.1}% is below {:.1}%",
                        cfg.healthy_threshold * 100.0
                    ),
                );
            }
        }
        for q in queues {
            if q.capacity > 0 && q.depth as f64 / q.capacity as f64 >= cfg.queue_fill_degraded {
                raise(
                    HealthStatus::Degraded,
                    format!(
                        "queue {}/{} is at {} of {}",
                        q.topic, q.group, q.depth, q.capacity
                    ),
                );
            }
        }
        if let Some(b) = broker.filter(|b| b.dropped > 0) {
            raise(
                HealthStatus::Critical,
                format!(
                    "broker {} deleted {} unsettled messages (stream limits)",
                    b.broker, b.dropped
                ),
            );
        }
        if let Some(down) = broker.and_then(|b| b.down_seconds.map(|d| (b, d))) {
            let (b, secs) = down;
            let limit = cfg.broker_critical_after.as_secs_f64();
            let to = if secs >= limit {
                HealthStatus::Critical
            } else {
                HealthStatus::Degraded
            };
            raise(
                to,
                format!("broker {} unreachable for {secs:.1}s", b.broker),
            );
        }
        (status, reasons)
    }
}

fn counts(v: &[u64; SLOTS]) -> Counts {
    let k = |kind: Kind| v[kind as usize];
    Counts {
        published: k(Kind::Published),
        acked: k(Kind::Acked),
        failed: k(Kind::Failed),
        retried: k(Kind::Retried),
        dead_lettered: k(Kind::DeadLettered),
        rejected: k(Kind::Rejected),
        discarded: k(Kind::Discarded),
        escalated: k(Kind::Escalated),
        recovered: k(Kind::Recovered),
        parked: k(Kind::Parked),
        refused_by_broker: k(Kind::BrokerRefused),
    }
}
