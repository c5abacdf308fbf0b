//! What the bus's spans cost per message, publish to ack, one publisher and
//! one subscriber on the memory transport: with no `tracing` subscriber (the
//! spans are disabled callsites), and with a tracing-opentelemetry layer
//! exporting to memory and the W3C propagator writing `traceparent` into
//! every message. The difference of the two is the cost of tracing.
//!
//! The layer is the process's default subscriber (the bus's worker threads
//! must see it), and one can be set only once: the untraced bench runs
//! first.

use bus_core::trace::{NoPropagation, TracePropagator};
use bus_core::{Bus, Envelope, Message, Topic};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;

const BATCH: u64 = 1_000;

fn bus(propagator: Arc<dyn TracePropagator>) -> Bus {
    let bus = Bus::builder().trace_propagator(propagator).build();
    bus.subscriber("s")
        .topic("bench.traces")
        .start(|_: &Message<'_>| Ok::<(), std::io::Error>(()))
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    bus
}

/// Publishes `n` messages and waits until all are acked.
fn round(bus: &Bus, topic: &Topic, n: u64) -> Duration {
    let before = bus.stats().acked;
    let t = Instant::now();
    for _ in 0..n {
        let env = Envelope::new(topic.clone(), &b"0123456789abcdef"[..]);
        bus.publish_envelope(env)
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }
    while bus.stats().acked < before + n {
        std::hint::spin_loop();
    }
    t.elapsed()
}

fn traces(c: &mut Criterion) {
    let topic = Topic::new("bench.traces").unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("traces");
    g.throughput(Throughput::Elements(BATCH));

    let plain = bus(Arc::new(NoPropagation));
    g.bench_function("no_subscriber", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| round(&plain, &topic, BATCH)).sum());
    });
    plain.shutdown(Duration::from_secs(5));

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .unwrap_or_else(|e| panic!("{e}"));
    let traced = bus(Arc::new(bus_otel::W3cPropagator));
    g.bench_function("otel_in_memory", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let root = tracing::info_span!("request");
                total += root.in_scope(|| round(&traced, &topic, BATCH));
                // The exporter keeps every span: emptied between rounds.
                exporter.reset();
            }
            total
        });
    });
    traced.shutdown(Duration::from_secs(5));
    g.finish();
}

criterion_group!(benches, traces);
criterion_main!(benches);
