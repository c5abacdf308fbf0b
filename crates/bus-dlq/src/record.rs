//! What the store keeps per letter beyond the [`DeadLetter`] itself.

use bus_core::{DeadLetter, LetterId, Topic};
use bus_errors::ErrorCategory;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a letter is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LetterState {
    /// Parked, waiting for someone to look at it.
    Dead,
    /// An operator asked for a replay; the running bus will pick it up.
    ReplayRequested,
    /// Re-published and accepted by the bus; kept for the audit period.
    Replayed,
    /// The bus refused its replay for a reason that will not change by
    /// itself (no subscriber for the topic, payload over the limit, invalid
    /// topic); the reason is in [`StoredLetter::replay_refusal`]. Fix the
    /// cause, then request the replay again.
    ReplayFailed,
}

impl LetterState {
    /// Every state.
    pub const ALL: [LetterState; 4] = [
        LetterState::Dead,
        LetterState::ReplayRequested,
        LetterState::Replayed,
        LetterState::ReplayFailed,
    ];

    /// The states an operator may request a replay from.
    pub const REPLAYABLE: [LetterState; 2] = [LetterState::Dead, LetterState::ReplayFailed];

    /// The stored name: `dead`, `replay_requested`, `replayed`, `replay_failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LetterState::Dead => "dead",
            LetterState::ReplayRequested => "replay_requested",
            LetterState::Replayed => "replayed",
            LetterState::ReplayFailed => "replay_failed",
        }
    }
}

impl fmt::Display for LetterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`LetterState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown letter state {:?}; expected dead, replay_requested, replayed or replay_failed",
    crate::text::excerpt(.0, 40)
)]
pub struct UnknownState(pub String);

impl FromStr for LetterState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        LetterState::ALL
            .into_iter()
            .find(|st| st.as_str() == norm)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A letter as stored: the [`DeadLetter`] plus its state and signature.
/// This is also the line format of JSONL export and import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredLetter {
    /// The letter, exactly as pushed.
    pub letter: DeadLetter,
    /// Its state.
    pub state: LetterState,
    /// When it was replayed, if it was.
    #[serde(default, with = "humantime_serde")]
    pub replayed_at: Option<SystemTime>,
    /// The topic a requested replay goes to (`None`: its own topic).
    #[serde(default)]
    pub replay_topic: Option<Topic>,
    /// The failure signature (see [`signature`](crate::signature)).
    pub signature: String,
    /// Why the bus refused the last replay of this letter, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_refusal: Option<ReplayRefusal>,
}

/// The bus refused to re-publish a letter: why, how often, and when it is
/// tried again (for a refusal that may pass by itself, such as a full queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplayRefusal {
    /// The bus's error, shortened if long.
    pub reason: String,
    /// Refusals so far (since the replay was last requested).
    pub attempts: u32,
    /// When it was last refused.
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    /// When the bus tries again; `None` when it will not by itself (state
    /// [`LetterState::ReplayFailed`]).
    #[serde(default, with = "humantime_serde")]
    pub retry_at: Option<SystemTime>,
}

impl ReplayRefusal {
    /// A refusal with `reason` (shortened to a few hundred characters, with
    /// its length) at `at`, the `attempts`-th in a row.
    pub fn new(reason: &str, attempts: u32, at: SystemTime, retry_at: Option<SystemTime>) -> Self {
        Self {
            reason: crate::text::excerpt(reason, crate::text::MAX_ECHO),
            attempts,
            at,
            retry_at,
        }
    }
}

impl StoredLetter {
    /// A freshly pushed letter: state `dead`, signature computed.
    pub fn new(letter: DeadLetter) -> Self {
        let signature = letter_signature(&letter);
        Self {
            letter,
            state: LetterState::Dead,
            replayed_at: None,
            replay_topic: None,
            signature,
            replay_refusal: None,
        }
    }

    /// The indexed facts of this letter.
    pub fn summary(&self) -> LetterSummary {
        let l = &self.letter;
        LetterSummary {
            id: l.id,
            message_id: l.envelope.id,
            topic: l.envelope.topic.as_str().to_owned(),
            category: l.report.category,
            severity: l.report.severity.as_str().to_owned(),
            reason: l.reason.as_str().to_owned(),
            component: l.component.clone(),
            group: l.group.clone(),
            error_type: l.report.error_type.clone(),
            error_message: l.report.message.clone(),
            signature: self.signature.clone(),
            first_failure_at: first_failure_at(l),
            last_failure_at: l.report.timestamp,
            dead_lettered_at: l.dead_lettered_at,
            attempts: l.envelope.attempt,
            payload_len: l.envelope.payload.len() as u64,
            state: self.state,
            replayed_at: self.replayed_at,
            replay_refusal: self.replay_refusal.clone(),
        }
    }
}

/// The signature of a letter: its last error's type and message, and the
/// component that gave up.
pub fn letter_signature(letter: &DeadLetter) -> String {
    crate::signature(
        &letter.report.error_type,
        &letter.report.message,
        &letter.component,
    )
}

/// When the letter first failed: its oldest history record, else its report.
pub(crate) fn first_failure_at(letter: &DeadLetter) -> SystemTime {
    letter
        .envelope
        .history
        .iter()
        .map(|h| h.at)
        .min()
        .map_or(letter.report.timestamp, |h| h.min(letter.report.timestamp))
}

/// The indexed columns of a letter, without payload and JSON: what `list`
/// shows and what groups and stats are computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LetterSummary {
    /// Letter id.
    pub id: LetterId,
    /// The message's id.
    pub message_id: uuid::Uuid,
    /// The message's topic.
    pub topic: String,
    /// The last failure's category.
    pub category: ErrorCategory,
    /// The last failure's severity.
    pub severity: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The subscriber that gave up.
    pub component: String,
    /// Its consumer group.
    pub group: String,
    /// The last error's type.
    pub error_type: String,
    /// The last error's message.
    pub error_message: String,
    /// The failure signature.
    pub signature: String,
    /// The first failure.
    #[serde(with = "humantime_serde")]
    pub first_failure_at: SystemTime,
    /// The last failure.
    #[serde(with = "humantime_serde")]
    pub last_failure_at: SystemTime,
    /// When it was dead-lettered.
    #[serde(with = "humantime_serde")]
    pub dead_lettered_at: SystemTime,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Payload size in bytes.
    pub payload_len: u64,
    /// Its state.
    pub state: LetterState,
    /// When it was replayed.
    #[serde(default, with = "humantime_serde")]
    pub replayed_at: Option<SystemTime>,
    /// Why the bus refused its last replay, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_refusal: Option<ReplayRefusal>,
}

/// A time as signed nanoseconds since the Unix epoch (what the database
/// stores). Saturates outside roughly 1678..2262.
pub(crate) fn to_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// The inverse of [`to_nanos`].
pub(crate) fn from_nanos(n: i64) -> SystemTime {
    if n >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_nanos(n.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_print() {
        for s in LetterState::ALL {
            assert_eq!(s.as_str().parse::<LetterState>().unwrap(), s);
        }
        assert_eq!(
            "Replay-Requested".parse::<LetterState>().unwrap(),
            LetterState::ReplayRequested
        );
        assert!(matches!(
            "gone".parse::<LetterState>(),
            Err(UnknownState(_))
        ));
    }

    #[test]
    fn nanos_round_trip_both_sides_of_the_epoch() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            UNIX_EPOCH - Duration::new(5, 1),
        ] {
            assert_eq!(from_nanos(to_nanos(t)), t);
        }
    }
}
