//! Shared set-up of the bus-sqlite tests.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use bus_core::{Envelope, Priority, SubscribeOptions, Subscription, Topic, Transport};
use bus_sqlite::{ManualWallClock, SqliteConfig, SqliteTransport};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(10);

pub fn topic() -> Topic {
    Topic::new("orders").unwrap()
}

pub fn open(dir: &Path) -> SqliteTransport {
    SqliteTransport::open(SqliteConfig::new(dir)).unwrap()
}

/// A transport whose wall clock moves by hand, with 1 s leases.
pub fn open_at(dir: &Path, clock: &Arc<ManualWallClock>) -> SqliteTransport {
    let config = SqliteConfig::new(dir).with_lease(Duration::from_secs(1));
    SqliteTransport::open_with_clock(config, clock.clone()).unwrap()
}

pub fn sub(t: &SqliteTransport, opts: &SubscribeOptions) -> Box<dyn Subscription> {
    t.subscribe(&topic(), opts).unwrap()
}

pub fn env(text: &str) -> Envelope {
    Envelope::new(topic(), text.as_bytes().to_vec())
}

pub fn env_at(text: &str, p: Priority) -> Envelope {
    env(text).with_priority(p)
}

pub fn text(e: &Envelope) -> String {
    String::from_utf8_lossy(&e.payload).into_owned()
}

/// The next delivery's text, acked.
pub fn take(s: &mut Box<dyn Subscription>) -> String {
    let d = s.next(T).unwrap().expect("a delivery");
    let t = text(d.envelope());
    d.ack();
    t
}

pub fn publish(t: &SqliteTransport, text: &str) {
    t.publish(env(text), T).unwrap();
}
