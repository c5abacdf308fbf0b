//! Queues in the file behave as the memory transport's: priority lanes,
//! bounds with their overflow policies, depths, groups that outlive their
//! members and the process.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::{OverflowPolicy, Priority, PublishError, SubscribeOptions, Transport};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn the_highest_priority_is_delivered_first_then_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let mut s = sub(&t, &SubscribeOptions::group("g"));
    for (name, p) in [
        ("low", Priority::Low),
        ("normal1", Priority::Normal),
        ("critical", Priority::Critical),
        ("normal2", Priority::Normal),
        ("high", Priority::High),
    ] {
        t.publish(env_at(name, p), T).unwrap();
    }
    let got: Vec<String> = (0..5).map(|_| take(&mut s)).collect();
    assert_eq!(got, ["critical", "high", "normal1", "normal2", "low"]);
}

#[test]
fn reject_refuses_a_full_queue_and_hands_the_message_back() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let opts = SubscribeOptions::group("g")
        .with_capacity(2)
        .with_overflow(OverflowPolicy::Reject);
    let mut s = sub(&t, &opts);
    publish(&t, "a");
    publish(&t, "b");
    match t.publish(env("c"), T) {
        Err(PublishError::QueueFull { envelope, group }) => {
            assert_eq!(text(&envelope), "c");
            assert_eq!(group, "g");
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(t.queue_depths()[0].depth, 2);
    assert_eq!(take(&mut s), "a");
    publish(&t, "c"); // room again once a delivery is leased
}

#[test]
fn block_waits_for_room_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let opts = SubscribeOptions::group("g")
        .with_capacity(1)
        .with_overflow(OverflowPolicy::Block {
            timeout: Duration::from_millis(100),
        });
    let s = sub(&t, &opts);
    publish(&t, "a");
    let started = Instant::now();
    assert!(matches!(
        t.publish(env("b"), T),
        Err(PublishError::QueueFull { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(100), "it waited");
    // A longer wait this time: leasing "a" makes room, and the blocked
    // publish goes through, whether it began waiting before or after.
    let opts = SubscribeOptions::group("h")
        .with_capacity(1)
        .with_overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(10),
        });
    drop(s);
    let other = bus_core::Topic::new("other").unwrap();
    let mut s = t.subscribe(&other, &opts).unwrap();
    let on = |name: &str| bus_core::Envelope::new(other.clone(), name.as_bytes().to_vec());
    t.publish(on("a"), T).unwrap();
    std::thread::scope(|scope| {
        let blocked = scope.spawn(|| t.publish(on("b"), T));
        assert_eq!(take(&mut s), "a");
        blocked.join().unwrap().unwrap();
    });
    assert_eq!(take(&mut s), "b");
}

#[test]
fn dead_letter_policy_accepts_and_hands_the_copy_back() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let opts = SubscribeOptions::group("g")
        .with_capacity(1)
        .with_overflow(OverflowPolicy::DeadLetter);
    let _s = sub(&t, &opts);
    publish(&t, "a");
    let receipt = t.publish(env("b"), T).unwrap();
    let left = receipt.leftovers.expect("the copy comes back");
    assert_eq!(left.full.len(), 1);
    assert_eq!(&*left.full[0].0, "g");
    assert_eq!(text(&left.full[0].1), "b");
    assert_eq!(t.queue_depths()[0].depth, 1);
}

#[test]
fn discard_lowest_evicts_the_oldest_of_the_lowest_lane() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let opts = SubscribeOptions::group("g")
        .with_capacity(2)
        .with_overflow(OverflowPolicy::DiscardLowest);
    let mut s = sub(&t, &opts);
    t.publish(env_at("low1", Priority::Low), T).unwrap();
    t.publish(env_at("low2", Priority::Low), T).unwrap();
    let receipt = t.publish(env_at("high", Priority::High), T).unwrap();
    let left = receipt.leftovers.expect("an eviction");
    assert_eq!(text(&left.evicted[0].1), "low1");
    // Nothing lower than Low: the incoming Low message is the one refused.
    let receipt = t.publish(env_at("low3", Priority::Low), T).unwrap();
    assert_eq!(text(&receipt.leftovers.unwrap().full[0].1), "low3");
    assert_eq!(take(&mut s), "high");
    assert_eq!(take(&mut s), "low2");
}

#[test]
fn requeue_goes_past_the_bound_up_to_twice_the_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let opts = SubscribeOptions::group("g")
        .with_capacity(1)
        .with_overflow(OverflowPolicy::Reject);
    let _s = sub(&t, &opts);
    publish(&t, "a");
    t.requeue("g", env("b")).unwrap();
    let back = t.requeue("g", env("c")).unwrap_err();
    assert_eq!(text(&back), "c");
    assert!(t.requeue("nobody", env("d")).is_err());
}

#[test]
fn groups_each_get_every_message_and_outlive_the_process() {
    let dir = tempfile::tempdir().unwrap();
    {
        let t = open(dir.path());
        drop(sub(&t, &SubscribeOptions::group("a")));
        drop(sub(&t, &SubscribeOptions::group("b")));
        for i in 0..3 {
            publish(&t, &format!("m{i}"));
        }
        let depths = t.queue_depths();
        assert_eq!(depths.len(), 2);
        assert!(depths.iter().all(|d| d.depth == 3), "{depths:?}");
    }
    let t = open(dir.path());
    let mut a = sub(&t, &SubscribeOptions::group("a"));
    let mut b = sub(&t, &SubscribeOptions::group("b"));
    for i in 0..3 {
        assert_eq!(take(&mut a), format!("m{i}"));
        assert_eq!(take(&mut b), format!("m{i}"));
    }
    // Acked rows leave the file.
    let t2 = t;
    drop((a, b));
    drop(t2);
    let conn = rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn a_publish_with_no_group_is_refused_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    assert!(matches!(
        t.publish(env("x"), T),
        Err(PublishError::NoSubscribers { .. })
    ));
    let _s = sub(&t, &SubscribeOptions::group("g"));
    assert!(matches!(
        t.publish_to_group("other", env("y"), T),
        Err(PublishError::NoSuchGroup { .. })
    ));
}

#[test]
fn a_closed_transport_refuses_and_its_subscriptions_end() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let mut s = sub(&t, &SubscribeOptions::group("g"));
    assert!(t.close().is_empty(), "durable: nothing is handed back");
    assert!(matches!(
        t.publish(env("x"), T),
        Err(PublishError::Closed { .. })
    ));
    assert!(s.next(Duration::from_millis(10)).is_err());
}

#[test]
fn a_waker_ends_an_unbounded_wait() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let mut s = sub(&t, &SubscribeOptions::group("g"));
    let wake = s.waker().unwrap();
    let waker = std::thread::spawn(move || wake.wake());
    assert!(s.next(Duration::MAX).unwrap().is_none());
    waker.join().unwrap();
}

#[test]
fn a_bound_sees_what_another_process_took() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SubscribeOptions::group("g")
        .with_capacity(2)
        .with_overflow(OverflowPolicy::Reject);
    let publisher = open(dir.path());
    let _s = sub(&publisher, &opts);
    publish(&publisher, "a");
    publish(&publisher, "b");
    assert!(publisher.publish(env("c"), T).is_err(), "full");
    // Another open of the file (another process) takes one.
    let consumer = open(dir.path());
    let mut other = sub(&consumer, &opts);
    assert_eq!(take(&mut other), "a");
    publish(&publisher, "c");
}

#[test]
fn in_flight_counts_what_this_process_leased_until_it_is_settled() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let mut s = sub(&t, &SubscribeOptions::group("g"));
    for name in ["a", "b", "c"] {
        publish(&t, name);
    }
    let in_flight = |t: &bus_sqlite::SqliteTransport| t.queue_depths()[0].in_flight;
    assert_eq!(in_flight(&t), 0, "nothing leased yet");
    let first = s.next(T).unwrap().expect("a delivery");
    // The first lease takes all three ahead of the handler: none waits in
    // the file, all are out with this consumer.
    assert_eq!((t.queue_depths()[0].depth, in_flight(&t)), (0, 3));
    first.ack();
    assert_eq!(in_flight(&t), 2);
    let second = s.next(T).unwrap().expect("a delivery");
    second.nak(Duration::ZERO);
    assert_eq!(in_flight(&t), 1, "a nak hands it back to the file");
    let third = s.next(T).unwrap().expect("a delivery");
    third.term();
    assert_eq!(in_flight(&t), 0);
    drop(s);
    assert_eq!(in_flight(&t), 0, "nothing counted twice at close");
}
