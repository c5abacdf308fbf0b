//! Idle workers sleep: no poll brings them back, so everything that must
//! wake one (a message, a due redelivery, a breaker's wait ending, a stop)
//! is tested with the poll interval set to an hour.

use bus_core::memory::MemoryTransport;
use bus_core::time::{Clock, ManualClock, SharedClock, Stamp};
use bus_core::{
    Bus, BusConfig, CircuitState, Envelope, Guard, GuardProvider, Message, Outcome, Permit,
    Rejected, SimpleRetry, SubscribeOptions, Topic, Transport, TransportError,
};
use bus_errors::ErrorCategory;
use bus_test::{FlakyHandler, Script, Step, assert_invariant, wait_until};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);
/// A bound for what must happen at once: generous, for a loaded machine.
const SOON: Duration = Duration::from_secs(10);

fn hour_poll() -> BusConfig {
    let mut config = BusConfig::default();
    config.poll_interval = HOUR;
    config
}

fn ok_handler(
    seen: &Arc<AtomicUsize>,
) -> impl Fn(&Message<'_>) -> Result<(), std::io::Error> + Send + Sync + use<> {
    let seen = Arc::clone(seen);
    move |_m: &Message<'_>| {
        seen.fetch_add(1, SeqCst);
        Ok(())
    }
}

/// Runs `f` on a thread and waits at most `SOON` for it; `None` if it is
/// still running then (it is left behind).
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(SOON).ok()
}

#[test]
fn a_message_published_to_a_sleeping_worker_is_handled_at_once() {
    let bus = Bus::builder().config(hour_poll()).build();
    let seen = Arc::new(AtomicUsize::new(0));
    bus.subscriber("s")
        .topic("t")
        .start(ok_handler(&seen))
        .unwrap();
    for n in 1..=3 {
        bus.publish("t", &b"x"[..]).unwrap();
        assert!(wait_until(SOON, || seen.load(SeqCst) == n), "message {n}");
    }
    let report = within(move || bus.shutdown(SOON)).expect("shutdown returned");
    assert!(report.drained);
    assert_invariant(&report.stats);
}

/// Shutdown wakes workers asleep waiting for a message: with an hour's
/// poll, a shutdown that waited for the poll took an hour.
#[test]
fn shutdown_wakes_sleeping_workers_at_once() {
    let bus = Bus::builder().config(hour_poll()).build();
    let seen = Arc::new(AtomicUsize::new(0));
    for name in ["a", "b"] {
        bus.subscriber(name)
            .topic("t")
            .workers(3)
            .start(ok_handler(&seen))
            .unwrap();
    }
    bus.publish("t", &b"x"[..]).unwrap();
    assert!(wait_until(SOON, || seen.load(SeqCst) == 2));
    let report = within(move || bus.shutdown(Duration::from_secs(1)))
        .expect("shutdown did not return within its bound");
    assert!(report.drained, "{report:?}");
    assert_eq!(report.stuck_workers, 0);
    assert_invariant(&report.stats);
}

/// Closing one subscriber wakes its sleeping workers, and only its own.
#[test]
fn closing_a_subscriber_wakes_its_sleeping_workers() {
    let bus = Bus::builder().config(hour_poll()).build();
    let seen = Arc::new(AtomicUsize::new(0));
    let first = bus
        .subscriber("a")
        .topic("t")
        .workers(2)
        .start(ok_handler(&seen))
        .unwrap();
    // A second member of the same group: it shares the queue (and its
    // wake-ups) and must keep taking messages.
    bus.subscriber("b")
        .group("a")
        .topic("t")
        .start(ok_handler(&seen))
        .unwrap();
    let left = within(move || first.close(SOON)).expect("close returned");
    assert_eq!(left, 0, "an idle worker stops at once");
    bus.publish("t", &b"x"[..]).unwrap();
    assert!(wait_until(SOON, || seen.load(SeqCst) == 1));
    let report = within(move || bus.shutdown(SOON)).expect("shutdown returned");
    assert_invariant(&report.stats);
}

/// A nak with a delay is redelivered when the (manual) clock reaches it.
#[test]
fn a_delayed_retry_reaches_a_sleeping_worker_when_due() {
    let clock = ManualClock::new();
    let bus = Bus::builder()
        .clock(Arc::new(clock.clone()))
        .recovery(Arc::new(SimpleRetry {
            max_retries: 1,
            delay: HOUR,
        }))
        .config(hour_poll())
        .build();
    let h = FlakyHandler::new(Script(vec![Step::Fail(ErrorCategory::Timeout), Step::Ok]));
    bus.subscriber("s").topic("t").start(h.clone()).unwrap();
    bus.publish("t", &b"x"[..]).unwrap();
    assert!(wait_until(SOON, || bus.stats().retried == 1));
    assert_eq!(bus.stats().acked, 0, "not before it is due");
    clock.advance(HOUR);
    assert!(
        wait_until(SOON, || bus.stats().acked == 1),
        "the retry was not delivered: {:?}",
        bus.stats()
    );
    let report = within(move || bus.shutdown(SOON)).expect("shutdown returned");
    assert!(report.drained);
    assert_invariant(&report.stats);
}

/// A guard open until a stamp on the bus's clock, as `bus-breaker` counts
/// its open state.
struct OpenUntil {
    clock: SharedClock,
    until: Stamp,
}

impl OpenUntil {
    fn for_(clock: &SharedClock, open: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock: Arc::clone(clock),
            until: clock.stamp() + open,
        })
    }
}

impl Guard for OpenUntil {
    fn try_acquire(&self) -> Result<Permit, Rejected> {
        let now = self.clock.stamp();
        if now < self.until {
            return Err(Rejected {
                state: CircuitState::Open,
                retry_after: self.until.saturating_since(now),
            });
        }
        Ok(Permit::new(0))
    }
    fn record(&self, _: Permit, _: Outcome) {}
}

struct One<G>(Arc<G>);
impl<G: Guard + 'static> GuardProvider for One<G> {
    fn guard(&self, _: &str) -> Arc<dyn Guard> {
        self.0.clone()
    }
}

/// A bus on `clock` whose subscriber `guard` keeps out: one message is
/// published and the worker has been refused once. Returns the bus and the
/// handler's call count.
fn parked_by(clock: SharedClock, guard: Arc<OpenUntil>) -> (Bus, Arc<AtomicUsize>) {
    let bus = Bus::builder()
        .clock(clock)
        .guards(Arc::new(One(guard)))
        .config(hour_poll())
        .build();
    let seen = Arc::new(AtomicUsize::new(0));
    let started = bus.subscriber("s").topic("t").start(ok_handler(&seen));
    assert!(started.is_ok(), "subscribe: {started:?}");
    assert!(bus.publish("t", &b"x"[..]).is_ok());
    assert!(wait_until(SOON, || bus.stats().parked >= 1));
    (bus, seen)
}

/// A worker parked by an open breaker sleeps for the breaker's
/// `retry_after` on the bus's clock, and resumes when that clock gets
/// there (not an hour of real time later).
#[test]
fn a_breaker_parked_worker_resumes_when_the_clock_reaches_retry_after() {
    let clock = ManualClock::new();
    let shared: SharedClock = Arc::new(clock.clone());
    let (bus, seen) = parked_by(
        Arc::clone(&shared),
        OpenUntil::for_(&shared, Duration::from_secs(30)),
    );
    // Woken by an advance that stops short of retry_after: it sleeps on.
    clock.advance(Duration::from_secs(10));
    clock.advance(Duration::from_secs(20));
    assert!(
        wait_until(SOON, || seen.load(SeqCst) == 1),
        "the parked message was not resumed"
    );
    let report = within(move || bus.shutdown(SOON)).expect("shutdown returned");
    assert!(report.drained);
    assert_invariant(&report.stats);
}

/// Shutdown also ends a breaker's pause (an hour on a clock nobody moves).
#[test]
fn shutdown_wakes_a_breaker_parked_worker() {
    let clock: SharedClock = Arc::new(ManualClock::new());
    let (bus, _seen) = parked_by(Arc::clone(&clock), OpenUntil::for_(&clock, HOUR));
    let report = within(move || bus.shutdown(Duration::from_millis(100)))
        .expect("shutdown did not return within its bound");
    assert_eq!(report.stuck_workers, 0);
    assert_eq!(report.dead_lettered_at_shutdown, 1, "{report:?}");
    assert_invariant(&report.stats);
}

/// A clock whose stamps run at half the rate of its instants: the system
/// clock's two forms drift apart the same way, only by parts per million.
#[derive(Debug)]
struct HalfRateStamps(ManualClock);

impl Clock for HalfRateStamps {
    fn now(&self) -> Instant {
        self.0.now()
    }
    fn stamp(&self) -> Stamp {
        let half = self.0.elapsed() / 2;
        Stamp::from_nanos(1 << 40) + half
    }
    fn park_until(&self, deadline: Instant) {
        self.0.park_until(deadline);
    }
}

/// A breaker's `retry_after` is a stamp interval, so the worker times its
/// pause by stamps: timed by instants, a pause on a clock whose two forms
/// drift ends before the breaker's deadline, and the worker is refused
/// again (one more `parked`, one more wait).
#[test]
fn a_breaker_pause_is_timed_by_the_stamps_the_breaker_counts_by() {
    let clock = Arc::new(HalfRateStamps(ManualClock::new()));
    let shared: SharedClock = Arc::clone(&clock) as _;
    let (bus, seen) = parked_by(
        Arc::clone(&shared),
        OpenUntil::for_(&shared, Duration::from_secs(30)),
    );
    // 30 s of instants is 15 s of stamps: the breaker is still open. A
    // pause timed by instants asks it again within microseconds of this
    // advance; 200 ms is ample to see that.
    clock.0.advance(Duration::from_secs(30));
    assert!(
        !wait_until(Duration::from_millis(200), || bus.stats().parked >= 2),
        "the worker left its pause before the breaker's deadline"
    );
    clock.0.advance(Duration::from_secs(30));
    assert!(
        wait_until(SOON, || seen.load(SeqCst) == 1),
        "the parked message was not resumed"
    );
    let report = within(move || bus.shutdown(SOON)).expect("shutdown returned");
    assert_eq!(report.stats.parked, 1);
    assert_invariant(&report.stats);
}

/// A guard that counts how often a worker asks it: once per fetch.
struct Counting(AtomicU64);
impl Guard for Counting {
    fn try_acquire(&self) -> Result<Permit, Rejected> {
        self.0.fetch_add(1, SeqCst);
        Ok(Permit::new(0))
    }
    fn record(&self, _: Permit, _: Outcome) {}
}

/// An idle worker of the memory transport does not poll, whatever the
/// poll interval: it asks its guard once per fetch, and an idle one stays
/// in a single fetch. (With a 1 ms poll, a polling worker asked about a
/// hundred times in the 200 ms watched here.)
#[test]
fn an_idle_worker_does_not_poll() {
    let guard = Arc::new(Counting(AtomicU64::new(0)));
    let mut config = BusConfig::default();
    config.poll_interval = Duration::from_millis(1);
    let bus = Bus::builder()
        .guards(Arc::new(One(Arc::clone(&guard))))
        .config(config)
        .build();
    let seen = Arc::new(AtomicUsize::new(0));
    bus.subscriber("s")
        .topic("t")
        .start(ok_handler(&seen))
        .unwrap();
    bus.publish("t", &b"x"[..]).unwrap();
    assert!(wait_until(SOON, || seen.load(SeqCst) == 1));
    // The fetch after the message; the worker sleeps in it from here on.
    assert!(wait_until(SOON, || guard.0.load(SeqCst) >= 2));
    let before = guard.0.load(SeqCst);
    // The idle wait has no timeout on any clock, so no clock can be moved
    // to show the absence of wake-ups: watch the worker for 200 polls'
    // worth of real time, and fail as soon as it asks its guard again.
    let woke = wait_until(Duration::from_millis(200), || {
        guard.0.load(SeqCst) != before
    });
    assert!(!woke, "the idle worker woke up");
    assert_eq!(guard.0.load(SeqCst), before);
    let report = within(move || bus.shutdown(SOON)).expect("shutdown returned");
    assert_invariant(&report.stats);
}

/// The wait/wake protocol under load: publishers in bursts, consumers
/// that wait without a timeout (so a lost wake-up would strand a message
/// for good), and spurious wake-ups fired at them throughout. Every
/// message is delivered exactly once.
#[test]
fn parked_consumers_never_strand_a_message() {
    const PUBLISHERS: u64 = 4;
    const CONSUMERS: usize = 4;
    const EACH: u64 = 5_000;
    let transport = Arc::new(MemoryTransport::new());
    let topic = Topic::new("t").unwrap();
    let options = SubscribeOptions::group("g").with_capacity(64);
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut wakers = Vec::new();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let mut sub = transport.subscribe(&topic, &options).unwrap();
            wakers.push(sub.waker().expect("memory subscriptions can be woken"));
            let got = Arc::clone(&got);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    match sub.next(Duration::MAX) {
                        Ok(Some(d)) => {
                            mine.push(u64::from_le_bytes(
                                d.envelope().payload[..8].try_into().unwrap(),
                            ));
                            d.ack();
                        }
                        Ok(None) => {} // a wake-up
                        Err(TransportError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                got.lock().unwrap().extend(mine);
            })
        })
        .collect();
    let wakers = Arc::new(wakers);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (transport, topic) = (Arc::clone(&transport), topic.clone());
            let wakers = Arc::clone(&wakers);
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let n = p * EACH + i;
                    let env = Envelope::new(topic.clone(), n.to_le_bytes().to_vec());
                    transport.publish(env, SOON).unwrap();
                    // A spurious wake-up for some consumer now and then,
                    // racing the real ones.
                    if fastrand::u8(..) < 64 {
                        wakers[fastrand::usize(..wakers.len())].wake();
                    }
                    // Bursts of a few messages, then a pause that lets the
                    // consumers empty the queue and go back to sleep.
                    if fastrand::u8(..) < 16 {
                        for _ in 0..fastrand::u32(0..64) {
                            std::thread::yield_now();
                        }
                    }
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let total = usize::try_from(PUBLISHERS * EACH).unwrap();
    let delivered = || {
        transport
            .queue_depths()
            .iter()
            .map(|q| q.depth)
            .sum::<usize>()
            == 0
    };
    assert!(
        wait_until(SOON, delivered),
        "messages left waiting in the queue: {:?}",
        transport.queue_depths()
    );
    assert!(transport.close().is_empty());
    for c in consumers {
        c.join().unwrap();
    }
    let mut got = std::mem::take(&mut *got.lock().unwrap());
    got.sort_unstable();
    assert_eq!(got.len(), total, "each message once");
    assert!(got.iter().copied().eq(0..PUBLISHERS * EACH));
}

/// A manual clock wakes a thread waiting on it when it is advanced.
#[test]
fn a_manual_clock_wakes_its_sleepers_when_advanced() {
    let clock = ManualClock::new();
    let deadline = clock.now() + HOUR;
    let sleeper = {
        let clock = clock.clone();
        std::thread::spawn(move || {
            while clock.now() < deadline {
                clock.park_until(deadline);
            }
        })
    };
    clock.advance(HOUR);
    assert!(wait_until(SOON, || sleeper.is_finished()));
    sleeper.join().unwrap();
}
