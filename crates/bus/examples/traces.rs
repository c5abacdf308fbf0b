//! One trace across the bus: a request publishes an order, the shipping
//! handler publishes a parcel, the mail handler fails once and succeeds on
//! its retry. The spans go to OpenTelemetry through tracing-opentelemetry;
//! here they are kept in memory and printed as a tree (swap the exporter for
//! an OTLP one to send them to a collector).
//!
//! `cargo run -p bus --features otel --example traces`

use bus::{Bus, Message};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;

/// Each span of the request's trace as (name, its parent's name), in the
/// order they ended.
pub(crate) fn run(
    data_dir: &std::path::Path,
) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("shop"));
    // The bus's handlers run on threads of their own: the subscriber must be
    // the process's default, not a scoped one.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;

    // With feature `otel` the builder propagates W3C trace context itself.
    let bus = Arc::new(Bus::builder().data_dir(data_dir).build()?);
    let shop = Arc::clone(&bus);
    bus.subscriber("shipping").topic("orders.placed").start(
        move |_: &Message<'_>| -> Result<(), bus::PublishError> {
            shop.publish("parcels.ready", &b"parcel"[..]).map(drop)
        },
    )?;
    let calls = Arc::new(AtomicU32::new(0));
    let mail_calls = Arc::clone(&calls);
    bus.subscriber("mail").topic("parcels.ready").start(
        move |_: &Message<'_>| -> Result<(), std::io::Error> {
            if mail_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
            }
            Ok(())
        },
    )?;
    tracing::info_span!("checkout").in_scope(|| bus.publish("orders.placed", &b"order"[..]))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.stats().acked < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    bus.shutdown(Duration::from_secs(5));
    provider.force_flush()?;

    let spans = exporter.get_finished_spans()?;
    let name_of = |id| {
        spans
            .iter()
            .find(|s| s.span_context.span_id() == id)
            .map_or_else(|| "-".to_owned(), |s| s.name.to_string())
    };
    let tree: Vec<(String, String)> = spans
        .iter()
        .map(|s| (s.name.to_string(), name_of(s.parent_span_id)))
        .collect();
    for (name, parent) in &tree {
        println!("{name:<28} <- {parent}");
    }
    Ok(tree)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    run(dir.path()).map(drop)
}
