//! Test doubles shared by every bus crate's tests (like `tower-test`), so no
//! test copies its own.
//!
//! - [`ManualClock`]: time that moves only when a test says so.
//! - [`FlakyHandler`] / [`Script`]: handlers that fail, panic or succeed on a
//!   script, per message.
//! - [`FaultInjector`]: seeded random transient failures, poison messages and
//!   panics, decided per message id so a retry of a transient failure can
//!   succeed while a poison message never does.
//! - [`RecordingObserver`]: counts every [`BusEvent`] kind, and publishes.
//! - [`FlakyStore`]: a dead-letter store that refuses writes on demand.
//! - [`assert_invariant`] and [`wait_until`].
//! - [`ticker`]: whether a tokio runtime stalls, net of the OS's preemption.
//!
//! ```
//! use bus_test::{FaultInjector, assert_invariant};
//! use bus_core::Bus;
//! use std::time::Duration;
//!
//! let bus = Bus::builder().build();
//! let faults = FaultInjector::new(7).transient(0.2).poison(0.05);
//! bus.subscriber("s").topic("t").start(faults.handler()).unwrap();
//! for _ in 0..100 {
//!     bus.publish("t", &b"x"[..]).unwrap();
//! }
//! let report = bus.shutdown(Duration::from_secs(10));
//! assert_invariant(&report.stats);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conformance;
mod measure;
pub mod nats;
mod proc;
pub mod ticker;

pub use bus_core::time::{Clock, ManualClock};
pub use measure::quartiles;
pub use proc::{ProcStatus, proc_status};

use bus_core::{
    BusEvent, BusStats, DeadLetter, DeadLetterStore, DlqError, Handler, LetterId,
    MemoryDeadLetters, Message, MessageId, Observer,
};
use bus_errors::{ErrorCategory, HandlerError, Severity};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Asserts the no-loss invariant exactly, with its six terms
/// (`published = acked + dead_lettered + rejected_at_publish +
/// discarded_by_policy + returned_at_shutdown + pending`), printing the
/// ledger on failure.
///
/// # Panics
/// When the invariant does not hold.
#[track_caller]
pub fn assert_invariant(stats: &BusStats) {
    assert!(
        stats.invariant_holds(),
        "invariant broken: published {} != acked {} + dead_lettered {} + rejected_at_publish {} + discarded_by_policy {} + returned_at_shutdown {} + pending {} ({stats:?})",
        stats.published,
        stats.acked,
        stats.dead_lettered,
        stats.rejected_at_publish,
        stats.discarded_by_policy,
        stats.returned_at_shutdown,
        stats.pending,
    );
}

/// A dead letter for tests of stores and their commands: `message` is both
/// the payload and the error, the error type is named after `category`, and
/// the letter was given up by `component` in group `g` after its retries.
///
/// ```
/// use bus_errors::ErrorCategory;
/// let l = bus_test::letter("orders", ErrorCategory::Timeout, "billing", "slow");
/// assert_eq!(l.report.error_type, "TimeoutError");
/// ```
pub fn letter(topic: &str, category: ErrorCategory, component: &str, message: &str) -> DeadLetter {
    let topic =
        bus_core::Topic::new(topic).unwrap_or_else(|e| panic!("bad test topic {topic}: {e}"));
    let env = bus_core::Envelope::new(topic, message.as_bytes().to_vec());
    let mut report =
        bus_errors::ErrorReport::new(bus_errors::Classification::of(category), component, message);
    report.error_type = format!("{category:?}Error");
    DeadLetter::new(
        env,
        report,
        bus_core::DeadLetterReason::RetriesExhausted,
        component,
        "g",
    )
}

/// Waits (polling, real time) until `cond` holds or `timeout` passes; returns
/// whether it held. For waiting on other threads, never on time itself.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(1));
    }
}

/// What a scripted handler does on one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Succeed.
    Ok,
    /// Fail with an error of this class.
    Fail(ErrorCategory),
    /// Panic with this message.
    Panic(String),
}

/// The per-message script of a [`FlakyHandler`]: steps for attempts 1, 2, ...;
/// attempts past the end repeat the last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script(pub Vec<Step>);

impl Script {
    /// Fails `n` times with `category`, then succeeds.
    pub fn fail_then_ok(n: usize, category: ErrorCategory) -> Self {
        let mut steps = vec![Step::Fail(category); n];
        steps.push(Step::Ok);
        Self(steps)
    }

    /// Always fails with `category`.
    pub fn always_fail(category: ErrorCategory) -> Self {
        Self(vec![Step::Fail(category)])
    }

    /// Always panics.
    pub fn always_panic() -> Self {
        Self(vec![Step::Panic("scripted panic".into())])
    }
}

/// The error a scripted or injected failure returns (classified by its category).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedError {
    /// The category it states.
    pub category: ErrorCategory,
    /// Which attempt failed.
    pub attempt: u32,
}

impl std::fmt::Display for InjectedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "injected {} failure on attempt {}",
            self.category, self.attempt
        )
    }
}

impl std::error::Error for InjectedError {}

impl bus_errors::Classify for InjectedError {
    fn category(&self) -> ErrorCategory {
        self.category
    }
    fn severity(&self) -> Severity {
        self.category.default_severity()
    }
}

fn injected(category: ErrorCategory, attempt: u32) -> HandlerError {
    HandlerError::from(InjectedError { category, attempt })
        .with_class(category, category.default_severity())
}

/// A handler that follows a [`Script`] per message (the same script for every
/// message), counting calls.
#[derive(Debug, Clone)]
pub struct FlakyHandler {
    script: Arc<Script>,
    calls: Arc<AtomicU64>,
    successes: Arc<AtomicU64>,
    attempts_seen: Arc<Mutex<HashMap<MessageId, u32>>>,
}

impl FlakyHandler {
    /// A handler following `script`.
    pub fn new(script: Script) -> Self {
        Self {
            script: Arc::new(script),
            calls: Arc::default(),
            successes: Arc::default(),
            attempts_seen: Arc::default(),
        }
    }

    /// How many times it was called.
    pub fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }

    /// How many calls succeeded.
    pub fn successes(&self) -> u64 {
        self.successes.load(SeqCst)
    }

    /// The highest attempt number seen for `id`.
    pub fn attempts_of(&self, id: MessageId) -> Option<u32> {
        self.attempts_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }
}

impl Handler for FlakyHandler {
    fn handle(&self, msg: &Message<'_>) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, SeqCst);
        self.attempts_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(msg.id, msg.attempt);
        let idx = usize::try_from(msg.attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        let step = self
            .script
            .0
            .get(idx)
            .or(self.script.0.last())
            .cloned()
            .unwrap_or(Step::Ok);
        match step {
            Step::Ok => {
                self.successes.fetch_add(1, SeqCst);
                Ok(())
            }
            Step::Fail(category) => Err(injected(category, msg.attempt)),
            Step::Panic(m) => panic!("{m}"),
        }
    }
}

/// Seeded random faults, decided per message id: a message is transient (fails
/// on its first attempts, then succeeds), poison (always fails with
/// SERIALIZATION), panicking (always panics), slow (records a delay), or clean.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    seed: u64,
    transient: f64,
    transient_failures: u32,
    poison: f64,
    panic: f64,
    acked: Arc<Mutex<HashMap<MessageId, u32>>>,
}

/// What the injector decided for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No fault.
    Clean,
    /// Fails this many times (MESSAGE_PROCESSING), then succeeds.
    Transient(u32),
    /// Always fails with SERIALIZATION.
    Poison,
    /// Always panics.
    Panic,
}

impl FaultInjector {
    /// An injector with no faults, seeded.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            transient: 0.0,
            transient_failures: 1,
            poison: 0.0,
            panic: 0.0,
            acked: Arc::default(),
        }
    }

    /// Share of messages that fail transiently.
    #[must_use]
    pub fn transient(mut self, rate: f64) -> Self {
        self.transient = rate;
        self
    }

    /// How many times a transient message fails before succeeding (default 1).
    #[must_use]
    pub fn transient_failures(mut self, n: u32) -> Self {
        self.transient_failures = n;
        self
    }

    /// Share of poison messages.
    #[must_use]
    pub fn poison(mut self, rate: f64) -> Self {
        self.poison = rate;
        self
    }

    /// Share of messages whose handler panics.
    #[must_use]
    pub fn panics(mut self, rate: f64) -> Self {
        self.panic = rate;
        self
    }

    /// The fault for message `id` (deterministic in seed and id).
    pub fn fault_for(&self, id: MessageId) -> Fault {
        let (hi, lo) = id.as_u64_pair();
        let mut rng = fastrand::Rng::with_seed(self.seed ^ hi.rotate_left(17) ^ lo);
        let x = rng.f64();
        if x < self.poison {
            Fault::Poison
        } else if x < self.poison + self.panic {
            Fault::Panic
        } else if x < self.poison + self.panic + self.transient {
            Fault::Transient(self.transient_failures)
        } else {
            Fault::Clean
        }
    }

    /// Message ids acked through [`handler`](Self::handler), with the attempt that succeeded.
    pub fn acked(&self) -> HashMap<MessageId, u32> {
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A handler applying these faults.
    pub fn handler(&self) -> impl Handler + Clone {
        let me = self.clone();
        move |msg: &Message<'_>| -> Result<(), HandlerError> {
            match me.fault_for(msg.id) {
                Fault::Poison => Err(injected(ErrorCategory::Serialization, msg.attempt)),
                Fault::Panic => panic!("injected panic for {}", msg.id),
                Fault::Transient(n) if msg.attempt <= n => {
                    Err(injected(ErrorCategory::MessageProcessing, msg.attempt))
                }
                _ => {
                    me.acked
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(msg.id, msg.attempt);
                    Ok(())
                }
            }
        }
    }
}

/// Counts every event kind, and keeps the last few reports.
#[derive(Debug, Default)]
pub struct RecordingObserver {
    counts: Mutex<HashMap<&'static str, u64>>,
    reports: Mutex<Vec<bus_errors::ErrorReport>>,
}

impl RecordingObserver {
    /// A fresh observer.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn bump(&self, kind: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }

    /// How many events of `kind` were seen (`"acked"`, `"failed"`,
    /// `"retried"`, `"dead_lettered"`, `"escalated"`, `"discarded"`,
    /// `"rejected"`, `"parked"`, `"transition"`, `"dlq_failed"`, `"dlq_recovered"`).
    pub fn count(&self, kind: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// Every failure report seen, in order.
    pub fn reports(&self) -> Vec<bus_errors::ErrorReport> {
        self.reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Observer for RecordingObserver {
    fn on_event(&self, _at: bus_core::time::Stamp, event: &BusEvent<'_>) {
        let kind = match event {
            BusEvent::Rejected { .. } => "rejected",
            BusEvent::Acked { .. } => "acked",
            BusEvent::Failed { report } => {
                self.reports
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((*report).clone());
                "failed"
            }
            BusEvent::Retried { .. } => "retried",
            BusEvent::DeadLettered { .. } => "dead_lettered",
            BusEvent::Escalated { .. } => "escalated",
            BusEvent::Discarded { .. } => "discarded",
            BusEvent::Parked { .. } => "parked",
            BusEvent::CircuitTransition { .. } => "transition",
            BusEvent::DlqWriteFailed { .. } => "dlq_failed",
            BusEvent::DlqRecovered { .. } => "dlq_recovered",
            _ => "other",
        };
        self.bump(kind);
    }
}

/// A dead-letter store that refuses writes while `failing` is set (and for the
/// first `fail_first` pushes), storing into a [`MemoryDeadLetters`] otherwise.
#[derive(Debug, Default)]
pub struct FlakyStore {
    /// Where accepted letters go.
    pub inner: MemoryDeadLetters,
    failing: AtomicBool,
    fail_first: AtomicUsize,
    refused: AtomicU64,
}

impl FlakyStore {
    /// A store that refuses its first `n` pushes.
    pub fn failing_first(n: usize) -> Arc<Self> {
        let s = Self::default();
        s.fail_first.store(n, SeqCst);
        Arc::new(s)
    }

    /// Refuse (or accept) every push from now on.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, SeqCst);
    }

    /// How many pushes were refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(SeqCst)
    }
}

impl DeadLetterStore for FlakyStore {
    fn push(&self, letter: &DeadLetter) -> Result<LetterId, DlqError> {
        let first = self
            .fail_first
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if first || self.failing.load(SeqCst) {
            self.refused.fetch_add(1, SeqCst);
            return Err(DlqError::Io(std::io::Error::from_raw_os_error(28)));
        }
        self.inner.push(letter)
    }
}
