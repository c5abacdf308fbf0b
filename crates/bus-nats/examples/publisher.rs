//! The publishing half of the two-process example: publishes N orders to
//! `demo.orders` (start the consumer first: a topic without a consumer
//! group refuses publishes, and the publisher keeps the message).

#[path = "shared/mod.rs"]
mod shared;

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let (bus, _nats) = shared::bus()?;
    let mut rejected = 0;
    for i in 1..=n {
        if let Err(e) = bus.publish(shared::TOPIC, i.to_string()) {
            rejected += 1;
            eprintln!("order {i} not published (kept by the publisher): {e}");
        }
    }
    let report = bus.shutdown(Duration::from_secs(5));
    println!(
        "published {} orders, {rejected} rejected: {:?}",
        n - rejected,
        report.stats
    );
    Ok(())
}
