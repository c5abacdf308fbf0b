//! Async subscribers over NATS: calls still running at the shutdown's
//! deadline are cancelled and, on this durable transport, their messages
//! stay in the broker (counted pending), owed to the next run; none is
//! lost.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::Bus;
use bus_core::runtime::OwnedMessage;
use bus_test::{assert_invariant, wait_until};
use common::{T, TestNats, config, nats_available, next_run_acks};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn calls_cancelled_at_shutdown_leave_their_messages_pending_in_the_broker() {
    if !nats_available(module_path!()) {
        return;
    }
    let t = TestNats::new(config().with_ack_wait(Duration::from_secs(2)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let bus = Bus::builder().transport(Arc::new(t.nats.clone())).build();
    let started = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&started);
    bus.subscriber("stuck")
        .topic("async.pending")
        .runtime(rt.handle().clone())
        .in_flight(4)
        .start_async(move |_m: OwnedMessage| {
            seen.fetch_add(1, Ordering::SeqCst);
            async {
                std::future::pending::<()>().await;
                Ok::<(), std::io::Error>(())
            }
        })
        .unwrap();
    for i in 0..10 {
        bus.publish("async.pending", format!("{i}").into_bytes())
            .unwrap();
    }
    assert!(wait_until(T, || started.load(Ordering::SeqCst) == 4));
    let report = bus.shutdown(Duration::from_millis(200));
    let s = report.stats;
    assert_eq!(report.stuck_workers, 0, "{report:?}");
    assert_invariant(&s);
    assert_eq!((s.published, s.acked, s.dead_lettered), (10, 0, 0), "{s:?}");
    assert_eq!(s.pending, 10, "the broker keeps every unsettled message");

    // The next run gets all ten, the cancelled four included.
    next_run_acks(t.nats.config().clone(), "async.pending", "stuck", 10);
}
