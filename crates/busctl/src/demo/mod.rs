//! `busctl demo`: publishers and subscribers on the embedded bus, with
//! transient failures, poison messages, panics, a dependency outage and a
//! burst, ending with a summary whose numbers add up.

mod summary;
mod workload;

use bus::{BusBuilder, Config, OverflowPolicy};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
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

/// How long inventory's dependency stays down.
const OUTAGE: Duration = Duration::from_millis(800);

/// Messages published in the burst to the small `reports` queue.
const BURST: u64 = 500;

/// Which transport carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TransportKind {
    /// In-process queues (the embedded default).
    Memory,
    /// NATS JetStream (`--nats-url`): durable streams, across processes.
    Nats,
}

/// `busctl demo` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// The bus data directory (DLQ, error log, health snapshot).
    #[arg(long, default_value = bus::DEFAULT_DATA_DIR)]
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
    /// Serve /healthz and /metrics on this address while the demo runs.
    #[arg(long)]
    http: Option<String>,
    /// The transport.
    #[arg(long, value_enum, default_value_t = TransportKind::Memory)]
    transport: TransportKind,
    /// The NATS server for `--transport nats`.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Publisher threads.
    #[arg(long, default_value_t = 3)]
    publishers: usize,
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
    fn done(self, seq: u64, started: Instant) -> bool {
        match self {
            Target::Messages(n) => seq >= n,
            Target::Duration(d) => started.elapsed() >= d,
        }
    }
}

pub(crate) fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
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
    // Over NATS, a run gets streams of its own (named after the seed and the
    // time) so durable groups never hand it an earlier run's leftovers; they
    // are deleted at the end.
    let nats = match args.transport {
        TransportKind::Memory => None,
        TransportKind::Nats => {
            let run = format!("demo{}x{seed:x}", std::process::id());
            let config = bus_nats::NatsConfig::new(args.nats_url.clone())
                .with_stream_prefix(format!("BUS_{run}"))
                .with_subject_prefix(run);
            Some(Arc::new(bus_nats::NatsTransport::connect(config)?))
        }
    };
    let mut builder = BusBuilder::from_config(cfg);
    if let Some(n) = &nats {
        builder = builder.transport(Arc::clone(n) as Arc<dyn bus::Transport>);
    }
    let bus = builder.build()?;
    if let Some(addr) = bus.http_addr() {
        eprintln!("health: http://{addr}/healthz  metrics: http://{addr}/metrics");
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
    bus.subscriber("inventory")
        .topic("orders.created")
        .capacity(200_000)
        .start(workload::inventory(Arc::clone(&outage)))?;
    bus.subscriber("reports")
        .topic("reports.daily")
        .capacity(32)
        .overflow(OverflowPolicy::Reject)
        .start(workload::reports)?;

    let bar = progress_bar(&args, target);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let orders_rejected = Arc::new(AtomicU64::new(0));
    let publishers: Vec<_> = (0..args.publishers)
        .map(|_| {
            let (bus, next, rejected) = (
                bus.core().clone(),
                Arc::clone(&next),
                Arc::clone(&orders_rejected),
            );
            std::thread::spawn(move || {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if target.done(seq, started) {
                        break;
                    }
                    let fault = rates.fault(seed, seq);
                    if bus
                        .publish("orders.created", workload::payload(seq, fault))
                        .is_err()
                    {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Drive the scenario: inventory's dependency goes down at 30% of the run
    // for OUTAGE of wall time (timed, not tied to progress: progress may
    // slow while a queue pushes back), and a burst at 60%.
    let mut burst: Option<(u64, u64)> = None;
    let mut outage_began: Option<Instant> = None;
    while publishers.iter().any(|p| !p.is_finished()) {
        let f = target.fraction(next.load(Ordering::Relaxed), started);
        if f >= 0.3 && outage_began.is_none() {
            outage_began = Some(Instant::now());
        }
        let down = outage_began.is_some_and(|t| t.elapsed() < OUTAGE);
        outage.store(down, Ordering::Relaxed);
        if f >= 0.6 && burst.is_none() {
            burst = Some(publish_burst(&bus));
        }
        tick(&bar, &bus, target, &next, started);
        std::thread::park_timeout(Duration::from_millis(20));
    }
    for p in publishers {
        p.join().map_err(|_| "a publisher thread panicked")?;
    }
    outage.store(false, Ordering::Relaxed);
    let burst = burst.unwrap_or_else(|| publish_burst(&bus));

    // Drain: retries and parked messages finish.
    bar.set_message("draining");
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while bus.stats().in_flight() > 0 && Instant::now() < drain_deadline {
        tick(&bar, &bus, target, &next, started);
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let report = bus.shutdown(Duration::from_secs(10));
    bar.finish_and_clear();
    if let Some(n) = &nats {
        if let Err(e) = n.delete_streams() {
            eprintln!("warning: could not delete the demo's NATS streams: {e}");
        }
    }

    let orders = match target {
        Target::Messages(n) => n,
        Target::Duration(_) => next
            .load(Ordering::Relaxed)
            .saturating_sub(args.publishers as u64),
    };
    let s = summary::Summary::collect(summary::Inputs {
        bus: &bus,
        report: &report,
        seed,
        orders,
        orders_rejected: orders_rejected.load(Ordering::Relaxed),
        burst,
        elapsed: started.elapsed(),
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        s.write_json(&mut out)?;
    } else {
        s.write_human(&mut out, bus.health().as_ref())?;
    }
    if !s.invariant_holds {
        return Err("the invariant does not hold".into());
    }
    Ok(())
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

fn progress_bar(args: &DemoArgs, target: Target) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let len = match target {
        Target::Messages(n) => n,
        Target::Duration(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    };
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:25} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn tick(bar: &ProgressBar, bus: &bus::Bus, target: Target, next: &AtomicU64, started: Instant) {
    if bar.is_hidden() {
        return;
    }
    match target {
        Target::Messages(n) => bar.set_position(next.load(Ordering::Relaxed).min(n)),
        Target::Duration(_) => {
            bar.set_position(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
    }
    let s = bus.stats();
    let inventory = bus
        .breakers()
        .map(|b| b.get("inventory").effective_state().to_string())
        .unwrap_or_default();
    let health = bus
        .health()
        .map(|h| format!("{:?}", h.status).to_lowercase())
        .unwrap_or_default();
    bar.set_message(format!(
        "acked {} retried {} dlq {} rejected {} parked {} | inventory breaker {inventory} | {health}",
        s.acked, s.retried, s.dead_lettered, s.rejected_at_publish, s.parked
    ));
}
