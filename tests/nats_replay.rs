//! A replay requested in the dead-letter queue reaches, over NATS, the group
//! whose handler failed the message and no other, and the letter ends
//! `replayed` (against a real nats-server; skipped loudly when there is none).
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus::dlq::{DlqQuery, Filter, LetterState};
use bus::{Config, Message};
use bus_nats::{NatsConfig, NatsTransport};
use bus_test::nats::{URL, nats_available};
use bus_test::{assert_invariant, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_replay_over_nats_reaches_the_failed_group_and_ends_replayed() {
    if !nats_available("bus::nats_replay") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsTransport::connect(
        NatsConfig::new(URL)
            .with_stream_prefix("FACADE_REPLAY")
            .with_subject_prefix("facade-replay")
            .scoped_to_dir(dir.path())
            .unwrap(),
    )
    .unwrap();
    let mut cfg = Config::from_toml_str("replay_poll_interval = \"5ms\"").unwrap();
    cfg.data_dir = dir.path().to_owned();
    let bus = bus::BusBuilder::from_config(cfg)
        .transport(Arc::new(nats.clone()))
        .recovery(Arc::new(bus::plug::NoRetry))
        .build()
        .unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let (mailed, archived) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (f, m) = (Arc::clone(&fixed), Arc::clone(&mailed));
    bus.subscriber("mailer")
        .topic("mail")
        .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
            if !f.load(SeqCst) {
                return Err(std::io::Error::other("template missing"));
            }
            m.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
    let a = Arc::clone(&archived);
    bus.subscriber("archive")
        .topic("mail")
        .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
            a.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
    bus.publish("mail", &b"hello"[..]).unwrap();
    let dlq = bus.dlq().unwrap().clone();
    assert!(wait_until(WAIT, || dlq.count(&Filter::all()).unwrap() == 1));

    fixed.store(true, SeqCst);
    assert_eq!(dlq.request_replay(&Filter::all(), None).unwrap(), 1);
    assert!(wait_until(WAIT, || mailed.load(SeqCst) == 1));
    assert!(wait_until(WAIT, || {
        dlq.count(&Filter::all().state(LetterState::Replayed))
            .unwrap()
            == 1
    }));
    assert_eq!(
        dlq.count(&Filter::all().state(LetterState::ReplayFailed))
            .unwrap(),
        0
    );
    let report = bus.shutdown(WAIT);
    assert_invariant(&report.stats);
    assert_eq!(report.stats.published, 3, "one copy a group + the replay");
    assert_eq!(report.stats.acked, 2);
    assert_eq!(archived.load(SeqCst), 1, "archive got the message once");
    assert!(nats.delete_streams_if_settled().unwrap().is_empty());
}
