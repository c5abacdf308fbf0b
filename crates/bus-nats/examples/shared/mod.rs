//! What the publisher and consumer examples share: the connection settings,
//! the topic and the bus wiring (same policies on both sides).
#![allow(dead_code)]

use bus_core::{Bus, SimpleRetry};
use bus_nats::{NatsConfig, NatsDlq, NatsTransport};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const TOPIC: &str = "demo.orders";

pub(crate) fn bus() -> Result<(Bus, NatsTransport), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let nats = NatsTransport::connect(
        NatsConfig::new(url)
            .with_stream_prefix("DEMO")
            .with_subject_prefix("demo"),
    )?;
    let dlq = Arc::new(NatsDlq::new(&nats, "DEMO_DLQ", "demo-dlq")?);
    nats.set_dead_letters(dlq.clone());
    let bus = Bus::builder()
        .transport(Arc::new(nats.clone()))
        .dead_letters(dlq)
        .recovery(Arc::new(SimpleRetry {
            max_retries: 2,
            delay: Duration::from_millis(500),
        }))
        .build();
    Ok((bus, nats))
}
