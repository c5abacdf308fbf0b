//! The sliding windows a closed breaker computes its rates over.
//!
//! What is counted when (the closed-state fast path depends on it):
//!
//! - **Count-based** (last N calls). Outcomes are written to a shared ring of
//!   N one-byte slots, with the window's totals packed in one atomic word.
//!   While the ring holds no failure and no slow call, a fast success is only
//!   added to this thread's *stripe* (a counter on its own cache line): in
//!   such a window every call is a success, so only their number matters.
//!   Once the stripes hold enough successes to fill the ring they are folded
//!   into it, and from then on a fast success into a ring full of successes
//!   writes nothing at all (the window is unchanged by it). The next time
//!   something else is written (a failure, a slow call, or a success while
//!   the ring is dirty), pending stripe successes are folded in first, so
//!   every outcome is counted exactly once and a failure is always preceded by
//!   every success that completed before it. Successes that complete
//!   concurrently with a failure may land on either side of it.
//! - **Time-based** (last T). The window is split into buckets of `T / B`
//!   (`B = min(T in s, 60)`, at least 1). Fast successes go to per-thread
//!   stripes of buckets, failures and slow calls to shared buckets; the
//!   totals are the sums of both over the buckets younger than T. A call
//!   leaves the window when its whole bucket does.

use crate::config::{MAX_TIME_BUCKETS, SlidingWindow};
use crate::sync::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use bus_core::time::saturating_nanos;
use std::time::Duration;

/// One recorded outcome, as the windows see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Success,
    SlowSuccess,
    Failure,
    SlowFailure,
}

impl Mark {
    fn failed(self) -> bool {
        matches!(self, Mark::Failure | Mark::SlowFailure)
    }
    fn slow(self) -> bool {
        matches!(self, Mark::SlowSuccess | Mark::SlowFailure)
    }
    fn code(self) -> u8 {
        match self {
            Mark::Success => 1,
            Mark::SlowSuccess => 2,
            Mark::Failure => 3,
            Mark::SlowFailure => 4,
        }
    }
    fn from_code(code: u8) -> Option<Mark> {
        match code {
            1 => Some(Mark::Success),
            2 => Some(Mark::SlowSuccess),
            3 => Some(Mark::Failure),
            4 => Some(Mark::SlowFailure),
            _ => None,
        }
    }
}

/// The totals of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

// Three 21-bit counters in one word: calls | failures << 21 | slow << 42.
const FIELD: u32 = 21;
const MASK: u64 = (1 << FIELD) - 1;

/// True values never exceed `MAX_WINDOW_CALLS < 2^20`; a field at or above
/// 2^20 is a transient negative (see `CountWindow::push`) and reads as 0.
fn unpack(word: u64) -> Counts {
    let field = |shift: u32| {
        let v = (word >> shift) & MASK;
        if v >= 1 << (FIELD - 1) { 0 } else { v }
    };
    Counts {
        calls: field(0),
        failures: field(FIELD),
        slow: field(2 * FIELD),
    }
}

/// Per-thread counters, each on its own pair of cache lines.
#[derive(Debug)]
struct Stripes {
    cells: Box<[AtomicU64]>,
    stride: usize,
    width: usize,
}

/// 16 words = 128 bytes between two stripes' first words.
#[cfg(not(bus_loom))]
const PAD_WORDS: usize = 16;
#[cfg(not(bus_loom))]
const STRIPES: usize = 16;
// Loom models few threads; fewer atomics keep its state space small.
#[cfg(bus_loom)]
const PAD_WORDS: usize = 0;
#[cfg(bus_loom)]
const STRIPES: usize = 2;

fn stripe_index() -> usize {
    bus_sync::stripe::index() % STRIPES
}

impl Stripes {
    fn new(width: usize) -> Self {
        let stride = width + PAD_WORDS;
        let cells = (0..stride * STRIPES).map(|_| AtomicU64::new(0)).collect();
        Self {
            cells,
            stride,
            width,
        }
    }

    fn cell(&self, stripe: usize, slot: usize) -> &AtomicU64 {
        &self.cells[stripe * self.stride + slot]
    }

    fn mine(&self, slot: usize) -> &AtomicU64 {
        self.cell(stripe_index(), slot)
    }

    fn sum_slot(&self, slot: usize) -> u64 {
        (0..STRIPES)
            .map(|s| self.cell(s, slot).load(Ordering::Acquire))
            .fold(0, u64::wrapping_add)
    }

    fn clear(&self) {
        for s in 0..STRIPES {
            for slot in 0..self.width {
                self.cell(s, slot).store(0, Ordering::Release);
            }
        }
    }
}

/// A sliding window of either kind.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count { size } => Window::Count(CountWindow::new(size as usize)),
            SlidingWindow::Time { length } => Window::Time(TimeWindow::new(length)),
        }
    }

    /// Whether a fast success would write nothing: a count window whose ring
    /// is full and holds no failure or slow call. (A time window always
    /// counts successes in its buckets.)
    #[inline]
    pub(crate) fn settled_clean(&self) -> bool {
        match self {
            Window::Count(w) => w.full_clean(w.totals.load(Ordering::Acquire)),
            Window::Time(_) => false,
        }
    }

    /// Whether recording needs the time (time-based windows).
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    /// Records one outcome at `now` (nanoseconds since the breaker's base;
    /// ignored by count-based windows). Returns whether the window may now
    /// warrant a trip: it holds a failure or a slow call. Thresholds are
    /// judged after every outcome, as Resilience4j does, so a success that
    /// completes the minimum number of calls can trip too; a window that
    /// holds neither answers `false` without writing anything shared.
    pub(crate) fn record(&self, mark: Mark, now: u64) -> bool {
        match self {
            Window::Count(w) => w.record(mark),
            Window::Time(w) => w.record(mark, now),
        }
    }

    /// The totals at `now`.
    pub(crate) fn counts(&self, now: u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now),
        }
    }

    /// Empties the window (on entering the closed state).
    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }
}

/// The last N calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    head: AtomicUsize,
    totals: AtomicU64,
    /// Successes counted in stripes while the ring was clean.
    stripes: Stripes,
    /// How many stripe successes were folded into the ring (or dropped by a
    /// reset).
    folded: AtomicU64,
}

impl CountWindow {
    fn new(size: usize) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            head: AtomicUsize::new(0),
            totals: AtomicU64::new(0),
            stripes: Stripes::new(1),
            folded: AtomicU64::new(0),
        }
    }

    /// Whether the packed totals `raw` say: every slot holds a fast success.
    fn full_clean(&self, raw: u64) -> bool {
        raw == self.slots.len() as u64 // calls == len, failures == slow == 0
    }

    fn record(&self, mark: Mark) -> bool {
        if mark == Mark::Success {
            let raw = self.totals.load(Ordering::Acquire);
            if self.full_clean(raw) {
                // A ring full of successes stays so: nothing to write.
                return false;
            }
            let t = unpack(raw);
            if raw == t.calls && t.failures == 0 && t.slow == 0 {
                // Clean ring, not yet full: only this thread's own line is
                // written. Once this stripe alone could fill the ring, fold,
                // which fills it: from then on clean successes write nothing.
                let mine = self.stripes.mine(0).fetch_add(1, Ordering::AcqRel) + 1;
                if mine >= self.slots.len() as u64 {
                    self.fold();
                }
                return false;
            }
        }
        self.fold();
        self.push(mark, 1);
        if mark != Mark::Success {
            return true;
        }
        let t = unpack(self.totals.load(Ordering::Acquire));
        t.failures > 0 || t.slow > 0
    }

    /// Moves pending stripe successes into the ring.
    fn fold(&self) {
        let total = self.stripes.sum_slot(0);
        let mut folded = self.folded.load(Ordering::Acquire);
        loop {
            let pending = total.wrapping_sub(folded);
            if pending == 0 || pending > u64::MAX / 2 {
                return;
            }
            match self.folded.compare_exchange_weak(
                folded,
                total,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let n = usize::try_from(pending)
                        .unwrap_or(usize::MAX)
                        .min(self.slots.len());
                    self.push(Mark::Success, n);
                    return;
                }
                Err(now) => folded = now,
            }
        }
    }

    /// Writes `n` copies of `mark` at the head of the ring.
    fn push(&self, mark: Mark, n: usize) {
        let len = self.slots.len();
        let start = self.head.fetch_add(n, Ordering::AcqRel);
        let (mut calls, mut failures, mut slow) = (0u64, 0u64, 0u64);
        for i in 0..n {
            let idx = start.wrapping_add(i) % len;
            match Mark::from_code(self.slots[idx].swap(mark.code(), Ordering::AcqRel)) {
                None => calls += 1,
                Some(o) => {
                    failures = failures.wrapping_sub(u64::from(o.failed()));
                    slow = slow.wrapping_sub(u64::from(o.slow()));
                }
            }
            failures = failures.wrapping_add(u64::from(mark.failed()));
            slow = slow.wrapping_add(u64::from(mark.slow()));
        }
        // Each field is updated modulo 2^21, without carry into its
        // neighbour: a slot's removal may land before its addition (another
        // thread overwrote it in between), making a field briefly "negative";
        // `unpack` reads such a transient as 0, and the sum stays exact.
        let _ = self
            .totals
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let field = |shift: u32, delta: u64| {
                    (((word >> shift) & MASK).wrapping_add(delta) & MASK) << shift
                };
                Some(field(0, calls) | field(FIELD, failures) | field(2 * FIELD, slow))
            });
    }

    fn counts(&self) -> Counts {
        let mut c = unpack(self.totals.load(Ordering::Acquire));
        let pending = self
            .stripes
            .sum_slot(0)
            .wrapping_sub(self.folded.load(Ordering::Acquire));
        if pending <= u64::MAX / 2 {
            c.calls = (c.calls + pending).min(self.slots.len() as u64);
        }
        c
    }

    fn reset(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Release);
        }
        self.head.store(0, Ordering::Release);
        self.totals.store(0, Ordering::Release);
        self.folded
            .store(self.stripes.sum_slot(0), Ordering::Release);
    }
}

// A time bucket word: epoch (24 bits) << 40 | count (40 bits).
const EPOCH_SHIFT: u32 = 40;
const COUNT_MASK: u64 = (1 << EPOCH_SHIFT) - 1;
const EPOCH_MASK: u64 = (1 << 24) - 1;

fn bucket_add(word: &AtomicU64, epoch: u64, n: u64) {
    let tag = epoch & EPOCH_MASK;
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
        let cur_tag = cur >> EPOCH_SHIFT;
        let count = cur & COUNT_MASK;
        // Older tag (modulo 2^24): the bucket is reused for this epoch.
        let older = cur_tag != tag && (tag.wrapping_sub(cur_tag) & EPOCH_MASK) < (1 << 23);
        let next = if older {
            n
        } else {
            (count + n).min(COUNT_MASK)
        };
        let keep = if older { tag } else { cur_tag };
        Some((keep << EPOCH_SHIFT) | next)
    });
}

fn bucket_read(word: &AtomicU64, epoch: u64) -> u64 {
    let cur = word.load(Ordering::Acquire);
    if cur >> EPOCH_SHIFT == epoch & EPOCH_MASK {
        cur & COUNT_MASK
    } else {
        0
    }
}

/// The calls of the last T.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: usize,
    /// Per bucket: calls, failures, slow (failures and slow calls only).
    shared: Box<[AtomicU64]>,
    /// Fast successes per thread and bucket.
    stripes: Stripes,
    /// The epoch of the latest failure or slow call (0: none since the last
    /// reset): a success reads it to know, without summing buckets, whether
    /// the window may hold something that warrants a trip.
    marked: AtomicU64,
}

impl TimeWindow {
    fn new(length: Duration) -> Self {
        let secs = u32::try_from(length.as_secs()).unwrap_or(u32::MAX);
        let buckets = secs.clamp(1, MAX_TIME_BUCKETS) as usize;
        let total = saturating_nanos(length);
        Self {
            bucket_nanos: (total / buckets as u64).max(1),
            buckets,
            shared: (0..buckets * 3).map(|_| AtomicU64::new(0)).collect(),
            stripes: Stripes::new(buckets),
            marked: AtomicU64::new(0),
        }
    }

    fn epoch(&self, now: u64) -> u64 {
        // Epochs start at 1 so that a zeroed word (tag 0) is never current.
        now / self.bucket_nanos + 1
    }

    fn record(&self, mark: Mark, now: u64) -> bool {
        let epoch = self.epoch(now);
        let slot = (epoch % self.buckets as u64) as usize;
        if mark == Mark::Success {
            bucket_add(self.stripes.mine(slot), epoch, 1);
            let marked = self.marked.load(Ordering::Acquire);
            return marked != 0 && epoch.saturating_sub(marked) < self.buckets as u64;
        }
        self.marked.fetch_max(epoch, Ordering::AcqRel);
        bucket_add(&self.shared[slot * 3], epoch, 1);
        if mark.failed() {
            bucket_add(&self.shared[slot * 3 + 1], epoch, 1);
        }
        if mark.slow() {
            bucket_add(&self.shared[slot * 3 + 2], epoch, 1);
        }
        true
    }

    fn counts(&self, now: u64) -> Counts {
        let current = self.epoch(now);
        let mut c = Counts::default();
        for back in 0..self.buckets as u64 {
            let Some(epoch) = current.checked_sub(back).filter(|e| *e > 0) else {
                break;
            };
            let slot = (epoch % self.buckets as u64) as usize;
            c.calls += bucket_read(&self.shared[slot * 3], epoch);
            c.failures += bucket_read(&self.shared[slot * 3 + 1], epoch);
            c.slow += bucket_read(&self.shared[slot * 3 + 2], epoch);
            for s in 0..STRIPES {
                c.calls += bucket_read(self.stripes.cell(s, slot), epoch);
            }
        }
        c
    }

    fn reset(&self) {
        for word in self.shared.iter() {
            word.store(0, Ordering::Release);
        }
        self.marked.store(0, Ordering::Release);
        self.stripes.clear();
    }
}

#[cfg(all(test, not(bus_loom)))]
mod tests;
