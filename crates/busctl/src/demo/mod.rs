//! `busctl demo`: publishers and subscribers on the embedded bus, with
//! transient failures, poison messages, panics, a dependency outage and a
//! burst, ending with a summary whose numbers add up.

mod outcome;
mod progress;
mod publishers;
mod sqlite;
mod summary;
mod workload;

use bus::signal::{ShutdownSignals, Signal};
use bus::subscribe::OverflowPolicy;
use bus::{BusBuilder, Config};
use busctl::transport::TransportKind;
use outcome::{DemoError, DlqRefusals};
use progress::{progress_bar, tick};
use publishers::{Publishers, Spawn};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use workload::Rates;

/// The demo's settings: short backoffs and a short breaker wait so a run of
/// 100 000 messages takes seconds, not minutes.
const DEMO_CONFIG: &str = r#"
publish_timeout = "2s"
replay_poll_interval = "250ms"

[breaker]
consecutive_failures = 5
wait_in_open = "200ms"
max_wait_in_open = "2s"
permitted_calls_in_half_open = 3
max_wait_in_half_open = "2s"

[recovery.categories.CONNECTION]
max_retries = 10
backoff = { kind = "exponential", base = "10ms", factor = 2.0, cap = "100ms" }

[recovery.categories.MESSAGE_PROCESSING]
max_retries = 2
backoff = { kind = "constant", delay = "10ms" }

[recovery.categories.TIMEOUT]
max_retries = 2
backoff = { kind = "constant", delay = "20ms" }

[dlq]
durability = "normal"

[health]
window = "10s"
buckets = 10
"#;

/// The share of the run (of the orders, or of `--duration`) during which
/// inventory's dependency is down.
const OUTAGE: std::ops::Range<f64> = 0.3..0.5;

/// The capacity and overflow policy of the `reports` queue the burst hits.
const REPORTS_CAPACITY: usize = 32;

/// The demo's (topic, consumer group) pairs.
const DEMO_GROUPS: [(&str, &str); 4] = [
    ("orders.created", "billing"),
    ("orders.created", "audit"),
    ("orders.created", "inventory"),
    ("reports.daily", "reports"),
];

/// Messages published in the burst to the small `reports` queue.
const BURST: u64 = 500;

/// `busctl demo` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// The bus data directory (DLQ, error log, health snapshot).
    #[arg(long, default_value = bus::config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// How many orders to publish.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Publish for this long instead of a number of messages (`30s`, `2m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Share of orders that fail once with a timeout (recovered by a retry).
    #[arg(long, default_value_t = 0.05)]
    fail_rate: f64,
    /// Share of orders that cannot be decoded (dead-lettered).
    #[arg(long, default_value_t = 0.01)]
    poison_rate: f64,
    /// Share of orders whose handler panics once (caught, retried).
    #[arg(long, default_value_t = 0.005)]
    panic_rate: f64,
    /// Seed of the fault plan (random if not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Serve /healthz, /metrics and the console (`/`) on this address
    /// while the demo runs.
    #[arg(long)]
    http: Option<String>,
    /// The transport.
    #[arg(long, value_enum, default_value_t = TransportKind::Memory)]
    transport: TransportKind,
    /// The NATS server for `--transport nats` (default: `url` of the
    /// configuration's `[nats]` section, nats://127.0.0.1:4222).
    #[arg(long)]
    nats_url: Option<String>,
    /// Publisher threads.
    #[arg(long, default_value_t = 3)]
    publishers: usize,
    /// How long the bus may drain at the end (or after SIGTERM / SIGINT)
    /// before what is left is dead-lettered with reason `shutdown`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    drain_timeout: Duration,
    /// Start from this configuration file (.toml or .json) instead of the
    /// demo's settings (`--data-dir` and `--http` still apply).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// How far along the demo is.
#[derive(Debug, Clone, Copy)]
enum Target {
    Messages(u64),
    Duration(Duration),
}

impl Target {
    fn fraction(self, claimed: u64, started: Instant) -> f64 {
        match self {
            Target::Messages(n) if n > 0 => claimed as f64 / n as f64,
            Target::Messages(_) => 1.0,
            Target::Duration(d) => started.elapsed().as_secs_f64() / d.as_secs_f64().max(1e-9),
        }
    }
    /// Whether inventory's dependency is down while order `seq` is published.
    fn outage(self, seq: u64, started: Instant) -> bool {
        OUTAGE.contains(&self.fraction(seq, started))
    }
    fn done(self, seq: u64, started: Instant) -> bool {
        match self {
            Target::Messages(n) => seq >= n,
            Target::Duration(d) => started.elapsed() >= d,
        }
    }
}

/// Runs the demo. SIGTERM and SIGINT are caught from the start: the first
/// stops the publishers and shuts the bus down gracefully, a second exits
/// at once.
pub(crate) fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    run_with(args, &mut publishers::os_threads)
}

/// [`run`], starting the publisher threads with `spawn`.
fn run_with(args: DemoArgs, spawn: &mut Spawn<'_>) -> Result<(), Box<dyn std::error::Error>> {
    let signals = ShutdownSignals::install()?;
    let rates = Rates {
        transient: args.fail_rate,
        poison: args.poison_rate,
        panic: args.panic_rate,
    };
    rates.validate()?;
    if args.publishers == 0 {
        return Err("--publishers must be at least 1".into());
    }
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let target = match args.duration {
        Some(d) => Target::Duration(d),
        None => Target::Messages(args.messages),
    };
    workload::quiet_injected_panics();

    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::from_toml_str(DEMO_CONFIG)?,
    };
    cfg.data_dir = args.data_dir.clone();
    if args.http.is_some() {
        cfg.http = args.http.clone();
    }
    // Over NATS the streams are named after the data directory: a run after
    // a crash resumes what the crashed run left unsettled, and runs on other
    // directories never see it. They are deleted at the end only if every
    // group settled everything.
    let sqlite = sqlite::open(args.transport, &cfg)?;
    let nats = match args.transport {
        TransportKind::Memory | TransportKind::Sqlite => None,
        TransportKind::Nats => {
            let config = busctl::transport::nats_config(
                cfg.nats.clone(),
                args.nats_url.as_deref(),
                &cfg.data_dir,
            )?;
            Some(Arc::new(bus_nats::NatsTransport::connect(config)?))
        }
    };
    // What a killed run on this data dir left, as the server counts it; the
    // transport counts what of it this run is handed (`resumed`).
    let mut owed_at_start = 0;
    if let Some(n) = &nats {
        for (topic, group) in DEMO_GROUPS {
            owed_at_start += n.owed(&bus::Topic::new(topic)?, group)?;
        }
        if owed_at_start > 0 {
            eprintln!(
                "resuming about {owed_at_start} deliveries an earlier run on this data dir left unsettled"
            );
        }
    }
    let refusals = Arc::new(DlqRefusals::default());
    let mut builder = BusBuilder::from_config(cfg)
        .observer(Arc::clone(&refusals) as Arc<dyn bus::plug::Observer>);
    if let Some(n) = &nats {
        builder = builder.transport(Arc::clone(n) as Arc<dyn bus::transport::Transport>);
    } else if let Some(s) = &sqlite {
        builder = builder.transport(s.transport());
    }
    let bus = Arc::new(builder.build()?);
    signals.watch(&bus);
    if let Some(addr) = bus.http_addr() {
        eprintln!("health: http://{addr}/healthz  metrics: http://{addr}/metrics");
        eprintln!("console: http://{addr}/");
    }

    let outage = Arc::new(AtomicBool::new(false));
    bus.subscriber("billing")
        .topic("orders.created")
        .workers(2)
        .start(workload::billing)?;
    bus.subscriber("audit")
        .topic("orders.created")
        .start(|_m: &bus::Message<'_>| -> Result<(), std::io::Error> { Ok(()) })?;
    // While its breaker is open, inventory fetches nothing and its messages
    // wait in its queue; the capacity is sized to absorb the outage so the
    // other subscribers of the topic keep flowing (a smaller queue would push
    // back on the publishers instead, which is the other honest choice).
    // Over NATS the messages wait in the stream, which has no per-subscriber
    // bound to set: capacities and overflow policies are in-process only.
    let inventory = bus.subscriber("inventory").topic("orders.created");
    let inventory = match args.transport {
        TransportKind::Memory | TransportKind::Sqlite => inventory.capacity(200_000),
        TransportKind::Nats => inventory,
    };
    inventory.start(workload::inventory(Arc::clone(&outage)))?;
    let reports = bus.subscriber("reports").topic("reports.daily");
    let reports = match args.transport {
        TransportKind::Memory | TransportKind::Sqlite => reports
            .capacity(REPORTS_CAPACITY)
            .overflow(OverflowPolicy::Reject),
        TransportKind::Nats => reports,
    };
    reports.start(workload::reports)?;

    let bar = progress_bar(&args, target);
    crate::log::hold_bar(&bar);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let orders_rejected = Arc::new(AtomicU64::new(0));
    let orders_sent = Arc::new(AtomicU64::new(0));
    let outage_orders = Arc::new(OutageOrders::default());
    let publishers = {
        let (bus, next, rejected, sent, outage, outage_orders) = (
            Arc::clone(&bus),
            Arc::clone(&next),
            Arc::clone(&orders_rejected),
            Arc::clone(&orders_sent),
            Arc::clone(&outage),
            Arc::clone(&outage_orders),
        );
        Publishers::start(args.publishers, spawn, move |stop: &AtomicBool| {
            while !stop.load(Ordering::Relaxed) {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if target.done(seq, started) {
                    break;
                }
                // The publishers switch the dependency, so the outage
                // spans the same share of the orders however fast they go.
                let down = target.outage(seq, started);
                if down != outage.load(Ordering::Relaxed) {
                    outage.store(down, Ordering::Relaxed);
                }
                outage_orders.saw(seq, down);
                let fault = rates.fault(seed, seq);
                sent.fetch_add(1, Ordering::Relaxed);
                if bus
                    .publish("orders.created", workload::payload(seq, fault))
                    .is_err()
                {
                    rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let publishers = match publishers {
        Ok(p) => p,
        Err(e) => {
            crate::log::release_bar();
            bar.finish_and_clear();
            // The publishers that had started may have taken inventory's
            // dependency down; left down, its parked messages would hold
            // the drain until the deadline.
            outage.store(false, Ordering::Relaxed);
            let report = outcome::shut_down(&bus, args.drain_timeout);
            let holds = report.stats.invariant_holds();
            if let Some(lost) = DemoError::check(&report, &refusals, holds) {
                eprintln!("busctl: {lost}");
            }
            return Err(e.into());
        }
    };

    // Drive the scenario: the publishers take inventory's dependency down
    // for OUTAGE of the run; a burst at 60%.
    let mut burst: Option<(u64, u64)> = None;
    let mut interrupted: Option<Signal> = None;
    while publishers.running() {
        if interrupted.is_none()
            && let Some(signal) = signals.received()
        {
            interrupted = Some(signal);
            publishers.stop();
            bar.suspend(|| {
                    eprintln!(
                        "busctl: {signal} received: publishers stopped, draining for up to {} (a second signal exits at once)",
                        humantime::format_duration(args.drain_timeout)
                    );
                });
        }
        let f = target.fraction(next.load(Ordering::Relaxed), started);
        if f >= 0.6 && burst.is_none() && interrupted.is_none() {
            burst = Some(publish_burst(&bus));
        }
        tick(&bar, &bus, target, &next, started);
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let joined = publishers.join();
    // The dependency comes back so parked messages can drain.
    outage.store(false, Ordering::Relaxed);
    // A signal that arrived as the last publisher finished still counts.
    let interrupted = interrupted.or_else(|| signals.received());
    let burst = match (burst, interrupted) {
        (Some(b), _) => b,
        (None, None) => publish_burst(&bus),
        (None, Some(_)) => (0, 0),
    };

    // Drain: retries and parked messages finish; what is left at the
    // deadline is dead-lettered with reason `shutdown`.
    bar.set_message("draining");
    // Over NATS the broker's side counts too: deliveries an earlier run left
    // are owed, and deliveries a stream allowed to drop deleted will never
    // come (they are counted, and the run fails for them). An interrupted
    // run leaves what the streams hold for the next run on this data dir.
    if let Some(n) = nats.as_ref().filter(|_| interrupted.is_none()) {
        let drain_deadline = Instant::now() + args.drain_timeout;
        let busy = || {
            let owed = n
                .consumer_status()
                .iter()
                .any(|c| c.num_pending + c.num_ack_pending > 0);
            let st = n.stats();
            // Backstop letters are in the bus's ledger already.
            let gone = st.dropped_by_limits + st.backstop_lost;
            owed || bus.stats().in_flight() > gone
        };
        while busy() && Instant::now() < drain_deadline {
            tick(&bar, &bus, target, &next, started);
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
    let report = outcome::shut_down(&bus, args.drain_timeout);
    crate::log::release_bar();
    bar.finish_and_clear();
    let broker = nats.as_ref().map(|n| {
        let kept = n.delete_streams_if_settled().unwrap_or_else(|e| {
            eprintln!("warning: could not check the demo's NATS streams: {e}");
            Vec::new()
        });
        for (stream, owed) in &kept {
            eprintln!(
                "NATS stream {stream} kept: {owed} deliveries unsettled; a run with the same --data-dir resumes them"
            );
        }
        let st = n.stats();
        let link = bus::transport::Transport::broker_connection(n.as_ref());
        summary::Broker {
            url: n.config().url.clone(),
            owed_at_start,
            resumed: st.resumed,
            outages: link.as_ref().map_or(0, |l| l.outages),
            unreachable_seconds: link.as_ref().map_or(0.0, |l| l.total_down_seconds),
            publish_resends: st.publish_resends,
            redeliveries_settled_again: st.duplicates_suppressed,
            dropped_by_limits: st.dropped_by_limits,
            backstop_dead_letters: st.backstop_dead_letters,
            backstop_lost: st.backstop_lost,
            kept_streams: kept,
        }
    });

    let orders = orders_sent.load(Ordering::Relaxed);
    let s = summary::Summary::collect(summary::Inputs {
        bus: &bus,
        report: &report,
        seed,
        orders,
        orders_rejected: orders_rejected.load(Ordering::Relaxed),
        burst,
        reports_queue: match args.transport {
            TransportKind::Memory | TransportKind::Sqlite => Some(REPORTS_CAPACITY),
            TransportKind::Nats => None,
        },
        outage: outage_orders.range(),
        elapsed: started.elapsed(),
        interrupted_by: interrupted,
        drain_timeout: args.drain_timeout,
        broker: broker.or_else(|| sqlite.as_ref().map(sqlite::Sqlite::broker)),
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        s.write_json(&mut out)?;
    } else {
        s.write_human(&mut out, bus.health().as_ref())?;
    }
    out.flush()?;
    joined?;
    let failed = s
        .broker_ledger_error()
        .or_else(|| DemoError::check(&report, &refusals, s.invariant_holds));
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The first order published while inventory's dependency was down, and the
/// first published after it came back.
#[derive(Debug)]
struct OutageOrders {
    from: AtomicU64,
    to: AtomicU64,
}

impl Default for OutageOrders {
    fn default() -> Self {
        Self {
            from: AtomicU64::new(u64::MAX),
            to: AtomicU64::new(u64::MAX),
        }
    }
}

impl OutageOrders {
    /// Called for every order: plain loads, and a write only for the few
    /// orders that move a bound (the publishers share these lines).
    fn saw(&self, seq: u64, down: bool) {
        let from = self.from.load(Ordering::Relaxed);
        if down {
            if seq < from {
                self.from.fetch_min(seq, Ordering::Relaxed);
            }
        } else if seq > from && seq < self.to.load(Ordering::Relaxed) {
            self.to.fetch_min(seq, Ordering::Relaxed);
        }
    }

    fn range(&self) -> summary::Outage {
        let some = |v: u64| (v != u64::MAX).then_some(v);
        summary::Outage {
            from_order: some(self.from.load(Ordering::Relaxed)),
            to_order: some(self.to.load(Ordering::Relaxed)),
        }
    }
}

/// Publishes [`BURST`] messages at once to the small `reports` queue;
/// returns (published, rejected).
fn publish_burst(bus: &bus::Bus) -> (u64, u64) {
    let mut rejected = 0;
    for i in 0..BURST {
        if bus
            .publish("reports.daily", format!("report {i}").into_bytes())
            .is_err()
        {
            rejected += 1;
        }
    }
    (BURST, rejected)
}

#[cfg(test)]
mod tests;
