//! A small service: reads its configuration file, handles two topics with
//! typed errors, serves `/healthz` and `/metrics`, and shuts down
//! gracefully (on SIGTERM / SIGINT with the `signal` feature).
//!
//! `cargo run -p bus --example service --features signal -- service.toml`
//! (without a file it writes the one below to a temporary directory).

use bus::errors::{Classify, DefaultClassifier, ErrorCategory, Severity};
use bus::{Bus, BusBuilder, BusStats, Config, Message, ShutdownReport};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown lets the handlers drain before it dead-letters the rest.
const DRAIN: Duration = Duration::from_secs(10);

/// The service's configuration file, `{data_dir}` filled in.
const CONFIG: &str = r#"
data_dir = '{data_dir}'
publish_timeout = "250ms"
http = "127.0.0.1:0"             # a free port; a real service names its own

[breaker]
consecutive_failures = 3
wait_in_open = "30s"

[recovery.categories.CONNECTION]  # the payment provider comes back quickly
max_retries = 5
backoff = { kind = "exponential", base = "200ms", factor = 2.0, cap = "5s", jitter = "full" }
"#;

/// Why an order could not be handled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OrderError {
    /// The payload is not an order: retrying cannot help.
    #[error("malformed order: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The warehouse has none left now; it may later.
    #[error("order {0}: out of stock")]
    OutOfStock(u64),
}

impl Classify for OrderError {
    fn category(&self) -> ErrorCategory {
        match self {
            OrderError::Malformed(_) => ErrorCategory::Serialization,
            OrderError::OutOfStock(_) => ErrorCategory::MessageProcessing,
        }
    }
}

/// Why a payment could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PaymentError {
    /// The provider refused the card: retrying cannot help.
    #[error("card declined")]
    Declined,
    /// The provider could not be reached: retried with backoff.
    #[error("payment provider unreachable")]
    ProviderDown,
}

impl Classify for PaymentError {
    fn category(&self) -> ErrorCategory {
        match self {
            PaymentError::Declined => ErrorCategory::Authentication,
            PaymentError::ProviderDown => ErrorCategory::Connection,
        }
    }
    fn severity(&self) -> Severity {
        match self {
            PaymentError::Declined => Severity::Low,
            PaymentError::ProviderDown => Severity::High,
        }
    }
}

fn handle_order(msg: &Message<'_>) -> Result<(), OrderError> {
    let order: serde_json::Value = serde_json::from_slice(&msg.payload)?;
    let id = order["id"].as_u64().unwrap_or_default();
    match order["quantity"].as_u64() {
        Some(n) if n > 100 => Err(OrderError::OutOfStock(id)),
        _ => Ok(()),
    }
}

fn handle_payment(msg: &Message<'_>) -> Result<(), PaymentError> {
    match &msg.payload[..] {
        b"card 4000" => Err(PaymentError::Declined),
        b"card 5000" => Err(PaymentError::ProviderDown),
        _ => Ok(()),
    }
}

/// Writes the example configuration with its data directory under `dir`.
pub(crate) fn write_config(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("service.toml");
    let data_dir = dir.join("bus-data");
    let text = CONFIG.replace("{data_dir}", &data_dir.display().to_string());
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Builds the bus from the configuration file and starts both handlers.
pub(crate) fn start(config_file: &Path) -> Result<Bus, Box<dyn std::error::Error>> {
    let config = Config::from_file(config_file)?;
    let classifier = DefaultClassifier::builder()
        .with::<OrderError>()
        .with::<PaymentError>()
        .build();
    let bus = BusBuilder::from_config(config)
        .classifier(Arc::new(classifier))
        .build()?;
    bus.subscriber("fulfilment")
        .topic("orders.created")
        .workers(2)
        .start(handle_order)?;
    bus.subscriber("billing")
        .topic("payments.charge")
        .start(handle_payment)?;
    Ok(bus)
}

/// What one run of the service saw.
#[derive(Debug)]
#[allow(dead_code)] // read by tests/examples.rs, which runs this file
pub(crate) struct Run {
    /// The ledger at shutdown.
    pub(crate) stats: BusStats,
    /// The status line and body `/healthz` answered while it ran.
    pub(crate) healthz: (String, String),
    /// The topic and category of each dead letter, by topic.
    pub(crate) dead_letters: Vec<(String, ErrorCategory)>,
}

/// Starts the service from a configuration written under `dir`, publishes
/// two good and two bad messages, asks the health endpoint, shuts down.
#[allow(dead_code)] // run by tests/examples.rs
pub(crate) fn run(dir: &Path) -> Result<Run, Box<dyn std::error::Error>> {
    let bus = start(&write_config(dir)?)?;
    bus.publish("orders.created", &br#"{"id":1,"quantity":2}"#[..])?;
    bus.publish("orders.created", &b"not json"[..])?;
    bus.publish("payments.charge", &b"card 4242"[..])?;
    bus.publish("payments.charge", &b"card 4000"[..])?;
    let addr = bus
        .http_addr()
        .ok_or("the health endpoint is not running")?;
    let healthz = get(addr, "/healthz")?;
    let report = bus.shutdown(DRAIN);
    let dead_letters = match bus.dlq() {
        Some(dlq) => {
            use bus::dlq::DlqQuery;
            let mut letters: Vec<_> = dlq
                .list(&bus::dlq::Filter::all())?
                .into_iter()
                .map(|l| (l.topic, l.category))
                .collect();
            letters.sort_by(|a, b| a.0.cmp(&b.0));
            letters
        }
        None => Vec::new(),
    };
    Ok(Run {
        stats: report.stats,
        healthz,
        dead_letters,
    })
}

/// One plain HTTP/1.1 GET: the status line and the body.
fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn report(report: &ShutdownReport) {
    println!(
        "drained: {}; {:?}; invariant holds: {}",
        report.drained,
        report.stats,
        report.stats.invariant_holds()
    );
    for envelope in &report.unsaved {
        eprintln!("not saved at shutdown: message {}", envelope.id);
    }
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Installed before the bus starts, so no signal finds it half built.
    #[cfg(all(unix, feature = "signal"))]
    let signals = bus::signal::ShutdownSignals::install()?;
    let dir = tempfile::tempdir()?;
    let config_file = match std::env::args_os().nth(1) {
        Some(path) => PathBuf::from(path),
        None => write_config(dir.path())?,
    };
    let bus = start(&config_file)?;
    bus.publish("orders.created", &br#"{"id":1,"quantity":2}"#[..])?;
    bus.publish("payments.charge", &b"card 4242"[..])?;
    if let Some(addr) = bus.http_addr() {
        println!("health: http://{addr}/healthz, metrics: http://{addr}/metrics");
        let (status, body) = get(addr, "/healthz")?;
        println!("{status}: {body}");
    }
    #[cfg(all(unix, feature = "signal"))]
    {
        println!("running; SIGTERM or Ctrl-C drains and stops");
        let (signal, shutdown) = bus.shutdown_on_signal(&signals, DRAIN);
        println!("stopped by {signal}");
        report(&shutdown);
    }
    #[cfg(not(all(unix, feature = "signal")))]
    report(&bus.shutdown(DRAIN));
    Ok(())
}
