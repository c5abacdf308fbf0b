//! An envelope as the columns of `messages`, and back. The fields every
//! message has are columns; the optional ones (content type, headers,
//! correlation id, attempt history) share one JSON column, NULL when all
//! are empty, so a plain message costs no JSON at all.

use bus_core::{AttemptRecord, Envelope, Priority, Topic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
struct ExtraRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    history: &'a [AttemptRecord],
}

#[derive(Deserialize, Default)]
struct Extra {
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    history: Vec<AttemptRecord>,
}

/// The `extra` column of `env`: `None` when it has none of those fields.
pub(crate) fn extra_of(env: &Envelope) -> Option<String> {
    if env.content_type.is_none()
        && env.headers.is_empty()
        && env.correlation_id.is_none()
        && env.history.is_empty()
    {
        return None;
    }
    serde_json::to_string(&ExtraRef {
        content_type: env.content_type.as_deref(),
        headers: &env.headers,
        correlation_id: env.correlation_id.as_deref(),
        history: &env.history,
    })
    .ok()
}

/// Nanoseconds since the epoch (0 before it).
pub(crate) fn nanos_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The stored priority: its dense index, higher first in `messages_ready`.
pub(crate) fn prio_of(p: Priority) -> i64 {
    p.index() as i64
}

fn priority_from(i: i64) -> Priority {
    Priority::ALL
        .get(usize::try_from(i).unwrap_or(1))
        .copied()
        .unwrap_or_default()
}

/// The columns [`decode`] reads, after `seq, leases`.
pub(crate) const ENVELOPE_COLUMNS: &str = "prio, id, created_ns, attempt, extra, payload";

/// Rebuilds an envelope of `topic` from a row read with
/// [`ENVELOPE_COLUMNS`] starting at column `at`. A row whose id or
/// extra column does not decode is an error (a damaged row).
pub(crate) fn decode(
    topic: &Topic,
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Envelope> {
    let prio: i64 = row.get(at)?;
    let id: Vec<u8> = row.get(at + 1)?;
    let created_ns: i64 = row.get(at + 2)?;
    let attempt: i64 = row.get(at + 3)?;
    let extra: Option<String> = row.get(at + 4)?;
    let payload: Vec<u8> = row.get(at + 5)?;
    let bad = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Blob, what.into())
    };
    let id = uuid::Uuid::from_slice(&id).map_err(|e| bad(format!("message id: {e}")))?;
    let extra: Extra = match extra {
        Some(json) => serde_json::from_str(&json).map_err(|e| bad(format!("extra: {e}")))?,
        None => Extra::default(),
    };
    let mut env = Envelope::new(topic.clone(), payload);
    env.id = id;
    env.priority = priority_from(prio);
    env.created_at = UNIX_EPOCH + Duration::from_nanos(created_ns.max(0).unsigned_abs());
    env.attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    env.content_type = extra.content_type;
    env.headers = extra.headers;
    env.correlation_id = extra.correlation_id;
    env.history = extra.history;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_envelope_has_no_extra_and_a_rich_one_round_trips() {
        let topic = Topic::new("orders").expect("topic");
        let plain = Envelope::new(topic.clone(), &b"x"[..]);
        assert!(extra_of(&plain).is_none());
        let rich = plain
            .with_header("tenant", "acme")
            .with_correlation_id("c-1")
            .with_content_type("text/plain");
        let json = extra_of(&rich).expect("extra");
        let back: Extra = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back.headers, rich.headers);
        assert_eq!(back.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(back.content_type.as_deref(), Some("text/plain"));
    }
}
