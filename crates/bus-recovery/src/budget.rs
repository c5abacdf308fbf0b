//! A retry budget in the manner of Finagle's `RetryBudget`: within a sliding
//! time window, retries may add at most `percent` of the successful traffic,
//! plus a small floor (`min_retries_per_sec`) so a quiet service can still
//! retry. A wide outage therefore sheds its excess retries into the
//! dead-letter queue instead of multiplying the load.
//!
//! Deposits (one per success, on the hot path) count into a time-slotted
//! counter of the calling thread's own stripe: workers of different
//! subscribers succeeding at once would otherwise bounce one cache line
//! between their cores on every message. Withdrawals (one per retry, on the
//! failure path) sum the stripes and take a small mutex so the check and the
//! withdrawal are one step: concurrent failures can never overdraw the budget.

use crate::ConfigError;
use bus_core::time::{SharedClock, Stamp};
use bus_sync::prim::atomic::{AtomicU64, Ordering};
use bus_sync::{Striped, TickRing};
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How many slots the window is cut into.
const SLOTS: usize = 10;
/// A token, in micro-tokens.
const TOKEN: u128 = 1_000_000;
/// Low bits of a packed slot holding the count; the high bits hold a tag of
/// the slot's epoch. 32 bits of tag tell epochs apart for 2^32 - 1 ticks
/// (about 50 days at the smallest, 1 ms slot) before a slot left untouched
/// that long could be taken for the current one; 32 bits of count are more
/// successes than one stripe can record in one slot.
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Configuration of a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// How long deposits and withdrawals count (default 10 s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Fraction of a token each success earns (default 0.2: retries may add
    /// 20% to the successful traffic). In `0..=1`.
    pub percent: f64,
    /// Retries per second always allowed, whatever the traffic (default 10).
    pub min_retries_per_sec: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            percent: 0.2,
            min_retries_per_sec: 10,
        }
    }
}

impl BudgetConfig {
    /// Checks the values: `percent` in `0..=1`, a window of at least 10 ms.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.percent) {
            return Err(ConfigError::invalid(
                "percent",
                self.percent,
                "a number in 0..=1",
            ));
        }
        if self.window < Duration::from_millis(10) {
            return Err(ConfigError::invalid("window", self.window, "at least 10ms"));
        }
        Ok(())
    }

    /// The floor: retries allowed per window with no successes at all.
    pub fn floor(&self) -> u64 {
        let tokens = f64::from(self.min_retries_per_sec) * self.window.as_secs_f64();
        // Truncation is intended: whole retries only.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let floor = tokens as u64;
        floor
    }
}

/// A time-windowed token bucket for retries: within `window`, retries may
/// spend `min_retries_per_sec * window` tokens plus `percent` of a token per
/// success. Deposits are lock-free; withdrawals take a small mutex so
/// concurrent failures can never overdraw.
///
/// ```
/// use bus_core::time::ManualClock;
/// use bus_recovery::{BudgetConfig, RetryBudget};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let cfg = BudgetConfig { window: Duration::from_secs(1), percent: 0.5, min_retries_per_sec: 1 };
/// let budget = RetryBudget::new(cfg, Arc::new(clock.clone()));
/// budget.deposit();
/// budget.deposit(); // two successes earn one retry, the floor one more
/// assert!(budget.try_withdraw() && budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// clock.advance(Duration::from_secs(2)); // the window slid: the floor is back
/// assert!(budget.try_withdraw());
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    clock: SharedClock,
    /// The window's slots on the time line: [`SLOTS`] of `window / SLOTS`.
    ring: TickRing,
    deposit_micro: u128,
    floor_micro: u128,
    /// Per stripe, per slot: `tag << COUNT_BITS | successes`.
    deposits: Striped<[AtomicU64; SLOTS]>,
    /// Per slot: `(epoch, retries)`.
    withdrawals: Mutex<[(u64, u64); SLOTS]>,
}

impl RetryBudget {
    /// A budget starting now by `clock`. The configuration should have passed
    /// [`BudgetConfig::validate`]; out-of-range values are clamped.
    pub fn new(config: BudgetConfig, clock: SharedClock) -> Self {
        let slot = config.window.max(Duration::from_millis(10)) / SLOTS as u32;
        let ring = TickRing::new(clock.stamp().as_nanos(), slot, SLOTS as u32);
        let percent = config.percent.clamp(0.0, 1.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let deposit_micro = (percent * 1_000_000.0).round() as u128;
        Self {
            clock,
            ring,
            deposit_micro,
            floor_micro: u128::from(config.floor()) * TOKEN,
            deposits: Striped::new(Default::default),
            withdrawals: Mutex::new([(u64::MAX, 0); SLOTS]),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch_at(self.clock.stamp())
    }

    fn epoch_at(&self, now: Stamp) -> u64 {
        self.ring.tick(now.as_nanos())
    }

    /// The tag stored with a slot's count (never 0, so a fresh slot matches no epoch).
    fn tag(epoch: u64) -> u64 {
        (epoch % ((1 << (64 - COUNT_BITS)) - 1)) + 1
    }

    /// Whether tag `a` is of a later epoch than tag `b`, across the tags'
    /// wrap: a later epoch is less than half the tag space ahead. Tag 0
    /// (a slot never written) is older than every epoch.
    fn newer(a: u64, b: u64) -> bool {
        const SPACE: u64 = (1 << (64 - COUNT_BITS)) - 1;
        a != 0 && b != 0 && a != b && (a + SPACE - b) % SPACE < SPACE / 2
    }

    fn slot(epoch: u64) -> usize {
        // SLOTS is tiny: the remainder always fits.
        usize::try_from(epoch % SLOTS as u64).unwrap_or(0)
    }

    /// Records one success (earns `percent` of a token). Cheap: meant for
    /// every successful delivery.
    pub fn deposit(&self) {
        self.deposit_at(self.clock.stamp());
    }

    /// [`deposit`](Self::deposit) at `now`, a time the caller already read
    /// from the same clock (the bus stamps each success once).
    pub fn deposit_at(&self, now: Stamp) {
        // The ring remembers the current slot: no division per success.
        let at = self.ring.pos(now.as_nanos());
        let tag = Self::tag(at.tick);
        let (cells, writer) = self.deposits.mine();
        writer.update(&cells[at.slot], |current| {
            let held = current >> COUNT_BITS;
            if held != tag {
                // A stamp read before another thread of this stripe moved the
                // slot on belongs to an epoch already out of the window: it
                // earns nothing, and must not erase the newer count.
                if Self::newer(held, tag) {
                    return None;
                }
                // The slot holds an older epoch: restart it at 1.
                Some((tag << COUNT_BITS) | 1)
            } else {
                // A full count stays full rather than carry into the tag.
                (current & COUNT_MASK != COUNT_MASK).then_some(current + 1)
            }
        });
    }

    fn epochs_in_window(epoch: u64) -> impl Iterator<Item = u64> {
        (0..SLOTS as u64).filter_map(move |back| epoch.checked_sub(back))
    }

    fn successes_in_window(&self, epoch: u64) -> u64 {
        self.deposits
            .iter()
            .flat_map(|cells| {
                Self::epochs_in_window(epoch).map(move |e| {
                    let packed = cells[Self::slot(e)].load(Ordering::Relaxed);
                    if packed >> COUNT_BITS == Self::tag(e) {
                        packed & COUNT_MASK
                    } else {
                        0
                    }
                })
            })
            .sum()
    }

    fn balance_micro(&self, epoch: u64, slots: &[(u64, u64); SLOTS]) -> i128 {
        let earned =
            self.floor_micro + u128::from(self.successes_in_window(epoch)) * self.deposit_micro;
        let spent: u64 = Self::epochs_in_window(epoch)
            .map(|e| match slots[Self::slot(e)] {
                (at, n) if at == e => n,
                _ => 0,
            })
            .sum();
        i128::try_from(earned).unwrap_or(i128::MAX) - i128::from(spent) * TOKEN as i128
    }

    /// Spends one token if the window holds one; `false` means the retry must
    /// not happen.
    pub fn try_withdraw(&self) -> bool {
        let mut slots = self
            .withdrawals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let epoch = self.epoch();
        if self.balance_micro(epoch, &slots) < TOKEN as i128 {
            return false;
        }
        let slot = &mut slots[Self::slot(epoch)];
        if slot.0 == epoch {
            slot.1 += 1;
        } else {
            *slot = (epoch, 1);
        }
        true
    }

    /// Whole retries currently available.
    pub fn available(&self) -> u64 {
        let slots = self
            .withdrawals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let micro = self.balance_micro(self.epoch(), &slots).max(0);
        u64::try_from(micro / TOKEN as i128).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
