//! A fresh stream and durable consumer per run, made by the transport so
//! the raw program and the bus share the bus's configuration; deleted when
//! the run ends.

use crate::BoxError;
use bus_core::{SubscribeOptions, Topic, Transport};
use bus_nats::{NatsConfig, NatsTransport};
use std::time::{Duration, Instant};

/// What the bench's stream names start with.
pub(crate) const STREAM_PREFIX: &str = "NATSBENCH_";

/// The topic every run publishes to (each run on its own stream).
pub(crate) const TOPIC: &str = "bench.nats";

/// The consumer group that handles it.
pub(crate) const GROUP: &str = "bench";

/// The bus's defaults, with the server's address and, if asked, the prefetch.
pub(crate) fn base_config(url: &str, prefetch: Option<usize>) -> NatsConfig {
    let mut c = NatsConfig::new(url);
    c.connect_timeout = Duration::from_secs(2);
    match prefetch {
        Some(p) => c.with_prefetch(p),
        None => c,
    }
}

/// The batch the bus's pulls ask for: its prefetch, within `max_ack_pending`.
pub(crate) fn batch(c: &NatsConfig) -> usize {
    c.prefetch.clamp(1, c.max_ack_pending.max(1))
}

/// Whether a JetStream server answers at the configured address.
pub(crate) fn reachable(c: &NatsConfig) -> Result<(), String> {
    let t = NatsTransport::connect(c.clone()).map_err(|e| e.to_string())?;
    let js = t.jetstream().clone();
    // Any JetStream answer will do, "no such stream" included.
    let asked = t.block_on(c.request_timeout, async move {
        use bus_nats::async_nats::jetstream::context::GetStreamErrorKind as K;
        match js.get_stream("NATSBENCH_PROBE").await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), K::JetStream(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    });
    match asked {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("no JetStream: {e}")),
        None => Err("no answer to a JetStream request".into()),
    }
}

/// One run's stream, group and transport.
pub(crate) struct Scratch {
    pub(crate) nats: NatsTransport,
    pub(crate) topic: Topic,
}

impl Scratch {
    /// Connects with names of the run's own and creates the topic's stream
    /// and the group's durable consumer, as a subscription does.
    pub(crate) fn new(base: &NatsConfig) -> Result<Self, BoxError> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let tag = &tag[..12];
        let config = base
            .clone()
            .with_stream_prefix(format!("{STREAM_PREFIX}{tag}"))
            .with_subject_prefix(format!("natsbench-{tag}"));
        let nats = NatsTransport::connect(config)?;
        let topic = Topic::new(TOPIC)?;
        let s = Self { nats, topic };
        drop(
            s.nats
                .subscribe(&s.topic, &SubscribeOptions::group(GROUP))?,
        );
        Ok(s)
    }

    /// Waits until the server counts nothing pending or unacknowledged for
    /// the group: every message of the run stored, delivered and acked.
    pub(crate) fn drained(&self, patience: Duration) -> Result<(), BoxError> {
        let until = Instant::now() + patience;
        loop {
            let owed = self.nats.owed(&self.topic, GROUP)?;
            if owed == 0 {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!("{owed} messages still owed after {patience:?}").into());
            }
            // Paces the questions to the server; the acks in flight land
            // within a round trip or two.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.nats.delete_streams() {
            eprintln!("could not delete the run's streams: {e}");
        }
    }
}
