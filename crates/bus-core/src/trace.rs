//! Traces across the bus: the spans the bus opens, the trace context a
//! message carries in its headers, and the conversation it belongs to.
//!
//! The bus opens a producer span per publish (`publish {topic}`) and a
//! consumer span per delivery attempt (`process {topic}`) with `tracing`,
//! named and attributed after OpenTelemetry's messaging conventions. With no
//! `tracing` subscriber, or one that filters target `bus` out, they cost an
//! atomic load each. A [`TracePropagator`] carries the producer's context to
//! the consumer in the headers ([`TRACEPARENT`], [`TRACESTATE`]): `bus-otel`
//! provides the W3C one; the default, [`NoPropagation`], writes nothing.
//!
//! A message published while a handler runs continues that handler's
//! conversation: it takes the handled message's correlation id (its id,
//! when it has none) and records the handled message's id in
//! [`CAUSATION_ID`]. A message published outside any handler is its own
//! conversation: its id serves, nothing is generated.

use crate::{Envelope, MessageId, Transport};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

/// The W3C trace context header: version, trace id, parent span id, flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace state header.
pub const TRACESTATE: &str = "tracestate";
/// The header a replayed message keeps its original `traceparent` under: a
/// replay starts a new trace that links to the one the message failed in.
pub const REPLAYED_TRACEPARENT: &str = "bus-replayed-traceparent";
/// The header naming the message whose handler published this one.
pub const CAUSATION_ID: &str = "bus-causation-id";

/// Carries a span's trace context in a message's headers and back.
///
/// ```
/// use bus_core::trace::{NoPropagation, TracePropagator};
/// use std::collections::BTreeMap;
///
/// let mut headers = BTreeMap::new();
/// NoPropagation.inject(&tracing::Span::none(), &mut headers);
/// assert!(headers.is_empty());
/// ```
pub trait TracePropagator: Send + Sync {
    /// At publish, inside the producer span `span`: writes the span's
    /// context into `headers`. Writes (and allocates) nothing when there is
    /// no valid context. A [`REPLAYED_TRACEPARENT`] header, if present,
    /// becomes a link of `span`.
    fn inject(&self, span: &tracing::Span, headers: &mut BTreeMap<String, String>);

    /// At delivery, before the handler runs: makes the consumer span `span`
    /// a child of the context in `headers` (and links it to a
    /// [`REPLAYED_TRACEPARENT`]).
    fn extract(&self, headers: &BTreeMap<String, String>, span: &tracing::Span);
}

/// Propagates nothing: spans still open, each trace ends at the transport.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPropagation;

impl TracePropagator for NoPropagation {
    fn inject(&self, _: &tracing::Span, _: &mut BTreeMap<String, String>) {}
    fn extract(&self, _: &BTreeMap<String, String>, _: &tracing::Span) {}
}

/// The target of the bus's spans: a filter that leaves it out makes them
/// free.
pub const SPAN_TARGET: &str = "bus";

/// The producer span of a publish of `env`, a child of the current span.
#[inline]
pub(crate) fn producer_span(env: &Envelope, transport: &dyn Transport) -> tracing::Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "publish",
        otel.name = %format_args!("publish {}", env.topic),
        otel.kind = "producer",
        messaging.system = transport.messaging_system(),
        messaging.destination.name = %env.topic,
        messaging.operation.name = "publish",
        messaging.operation.type = "send",
        messaging.message.id = %env.id,
        messaging.message.conversation_id = %Conversation(env),
    )
}

/// The consumer span of one delivery attempt of `env` to `group`; its
/// parent is set from the headers by the [`TracePropagator`].
#[inline]
pub(crate) fn consumer_span(
    env: &Envelope,
    group: &str,
    transport: &dyn Transport,
) -> tracing::Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "process",
        otel.name = %format_args!("process {}", env.topic),
        otel.kind = "consumer",
        messaging.system = transport.messaging_system(),
        messaging.destination.name = %env.topic,
        messaging.consumer.group.name = group,
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.message.id = %env.id,
        messaging.message.conversation_id = %Conversation(env),
        bus.attempt = i64::from(env.attempt),
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Marks `span` failed with the error's category (`error.type`).
pub(crate) fn record_failure(span: &tracing::Span, category: &str) {
    if !span.is_disabled() {
        span.record("error.type", category);
        span.record("otel.status_code", "ERROR");
    }
}

/// Displays the conversation id without allocating.
struct Conversation<'a>(&'a Envelope);

impl std::fmt::Display for Conversation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.correlation_id {
            Some(c) => f.write_str(c),
            None => self.0.id.fmt(f),
        }
    }
}

thread_local! {
    /// The id of the message a handler on this thread is handling now.
    static HANDLING: Cell<Option<MessageId>> = const { Cell::new(None) };
    /// Its correlation id, when it has one (kept apart so that the common
    /// case, no correlation id, moves no string).
    static CORRELATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks the message a handler is about to run on, for publishes the
/// handler makes on this thread, until the guard drops.
#[inline]
pub(crate) fn handling(env: &Envelope) -> HandlingGuard {
    handling_ids(env.id, env.correlation_id.as_deref())
}

/// [`handling`] from the ids alone (an async handler's poll has no
/// envelope at hand).
#[inline]
pub(crate) fn handling_ids(id: MessageId, correlation: Option<&str>) -> HandlingGuard {
    let id_before = HANDLING.with(|h| h.replace(Some(id)));
    // A correlation string is there only while an enclosing handler with
    // one runs on this thread: when there is neither, nothing moves.
    let correlation_before = match (correlation, id_before) {
        (None, None) => None,
        (Some(c), _) => Some(CORRELATION.with(|k| k.replace(Some(c.to_owned())))),
        (None, Some(_)) => Some(CORRELATION.with(|k| k.borrow_mut().take())),
    };
    HandlingGuard {
        id_before,
        correlation_before,
    }
}

/// Restores what was marked before (a handler may publish synchronously
/// into a bus whose delivery runs another handler on this thread).
#[must_use]
pub(crate) struct HandlingGuard {
    id_before: Option<MessageId>,
    /// `None`: the correlation slot was not touched.
    correlation_before: Option<Option<String>>,
}

impl Drop for HandlingGuard {
    #[inline]
    fn drop(&mut self) {
        HANDLING.with(|h| h.set(self.id_before));
        if let Some(before) = self.correlation_before.take() {
            CORRELATION.with(|k| *k.borrow_mut() = before);
        }
    }
}

/// Continues the conversation of the message being handled on this thread,
/// if any: a correlation id the publisher did not set is inherited, and
/// the handled message's id recorded as the cause.
#[inline]
pub(crate) fn continue_conversation(env: &mut Envelope) {
    let Some(cause) = HANDLING.with(Cell::get) else {
        return;
    };
    if env.correlation_id.is_none() {
        env.correlation_id = Some(
            CORRELATION
                .with(|k| k.borrow().clone())
                .unwrap_or_else(|| cause.to_string()),
        );
    }
    env.headers
        .entry(CAUSATION_ID.to_owned())
        .or_insert_with(|| cause.to_string());
}

/// The conversation `env` belongs to: its correlation id, or its own id.
pub fn conversation_id(env: &Envelope) -> String {
    env.correlation_id
        .clone()
        .unwrap_or_else(|| env.id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topic;

    fn env() -> Envelope {
        Envelope::new(Topic::new("t").unwrap(), &b"x"[..])
    }

    #[test]
    fn outside_a_handler_a_message_is_its_own_conversation() {
        let mut e = env();
        continue_conversation(&mut e);
        assert_eq!(e.correlation_id, None);
        assert!(e.headers.is_empty());
        assert_eq!(conversation_id(&e), e.id.to_string());
    }

    #[test]
    fn inside_a_handler_the_conversation_and_cause_carry_over_and_unwind() {
        let first = env();
        let mut second = env().with_correlation_id("order-7");
        let _outer = handling(&first);
        let mut child = env();
        continue_conversation(&mut child);
        assert_eq!(child.correlation_id, Some(first.id.to_string()));
        assert_eq!(child.headers[CAUSATION_ID], first.id.to_string());
        {
            let _inner = handling(&second);
            let mut grandchild = env();
            continue_conversation(&mut grandchild);
            assert_eq!(grandchild.correlation_id.as_deref(), Some("order-7"));
            assert_eq!(grandchild.headers[CAUSATION_ID], second.id.to_string());
        }
        // A publisher's own correlation id is kept.
        continue_conversation(&mut second);
        assert_eq!(second.correlation_id.as_deref(), Some("order-7"));
        assert_eq!(second.headers[CAUSATION_ID], first.id.to_string());
        drop(_outer);
        let mut after = env();
        continue_conversation(&mut after);
        assert_eq!(after.correlation_id, None);
    }
}
