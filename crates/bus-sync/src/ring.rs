//! Time cut into equal ticks, laid on a ring of slots: what sliding windows
//! (health's buckets, the retry budget's slots) count into. Times are plain
//! nanoseconds on the caller's clock (`bus_core::time::Stamp::as_nanos`).

use crate::prim::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a time falls on a [`TickRing`]: its tick (periods since the ring's
/// start) and that tick's slot on the ring (`tick % slots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPos {
    /// Whole periods from the ring's start.
    pub tick: u64,
    /// `tick % slots`: the slot this tick reuses.
    pub slot: usize,
}

/// Ticks of equal length from a start, on a ring of `slots` slots.
///
/// [`pos`](Self::pos) is on every message's path, so it remembers the
/// furthest tick it computed and answers a time within that tick with a
/// multiply and a compare instead of two divisions. Its guarantee, whatever
/// threads call it at once and in whatever order their times come: the
/// answer is always the computed one (`pos(now) == pos_of(tick(now))`), and
/// what it remembers only moves forward, so a thread whose reading of the
/// clock is late never evicts the current tick.
///
/// ```
/// use bus_sync::{RingPos, TickRing};
/// use std::time::Duration;
///
/// let ring = TickRing::new(1_000, Duration::from_micros(1), 4);
/// assert_eq!(ring.pos(1_000), RingPos { tick: 0, slot: 0 });
/// assert_eq!(ring.pos(6_500), RingPos { tick: 5, slot: 1 });
/// assert_eq!(ring.pos(500), RingPos { tick: 0, slot: 0 }); // before the start
/// ```
#[derive(Debug)]
pub struct TickRing {
    start: u64,
    tick_nanos: u64,
    slots: u64,
    /// The furthest position computed below tick 2^48, `tick << 16 | slot`.
    /// Written once per tick (only ever forward), so its line stays shared
    /// between the cores that read it instead of bouncing.
    recent: AtomicU64,
}

impl TickRing {
    /// Ticks of `tick` (at least 1 ns) from `start` (nanoseconds), on
    /// `slots` slots (1 to 65 536; clamped).
    pub fn new(start: u64, tick: Duration, slots: u32) -> Self {
        Self {
            start,
            tick_nanos: u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1),
            slots: u64::from(slots.clamp(1, 1 << 16)),
            recent: AtomicU64::new(0),
        }
    }

    /// The ring's start, in nanoseconds.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Slots on the ring.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// The tick of `now` (0 before the start), computed.
    pub fn tick(&self, now: u64) -> u64 {
        now.saturating_sub(self.start) / self.tick_nanos
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
    pub fn pos(&self, now: u64) -> RingPos {
        let nanos = now.saturating_sub(self.start);
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
        // Only ever forward: a late time gets its own tick without evicting
        // the current one. Checked before the write, so late times leave
        // the line shared. A tick past 2^48 does not fit beside its slot
        // and is not kept (only ticks under 65 us get there within u64
        // nanoseconds).
        let newer = pos.tick << 16 | pos.slot as u64;
        if pos.tick < (1 << 48) && newer > recent {
            self.recent.fetch_max(newer, Ordering::Relaxed);
        }
        pos
    }

    /// The position [`pos`](Self::pos) answers from without dividing, if
    /// any: the furthest it has computed (`None` while that is tick 0).
    pub fn remembered(&self) -> Option<RingPos> {
        let recent = self.recent.load(Ordering::Relaxed);
        (recent != 0).then_some(RingPos {
            tick: recent >> 16,
            slot: (recent & 0xFFFF) as usize,
        })
    }
}

#[cfg(all(test, not(bus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_ring_position_is_the_computed_one_whatever_was_remembered() {
        // Ticks of 7 ns from 100 on 5 slots, visited forward, backward
        // (late times), across the start and far ahead: the remembered
        // tick must never answer for a time outside it.
        let ring = TickRing::new(100, Duration::from_nanos(7), 5);
        let mut visits: Vec<u64> = (0..300).collect();
        visits.extend((0..300).rev());
        visits.extend([1 << 40, 99, 1 << 40, (1 << 40) + 6, (1 << 40) + 7, 100]);
        for n in visits {
            let tick = ring.tick(n);
            assert_eq!(tick, n.saturating_sub(100) / 7);
            assert_eq!(ring.pos(n), ring.pos_of(tick), "at {n} ns");
            assert_eq!(ring.pos_of(tick).slot, (tick % 5) as usize);
        }
    }

    #[test]
    fn a_tick_too_large_to_pack_is_computed_every_time() {
        // 7 ns ticks: 2^48 ticks are about 2e15 ns in. Packed, such a tick
        // would lose its top bits and answer later times with a wrong tick.
        let ring = TickRing::new(0, Duration::from_nanos(7), 5);
        for n in [
            7 << 48,
            (7 << 48) + 3,
            (7 << 48) + 7,
            1 << 60,
            (1 << 60) + 1,
        ] {
            assert_eq!(ring.pos(n), ring.pos_of(n / 7), "at {n} ns");
        }
        assert_eq!(ring.remembered(), None, "nothing kept");
    }

    #[test]
    fn a_late_time_does_not_move_the_remembered_tick_back() {
        let ring = TickRing::new(0, Duration::from_nanos(10), 4);
        ring.pos(95);
        ring.pos(15); // late: its own tick, computed
        assert_eq!(ring.remembered().map(|p| p.tick), Some(9));
        ring.pos(1_000);
        assert_eq!(ring.remembered(), Some(RingPos { tick: 100, slot: 0 }));
    }
}
