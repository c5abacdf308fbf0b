//! Leases and scheduled redeliveries: who may take a delivery, when it
//! comes back, and what survives a restart. Time is a manual wall clock.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::bus_errors::{ErrorCategory, Severity};
use bus_core::{AttemptRecord, SubscribeOptions, Transport};
use bus_sqlite::ManualWallClock;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::*;

const START: i64 = 1_800_000_000_000;
const SHORT: Duration = Duration::from_millis(50);

#[test]
fn an_expired_lease_goes_to_another_member_and_its_late_ack_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualWallClock::at(START));
    let t = open_at(dir.path(), &clock);
    let mut a = sub(&t, &SubscribeOptions::group("g"));
    let mut b = sub(&t, &SubscribeOptions::group("g"));
    publish(&t, "m");
    let first = a.next(T).unwrap().unwrap();
    assert!(b.next(SHORT).unwrap().is_none(), "leased to a");
    clock.advance(Duration::from_millis(1500)); // past the 1 s lease
    let second = b.next(T).unwrap().expect("the lease expired");
    assert_eq!(text(second.envelope()), "m");
    first.ack(); // stale: settles nothing
    second.nak(Duration::ZERO);
    assert_eq!(take(&mut a), "m", "the late ack did not remove it");
    assert!(t.expired_leases() >= 1);
}

#[test]
fn in_progress_pushes_the_deadline_out() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualWallClock::at(START));
    let t = open_at(dir.path(), &clock);
    let mut a = sub(&t, &SubscribeOptions::group("g"));
    let mut b = sub(&t, &SubscribeOptions::group("g"));
    publish(&t, "m");
    let d = a.next(T).unwrap().unwrap();
    clock.advance(Duration::from_millis(800));
    d.in_progress(); // deadline now +1 s from here
    // Answered after the extension (one queue to the writer, in order).
    assert!(b.next(SHORT).unwrap().is_none(), "leased");
    clock.advance(Duration::from_millis(800));
    assert!(b.next(SHORT).unwrap().is_none(), "still leased");
    d.ack();
    assert!(b.next(SHORT).unwrap().is_none(), "the ack is in");
    clock.advance(Duration::from_secs(5));
    assert!(b.next(SHORT).unwrap().is_none(), "acked");
}

#[test]
fn a_live_owner_keeps_its_leases_until_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let mut s1 = sub(&first, &SubscribeOptions::group("g"));
    publish(&first, "m");
    let d = s1.next(T).unwrap().unwrap();
    let second = open(dir.path());
    assert_eq!(second.recovered_at_open(), 0, "the first owner is alive");
    let mut s2 = sub(&second, &SubscribeOptions::group("g"));
    assert!(s2.next(SHORT).unwrap().is_none());
    drop(d); // a nak into a transport about to close
    drop(s1);
    first.close();
    assert_eq!(take(&mut s2), "m", "closing returned the lease");
}

#[test]
fn a_dead_owners_leases_return_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let t = open(dir.path());
        let _s = sub(&t, &SubscribeOptions::group("g"));
        publish(&t, "m1");
        publish(&t, "m2");
    }
    // As a killed process leaves it: rows leased to an owner whose lock
    // file nobody holds.
    let conn = rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
    conn.execute_batch(
        "UPDATE messages SET owner = 42, lease_until = 9000000000000, leases = 1;
         UPDATE groups SET depth = 0;",
    )
    .unwrap();
    drop(conn);
    std::fs::write(dir.path().join("queue.owners/42.lock"), b"").unwrap();
    let t = open(dir.path());
    assert_eq!(t.recovered_at_open(), 2);
    assert_eq!(t.resumed(), 0, "nothing handed out yet");
    assert_eq!(t.queue_depths()[0].depth, 2);
    let mut s = sub(&t, &SubscribeOptions::group("g"));
    assert_eq!(take(&mut s), "m1");
    let again = s.next(T).unwrap().unwrap();
    again.nak(std::time::Duration::ZERO);
    assert_eq!(take(&mut s), "m2");
    assert_eq!(t.resumed(), 2, "an earlier process's work, each once");
    publish(&t, "m3");
    assert_eq!(take(&mut s), "m3");
    assert_eq!(t.resumed(), 2, "this process's own is not resumed");
    assert!(!dir.path().join("queue.owners/42.lock").exists());
}

#[test]
fn a_retry_scheduled_before_a_restart_fires_after_it_at_its_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualWallClock::at(START));
    let failure = AttemptRecord {
        attempt: 1,
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        component: "billing".into(),
        category: ErrorCategory::Connection,
        severity: Severity::High,
        error_type: "io::Error".into(),
        message: "db down".into(),
        decision: "retry in 1h".into(),
    };
    {
        let t = open_at(dir.path(), &clock);
        let mut s = sub(&t, &SubscribeOptions::group("g"));
        publish(&t, "m");
        let mut d = s.next(T).unwrap().unwrap();
        d.envelope_mut().attempt = 2;
        d.envelope_mut().history.push(failure.clone());
        d.nak(Duration::from_secs(3600));
        assert!(s.next(SHORT).unwrap().is_none(), "not due yet");
        t.close();
    }
    clock.advance(Duration::from_secs(1800));
    let t = open_at(dir.path(), &clock);
    let mut s = sub(&t, &SubscribeOptions::group("g"));
    assert!(s.next(SHORT).unwrap().is_none(), "half way: not due");
    assert_eq!(t.queue_depths()[0].depth, 1, "it waits in the file");
    clock.advance(Duration::from_secs(1800));
    let d = s.next(T).unwrap().expect("due now");
    assert_eq!(text(d.envelope()), "m");
    assert_eq!(d.envelope().attempt, 2, "the attempt count survived");
    assert_eq!(d.envelope().history, vec![failure], "and the history");
    d.ack();
}
