//! Scenarios on pipelined publishing: [`Transport::send`] with many
//! messages in flight, and the bus's [`Publisher`](bus_core::Publisher)
//! (windows, batches with bad items, order per thread).

use super::{Ctx, drain};
use crate::{assert_invariant, wait_until};
use bus_core::{
    Bus, BusConfig, Confirm, Envelope, Message, MessageId, PublishError, PublisherOptions, Receipt,
    Route,
};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Every message sent with [`Transport::send`](bus_core::Transport::send),
/// all in flight at once, is confirmed exactly once, for the group that
/// subscribes, and delivered.
pub fn send_confirms_every_message(ctx: &Ctx) {
    let topic = ctx.topic("send");
    let mut sub = ctx.sub(&topic, "g");
    let (tx, rx) = mpsc::channel::<(MessageId, Result<Receipt, PublishError>)>();
    let n = 2_000;
    let ids: Vec<MessageId> = (0..n)
        .map(|i| {
            let env = Envelope::new(topic.clone(), format!("s{i}").into_bytes());
            let id = env.id;
            let tx = tx.clone();
            let confirm = Confirm::new(move |outcome| {
                let _ = tx.send((id, outcome));
            });
            ctx.transport.send(env, Route::Topic, ctx.patience, confirm);
            id
        })
        .collect();
    drop(tx);
    let mut confirmed: HashMap<MessageId, u32> = HashMap::new();
    let deadline = Instant::now() + ctx.patience;
    while confirmed.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((id, outcome)) = rx.recv_timeout(left) else {
            break;
        };
        let receipt = outcome.unwrap_or_else(|e| panic!("send {id} refused: {e}"));
        assert_eq!(receipt.copies, 1, "one group subscribes");
        *confirmed.entry(id).or_default() += 1;
    }
    assert_eq!(confirmed.len(), n, "every send is confirmed");
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a confirm resolved twice"
    );
    drain(ctx, &mut sub, n).assert_has_all(&ids, "confirmed sends");
}

/// `(publisher thread, seq)` pairs in the order a subscriber got them.
type Arrivals = Arc<Mutex<Vec<(u32, u32)>>>;

/// A bus over the context's transport, with a 64-byte payload limit and
/// one single-worker subscriber recording `(publisher thread, seq)` in
/// arrival order.
fn recording_bus(ctx: &Ctx) -> (Bus, Arrivals) {
    let mut config = BusConfig::default();
    config.max_payload_bytes = 64;
    config.publish_timeout = ctx.patience;
    let bus = Bus::builder()
        .transport(Arc::clone(&ctx.transport))
        .config(config)
        .build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    bus.subscriber(&ctx.group("confirm"))
        .topic(ctx.topic("confirm").as_str())
        .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
            let text = std::str::from_utf8(&m.payload).unwrap_or_default();
            if let Some((t, n)) = text.split_once(':')
                && let (Ok(t), Ok(n)) = (t.parse(), n.parse())
            {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((t, n));
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    (bus, seen)
}

/// A batch with an invalid topic and an oversized payload in the middle
/// hands back exactly those two, with their payloads; every other item is
/// confirmed and delivered; the ledger counts each item once.
pub fn batch_hands_back_exactly_the_bad_items(ctx: &Ctx) {
    let (bus, seen) = recording_bus(ctx);
    let topic = ctx.topic("confirm");
    let publisher = bus.publisher_with(PublisherOptions::default().window(8));
    let items: Vec<(String, Vec<u8>)> = (0..40_u32)
        .map(|i| match i {
            13 => ("not a topic!".to_owned(), b"bad topic".to_vec()),
            27 => (topic.as_str().to_owned(), vec![b'x'; 65]),
            _ => (topic.as_str().to_owned(), format!("0:{i}").into_bytes()),
        })
        .collect();
    let outcomes = publisher.publish_batch(items);
    assert_eq!(outcomes.len(), 40, "one outcome per item");
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (13, Err(e @ PublishError::InvalidTopic { .. })) => {
                assert_eq!(&e.into_payload()[..], b"bad topic");
            }
            (27, Err(e @ PublishError::PayloadTooLarge { .. })) => {
                assert_eq!(e.into_payload().len(), 65);
            }
            (13 | 27, other) => panic!("item {i}: expected a refusal, got {other:?}"),
            (_, Err(e)) => panic!("item {i} refused: {e}"),
            (_, Ok(_)) => {}
        }
    }
    let delivered = wait_until(ctx.patience, || bus.stats().acked == 38);
    let report = bus.shutdown(ctx.patience);
    let s = report.stats;
    assert!(delivered, "38 items delivered: {s:?}");
    assert_eq!((s.published, s.rejected_at_publish), (40, 2), "{s:?}");
    assert_invariant(&s);
    let got: Vec<u32> = seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|&(_, n)| n)
        .collect();
    let want: Vec<u32> = (0..40).filter(|i| *i != 13 && *i != 27).collect();
    assert_eq!(got, want, "the good items, once each, in order");
}

/// Two threads publish through one small window, dropping their
/// confirmations: every message is confirmed (flush hands back nothing),
/// delivered once, and each thread's messages arrive in its order.
pub fn publisher_window_keeps_order_per_thread(ctx: &Ctx) {
    let (bus, seen) = recording_bus(ctx);
    let topic = ctx.topic("confirm");
    let publisher = bus.publisher_with(PublisherOptions::default().window(16));
    let per_thread = 500_u32;
    std::thread::scope(|scope| {
        for t in 0..2_u32 {
            let (publisher, topic) = (publisher.clone(), topic.clone());
            scope.spawn(move || {
                for n in 0..per_thread {
                    let c = publisher
                        .publish(topic.as_str(), format!("{t}:{n}"))
                        .unwrap_or_else(|e| panic!("publish {t}:{n}: {e}"));
                    assert!(
                        publisher.in_flight() <= 16,
                        "the window bounds what is in flight"
                    );
                    drop(c);
                }
            });
        }
    });
    let unclaimed = publisher
        .flush(ctx.patience)
        .unwrap_or_else(|e| panic!("flush: {e}"));
    assert!(unclaimed.is_empty(), "refused: {unclaimed:?}");
    let total = u64::from(per_thread * 2);
    let delivered = wait_until(ctx.patience, || bus.stats().acked == total);
    let report = bus.shutdown(ctx.patience);
    assert!(delivered, "all delivered: {:?}", report.stats);
    assert_invariant(&report.stats);
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    for t in 0..2 {
        let order: Vec<u32> = seen
            .iter()
            .filter(|(x, _)| *x == t)
            .map(|&(_, n)| n)
            .collect();
        assert_eq!(
            order,
            (0..per_thread).collect::<Vec<_>>(),
            "thread {t}'s order"
        );
    }
}

/// Publishing from async code on a single-thread runtime: a task publishes
/// through a small window with [`Publisher::publish_async`](bus_core::Publisher::publish_async)
/// and awaits every confirmation, another with
/// [`Bus::publish_async`]; every message is confirmed, delivered once,
/// and each task's messages arrive in its order.
pub fn async_publishing_confirms_every_message(ctx: &Ctx) {
    let (bus, seen) = recording_bus(ctx);
    let topic = ctx.topic("confirm");
    let publisher = bus.publisher_with(PublisherOptions::default().window(8));
    let per_task = 300_u32;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let windowed = async {
            let mut confirmations = Vec::new();
            for n in 0..per_task {
                let c = publisher
                    .publish_async(topic.as_str(), format!("0:{n}"))
                    .await
                    .unwrap_or_else(|e| panic!("publish 0:{n}: {e}"));
                confirmations.push(c);
            }
            for c in confirmations {
                c.wait_async()
                    .await
                    .unwrap_or_else(|e| panic!("confirm: {e}"));
            }
        };
        let direct = async {
            for n in 0..per_task {
                bus.publish_async(topic.as_str(), format!("1:{n}"))
                    .await
                    .unwrap_or_else(|e| panic!("publish 1:{n}: {e}"));
            }
        };
        tokio::join!(windowed, direct);
    });
    let total = u64::from(per_task * 2);
    let delivered = wait_until(ctx.patience, || bus.stats().acked == total);
    let report = bus.shutdown(ctx.patience);
    assert!(delivered, "all delivered: {:?}", report.stats);
    assert_invariant(&report.stats);
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    for t in 0..2 {
        let order: Vec<u32> = seen
            .iter()
            .filter(|(x, _)| *x == t)
            .map(|&(_, n)| n)
            .collect();
        assert_eq!(order, (0..per_task).collect::<Vec<_>>(), "task {t}'s order");
    }
}
