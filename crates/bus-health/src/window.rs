//! Lock-free counters: the sliding window (a ring of time buckets), the
//! totals since start, and the handler-latency histogram.
//!
//! Each window cell is a [`TaggedCount`]: a count tagged with its bucket's
//! tick, restarted lazily when its slot is reused, with no lock and no lost
//! increment. A writer holding an older tick than the cell never overwrites
//! newer data.
//!
//! Every hot counter is [`Striped`]: two workers counting `Acked` write
//! different cache lines, and reads sum the stripes, because one shared
//! line bounced between two cores costs more than the rest of the event. A
//! thread that owns its stripe counts with plain loads and stores, no
//! locked instruction.

use bus_core::time::{Stamp, saturating_nanos};
use bus_errors::ErrorCategory;
use bus_sync::prim::atomic::{AtomicU64, Ordering::Relaxed};
use bus_sync::{RingPos, Stripe, Striped, TaggedCount, TickRing};
use std::time::Duration;

/// What a cell counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Kind {
    Acked = 0,
    Failed,
    Retried,
    DeadLettered,
    Rejected,
    Discarded,
    Escalated,
    Recovered,
    Parked,
    BrokerRefused,
    /// Filed into the window from the bus's ledger, never counted by an
    /// event: the last slot, past every cell [`Totals`] keeps.
    Published = COUNTED,
}

/// Number of [`Kind`]s counted from events (all but `Published`).
pub(crate) const KINDS: usize = 10;
/// The cells events count: kinds plus one failure cell per category.
const COUNTED: usize = KINDS + ErrorCategory::ALL.len();
/// Every cell of a window bucket: the counted ones, then `Published`.
pub(crate) const SLOTS: usize = COUNTED + 1;
const _: () = assert!(Kind::Published as usize == SLOTS - 1);
const _: () = assert!(Kind::BrokerRefused as usize == KINDS - 1);

/// The cell index of a category's failures.
pub(crate) const fn category_slot(c: ErrorCategory) -> usize {
    KINDS + c.index()
}

/// A bucket of the ring and the tick it must hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    idx: usize,
    tag: u32,
}

/// One bucket's cells, aligned so that no two stripes' buckets share a line.
#[derive(Debug)]
#[repr(align(64))]
struct Bucket([TaggedCount; SLOTS]);

/// A ring of `n` buckets, per stripe, on a [`TickRing`] of `n` slots.
#[derive(Debug)]
pub(crate) struct Window {
    ring: TickRing,
    stripes: Striped<Box<[Bucket]>>,
}

impl Window {
    pub(crate) fn new(start: Stamp, window: Duration, buckets: u32) -> Self {
        let n = buckets.max(1);
        Self {
            ring: TickRing::new(start.as_nanos(), window / n, n),
            stripes: Striped::new(|| {
                (0..n)
                    .map(|_| Bucket(std::array::from_fn(|_| TaggedCount::new())))
                    .collect()
            }),
        }
    }

    /// The bucket tick of `now`.
    #[inline]
    pub(crate) fn tick(&self, now: Stamp) -> u64 {
        self.ring.tick(now.as_nanos())
    }

    /// Nanoseconds from the window's start (the monitor's start) to `now`.
    pub(crate) fn nanos(&self, now: Stamp) -> u64 {
        now.as_nanos().saturating_sub(self.ring.start())
    }

    /// Where the events of `now` go: computed once per event, then used for
    /// each of its counts (within the current bucket, a compare).
    #[inline]
    pub(crate) fn cursor(&self, now: Stamp) -> Cursor {
        Self::cursor_of(self.ring.pos(now.as_nanos()))
    }

    #[cfg(test)]
    pub(crate) fn cursor_at(&self, tick: u64) -> Cursor {
        Self::cursor_of(self.ring.pos_of(tick))
    }

    #[inline]
    fn cursor_of(pos: RingPos) -> Cursor {
        Cursor {
            idx: pos.slot,
            tag: pos.tick as u32,
        }
    }

    /// Adds one to `slot` in the bucket of `at`, in this thread's stripe.
    #[inline]
    pub(crate) fn add(&self, at: Cursor, slot: usize, me: Stripe) {
        self.add_n(at, slot, 1, me);
    }

    /// Adds `n` to `slot` in the bucket of `at`, in this thread's stripe.
    #[inline]
    pub(crate) fn add_n(&self, at: Cursor, slot: usize, n: u64, me: Stripe) {
        let (ring, writer) = self.stripes.get(me);
        ring[at.idx].0[slot].add(writer, at.tag, n);
    }

    /// Sums every slot over the buckets of the window ending at `tick`.
    pub(crate) fn sum(&self, tick: u64) -> [u64; SLOTS] {
        let mut out = [0u64; SLOTS];
        let first = tick.saturating_sub(self.ring.slots() - 1);
        for ring in self.stripes.iter() {
            for t in first..=tick {
                let b = &ring[self.ring.pos_of(t).slot];
                for (o, cell) in out.iter_mut().zip(b.0.iter()) {
                    *o += cell.read(t as u32);
                }
            }
        }
        out
    }
}

/// Monotonic counters since start (exact; the Prometheus `_total`s).
#[derive(Debug)]
pub(crate) struct Totals {
    /// Per stripe: one counter per slot an event counts (no `Published`:
    /// publishes are read from the bus's ledger).
    hot: Striped<[AtomicU64; COUNTED]>,
    /// Dead letters per reason, indexed by [`reason_index`].
    pub(crate) dlq_reasons: [AtomicU64; REASONS.len()],
    pub(crate) circuit_transitions: AtomicU64,
    pub(crate) dlq_write_failures: AtomicU64,
}

/// Label values of dead-letter reasons (a custom reason counts as `other`).
pub(crate) const REASONS: [&str; 7] = [
    "retries_exhausted",
    "not_retried",
    "not_retryable",
    "retry_budget_exhausted",
    "queue_overflow",
    "shutdown",
    "other",
];

pub(crate) fn reason_index(r: &bus_core::DeadLetterReason) -> usize {
    use bus_core::DeadLetterReason as R;
    match r {
        R::RetriesExhausted => 0,
        R::NotRetried => 1,
        R::NotRetryable => 2,
        R::RetryBudgetExhausted => 3,
        R::QueueOverflow => 4,
        R::Shutdown => 5,
        _ => 6,
    }
}

impl Totals {
    pub(crate) fn new() -> Self {
        Self {
            hot: Striped::new(|| std::array::from_fn(|_| AtomicU64::new(0))),
            dlq_reasons: std::array::from_fn(|_| AtomicU64::new(0)),
            circuit_transitions: AtomicU64::new(0),
            dlq_write_failures: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn add(&self, slot: usize, me: Stripe) {
        let (cells, writer) = self.hot.get(me);
        writer.add(&cells[slot], 1);
    }

    fn sum(&self, i: usize) -> u64 {
        self.hot.iter().map(|s| s[i].load(Relaxed)).sum()
    }

    /// Every slot; `Published` reads 0 (the monitor fills it in from the
    /// ledgers).
    pub(crate) fn snapshot(&self) -> [u64; SLOTS] {
        std::array::from_fn(|i| if i < COUNTED { self.sum(i) } else { 0 })
    }
}

/// Upper bounds (seconds) of the handler-latency buckets.
pub(crate) const LATENCY_BOUNDS: [f64; 14] = [
    0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket cumulative histogram of handler run times, striped.
#[derive(Debug)]
pub(crate) struct Latency {
    bounds_nanos: [u64; LATENCY_BOUNDS.len()],
    /// Per stripe: one count per bucket (the last is `+Inf`), then the sum of nanos.
    cells: Striped<[AtomicU64; LATENCY_BOUNDS.len() + 2]>,
}

/// A read of [`Latency`].
#[derive(Debug, Clone)]
pub(crate) struct LatencyRead {
    /// Non-cumulative count per bucket, the last one is `+Inf`.
    pub(crate) counts: [u64; LATENCY_BOUNDS.len() + 1],
    pub(crate) sum_nanos: u64,
}

const SUM: usize = LATENCY_BOUNDS.len() + 1;

impl Latency {
    pub(crate) fn new() -> Self {
        Self {
            bounds_nanos: LATENCY_BOUNDS.map(|s| (s * 1e9) as u64),
            cells: Striped::new(|| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    #[inline]
    pub(crate) fn record(&self, d: Duration, me: Stripe) {
        let nanos = saturating_nanos(d);
        let idx = self
            .bounds_nanos
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        let (cells, writer) = self.cells.get(me);
        writer.add(&cells[idx], 1);
        writer.add(&cells[SUM], nanos);
    }

    pub(crate) fn read(&self) -> LatencyRead {
        let sum = |i: usize| self.cells.iter().map(|c| c[i].load(Relaxed)).sum::<u64>();
        LatencyRead {
            counts: std::array::from_fn(sum),
            sum_nanos: sum(SUM),
        }
    }
}

impl LatencyRead {
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (`None` if empty or
    /// in the `+Inf` bucket).
    pub(crate) fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return LATENCY_BOUNDS.get(i).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fall_out_of_the_window_as_ticks_advance() {
        let t0 = Stamp::default();
        let w = Window::new(t0, Duration::from_secs(10), 10);
        for _ in 0..3 {
            w.add(w.cursor_at(0), 1, Stripe::current());
        }
        w.add(w.cursor_at(5), 1, Stripe::current());
        assert_eq!(w.sum(5)[1], 4);
        assert_eq!(w.sum(9)[1], 4);
        assert_eq!(w.sum(10)[1], 1, "tick 0 left the window");
        assert_eq!(w.sum(15)[1], 0);
        // the slot of tick 0 is reused by tick 10 without leftovers
        w.add(w.cursor_at(10), 1, Stripe::current());
        assert_eq!(w.sum(10)[1], 2);
    }

    #[test]
    fn the_cached_cursor_always_matches_the_computed_one() {
        let t0 = Stamp::from_nanos(1_000);
        let w = Window::new(t0, Duration::from_secs(7), 7);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // forwards, within a bucket, across buckets, backwards, and around the ring
        for ms in [
            0, 1, 999, 1000, 1001, 500, 6999, 7000, 3000, 14_001, 2, 90_000,
        ] {
            let c = w.cursor(at(ms));
            let expect = w.cursor_at(w.tick(at(ms)));
            assert_eq!((c.idx, c.tag), (expect.idx, expect.tag), "at {ms} ms");
        }
    }

    #[test]
    fn adding_many_at_once_saturates_and_restarts_stale_cells() {
        let w = Window::new(Stamp::default(), Duration::from_secs(4), 4);
        let me = Stripe::current();
        w.add_n(w.cursor_at(3), 0, 5, me);
        w.add(w.cursor_at(3), 0, me);
        assert_eq!(w.sum(3)[0], 6);
        w.add_n(w.cursor_at(3), 0, u64::MAX, me);
        assert_eq!(
            w.sum(3)[0],
            TaggedCount::MAX,
            "saturated, not wrapped into the tag"
        );
        w.add_n(w.cursor_at(7), 0, 2, me); // the same cell, four ticks on
        assert_eq!((w.sum(7)[0], w.sum(3)[0]), (2, 0));
    }

    #[test]
    fn a_late_writer_never_clobbers_a_newer_bucket() {
        let w = Window::new(Stamp::default(), Duration::from_secs(4), 4);
        w.add(w.cursor_at(8), 0, Stripe::current());
        w.add(w.cursor_at(4), 0, Stripe::current()); // same slot, older tick
        assert_eq!(w.sum(8)[0], 1);
    }

    #[test]
    fn latency_quantiles_use_bucket_bounds() {
        let l = Latency::new();
        for _ in 0..90 {
            l.record(Duration::from_micros(50), Stripe::current());
        }
        for _ in 0..10 {
            l.record(Duration::from_millis(200), Stripe::current());
        }
        let r = l.read();
        assert_eq!(r.count(), 100);
        assert_eq!(r.quantile_bound(0.5), Some(0.000_1));
        assert_eq!(r.quantile_bound(0.99), Some(0.25));
    }
}
