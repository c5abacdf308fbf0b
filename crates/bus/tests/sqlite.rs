//! The facade on the SQLite transport: one line in the builder or a
//! `[sqlite]` section in the configuration file, and what a bus leaves
//! pending at shutdown is there for the next one on the same data dir.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus::{Bus, Config, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn a_sqlite_section_picks_the_durable_transport_with_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml_str(&format!(
        "data_dir = {:?}\n[sqlite]\ndurability = \"normal\"\nlease = \"45s\"\n",
        dir.path()
    ))
    .unwrap();
    let sqlite = cfg.sqlite.clone().unwrap();
    assert_eq!(sqlite.lease, Duration::from_secs(45));
    assert_eq!(sqlite.durability, bus::sqlite::Durability::Normal);
    let bus = Bus::from_config(cfg).unwrap();
    assert!(dir.path().join("queue.sqlite").exists());
    bus.shutdown(T);
    assert!(Config::from_toml_str("[sqlite]\nbogus = 1\n").is_err());
}

#[test]
fn what_one_bus_left_pending_the_next_one_handles() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The group exists in the file, with nobody in this process
        // handling it.
        let t =
            bus::sqlite::SqliteTransport::open(bus::sqlite::SqliteConfig::new(dir.path())).unwrap();
        let topic = bus::Topic::new("orders").unwrap();
        let opts = bus::transport::SubscribeOptions::group("billing");
        drop(bus::transport::Transport::subscribe(&t, &topic, &opts).unwrap());
        drop(t);
        let bus = Bus::builder()
            .data_dir(dir.path())
            .sqlite()
            .build()
            .unwrap();
        for i in 0..5 {
            bus.publish("orders", format!("o{i}")).unwrap();
        }
        let report = bus.shutdown(Duration::from_millis(200));
        assert_eq!(report.stats.published, 5);
        assert_eq!(report.stats.pending, 5, "{:?}", report.stats);
        assert!(report.stats.invariant_holds());
    }
    let bus = Bus::builder()
        .data_dir(dir.path())
        .sqlite()
        .build()
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    bus.subscriber("billing")
        .topic("orders")
        .start(move |_: &Message<'_>| -> Result<(), std::io::Error> {
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
    assert!(bus_test::wait_until(T, || handled.load(Ordering::SeqCst) == 5));
    bus.shutdown(T);
}

/// A process killed after its dead-letter store took a letter and before
/// the transport recorded the delivery settled leaves the delivery to the
/// next run, which fails it again. Two deliveries of one message id in one
/// group look the same to the bus: one letter is kept.
#[test]
fn a_delivery_dead_lettered_again_is_stored_once() {
    use bus::dlq::{DlqQuery, Filter};
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::builder()
        .data_dir(dir.path())
        .sqlite()
        .enable_error_handling(false)
        .build()
        .unwrap();
    bus.subscriber("billing")
        .topic("orders")
        .start(|_: &Message<'_>| -> Result<(), std::io::Error> {
            Err(std::io::Error::other("poison"))
        })
        .unwrap();
    let env = bus::Envelope::new(bus::Topic::new("orders").unwrap(), &b"bad"[..]);
    bus.publish_envelope(env.clone()).unwrap();
    bus.publish_envelope(env).unwrap();
    assert!(bus_test::wait_until(T, || bus.stats().dead_lettered == 2));
    let dlq = bus.dlq().unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 1, "one letter");
    bus.shutdown(T);
}
