//! `verify`: SQLite's integrity check, our own decoding of every row, and
//! the running totals and per-signature counts against what the tables
//! hold.

use super::row;
use super::schema::db_err;
use bus_core::DlqError;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// A row that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BadRow {
    /// The row's `id` column as stored (may itself be the bad part).
    pub id: String,
    /// What is wrong.
    pub error: String,
}

/// The `totals` row disagreeing with the `letters` table. The bounds
/// (`max_letters`, `max_bytes`) judge every push by these totals, so a wrong
/// one refuses letters that fit or admits letters that do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TotalsMismatch {
    /// Letters the `totals` row records.
    pub recorded_letters: i64,
    /// Bytes the `totals` row records.
    pub recorded_bytes: i64,
    /// Letters `letters` holds.
    pub counted_letters: i64,
    /// Bytes `letters` holds.
    pub counted_bytes: i64,
}

/// What [`SqliteDlq::verify`](crate::SqliteDlq::verify) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The lines of `PRAGMA integrity_check` (`["ok"]` when sound).
    pub integrity: Vec<String>,
    /// Rows read.
    pub rows_checked: u64,
    /// Rows that did not decode into a letter.
    pub bad_rows: Vec<BadRow>,
    /// Set when the running totals disagree with the `letters` table
    /// (staged letters are counted only once folded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals_mismatch: Option<TotalsMismatch>,
    /// Rows of the per-signature counts (`letter_groups`) that disagree with
    /// a grouping of the `letters` table, counted both ways (a row with a
    /// wrong count is one missing and one extra); the groups view reads
    /// those counts. Unset when they agree, or the store has none (a
    /// schema older than version 6 read as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_mismatch: Option<u64>,
    /// Set when the write-ahead log holds commits SQLite's recovery would
    /// drop (a damaged frame in the middle of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_damage: Option<super::WalDamage>,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.problems() == 0
    }

    /// The report on a store that did not open (`error`) because its
    /// write-ahead log is damaged (see [`DlqFile::open_read_only`](crate::DlqFile)).
    pub fn unopened(error: &DlqError, damage: super::WalDamage) -> Self {
        Self {
            integrity: vec![format!("the store did not open: {error}")],
            wal_damage: Some(damage),
            ..Self::default()
        }
    }

    /// How many checks failed.
    pub fn problems(&self) -> usize {
        self.bad_rows.len()
            + usize::from(self.integrity != ["ok"])
            + usize::from(self.totals_mismatch.is_some())
            + usize::from(self.groups_mismatch.is_some())
            + usize::from(self.wal_damage.is_some())
    }
}

pub(super) fn verify(conn: &Connection) -> Result<VerifyReport, DlqError> {
    let mut report = VerifyReport::default();
    {
        let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            report
                .integrity
                .push(r.get::<_, String>(0).unwrap_or_else(|e| e.to_string()));
        }
    }
    // One read transaction: a fold committed by the writer between the two
    // passes would otherwise move staged rows out of both.
    conn.execute_batch("BEGIN").map_err(db_err)?;
    let checked = ["letters", "inbox"]
        .into_iter()
        .try_for_each(|table| check_rows(conn, table, &mut report))
        .and_then(|()| check_unique_ids(conn, &mut report))
        .and_then(|()| check_totals(conn, &mut report))
        .and_then(|()| check_groups(conn, &mut report));
    let ended = conn.execute_batch("COMMIT").map_err(db_err);
    checked.and(ended).map(|()| report)
}

/// A letter must be in exactly one table, once: the fold's `INSERT OR
/// IGNORE` would drop a staged row whose id `letters` already holds.
fn check_unique_ids(conn: &Connection, report: &mut VerifyReport) -> Result<(), DlqError> {
    let mut stmt = conn
        .prepare(
            "SELECT CAST(id AS TEXT) FROM inbox WHERE id IN (SELECT id FROM letters) \
             UNION ALL SELECT CAST(id AS TEXT) FROM inbox GROUP BY id HAVING count(*) > 1",
        )
        .map_err(db_err)?;
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db_err)?;
    for id in ids {
        report.bad_rows.push(BadRow {
            id: id.map_err(db_err)?,
            error: "stored twice (staged and indexed, or staged twice)".to_owned(),
        });
    }
    Ok(())
}

/// The `totals` row against a count of `letters` (in the same snapshot:
/// every insert and delete updates both in one transaction).
pub(super) fn check_totals(conn: &Connection, report: &mut VerifyReport) -> Result<(), DlqError> {
    let (recorded_letters, recorded_bytes) = conn
        .query_row("SELECT letters, bytes FROM totals WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(db_err)?;
    let (counted_letters, counted_bytes) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(row_bytes), 0) FROM letters",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db_err)?;
    if (recorded_letters, recorded_bytes) != (counted_letters, counted_bytes) {
        report.totals_mismatch = Some(TotalsMismatch {
            recorded_letters,
            recorded_bytes,
            counted_letters,
            counted_bytes,
        });
    }
    Ok(())
}

/// `letter_groups` against a grouping of `letters` (in the same snapshot:
/// every change to `letters` changes both in one transaction).
fn check_groups(conn: &Connection, report: &mut VerifyReport) -> Result<(), DlqError> {
    if !super::summary::present(conn).map_err(db_err)? {
        return Ok(());
    }
    let wrong = super::summary::mismatches(conn).map_err(db_err)?;
    if wrong != 0 {
        report.groups_mismatch = Some(wrong.unsigned_abs());
    }
    Ok(())
}

/// Decodes every row of `table` (`letters` or the staged `inbox`).
fn check_rows(conn: &Connection, table: &str, report: &mut VerifyReport) -> Result<(), DlqError> {
    let sql = format!(
        "SELECT {}, CAST(id AS TEXT) FROM {table} ORDER BY rowid",
        row::FULL_COLUMNS
    );
    let mut stmt = conn.prepare(&sql).map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    loop {
        let r = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                report.bad_rows.push(BadRow {
                    id: String::new(),
                    error: format!("reading rows stopped: {e}"),
                });
                break;
            }
        };
        report.rows_checked += 1;
        // The last column: the id as text, whatever its stored type.
        let raw_id: String = r
            .get(r.as_ref().column_count().saturating_sub(1))
            .unwrap_or_default();
        match row::decode(r) {
            Ok(s) if s.signature.len() == 16 => {}
            Ok(s) => report.bad_rows.push(BadRow {
                id: raw_id,
                error: format!("bad signature {:?}", s.signature),
            }),
            Err(e) => report.bad_rows.push(BadRow {
                id: raw_id,
                error: e.to_string(),
            }),
        }
    }
    Ok(())
}
