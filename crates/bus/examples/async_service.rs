//! A service on tokio: an async handler reserves stock for each order with
//! a slow remote inventory service that is sometimes unavailable. Its
//! calls are tasks (at most 16 in flight), not threads; an unavailable
//! inventory is a CONNECTION failure, retried after a backoff, and a
//! malformed order a SERIALIZATION failure, dead-lettered, as for any
//! handler.
//!
//! `cargo run -p bus --example async_service --features tokio`

use bus::errors::{Classify, DefaultClassifier, ErrorCategory};
use bus::runtime::OwnedMessage;
use bus::{BusBuilder, BusStats, Config};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Retries of an unavailable inventory come quickly here; a real service
/// names its own.
const CONFIG: &str = r#"
data_dir = '{data_dir}'

[recovery.categories.CONNECTION]
backoff = { kind = "exponential", base = "10ms", factor = 2.0, cap = "100ms" }
"#;

/// Why an order could not be reserved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OrderError {
    /// The payload is not an order number: retrying cannot help.
    #[error("malformed order: {0}")]
    Malformed(#[from] std::num::ParseIntError),
    /// The inventory service did not answer; it may on a later attempt.
    #[error("inventory unavailable for order {0}")]
    Unavailable(u64),
}

impl Classify for OrderError {
    fn category(&self) -> ErrorCategory {
        match self {
            OrderError::Malformed(_) => ErrorCategory::Serialization,
            OrderError::Unavailable(_) => ErrorCategory::Connection,
        }
    }
}

/// The remote inventory service: answers after 5 to 14 ms, and fails the
/// first call for one order in ten.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    calls: AtomicU64,
}

impl Inventory {
    async fn reserve(&self, order: u64, attempt: u32) -> Result<(), OrderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5 + order % 10)).await;
        if order % 10 == 3 && attempt == 1 {
            return Err(OrderError::Unavailable(order));
        }
        Ok(())
    }
}

/// What one run of the service saw.
#[derive(Debug)]
#[allow(dead_code)] // read by tests/examples.rs, which runs this file
pub(crate) struct Run {
    /// The ledger at shutdown.
    pub(crate) stats: BusStats,
    /// Calls the inventory service got.
    pub(crate) inventory_calls: u64,
}

/// Starts the service with its data under `dir`, publishes `orders` good
/// orders and two malformed ones from async code, waits until all are
/// settled, shuts down.
pub(crate) fn run(dir: &Path, orders: u64) -> Result<Run, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    let data_dir = dir.join("bus-data").display().to_string();
    let config = Config::from_toml_str(&CONFIG.replace("{data_dir}", &data_dir))?;
    let classifier = DefaultClassifier::builder().with::<OrderError>().build();
    let bus = BusBuilder::from_config(config)
        .classifier(Arc::new(classifier))
        .build()?;
    let inventory = Arc::new(Inventory::default());
    let remote = Arc::clone(&inventory);
    bus.subscriber("fulfilment")
        .topic("orders.created")
        .runtime(rt.handle().clone())
        .in_flight(16)
        .start_async(move |msg: OwnedMessage| {
            let remote = Arc::clone(&remote);
            async move {
                let order: u64 = std::str::from_utf8(&msg.payload).unwrap_or("").parse()?;
                remote.reserve(order, msg.attempt).await
            }
        })?;
    let stats = rt.block_on(async {
        for order in 0..orders {
            bus.publish_async("orders.created", order.to_string().into_bytes())
                .await?;
        }
        for bad in ["twelve", ""] {
            bus.publish_async("orders.created", bad.as_bytes().to_vec())
                .await?;
        }
        while bus.stats().in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = bus.shutdown_async(Duration::from_secs(10)).await;
        Ok::<_, bus::PublishError>(report.stats)
    })?;
    println!("{stats:?}; invariant holds: {}", stats.invariant_holds());
    Ok(Run {
        stats,
        inventory_calls: inventory.calls.load(Ordering::Relaxed),
    })
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    run(dir.path(), 100).map(|_| ())
}
