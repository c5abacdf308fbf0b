//! Putting a batch in the store: staged in `inbox`, or inserted into
//! `letters` as far as the store's bounds allow.

use super::super::summary;
use super::*;

fn totals(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached("SELECT letters, bytes FROM totals WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Opens a write transaction and stages the batch in `inbox` (not counted in
/// `totals`); the caller commits or rolls back.
pub(super) fn stage_all(
    conn: &Connection,
    batch: &[Job],
    bounds: Bounds,
    sql: &Sql,
) -> rusqlite::Result<Vec<Outcome>> {
    run_cached(conn, "BEGIN IMMEDIATE")?;
    let (mut letters, mut bytes) = stored(conn, bounds, true)?;
    let mut stmt = conn.prepare_cached(&sql.stage)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        outcomes.push(insert_within(
            &mut stmt,
            job,
            bounds,
            &mut letters,
            &mut bytes,
        )?);
    }
    Ok(outcomes)
}

/// Opens a write transaction, folds `inbox` into `letters` (so `OR IGNORE`
/// there sees every stored id), inserts the batch and adds it to `totals`;
/// the caller commits or rolls back.
pub(super) fn insert_all(
    conn: &Connection,
    batch: &[Job],
    bounds: Bounds,
    sql: &Sql,
) -> rusqlite::Result<Vec<Outcome>> {
    run_cached(conn, "BEGIN IMMEDIATE")?;
    fold_inbox(conn)?;
    let (start_letters, start_bytes) = stored(conn, bounds, false)?;
    let (mut letters, mut bytes) = (start_letters, start_bytes);
    let mut outcomes = Vec::with_capacity(batch.len());
    // Held for the whole batch: a cached statement handed back clears its
    // bindings, and rebinding would then allocate every value again. The
    // chunk statement only for a batch that can use it: clearing its
    // `PARAMS_PER_ROW * CHUNK` bindings shows in a one-letter commit.
    let mut chunk_stmt = (batch.len() >= CHUNK)
        .then(|| conn.prepare_cached(&sql.chunk))
        .transpose()?;
    let mut one_stmt = conn.prepare_cached(&sql.one)?;
    // The rows inserted, for the failure-group counts; `None` once a chunk
    // skipped an id it cannot say which of (then they are read back).
    let mut inserted: Option<Vec<&EncodedRow>> = Some(Vec::with_capacity(batch.len()));
    let mut rest = batch;
    while !rest.is_empty() {
        if let (Some(chunk), Some(chunk_stmt)) = (rest.get(..CHUNK), chunk_stmt.as_mut()) {
            let chunk_bytes = chunk
                .iter()
                .fold(0_i64, |b, j| b.saturating_add(j.row.row_bytes));
            // Every row of the chunk fits even if all are new: the same
            // answers as row by row, in one statement.
            if all_fit(bounds, letters, bytes, CHUNK, chunk_bytes) {
                // No savepoint around the chunk: one would copy every page
                // the chunk touches to a statement journal (a temporary
                // file), which cost more than the inserts' b-tree work.
                for (nth, job) in chunk.iter().enumerate() {
                    job.row.bind(chunk_stmt, nth)?;
                }
                let added = chunk_stmt.raw_execute()?;
                letters += added as i64;
                match inserted.as_mut() {
                    Some(rows) if added == CHUNK => rows.extend(chunk.iter().map(|j| &j.row)),
                    _ => inserted = None,
                }
                bytes = bytes.saturating_add(if added == CHUNK {
                    chunk_bytes
                } else {
                    // Some ids were stored already (`OR IGNORE` skipped
                    // them): count the rows this statement added.
                    bytes_of_last(conn, added)?
                });
                outcomes.extend(std::iter::repeat_n(Outcome::Stored, CHUNK));
                rest = &rest[CHUNK..];
                continue;
            }
        }
        let (job, tail) = rest.split_first().expect("rest is not empty");
        rest = tail;
        let before = letters;
        outcomes.push(insert_within(
            &mut one_stmt,
            job,
            bounds,
            &mut letters,
            &mut bytes,
        )?);
        if let Some(rows) = inserted.as_mut().filter(|_| letters > before) {
            rows.push(&job.row);
        }
    }
    let added = letters - start_letters;
    match inserted {
        Some(rows) => summary::add_pushed(conn, rows.into_iter())?,
        None => summary::add_last(conn, usize::try_from(added).unwrap_or(0))?,
    }
    add_to_totals(conn, added, bytes - start_bytes)?;
    Ok(outcomes)
}

/// Whether `n` more letters of `add` bytes in all stay within the bounds.
fn all_fit(bounds: Bounds, letters: i64, bytes: i64, n: usize, add: i64) -> bool {
    let letters_after = letters.unsigned_abs().saturating_add(n as u64);
    let bytes_after = bytes.saturating_add(add).unsigned_abs();
    bounds.max_letters.is_none_or(|m| letters_after <= m)
        && bounds.max_bytes.is_none_or(|m| bytes_after <= m)
}

/// Letters and bytes stored, as the bounds judge them: `totals`, plus what
/// `inbox` holds if `with_staged`. Without bounds the running counts only
/// measure what a batch adds, so they start at zero and nothing is read.
fn stored(conn: &Connection, bounds: Bounds, with_staged: bool) -> rusqlite::Result<(i64, i64)> {
    if bounds.max_letters.is_none() && bounds.max_bytes.is_none() {
        return Ok((0, 0));
    }
    let (letters, bytes) = totals(conn)?;
    if !with_staged {
        return Ok((letters, bytes));
    }
    let (staged, staged_bytes) = inbox_totals(conn)?;
    Ok((letters + staged, bytes.saturating_add(staged_bytes)))
}

/// One row on its own (staged or indexed, by `stmt`): refused with `Full`
/// if it would pass a bound, else inserted and, unless its id was stored
/// already, counted into `letters` and `bytes`.
fn insert_within(
    stmt: &mut rusqlite::Statement<'_>,
    job: &Job,
    bounds: Bounds,
    letters: &mut i64,
    bytes: &mut i64,
) -> rusqlite::Result<Outcome> {
    let row_bytes = job.row.row_bytes;
    if let Some(full) = over_bound(bounds, *letters, *bytes, row_bytes) {
        return Ok(Outcome::Full(full));
    }
    if job.row.insert(stmt)? {
        *letters += 1;
        *bytes = bytes.saturating_add(row_bytes);
    }
    Ok(Outcome::Stored)
}

fn over_bound(bounds: Bounds, letters: i64, bytes: i64, row_bytes: i64) -> Option<String> {
    let letters = letters.unsigned_abs();
    if let Some(max) = bounds.max_letters.filter(|m| letters >= *m) {
        return Some(format!("{letters} letters stored, the limit is {max}"));
    }
    let after = bytes.saturating_add(row_bytes).unsigned_abs();
    if let Some(max) = bounds.max_bytes.filter(|m| after > *m) {
        return Some(format!(
            "{bytes} bytes stored, adding {row_bytes} would pass the limit of {max}"
        ));
    }
    None
}
