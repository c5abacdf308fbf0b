//! The state machine, in one place. Read this file first.
//!
//! ```text
//!            failures trip it                      wait_in_open (growing) elapsed,
//!   CLOSED ───────────────────────▶ OPEN ───────── first try_acquire after it ───▶ HALF_OPEN
//!     ▲                              ▲                                                │
//!     │                              │ probes' failure or slow rate over threshold,   │
//!     │                              └─ or max_wait_in_half_open passed ──────────────┤
//!     └──────────── all permitted probes reported, rates under thresholds ────────────┘
//!
//!   operator: force_open() → FORCED_OPEN, disable() → DISABLED, metrics_only() → METRICS_ONLY,
//!             reset() → CLOSED (from anywhere)
//! ```
//!
//! **The state word.** One `AtomicU64` holds `generation << 24 | admitted << 4 | kind`.
//! Every transition increments the generation, so a permit (which carries the
//! generation it was issued in) can tell whether it is stale: the outcome of a
//! stale permit is counted nowhere, and a stale permit's drop releases nothing.
//!
//! **Closed.** `try_acquire` is one atomic load; a success writes nothing shared
//! while the window holds no failure (see [`window`](crate::window)). A failure
//! or slow call is recorded and the trip rules are evaluated:
//! `consecutive failures >= consecutive_failures`, or, once the window holds at
//! least `minimum_calls` calls (capped at a count window's size),
//! `failure rate >= failure_rate_threshold` or `slow rate >= slow_call_rate_threshold`.
//!
//! **Open.** Rejects with `retry_after` = the rest of the open wait. The first
//! `try_acquire` after the wait moves it to half-open (under the transition
//! lock, re-checking the generation, so two threads cannot both do it) and
//! takes the first probe.
//!
//! **Half-open.** A probe is admitted by a compare-and-swap that increments
//! `admitted` in the state word while it is below `permitted_calls_in_half_open`:
//! never more probes than that are out or counted at once. A probe reported as
//! ignored (or a probe permit dropped unrecorded) decrements `admitted`, giving
//! its slot to another call. Success, failure and slow outcomes are counted in a
//! second word tagged with the generation; the report that completes the
//! `permitted_calls_in_half_open`-th outcome decides: reopen if the probes'
//! failure rate >= `failure_rate_threshold` (any failure when no rate is
//! configured) or their slow rate >= `slow_call_rate_threshold`; close
//! otherwise. A half-open state older than `max_wait_in_half_open` reopens at
//! the next `try_acquire` or report, even if probes never report.
//!
//! **Open waits** grow by `open_wait_multiplier` for each trip without a close in
//! between (half-open → open counts), up to `max_wait_in_open`; closing resets it.
//!
//! **Operator states.** `ForcedOpen` rejects everything (retry after
//! `wait_in_open`); `Disabled` permits everything and records nothing;
//! `MetricsOnly` permits everything and records into the window but never trips.
//!
//! Transitions other than probe admission take a mutex (they are rare); the
//! permit and record paths never do unless they cause a transition.

use bus_core::CircuitState;

const KIND_BITS: u32 = 4;
const ADMITTED_SHIFT: u32 = KIND_BITS;
const ADMITTED_BITS: u32 = 20;
const GEN_SHIFT: u32 = ADMITTED_SHIFT + ADMITTED_BITS;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;
const ADMITTED_MASK: u64 = (1 << ADMITTED_BITS) - 1;

/// A decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) kind: CircuitState,
    pub(crate) admitted: u32,
    pub(crate) generation: u64,
}

#[inline]
pub(crate) fn kind_code(kind: CircuitState) -> u64 {
    match kind {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
        CircuitState::ForcedOpen => 3,
        CircuitState::Disabled => 4,
        CircuitState::MetricsOnly => 5,
        // CircuitState is non_exhaustive; nothing else is ever stored.
        _ => 3,
    }
}

fn kind_of(code: u64) -> CircuitState {
    match code {
        0 => CircuitState::Closed,
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        4 => CircuitState::Disabled,
        5 => CircuitState::MetricsOnly,
        _ => CircuitState::ForcedOpen,
    }
}

impl Word {
    pub(crate) fn new(kind: CircuitState, generation: u64) -> Self {
        Self {
            kind,
            admitted: 0,
            generation,
        }
    }

    pub(crate) fn pack(self) -> u64 {
        (self.generation << GEN_SHIFT)
            | ((u64::from(self.admitted) & ADMITTED_MASK) << ADMITTED_SHIFT)
            | kind_code(self.kind)
    }

    pub(crate) fn unpack(word: u64) -> Self {
        Self {
            kind: kind_of(word & KIND_MASK),
            admitted: ((word >> ADMITTED_SHIFT) & ADMITTED_MASK) as u32,
            generation: word >> GEN_SHIFT,
        }
    }

    /// The generation of a closed state word, without decoding the rest (the
    /// closed-state acquire path).
    #[inline]
    pub(crate) fn closed_generation(word: u64) -> Option<u64> {
        (word & KIND_MASK == kind_code(CircuitState::Closed)).then_some(word >> GEN_SHIFT)
    }

    /// The next state, one generation later.
    pub(crate) fn next(self, kind: CircuitState) -> Self {
        Self::new(
            kind,
            self.generation.wrapping_add(1) & ((1 << (64 - GEN_SHIFT)) - 1),
        )
    }
}

/// A permit token for `bus_core::Permit`: the state word with `admitted` cleared.
pub(crate) fn token(kind: CircuitState, generation: u64) -> u64 {
    Word::new(kind, generation).pack()
}

/// The half-open outcome word: `generation tag << 48 | reported << 32 | failed << 16 | slow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Probes {
    pub(crate) tag: u16,
    pub(crate) reported: u16,
    pub(crate) failed: u16,
    pub(crate) slow: u16,
}

impl Probes {
    pub(crate) fn tag_of(generation: u64) -> u16 {
        (generation & 0xFFFF) as u16
    }

    pub(crate) fn pack(self) -> u64 {
        (u64::from(self.tag) << 48)
            | (u64::from(self.reported) << 32)
            | (u64::from(self.failed) << 16)
            | u64::from(self.slow)
    }

    pub(crate) fn unpack(word: u64) -> Self {
        Self {
            tag: (word >> 48) as u16,
            reported: (word >> 32) as u16,
            failed: (word >> 16) as u16,
            slow: word as u16,
        }
    }
}

#[cfg(all(test, not(bus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for kind in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::ForcedOpen,
            CircuitState::Disabled,
            CircuitState::MetricsOnly,
        ] {
            let w = Word {
                kind,
                admitted: 77,
                generation: (1 << 40) - 1,
            };
            assert_eq!(Word::unpack(w.pack()), w);
        }
        let p = Probes {
            tag: 9,
            reported: 3,
            failed: 2,
            slow: 1,
        };
        assert_eq!(Probes::unpack(p.pack()), p);
    }
}
