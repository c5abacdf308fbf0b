//! The [`DeadLetterStore`] plug: where messages go when they cannot be
//! delivered. `bus-dlq` provides the crash-safe SQLite store; this module has
//! the vocabulary and a plain in-memory store so the core works alone.

use crate::Envelope;
use bus_errors::ErrorReport;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;
use uuid::Uuid;

/// A dead letter's id.
pub type LetterId = Uuid;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Every allowed retry failed.
    RetriesExhausted,
    /// No retry was allowed: the policy retries nothing ([`NoRetry`],
    /// the bus with error handling switched off).
    ///
    /// [`NoRetry`]: crate::NoRetry
    NotRetried,
    /// The failure's category is not worth retrying (poison message,
    /// authentication, configuration).
    NotRetryable,
    /// The retry budget was spent: a wide outage sheds retries here.
    RetryBudgetExhausted,
    /// A subscriber queue was full under the `DeadLetter` overflow policy.
    QueueOverflow,
    /// The bus shut down before the message could be delivered.
    Shutdown,
    /// Anything a custom policy wants to say.
    Other(String),
}

impl DeadLetterReason {
    /// The stable snake_case name (`"retries_exhausted"`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::NotRetried => "not_retried",
            DeadLetterReason::NotRetryable => "not_retryable",
            DeadLetterReason::RetryBudgetExhausted => "retry_budget_exhausted",
            DeadLetterReason::QueueOverflow => "queue_overflow",
            DeadLetterReason::Shutdown => "shutdown",
            DeadLetterReason::Other(s) => s,
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that could not be delivered, with everything needed to
/// understand and replay it: the envelope (with its attempt history), the last
/// error report, the reason, and the subscriber that gave up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Unique id of the letter.
    pub id: LetterId,
    /// The message, with `attempt` and `history` as they were at the end.
    pub envelope: Envelope,
    /// The last failure.
    pub report: ErrorReport,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// The subscriber (component) that gave up.
    pub component: String,
    /// The consumer group of that subscriber.
    pub group: String,
    /// When it was dead-lettered.
    #[serde(with = "humantime_serde")]
    pub dead_lettered_at: SystemTime,
}

impl DeadLetter {
    /// A new letter with a fresh id, stamped now.
    pub fn new(
        envelope: Envelope,
        report: ErrorReport,
        reason: DeadLetterReason,
        component: impl Into<String>,
        group: impl Into<String>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            envelope,
            report,
            reason,
            component: component.into(),
            group: group.into(),
            dead_lettered_at: SystemTime::now(),
        }
    }

    /// The id of the letter for `message` in `group`, the same every time:
    /// a store that keeps one letter per id (the SQLite store does) then
    /// keeps one letter however often that delivery is dead-lettered. On a
    /// durable transport a process can die after its letter is stored and
    /// before the delivery is settled; the next run gets the delivery again
    /// and dead-letters it again. Shaped as a UUID v7 whose time is the
    /// message's (message ids are v7), so letters still sort by time.
    ///
    /// ```
    /// use bus_core::DeadLetter;
    /// let m = uuid::Uuid::now_v7();
    /// assert_eq!(DeadLetter::id_for(m, "billing"), DeadLetter::id_for(m, "billing"));
    /// assert_ne!(DeadLetter::id_for(m, "billing"), DeadLetter::id_for(m, "audit"));
    /// assert_eq!(DeadLetter::id_for(m, "billing").get_version_num(), 7);
    /// ```
    pub fn id_for(message: crate::MessageId, group: &str) -> LetterId {
        // FNV-1a, twice with different offsets: stable across builds and
        // toolchains (std's hasher is not promised to be), which an id on
        // disk must be.
        let fnv = |offset: u64| {
            let mut h = offset;
            for b in message.as_bytes().iter().chain(group.as_bytes()) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h
        };
        let mut bytes = [0_u8; 16];
        bytes[..6].copy_from_slice(&message.as_bytes()[..6]);
        bytes[6..14].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
        bytes[14..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes()[..2]);
        uuid::Builder::from_bytes(bytes)
            .with_version(uuid::Version::SortRand)
            .with_variant(uuid::Variant::RFC4122)
            .into_uuid()
    }
}

/// A dead-letter store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// The store is at its configured bound; the bus pauses the subscriber.
    #[error("dead-letter store is full: {0}")]
    Full(String),
    /// An I/O error (disk full, permissions, ...).
    #[error("dead-letter store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An earlier commit failed, so the store refuses writes rather than
    /// pretend (like a poisoned journal).
    #[error("dead-letter store refuses writes after an earlier failure: {0}")]
    Poisoned(String),
    /// The stored data is corrupt or foreign.
    #[error("dead-letter store is corrupt: {0}")]
    Corrupt(String),
    /// The store was closed.
    #[error("dead-letter store is closed")]
    Closed,
    /// No store exists where one was expected (nothing was created).
    #[error("no dead-letter store at {}", .0.display())]
    NoStore(std::path::PathBuf),
    /// The file exists but is not a dead-letter store (empty, foreign, or
    /// of a newer schema); it was left as it was.
    #[error("{} is not a dead-letter store: {reason}", path.display())]
    NotAStore {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        reason: String,
    },
    /// Input given to the store (an import file) is not valid; the store
    /// itself is fine and unchanged by the bad part.
    #[error("bad input at line {line}: {reason}")]
    BadInput {
        /// The 1-based line of the input.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was opened read-only and a command tried to change it.
    #[error("dead-letter store is open read-only")]
    ReadOnly,
    /// Anything else (database errors, encoding).
    #[error("dead-letter store error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Called exactly once when an asynchronous push ends, with its result and
/// the letter handed back.
pub type PushDone = Box<dyn FnOnce(Result<LetterId, DlqError>, DeadLetter) + Send>;

/// Where undeliverable messages are kept.
pub trait DeadLetterStore: Send + Sync {
    /// Stores `letter`. Returns `Ok` only once it is durable per the store's
    /// durability setting; on `Err` nothing may be assumed stored and the bus
    /// keeps the message.
    fn push(&self, letter: &DeadLetter) -> Result<LetterId, DlqError>;

    /// Stores `letter` without making the caller wait for durability: `done`
    /// runs exactly once, possibly on another thread, after the letter is
    /// durable (`Ok`) or refused (`Err`). The bus settles the message inside
    /// `done`, so the guarantee is the same as [`push`](Self::push)'s, but a
    /// store can gather letters from a few callers into one commit. The
    /// default pushes and calls `done` on the caller's thread.
    fn push_then(&self, letter: DeadLetter, done: PushDone) {
        let result = self.push(&letter);
        done(result, letter);
    }
}

impl<T: DeadLetterStore + ?Sized> DeadLetterStore for Arc<T> {
    fn push(&self, letter: &DeadLetter) -> Result<LetterId, DlqError> {
        (**self).push(letter)
    }
    fn push_then(&self, letter: DeadLetter, done: PushDone) {
        (**self).push_then(letter, done)
    }
}

/// An unbounded in-memory store: the core's default and a test double.
/// Letters are lost when the process ends; use `bus-dlq` in production.
#[derive(Debug, Default, Clone)]
pub struct MemoryDeadLetters {
    letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl MemoryDeadLetters {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every letter, oldest first.
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many letters are stored.
    pub fn len(&self) -> usize {
        self.letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeadLetterStore for MemoryDeadLetters {
    fn push(&self, letter: &DeadLetter) -> Result<LetterId, DlqError> {
        self.letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(letter.clone());
        Ok(letter.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn _obj_safe(_: Box<dyn DeadLetterStore>) {}

    #[test]
    fn reasons_have_stable_names_and_round_trip() {
        for r in [
            DeadLetterReason::RetriesExhausted,
            DeadLetterReason::NotRetried,
            DeadLetterReason::NotRetryable,
            DeadLetterReason::RetryBudgetExhausted,
            DeadLetterReason::QueueOverflow,
            DeadLetterReason::Shutdown,
            DeadLetterReason::Other("custom".into()),
        ] {
            let back: DeadLetterReason =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
        assert_eq!(
            DeadLetterReason::RetryBudgetExhausted.to_string(),
            "retry_budget_exhausted"
        );
    }
}
