//! A handler error type that states its own class with `Classify`,
//! registered with the `DefaultClassifier` through the builder.
//!
//! `cargo run -p bus --example custom_error`

use bus::errors::{Classify, DefaultClassifier, ErrorCategory, Severity};
use bus::{Bus, BusStats, Message};
use std::sync::Arc;
use std::time::Duration;

/// The payment provider refused the card: retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[error("card declined: {0}")]
pub(crate) struct CardDeclined(pub(crate) String);

impl Classify for CardDeclined {
    fn category(&self) -> ErrorCategory {
        // Not retryable (0 retries in the defaults table), dead-lettered and escalated.
        ErrorCategory::Authentication
    }
    fn severity(&self) -> Severity {
        Severity::Low
    }
}

/// Runs one declined payment through the bus; returns the stats and the
/// category the dead letter was filed under.
pub(crate) fn run(
    data_dir: &std::path::Path,
) -> Result<(BusStats, ErrorCategory), Box<dyn std::error::Error>> {
    let classifier = DefaultClassifier::builder().with::<CardDeclined>().build();
    let bus = Bus::builder()
        .data_dir(data_dir)
        .classifier(Arc::new(classifier))
        .build()?;
    bus.subscriber("payments").topic("payments.charge").start(
        |msg: &Message<'_>| -> Result<(), CardDeclined> {
            Err(CardDeclined(
                String::from_utf8_lossy(&msg.payload).into_owned(),
            ))
        },
    )?;
    bus.publish("payments.charge", &b"card 4242"[..])?;
    let report = bus.shutdown(Duration::from_secs(10));
    let dlq = bus.dlq().ok_or("no dlq")?;
    use bus::dlq::DlqQuery;
    let letters = dlq.list(&bus::dlq::Filter::all())?;
    let category = letters.first().ok_or("no dead letter")?.category;
    println!("dead-lettered as {category}: {:?}", report.stats);
    Ok((report.stats, category))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    run(dir.path()).map(|_| ())
}
