//! Counts, and failure groups computed by SQLite in two passes over the selected rows
//! (the letters and the staged inbox alike), instead of decoding every
//! letter's summary as the provided [`DlqQuery::groups`] does: the latest
//! letter of each group by `max(last_failure_at)`, whose row SQLite hands
//! back with the aggregate, then the earliest first failure and the topics
//! per group and topic.

use super::file::{DlqFile, both_tables};
use super::filter_sql;
use super::schema::db_err;
use super::summary::{self, HOUR_NS, hour_of};
use crate::query::{FailureGroup, Filter};
use crate::record::{from_nanos, to_nanos};
use bus_core::DlqError;
use rusqlite::Connection;
use rusqlite::types::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The selected rows of both tables, as a subquery with `cols`.
fn selected(cols: &str, clause: &str) -> String {
    format!(
        "(SELECT {cols} FROM letters WHERE {clause} UNION ALL \
          SELECT {cols} FROM inbox WHERE {clause})"
    )
}

impl DlqFile {
    /// [`DlqQuery::count`](crate::DlqQuery::count) in SQL.
    ///
    /// With a `limit`, each table stops counting at `offset + limit`
    /// matches: what a bounded count costs does not grow with the store.
    pub(super) fn bounded_count(&self, filter: &Filter) -> Result<u64, DlqError> {
        let (clause, params) = filter_sql::compile(filter);
        let cap = filter.limit.map(|l| {
            Value::Integer(i64::try_from(l.saturating_add(filter.offset)).unwrap_or(i64::MAX))
        });
        let (sql, params) = match cap {
            None => (
                format!(
                    "SELECT (SELECT count(*) FROM letters WHERE {clause}) + \
                     (SELECT count(*) FROM inbox WHERE {clause})"
                ),
                both_tables(params),
            ),
            Some(cap) => {
                let mut p = params.clone();
                p.push(cap.clone());
                p.extend(params);
                p.push(cap);
                (
                    format!(
                        "SELECT (SELECT count(*) FROM (SELECT 1 FROM letters WHERE {clause} LIMIT ?)) + \
                         (SELECT count(*) FROM (SELECT 1 FROM inbox WHERE {clause} LIMIT ?))"
                    ),
                    p,
                )
            }
        };
        let total: i64 = self
            .conn()
            .query_row(&sql, rusqlite::params_from_iter(params), |r| r.get(0))
            .map_err(db_err)?;
        let after_offset = total.unsigned_abs().saturating_sub(filter.offset as u64);
        Ok(filter
            .limit
            .map_or(after_offset, |l| after_offset.min(l as u64)))
    }

    /// The groups of the letters `filter` selects (its `limit` and `offset`
    /// must be unset: they page letters, not groups), largest first.
    pub(super) fn sql_groups(&self, filter: &Filter) -> Result<Vec<FailureGroup>, DlqError> {
        let (clause, params) = filter_sql::compile(filter);
        let mut both = params.clone();
        both.extend(params);
        let conn = self.conn();
        // With exactly one max() in the query, SQLite takes the bare
        // columns from the row holding the maximum: the latest letter.
        // Named: SQLite, without statistics, prefers an index on a filter's
        // column (a topic's letters: a large share of the store) to the two
        // equalities on this one (a letter or a few).
        let latest = format!(
            "SELECT signature, count(*), max(last_failure_at), component, error_message, \
             category, json_extract(summary_json, '$.error_type'), \
             json_extract(summary_json, '$.reason') FROM {} GROUP BY signature",
            selected(
                "signature, last_failure_at, component, error_message, category, summary_json",
                &clause
            )
        );
        let mut groups: BTreeMap<String, FailureGroup> = BTreeMap::new();
        {
            let mut stmt = conn.prepare_cached(&latest).map_err(db_err)?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(both.iter()))
                .map_err(db_err)?;
            while let Some(r) = rows.next().map_err(db_err)? {
                let signature: String = r.get(0).map_err(db_err)?;
                let count: i64 = r.get(1).map_err(db_err)?;
                let last: i64 = r.get(2).map_err(db_err)?;
                let category: String = r.get(5).map_err(db_err)?;
                let category = category
                    .parse()
                    .map_err(|e| DlqError::Corrupt(format!("bad category in a row: {e}")))?;
                groups.insert(
                    signature.clone(),
                    FailureGroup {
                        signature,
                        count: count.unsigned_abs(),
                        first_seen: from_nanos(last),
                        last_seen: from_nanos(last),
                        error_type: r
                            .get::<_, Option<String>>(6)
                            .map_err(db_err)?
                            .unwrap_or_default(),
                        component: r.get(3).map_err(db_err)?,
                        sample_message: r.get(4).map_err(db_err)?,
                        category,
                        reason: r
                            .get::<_, Option<String>>(7)
                            .map_err(db_err)?
                            .unwrap_or_default(),
                        topics: BTreeSet::new(),
                    },
                );
            }
        }
        let spans = format!(
            "SELECT signature, topic, min(first_failure_at) FROM {} GROUP BY signature, topic",
            selected("signature, topic, first_failure_at", &clause)
        );
        let mut stmt = conn.prepare_cached(&spans).map_err(db_err)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(both.iter()))
            .map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            let signature: String = r.get(0).map_err(db_err)?;
            if let Some(g) = groups.get_mut(&signature) {
                g.topics.insert(r.get(1).map_err(db_err)?);
                g.first_seen = g.first_seen.min(from_nanos(r.get(2).map_err(db_err)?));
            }
        }
        let mut out: Vec<_> = groups.into_values().collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
        Ok(out)
    }
}

/// One group as it is gathered from `letter_groups` and the letters at the
/// edges of a time window.
#[derive(Debug, Default)]
struct Gathered {
    count: u64,
    first: i64,
    last: i64,
    topics: BTreeSet<String>,
    /// The latest staged letter, by `(last_failure_at, id)`: staged letters
    /// are not in `letter_groups`, so the sample may be one of them.
    staged_latest: Option<(i64, String, Sample)>,
}

impl Gathered {
    fn add(&mut self, topic: String, count: i64, first: i64, last: i64) {
        if self.count == 0 {
            (self.first, self.last) = (first, last);
        }
        self.count += count.unsigned_abs();
        self.first = self.first.min(first);
        self.last = self.last.max(last);
        self.topics.insert(topic);
    }
}

/// What a group shows of its latest letter.
#[derive(Debug)]
struct Sample {
    component: String,
    message: String,
    category: String,
    error_type: String,
    reason: String,
}

/// The sample's columns, in the order [`sample_of`] reads them.
const SAMPLE_COLUMNS: &str = "component, error_message, category, \
    coalesce(json_extract(summary_json, '$.error_type'), ''), \
    coalesce(json_extract(summary_json, '$.reason'), '')";

fn sample_of(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Sample> {
    Ok(Sample {
        component: r.get(at)?,
        message: r.get(at + 1)?,
        category: r.get(at + 2)?,
        error_type: r.get(at + 3)?,
        reason: r.get(at + 4)?,
    })
}

/// Whether `letter_groups` holds what `filter` selects by: the columns of
/// its key, and time by whole hours (see [`DlqFile::summary_groups`]).
fn summary_answers(filter: &Filter) -> bool {
    filter.ids.is_empty()
        && filter.text.is_none()
        && filter.replayed_before.is_none()
        && filter.limit.is_none()
        && filter.offset == 0
}

impl DlqFile {
    /// The groups of the letters `filter` selects, read from
    /// `letter_groups` (schema version 6) instead of the letters: its rows
    /// for the filter's key columns and the whole hours inside its
    /// `since`..`until` window, plus the letters of the partial hours at
    /// the window's edges and the staged letters, read one by one. Each
    /// group's sample is its latest letter by `(last_failure_at, id)`,
    /// found through `letters_signature`. The same answer as
    /// [`sql_groups`](Self::sql_groups); `None` when the summary cannot
    /// give it (another filter, a store without it, or one an older build
    /// wrote after the migration).
    pub(super) fn summary_groups(
        &self,
        filter: &Filter,
    ) -> Result<Option<Vec<FailureGroup>>, DlqError> {
        if !summary_answers(filter) {
            return Ok(None);
        }
        let conn = self.conn();
        if !summary::present(&conn).map_err(db_err)? {
            return Ok(None);
        }
        // One snapshot: a commit between the summary and the letters would
        // count what it moved twice or not at all.
        conn.execute_batch("BEGIN").map_err(db_err)?;
        let gathered = gather(&conn, filter);
        let ended = conn.execute_batch("COMMIT").map_err(db_err);
        let gathered = gathered?;
        ended?;
        Ok(gathered)
    }
}

/// The whole hours inside the filter's window, as `[from, to)` hour numbers.
fn whole_hours(filter: &Filter) -> (Option<i64>, Option<i64>) {
    let from = filter.since.map(|t| {
        let n = to_nanos(t);
        hour_of(n) + i64::from(n.rem_euclid(HOUR_NS) != 0)
    });
    let to = filter.until.map(|t| hour_of(to_nanos(t)));
    (from, to)
}

fn gather(conn: &Connection, filter: &Filter) -> Result<Option<Vec<FailureGroup>>, DlqError> {
    if !summary::in_step(conn).map_err(db_err)? {
        tracing::warn!(
            "dead-letter group counts disagree with the letter count (an older build wrote \
             the store?): grouping the letters themselves; `verify` says more"
        );
        return Ok(None);
    }
    let mut groups: BTreeMap<String, Gathered> = BTreeMap::new();
    let (from, to) = whole_hours(filter);
    let mut keyed = vec!["1".to_owned()];
    let mut params: Vec<Value> = Vec::new();
    let text = |s: &str| Value::Text(s.to_owned());
    for (col, v) in [
        ("topic", filter.topic.as_deref().map(text)),
        ("category", filter.category.map(|c| text(c.as_str()))),
        ("component", filter.component.as_deref().map(text)),
        ("signature", filter.signature.as_deref().map(text)),
        ("reason", filter.reason.as_deref().map(text)),
        ("state", filter.state.map(|s| text(s.as_str()))),
    ] {
        if let Some(v) = v {
            keyed.push(format!("{col} = ?"));
            params.push(v);
        }
    }
    for (cond, hour) in [("hour >= ?", from), ("hour < ?", to)] {
        if let Some(h) = hour {
            keyed.push(cond.to_owned());
            params.push(Value::Integer(h));
        }
    }
    let sql = format!(
        "SELECT signature, topic, letters, first_at, last_at FROM letter_groups WHERE {}",
        keyed.join(" AND ")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(db_err)?;
    while let Some(r) = rows.next().map_err(db_err)? {
        groups.entry(r.get(0).map_err(db_err)?).or_default().add(
            r.get(1).map_err(db_err)?,
            r.get(2).map_err(db_err)?,
            r.get(3).map_err(db_err)?,
            r.get(4).map_err(db_err)?,
        );
    }
    drop(rows);
    let (clause, params) = filter_sql::compile(filter);
    // The letters of the partial hours: before the first whole hour, and
    // from the end of the last. A window without a whole hour is all edge.
    let edges: Vec<(String, i64)> = match (from, to) {
        (Some(f), Some(t)) if f >= t => vec![("1".to_owned(), 0)],
        _ => [
            from.map(|f| ("dead_lettered_at < ?".to_owned(), f.saturating_mul(HOUR_NS))),
            to.map(|t| {
                (
                    "dead_lettered_at >= ?".to_owned(),
                    t.saturating_mul(HOUR_NS),
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    for (edge, at) in edges {
        let sql = format!(
            "SELECT signature, topic, first_failure_at, last_failure_at FROM letters \
             WHERE {clause} AND {edge}"
        );
        let mut p = params.clone();
        if edge != "1" {
            p.push(Value::Integer(at));
        }
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(p)).map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            groups.entry(r.get(0).map_err(db_err)?).or_default().add(
                r.get(1).map_err(db_err)?,
                1,
                r.get(2).map_err(db_err)?,
                r.get(3).map_err(db_err)?,
            );
        }
    }
    let sql = format!(
        "SELECT signature, topic, first_failure_at, last_failure_at, id, {SAMPLE_COLUMNS} \
         FROM inbox WHERE {clause}"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(db_err)?;
    while let Some(r) = rows.next().map_err(db_err)? {
        let g = groups.entry(r.get(0).map_err(db_err)?).or_default();
        let last: i64 = r.get(3).map_err(db_err)?;
        g.add(
            r.get(1).map_err(db_err)?,
            1,
            r.get(2).map_err(db_err)?,
            last,
        );
        let id: String = r.get(4).map_err(db_err)?;
        if g.staged_latest
            .as_ref()
            .is_none_or(|(l, i, _)| (last, &id) > (*l, i))
        {
            g.staged_latest = Some((last, id, sample_of(r, 5).map_err(db_err)?));
        }
    }
    drop(rows);
    // Named: SQLite, without statistics, prefers an index on a filter's
    // column (a topic's letters: a large share of the store) to the two
    // equalities on this one (a letter or a few).
    let latest = format!(
        "SELECT id, {SAMPLE_COLUMNS} FROM letters INDEXED BY letters_signature \
         WHERE signature = ? AND last_failure_at = ? AND {clause} ORDER BY id DESC LIMIT 1"
    );
    let mut latest = conn.prepare_cached(&latest).map_err(db_err)?;
    let mut out = Vec::with_capacity(groups.len());
    for (signature, g) in groups {
        let mut p = vec![Value::Text(signature.clone()), Value::Integer(g.last)];
        p.extend(params.iter().cloned());
        let indexed = latest
            .query_row(rusqlite::params_from_iter(p), |r| {
                Ok((r.get::<_, String>(0)?, sample_of(r, 1)?))
            })
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(db_err)?;
        let staged = g.staged_latest.filter(|(last, _, _)| *last == g.last);
        let sample = match (indexed, staged) {
            (Some((a, s)), Some((_, b, t))) => Some(if b > a { t } else { s }),
            (Some((_, s)), None) | (None, Some((_, _, s))) => Some(s),
            (None, None) => None,
        };
        let Some(sample) = sample else {
            tracing::warn!(
                %signature,
                "dead-letter group counts name a letter the store lacks: grouping the letters \
                 themselves; `verify` says more"
            );
            return Ok(None);
        };
        let category = sample
            .category
            .parse()
            .map_err(|e| DlqError::Corrupt(format!("bad category in a row: {e}")))?;
        out.push(FailureGroup {
            signature,
            count: g.count,
            first_seen: from_nanos(g.first.min(g.last)),
            last_seen: from_nanos(g.last),
            error_type: sample.error_type,
            component: sample.component,
            sample_message: sample.message,
            category,
            reason: sample.reason,
            topics: g.topics,
        });
    }
    out.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
    Ok(Some(out))
}
