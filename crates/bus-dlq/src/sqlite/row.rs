//! One letter as a database row, and back.

use crate::record::{
    LetterState, LetterSummary, StoredLetter, first_failure_at, from_nanos, to_nanos,
};
use bus_core::{AttemptRecord, Bytes, DeadLetter, DeadLetterReason, DlqError, Envelope, Topic};
use bus_errors::ErrorReport;
use rusqlite::{Row as SqlRow, ToSql};
use std::time::SystemTime;

/// The summary columns, in the order [`summary_from_row`] reads them.
pub(crate) const SUMMARY_COLUMNS: &str = "id, message_id, topic, category, severity, reason, \
    component, \"group\", error_type, error_message, signature, first_failure_at, \
    last_failure_at, dead_lettered_at, attempts, length(payload), state, replayed_at";

/// The columns [`decode`] reads, in order.
pub(crate) const FULL_COLUMNS: &str = "id, payload, envelope_json, report_json, history_json, \
    reason_json, component, \"group\", dead_lettered_at, state, replayed_at, replay_topic, signature";

/// The columns an insert sets, in the order [`EncodedRow::bind`] binds them.
const INSERT_COLUMNS: &str = "id, message_id, topic, category, severity, reason, component, \
    \"group\", error_type, error_message, signature, first_failure_at, last_failure_at, \
    dead_lettered_at, attempts, payload, envelope_json, report_json, history_json, \
    reason_json, state, replayed_at, replay_topic, row_bytes";

/// Parameters per row in [`insert_sql`].
const PARAMS_PER_ROW: usize = 24;

/// `INSERT OR IGNORE` of `rows` rows in one statement (ids already stored
/// are skipped): one statement per chunk of a batch saves SQLite the
/// per-statement work (cursors on the table and its indexes, reset) per row.
pub(crate) fn insert_sql(rows: usize) -> String {
    let one = format!(
        "({})",
        (1..=PARAMS_PER_ROW)
            .map(|_| "?")
            .collect::<Vec<_>>()
            .join(", ")
    );
    format!(
        "INSERT OR IGNORE INTO letters ({INSERT_COLUMNS}) VALUES {}",
        vec![one; rows.max(1)].join(", ")
    )
}

/// A letter encoded on the pusher's thread, ready to insert.
#[derive(Debug)]
pub(crate) struct EncodedRow {
    pub(crate) id: String,
    message_id: String,
    topic: String,
    category: &'static str,
    severity: &'static str,
    reason: String,
    component: String,
    group: String,
    error_type: String,
    error_message: String,
    signature: String,
    first_failure_at: i64,
    last_failure_at: i64,
    dead_lettered_at: i64,
    attempts: u32,
    payload: Bytes,
    envelope_json: String,
    report_json: String,
    history_json: String,
    reason_json: String,
    state: &'static str,
    replayed_at: Option<i64>,
    replay_topic: Option<String>,
    /// Payload plus JSON bytes: what counts against `max_bytes`.
    pub(crate) bytes: u64,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, DlqError> {
    serde_json::to_string(v).map_err(|e| DlqError::Other(e.into()))
}

impl EncodedRow {
    /// Encodes a freshly pushed letter.
    pub(crate) fn from_letter(letter: &DeadLetter) -> Result<Self, DlqError> {
        Self::encode(
            letter,
            crate::record::letter_signature(letter),
            LetterState::Dead,
            None,
            None,
        )
    }

    /// Encodes a stored letter as it is (import).
    pub(crate) fn from_stored(s: &StoredLetter) -> Result<Self, DlqError> {
        Self::encode(
            &s.letter,
            s.signature.clone(),
            s.state,
            s.replayed_at,
            s.replay_topic.as_ref(),
        )
    }

    fn encode(
        letter: &DeadLetter,
        signature: String,
        state: LetterState,
        replayed_at: Option<SystemTime>,
        replay_topic: Option<&Topic>,
    ) -> Result<Self, DlqError> {
        let mut env = letter.envelope.clone();
        env.payload = Bytes::new();
        let history = std::mem::take(&mut env.history);
        let envelope_json = json(&env)?;
        let history_json = json(&history)?;
        let report_json = json(&letter.report)?;
        let reason_json = json(&letter.reason)?;
        let payload = letter.envelope.payload.clone();
        let bytes =
            (payload.len() + envelope_json.len() + history_json.len() + report_json.len()) as u64;
        Ok(Self {
            id: letter.id.to_string(),
            message_id: letter.envelope.id.to_string(),
            topic: letter.envelope.topic.as_str().to_owned(),
            category: letter.report.category.as_str(),
            severity: letter.report.severity.as_str(),
            reason: letter.reason.as_str().to_owned(),
            component: letter.component.clone(),
            group: letter.group.clone(),
            error_type: letter.report.error_type.clone(),
            error_message: letter.report.message.clone(),
            signature,
            first_failure_at: to_nanos(first_failure_at(letter)),
            last_failure_at: to_nanos(letter.report.timestamp),
            dead_lettered_at: to_nanos(letter.dead_lettered_at),
            attempts: letter.envelope.attempt,
            payload,
            envelope_json,
            report_json,
            history_json,
            reason_json,
            state: state.as_str(),
            replayed_at: replayed_at.map(to_nanos),
            replay_topic: replay_topic.map(|t| t.as_str().to_owned()),
            bytes,
        })
    }

    /// Inserts the row with a statement from [`insert_sql`]`(1)` (ignored if
    /// the id exists); returns whether it was new.
    pub(crate) fn insert(&self, stmt: &mut rusqlite::Statement<'_>) -> rusqlite::Result<bool> {
        self.bind(stmt, 0)?;
        Ok(stmt.raw_execute()? == 1)
    }

    /// Binds this row as row `nth` (from 0) of a statement from [`insert_sql`].
    pub(crate) fn bind(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        nth: usize,
    ) -> rusqlite::Result<()> {
        let values: [&dyn ToSql; PARAMS_PER_ROW] = [
            &self.id,
            &self.message_id,
            &self.topic,
            &self.category,
            &self.severity,
            &self.reason,
            &self.component,
            &self.group,
            &self.error_type,
            &self.error_message,
            &self.signature,
            &self.first_failure_at,
            &self.last_failure_at,
            &self.dead_lettered_at,
            &self.attempts,
            &&self.payload[..],
            &self.envelope_json,
            &self.report_json,
            &self.history_json,
            &self.reason_json,
            &self.state,
            &self.replayed_at,
            &self.replay_topic,
            &self.bytes_i64(),
        ];
        let first = nth * PARAMS_PER_ROW + 1;
        for (i, v) in values.into_iter().enumerate() {
            stmt.raw_bind_parameter(first + i, v)?;
        }
        Ok(())
    }

    /// [`bytes`](Self::bytes) as SQLite stores it.
    pub(crate) fn bytes_i64(&self) -> i64 {
        i64::try_from(self.bytes).unwrap_or(i64::MAX)
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> DlqError {
    DlqError::Corrupt(format!("row has a bad {what}: {e}"))
}

fn col<T: rusqlite::types::FromSql>(r: &SqlRow<'_>, i: usize, what: &str) -> Result<T, DlqError> {
    r.get(i).map_err(|e| bad(what, e))
}

fn parse<T: serde::de::DeserializeOwned>(
    r: &SqlRow<'_>,
    i: usize,
    what: &str,
) -> Result<T, DlqError> {
    let text: String = col(r, i, what)?;
    serde_json::from_str(&text).map_err(|e| bad(what, e))
}

fn uuid_col(r: &SqlRow<'_>, i: usize, what: &str) -> Result<uuid::Uuid, DlqError> {
    let text: String = col(r, i, what)?;
    text.parse().map_err(|e| bad(what, e))
}

fn state_col(r: &SqlRow<'_>, i: usize) -> Result<LetterState, DlqError> {
    let text: String = col(r, i, "state")?;
    text.parse().map_err(|e| bad("state", e))
}

/// Decodes a row selected with [`FULL_COLUMNS`].
pub(crate) fn decode(r: &SqlRow<'_>) -> Result<StoredLetter, DlqError> {
    let id = uuid_col(r, 0, "id")?;
    let payload: Vec<u8> = col(r, 1, "payload")?;
    let mut envelope: Envelope = parse(r, 2, "envelope_json")?;
    let report: ErrorReport = parse(r, 3, "report_json")?;
    let history: Vec<AttemptRecord> = parse(r, 4, "history_json")?;
    let reason: DeadLetterReason = parse(r, 5, "reason_json")?;
    envelope.payload = Bytes::from(payload);
    envelope.history = history;
    let component: String = col(r, 6, "component")?;
    let group: String = col(r, 7, "group")?;
    let mut letter = DeadLetter::new(envelope, report, reason, component, group);
    letter.id = id;
    letter.dead_lettered_at = from_nanos(col(r, 8, "dead_lettered_at")?);
    let replay_topic: Option<String> = col(r, 11, "replay_topic")?;
    let replay_topic = replay_topic
        .map(|t| Topic::new(&t).map_err(|e| bad("replay_topic", e)))
        .transpose()?;
    let mut stored = StoredLetter::new(letter);
    stored.state = state_col(r, 9)?;
    stored.replayed_at = col::<Option<i64>>(r, 10, "replayed_at")?.map(from_nanos);
    stored.replay_topic = replay_topic;
    stored.signature = col(r, 12, "signature")?;
    Ok(stored)
}

/// Decodes a row selected with [`SUMMARY_COLUMNS`].
pub(crate) fn summary_from_row(r: &SqlRow<'_>) -> Result<LetterSummary, DlqError> {
    let category: String = col(r, 3, "category")?;
    let payload_len: i64 = col(r, 15, "payload")?;
    Ok(LetterSummary {
        id: uuid_col(r, 0, "id")?,
        message_id: uuid_col(r, 1, "message_id")?,
        topic: col(r, 2, "topic")?,
        category: category.parse().map_err(|e| bad("category", e))?,
        severity: col(r, 4, "severity")?,
        reason: col(r, 5, "reason")?,
        component: col(r, 6, "component")?,
        group: col(r, 7, "group")?,
        error_type: col(r, 8, "error_type")?,
        error_message: col(r, 9, "error_message")?,
        signature: col(r, 10, "signature")?,
        first_failure_at: from_nanos(col(r, 11, "first_failure_at")?),
        last_failure_at: from_nanos(col(r, 12, "last_failure_at")?),
        dead_lettered_at: from_nanos(col(r, 13, "dead_lettered_at")?),
        attempts: col(r, 14, "attempts")?,
        payload_len: payload_len.unsigned_abs(),
        state: state_col(r, 16)?,
        replayed_at: col::<Option<i64>>(r, 17, "replayed_at")?.map(from_nanos),
    })
}
