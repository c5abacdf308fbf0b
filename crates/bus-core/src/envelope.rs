use crate::Topic;
use bus_errors::{ErrorCategory, Severity};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;
use uuid::Uuid;

/// A message's unique id (a UUID v7: sortable by creation time).
pub type MessageId = Uuid;

/// Delivery priority. Workers always take the highest-priority message first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal traffic.
    High,
    /// Ahead of everything.
    Critical,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];

    /// A dense index in `0..4`, lowest first.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// One failed delivery attempt, kept on the envelope so the dead-letter queue
/// sees the whole story (like MassTransit's fault headers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Which attempt (1 for the first delivery).
    pub attempt: u32,
    /// When it failed.
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    /// The subscriber (consumer) that failed.
    pub component: String,
    /// The failure's category.
    pub category: ErrorCategory,
    /// The failure's severity.
    pub severity: Severity,
    /// The Rust type name of the error.
    pub error_type: String,
    /// The error's message (sanitized).
    pub message: String,
    /// What recovery decided (`"retry in 1s"`, `"dead-letter: retries exhausted"`).
    pub decision: String,
}

/// A message as the bus carries it: payload bytes plus the metadata every
/// component needs. Cloning is cheap for the payload ([`Bytes`] is shared).
///
/// ```
/// use bus_core::{Envelope, Priority, Topic};
///
/// let env = Envelope::new(Topic::new("orders.created").unwrap(), &b"{\"id\":1}"[..])
///     .with_priority(Priority::High)
///     .with_header("tenant", "acme")
///     .with_correlation_id("req-42")
///     .with_content_type("application/json");
/// assert_eq!(env.attempt, 1);
/// assert_eq!(env.headers["tenant"], "acme");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Envelope {
    /// Unique id, stamped at creation.
    pub id: MessageId,
    /// Where it is published.
    pub topic: Topic,
    /// The payload.
    pub payload: Bytes,
    /// MIME type of the payload, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Application headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Delivery priority.
    #[serde(default)]
    pub priority: Priority,
    /// Correlation id linking related messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When it was created.
    #[serde(with = "humantime_serde")]
    pub created_at: SystemTime,
    /// The current delivery attempt: 1 on first delivery, incremented on each retry.
    pub attempt: u32,
    /// Earlier failed attempts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
}

impl Envelope {
    /// A new envelope with a fresh id, stamped now, normal priority.
    pub fn new(topic: Topic, payload: impl Into<Bytes>) -> Self {
        Self {
            id: Uuid::now_v7(),
            topic,
            payload: payload.into(),
            content_type: None,
            headers: BTreeMap::new(),
            priority: Priority::Normal,
            correlation_id: None,
            created_at: SystemTime::now(),
            attempt: 1,
            history: Vec::new(),
        }
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the content type.
    #[must_use]
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the topic (used by replay into another topic).
    #[must_use]
    pub fn with_topic(mut self, topic: Topic) -> Self {
        self.topic = topic;
        self
    }

    /// Sets the id (used by transports that carry ids of their own).
    #[must_use]
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = id;
        self
    }

    /// How many retries have been scheduled so far.
    pub fn retries(&self) -> u32 {
        self.attempt.saturating_sub(1)
    }
}

impl fmt::Debug for Envelope {
    // The payload is summarized: it may be large, binary or sensitive.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("priority", &self.priority)
            .field("attempt", &self.attempt)
            .field("headers", &self.headers.len())
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_json_with_history() {
        let mut env = Envelope::new(Topic::new("a.b").unwrap(), vec![0_u8, 159, 255])
            .with_priority(Priority::Critical)
            .with_header("h", "v")
            .with_correlation_id("c")
            .with_content_type("application/octet-stream");
        env.attempt = 3;
        env.history.push(AttemptRecord {
            attempt: 1,
            at: SystemTime::now(),
            component: "sub".into(),
            category: ErrorCategory::Timeout,
            severity: Severity::Medium,
            error_type: "E".into(),
            message: "m".into(),
            decision: "retry in 1s".into(),
        });
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn debug_does_not_print_the_payload() {
        let env = Envelope::new(Topic::new("a").unwrap(), &b"secret-card-number"[..]);
        let dbg = format!("{env:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(dbg.contains("payload_len: 18"));
    }

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = Envelope::new(Topic::new("a").unwrap(), Bytes::new());
        let b = Envelope::new(Topic::new("a").unwrap(), Bytes::new());
        assert!(a.id < b.id);
    }
}
