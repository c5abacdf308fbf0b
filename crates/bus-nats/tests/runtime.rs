//! The transport on the application's tokio runtime: no runtime of its own,
//! async subscribers polling it from tasks (no runner thread), and
//! `publish_async` handing over from tasks, on a current-thread runtime as
//! on a multi-thread one.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::Bus;
use bus_core::runtime::OwnedMessage;
use bus_nats::NatsTransport;
use bus_test::{assert_invariant, wait_until};
use common::{T, config, nats_available, next_run_acks};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::Notify;

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// What a counting handler shares with its test.
struct Count {
    calls: Arc<AtomicUsize>,
    /// Signalled at the `n`th call.
    done: Arc<Notify>,
}

/// A handler that counts its calls and signals at the `n`th.
fn counting(
    n: usize,
) -> (
    Count,
    impl Fn(OwnedMessage) -> std::future::Ready<Result<(), std::io::Error>> + Send + Sync + 'static,
) {
    let count = Count {
        calls: Arc::new(AtomicUsize::new(0)),
        done: Arc::new(Notify::new()),
    };
    let (c, d) = (Arc::clone(&count.calls), Arc::clone(&count.done));
    let handler = move |_m: OwnedMessage| {
        if c.fetch_add(1, Ordering::SeqCst) + 1 == n {
            // Stored when nobody waits yet: the waiter cannot miss it.
            d.notify_one();
        }
        std::future::ready(Ok(()))
    };
    (count, handler)
}

#[test]
fn async_subscriber_on_a_current_thread_runtime_runs_on_it_alone() {
    if !nats_available(module_path!()) {
        return;
    }
    const N: usize = 300;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (report, gaps, runner_threads) = rt.block_on(async {
        let nats = NatsTransport::connect_async(config()).await.unwrap();
        assert!(!nats.owns_runtime(), "the transport made a runtime");
        let bus = Bus::builder().transport(Arc::new(nats.clone())).build();
        let (count, handler) = counting(N);
        // Subscribing waits for the server: off the thread driving the
        // runtime, which keeps running the client meanwhile.
        let (b, handle) = (bus.clone(), Handle::current());
        tokio::task::spawn_blocking(move || {
            b.subscriber("curt")
                .topic("rt.current")
                .runtime(handle)
                .start_async(handler)
        })
        .await
        .unwrap()
        .unwrap();
        let runner_threads = thread_names()
            .into_iter()
            .filter(|n| n.starts_with("bus-curt"))
            .count();
        // A 1 ms ticker on the same runtime: neither the client, nor the
        // runner, nor the publishes may stall it.
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = Arc::clone(&stop);
        let ticker = tokio::spawn(bus_test::ticker::tick_until(ticking));
        for i in 0..N {
            bus.publish_async("rt.current", format!("{i}").into_bytes())
                .await
                .unwrap();
        }
        count.done.notified().await;
        stop.store(true, Ordering::Release);
        let gaps = ticker.await.unwrap();
        let report = bus.shutdown_async(T).await;
        tokio::task::spawn_blocking(move || nats.delete_streams())
            .await
            .unwrap()
            .unwrap();
        (report, gaps, runner_threads)
    });
    assert_eq!(runner_threads, 0, "the async runner took a thread");
    assert!(report.drained, "{report:?}");
    let s = report.stats;
    assert_invariant(&s);
    assert_eq!(
        (s.published, s.acked, s.pending),
        (N as u64, N as u64, 0),
        "{s:?}"
    );
    // Net of the time the OS kept the runtime's thread off a core: see
    // bus_test::ticker.
    let worst = bus_test::ticker::worst(&gaps);
    assert!(
        worst.stalled() <= Duration::from_millis(20),
        "a 1 ms ticker on the runtime waited {:?}, {:?} of it for a core, over {} ticks",
        worst.wall,
        worst.preempted,
        gaps.len()
    );
}

#[test]
fn async_subscriber_and_publish_async_on_the_applications_runtime_keep_the_invariant() {
    if !nats_available(module_path!()) {
        return;
    }
    const TASKS: usize = 4;
    const EACH: usize = 250;
    const N: usize = TASKS * EACH;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Connected from a plain thread, on the application's runtime.
    let nats = NatsTransport::connect(config().with_runtime(rt.handle().clone())).unwrap();
    assert!(!nats.owns_runtime(), "the transport made a runtime");
    let bus = Bus::builder().transport(Arc::new(nats.clone())).build();
    let (count, handler) = counting(N);
    bus.subscriber("multi")
        .topic("rt.multi")
        .workers(2)
        .runtime(rt.handle().clone())
        .start_async(handler)
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    bus.publish_async("rt.multi", format!("{t}-{i}").into_bytes())
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        count.done.notified().await;
    });
    let report = bus.shutdown(T);
    assert!(report.drained, "{report:?}");
    let s = report.stats;
    assert_invariant(&s);
    assert_eq!(
        (s.published, s.acked, s.dead_lettered, s.pending),
        (N as u64, N as u64, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        count.calls.load(Ordering::SeqCst),
        N,
        "each message handled once"
    );
    nats.delete_streams().unwrap();
}

#[test]
fn shutdown_deadline_on_the_applications_runtime_leaves_stuck_calls_pending() {
    if !nats_available(module_path!()) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = config()
        .with_ack_wait(Duration::from_secs(2))
        .with_runtime(rt.handle().clone());
    let nats = NatsTransport::connect(cfg.clone()).unwrap();
    let bus = Bus::builder().transport(Arc::new(nats.clone())).build();
    let started = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&started);
    bus.subscriber("stuck")
        .topic("rt.stuck")
        .runtime(rt.handle().clone())
        .in_flight(4)
        .start_async(move |_m: OwnedMessage| {
            seen.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), std::io::Error>>()
        })
        .unwrap();
    rt.block_on(async {
        for i in 0..10 {
            bus.publish_async("rt.stuck", format!("{i}").into_bytes())
                .await
                .unwrap();
        }
    });
    assert!(wait_until(T, || started.load(Ordering::SeqCst) == 4));
    let begun = Instant::now();
    let report = bus.shutdown(Duration::from_millis(200));
    let took = begun.elapsed();
    let s = report.stats;
    assert_eq!(report.stuck_workers, 0, "{report:?}");
    assert_invariant(&s);
    assert_eq!((s.published, s.acked, s.dead_lettered), (10, 0, 0), "{s:?}");
    assert_eq!(s.pending, 10, "the broker keeps every unsettled message");
    assert!(took < T, "shutdown took {took:?} past a 200 ms deadline");

    // The next run, on a runtime of its own, gets all ten.
    let mut own = cfg;
    own.runtime = None;
    next_run_acks(own, "rt.stuck", "stuck", 10);
    nats.delete_streams().unwrap();
}

#[test]
fn a_blocking_call_on_the_thread_driving_a_current_thread_runtime_fails_at_once() {
    if !nats_available(module_path!()) {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nats = NatsTransport::connect_async(config()).await.unwrap();
        let begun = Instant::now();
        let err = nats.owed(&bus_core::Topic::new("rt.block").unwrap(), "g");
        assert!(
            matches!(&err, Err(bus_core::TransportError::Other(e))
                if matches!(e.downcast_ref::<bus_nats::NatsError>(), Some(bus_nats::NatsError::WouldBlock))),
            "{err:?}"
        );
        assert!(begun.elapsed() < T, "it waited instead of refusing");
        // The same call from the runtime's blocking pool waits for the
        // runtime, which this thread keeps running.
        let owed = tokio::task::spawn_blocking(move || {
            nats.owed(&bus_core::Topic::new("rt.block").unwrap(), "g")
        })
        .await
        .unwrap();
        assert_eq!(owed.unwrap(), 0);
    });
}
