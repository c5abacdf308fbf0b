//! Scenarios on the raw transport contract: publish, subscribe, settle.

use super::{Ctx, Tally, assert_quiet, drain};
use bus_core::{Envelope, Priority};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Payload, headers, priority, content type and correlation id arrive intact.
pub fn publish_subscribe_keeps_payload_and_headers(ctx: &Ctx) {
    let topic = ctx.topic("intact");
    let mut sub = ctx.sub(&topic, "g");
    let payload: Vec<u8> = (0..=255_u8).collect();
    let env = Envelope::new(topic.clone(), payload.clone())
        .with_priority(Priority::High)
        .with_header("tenant", "acme")
        .with_header("x-trace", "abc-123")
        .with_correlation_id("corr-9")
        .with_content_type("application/octet-stream");
    let sent = env.clone();
    ctx.transport
        .publish(env, ctx.patience)
        .unwrap_or_else(|e| panic!("{e}"));
    let d = sub
        .next(ctx.patience)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("delivered");
    let got = d.envelope().clone();
    d.ack();
    assert_eq!(got.id, sent.id);
    assert_eq!(got.topic, sent.topic);
    assert_eq!(got.payload, sent.payload);
    assert_eq!(got.headers.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(
        got.headers.get("x-trace").map(String::as_str),
        Some("abc-123")
    );
    assert_eq!(got.priority, Priority::High);
    assert_eq!(got.correlation_id.as_deref(), Some("corr-9"));
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(got.attempt, 1);
}

/// Many threads subscribing to one group at once, while publishing: every
/// message is delivered.
pub fn concurrent_subscribe(ctx: &Ctx) {
    let topic = ctx.topic("concsub");
    let first = ctx.sub(&topic, "g"); // the group exists before publishing
    let subs: Vec<_> = (0..4)
        .map(|_| {
            let ctx = ctx.clone();
            let topic = topic.clone();
            std::thread::spawn(move || ctx.sub(&topic, "g"))
        })
        .collect();
    let ids = ctx.publish_n(&topic, 200);
    let mut subs: Vec<_> = subs
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| panic!("subscribe thread")))
        .collect();
    subs.push(first);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let consumers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            let tally = Arc::clone(&tally);
            let patience = ctx.patience;
            std::thread::spawn(move || {
                let deadline = Instant::now() + patience;
                while Instant::now() < deadline {
                    if tally
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .distinct()
                        >= 200
                    {
                        break;
                    }
                    if let Ok(Some(d)) = s.next(Duration::from_millis(50)) {
                        tally
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .add(d.envelope().id);
                        d.ack();
                    }
                }
            })
        })
        .collect();
    for c in consumers {
        c.join().unwrap_or_else(|_| panic!("consumer thread"));
    }
    tally
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .assert_has_all(&ids, "concurrent subscribe");
}

/// A nak redelivers: each message nak'd once is delivered again, none lost.
pub fn resend_on_nak(ctx: &Ctx) {
    let topic = ctx.topic("nak");
    let mut sub = ctx.sub(&topic, "g");
    let ids = ctx.publish_n(&topic, 20);
    let mut naked = HashSet::new();
    let mut acked = Tally::default();
    let deadline = Instant::now() + ctx.patience;
    while acked.distinct() < ids.len() && Instant::now() < deadline {
        if let Ok(Some(d)) = sub.next(Duration::from_millis(100)) {
            let id = d.envelope().id;
            if naked.insert(id) {
                d.nak(Duration::from_millis(10));
            } else {
                acked.add(id);
                d.ack();
            }
        }
    }
    acked.assert_has_all(&ids, "resend on nak");
    assert_eq!(naked.len(), ids.len());
}

/// A consumer that fails many times in a row keeps getting its messages.
pub fn continue_after_many_errors(ctx: &Ctx) {
    let topic = ctx.topic("errors");
    let mut sub = ctx.sub(&topic, "g");
    let ids = ctx.publish_n(&topic, 5);
    let mut failures = 0;
    let mut acked = Tally::default();
    let deadline = Instant::now() + ctx.patience;
    while acked.distinct() < ids.len() && Instant::now() < deadline {
        if let Ok(Some(d)) = sub.next(Duration::from_millis(100)) {
            if failures < 25 {
                failures += 1;
                d.nak(Duration::ZERO);
            } else {
                acked.add(d.envelope().id);
                d.ack();
            }
        }
    }
    assert_eq!(failures, 25);
    acked.assert_has_all(&ids, "continue after errors");
}

/// A terminated message is never redelivered.
pub fn term_is_final(ctx: &Ctx) {
    let topic = ctx.topic("term");
    let mut sub = ctx.sub(&topic, "g");
    ctx.publish_n(&topic, 1);
    sub.next(ctx.patience)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("delivered")
        .term();
    assert_quiet(&mut sub, "term");
}

/// A delivery dropped unsettled is redelivered, never lost.
pub fn dropped_delivery_is_redelivered(ctx: &Ctx) {
    let topic = ctx.topic("dropped");
    let mut sub = ctx.sub(&topic, "g");
    let ids = ctx.publish_n(&topic, 1);
    drop(
        sub.next(ctx.patience)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("delivered"),
    );
    drain(ctx, &mut sub, 1).assert_has_all(&ids, "dropped delivery");
}

/// Subscribers closed and recreated while publishing: nothing is lost
/// (duplicates allowed and counted).
pub fn close_and_recreate_while_publishing(ctx: &Ctx) {
    let topic = ctx.topic("recreate");
    drop(ctx.sub(&topic, "g")); // create the durable group first
    let publisher = {
        let ctx = ctx.clone();
        let topic = topic.clone();
        std::thread::spawn(move || ctx.publish_n(&topic, 300))
    };
    let mut tally = Tally::default();
    for _ in 0..6 {
        let mut sub = ctx.sub(&topic, "g");
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            if let Ok(Some(d)) = sub.next(Duration::from_millis(10)) {
                tally.add(d.envelope().id);
                d.ack();
            }
        }
        drop(sub);
    }
    let ids = publisher.join().unwrap_or_else(|_| panic!("publisher"));
    let mut sub = ctx.sub(&topic, "g");
    let rest = drain(ctx, &mut sub, ids.len() - tally.distinct().min(ids.len()));
    for (id, n) in rest.seen {
        for _ in 0..n {
            tally.add(id);
        }
    }
    tally.assert_has_all(&ids, "close and recreate");
}

/// Closing subscriptions from several threads at once while others consume is safe.
pub fn concurrent_close(ctx: &Ctx) {
    let topic = ctx.topic("concclose");
    let subs: Vec<_> = (0..8).map(|_| ctx.sub(&topic, "g")).collect();
    let ids = ctx.publish_n(&topic, 50);
    let closers: Vec<_> = subs
        .into_iter()
        .map(|s| std::thread::spawn(move || drop(s)))
        .collect();
    for c in closers {
        c.join().unwrap_or_else(|_| panic!("close thread"));
    }
    let mut sub = ctx.sub(&topic, "g");
    drain(ctx, &mut sub, ids.len()).assert_has_all(&ids, "concurrent close");
}

/// 10,000 publishes from 8 threads in parallel: none lost.
pub fn parallel_publish_10k(ctx: &Ctx) {
    let topic = ctx.topic("parallel");
    let mut sub = ctx.sub(&topic, "g");
    let publishers: Vec<_> = (0..8)
        .map(|_| {
            let ctx = ctx.clone();
            let topic = topic.clone();
            std::thread::spawn(move || ctx.publish_n(&topic, 1250))
        })
        .collect();
    let ids: Vec<_> = publishers
        .into_iter()
        .flat_map(|p| p.join().unwrap_or_else(|_| panic!("publisher")))
        .collect();
    assert_eq!(ids.len(), 10_000);
    let tally = drain(ctx, &mut sub, ids.len());
    tally.assert_has_all(&ids, "10k parallel publishes");
}

/// Messages of one topic never reach another topic's subscribers.
pub fn topic_isolation(ctx: &Ctx) {
    let a = ctx.topic("iso-a");
    let b = ctx.topic("iso-b");
    let mut sub_a = ctx.sub(&a, "g");
    let mut sub_b = ctx.sub(&b, "g");
    let ids_a = ctx.publish_n(&a, 10);
    let tally = drain(ctx, &mut sub_a, 10);
    tally.assert_has_all(&ids_a, "topic a");
    assert_quiet(&mut sub_b, "topic b got topic a's messages");
}

/// Two groups each get every message; members of one group share them.
pub fn consumer_groups(ctx: &Ctx) {
    let topic = ctx.topic("groups");
    let mut a1 = ctx.sub(&topic, "a");
    let mut a2 = ctx.sub(&topic, "a");
    let mut b = ctx.sub(&topic, "b");
    let ids = ctx.publish_n(&topic, 100);
    drain(ctx, &mut b, ids.len()).assert_has_all(&ids, "group b");
    let mut shared = Tally::default();
    let (mut n1, mut n2) = (0, 0);
    let deadline = Instant::now() + ctx.patience;
    while shared.distinct() < ids.len() && Instant::now() < deadline {
        for (sub, n) in [(&mut a1, &mut n1), (&mut a2, &mut n2)] {
            if let Ok(Some(d)) = sub.next(Duration::from_millis(20)) {
                shared.add(d.envelope().id);
                *n += 1;
                d.ack();
            }
        }
    }
    shared.assert_has_all(&ids, "group a");
    assert!(
        n1 > 0 && n2 > 0,
        "both members of a group get work ({n1}, {n2})"
    );
    assert_eq!(
        shared.duplicates(),
        0,
        "members of one group must not both get a message"
    );
}

/// With one publisher and one consumer, messages of one priority arrive in order.
pub fn ordering_within_a_group(ctx: &Ctx) {
    let topic = ctx.topic("order");
    let mut sub = ctx.sub(&topic, "g");
    let ids = ctx.publish_n(&topic, 100);
    let mut got = Vec::new();
    let deadline = Instant::now() + ctx.patience;
    while got.len() < ids.len() && Instant::now() < deadline {
        if let Ok(Some(d)) = sub.next(Duration::from_millis(100)) {
            got.push(d.envelope().id);
            d.ack();
        }
    }
    assert_eq!(got, ids, "order not kept");
}

/// A message published to one group reaches that group alone; an ordinary
/// publish still reaches every group.
pub fn publish_to_one_group(ctx: &Ctx) {
    if !ctx.features.publish_to_group {
        ctx.skip("publish_to_one_group", "publish_to_group");
        return;
    }
    let topic = ctx.topic("onegroup");
    let mut a = ctx.sub(&topic, "a");
    let mut b = ctx.sub(&topic, "b");
    let env = Envelope::new(topic.clone(), b"for a".to_vec());
    let id = env.id;
    ctx.transport
        .publish_to_group(&ctx.group("a"), env, ctx.patience)
        .unwrap_or_else(|e| panic!("publish to group failed: {e}"));
    drain(ctx, &mut a, 1).assert_has_all(&[id], "the named group");
    assert_quiet(&mut b, "another group got a message published to one group");
    let ids = ctx.publish_n(&topic, 1);
    drain(ctx, &mut a, 1).assert_has_all(&ids, "group a after a group publish");
    drain(ctx, &mut b, 1).assert_has_all(&ids, "group b after a group publish");
}

/// The connection is cut and restored (a broker restart) between two
/// halves of a stream: every message of both halves is delivered, the ones
/// in flight at the cut perhaps twice, none lost.
pub fn reconnect_loses_nothing(ctx: &Ctx) {
    let Some(cut_and_restore) = ctx.features.reconnect.clone() else {
        ctx.skip("reconnect_loses_nothing", "a way to cut the connection");
        return;
    };
    let topic = ctx.topic("reconnect");
    let mut sub = ctx.sub(&topic, "g");
    let mut ids = ctx.publish_n(&topic, 50);
    // Take some, leave some unsettled in the transport, then cut.
    let mut tally = drain(ctx, &mut sub, 20);
    cut_and_restore();
    // Publishing right after the restore: a transport still reconnecting
    // may refuse (the publisher keeps the message), so retry until patience
    // runs out, as a publisher would.
    let deadline = Instant::now() + ctx.patience;
    for i in 0..50 {
        loop {
            let env = Envelope::new(topic.clone(), format!("after {i}").into_bytes());
            let id = env.id;
            match ctx.transport.publish(env, Duration::from_secs(1)) {
                Ok(_) => {
                    ids.push(id);
                    break;
                }
                // Refused while the transport finds the server again.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("publish after reconnect: {e}"),
            }
        }
    }
    let deadline = Instant::now() + ctx.patience;
    while !ids.iter().all(|id| tally.seen.contains_key(id)) && Instant::now() < deadline {
        if let Ok(Some(d)) = sub.next(Duration::from_millis(100)) {
            tally.add(d.envelope().id);
            d.ack();
        }
    }
    tally.assert_has_all(&ids, "across a reconnect");
}
