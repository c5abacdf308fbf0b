//! The query API shared by [`SqliteDlq`](crate::SqliteDlq) and
//! [`MemoryDlq`](crate::MemoryDlq): a [`Filter`], and the [`DlqQuery`] trait
//! whose few required primitives each store implements while every operation
//! (list, count, stats, groups, purge, replay, export, import) is written once
//! here.

use crate::record::{LetterState, LetterSummary, ReplayRefusal, StoredLetter};
use bus_core::{DlqError, LetterId, Topic};
use bus_errors::ErrorCategory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

mod answers;

use answers::add_to_group;
pub use answers::{FailureGroup, ImportReport, ReplayReport, Stats};

/// How many letters the shared operations read per page.
pub(crate) const PAGE: usize = 256;

/// Which letters an operation acts on. Every field narrows the selection; the
/// default selects everything. `offset` and `limit` apply last, in id order
/// (ids are UUID v7, so that is roughly dead-letter time order), so purge,
/// replay and export act on exactly the letters `list` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Filter {
    /// Only these ids (empty: any).
    #[serde(default)]
    pub ids: Vec<LetterId>,
    /// The message's topic, exactly.
    pub topic: Option<String>,
    /// The last failure's category.
    pub category: Option<ErrorCategory>,
    /// The component (subscriber) that gave up, exactly.
    pub component: Option<String>,
    /// Why it was dead-lettered (`retries_exhausted`, `not_retryable`,
    /// ...), exactly.
    #[serde(default)]
    pub reason: Option<String>,
    /// Dead-lettered at or after.
    #[serde(default, with = "humantime_serde")]
    pub since: Option<SystemTime>,
    /// Dead-lettered strictly before.
    #[serde(default, with = "humantime_serde")]
    pub until: Option<SystemTime>,
    /// Replayed strictly before (letters never replayed do not match).
    #[serde(default, with = "humantime_serde")]
    pub replayed_before: Option<SystemTime>,
    /// Text contained in the last error message (ASCII case-insensitive).
    pub text: Option<String>,
    /// The failure signature, exactly.
    pub signature: Option<String>,
    /// The state.
    pub state: Option<LetterState>,
    /// At most this many letters.
    pub limit: Option<usize>,
    /// Skip this many matching letters first.
    #[serde(default)]
    pub offset: usize,
}

impl Filter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only these ids.
    #[must_use]
    pub fn ids(mut self, ids: impl IntoIterator<Item = LetterId>) -> Self {
        self.ids = ids.into_iter().collect();
        self
    }

    /// Only this topic.
    #[must_use]
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Only this category.
    #[must_use]
    pub fn category(mut self, category: ErrorCategory) -> Self {
        self.category = Some(category);
        self
    }

    /// Only this component.
    #[must_use]
    pub fn component(mut self, component: impl Into<String>) -> Self {
        self.component = Some(component.into());
        self
    }

    /// Only this dead-letter reason (`retries_exhausted`, ...).
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Dead-lettered in `[since, until)`; either end may be open.
    #[must_use]
    pub fn between(mut self, since: Option<SystemTime>, until: Option<SystemTime>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// Error message containing `text`.
    #[must_use]
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Only this signature.
    #[must_use]
    pub fn signature(mut self, signature: impl Into<String>) -> Self {
        self.signature = Some(signature.into());
        self
    }

    /// Only this state.
    #[must_use]
    pub fn state(mut self, state: LetterState) -> Self {
        self.state = Some(state);
        self
    }

    /// At most `limit` letters.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Skips the first `offset` matches.
    #[must_use]
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// Whether a letter matches every condition (ignores `limit`/`offset`).
    /// The SQLite store compiles the same conditions to SQL; a conformance
    /// test checks both agree.
    pub fn matches(&self, s: &LetterSummary) -> bool {
        (self.ids.is_empty() || self.ids.contains(&s.id))
            && self.topic.as_ref().is_none_or(|t| *t == s.topic)
            && self.category.is_none_or(|c| c == s.category)
            && self.component.as_ref().is_none_or(|c| *c == s.component)
            && self.reason.as_ref().is_none_or(|r| *r == s.reason)
            && self.since.is_none_or(|t| s.dead_lettered_at >= t)
            && self.until.is_none_or(|t| s.dead_lettered_at < t)
            && self
                .replayed_before
                .is_none_or(|t| s.replayed_at.is_some_and(|r| r < t))
            && self.text.as_ref().is_none_or(|t| {
                s.error_message
                    .to_ascii_lowercase()
                    .contains(&t.to_ascii_lowercase())
            })
            && self.signature.as_ref().is_none_or(|g| *g == s.signature)
            && self.state.is_none_or(|st| st == s.state)
    }

    /// The same filter without `limit` and `offset`.
    pub fn unpaged(&self) -> Filter {
        Filter {
            limit: None,
            offset: 0,
            ..self.clone()
        }
    }
}

/// The query API of a dead-letter store. Implementors provide the six
/// primitives; everything else is provided, so both stores behave alike.
pub trait DlqQuery {
    /// Matching letters (ignoring `limit`/`offset`) with an id greater than
    /// `after`, in id order, at most `max`.
    fn scan(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
    ) -> Result<Vec<LetterSummary>, DlqError>;

    /// One letter.
    fn get(&self, id: LetterId) -> Result<Option<StoredLetter>, DlqError>;

    /// Moves the letters among `ids` whose state is in `from` to `to`, setting
    /// `replayed_at` and `replay_topic`. Returns how many moved.
    fn set_state(
        &self,
        ids: &[LetterId],
        from: &[LetterState],
        to: LetterState,
        replayed_at: Option<SystemTime>,
        replay_topic: Option<&Topic>,
    ) -> Result<usize, DlqError>;

    /// Records that the bus refused to re-publish letter `id`, moving it
    /// from `replay_requested` to `to` (`replay_requested` again, to be
    /// retried at `refusal.retry_at`, or `replay_failed`). Returns whether
    /// the letter was still waiting for its replay.
    fn refuse_replay(
        &self,
        id: LetterId,
        refusal: &ReplayRefusal,
        to: LetterState,
    ) -> Result<bool, DlqError>;

    /// Deletes the letters among `ids`; returns how many were deleted.
    fn delete(&self, ids: &[LetterId]) -> Result<usize, DlqError>;

    /// Inserts letters as they are (state included), skipping ids already
    /// present; returns how many were inserted.
    fn insert(&self, letters: &[StoredLetter]) -> Result<usize, DlqError>;

    /// Whole letters, as [`scan`](DlqQuery::scan) selects them: by
    /// default `scan` then [`get`](DlqQuery::get) for each (a letter
    /// deleted in between is left out); a store may read them in one query.
    fn scan_letters(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
    ) -> Result<Vec<StoredLetter>, DlqError> {
        let mut out = Vec::new();
        for s in self.scan(filter, after, max)? {
            out.extend(self.get(s.id)?);
        }
        Ok(out)
    }

    /// Calls `f` with pages of the letters `filter` selects (offset and limit
    /// applied) until it returns `false` or they run out.
    fn walk(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(&[LetterSummary]) -> Result<bool, DlqError>,
    ) -> Result<(), DlqError> {
        pages(
            filter,
            &mut |f, after| self.scan(f, after, PAGE),
            |l| l.id,
            f,
        )
    }

    /// The letters `filter` selects.
    fn list(&self, filter: &Filter) -> Result<Vec<LetterSummary>, DlqError> {
        let mut out = Vec::new();
        self.walk(filter, &mut |page| {
            out.extend_from_slice(page);
            Ok(true)
        })?;
        Ok(out)
    }

    /// How many letters `filter` selects.
    fn count(&self, filter: &Filter) -> Result<u64, DlqError> {
        let mut n = 0_u64;
        self.walk(filter, &mut |page| {
            n += page.len() as u64;
            Ok(true)
        })?;
        Ok(n)
    }

    /// Counts by topic, category, reason and state.
    fn stats(&self) -> Result<Stats, DlqError> {
        let mut s = Stats::default();
        self.walk(&Filter::all(), &mut |page| {
            for l in page {
                s.total += 1;
                s.payload_bytes += l.payload_len;
                *s.by_topic.entry(l.topic.clone()).or_default() += 1;
                *s.by_category.entry(l.category.as_str().into()).or_default() += 1;
                *s.by_reason.entry(l.reason.clone()).or_default() += 1;
                *s.by_state.entry(l.state.as_str().into()).or_default() += 1;
                if let Some(r) = &l.replay_refusal {
                    *s.by_replay_refusal.entry(r.reason.clone()).or_default() += 1;
                }
            }
            Ok(true)
        })?;
        Ok(s)
    }

    /// The selected letters grouped by signature, largest group first.
    fn groups(&self, filter: &Filter) -> Result<Vec<FailureGroup>, DlqError> {
        walk_groups(self, filter)
    }

    /// Deletes the letters `filter` selects; returns how many.
    fn purge(&self, filter: &Filter) -> Result<u64, DlqError> {
        let ids = ids_of(self, filter)?;
        let mut n = 0;
        for chunk in ids.chunks(PAGE) {
            n += self.delete(chunk)? as u64;
        }
        Ok(n)
    }

    /// Deletes letters dead-lettered more than `age` before `now`.
    fn purge_older_than(&self, age: Duration, now: SystemTime) -> Result<u64, DlqError> {
        let mut f = Filter::all();
        f.until = Some(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
        self.purge(&f)
    }

    /// Deletes replayed letters whose audit period (`age` since their replay)
    /// is over at `now`.
    fn purge_replayed_older_than(&self, age: Duration, now: SystemTime) -> Result<u64, DlqError> {
        let mut f = Filter::all().state(LetterState::Replayed);
        f.replayed_before = Some(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
        self.purge(&f)
    }

    /// Marks the selected `dead` or `replay_failed` letters `replay_requested` (to `target`, or
    /// their own topic), for a running bus to pick up with
    /// [`take_replay_requests`](DlqQuery::take_replay_requests). Returns how many.
    fn request_replay(&self, filter: &Filter, target: Option<&Topic>) -> Result<u64, DlqError> {
        self.request_replay_ids(&ids_of(self, filter)?, target)
    }

    /// [`request_replay`](DlqQuery::request_replay) for letters already
    /// selected (a caller that listed them marks exactly what it showed);
    /// those no longer `dead` or `replay_failed` are skipped, and an earlier
    /// refusal is forgotten. Returns how many were marked.
    fn request_replay_ids(
        &self,
        ids: &[LetterId],
        target: Option<&Topic>,
    ) -> Result<u64, DlqError> {
        let mut n = 0;
        for chunk in ids.chunks(PAGE) {
            n += self.set_state(
                chunk,
                &LetterState::REPLAYABLE,
                LetterState::ReplayRequested,
                None,
                target,
            )? as u64;
        }
        Ok(n)
    }

    /// Up to `max` letters waiting for a requested replay that is due at
    /// `now`, oldest first: a letter whose last replay was refused is due
    /// again only at its [`ReplayRefusal::retry_at`], and the letters behind
    /// it are taken meanwhile.
    fn take_replay_requests(
        &self,
        max: usize,
        now: SystemTime,
    ) -> Result<Vec<StoredLetter>, DlqError> {
        let f = Filter::all().state(LetterState::ReplayRequested);
        let mut due = Vec::new();
        self.walk(&f, &mut |page| {
            due.extend(
                page.iter()
                    .filter(|l| {
                        l.replay_refusal
                            .as_ref()
                            .and_then(|r| r.retry_at)
                            .is_none_or(|at| at <= now)
                    })
                    .map(|l| l.id),
            );
            due.truncate(max);
            Ok(due.len() < max)
        })?;
        let mut out = Vec::new();
        for id in due {
            out.extend(self.get(id)?);
        }
        Ok(out)
    }

    /// Marks letters `replayed` now (the bus accepted their re-publication).
    fn mark_replayed(&self, ids: &[LetterId]) -> Result<u64, DlqError> {
        let now = SystemTime::now();
        let from = [LetterState::Dead, LetterState::ReplayRequested];
        let mut n = 0;
        for chunk in ids.chunks(PAGE) {
            n += self.set_state(chunk, &from, LetterState::Replayed, Some(now), None)? as u64;
        }
        Ok(n)
    }

    /// Re-publishes the selected letters that are not yet replayed through
    /// `publish` (see [`replay_envelope`](crate::replay_envelope)), marking
    /// each `replayed` only after `publish` returned `Ok`. A refused letter
    /// stays as it was and is listed in the report.
    fn replay(
        &self,
        filter: &Filter,
        target: Option<&Topic>,
        publish: &mut dyn FnMut(bus_core::Envelope) -> Result<(), bus_core::PublishError>,
    ) -> Result<ReplayReport, DlqError> {
        crate::replay::replay(self, filter, target, publish)
    }

    /// Writes the selected letters as JSON lines ([`StoredLetter`]), each
    /// payload as a JSON string when it is UTF-8 and as `{"base64": "..."}`
    /// otherwise; returns how many.
    fn export_jsonl(&self, filter: &Filter, out: &mut dyn std::io::Write) -> Result<u64, DlqError> {
        crate::jsonl::export(self, filter, out, &mut |_| {})
    }

    /// [`export_jsonl`](DlqQuery::export_jsonl), calling `progress` with
    /// the count written so far after each page (a progress bar's feed).
    fn export_jsonl_with_progress(
        &self,
        filter: &Filter,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, DlqError> {
        crate::jsonl::export(self, filter, out, progress)
    }

    /// Reads letters written by [`export_jsonl`](DlqQuery::export_jsonl)
    /// (payloads as text, base64, or the array of byte values earlier
    /// versions wrote).
    fn import_jsonl(&self, input: &mut dyn std::io::BufRead) -> Result<ImportReport, DlqError> {
        crate::jsonl::import(self, input)
    }
}

/// Reads the next page after an id (`None`: from the start) for a filter.
pub(crate) type Scan<'a, T> = dyn FnMut(&Filter, Option<LetterId>) -> Result<Vec<T>, DlqError> + 'a;

/// Pages of what `scan` reads for `filter` (called with the filter
/// without offset and limit, and the last id read), offset and limit
/// applied, handed to `f` until it returns `false` or they run out.
pub(crate) fn pages<T>(
    filter: &Filter,
    scan: &mut Scan<'_, T>,
    id: fn(&T) -> LetterId,
    f: &mut dyn FnMut(&[T]) -> Result<bool, DlqError>,
) -> Result<(), DlqError> {
    let base = filter.unpaged();
    let mut skip = filter.offset;
    let mut left = filter.limit.unwrap_or(usize::MAX);
    let mut after = None;
    while left > 0 {
        // Only an empty page ends it: a page may come back short of what
        // was asked for (a letter deleted between its scan and its read).
        let page = scan(&base, after)?;
        let Some(last) = page.last() else { break };
        after = Some(id(last));
        let start = skip.min(page.len());
        skip -= start;
        let take = (page.len() - start).min(left);
        left -= take;
        if take > 0 && !f(&page[start..start + take])? {
            break;
        }
    }
    Ok(())
}

/// [`DlqQuery::groups`] by walking the letters and grouping them here.
pub(crate) fn walk_groups<Q: DlqQuery + ?Sized>(
    q: &Q,
    filter: &Filter,
) -> Result<Vec<FailureGroup>, DlqError> {
    let mut groups: BTreeMap<String, FailureGroup> = BTreeMap::new();
    q.walk(filter, &mut |page| {
        for l in page {
            add_to_group(&mut groups, l);
        }
        Ok(true)
    })?;
    let mut out: Vec<_> = groups.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
    Ok(out)
}

fn ids_of<Q: DlqQuery + ?Sized>(q: &Q, filter: &Filter) -> Result<Vec<LetterId>, DlqError> {
    let mut ids = Vec::new();
    q.walk(filter, &mut |page| {
        ids.extend(page.iter().map(|l| l.id));
        Ok(true)
    })?;
    Ok(ids)
}
