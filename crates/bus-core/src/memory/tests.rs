use super::*;
use crate::time::ManualClock;
use crate::{OverflowPolicy, Priority};

const T: Duration = Duration::from_millis(200);
const SHORT: Duration = Duration::from_millis(20);

fn topic() -> Topic {
    Topic::new("t").unwrap()
}

fn env(p: Priority, tag: &str) -> Envelope {
    Envelope::new(topic(), tag.as_bytes().to_vec()).with_priority(p)
}

fn tag(d: &Delivery) -> String {
    String::from_utf8(d.envelope().payload.to_vec()).unwrap()
}

/// Takes the next delivery and acks it, returning its tag.
fn take(s: &mut Box<dyn Subscription>) -> String {
    let d = s.next(T).unwrap().expect("a delivery");
    let t = tag(&d);
    d.ack();
    t
}

fn opts(group: &str, cap: usize, overflow: OverflowPolicy) -> SubscribeOptions {
    SubscribeOptions::group(group)
        .with_capacity(cap)
        .with_overflow(overflow)
}

#[test]
fn highest_priority_is_delivered_first_and_fifo_within_a_lane() {
    let t = MemoryTransport::new();
    let mut s = t
        .subscribe(&topic(), &SubscribeOptions::group("g"))
        .unwrap();
    for (p, name) in [
        (Priority::Low, "l"),
        (Priority::Normal, "n1"),
        (Priority::Critical, "c"),
        (Priority::Normal, "n2"),
        (Priority::High, "h"),
    ] {
        t.publish(env(p, name), T).unwrap();
    }
    let order: Vec<String> = (0..5)
        .map(|_| {
            let d = s.next(T).unwrap().unwrap();
            let n = tag(&d);
            d.ack();
            n
        })
        .collect();
    assert_eq!(order, ["c", "h", "n1", "n2", "l"]);
    assert!(s.next(SHORT).unwrap().is_none());
}

#[test]
fn every_group_gets_every_message_and_members_of_a_group_share() {
    let t = MemoryTransport::new();
    let mut a1 = t
        .subscribe(&topic(), &SubscribeOptions::group("a"))
        .unwrap();
    let mut a2 = t
        .subscribe(&topic(), &SubscribeOptions::group("a"))
        .unwrap();
    let mut b = t
        .subscribe(&topic(), &SubscribeOptions::group("b"))
        .unwrap();
    for i in 0..10 {
        let r = t.publish(env(Priority::Normal, &i.to_string()), T).unwrap();
        assert_eq!(r.copies, 2);
    }
    let mut got_a = Vec::new();
    for _ in 0..5 {
        got_a.push(take(&mut a1));
        got_a.push(take(&mut a2));
    }
    got_a.sort();
    let mut want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(got_a, want);
    let got_b: Vec<String> = (0..10).map(|_| take(&mut b)).collect();
    assert_eq!(got_b, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[test]
fn publish_without_subscribers_hands_the_message_back() {
    let t = MemoryTransport::new();
    let e = env(Priority::Normal, "x");
    let id = e.id;
    let err = t.publish(e, T).unwrap_err();
    assert!(matches!(&err, PublishError::NoSubscribers { envelope } if envelope.id == id));
}

#[test]
fn reject_policy_refuses_at_once_and_returns_the_message() {
    let t = MemoryTransport::new();
    let _s = t
        .subscribe(&topic(), &opts("g", 2, OverflowPolicy::Reject))
        .unwrap();
    t.publish(env(Priority::Normal, "1"), T).unwrap();
    t.publish(env(Priority::Normal, "2"), T).unwrap();
    let err = t.publish(env(Priority::Normal, "3"), T).unwrap_err();
    match err {
        PublishError::QueueFull {
            envelope, group, ..
        } => {
            assert_eq!(group, "g");
            assert_eq!(&envelope.payload[..], b"3");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(t.queue_depths()[0].depth, 2);
}

#[test]
fn block_policy_waits_for_room_then_rejects() {
    let t = Arc::new(MemoryTransport::new());
    let mut s = t
        .subscribe(
            &topic(),
            &opts(
                "g",
                1,
                OverflowPolicy::Block {
                    timeout: Duration::from_secs(5),
                },
            ),
        )
        .unwrap();
    t.publish(env(Priority::Normal, "1"), T).unwrap();
    // Full: a publish with a short timeout gives up.
    assert!(matches!(
        t.publish(env(Priority::Normal, "2"), SHORT),
        Err(PublishError::QueueFull { .. })
    ));
    // A blocked publisher proceeds as soon as a consumer makes room.
    let t2 = Arc::clone(&t);
    let publisher =
        std::thread::spawn(move || t2.publish(env(Priority::Normal, "3"), Duration::from_secs(5)));
    let d = s.next(T).unwrap().unwrap();
    assert_eq!(tag(&d), "1");
    d.ack();
    assert!(publisher.join().unwrap().is_ok());
    assert_eq!(take(&mut s), "3");
}

#[test]
fn dead_letter_policy_accepts_and_hands_back_the_full_copy() {
    let t = MemoryTransport::new();
    let _s = t
        .subscribe(&topic(), &opts("g", 1, OverflowPolicy::DeadLetter))
        .unwrap();
    t.publish(env(Priority::Normal, "1"), T).unwrap();
    let r = t.publish(env(Priority::Normal, "2"), T).unwrap();
    assert_eq!(r.copies, 1);
    let spilled = &r.leftovers.unwrap().full;
    assert_eq!(spilled.len(), 1);
    assert_eq!(&spilled[0].1.payload[..], b"2");
    assert_eq!(&*spilled[0].0, "g");
}

#[test]
fn discard_lowest_evicts_the_oldest_lower_priority_message() {
    let t = MemoryTransport::new();
    let mut s = t
        .subscribe(&topic(), &opts("g", 2, OverflowPolicy::DiscardLowest))
        .unwrap();
    t.publish(env(Priority::Low, "low1"), T).unwrap();
    t.publish(env(Priority::Normal, "n"), T).unwrap();
    let r = t.publish(env(Priority::High, "h"), T).unwrap();
    let discarded = &r.leftovers.unwrap().evicted;
    assert_eq!(discarded.len(), 1);
    assert_eq!(&discarded[0].1.payload[..], b"low1");
    // The incoming message is handed back as refused by a full queue when
    // nothing lower is queued (the bus discards it by the policy).
    let r = t.publish(env(Priority::Low, "low2"), T).unwrap();
    assert_eq!(&r.leftovers.unwrap().full[0].1.payload[..], b"low2");
    assert_eq!(take(&mut s), "h");
    assert_eq!(take(&mut s), "n");
    assert!(s.next(SHORT).unwrap().is_none());
}

#[test]
fn a_publish_refused_by_one_group_reaches_no_group() {
    let t = MemoryTransport::new();
    let mut a = t
        .subscribe(&topic(), &opts("a", 10, OverflowPolicy::Reject))
        .unwrap();
    let _b = t
        .subscribe(&topic(), &opts("b", 1, OverflowPolicy::Reject))
        .unwrap();
    t.publish(env(Priority::Normal, "1"), T).unwrap();
    assert!(
        matches!(t.publish(env(Priority::Normal, "2"), T), Err(PublishError::QueueFull { ref group, .. }) if group == "b")
    );
    assert_eq!(take(&mut a), "1");
    assert!(
        a.next(SHORT).unwrap().is_none(),
        "group a must not get the refused message"
    );
}

/// A transport on a manual clock whose one message "x" was taken by group
/// "g" and nakked with `delay`; the clock, the transport (kept alive) and
/// the subscription.
fn nakked(delay: Duration) -> (ManualClock, MemoryTransport, Box<dyn Subscription>) {
    let clock = ManualClock::new();
    let t = MemoryTransport::with_clock(Arc::new(clock.clone()));
    let mut s = t
        .subscribe(&topic(), &SubscribeOptions::group("g"))
        .unwrap();
    t.publish(env(Priority::Normal, "x"), T).unwrap();
    s.next(T).unwrap().unwrap().nak(delay);
    (clock, t, s)
}

#[test]
fn nak_with_delay_waits_for_the_clock() {
    let (clock, t, mut s) = nakked(Duration::from_secs(30));
    assert_eq!(
        t.queue_depths()[0].depth,
        1,
        "parked messages count in depth"
    );
    assert!(
        s.next(Duration::from_millis(50)).unwrap().is_none(),
        "redelivered before its time"
    );
    clock.advance(Duration::from_secs(30));
    let d = s
        .next(Duration::from_secs(5))
        .unwrap()
        .expect("redelivered after the delay");
    assert_eq!(tag(&d), "x");
}

/// The delay runs from the nak: a clock advanced right after it (before the
/// timer thread has even seen the message) still releases it. The due time
/// used to be computed by the timer thread on receipt, so an advance that
/// won the race pushed it an hour further.
#[test]
fn the_delay_runs_from_the_nak_not_from_when_the_timer_sees_it() {
    for _ in 0..50 {
        let (clock, _t, mut s) = nakked(Duration::from_secs(3600));
        clock.advance(Duration::from_secs(3600));
        let d = s
            .next(Duration::from_secs(5))
            .unwrap()
            .expect("released once the clock passed the nak's delay");
        assert_eq!(tag(&d), "x");
    }
}

/// The timer sleeps until a parked message is due: it does not poll the
/// clock meanwhile (it used to, every 10 ms), and an advance of a manual
/// clock wakes it at once.
#[test]
fn the_timer_sleeps_until_the_due_time() {
    const LONG: Duration = Duration::from_secs(10);
    let wait_until = |bound: Duration, mut cond: Box<dyn FnMut() -> bool + '_>| {
        let deadline = std::time::Instant::now() + bound;
        while !cond() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    };
    let (clock, t, mut s) = nakked(Duration::from_secs(3600));
    let timer = t.timer().unwrap();
    assert!(wait_until(LONG, Box::new(|| timer.parked() == 1)));
    // Settled: the pass that saw the message has ended in a sleep.
    let mut passes = timer.passes();
    assert!(wait_until(
        LONG,
        Box::new(|| {
            std::thread::sleep(Duration::from_millis(20));
            let now = timer.passes();
            std::mem::replace(&mut passes, now) == now
        })
    ));
    // An injected clock cannot show an absence of wake-ups: 100 ms of real
    // time is ten polls' worth of the old loop.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(timer.passes(), passes, "the timer polled");
    clock.advance(Duration::from_secs(3600));
    let d = s.next(LONG).unwrap().expect("released when due");
    assert_eq!(tag(&d), "x");
}

#[test]
fn a_dropped_delivery_is_redelivered() {
    let t = MemoryTransport::new();
    let mut s = t
        .subscribe(&topic(), &SubscribeOptions::group("g"))
        .unwrap();
    t.publish(env(Priority::Normal, "x"), T).unwrap();
    drop(s.next(T).unwrap().unwrap());
    assert_eq!(take(&mut s), "x");
}

#[test]
fn close_returns_queued_and_parked_messages_and_refuses_more() {
    let t = MemoryTransport::new();
    let mut s = t
        .subscribe(&topic(), &SubscribeOptions::group("g"))
        .unwrap();
    for i in 0..3 {
        t.publish(env(Priority::Normal, &i.to_string()), T).unwrap();
    }
    s.next(T).unwrap().unwrap().nak(Duration::from_secs(3600));
    let left = t.close();
    let mut tags: Vec<String> = left
        .iter()
        .map(|(_, e)| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["0", "1", "2"]);
    assert!(matches!(
        t.publish(env(Priority::Normal, "late"), T),
        Err(PublishError::Closed { .. })
    ));
    assert!(matches!(s.next(SHORT), Err(TransportError::Closed)));
}

#[test]
fn a_group_keeps_its_messages_while_no_member_is_subscribed() {
    let t = MemoryTransport::new();
    drop(
        t.subscribe(&topic(), &SubscribeOptions::group("g"))
            .unwrap(),
    );
    t.publish(env(Priority::Normal, "kept"), T).unwrap();
    let mut again = t
        .subscribe(&topic(), &SubscribeOptions::group("g"))
        .unwrap();
    assert_eq!(take(&mut again), "kept");
}

#[test]
fn many_publishers_and_consumers_lose_nothing() {
    let t = Arc::new(MemoryTransport::new());
    let subs: Vec<_> = (0..3)
        .map(|_| {
            t.subscribe(
                &topic(),
                &opts(
                    "g",
                    64,
                    OverflowPolicy::Block {
                        timeout: Duration::from_secs(10),
                    },
                ),
            )
            .unwrap()
        })
        .collect();
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    let prio = Priority::ALL[i % 4];
                    t.publish(env(prio, &format!("{p}-{i}")), Duration::from_secs(10))
                        .unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Ok(Some(d)) = s.next(Duration::from_millis(300)) {
                    seen.push(tag(&d));
                    d.ack();
                }
                seen
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let mut all: Vec<String> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "duplicates delivered");
    assert_eq!(all.len(), 8_000);
}

/// Group `g` of capacity 1 (blocking for 30 s) holding "queued", and a
/// publisher of "blocked" already waiting for room.
fn with_a_blocked_publisher(
    t: &Arc<MemoryTransport>,
) -> (
    Box<dyn Subscription>,
    std::thread::JoinHandle<Result<Receipt, PublishError>>,
) {
    let block = OverflowPolicy::Block {
        timeout: Duration::from_secs(30),
    };
    let s = t.subscribe(&topic(), &opts("g", 1, block)).unwrap();
    t.publish(env(Priority::Normal, "queued"), T).unwrap();
    let t2 = Arc::clone(t);
    let publisher = std::thread::spawn(move || {
        t2.publish(env(Priority::Normal, "blocked"), Duration::from_secs(30))
    });
    let queue = Arc::clone(&t.routes().get(&topic()).unwrap()[0].queue);
    while queue.waiting_publishers() == 0 {
        std::thread::yield_now();
    }
    (s, publisher)
}

/// A publisher blocked on a full queue when the transport closes gets its
/// message back; it must not be told Ok and then find its copy in a queue
/// that close has already emptied.
#[test]
fn a_publisher_blocked_at_close_gets_its_message_back() {
    let t = Arc::new(MemoryTransport::new());
    let (_s, publisher) = with_a_blocked_publisher(&t);
    let left = t.close();
    assert_eq!(left.len(), 1, "close returns the queued message");
    match publisher.join().unwrap() {
        Err(e) => {
            let back = e.into_envelope().expect("the message is handed back");
            assert_eq!(&back.payload[..], b"blocked");
        }
        Ok(r) => panic!("a publish that raced close was accepted into a drained queue: {r:?}"),
    }
}

/// A publish that waits for room must not hold the routing table: a
/// subscribe meanwhile (here, on another thread) goes through at once
/// instead of waiting out the publisher's 30 s.
#[test]
fn a_subscribe_does_not_wait_for_a_publisher_blocked_on_a_full_queue() {
    let t = Arc::new(MemoryTransport::new());
    let (mut s, publisher) = with_a_blocked_publisher(&t);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let t3 = Arc::clone(&t);
    let subscriber = std::thread::spawn(move || {
        let sub = t3.subscribe(&topic(), &opts("late", 4, OverflowPolicy::default()));
        let _ = tx.send(sub.is_ok());
    });
    let subscribed = rx.recv_timeout(Duration::from_secs(10));
    // Free the publisher either way, so a failure does not hang the run.
    assert_eq!(take(&mut s), "queued");
    let receipt = publisher.join().unwrap().unwrap();
    subscriber.join().unwrap();
    assert_eq!(
        subscribed,
        Ok(true),
        "subscribe waited for the blocked publisher"
    );
    assert_eq!(
        receipt.copies, 1,
        "the late group came after the publish began"
    );
    assert_eq!(take(&mut s), "blocked");
}

/// A publish that evicts from one group and is then refused by another
/// (here: closed while it waits) leaves the would-be victim where it was:
/// close hands it back, not a log line about a dropped message.
#[test]
fn a_message_evicted_for_a_publish_refused_at_close_is_handed_back_by_close() {
    let t = Arc::new(MemoryTransport::new());
    let block = OverflowPolicy::Block {
        timeout: Duration::from_secs(30),
    };
    let _low = t
        .subscribe(&topic(), &opts("low", 1, OverflowPolicy::DiscardLowest))
        .unwrap();
    let _full = t.subscribe(&topic(), &opts("full", 1, block)).unwrap();
    t.publish(env(Priority::Low, "queued"), T).unwrap();
    let t2 = Arc::clone(&t);
    let publisher = std::thread::spawn(move || {
        t2.publish(env(Priority::High, "blocked"), Duration::from_secs(30))
    });
    let full = Arc::clone(&t.routes().get(&topic()).unwrap()[1].queue);
    while full.waiting_publishers() == 0 {
        std::thread::yield_now();
    }
    // The blocked publish made room in "low" by eviction before it blocked
    // on "full"; close drains "low" first.
    let mut left: Vec<String> = t
        .close()
        .into_iter()
        .map(|(group, e)| format!("{group}:{}", String::from_utf8_lossy(&e.payload)))
        .collect();
    left.sort();
    let back = publisher
        .join()
        .unwrap()
        .expect_err("refused at close")
        .into_envelope()
        .expect("handed back");
    assert_eq!(&back.payload[..], b"blocked");
    assert_eq!(left, ["full:queued", "low:queued"]);
}

#[test]
fn publish_to_group_reaches_that_group_alone_under_its_bound() {
    let t = MemoryTransport::new();
    let mut a = t
        .subscribe(&topic(), &opts("a", 1, OverflowPolicy::Reject))
        .unwrap();
    let mut b = t
        .subscribe(&topic(), &opts("b", 8, OverflowPolicy::Reject))
        .unwrap();
    let receipt = t
        .publish_to_group("a", env(Priority::Normal, "once"), T)
        .unwrap();
    assert_eq!(receipt.copies, 1);
    assert_eq!(take(&mut a), "once");
    assert!(b.next(SHORT).unwrap().is_none(), "group b got no copy");

    // Bounded like any publish: a full group refuses and hands it back.
    t.publish_to_group("a", env(Priority::Normal, "fills"), T)
        .unwrap();
    let err = t
        .publish_to_group("a", env(Priority::Normal, "over"), SHORT)
        .unwrap_err();
    assert!(matches!(&err, PublishError::QueueFull { group, .. } if group == "a"));

    let e = env(Priority::Normal, "lost?");
    let id = e.id;
    let err = t.publish_to_group("nobody", e, T).unwrap_err();
    assert!(
        matches!(&err, PublishError::NoSuchGroup { envelope, group } if envelope.id == id && group == "nobody")
    );
}

/// Four groups `g0`..`g3` of `t`'s topic, each with capacity 2 and
/// `overflow`, except `g2` (the third), which has capacity 1 and
/// `third`'s policy.
fn four_groups(
    t: &MemoryTransport,
    overflow: OverflowPolicy,
    third: OverflowPolicy,
) -> Vec<Box<dyn Subscription>> {
    (0..4)
        .map(|i| {
            let o = if i == 2 {
                opts("g2", 1, third)
            } else {
                opts(&format!("g{i}"), 2, overflow)
            };
            t.subscribe(&topic(), &o).unwrap()
        })
        .collect()
}

/// The first groups already held their slots (and their locks) when the
/// third turns out to be full: the refusal must leave no copy in them, and
/// give their slots back.
#[test]
fn a_fan_out_refused_by_its_third_group_leaves_no_copy_in_the_first_two() {
    let t = MemoryTransport::new();
    let mut subs = four_groups(&t, OverflowPolicy::Reject, OverflowPolicy::Reject);
    assert_eq!(t.publish(env(Priority::Normal, "1"), T).unwrap().copies, 4);
    let err = t.publish(env(Priority::Normal, "2"), T).unwrap_err();
    match err {
        PublishError::QueueFull { envelope, group } => {
            assert_eq!(group, "g2");
            assert_eq!(&envelope.payload[..], b"2");
        }
        other => panic!("unexpected {other:?}"),
    }
    let depths: Vec<usize> = t.queue_depths().iter().map(|d| d.depth).collect();
    assert_eq!(
        depths,
        [1, 1, 1, 1],
        "one copy of \"1\" each, none of \"2\""
    );
    for s in &mut subs {
        assert_eq!(take(s), "1");
        assert!(
            s.next(SHORT).unwrap().is_none(),
            "a copy of the refused one"
        );
    }
    // The slots "2" reserved were given back: groups of capacity 2 take two more.
    for tag in ["3", "4"] {
        assert_eq!(t.publish(env(Priority::Normal, tag), T).unwrap().copies, 4);
        take(&mut subs[2]);
    }
    for s in [0, 1, 3] {
        assert_eq!(take(&mut subs[s]), "3");
        assert_eq!(take(&mut subs[s]), "4");
    }
}

/// A third group that spills to the dead-letter queue when full: the other
/// three get their copies, and the third's comes back in the receipt.
#[test]
fn a_fan_out_whose_third_group_is_full_and_spills_reaches_the_other_three() {
    let t = MemoryTransport::new();
    let mut subs = four_groups(&t, OverflowPolicy::Reject, OverflowPolicy::DeadLetter);
    t.publish(env(Priority::Normal, "1"), T).unwrap();
    let r = t.publish(env(Priority::Normal, "2"), T).unwrap();
    assert_eq!(r.copies, 4);
    let full = r.leftovers.expect("the spilled copy").full;
    assert_eq!(full.len(), 1);
    assert_eq!((&*full[0].0, &full[0].1.payload[..]), ("g2", &b"2"[..]));
    for (i, s) in subs.iter_mut().enumerate() {
        assert_eq!(take(s), "1");
        if i != 2 {
            assert_eq!(take(s), "2");
        }
        assert!(s.next(SHORT).unwrap().is_none());
    }
}

/// A third group that blocks when full: the publish waits for its room,
/// then every group gets its copy, each exactly once.
#[test]
fn a_fan_out_waits_for_room_in_its_third_group_then_reaches_all_four() {
    let t = Arc::new(MemoryTransport::new());
    let block = OverflowPolicy::Block {
        timeout: Duration::from_secs(30),
    };
    let mut subs = four_groups(&t, OverflowPolicy::Reject, block);
    t.publish(env(Priority::Normal, "1"), T).unwrap();
    let t2 = Arc::clone(&t);
    let publisher =
        std::thread::spawn(move || t2.publish(env(Priority::Normal, "2"), Duration::from_secs(30)));
    let third = Arc::clone(&t.routes().get(&topic()).unwrap()[2].queue);
    while third.waiting_publishers() == 0 {
        std::thread::yield_now();
    }
    assert_eq!(take(&mut subs[2]), "1");
    assert_eq!(publisher.join().unwrap().unwrap().copies, 4);
    assert_eq!(take(&mut subs[2]), "2");
    for s in [0, 1, 3] {
        assert_eq!(take(&mut subs[s]), "1");
        assert_eq!(take(&mut subs[s]), "2");
        assert!(subs[s].next(SHORT).unwrap().is_none());
    }
}

/// Publishers of one topic place their copies group by group, after
/// reading each group's "full" hint without its lock. Four publishers into
/// small blocking queues, with groups joining meanwhile, must neither
/// deadlock nor lose or duplicate a copy, and a queue may go past its bound
/// only by the publishers racing for its last slot (three here, besides
/// the one that took it).
#[test]
fn concurrent_fan_outs_while_groups_join_lose_nothing() {
    const PER_PUBLISHER: usize = 2_000;
    const CAPACITY: usize = 4;
    const PUBLISHERS: usize = 4;
    let t = Arc::new(MemoryTransport::new());
    let block = OverflowPolicy::Block {
        timeout: Duration::from_secs(30),
    };
    let consume = |mut s: Box<dyn Subscription>| {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            // Until close: an idle spell of a loaded machine must not end it.
            while let Ok(Some(d)) = s.next(Duration::from_secs(30)) {
                seen.push(tag(&d));
                d.ack();
            }
            seen
        })
    };
    let mut consumers: Vec<_> = (0..4)
        .map(|i| {
            consume(
                t.subscribe(&topic(), &opts(&format!("g{i}"), CAPACITY, block))
                    .unwrap(),
            )
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (t, done) = (Arc::clone(&t), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut deepest = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for d in t.queue_depths() {
                    deepest = deepest.max(d.depth);
                }
                std::thread::yield_now();
            }
            deepest
        })
    };
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                for i in 0..PER_PUBLISHER {
                    let r = t.publish(
                        env(Priority::Normal, &format!("{p}-{i}")),
                        Duration::from_secs(30),
                    );
                    assert!(r.is_ok_and(|r| r.leftovers.is_none()));
                }
            })
        })
        .collect();
    for i in 4..6 {
        let s = t
            .subscribe(&topic(), &opts(&format!("g{i}"), CAPACITY, block))
            .unwrap();
        consumers.push(consume(s));
    }
    for p in publishers {
        p.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let deepest = sampler.join().unwrap();
    assert!(
        deepest < CAPACITY + PUBLISHERS,
        "a queue of capacity {CAPACITY} held {deepest} messages"
    );
    while t.queue_depths().iter().any(|d| d.depth > 0) {
        std::thread::yield_now();
    }
    assert!(t.close().is_empty());
    for (i, c) in consumers.into_iter().enumerate() {
        let mut seen = c.join().unwrap();
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n, "group {i} got a copy twice");
        if i < 4 {
            assert_eq!(n, 4 * PER_PUBLISHER, "group {i} missed copies");
        }
    }
}

#[test]
fn in_flight_counts_deliveries_taken_and_not_settled() {
    let t = MemoryTransport::new();
    let mut s = t
        .subscribe(&topic(), &opts("g", 8, OverflowPolicy::Reject))
        .unwrap();
    for tag in ["1", "2", "3", "4"] {
        t.publish(env(Priority::Normal, tag), T).unwrap();
    }
    let depth = |t: &MemoryTransport| {
        let q = &t.queue_depths()[0];
        (q.depth, q.in_flight)
    };
    assert_eq!(depth(&t), (4, 0));
    let a = s.next(T).unwrap().unwrap();
    let b = s.next(T).unwrap().unwrap();
    let c = s.next(T).unwrap().unwrap();
    assert_eq!(depth(&t), (1, 3));
    a.ack();
    assert_eq!(depth(&t), (1, 2));
    b.term();
    assert_eq!(depth(&t), (1, 1));
    c.nak(Duration::ZERO);
    assert_eq!(depth(&t), (2, 0), "a nak puts it back in the queue");
    let d = s.next(T).unwrap().unwrap();
    drop(d);
    assert_eq!(depth(&t), (2, 0), "an unsettled drop is redelivered");
}

/// A `publish_async` to a full queue whose policy blocks awaits room with
/// the queue (counted among its waiting publishers), and the take that
/// makes room wakes it: no timer paces it.
#[cfg(feature = "tokio")]
#[test]
fn publish_async_awaiting_room_is_woken_by_the_take_that_makes_it() {
    let t = Arc::new(MemoryTransport::new());
    let config = crate::BusConfig {
        publish_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let bus = crate::Bus::builder()
        .transport(Arc::clone(&t) as Arc<dyn Transport>)
        .config(config)
        .build();
    // Each call waits for a go; the handler says when it holds one.
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let (held, holding) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(held);
    bus.subscriber("g")
        .topic("t")
        .capacity(1)
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .start(
            move |_m: &crate::Message<'_>| -> Result<(), std::io::Error> {
                let _ = held.lock().unwrap().send(());
                let _ = gate.lock().unwrap().recv();
                Ok(())
            },
        )
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(bus.publish_async("t", &b"held"[..])).unwrap();
    holding.recv().unwrap();
    rt.block_on(bus.publish_async("t", &b"queued"[..])).unwrap();
    let b = bus.clone();
    let waiting = rt.spawn(async move { b.publish_async("t", &b"waited"[..]).await });
    let queue = Arc::clone(&t.routes().get(&topic()).unwrap()[0].queue);
    assert!(
        bus_test::wait_until(Duration::from_secs(10), || queue.waiting_publishers() == 1),
        "the publish does not wait with the queue"
    );
    assert!(!waiting.is_finished());
    // The held call ends; the worker's take of "queued" makes the room.
    go.send(()).unwrap();
    rt.block_on(waiting).unwrap().unwrap();
    assert_eq!(
        queue.waiting_publishers(),
        0,
        "a woken task no longer counts"
    );
    go.send(()).unwrap();
    go.send(()).unwrap();
    let report = bus.shutdown(Duration::from_secs(10));
    assert!(report.drained, "{report:?}");
    assert_eq!((report.stats.published, report.stats.acked), (3, 3));
}
