//! One trace from a request through a publish, a handler that publishes in
//! turn, and a consumer whose first attempt fails: over the memory transport
//! and over NATS, exported to memory.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_core::transport::Transport;
use bus_core::{Bus, Message, SimpleRetry};
use bus_nats::{NatsConfig, NatsTransport};
use bus_otel::W3cPropagator;
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// How long a test waits for a handler's signal before it fails.
const WAIT: Duration = Duration::from_secs(30);

/// Signals each dead letter the bus stored.
struct OnDeadLetter(Mutex<mpsc::Sender<()>>);

impl bus_core::Observer for OnDeadLetter {
    fn on_event(&self, _: bus_core::time::Stamp, event: &bus_core::BusEvent<'_>) {
        if matches!(event, bus_core::BusEvent::DeadLettered { .. }) {
            let _ = self.0.lock().unwrap().send(());
        }
    }
}

/// The process-wide subscriber (the bus's workers run on threads of their
/// own) and its exporter, with the provider to flush it.
fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static E: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    E.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bus-test"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .unwrap();
        (exporter, provider)
    })
}

fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| &kv.value)
}

/// Publishes `{prefix}.placed` inside a request span; its handler publishes
/// `{prefix}.shipped`, whose handler fails once and then succeeds. Returns
/// the spans of the request's trace.
fn run(transport: Option<Arc<dyn Transport>>, prefix: &str) -> Vec<SpanData> {
    let (exporter, provider) = exporter();
    let mut builder = Bus::builder()
        .trace_propagator(Arc::new(W3cPropagator))
        .recovery(Arc::new(SimpleRetry {
            max_retries: 3,
            delay: Duration::from_millis(1),
        }));
    if let Some(t) = transport {
        builder = builder.transport(t);
    }
    let bus = Arc::new(builder.build());
    let (placed, shipped) = (format!("{prefix}.placed"), format!("{prefix}.shipped"));
    let inner = Arc::clone(&bus);
    let to = shipped.clone();
    bus.subscriber("shipping")
        .topic(&placed)
        .start(move |_: &Message<'_>| -> Result<(), std::io::Error> {
            inner.publish(&to, &b"box"[..]).unwrap();
            Ok(())
        })
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let (delivered, done) = mpsc::channel();
    bus.subscriber("mail")
        .topic(&shipped)
        .start(move |_: &Message<'_>| -> Result<(), std::io::Error> {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
            }
            let _ = delivered.send(());
            Ok(())
        })
        .unwrap();
    {
        let request = tracing::info_span!("request");
        let _in = request.enter();
        bus.publish(&placed, &b"order"[..]).unwrap();
    }
    done.recv_timeout(WAIT).unwrap();
    // Shutdown drains: both acks are settled when it returns.
    let st = bus.shutdown(Duration::from_secs(10)).stats;
    assert_eq!((st.acked, st.dead_lettered), (2, 0), "{st:?}");
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let root = spans
        .iter()
        .filter(|s| s.name == "request")
        .find(|s| {
            spans.iter().any(|p| {
                p.span_context.trace_id() == s.span_context.trace_id()
                    && p.name == format!("publish {placed}")
            })
        })
        .unwrap();
    let id = root.span_context.trace_id();
    spans
        .into_iter()
        .filter(|s| s.span_context.trace_id() == id)
        .collect()
}

fn check(spans: &[SpanData], prefix: &str, system: &str) {
    let one = |name: &str| -> &SpanData {
        let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{name} in {:?}", names(spans));
        found[0]
    };
    let request = one("request");
    let pub_placed = one(&format!("publish {prefix}.placed"));
    let proc_placed = one(&format!("process {prefix}.placed"));
    let pub_shipped = one(&format!("publish {prefix}.shipped"));
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.name == format!("process {prefix}.shipped"))
        .collect();
    assert_eq!(attempts.len(), 2, "{:?}", names(spans));

    assert_eq!(pub_placed.parent_span_id, request.span_context.span_id());
    assert_eq!(
        proc_placed.parent_span_id,
        pub_placed.span_context.span_id()
    );
    assert_eq!(
        pub_shipped.parent_span_id,
        proc_placed.span_context.span_id()
    );
    for a in &attempts {
        assert_eq!(a.parent_span_id, pub_shipped.span_context.span_id());
        assert_eq!(a.span_kind, SpanKind::Consumer);
        assert_eq!(
            attr(a, "messaging.consumer.group.name"),
            Some(&"mail".into())
        );
        assert_eq!(attr(a, "messaging.system"), Some(&system.to_owned().into()));
    }
    assert_eq!(pub_placed.span_kind, SpanKind::Producer);
    assert_eq!(
        attr(pub_placed, "messaging.destination.name"),
        Some(&format!("{prefix}.placed").into())
    );
    let by_attempt = |n: i64| {
        attempts
            .iter()
            .find(|a| attr(a, "bus.attempt") == Some(&Value::I64(n)))
            .unwrap_or_else(|| panic!("no attempt {n}: {:?}", attempts[0].attributes))
    };
    assert_eq!(attr(by_attempt(1), "error.type"), Some(&"TIMEOUT".into()));
    assert_eq!(attr(by_attempt(2), "error.type"), None);
    // The conversation is the first message's: the shipped message took
    // its id as correlation id.
    assert_eq!(
        attr(pub_shipped, "messaging.message.conversation_id"),
        attr(proc_placed, "messaging.message.id")
    );
    // The request is the trace's root.
    assert_eq!(request.parent_span_id, SpanId::INVALID);
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

#[test]
fn one_trace_over_the_memory_transport() {
    let spans = run(None, "mem");
    check(&spans, "mem", "bus");
}

#[test]
fn one_trace_over_nats() {
    if !bus_test::nats::nats_available("one_trace_over_nats") {
        return;
    }
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let cfg = NatsConfig::new(bus_test::nats::URL)
        .with_stream_prefix(format!("OT{}", &tag[..10]))
        .with_subject_prefix(format!("ot{}", &tag[..10]));
    let nats = Arc::new(NatsTransport::connect(cfg).unwrap());
    let spans = run(Some(Arc::clone(&nats) as Arc<dyn Transport>), "nats");
    nats.delete_streams().unwrap();
    check(&spans, "nats", "nats");
}

#[test]
fn one_trace_over_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        bus_sqlite::SqliteTransport::open(bus_sqlite::SqliteConfig::new(dir.path())).unwrap();
    let spans = run(Some(Arc::new(sqlite) as Arc<dyn Transport>), "sql");
    check(&spans, "sql", "sqlite");
}

#[test]
fn a_replayed_letter_starts_a_trace_linked_to_the_original() {
    let (exporter, provider) = exporter();
    let letters = bus_core::MemoryDeadLetters::new();
    let (stored, dead) = mpsc::channel();
    let bus = Bus::builder()
        .trace_propagator(Arc::new(W3cPropagator))
        .recovery(Arc::new(bus_core::NoRetry))
        .dead_letters(Arc::new(letters.clone()))
        .observer(Arc::new(OnDeadLetter(Mutex::new(stored))))
        .build();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let (delivered, done) = mpsc::channel();
    bus.subscriber("billing")
        .topic("replay.charge")
        .start(move |_: &Message<'_>| -> Result<(), std::io::Error> {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(std::io::Error::other("card service down"));
            }
            let _ = delivered.send(());
            Ok(())
        })
        .unwrap();
    {
        let request = tracing::info_span!("checkout");
        let _in = request.enter();
        bus.publish("replay.charge", &b"42"[..]).unwrap();
    }
    dead.recv_timeout(WAIT).unwrap();
    let letter = letters.letters().remove(0);
    let original = letter.envelope.headers[bus_core::trace::TRACEPARENT].clone();
    // Replayed later, outside any span, as the bus's replay poller does.
    bus.publish_envelope(bus_dlq::replay_envelope(&letter, None))
        .unwrap();
    done.recv_timeout(WAIT).unwrap();
    bus.shutdown(Duration::from_secs(10));
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let first = spans
        .iter()
        .find(|s| {
            s.name == "publish replay.charge"
                && original.contains(&s.span_context.span_id().to_string())
        })
        .unwrap();
    let again: Vec<_> = spans
        .iter()
        .filter(|s| s.name.ends_with("replay.charge") && !s.links.is_empty())
        .collect();
    assert_eq!(
        again.len(),
        2,
        "the replay's producer and consumer spans link"
    );
    for s in again {
        assert_ne!(s.span_context.trace_id(), first.span_context.trace_id());
        let link = &s.links.iter().next().unwrap().span_context;
        assert_eq!(link.trace_id(), first.span_context.trace_id());
        assert_eq!(link.span_id(), first.span_context.span_id());
    }
}

#[test]
fn an_async_handler_continues_the_trace_and_the_conversation() {
    let (exporter, provider) = exporter();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let bus = Arc::new(
        Bus::builder()
            .trace_propagator(Arc::new(W3cPropagator))
            .build(),
    );
    let inner = Arc::clone(&bus);
    bus.subscriber("shipping")
        .topic("async.placed")
        .runtime(rt.handle().clone())
        .start_async(move |_: bus_core::runtime::OwnedMessage| {
            let bus = Arc::clone(&inner);
            async move {
                // Across an await: the next poll may run on another thread.
                tokio::task::yield_now().await;
                bus.publish_async("async.shipped", &b"box"[..])
                    .await
                    .map(drop)
            }
        })
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let (delivered, done) = mpsc::channel();
    bus.subscriber("mail")
        .topic("async.shipped")
        .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
            s2.lock().unwrap().push(m.envelope().clone());
            let _ = delivered.send(());
            Ok(())
        })
        .unwrap();
    let placed = tracing::info_span!("order").in_scope(|| bus.publish("async.placed", &b"o"[..]));
    let placed = placed.unwrap();
    done.recv_timeout(WAIT).unwrap();
    bus.shutdown(Duration::from_secs(10));
    provider.force_flush().unwrap();

    let shipped = seen.lock().unwrap()[0].clone();
    assert_eq!(shipped.correlation_id, Some(placed.to_string()));
    assert_eq!(
        shipped.headers[bus_core::trace::CAUSATION_ID],
        placed.to_string()
    );
    let spans = exporter.get_finished_spans().unwrap();
    let process = spans
        .iter()
        .find(|s| {
            s.name == "process async.placed"
                && attr(s, "messaging.message.id") == Some(&placed.to_string().into())
        })
        .unwrap();
    let publish = spans
        .iter()
        .find(|s| {
            s.name == "publish async.shipped"
                && s.span_context.trace_id() == process.span_context.trace_id()
        })
        .unwrap();
    assert_eq!(publish.parent_span_id, process.span_context.span_id());
}
