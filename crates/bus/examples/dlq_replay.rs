//! A handler fails, the message lands in the dead-letter queue, the cause is
//! fixed, and the letter is replayed through the bus and delivered.
//!
//! `cargo run -p bus --example dlq_replay`

use bus::dlq::{DlqQuery, Filter};
use bus::plug::NoRetry;
use bus::{Bus, BusStats, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Returns the final stats and how many messages the handler delivered.
pub(crate) fn run(
    data_dir: &std::path::Path,
) -> Result<(BusStats, u64), Box<dyn std::error::Error>> {
    let bus = Bus::builder()
        .data_dir(data_dir)
        .recovery(Arc::new(NoRetry)) // fail fast for the example
        .build()?;
    let fixed = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let (f, d) = (Arc::clone(&fixed), Arc::clone(&delivered));
    bus.subscriber("mailer").topic("mail.send").start(
        move |_msg: &Message<'_>| -> Result<(), std::io::Error> {
            if !f.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("template `welcome` missing"));
            }
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
    )?;
    bus.publish("mail.send", &b"to: ada@example.com"[..])?;

    let dlq = Arc::clone(bus.dlq().ok_or("no dlq")?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dlq.count(&Filter::all())? == 0 {
        if Instant::now() > deadline {
            return Err("the failure never reached the DLQ".into());
        }
        std::thread::park_timeout(Duration::from_millis(2));
    }
    for g in dlq.groups(&Filter::all())? {
        println!("{} x {}", g.count, g.signature);
    }

    fixed.store(true, Ordering::SeqCst); // deploy the fix
    let replay = dlq.replay(&Filter::all().topic("mail.send"), None, &mut |env| {
        bus.publish_envelope(env).map(|_| ())
    })?;
    println!("replayed {} letter(s)", replay.replayed.len());

    let report = bus.shutdown(Duration::from_secs(10));
    println!("{:?}", report.stats);
    Ok((report.stats, delivered.load(Ordering::SeqCst)))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    run(dir.path()).map(|_| ())
}
