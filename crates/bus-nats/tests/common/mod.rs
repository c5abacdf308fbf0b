//! Shared by the integration tests: find (or start) the nats-server on
//! 127.0.0.1:4222, and give each test its own streams.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use bus_nats::{NatsConfig, NatsTransport};
use std::time::Duration;

pub use bus_test::nats::*;

pub mod proxy;
pub mod server;

/// A configuration with stream and subject prefixes of its own.
pub fn config() -> NatsConfig {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let tag = &tag[..12];
    NatsConfig::new(URL)
        .with_stream_prefix(format!("T{tag}"))
        .with_subject_prefix(format!("t{tag}"))
}

/// A transport whose streams are deleted when it is dropped.
pub struct TestNats {
    pub nats: NatsTransport,
}

impl TestNats {
    pub fn new(config: NatsConfig) -> Self {
        Self {
            nats: NatsTransport::connect(config).expect("connect to nats-server"),
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let _ = self.nats.delete_streams();
    }
}

pub const T: Duration = Duration::from_secs(5);

/// What a shutdown left pending in the broker reaches the next run: a
/// bus over a fresh transport on `config` (its own runtime) acks exactly
/// `n` messages of `topic` in `group`.
pub fn next_run_acks(config: NatsConfig, topic: &str, group: &str, n: u64) {
    use bus_core::{Bus, Message};
    let next = Bus::builder()
        .transport(std::sync::Arc::new(
            NatsTransport::connect(config).expect("connect to nats-server"),
        ))
        .build();
    next.subscriber(group)
        .topic(topic)
        .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
        .unwrap();
    assert!(
        bus_test::wait_until(Duration::from_secs(20), || next.stats().acked == n),
        "{:?}",
        next.stats()
    );
    assert_eq!(next.shutdown(T).stats.acked, n);
}
