//! What `busctl queue` reads: each group's pending messages, the age of the
//! oldest, and a ledger that adds up across processes; and dropping a
//! group nobody subscribes to.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::{OverflowPolicy, Priority, SubscribeOptions, Transport};
use bus_sqlite::SqliteError;
use std::time::Duration;
use support::*;

#[test]
fn the_ledger_counts_every_end_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let t = open(dir.path());
        let opts = SubscribeOptions::group("g")
            .with_capacity(3)
            .with_overflow(OverflowPolicy::DiscardLowest);
        let mut s = sub(&t, &opts);
        for i in 0..3 {
            t.publish(env_at(&format!("low{i}"), Priority::Low), T)
                .unwrap();
        }
        t.publish(env_at("high", Priority::High), T).unwrap(); // evicts low0
        assert_eq!(take(&mut s), "high"); // acked
        s.next(T).unwrap().unwrap().term(); // low1
        let d = s.next(T).unwrap().unwrap(); // low2, nak'd for later
        d.nak(Duration::from_secs(3600));
        assert!(s.next(Duration::from_millis(50)).unwrap().is_none());
    }
    let g = &bus_sqlite::inspect(dir.path()).unwrap()[0];
    assert_eq!(
        (
            g.published,
            g.acked,
            g.terminated,
            g.evicted,
            g.delayed,
            g.pending()
        ),
        (4, 1, 1, 1, 1, 1),
        "{g:?}"
    );
    assert!(g.balances());
    assert!(!g.subscribed, "its only process closed");
    assert!(g.oldest_pending_age.is_some());
    // A second process adds to the same ledger.
    let t = open(dir.path());
    let _s = sub(&t, &SubscribeOptions::group("g"));
    publish(&t, "more");
    let g = &bus_sqlite::inspect(dir.path()).unwrap()[0];
    assert_eq!((g.published, g.ready, g.delayed), (5, 1, 1));
    assert!(g.balances() && g.subscribed);
}

#[test]
fn a_group_is_dropped_only_once_nobody_subscribes() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let s = sub(&t, &SubscribeOptions::group("old"));
    let _keep = sub(&t, &SubscribeOptions::group("kept"));
    publish(&t, "m");
    assert!(matches!(
        bus_sqlite::drop_group(dir.path(), "orders", "old"),
        Err(SqliteError::GroupInUse { .. })
    ));
    drop(s);
    t.close();
    assert_eq!(
        bus_sqlite::drop_group(dir.path(), "orders", "old").unwrap(),
        1
    );
    assert!(matches!(
        bus_sqlite::drop_group(dir.path(), "orders", "old"),
        Err(SqliteError::NoSuchGroup { .. })
    ));
    let groups = bus_sqlite::inspect(dir.path()).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].group.as_str(), groups[0].pending()), ("kept", 1));
    // The next open publishes to the group that is left only.
    let t = open(dir.path());
    assert_eq!(t.publish(env("n"), T).unwrap().copies, 1);
}

#[test]
fn inspecting_a_missing_queue_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(bus_sqlite::inspect(dir.path()).is_err());
    assert!(!dir.path().join("queue.sqlite").exists());
}
