//! The bus's spans as OpenTelemetry spans, one trace from publisher to
//! consumer.
//!
//! The bus opens its spans with `tracing` (see `bus_core::trace`); a
//! `tracing-opentelemetry` layer turns them into OpenTelemetry spans. This
//! crate's [`W3cPropagator`] is the bus's [`TracePropagator`]: at publish it
//! writes the producer span's context into the message's `traceparent` and
//! `tracestate` headers, and at delivery it makes the consumer span a child
//! of it, so a message's trace crosses every transport (the headers travel
//! with the envelope, into dead letters too). A replayed letter starts a new
//! trace with a link to the one it failed in.
//!
//! ```
//! use bus_core::trace::TracePropagator;
//! use bus_otel::W3cPropagator;
//! use opentelemetry::trace::TracerProvider as _;
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let provider = SdkTracerProvider::builder().build();
//! let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bus"));
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::with_default(subscriber, || {
//!     let mut headers = std::collections::BTreeMap::new();
//!     let span = tracing::info_span!("publish orders");
//!     W3cPropagator.inject(&span, &mut headers);
//!     assert!(headers["traceparent"].starts_with("00-"));
//! });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use bus_core::trace::{REPLAYED_TRACEPARENT, TRACEPARENT, TRACESTATE, TracePropagator};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::BTreeMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// W3C Trace Context (`traceparent`, `tracestate`) in message headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct W3cPropagator;

struct Headers<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty trace state says nothing: not worth a header.
        if !(key == TRACESTATE && value.is_empty()) {
            self.0.insert(key.to_owned(), value);
        }
    }
}

struct Read<'a>(&'a BTreeMap<String, String>);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The replayed-from context, read as the `traceparent` it was.
fn replayed(headers: &BTreeMap<String, String>) -> Option<opentelemetry::trace::SpanContext> {
    let original = headers.get(REPLAYED_TRACEPARENT)?;
    let one = BTreeMap::from([(TRACEPARENT.to_owned(), original.clone())]);
    let cx = TraceContextPropagator::new().extract(&Read(&one));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

impl TracePropagator for W3cPropagator {
    fn inject(&self, span: &tracing::Span, headers: &mut BTreeMap<String, String>) {
        if span.is_disabled() {
            return;
        }
        if let Some(link) = replayed(headers) {
            span.add_link(link);
        }
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return;
        }
        TraceContextPropagator::new().inject_context(&cx, &mut Headers(headers));
    }

    fn extract(&self, headers: &BTreeMap<String, String>, span: &tracing::Span) {
        if span.is_disabled() {
            return;
        }
        if headers.contains_key(TRACEPARENT) {
            let parent = TraceContextPropagator::new().extract(&Read(headers));
            if parent.span().span_context().is_valid() {
                let _ = span.set_parent(parent);
            }
        }
        if let Some(link) = replayed(headers) {
            span.add_link(link);
        }
    }
}

#[cfg(test)]
mod tests;
