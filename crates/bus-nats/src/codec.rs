//! Envelope metadata in NATS headers, payload as the body.
//!
//! | header | envelope field |
//! |---|---|
//! | `Nats-Msg-Id` | `id` (also JetStream's de-duplication key) |
//! | `Bus-Priority` | `priority` (`low`, `normal`, `high`, `critical`) |
//! | `Bus-Correlation-Id` | `correlation_id` |
//! | `Content-Type` | `content_type` |
//! | `Bus-Attempt` | `attempt` when published |
//! | `Bus-Created-At` | `created_at`, nanoseconds since the Unix epoch |
//! | `Bus-History` | `history` as JSON, when not empty |
//! | `Bus-H-<key>` | `headers[key]` |
//!
//! Header names and values are percent-encoded where NATS would refuse them
//! (`%`, control characters, and `:` or spaces in names).

use async_nats::HeaderMap;
use bus_core::{AttemptRecord, Envelope, Priority, Topic};
use bytes::Bytes;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
const PRIORITY: &str = "Bus-Priority";
const CORRELATION: &str = "Bus-Correlation-Id";
const CONTENT_TYPE: &str = "Content-Type";
const ATTEMPT: &str = "Bus-Attempt";
const CREATED_AT: &str = "Bus-Created-At";
const HISTORY: &str = "Bus-History";
const CUSTOM: &str = "Bus-H-";

fn encode(s: &str, name: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bad = c == '%' || c.is_control() || (name && (c == ':' || c.is_whitespace()));
        if bad {
            let mut buf = [0_u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The headers the transport stores `env`'s metadata in (the table in
/// the crate docs): what a publish through [`NatsTransport`] puts on the
/// wire beside the payload, for a program that publishes the same
/// messages with async-nats directly (a baseline, a bridge).
///
/// ```
/// use bus_core::{Envelope, Topic};
///
/// let env = Envelope::new(Topic::new("orders.created").unwrap(), &b"{}"[..]);
/// let headers = bus_nats::to_headers(&env);
/// let id = env.id.to_string();
/// assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some(id.as_str()));
/// ```
///
/// [`NatsTransport`]: crate::NatsTransport
pub fn to_headers(env: &Envelope) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, env.id.to_string().as_str());
    h.insert(PRIORITY, env.priority.as_str());
    if let Some(c) = &env.correlation_id {
        h.insert(CORRELATION, encode(c, false).as_str());
    }
    if let Some(c) = &env.content_type {
        h.insert(CONTENT_TYPE, encode(c, false).as_str());
    }
    h.insert(ATTEMPT, env.attempt.to_string().as_str());
    let nanos = env
        .created_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    h.insert(CREATED_AT, nanos.to_string().as_str());
    if !env.history.is_empty()
        && let Ok(json) = serde_json::to_string(&env.history)
    {
        h.insert(HISTORY, encode(&json, false).as_str());
    }
    for (k, v) in &env.headers {
        let name = format!("{CUSTOM}{}", encode(k, true));
        h.insert(name.as_str(), encode(v, false).as_str());
    }
    h
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.as_str())
}

/// Rebuilds an envelope from a stored message. Missing or foreign headers
/// fall back to defaults (`fallback_id` when there is no usable id), so a
/// message published by another client is still delivered.
pub(crate) fn from_message(
    topic: Topic,
    payload: Bytes,
    headers: Option<&HeaderMap>,
    fallback_id: Uuid,
) -> Envelope {
    let mut env = Envelope::new(topic, payload).with_id(fallback_id);
    let Some(h) = headers else {
        return env;
    };
    if let Some(id) = get(h, MSG_ID).and_then(|s| Uuid::parse_str(s).ok()) {
        env = env.with_id(id);
    }
    if let Some(p) =
        get(h, PRIORITY).and_then(|p| Priority::ALL.into_iter().find(|x| x.as_str() == p))
    {
        env.priority = p;
    }
    env.correlation_id = get(h, CORRELATION).map(decode);
    env.content_type = get(h, CONTENT_TYPE).map(decode);
    if let Some(a) = get(h, ATTEMPT).and_then(|a| a.parse().ok()) {
        env.attempt = a;
    }
    if let Some(n) = get(h, CREATED_AT).and_then(|n| n.parse::<u64>().ok()) {
        env.created_at = UNIX_EPOCH + Duration::from_nanos(n);
    } else {
        env.created_at = SystemTime::now();
    }
    if let Some(hist) =
        get(h, HISTORY).and_then(|j| serde_json::from_str::<Vec<AttemptRecord>>(&decode(j)).ok())
    {
        env.history = hist;
    }
    for (name, values) in h.iter() {
        let name: &str = name.as_ref();
        if let Some(key) = name.strip_prefix(CUSTOM)
            && let Some(v) = values.last()
        {
            env.headers.insert(decode(key), decode(v.as_str()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_survives_the_headers() {
        let mut env = Envelope::new(Topic::new("a.b").unwrap(), &b"\x00\xffpayload"[..])
            .with_priority(Priority::Critical)
            .with_header("tenant", "acme")
            .with_header("odd key: x", "line1\r\nline2 100%")
            .with_correlation_id("req-1")
            .with_content_type("application/json");
        env.attempt = 3;
        env.history.push(AttemptRecord {
            attempt: 1,
            at: SystemTime::now(),
            component: "c".into(),
            category: bus_errors::ErrorCategory::Timeout,
            severity: bus_errors::Severity::Low,
            error_type: "E".into(),
            message: "went\nwrong".into(),
            decision: "retry in 1s".into(),
        });
        let h = to_headers(&env);
        let back = from_message(
            env.topic.clone(),
            env.payload.clone(),
            Some(&h),
            Uuid::nil(),
        );
        assert_eq!(back, env);
    }

    #[test]
    fn a_foreign_message_gets_defaults() {
        let id = Uuid::now_v7();
        let env = from_message(Topic::new("x").unwrap(), Bytes::from_static(b"p"), None, id);
        assert_eq!(env.id, id);
        assert_eq!(env.attempt, 1);
        assert_eq!(env.priority, Priority::Normal);
    }

    #[test]
    fn percent_decoding_is_the_inverse_of_encoding() {
        for s in ["", "plain", "100%", "a:b c", "\u{7f}é\n", "%zz", "%4"] {
            assert_eq!(decode(&encode(s, true)), s, "{s:?}");
        }
    }
}
