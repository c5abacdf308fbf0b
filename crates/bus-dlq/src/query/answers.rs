//! What the queries answer: counts, failure groups, and the reports of a
//! replay and of an import.

use crate::record::LetterSummary;
use bus_core::LetterId;
use bus_errors::ErrorCategory;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// Counts by topic, category, reason and state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Letters in every state.
    pub total: u64,
    /// Payload bytes in every state.
    pub payload_bytes: u64,
    /// Letters per topic.
    pub by_topic: BTreeMap<String, u64>,
    /// Letters per category.
    pub by_category: BTreeMap<String, u64>,
    /// Letters per reason.
    pub by_reason: BTreeMap<String, u64>,
    /// Letters per state.
    pub by_state: BTreeMap<String, u64>,
    /// Letters whose last replay the bus refused, per reason.
    #[serde(default)]
    pub by_replay_refusal: BTreeMap<String, u64>,
}

/// Letters that failed the same way (same signature), as ServicePulse groups
/// repeat failures, so one fix can replay the whole group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailureGroup {
    /// The shared signature.
    pub signature: String,
    /// How many letters.
    pub count: u64,
    /// The earliest first failure.
    #[serde(with = "humantime_serde")]
    pub first_seen: SystemTime,
    /// The latest last failure.
    #[serde(with = "humantime_serde")]
    pub last_seen: SystemTime,
    /// The error type.
    pub error_type: String,
    /// The component.
    pub component: String,
    /// One error message of the group (the latest).
    pub sample_message: String,
    /// The category of that latest letter.
    pub category: ErrorCategory,
    /// Why that latest letter was dead-lettered.
    #[serde(default)]
    pub reason: String,
    /// Every topic seen in the group.
    pub topics: BTreeSet<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Letters selected (replayed ones are never re-published).
    pub selected: u64,
    /// Re-published and marked `replayed`.
    pub replayed: Vec<LetterId>,
    /// Publish refused: still `dead`, with the error.
    pub failed: Vec<(LetterId, String)>,
    /// Published, but marking them failed: they may be replayed twice.
    pub unmarked: Vec<(LetterId, String)>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImportReport {
    /// Lines read.
    pub read: u64,
    /// Letters inserted.
    pub inserted: u64,
    /// Letters whose id was already present (left untouched).
    pub existing: u64,
}

/// Counts `l` into its signature's group.
pub(super) fn add_to_group(groups: &mut BTreeMap<String, FailureGroup>, l: &LetterSummary) {
    let g = groups
        .entry(l.signature.clone())
        .or_insert_with(|| FailureGroup {
            signature: l.signature.clone(),
            count: 0,
            first_seen: l.first_failure_at,
            last_seen: l.last_failure_at,
            error_type: l.error_type.clone(),
            component: l.component.clone(),
            sample_message: l.error_message.clone(),
            category: l.category,
            reason: l.reason.clone(),
            topics: BTreeSet::new(),
        });
    g.count += 1;
    g.first_seen = g.first_seen.min(l.first_failure_at);
    if l.last_failure_at >= g.last_seen {
        g.last_seen = l.last_failure_at;
        g.sample_message.clone_from(&l.error_message);
        g.category = l.category;
        g.reason.clone_from(&l.reason);
    }
    g.topics.insert(l.topic.clone());
}
