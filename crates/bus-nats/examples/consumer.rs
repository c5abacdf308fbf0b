//! The consuming half of the two-process example: handles `demo.orders`
//! (failing every 7th message once, to show a retry) until Ctrl-C.
//!
//! `cargo run -p bus-nats --example consumer` then, elsewhere,
//! `cargo run -p bus-nats --example publisher -- 100`.

#[path = "shared/mod.rs"]
mod shared;

use bus_core::Message;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (bus, nats) = shared::bus()?;
    bus.subscriber("order-consumer")
        .topic(shared::TOPIC)
        .workers(2)
        .start(|m: &Message<'_>| -> Result<(), std::io::Error> {
            let n: u64 = String::from_utf8_lossy(&m.payload).parse().unwrap_or(0);
            if n.is_multiple_of(7) && m.attempt == 1 {
                return Err(std::io::Error::other(format!(
                    "order {n}: transient failure"
                )));
            }
            println!("handled order {n} (attempt {})", m.attempt);
            Ok(())
        })?;
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let s = bus.stats();
        println!(
            "acked {} retried {} dead-lettered {} | {:?} | {:?}",
            s.acked,
            s.retried,
            s.dead_lettered,
            nats.connection_state(),
            nats.consumer_status()
        );
    }
}
