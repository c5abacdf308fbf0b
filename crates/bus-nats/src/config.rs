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

/// What a stream at its `max_bytes` or `max_messages` does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Discard {
    /// Refuse it: the publish fails with a RESOURCE_EXHAUSTION
    /// [`NatsError::Refused`](crate::NatsError::Refused) and the publisher
    /// keeps the message (the default: nothing stored is ever dropped).
    #[default]
    New,
    /// Delete the oldest messages to make room, settled or not. Loses
    /// messages; refused unless `allow_message_loss` is set.
    Old,
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
    ///
    /// It also bounds a group's settles awaiting the server's
    /// confirmation in this process. A settle (ack, nak, term) is sent and
    /// confirmed in the background, so a worker does not wait a round trip
    /// per message; it waits only while its group has this many
    /// unconfirmed (the server being slow or away).
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
    /// Publish de-duplication window on the envelope id (default 2 min). A
    /// publish whose confirmation was lost is resent for three quarters of
    /// it (see [`resend_deadline`](Self::resend_deadline)).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long messages are kept in a stream. Zero (the default) keeps
    /// them until the stream is deleted; anything else expires messages
    /// nobody handled yet, so it is refused unless `allow_message_loss`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Size limit of each topic stream in bytes; -1 (the default) is none.
    /// What happens at the limit is `discard`.
    pub max_bytes: i64,
    /// Message count limit of each topic stream; -1 (the default) is none.
    pub max_messages: i64,
    /// What a stream at `max_bytes` / `max_messages` does (default
    /// [`Discard::New`]: refuse the publish).
    pub discard: Discard,
    /// Accept streams that may delete unsettled messages (`discard = old`
    /// with a limit, or a `max_age`). Off by default: such a stream, whether
    /// configured here or found on the server, is refused with
    /// [`NatsError::LossyStream`](crate::NatsError::LossyStream).
    pub allow_message_loss: bool,
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
    /// most `max_ack_pending`). It is the batch of each pull request
    /// (`max_messages_per_batch`): the client asks for the next batch once
    /// half of one is consumed, so deliveries come without a round trip
    /// each. Prefetched messages count against `ack_wait`.
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
    /// Publishes handed to the server and not yet confirmed, across the
    /// transport (default 65 536): past it a publish waits, within its
    /// timeout, for a confirmation. Set it at least as large as the sum of
    /// the windows of the [`Publisher`](bus_core::Publisher)s on this
    /// transport, or they wait here instead of filling their windows.
    pub max_publishes_in_flight: usize,
    /// The application's runtime for the client, its PubAck futures and
    /// fetches ([`with_runtime`](Self::with_runtime)); `None` (the
    /// default): the transport owns one. Not part of a configuration file.
    #[serde(skip)]
    pub runtime: Option<tokio::runtime::Handle>,
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
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_messages: -1,
            discard: Discard::New,
            allow_message_loss: false,
            connect_timeout: Duration::from_secs(5),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            prefetch: 8,
            require_consumer: true,
            consumer_cache_ttl: Duration::from_secs(1),
            auto_progress_limit: Duration::from_secs(300),
            max_publishes_in_flight: 65_536,
            runtime: None,
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

    /// Runs the transport on the application's tokio runtime (IO and time
    /// enabled), not one of its own; see [`NatsTransport`](crate::NatsTransport)
    /// for where its synchronous methods may then be called.
    /// ```
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let config = bus_nats::NatsConfig::default().with_runtime(rt.handle().clone());
    /// assert!(config.runtime.is_some());
    /// ```
    #[must_use]
    pub fn with_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Why a stream with these limits may delete messages nobody settled,
    /// or `None` when it cannot.
    pub fn loss_risk(
        discard: Discard,
        max_bytes: i64,
        max_messages: i64,
        max_age: Duration,
    ) -> Option<String> {
        if !max_age.is_zero() {
            return Some(format!("max_age {max_age:?} expires unsettled messages"));
        }
        if discard == Discard::Old && (max_bytes > 0 || max_messages > 0) {
            return Some(format!(
                "discard old at max_bytes {max_bytes} / max_messages {max_messages} deletes the oldest messages"
            ));
        }
        None
    }

    /// Checks the settings: a configuration whose streams may drop
    /// unsettled messages is refused unless `allow_message_loss` is set.
    ///
    /// ```
    /// use bus_nats::{Discard, NatsConfig, NatsError};
    ///
    /// let mut c = NatsConfig::default();
    /// c.max_bytes = 300_000;
    /// assert!(c.validate().is_ok()); // discard new: refuses, drops nothing
    /// c.discard = Discard::Old;
    /// assert!(matches!(c.validate(), Err(NatsError::LossyStream { .. })));
    /// c.allow_message_loss = true;
    /// assert!(c.validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), crate::NatsError> {
        match Self::loss_risk(
            self.discard,
            self.max_bytes,
            self.max_messages,
            self.max_age,
        ) {
            Some(why) if !self.allow_message_loss => Err(crate::NatsError::LossyStream {
                stream: format!("{}_*", self.stream_prefix),
                why,
            }),
            _ => Ok(()),
        }
    }

    /// These settings with stream and subject names of `dir`'s own: a
    /// short stable hash of its canonical path (the directory is created if
    /// missing) is appended to both prefixes. Every process started on one
    /// data directory uses the same streams and durable groups, so a run
    /// after a crash resumes what the crashed run left unsettled; runs on
    /// other directories never see it.
    ///
    /// ```
    /// use bus_nats::NatsConfig;
    ///
    /// let dir = std::env::temp_dir().join("bus-nats-doc-scoped");
    /// let a = NatsConfig::default().scoped_to_dir(&dir).unwrap();
    /// let b = NatsConfig::default().scoped_to_dir(dir.join("..").join("bus-nats-doc-scoped")).unwrap();
    /// assert_eq!(a.stream_prefix, b.stream_prefix);
    /// assert!(a.stream_prefix.starts_with("BUS_"));
    /// assert!(a.subject_prefix.starts_with("bus-"));
    /// ```
    pub fn scoped_to_dir(mut self, dir: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let canonical = std::fs::canonicalize(dir)?;
        let tag = format!(
            "{:012x}",
            fnv1a(canonical.as_os_str().as_encoded_bytes()) >> 16
        );
        self.stream_prefix = format!("{}_{tag}", self.stream_prefix);
        self.subject_prefix = format!("{}-{tag}", self.subject_prefix);
        Ok(self)
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

    /// The topic of `subject`, if it is one of ours: a topic's subject or
    /// one of its replay subjects ([`replay_subject_for`](Self::replay_subject_for)).
    pub fn topic_of(&self, subject: &str) -> Option<Topic> {
        let rest = subject
            .strip_prefix(&self.subject_prefix)?
            .strip_prefix('.')?;
        let rest = rest
            .split_once(&format!(".{REPLAY_TOKEN}."))
            .map_or(rest, |(topic, _)| topic);
        Topic::new(rest).ok()
    }

    /// The subject on which messages for `group` alone travel (replayed
    /// dead letters): `<subject_prefix>.<topic>.$replay.<group token>`.
    /// The stream of `topic` captures it (`<subject_prefix>.<segment>.>`),
    /// and since `$` is not allowed in a topic, no topic's subject, nor
    /// any filter on one, is or matches a replay subject.
    ///
    /// ```
    /// use bus_nats::NatsConfig;
    ///
    /// let c = NatsConfig::default();
    /// let t = bus_core::Topic::new("orders.created").unwrap();
    /// let s = c.replay_subject_for(&t, "billing team");
    /// assert!(s.starts_with("bus.orders.created.$replay.billing_team_"), "{s}");
    /// assert_eq!(c.topic_of(&s), Some(t));
    /// ```
    pub fn replay_subject_for(&self, topic: &Topic, group: &str) -> String {
        format!(
            "{}.{}.{REPLAY_TOKEN}.{}_{:08x}",
            self.subject_prefix,
            topic.as_str(),
            clean(group),
            fnv1a(group.as_bytes()) as u32
        )
    }

    /// The durable consumer that reads `group`'s replay subject of `topic`.
    pub fn replay_consumer_for(&self, topic: &Topic, group: &str) -> String {
        format!("{}__replay", self.consumer_for(topic, group))
    }

    /// The durable consumer of `group` on `topic`: the group and topic with
    /// every character outside `[A-Za-z0-9_-]` replaced by `_`, plus a hash
    /// of both so distinct pairs never collide.
    pub fn consumer_for(&self, topic: &Topic, group: &str) -> String {
        let key: Vec<u8> = group
            .bytes()
            .chain([0])
            .chain(topic.as_str().bytes())
            .collect();
        let h = fnv1a(&key);
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

    /// How long a publish whose PubAck was lost keeps resending with the
    /// same `Nats-Msg-Id`: three quarters of the duplicate window, so every
    /// resend still de-duplicates against a first send the server stored.
    pub fn resend_deadline(&self) -> Duration {
        self.duplicate_window.mul_f64(0.75)
    }

    pub(crate) fn prefetch_batch(&self) -> usize {
        self.prefetch.clamp(1, self.max_ack_pending.max(1))
    }
}

/// The subject token that marks a replay subject: `$` is outside a topic's
/// alphabet, so no topic can produce it.
const REPLAY_TOKEN: &str = "$replay";

/// `s` with every character outside `[A-Za-z0-9_-]` replaced by `_`, at
/// most 64 characters: safe in consumer names and subject tokens.
fn clean(s: &str) -> String {
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
}

/// FNV-1a, 64 bits: stable across versions and platforms, which names on a
/// server must be (std's hasher promises neither).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
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
        let r = c.replay_subject_for(&t, "billing");
        assert_eq!(c.topic_of(&r), Some(t.clone()));
        assert_ne!(r, c.replay_subject_for(&t, "audit"));
        assert!(
            r.starts_with("bus.orders.created."),
            "the stream captures it: {r}"
        );
        assert!(
            Topic::new(r.strip_prefix("bus.").unwrap()).is_err(),
            "no topic is a replay subject"
        );
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
