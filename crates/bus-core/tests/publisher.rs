//! The bus's pipelined [`Publisher`] over a transport that holds every send
//! until the test answers it, as a broker holds its confirmations: windows,
//! refusals in a batch, dropped confirmations, and a transport that never
//! answers.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_core::memory::MemoryTransport;
use bus_core::{
    Bus, Confirm, Envelope, Message, PublishError, PublisherOptions, QueueDepth, Receipt, Route,
    SubscribeOptions, Subscription, Topic, Transport, TransportError, WhenFull,
};
use bus_test::wait_until;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A send the transport took and has not answered.
type Held = (Envelope, Confirm);

/// The memory transport behind a hold: `send` keeps the message and its
/// confirm until [`answer`](Self::answer) publishes it (or refuses it, for
/// a payload that says `refuse`).
#[derive(Default)]
struct Holding {
    inner: MemoryTransport,
    held: Mutex<Vec<Held>>,
}

impl Holding {
    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Answers the oldest `n` sends, in order.
    fn answer(&self, n: usize) {
        let taken: Vec<Held> = {
            let mut held = self.held.lock().unwrap();
            let n = n.min(held.len());
            held.drain(..n).collect()
        };
        for (env, confirm) in taken {
            if &env.payload[..] == b"refuse" {
                confirm.resolve(Err(PublishError::Transport {
                    envelope: env,
                    source: TransportError::Other("the broker said no".into()),
                }));
            } else {
                confirm.resolve(self.inner.publish(env, Duration::from_secs(1)));
            }
        }
    }

    /// Drops the oldest send's confirm without answering it.
    fn forget_one(&self) {
        let (_env, confirm) = self.held.lock().unwrap().remove(0);
        drop(confirm);
    }
}

impl Transport for Holding {
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError> {
        self.inner.publish(envelope, timeout)
    }
    fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        self.inner.publish_to_group(group, envelope, timeout)
    }
    fn send(&self, envelope: Envelope, route: Route<'_>, _timeout: Duration, confirm: Confirm) {
        assert_eq!(route, Route::Topic);
        self.held.lock().unwrap().push((envelope, confirm));
    }
    fn subscribe(
        &self,
        topic: &Topic,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        self.inner.subscribe(topic, options)
    }
    fn queue_depths(&self) -> Vec<QueueDepth> {
        self.inner.queue_depths()
    }
    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        self.inner.close()
    }
}

fn bus() -> (Bus, Arc<Holding>) {
    let transport = Arc::new(Holding::default());
    let bus = Bus::builder()
        .transport(Arc::clone(&transport) as Arc<dyn Transport>)
        .build();
    bus.subscriber("billing")
        .topic("orders")
        .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
        .unwrap();
    (bus, transport)
}

#[test]
fn a_full_window_refuses_with_the_message_when_told_to() {
    let (bus, transport) = bus();
    let publisher = bus.publisher_with(
        PublisherOptions::default()
            .window(2)
            .when_full(WhenFull::Refuse),
    );
    let a = publisher.publish("orders", "a").unwrap();
    let b = publisher.publish("orders", "b").unwrap();
    assert_eq!(publisher.in_flight(), 2);
    let err = publisher.publish("orders", "c").unwrap_err();
    assert!(
        matches!(err, PublishError::WindowFull { window: 2, .. }),
        "{err:?}"
    );
    assert_eq!(&err.into_payload()[..], b"c");
    assert!(!a.is_settled());
    transport.answer(2);
    assert!(a.wait().is_ok() && b.wait().is_ok());
    assert_eq!(publisher.in_flight(), 0);
    let report = bus.shutdown(Duration::from_secs(5));
    let s = report.stats;
    assert_eq!((s.published, s.accepted, s.rejected_at_publish), (3, 2, 1));
    assert!(s.invariant_holds(), "{s:?}");
}

#[test]
fn a_full_window_blocks_until_a_confirmation_frees_a_place() {
    let (bus, transport) = bus();
    let publisher = bus.publisher_with(PublisherOptions::default().window(2));
    let first = publisher.publish("orders", "a").unwrap();
    let _second = publisher.publish("orders", "b").unwrap();
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let third = std::thread::scope(|scope| {
        let (transport, answered) = (Arc::clone(&transport), Arc::clone(&answered));
        scope.spawn(move || {
            // The third publish is waiting for a place: its send has not
            // reached the transport while two are held.
            assert!(wait_until(Duration::from_secs(5), || transport.held() == 2));
            answered.store(true, std::sync::atomic::Ordering::SeqCst);
            transport.answer(1);
        });
        publisher.publish("orders", "c").unwrap()
    });
    assert!(
        answered.load(std::sync::atomic::Ordering::SeqCst),
        "the third publish returned before a place was freed"
    );
    assert!(first.wait().is_ok());
    transport.answer(2);
    assert!(third.wait().is_ok());
    assert!(publisher.flush(Duration::from_secs(5)).unwrap().is_empty());
    assert!(bus.shutdown(Duration::from_secs(5)).stats.invariant_holds());
}

#[test]
fn a_batch_hands_back_exactly_the_items_the_broker_refused() {
    let (bus, transport) = bus();
    let publisher = bus.publisher();
    let items: Vec<(&str, &str)> = vec![
        ("orders", "1"),
        ("orders", "refuse"),
        ("orders", "3"),
        ("orders", "4"),
        ("orders", "refuse"),
        ("orders", "6"),
    ];
    let outcomes = std::thread::scope(|scope| {
        let transport = Arc::clone(&transport);
        scope.spawn(move || {
            assert!(wait_until(Duration::from_secs(5), || transport.held() == 6));
            transport.answer(6);
        });
        publisher.publish_batch(items)
    });
    let refused: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refused, vec![1, 4]);
    for o in outcomes.into_iter().filter(Result::is_err) {
        let e = o.unwrap_err();
        assert!(matches!(e, PublishError::Transport { .. }), "{e:?}");
        assert_eq!(&e.into_payload()[..], b"refuse");
    }
    assert!(wait_until(Duration::from_secs(5), || bus.stats().acked == 4));
    let s = bus.shutdown(Duration::from_secs(5)).stats;
    assert_eq!((s.published, s.acked, s.rejected_at_publish), (6, 4, 2));
    assert!(s.invariant_holds(), "{s:?}");
}

#[test]
fn a_refusal_whose_confirmation_was_dropped_comes_back_from_flush() {
    let (bus, transport) = bus();
    let publisher = bus.publisher();
    drop(publisher.publish("orders", "refuse").unwrap());
    drop(publisher.publish("orders", "fine").unwrap());
    assert!(
        publisher.flush(Duration::from_millis(1)).is_err(),
        "two in flight"
    );
    transport.answer(2);
    let unclaimed = publisher.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(unclaimed.len(), 1);
    assert_eq!(
        &unclaimed.into_iter().next().unwrap().into_payload()[..],
        b"refuse"
    );
    assert!(
        publisher.flush(Duration::from_secs(5)).unwrap().is_empty(),
        "handed over once"
    );
    bus.shutdown(Duration::from_secs(5));
}

#[test]
fn a_confirm_the_transport_drops_is_reported_and_counted() {
    let (bus, transport) = bus();
    let publisher = bus.publisher();
    let c = publisher.publish("orders", "lost").unwrap();
    let id = c.id();
    transport.forget_one();
    match c.wait() {
        Err(PublishError::Unanswered { id: got }) => assert_eq!(got, id),
        other => panic!("{other:?}"),
    }
    let s = bus.shutdown(Duration::from_secs(5)).stats;
    assert_eq!((s.published, s.rejected_at_publish), (1, 1));
}

#[test]
fn shutdown_waits_for_confirmations_in_flight() {
    let (bus, transport) = bus();
    let publisher = bus.publisher();
    let c = publisher.publish("orders", "late").unwrap();
    let report = std::thread::scope(|scope| {
        let transport = Arc::clone(&transport);
        let stopping = scope.spawn(|| bus.shutdown(Duration::from_secs(10)));
        // Shutdown is draining: publishes are refused from now on, and the
        // one in flight is still owed an answer.
        assert!(wait_until(Duration::from_secs(5), || {
            let refused = publisher.publish("orders", "after");
            matches!(refused, Err(PublishError::Closed { .. }))
        }));
        // The first, and any sent before the drain began.
        transport.answer(usize::MAX);
        stopping.join().unwrap()
    });
    assert!(c.wait().is_ok());
    assert!(report.drained, "{report:?}");
    let s = report.stats;
    assert!(
        s.acked >= 1,
        "answered, then delivered before the stop: {s:?}"
    );
    assert_eq!(s.acked, s.accepted, "{s:?}");
    assert!(report.stats.invariant_holds(), "{:?}", report.stats);
}
