//! Async subscribers: the same pipeline and ledger as thread workers, an
//! in-flight limit instead of threads, panics and deadlines caught,
//! cancellation that gives back what it held.

use bus_core::runtime::OwnedMessage;
use bus_core::{
    Bus, CircuitState, DeadLetterReason, Guard, GuardProvider, MemoryDeadLetters, Outcome, Permit,
    Rejected, SimpleRetry,
};
use bus_errors::ErrorCategory;
use bus_test::ticker::{tick_until, worst};
use bus_test::{assert_invariant, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A guard that permits everything and counts what it lent and got back:
/// a permit never handed back would be a half-open probe slot leaked.
#[derive(Default)]
struct Ledger {
    lent: AtomicU64,
    returned: AtomicU64,
    ignored: AtomicU64,
}

impl Guard for Ledger {
    fn try_acquire(&self) -> Result<Permit, Rejected> {
        self.lent.fetch_add(1, Ordering::SeqCst);
        Ok(Permit::new(1))
    }
    fn record(&self, _permit: Permit, outcome: Outcome) {
        if outcome == Outcome::Ignored {
            self.ignored.fetch_add(1, Ordering::SeqCst);
        }
        self.returned.fetch_add(1, Ordering::SeqCst);
    }
    fn state(&self) -> CircuitState {
        CircuitState::Closed
    }
}

struct Lender(Arc<Ledger>);

impl GuardProvider for Lender {
    fn guard(&self, _component: &str) -> Arc<dyn Guard> {
        Arc::clone(&self.0) as Arc<dyn Guard>
    }
}

/// Counts calls in flight (a cancelled call too, when its future drops)
/// and keeps the most seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

struct InCall(Arc<Gauge>);

impl Gauge {
    fn enter(self: &Arc<Self>) -> InCall {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        InCall(Arc::clone(self))
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Sleep(u64),
    FailOnce,
    Poison,
    Hang,
    Panic,
}

/// The fate of the `i`th message: mostly short sleeps, some failures that
/// recover, some poison, some calls that outlive their deadline, some
/// panics.
fn fate(i: u64) -> Fate {
    match i % 100 {
        0..=2 => Fate::FailOnce,
        3 => Fate::Poison,
        4 => Fate::Hang,
        5 => Fate::Panic,
        n => Fate::Sleep(n % 4),
    }
}

/// The default panic hook prints (with `RUST_BACKTRACE`, symbolizes a
/// backtrace for) every injected panic on the thread that panicked: the
/// runtime's, which would stall for that, not for the bus. Other panics
/// still print.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("handler bug"));
            if !injected {
                default(info);
            }
        }));
    });
}

#[test]
fn ten_thousand_async_calls_keep_the_ledger_the_limit_and_the_runtime_responsive() {
    const N: u64 = 10_000;
    quiet_injected_panics();
    const LIMIT: usize = 48;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let guard = Arc::new(Ledger::default());
    let dlq = MemoryDeadLetters::new();
    let bus = Bus::builder()
        .recovery(Arc::new(SimpleRetry {
            max_retries: 2,
            delay: Duration::from_millis(1),
        }))
        .guards(Arc::new(Lender(Arc::clone(&guard))))
        .dead_letters(Arc::new(dlq.clone()))
        .build();
    let gauge = Arc::new(Gauge::default());
    let g = Arc::clone(&gauge);
    bus.subscriber("svc")
        .topic("work")
        .capacity(2 * N as usize)
        .runtime(rt.handle().clone())
        .in_flight(LIMIT)
        .handler_timeout(Duration::from_millis(30))
        .start_async(move |msg: OwnedMessage| {
            let g = Arc::clone(&g);
            async move {
                let _in = g.enter();
                let i: u64 = std::str::from_utf8(&msg.payload)?.parse()?;
                match fate(i) {
                    Fate::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    Fate::FailOnce if msg.attempt == 1 => {
                        return Err(std::io::Error::other("flaky dependency").into());
                    }
                    Fate::FailOnce => {}
                    Fate::Poison => return Err(std::io::Error::other("poison").into()),
                    Fate::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                    Fate::Panic => panic!("handler bug on {i}"),
                }
                Ok::<(), bus_errors::HandlerError>(())
            }
        })
        .unwrap();

    let publisher = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                bus.publish("work", i.to_string().into_bytes()).unwrap();
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    // A 1 ms ticker on the same current-thread runtime: the calls must not
    // starve it. Each gap is judged without the time the OS kept the
    // runtime's thread waiting for a core (see `runqueue_wait`): a loaded
    // machine's scheduler may hold any thread back for tens of
    // milliseconds, while a call that blocks the runtime or a runtime the
    // calls starve shows as sleeping or running time of the thread itself.
    let gaps = rt.block_on(async {
        let ticker = tokio::spawn(tick_until(Arc::clone(&stop)));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = bus.stats();
            if s.acked + s.dead_lettered >= N || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::SeqCst);
        ticker.await.unwrap()
    });
    publisher.join().unwrap();

    let report = rt.block_on(bus.shutdown_async(Duration::from_secs(10)));
    let s = report.stats;
    assert!(report.drained, "{report:?}");
    assert_invariant(&s);
    let count = |f: fn(Fate) -> bool| (0..N).filter(|i| f(fate(*i))).count() as u64;
    let doomed = count(|f| matches!(f, Fate::Poison | Fate::Hang | Fate::Panic));
    assert_eq!(s.published, N);
    assert_eq!(s.dead_lettered, doomed, "{s:?}");
    assert_eq!(s.acked, N - doomed, "{s:?}");
    let letters = dlq.letters();
    let timeouts = letters
        .iter()
        .filter(|l| l.report.category == ErrorCategory::Timeout)
        .count() as u64;
    assert_eq!(
        timeouts,
        count(|f| f == Fate::Hang),
        "deadlines are TIMEOUTs"
    );
    let panics = letters
        .iter()
        .filter(|l| l.report.error_type.contains("Panic"))
        .count() as u64;
    assert_eq!(panics, count(|f| f == Fate::Panic), "panics are caught");
    assert_eq!(s.panics, 3 * panics, "each panicking attempt counted");
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(max <= LIMIT, "{max} calls in flight, limit {LIMIT}");
    assert!(max > 1, "calls ran concurrently ({max} at most)");
    assert_eq!(
        guard.lent.load(Ordering::SeqCst),
        guard.returned.load(Ordering::SeqCst),
        "every permit handed back"
    );
    assert!(gaps.len() > 100, "the ticker ran ({} ticks)", gaps.len());
    let worst = worst(&gaps);
    assert!(
        worst.stalled() <= Duration::from_millis(20),
        "a 1 ms ticker on the runtime waited {:?}, {:?} of it for a core, over {} ticks",
        worst.wall,
        worst.preempted,
        gaps.len()
    );
}

/// The ticker's measure is not blind: a task that blocks the runtime's
/// thread shows as a stall however loaded the machine is.
#[test]
fn a_call_that_blocks_the_runtime_shows_as_a_stall_of_the_ticker() {
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let gaps = rt.block_on(async {
        let ticker = tokio::spawn(tick_until(Arc::clone(&stop)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // What a synchronous call inside an async handler does.
        tokio::spawn(async { std::thread::sleep(Duration::from_millis(80)) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, Ordering::SeqCst);
        ticker.await.unwrap()
    });
    let worst = worst(&gaps).stalled();
    assert!(
        worst >= Duration::from_millis(60),
        "an 80 ms block on the runtime showed as a stall of {worst:?}"
    );
}

#[test]
fn shutdown_cancels_calls_that_never_finish_and_dead_letters_them() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let guard = Arc::new(Ledger::default());
    let dlq = MemoryDeadLetters::new();
    let bus = Bus::builder()
        .guards(Arc::new(Lender(Arc::clone(&guard))))
        .dead_letters(Arc::new(dlq.clone()))
        .build();
    let gauge = Arc::new(Gauge::default());
    let g = Arc::clone(&gauge);
    bus.subscriber("stuck")
        .topic("forever")
        .runtime(rt.handle().clone())
        .in_flight(8)
        .start_async(move |_msg: OwnedMessage| {
            let g = Arc::clone(&g);
            async move {
                let _in = g.enter();
                std::future::pending::<()>().await;
                Ok::<(), std::io::Error>(())
            }
        })
        .unwrap();
    for i in 0..40 {
        bus.publish("forever", format!("{i}").into_bytes()).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || gauge
        .now
        .load(Ordering::SeqCst)
        == 8));
    let report = bus.shutdown(Duration::from_millis(100));
    let s = report.stats;
    assert_eq!(report.stuck_workers, 0, "{report:?}");
    assert!(!report.drained, "the calls never finished");
    assert_invariant(&s);
    assert_eq!(
        (s.published, s.acked, s.dead_lettered),
        (40, 0, 40),
        "{s:?}"
    );
    let letters = dlq.letters();
    assert_eq!(letters.len(), 40);
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::Shutdown)
    );
    assert_eq!(gauge.now.load(Ordering::SeqCst), 0, "every future dropped");
    assert_eq!(
        guard.lent.load(Ordering::SeqCst),
        guard.returned.load(Ordering::SeqCst),
        "cancelled calls hand their permits back"
    );
    assert!(guard.ignored.load(Ordering::SeqCst) >= 8);
}

#[test]
fn an_owned_runtime_runs_calls_when_none_is_given() {
    let bus = Bus::builder().build();
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&seen);
    bus.subscriber("own")
        .topic("t")
        .start_async(move |_m: OwnedMessage| {
            let s2 = Arc::clone(&s2);
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                s2.fetch_add(1, Ordering::SeqCst);
                Ok::<(), std::io::Error>(())
            }
        })
        .unwrap();
    for i in 0..100 {
        bus.publish("t", format!("{i}").into_bytes()).unwrap();
    }
    let report = bus.shutdown(Duration::from_secs(10));
    assert!(report.drained, "{report:?}");
    assert_eq!(report.stats.acked, 100);
    assert_eq!(seen.load(Ordering::SeqCst), 100);
}

#[test]
fn publish_async_awaits_room_without_blocking_the_runtime_it_runs_on() {
    // One thread runs both the publisher and the consumer's calls: a
    // publish that blocked it while the queue is full would starve the
    // consumer and time out.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let bus = Bus::builder().build();
    bus.subscriber("slow")
        .topic("t")
        .capacity(4)
        .overflow(bus_core::OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .runtime(rt.handle().clone())
        .in_flight(2)
        .start_async(|_m: OwnedMessage| async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let publisher = bus.publisher_with(bus_core::PublisherOptions::default().window(4));
    let published = rt.block_on(async {
        let mut ok = 0;
        for i in 0..100 {
            bus.publish_async("t", format!("{i}").into_bytes())
                .await
                .unwrap();
            ok += 1;
        }
        // Through a publisher: the window and the queue both fill.
        let mut confirmations = Vec::new();
        for i in 100..200 {
            let c = publisher.publish_async("t", format!("{i}")).await.unwrap();
            confirmations.push(c);
        }
        for c in confirmations {
            c.wait_async().await.unwrap();
            ok += 1;
        }
        ok
    });
    assert_eq!(published, 200);
    let report = rt.block_on(bus.shutdown_async(Duration::from_secs(10)));
    assert!(report.drained, "{report:?}");
    assert_eq!(report.stats.acked, 200);
}

#[test]
fn publish_async_refuses_at_once_where_the_overflow_policy_rejects() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let bus = Bus::builder().build();
    let (release, gate) = tokio::sync::watch::channel(false);
    bus.subscriber("stalled")
        .topic("t")
        .capacity(1)
        .overflow(bus_core::OverflowPolicy::Reject)
        .in_flight(1)
        .start_async(move |_m: OwnedMessage| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok::<(), std::io::Error>(())
            }
        })
        .unwrap();
    let refused = rt.block_on(async {
        let started = Instant::now();
        for i in 0..100 {
            if let Err(e) = bus.publish_async("t", format!("{i}").into_bytes()).await {
                assert!(matches!(e, bus_core::PublishError::QueueFull { .. }));
                return Some(started.elapsed());
            }
        }
        None
    });
    let waited = refused.expect("a full queue under Reject refuses");
    assert!(waited < Duration::from_secs(1), "refused after {waited:?}");
    release.send_replace(true);
    let report = bus.shutdown(Duration::from_secs(10));
    assert_invariant(&report.stats);
    assert_eq!(report.stats.rejected_at_publish, 1);
}
