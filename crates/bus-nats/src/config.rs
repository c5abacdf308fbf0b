//! [`NatsConfig`]: where the broker is, how streams and consumers are named
//! and sized, and how the connection recovers.

use bus_core::Topic;
use std::time::Duration;

/// Where JetStream keeps a stream's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Storage {
    /// On disk: survives a server restart (the default).
    #[default]
    File,
    /// In memory: lost when the server restarts.
    Memory,
}

/// Settings of a [`NatsTransport`](crate::NatsTransport).
///
/// ```
/// use bus_nats::NatsConfig;
/// use std::time::Duration;
///
/// let config = NatsConfig::new("nats://127.0.0.1:4222")
///     .with_stream_prefix("SHOP")
///     .with_subject_prefix("shop")
///     .with_max_ack_pending(256)
///     .with_ack_wait(Duration::from_secs(10));
/// assert_eq!(config.stream_for(&bus_core::Topic::new("orders.created").unwrap()), "SHOP_orders");
/// assert_eq!(config.subject_for(&bus_core::Topic::new("orders.created").unwrap()), "shop.orders.created");
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Server URL (default `nats://127.0.0.1:4222`).
    pub url: String,
    /// Client name shown by the server.
    pub name: Option<String>,
    /// Stream names are `<stream_prefix>_<first topic segment>` (default `BUS`).
    pub stream_prefix: String,
    /// Subjects are `<subject_prefix>.<topic>` (default `bus`).
    pub subject_prefix: String,
    /// Unacknowledged deliveries a consumer (group) may have outstanding;
    /// fetching stops there (default 1000). A stalled consumer shows up in
    /// [`queue_depths`](bus_core::Transport::queue_depths) with its depth at
    /// this capacity.
    pub max_ack_pending: usize,
    /// How long the server waits for a settle before redelivering (default
    /// 30 s). Deliveries held by a handler are kept alive with in-progress
    /// acks (see `auto_progress_limit`).
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// JetStream `MaxDeliver`: a backstop above the bus's own retry policy.
    /// A message delivered this many times is never redelivered; its
    /// advisory is turned into a dead letter (default 20).
    pub max_deliver: i64,
    /// Stream replicas (default 1).
    pub replicas: usize,
    /// Stream storage (default file).
    pub storage: Storage,
    /// Publish de-duplication window on the envelope id (default 2 min).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long messages are kept in a stream; zero keeps them until the
    /// stream's limits say otherwise (default 7 days).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How long [`connect`](crate::NatsTransport::connect) waits for the server (default 5 s).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max_delay` (default 100 ms).
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    /// Longest reconnect delay (default 5 s).
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// Timeout of JetStream API requests (stream and consumer management,
    /// default 5 s).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Messages a subscription pulls ahead of its handler (default 8, at
    /// most `max_ack_pending`). Prefetched messages count against `ack_wait`.
    pub prefetch: usize,
    /// Refuse a publish with [`PublishError::NoSubscribers`](bus_core::PublishError::NoSubscribers)
    /// when no consumer group exists for its topic, like the memory
    /// transport (default true). When false the message is stored anyway
    /// and reaches no group that is created later.
    pub require_consumer: bool,
    /// How long the count of consumer groups per topic is cached for
    /// publish receipts (default 1 s; a local subscribe refreshes it).
    #[serde(with = "humantime_serde")]
    pub consumer_cache_ttl: Duration,
    /// A delivery held by a handler longer than `ack_wait / 3` gets
    /// in-progress acks, for at most this long in total; zero disables them
    /// (default 5 min).
    #[serde(with = "humantime_serde")]
    pub auto_progress_limit: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            name: None,
            stream_prefix: "BUS".into(),
            subject_prefix: "bus".into(),
            max_ack_pending: 1000,
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
            replicas: 1,
            storage: Storage::File,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            connect_timeout: Duration::from_secs(5),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            prefetch: 8,
            require_consumer: true,
            consumer_cache_ttl: Duration::from_secs(1),
            auto_progress_limit: Duration::from_secs(300),
        }
    }
}

impl NatsConfig {
    /// The defaults, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Sets the stream name prefix.
    #[must_use]
    pub fn with_stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = prefix.into();
        self
    }

    /// Sets the subject prefix.
    #[must_use]
    pub fn with_subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Sets `max_ack_pending`.
    #[must_use]
    pub fn with_max_ack_pending(mut self, n: usize) -> Self {
        self.max_ack_pending = n;
        self
    }

    /// Sets `ack_wait`.
    #[must_use]
    pub fn with_ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// Sets the `MaxDeliver` backstop.
    #[must_use]
    pub fn with_max_deliver(mut self, n: i64) -> Self {
        self.max_deliver = n;
        self
    }

    /// Sets the storage.
    #[must_use]
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Sets the prefetch.
    #[must_use]
    pub fn with_prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// Sets `require_consumer`.
    #[must_use]
    pub fn with_require_consumer(mut self, yes: bool) -> Self {
        self.require_consumer = yes;
        self
    }

    /// The stream that carries `topic`: one per first topic segment.
    pub fn stream_for(&self, topic: &Topic) -> String {
        let first = topic.as_str().split('.').next().unwrap_or_default();
        format!("{}_{}", self.stream_prefix, first)
    }

    /// The subject `topic` is published on.
    pub fn subject_for(&self, topic: &Topic) -> String {
        format!("{}.{}", self.subject_prefix, topic.as_str())
    }

    /// The topic of `subject`, if it is one of ours.
    pub fn topic_of(&self, subject: &str) -> Option<Topic> {
        let rest = subject
            .strip_prefix(&self.subject_prefix)?
            .strip_prefix('.')?;
        Topic::new(rest).ok()
    }

    /// The durable consumer of `group` on `topic`: the group and topic with
    /// every character outside `[A-Za-z0-9_-]` replaced by `_`, plus a hash
    /// of both so distinct pairs never collide.
    pub fn consumer_for(&self, topic: &Topic, group: &str) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(64)
                .collect()
        };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in group.bytes().chain([0]).chain(topic.as_str().bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!(
            "{}__{}__{:08x}",
            clean(group),
            clean(topic.as_str()),
            h as u32
        )
    }

    /// The stream holding MaxDeliver advisories of `stream`.
    pub fn advisory_stream_for(stream: &str) -> String {
        format!("{stream}_MAXDLV")
    }

    pub(crate) fn prefetch_batch(&self) -> usize {
        self.prefetch.clamp(1, self.max_ack_pending.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_topics_onto_streams_subjects_and_consumers() {
        let c = NatsConfig::default();
        let t = Topic::new("orders.created").unwrap();
        assert_eq!(c.stream_for(&t), "BUS_orders");
        assert_eq!(c.subject_for(&t), "bus.orders.created");
        assert_eq!(c.topic_of("bus.orders.created"), Some(t.clone()));
        assert_eq!(c.topic_of("other.orders"), None);
        let a = c.consumer_for(&t, "billing team");
        assert!(a.starts_with("billing_team__orders_created__"), "{a}");
        assert_ne!(a, c.consumer_for(&t, "billing_team"));
        assert_ne!(
            a,
            c.consumer_for(&Topic::new("orders_created").unwrap(), "billing team")
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = NatsConfig::new("nats://h:1").with_max_deliver(3);
        let back: NatsConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.url, "nats://h:1");
        assert_eq!(back.max_deliver, 3);
        assert_eq!(back.ack_wait, c.ack_wait);
    }
}
