//! Minimal publish/subscribe on the assembled bus.
//!
//! `cargo run -p bus --example minimal`

use bus::{Bus, BusStats, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Publishes three orders to two subscribers and shuts down.
pub(crate) fn run(data_dir: &std::path::Path) -> Result<BusStats, Box<dyn std::error::Error>> {
    let bus = Bus::builder().data_dir(data_dir).build()?;
    let billed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&billed);
    bus.subscriber("billing").topic("orders.created").start(
        move |msg: &Message<'_>| -> Result<(), std::str::Utf8Error> {
            println!("billing {}", std::str::from_utf8(&msg.payload)?);
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
    )?;
    bus.subscriber("shipping").topic("orders.created").start(
        |msg: &Message<'_>| -> Result<(), std::io::Error> {
            println!("shipping message {}", msg.id);
            Ok(())
        },
    )?;
    for id in 1..=3 {
        bus.publish("orders.created", format!("{{\"order\":{id}}}").into_bytes())?;
    }
    let report = bus.shutdown(Duration::from_secs(5));
    println!("{:?}", report.stats);
    assert_eq!(billed.load(Ordering::SeqCst), 3);
    Ok(report.stats)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    run(dir.path()).map(|_| ())
}
