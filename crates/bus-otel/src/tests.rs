use super::*;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// Runs `f` under a tracing-opentelemetry layer exporting to memory, and
/// returns the finished spans.
fn traced(f: impl FnOnce()) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bus-otel-test"));
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap()
}

#[test]
fn the_consumer_span_is_a_child_of_the_producer_span() {
    let mut headers = BTreeMap::new();
    let spans = traced(|| {
        {
            let producer = tracing::info_span!("publish");
            W3cPropagator.inject(&producer, &mut headers);
        }
        let consumer = tracing::info_span!("process");
        W3cPropagator.extract(&headers, &consumer);
    });
    let (p, c) = (named(&spans, "publish"), named(&spans, "process"));
    assert_eq!(c.span_context.trace_id(), p.span_context.trace_id());
    assert_eq!(c.parent_span_id, p.span_context.span_id());
    assert_eq!(
        headers[TRACEPARENT],
        format!(
            "00-{}-{}-01",
            p.span_context.trace_id(),
            p.span_context.span_id()
        )
    );
    assert!(
        !headers.contains_key(TRACESTATE),
        "an empty state is not written"
    );
}

#[test]
fn without_a_subscriber_nothing_is_written() {
    let mut headers = BTreeMap::new();
    let span = tracing::info_span!("publish");
    W3cPropagator.inject(&span, &mut headers);
    assert!(headers.is_empty());
}

#[test]
fn a_replay_starts_a_new_trace_linked_to_the_original() {
    let original = format!("00-{}-{}-01", TraceId::from(7_u128), SpanId::from(9_u64));
    let mut headers = BTreeMap::from([(REPLAYED_TRACEPARENT.to_owned(), original)]);
    let spans = traced(|| {
        {
            let producer = tracing::info_span!("publish");
            W3cPropagator.inject(&producer, &mut headers);
        }
        let consumer = tracing::info_span!("process");
        W3cPropagator.extract(&headers, &consumer);
    });
    let (p, c) = (named(&spans, "publish"), named(&spans, "process"));
    assert_ne!(p.span_context.trace_id(), TraceId::from(7_u128));
    assert_eq!(c.parent_span_id, p.span_context.span_id());
    for s in [p, c] {
        let links: Vec<_> = s.links.iter().map(|l| l.span_context.clone()).collect();
        assert_eq!(links.len(), 1, "{}", s.name);
        assert_eq!(links[0].trace_id(), TraceId::from(7_u128));
        assert_eq!(links[0].span_id(), SpanId::from(9_u64));
    }
}

#[test]
fn a_malformed_traceparent_starts_a_root_span() {
    let headers = BTreeMap::from([(TRACEPARENT.to_owned(), "00-zz-yy-01".to_owned())]);
    let spans = traced(|| {
        let consumer = tracing::info_span!("process");
        W3cPropagator.extract(&headers, &consumer);
    });
    assert_eq!(named(&spans, "process").parent_span_id, SpanId::INVALID);
}
