//! `letter_groups` (schema version 6): per key (signature, topic,
//! component, category, reason, state, hour of `dead_lettered_at`), how
//! many letters `letters` holds, their earliest first failure and latest
//! last failure. Kept in the transaction of every change to `letters`, a
//! statement per transaction or per distinct key, never per row: what the
//! groups view reads instead of the letters (see [`super::groups`]).

use super::file::DlqFile;
use bus_core::DlqError;
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};
use std::collections::HashMap;

impl DlqFile {
    /// [`write_folded`](Self::write_folded) for a statement that deletes
    /// (`to` is `None`) or moves to state `to` the rows of `letters` that
    /// `selection` (with `params`) names, keeping `letter_groups` in step
    /// in the same transaction. `change` runs the statement.
    pub(super) fn change_folded(
        &self,
        selection: &str,
        params: &[Value],
        to: Option<&str>,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
    ) -> Result<usize, DlqError> {
        self.write_folded(|tx| {
            let leaving = before_change(tx, selection, params, to)?;
            let changed = change(tx)?;
            after_change(tx, &leaving, to)?;
            Ok(changed)
        })
    }
}

/// Whether the store has `letter_groups` (schema version 6 on; a read-only
/// open reads older stores as they are).
pub(crate) fn present(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE name = 'letter_groups')",
    )?
    .query_row([], |r| r.get(0))
}

/// Nanoseconds in the hour a key counts letters by.
pub(crate) const HOUR_NS: i64 = 3_600_000_000_000;

/// The key columns of a letter, computed from a `letters` row.
const KEY_OF_ROW: &str = "signature, topic, component, category, \
    coalesce(json_extract(summary_json, '$.reason'), ''), state, \
    CASE WHEN dead_lettered_at >= 0 THEN dead_lettered_at / 3600000000000 \
    ELSE (dead_lettered_at + 1) / 3600000000000 - 1 END";

/// The key columns of `letter_groups`, in the order of [`KEY_OF_ROW`].
const KEY: &str = "signature, topic, component, category, reason, state, hour";

/// The condition naming one key of `letter_groups`, parameters `?1`..`?7`.
const IS_KEY: &str = "signature = ?1 AND topic = ?2 AND component = ?3 AND category = ?4 \
    AND reason = ?5 AND state = ?6 AND hour = ?7";

/// The hour (floor) of a time in nanoseconds, as [`KEY_OF_ROW`] computes it.
pub(crate) fn hour_of(nanos: i64) -> i64 {
    nanos.div_euclid(HOUR_NS)
}

/// Adds the `n` rows inserted into `letters` last to the summary, in the
/// caller's transaction: one upsert per distinct key among them. The rows
/// a transaction inserts are the `n` largest rowids, and consecutive (see
/// [`super::schema::bytes_of_last`]).
pub(crate) fn add_last(conn: &Connection, n: usize) -> rusqlite::Result<()> {
    if n == 0 {
        return Ok(());
    }
    conn.prepare_cached(&add_last_sql())?
        .execute([i64::try_from(n).unwrap_or(i64::MAX)])?;
    Ok(())
}

/// Adds the `?1` rows of `letters` with the largest rowids to the summary,
/// sought by rowid.
pub(crate) fn add_last_sql() -> String {
    format!(
        "INSERT INTO letter_groups ({KEY}, letters, first_at, last_at) \
         SELECT {KEY_OF_ROW}, count(*), min(first_failure_at), max(last_failure_at) \
         FROM letters WHERE rowid > (SELECT max(rowid) FROM letters) - ?1 \
         GROUP BY 1, 2, 3, 4, 5, 6, 7 \
         ON CONFLICT ({KEY}) DO UPDATE SET letters = letters + excluded.letters, \
         first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at)"
    )
}

/// Adds rows the writer inserted into `letters` (pushed, so in state
/// `dead`) to the summary, in the caller's transaction: their keys are
/// gathered here, and each distinct key is upserted once. The same as
/// [`add_last`] without reading the rows back (which sorted them).
pub(crate) fn add_pushed<'a>(
    conn: &Connection,
    rows: impl Iterator<Item = &'a super::row::EncodedRow>,
) -> rusqlite::Result<()> {
    let mut keys: HashMap<([&str; 6], i64), (i64, i64, i64)> = HashMap::new();
    for row in rows {
        let (key, hour, first, last) = row.group_key();
        let e = keys.entry((key, hour)).or_insert((0, first, last));
        e.0 += 1;
        e.1 = e.1.min(first);
        e.2 = e.2.max(last);
    }
    let mut upsert = conn.prepare_cached(UPSERT)?;
    for ((key, hour), (letters, first, last)) in keys {
        let params: [&dyn rusqlite::ToSql; 10] = [
            &key[0], &key[1], &key[2], &key[3], &key[4], &key[5], &hour, &letters, &first, &last,
        ];
        upsert.execute(&params[..])?;
    }
    Ok(())
}

/// Adds `letters` letters with their earliest first and latest last
/// failure to a key (`?1`..`?7`; `?8`..`?10`).
const UPSERT: &str = "INSERT INTO letter_groups \
    (signature, topic, component, category, reason, state, hour, letters, first_at, last_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
    ON CONFLICT (signature, topic, component, category, reason, state, hour) \
    DO UPDATE SET letters = letters + excluded.letters, \
    first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at)";

/// The letters of one key that a change removes from it.
#[derive(Debug)]
pub(crate) struct Leaving {
    key: [Value; 7],
    letters: i64,
    first_at: i64,
    last_at: i64,
}

/// Before a delete (`to` is `None`) or a state change to `to` of the rows
/// of `letters` that `selection` (with `params`) names, in the caller's
/// transaction: what leaves each key. Rows already in state `to` stay
/// where they are. Hand the answer to [`after_change`] once the change
/// ran, in the same transaction.
pub(crate) fn before_change(
    conn: &Connection,
    selection: &str,
    params: &[Value],
    to: Option<&str>,
) -> rusqlite::Result<Vec<Leaving>> {
    let mut params = params.to_vec();
    let moving = match to {
        Some(state) => {
            params.push(Value::Text(state.to_owned()));
            " AND state <> ?"
        }
        None => "",
    };
    let sql = format!(
        "SELECT {KEY_OF_ROW}, count(*), min(first_failure_at), max(last_failure_at) \
         FROM letters WHERE ({selection}){moving} GROUP BY 1, 2, 3, 4, 5, 6, 7"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| {
        Ok(Leaving {
            key: [
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ],
            letters: r.get(7)?,
            first_at: r.get(8)?,
            last_at: r.get(9)?,
        })
    })?;
    rows.collect()
}

/// After the change [`before_change`] saw coming: each key loses what
/// left it (a key left empty goes; one that lost its earliest or latest
/// letter has both recounted from `letters`), and with a state change the
/// same key in state `to` gains it.
pub(crate) fn after_change(
    conn: &Connection,
    leaving: &[Leaving],
    to: Option<&str>,
) -> rusqlite::Result<()> {
    let mut subtract = conn.prepare_cached(&format!(
        "UPDATE letter_groups SET letters = letters - ?8 WHERE {IS_KEY} \
         RETURNING letters, first_at, last_at"
    ))?;
    for l in leaving {
        let mut params = l.key.to_vec();
        params.push(Value::Integer(l.letters));
        let left: Option<(i64, i64, i64)> = subtract
            .query_row(params_from_iter(&params), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        match left {
            Some((remaining, _, _)) if remaining <= 0 => {
                conn.prepare_cached(&format!("DELETE FROM letter_groups WHERE {IS_KEY}"))?
                    .execute(params_from_iter(&l.key))?;
            }
            Some((_, first_at, last_at)) if l.first_at <= first_at || l.last_at >= last_at => {
                recount_extremes(conn, &l.key)?;
            }
            // A key the summary lacks was never counted: `verify` says so.
            _ => {}
        }
        if let Some(state) = to {
            let mut params = l.key.to_vec();
            params[5] = Value::Text(state.to_owned());
            params.extend([
                Value::Integer(l.letters),
                Value::Integer(l.first_at),
                Value::Integer(l.last_at),
            ]);
            conn.prepare_cached(UPSERT)?
                .execute(params_from_iter(params))?;
        }
    }
    Ok(())
}

/// Sets a key's earliest and latest failure from the letters it holds,
/// read through `letters_signature` (the signature's letters only).
fn recount_extremes(conn: &Connection, key: &[Value; 7]) -> rusqlite::Result<()> {
    let (first_at, last_at): (i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT min(first_failure_at), max(last_failure_at) FROM letters \
             WHERE signature = ?1 AND topic = ?2 AND component = ?3 AND category = ?4 \
             AND coalesce(json_extract(summary_json, '$.reason'), '') = ?5 AND state = ?6 \
             AND dead_lettered_at >= ?7 * {HOUR_NS} AND dead_lettered_at < (?7 + 1) * {HOUR_NS}"
        ))?
        .query_row(params_from_iter(key), |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut params = key.to_vec();
    params.extend([Value::Integer(first_at), Value::Integer(last_at)]);
    conn.prepare_cached(&format!(
        "UPDATE letter_groups SET first_at = ?8, last_at = ?9 WHERE {IS_KEY}"
    ))?
    .execute(params_from_iter(params))?;
    Ok(())
}

/// Builds `letter_groups` again from `letters`, in the caller's
/// transaction: what an open does when the counts are out of step.
pub(crate) fn rebuild(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "DELETE FROM letter_groups; \
         INSERT INTO letter_groups ({KEY}, letters, first_at, last_at) \
         SELECT {KEY_OF_ROW}, count(*), min(first_failure_at), max(last_failure_at) \
         FROM letters WHERE 1 GROUP BY 1, 2, 3, 4, 5, 6, 7;"
    ))
}

/// Rows of `letter_groups` that disagree with a grouping of `letters`,
/// counted both ways (a wrong row counts twice): zero when exact.
pub(crate) fn mismatches(conn: &Connection) -> rusqlite::Result<i64> {
    let computed = format!(
        "SELECT {KEY_OF_ROW}, count(*), min(first_failure_at), max(last_failure_at) \
         FROM letters GROUP BY 1, 2, 3, 4, 5, 6, 7"
    );
    let stored = format!("SELECT {KEY}, letters, first_at, last_at FROM letter_groups");
    conn.query_row(
        &format!(
            "SELECT (SELECT count(*) FROM ({computed} EXCEPT {stored})) + \
             (SELECT count(*) FROM ({stored} EXCEPT {computed}))"
        ),
        [],
        |r| r.get(0),
    )
}

/// Whether the summary counts every letter `totals` does. It may not when
/// a build older than schema version 6 wrote the store after it was
/// migrated (it inserts and deletes without the summary); then readers
/// group the letters themselves.
pub(crate) fn in_step(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT (SELECT coalesce(sum(letters), 0) FROM letter_groups) = \
         (SELECT letters FROM totals WHERE id = 1)",
    )?
    .query_row([], |r| r.get(0))
}
