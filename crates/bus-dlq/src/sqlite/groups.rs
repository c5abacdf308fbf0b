//! Counts, and failure groups computed by SQLite in two passes over the selected rows
//! (the letters and the staged inbox alike), instead of decoding every
//! letter's summary as the provided [`DlqQuery::groups`] does: the latest
//! letter of each group by `max(last_failure_at)`, whose row SQLite hands
//! back with the aggregate, then the earliest first failure and the topics
//! per group and topic.

use super::file::{DlqFile, both_tables};
use super::filter_sql;
use super::schema::db_err;
use crate::query::{FailureGroup, Filter};
use crate::record::from_nanos;
use bus_core::DlqError;
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
