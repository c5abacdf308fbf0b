//! The server restarted mid-stream: the bus recovers on its own and the
//! invariant holds at the end. It stops the shared nats-server, so it runs
//! only with BUS_NATS_RESTART_TESTS=1 (and is this binary's only test).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{Bus, BusConfig, Envelope, PublishError, Topic};
use bus_nats::ConnectionState;
use bus_test::wait_until;
use common::{T, TestNats, config, nats_available, start_server, stop_server, wait_reachable};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn server_restart_mid_stream_recovers_with_nothing_lost() {
    if std::env::var("BUS_NATS_RESTART_TESTS").map_or(true, |v| v != "1") {
        eprintln!(
            "SKIPPED: server restart test (set BUS_NATS_RESTART_TESTS=1; it restarts nats-server)"
        );
        return;
    }
    if !nats_available("restart") {
        return;
    }
    let t = TestNats::new(config());
    let mut cfg = BusConfig::default();
    cfg.publish_timeout = Duration::from_secs(2);
    let bus = Bus::builder()
        .transport(Arc::new(t.nats.clone()))
        .config(cfg)
        .build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    bus.subscriber("survivor")
        .topic("restart.flow")
        .start(
            move |m: &bus_core::Message<'_>| -> Result<(), std::io::Error> {
                s2.lock().unwrap().push(m.id);
                Ok(())
            },
        )
        .unwrap();
    let topic = Topic::new("restart.flow").unwrap();
    let mut published = HashSet::new();
    let mut rejected = 0;
    for i in 0..200 {
        if i == 100 {
            stop_server().unwrap();
            assert!(wait_until(T, || t.nats.connection_state()
                == ConnectionState::Reconnecting));
            // During the outage a publish waits its timeout, then hands the message back.
            let env = Envelope::new(topic.clone(), "outage");
            let err = bus.publish_envelope(env).unwrap_err();
            assert!(matches!(err, PublishError::Transport { .. }));
            rejected += 1;
            start_server().unwrap();
            assert!(wait_reachable(Duration::from_secs(15)));
        }
        // The publisher keeps a refused message and retries it (same id: dedup).
        let mut env = Envelope::new(topic.clone(), i.to_string());
        loop {
            match bus.publish_envelope(env) {
                Ok(id) => {
                    published.insert(id);
                    break;
                }
                Err(e) => {
                    rejected += 1;
                    env = e.into_envelope().unwrap();
                }
            }
        }
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s: HashSet<_> = seen.lock().unwrap().iter().copied().collect();
            published.is_subset(&s)
        }),
        "messages lost across a server restart"
    );
    assert_eq!(t.nats.connection_state(), ConnectionState::Connected);
    let report = bus.shutdown(T);
    let total = seen.lock().unwrap().len();
    let unique: HashSet<_> = seen.lock().unwrap().iter().copied().collect();
    eprintln!(
        "restart: {} published, {rejected} rejections, {total} handled, {} duplicates, {:?}",
        published.len(),
        total - unique.len(),
        t.nats.stats()
    );
    assert_eq!(report.stats.rejected_at_publish, rejected);
    // At-least-once: duplicates are redeliveries of acked messages, counted.
    assert_eq!(
        report.stats.published,
        report.stats.acked
            + report.stats.rejected_at_publish
            + report.stats.dead_lettered
            + report.stats.discarded_by_policy
            - (total - unique.len()) as u64
    );
}
