//! Time as a dependency: every component that waits or measures takes a
//! [`Clock`], so tests drive time with a [`ManualClock`] instead of sleeping.
//!
//! A clock answers in two forms. [`Instant`] is for deadlines and waits.
//! [`Stamp`], plain nanoseconds, is what the delivery pipeline stamps its
//! events with and what windows and budgets count by: std's `Instant` is
//! opaque, and turning one into a number (`duration_since`, then `as_nanos`)
//! cost about 55 instructions, paid by health, the retry budget and the
//! handler timing on every message.

use std::fmt::Debug;
use std::ops::Add;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// A source of monotonic time.
pub trait Clock: Send + Sync + Debug {
    /// The current instant.
    fn now(&self) -> Instant;

    /// The current time as a [`Stamp`], on the same time line as
    /// [`now`](Self::now). The default converts `now()`; a clock that can
    /// read nanoseconds directly overrides it.
    fn stamp(&self) -> Stamp {
        Stamp::of(self.now())
    }
}

impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn stamp(&self) -> Stamp {
        (**self).stamp()
    }
}

impl<T: Clock + ?Sized> Clock for &T {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn stamp(&self) -> Stamp {
        (**self).stamp()
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

/// An instant and its stamp, read together once per process: the bridge
/// between the two forms. `Stamp::of` converts relative to it, and the system
/// clock's stamps start from the same reading, so both forms of one moment
/// agree to within the few nanoseconds between the two reads.
static ORIGIN: LazyLock<(Instant, u64)> = LazyLock::new(|| (Instant::now(), raw_nanos()));

/// The system's monotonic clock in nanoseconds, read without an `Instant`.
#[cfg(target_os = "linux")]
fn raw_nanos() -> u64 {
    // CLOCK_MONOTONIC, the clock std's Instant reads on Linux.
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(not(target_os = "linux"))]
fn raw_nanos() -> u64 {
    // No direct reading elsewhere: stamps count from the origin, placed far
    // from zero so instants before it (a manual clock made earlier) still
    // convert in order, and `SystemClock::stamp` converts.
    1 << 62
}

impl Stamp {
    /// A stamp `nanos` nanoseconds after the clock's origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds after the clock's origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The stamp of `instant`, on the time line of [`SystemClock`] and of
    /// every clock that keeps the default [`Clock::stamp`].
    pub fn of(instant: Instant) -> Self {
        let (origin, base) = *ORIGIN;
        match instant.checked_duration_since(origin) {
            Some(after) => Self(base.saturating_add(saturating_nanos(after))),
            None => Self(base.saturating_sub(saturating_nanos(origin - instant))),
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

/// Where a [`Stamp`] falls on a [`TickRing`]: its tick (periods since the
/// ring's start) and that tick's slot on the ring (`tick % slots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPos {
    /// Whole periods from the ring's start.
    pub tick: u64,
    /// `tick % slots`: the slot this tick reuses.
    pub slot: usize,
}

/// Time cut into equal ticks from a start, laid on a ring of `slots` slots:
/// what sliding windows (health's buckets, the retry budget's slots) count
/// into. [`pos`](Self::pos) is on every message's path, so it remembers the
/// last tick it computed: within that tick it costs a multiply and a
/// compare instead of two divisions (a 64-bit division is tens of cycles).
///
/// ```
/// use bus_core::time::{RingPos, Stamp, TickRing};
/// use std::time::Duration;
///
/// let ring = TickRing::new(Stamp::from_nanos(1_000), Duration::from_micros(1), 4);
/// assert_eq!(ring.pos(Stamp::from_nanos(1_000)), RingPos { tick: 0, slot: 0 });
/// assert_eq!(ring.pos(Stamp::from_nanos(6_500)), RingPos { tick: 5, slot: 1 });
/// assert_eq!(ring.pos(Stamp::from_nanos(500)), RingPos { tick: 0, slot: 0 }); // before the start
/// ```
#[derive(Debug)]
pub struct TickRing {
    start: Stamp,
    tick_nanos: u64,
    slots: u64,
    /// The furthest position computed below tick 2^48, `tick << 16 | slot`. Written once per
    /// tick (only ever forward), so its line stays shared between the cores
    /// that read it instead of bouncing.
    recent: AtomicU64,
}

impl TickRing {
    /// Ticks of `tick` (at least 1 ns) from `start`, on `slots` slots (1
    /// to 65 536; clamped).
    pub fn new(start: Stamp, tick: Duration, slots: u32) -> Self {
        Self {
            start,
            tick_nanos: saturating_nanos(tick).max(1),
            slots: u64::from(slots.clamp(1, 1 << 16)),
            recent: AtomicU64::new(0),
        }
    }

    /// The ring's start.
    pub fn start(&self) -> Stamp {
        self.start
    }

    /// Slots on the ring.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// The tick of `now` (0 before the start), computed.
    pub fn tick(&self, now: Stamp) -> u64 {
        now.nanos_since(self.start) / self.tick_nanos
    }

    /// The slot of `tick`.
    pub fn pos_of(&self, tick: u64) -> RingPos {
        // `slots` <= 2^16: the remainder fits any usize.
        RingPos {
            tick,
            slot: usize::try_from(tick % self.slots).unwrap_or(0),
        }
    }

    /// Where `now` falls: [`pos_of`](Self::pos_of)([`tick`](Self::tick)`(now)`),
    /// from the remembered tick when `now` is in it.
    #[inline]
    pub fn pos(&self, now: Stamp) -> RingPos {
        let nanos = now.nanos_since(self.start);
        let recent = self.recent.load(Ordering::Relaxed);
        let tick = recent >> 16;
        // tick * tick_nanos <= the nanos it was computed from: no overflow.
        if nanos
            .checked_sub(tick * self.tick_nanos)
            .is_some_and(|into| into < self.tick_nanos)
        {
            return RingPos {
                tick,
                slot: (recent & 0xFFFF) as usize,
            };
        }
        let pos = self.pos_of(nanos / self.tick_nanos);
        // Only ever forward: a late stamp (a thread that read its clock just
        // before a tick ended) gets its own tick without evicting the current
        // one. Checked before the write, so late stamps leave the line
        // shared. A tick past 2^48 does not fit beside its slot and is not
        // kept (only ticks under 65 us get there within u64 nanoseconds).
        let newer = pos.tick << 16 | pos.slot as u64;
        if pos.tick < (1 << 48) && newer > recent {
            self.recent.fetch_max(newer, Ordering::Relaxed);
        }
        pos
    }
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[cfg(target_os = "linux")]
    fn stamp(&self) -> Stamp {
        // The origin's base is a raw reading too, so this agrees with
        // `Stamp::of(Instant::now())` without touching the origin.
        Stamp(raw_nanos())
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
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_nanos
            .fetch_add(saturating_nanos(by), Ordering::SeqCst);
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
    fn the_system_clock_stamps_on_the_time_line_of_its_instants() {
        // The direct reading and the converted Instant must be one time
        // line: a stamp read between two conversions lies between them. The
        // slack covers only the two reads that make the origin; a wrong clock
        // (realtime instead of monotonic, say) is off by years.
        let slack = Duration::from_millis(50);
        let before = Stamp::of(Instant::now());
        let direct = SystemClock.stamp();
        let after = Stamp::of(Instant::now());
        assert!(direct + slack >= before, "{direct:?} before {before:?}");
        assert!(after + slack >= direct, "{direct:?} after {after:?}");
        assert!(after.saturating_since(before) < slack);
    }

    #[test]
    fn instants_on_both_sides_of_the_origin_convert_in_order() {
        let later = Instant::now() + Duration::from_secs(5);
        let (origin, _) = *ORIGIN;
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
    fn a_ring_position_is_the_computed_one_whatever_was_remembered() {
        // Ticks of 7 ns from 100 on 5 slots, visited forward, backward
        // (late stamps), across the start and far ahead: the remembered
        // tick must never answer for a stamp outside it.
        let ring = TickRing::new(Stamp::from_nanos(100), Duration::from_nanos(7), 5);
        let mut visits: Vec<u64> = (0..300).collect();
        visits.extend((0..300).rev());
        visits.extend([1 << 40, 99, 1 << 40, (1 << 40) + 6, (1 << 40) + 7, 100]);
        for n in visits {
            let now = Stamp::from_nanos(n);
            let tick = ring.tick(now);
            assert_eq!(tick, n.saturating_sub(100) / 7);
            assert_eq!(ring.pos(now), ring.pos_of(tick), "at {n} ns");
            assert_eq!(ring.pos_of(tick).slot, (tick % 5) as usize);
        }
    }

    #[test]
    fn a_tick_too_large_to_pack_is_computed_every_time() {
        // 7 ns ticks: 2^48 ticks are about 2e15 ns in. Packed, such a tick
        // would lose its top bits and answer later stamps with a wrong tick.
        let ring = TickRing::new(Stamp::from_nanos(0), Duration::from_nanos(7), 5);
        for n in [
            7 << 48,
            (7 << 48) + 3,
            (7 << 48) + 7,
            1 << 60,
            (1 << 60) + 1,
        ] {
            let now = Stamp::from_nanos(n);
            assert_eq!(ring.pos(now), ring.pos_of(n / 7), "at {n} ns");
        }
        assert_eq!(ring.recent.load(Ordering::Relaxed), 0, "nothing kept");
    }

    #[test]
    fn a_late_stamp_does_not_move_the_remembered_tick_back() {
        let ring = TickRing::new(Stamp::from_nanos(0), Duration::from_nanos(10), 4);
        ring.pos(Stamp::from_nanos(95));
        ring.pos(Stamp::from_nanos(15)); // late: its own tick, computed
        assert_eq!(ring.recent.load(Ordering::Relaxed) >> 16, 9);
        ring.pos(Stamp::from_nanos(1_000));
        assert_eq!(ring.recent.load(Ordering::Relaxed) >> 16, 100);
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
}
