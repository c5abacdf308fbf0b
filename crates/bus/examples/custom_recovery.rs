//! Your own `RecoveryPolicy`: retry quickly up to three times, then give up.
//!
//! `cargo run -p bus --example custom_recovery`

use bus::plug::{DeadLetterReason, Decision, Failure, RecoveryPolicy, Resolution};
use bus::{Bus, BusStats, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Three quick retries, whatever the category.
#[derive(Debug)]
pub(crate) struct ThreeQuickRetries;

impl RecoveryPolicy for ThreeQuickRetries {
    fn decide(&self, failure: &Failure<'_>) -> Resolution {
        if failure.envelope.retries() < 3 {
            Decision::Retry {
                after: Duration::from_millis(5),
            }
            .into()
        } else {
            Decision::DeadLetter {
                reason: DeadLetterReason::RetriesExhausted,
            }
            .into()
        }
    }
}

/// A handler that fails twice then succeeds: acked on the third attempt.
pub(crate) fn run(
    data_dir: &std::path::Path,
) -> Result<(BusStats, u32), Box<dyn std::error::Error>> {
    let bus = Bus::builder()
        .data_dir(data_dir)
        .recovery(Arc::new(ThreeQuickRetries))
        .build()?;
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    bus.subscriber("indexer").topic("docs.updated").start(
        move |_msg: &Message<'_>| -> Result<(), std::io::Error> {
            if c.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
            } else {
                Ok(())
            }
        },
    )?;
    bus.publish("docs.updated", &b"doc 1"[..])?;
    let report = bus.shutdown(Duration::from_secs(10));
    println!(
        "{:?} after {} calls",
        report.stats,
        calls.load(Ordering::SeqCst)
    );
    Ok((report.stats, calls.load(Ordering::SeqCst)))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    run(dir.path()).map(|_| ())
}
