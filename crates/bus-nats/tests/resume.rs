//! Two runs on one data directory share their streams: what the first left
//! unsettled is handled by the second, and streams are deleted only once
//! nothing is owed.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{Bus, Envelope, Message, SubscribeOptions, Topic, Transport};
use bus_nats::{NatsConfig, NatsTransport};
use bus_test::wait_until;
use common::{T, URL, nats_available};
use std::sync::Arc;
use std::time::Duration;

fn run_on(dir: &std::path::Path) -> NatsTransport {
    let cfg = NatsConfig::new(URL)
        .with_stream_prefix("RESUME")
        .with_subject_prefix("resume")
        // What the first run fetched and never settled comes back to the
        // second after this, not after the default 30 s.
        .with_ack_wait(Duration::from_secs(2))
        .scoped_to_dir(dir)
        .unwrap();
    NatsTransport::connect(cfg).unwrap()
}

#[test]
fn a_second_run_on_the_same_data_dir_handles_what_the_first_left() {
    if !nats_available("resume") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tp = Topic::new("orders.created").unwrap();

    // The first run: 20 published, 5 handled, then it stops.
    let first = run_on(dir.path());
    let mut sub = first
        .subscribe(&tp, &SubscribeOptions::group("billing"))
        .unwrap();
    for i in 0..20 {
        first
            .publish(Envelope::new(tp.clone(), format!("{i}")), T)
            .unwrap();
    }
    for _ in 0..5 {
        sub.next(T).unwrap().expect("a delivery").ack();
    }
    drop(sub);
    // The server's count errs high, never low: the prefetched messages the
    // closed subscription handed back can be counted as both pending and
    // unsettled for a while. What matters is that the stream is kept and
    // owes at least the 15 never acked.
    let mut kept = first.delete_streams_if_settled().unwrap();
    wait_until(Duration::from_secs(5), || {
        kept = first.delete_streams_if_settled().unwrap();
        kept.len() == 1 && kept[0].1 == 15
    });
    assert!(
        kept.len() == 1 && kept[0].1 >= 15,
        "owed {kept:?}, consumers {:?}",
        first.consumer_status()
    );
    let stream = kept[0].0.clone();
    assert_eq!(
        first.stats().resumed,
        0,
        "the first run left, it resumed nothing"
    );
    drop(first);

    // Another directory has streams of its own.
    let other = tempfile::tempdir().unwrap();
    let elsewhere = run_on(other.path());
    assert_ne!(elsewhere.config().stream_for(&tp), stream);

    // The second run, on the same directory, resumes the same group.
    let second = Arc::new(run_on(dir.path()));
    assert_eq!(second.config().stream_for(&tp), stream);
    let bus = Bus::builder()
        .transport(Arc::clone(&second) as Arc<dyn Transport>)
        .build();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    bus.subscriber("billing")
        .topic("orders.created")
        .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&m.payload).into_owned());
            Ok(())
        })
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || seen
        .lock()
        .unwrap()
        .len()
        >= 15));
    let mut got: Vec<u32> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (5..20).collect::<Vec<_>>());
    // What this run publishes itself is its own, not resumed: the ledger's
    // published plus the transport's resumed is what was settled.
    for i in 20..23 {
        bus.publish("orders.created", format!("{i}")).unwrap();
    }
    assert!(wait_until(T, || bus.stats().acked == 18));
    assert_eq!(second.stats().resumed, 15);
    let st = bus.stats();
    assert_eq!(st.published + second.stats().resumed, st.settled());
    assert!(wait_until(T, || second
        .consumer_status()
        .iter()
        .all(|c| c.fresh
            && c.num_pending == 0
            && c.num_ack_pending == 0)));
    bus.shutdown(T);
    assert!(second.delete_streams_if_settled().unwrap().is_empty());
    let js = second.jetstream().clone();
    let gone = second
        .block_on(T, async move { js.get_stream(stream).await.is_err() })
        .unwrap();
    assert!(gone, "a settled stream was kept");
}
