//! Time as a dependency: every component that waits or measures takes a
//! [`Clock`], so tests drive time with a [`ManualClock`] instead of sleeping.
//!
//! A clock answers in two forms. [`Instant`] is for deadlines and waits.
//! [`Stamp`], plain nanoseconds, is what the delivery pipeline stamps its
//! events with and what windows and budgets count by: std's `Instant` is
//! opaque, and turning one into a number on every message (health, the
//! retry budget and the handler timing each need one) costs more than
//! reading the clock as a number once.
//!
//! The system clock reads its stamps from the CPU's counter (through
//! `quanta`, which calibrates it against the monotonic clock once and falls
//! back to that clock where the counter is not invariant). Two stamps a
//! delivery takes cost about 9 ns each instead of 20, and, unlike the
//! kernel's clock read, the counter read does not wait for the instructions
//! before it to finish: on the memory transport's fan-out (four consumers
//! sharing two cores) that was worth 11-16 % of the throughput. Stamps
//! therefore measure durations by the counter: they drift from instants by
//! the calibration's error (parts per million at most; 0.2 measured on the
//! EPYC host) and by NTP's slewing, which the counter does not follow. So
//! stamps are compared only with stamps of the same clock, and a wait a
//! stamp interval decides (a breaker's `retry_after`) is timed by stamps
//! too (`Pipeline::pause`).

use std::fmt::Debug;
use std::ops::Add;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// A source of monotonic time.
pub trait Clock: Send + Sync + Debug {
    /// The current instant.
    fn now(&self) -> Instant;

    /// The current time as a [`Stamp`]. The default converts `now()`, so
    /// the two forms share one time line; a clock that can read nanoseconds
    /// more cheaply overrides it, and its stamps then share an origin with
    /// `now()` but may drift from it by the difference of the two sources'
    /// rates ([`SystemClock`]).
    fn stamp(&self) -> Stamp {
        Stamp::of(self.now())
    }

    /// Blocks the calling thread until `deadline` on this clock, or less:
    /// it may return early (when the thread is unparked, or spuriously), so
    /// callers re-check their condition and the time in a loop. The default
    /// sleeps on the real time line; a clock whose time moves by hand
    /// ([`ManualClock`]) wakes its sleepers whenever it moves.
    fn park_until(&self, deadline: Instant) {
        std::thread::park_timeout(deadline.saturating_duration_since(self.now()));
    }
}

impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn stamp(&self) -> Stamp {
        (**self).stamp()
    }

    fn park_until(&self, deadline: Instant) {
        (**self).park_until(deadline);
    }
}

impl<T: Clock + ?Sized> Clock for &T {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn stamp(&self) -> Stamp {
        (**self).stamp()
    }

    fn park_until(&self, deadline: Instant) {
        (**self).park_until(deadline);
    }
}

/// A reading of a [`Clock`] in nanoseconds. Only differences between stamps
/// of the same clock mean anything (the origin is arbitrary).
///
/// ```
/// use bus_core::time::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let t0 = clock.stamp();
/// clock.advance(Duration::from_millis(3));
/// assert_eq!(clock.stamp().saturating_since(t0), Duration::from_millis(3));
/// assert_eq!(clock.stamp().nanos_since(t0), 3_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp(u64);

/// The instant stamps count from, read once per process: `Stamp::of`
/// measures instants from it.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The origin's stamp: far from zero, so instants before the origin (a
/// manual clock made earlier) still convert in order.
const BASE: u64 = 1 << 62;

/// The system clock's counter and where it was anchored: a reading of it
/// and the stamp of the instant read with it. Made on the first system
/// stamp, apart from the origin, so clocks that keep the default
/// [`Clock::stamp`] never pay for the calibration.
struct Counter {
    clock: quanta::Clock,
    ticks: u64,
    at: Stamp,
}

static COUNTER: LazyLock<Counter> = LazyLock::new(|| {
    // Calibrates the counter against the monotonic clock: at least half a
    // millisecond of spinning, once; the bus does it when it is built.
    let clock = quanta::Clock::new();
    Counter {
        ticks: clock.raw(),
        at: Stamp::of(Instant::now()),
        clock,
    }
});

impl Stamp {
    /// A stamp `nanos` nanoseconds after the clock's origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds after the clock's origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The stamp of `instant`, on the time line of every clock that keeps
    /// the default [`Clock::stamp`]. [`SystemClock`]'s stamps are anchored
    /// on this line at their first reading and run at the counter's rate
    /// from there, so the two drift apart slowly (see the
    /// [module docs](self)).
    pub fn of(instant: Instant) -> Self {
        let origin = *ORIGIN;
        match instant.checked_duration_since(origin) {
            Some(after) => Self(BASE.saturating_add(saturating_nanos(after))),
            None => Self(BASE.saturating_sub(saturating_nanos(origin - instant))),
        }
    }

    /// Nanoseconds from `earlier` to `self`; zero if `earlier` is later.
    pub const fn nanos_since(self, earlier: Stamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The time from `earlier` to `self`; zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }
}

impl Add<Duration> for Stamp {
    type Output = Stamp;

    fn add(self, d: Duration) -> Stamp {
        Stamp(self.0.saturating_add(saturating_nanos(d)))
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (584 years): the form every
/// time window, budget and deadline here counts in.
///
/// ```
/// use bus_core::time::saturating_nanos;
/// use std::time::Duration;
///
/// assert_eq!(saturating_nanos(Duration::from_millis(3)), 3_000_000);
/// assert_eq!(saturating_nanos(Duration::MAX), u64::MAX);
/// ```
pub fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The real monotonic clock: [`now`](Clock::now) is std's `Instant`, and
/// [`stamp`](Clock::stamp) reads the CPU's counter scaled to nanoseconds
/// (see the [module docs](self)).
///
/// ```
/// use bus_core::time::{Clock, SystemClock};
///
/// let t0 = SystemClock.stamp();
/// let t1 = SystemClock.stamp();
/// assert!(t1 >= t0);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn stamp(&self) -> Stamp {
        let c = &*COUNTER;
        // A reading at or below the anchor (a counter out of step on
        // another core) gives the anchor's stamp: stamps saturate, they do
        // not wrap.
        Stamp(
            c.at.0
                .saturating_add(c.clock.delta_as_nanos(c.ticks, c.clock.raw())),
        )
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use bus_core::time::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now() - t0, Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    base: Instant,
    offset_nanos: Arc<AtomicU64>,
    /// Threads in [`park_until`](Clock::park_until), unparked by `advance`:
    /// nothing else would wake them, as this time moves only by hand.
    sleepers: Arc<Mutex<Vec<Thread>>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock frozen at the moment of creation.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            offset_nanos: Arc::new(AtomicU64::new(0)),
            sleepers: Arc::default(),
        }
    }

    /// Moves time forward by `by`, and wakes the threads waiting on this
    /// clock (they re-check whether their deadline has come). Time stops at
    /// the largest offset it can hold: a wrapping add would move it back.
    pub fn advance(&self, by: Duration) {
        let by = saturating_nanos(by);
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |at| {
                Some(at.saturating_add(by))
            });
        let sleepers =
            std::mem::take(&mut *self.sleepers.lock().unwrap_or_else(PoisonError::into_inner));
        for t in sleepers {
            t.unpark();
        }
    }

    /// How far the clock has been advanced in total.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }

    fn park_until(&self, deadline: Instant) {
        // Registered before the time is read: an advance after the read
        // finds this thread in the list, and its unpark makes the park
        // below return at once even if it lands first. A thread woken by
        // something else stays listed until the next advance, once.
        {
            let me = std::thread::current();
            let mut sleepers = self.sleepers.lock().unwrap_or_else(PoisonError::into_inner);
            if !sleepers.iter().any(|t| t.id() == me.id()) {
                sleepers.push(me);
            }
        }
        if self.now() < deadline {
            std::thread::park();
        }
    }
}

/// A shared, type-erased clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock as a [`SharedClock`].
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_stamps_from_the_origin_of_its_instants() {
        // A stamp read between two conversions lies between them. The slack
        // covers the drift of the counter's calibration over a test run
        // (microseconds); a wrong origin or clock (realtime instead of
        // monotonic, say) is off by years.
        let slack = Duration::from_millis(50);
        let before = Stamp::of(Instant::now());
        let direct = SystemClock.stamp();
        let after = Stamp::of(Instant::now());
        assert!(direct + slack >= before, "{direct:?} before {before:?}");
        assert!(after + slack >= direct, "{direct:?} after {after:?}");
        assert!(after.saturating_since(before) < slack);
    }

    #[test]
    fn the_system_clock_stamps_nanoseconds() {
        // The counter ticks at the CPU's base rate: unscaled, or scaled by a
        // bad calibration, a stamp interval is off by a large factor. The
        // real clock is what is under test here, so the time is spent, not
        // injected: a 5 ms spin, measured both ways.
        // Each end is a stamp read between two instants no more than 20 µs
        // apart (a thread preempted between them tries again), so the two
        // measures can differ by 40 µs at most, well inside the 5 % band.
        fn both() -> (Instant, Stamp) {
            loop {
                let (before, stamp, after) = (Instant::now(), SystemClock.stamp(), Instant::now());
                if after - before <= Duration::from_micros(20) {
                    return (before, stamp);
                }
            }
        }
        let (i0, s0) = both();
        while i0.elapsed() < Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        let (i1, s1) = both();
        let (by_instant, by_stamp) = (i1 - i0, s1.saturating_since(s0));
        let slack = by_instant / 20 + Duration::from_micros(40);
        assert!(
            by_stamp.abs_diff(by_instant) <= slack,
            "stamps measured {by_stamp:?} where instants measured {by_instant:?}"
        );
    }

    #[test]
    fn instants_on_both_sides_of_the_origin_convert_in_order() {
        let later = Instant::now() + Duration::from_secs(5);
        let origin = *ORIGIN;
        let earlier = origin.checked_sub(Duration::from_millis(7));
        let at_origin = Stamp::of(origin);
        assert_eq!(
            Stamp::of(later).saturating_since(Stamp::of(later - Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        if let Some(earlier) = earlier {
            assert_eq!(at_origin.nanos_since(Stamp::of(earlier)), 7_000_000);
        }
    }

    #[test]
    fn stamps_saturate_instead_of_wrapping() {
        let a = Stamp::from_nanos(10);
        let b = Stamp::from_nanos(25);
        assert_eq!(a.nanos_since(b), 0);
        assert_eq!(b.saturating_since(a), Duration::from_nanos(15));
        assert_eq!((b + Duration::MAX).as_nanos(), u64::MAX);
    }

    #[test]
    fn a_manual_clock_stamps_what_it_was_advanced_by() {
        let clock = ManualClock::new();
        let t0 = clock.stamp();
        let i0 = clock.now();
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.stamp().saturating_since(t0), Duration::from_secs(90));
        assert_eq!(
            Stamp::of(clock.now()).nanos_since(Stamp::of(i0)),
            90_000_000_000
        );
    }

    #[test]
    fn a_manual_clock_never_moves_back() {
        let clock = ManualClock::new();
        clock.advance(Duration::MAX);
        let far = clock.now();
        clock.advance(Duration::from_secs(1));
        assert!(clock.now() >= far);
        assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
    }
}
