//! One letter as a database row, and back.

use crate::record::{
    LetterState, LetterSummary, ReplayRefusal, StoredLetter, first_failure_at, from_nanos, to_nanos,
};
use bus_core::{AttemptRecord, Bytes, DeadLetter, DeadLetterReason, DlqError, Envelope, Topic};
use bus_errors::ErrorReport;
use rusqlite::{Row as SqlRow, ToSql};

/// The summary columns, in the order [`summary_from_row`] reads them.
pub(crate) const SUMMARY_COLUMNS: &str = "id, topic, category, component, error_message, \
    signature, first_failure_at, last_failure_at, dead_lettered_at, length(payload), state, \
    replayed_at, summary_json, replay_json";

/// The columns [`decode`] reads, in order.
pub(crate) const FULL_COLUMNS: &str = "id, payload, summary_json, detail_json, component, \
    dead_lettered_at, state, replayed_at, replay_topic, signature, replay_json";

/// The columns a push sets, in the order [`EncodedRow::bind`] binds them;
/// `state`, `replayed_at` and `replay_topic` keep their defaults.
const PUSH_COLUMNS: &str = "id, topic, category, component, error_message, signature, \
    first_failure_at, last_failure_at, dead_lettered_at, payload, summary_json, detail_json, \
    row_bytes";

/// Every column a row stores (`inbox` and `letters` alike).
pub(crate) const STORED_COLUMNS: &str = "id, topic, category, component, error_message, \
    signature, first_failure_at, last_failure_at, dead_lettered_at, payload, summary_json, \
    detail_json, state, replayed_at, replay_topic, row_bytes, replay_json";

/// Parameters per row in [`insert_sql`].
const PARAMS_PER_ROW: usize = 13;

/// `INSERT OR IGNORE` of `rows` pushed letters in one statement (ids already
/// stored are skipped): one statement per chunk of a batch saves SQLite the
/// per-statement work (cursors on the table and its indexes, reset) per row.
pub(crate) fn insert_sql(rows: usize) -> String {
    values_sql(PUSH_COLUMNS, PARAMS_PER_ROW, rows)
}

/// `INSERT OR IGNORE` of one imported letter, with its state.
pub(crate) fn import_sql() -> String {
    values_sql(
        &format!("{PUSH_COLUMNS}, state, replayed_at, replay_topic, replay_json"),
        PARAMS_PER_ROW + 4,
        1,
    )
}

/// Stages one pushed letter in `inbox` unless its id is stored already
/// (in either table); binds like [`insert_sql`]`(1)`.
pub(crate) fn stage_sql() -> String {
    let params: Vec<String> = (1..=PARAMS_PER_ROW).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO inbox ({PUSH_COLUMNS}) SELECT {} \
         WHERE NOT EXISTS (SELECT 1 FROM letters WHERE id = ?1) \
         AND NOT EXISTS (SELECT 1 FROM inbox WHERE id = ?1)",
        params.join(", ")
    )
}

fn values_sql(columns: &str, params: usize, rows: usize) -> String {
    let one = format!("({})", vec!["?"; params].join(", "));
    format!(
        "INSERT OR IGNORE INTO letters ({columns}) VALUES {}",
        vec![one; rows.max(1)].join(", ")
    )
}

/// `summary_json`: the summary's facts that no query filters on.
#[derive(Debug, serde::Serialize)]
struct SummaryOut<'a> {
    message_id: &'a uuid::Uuid,
    severity: &'a str,
    reason: &'a str,
    group: &'a str,
    error_type: &'a str,
    attempts: u32,
}

/// `summary_json` read back.
#[derive(Debug, serde::Deserialize)]
struct SummaryIn {
    message_id: uuid::Uuid,
    severity: String,
    reason: String,
    group: String,
    error_type: String,
    attempts: u32,
}

/// `detail_json`: the rest of the letter (the envelope without payload and
/// history, the last report, the history, the reason).
#[derive(Debug, serde::Serialize)]
struct DetailOut<'a> {
    envelope: &'a Envelope,
    report: &'a ErrorReport,
    history: &'a [AttemptRecord],
    reason: &'a DeadLetterReason,
}

/// `detail_json` read back.
#[derive(Debug, serde::Deserialize)]
struct DetailIn {
    envelope: Envelope,
    report: ErrorReport,
    history: Vec<AttemptRecord>,
    reason: DeadLetterReason,
}

/// What only an imported letter sets: its state and replay marks.
#[derive(Debug)]
struct Imported {
    state: &'static str,
    replayed_at: Option<i64>,
    replay_topic: Option<String>,
    replay_json: Option<String>,
}

/// A letter encoded on the pusher's thread, ready to insert.
#[derive(Debug)]
pub(crate) struct EncodedRow {
    pub(crate) id: String,
    topic: String,
    category: &'static str,
    component: String,
    error_message: String,
    signature: String,
    first_failure_at: i64,
    last_failure_at: i64,
    dead_lettered_at: i64,
    payload: Bytes,
    summary_json: String,
    detail_json: String,
    imported: Option<Imported>,
    /// Payload plus JSON bytes: what counts against `max_bytes` (the
    /// `row_bytes` column).
    pub(crate) row_bytes: i64,
    /// `summary_json`'s reason, for the failure-group counts.
    reason: String,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, DlqError> {
    serde_json::to_string(v).map_err(|e| DlqError::Other(e.into()))
}

impl EncodedRow {
    /// Encodes a freshly pushed letter.
    pub(crate) fn from_letter(letter: &DeadLetter) -> Result<Self, DlqError> {
        Self::encode(letter, crate::record::letter_signature(letter), None)
    }

    /// Encodes a stored letter as it is (import).
    pub(crate) fn from_stored(s: &StoredLetter) -> Result<Self, DlqError> {
        let imported = Imported {
            state: s.state.as_str(),
            replayed_at: s.replayed_at.map(to_nanos),
            replay_topic: s.replay_topic.as_ref().map(|t| t.as_str().to_owned()),
            replay_json: s.replay_refusal.as_ref().map(json).transpose()?,
        };
        Self::encode(&s.letter, s.signature.clone(), Some(imported))
    }

    fn encode(
        letter: &DeadLetter,
        signature: String,
        imported: Option<Imported>,
    ) -> Result<Self, DlqError> {
        let mut env = letter.envelope.clone();
        env.payload = Bytes::new();
        let history = std::mem::take(&mut env.history);
        let detail_json = json(&DetailOut {
            envelope: &env,
            report: &letter.report,
            history: &history,
            reason: &letter.reason,
        })?;
        let summary_json = json(&SummaryOut {
            message_id: &letter.envelope.id,
            severity: letter.report.severity.as_str(),
            reason: letter.reason.as_str(),
            group: &letter.group,
            error_type: &letter.report.error_type,
            attempts: letter.envelope.attempt,
        })?;
        let payload = letter.envelope.payload.clone();
        let row_bytes = i64::try_from(payload.len() + summary_json.len() + detail_json.len())
            .unwrap_or(i64::MAX);
        Ok(Self {
            id: letter.id.to_string(),
            topic: letter.envelope.topic.as_str().to_owned(),
            category: letter.report.category.as_str(),
            component: letter.component.clone(),
            error_message: letter.report.message.clone(),
            signature,
            first_failure_at: to_nanos(first_failure_at(letter)),
            last_failure_at: to_nanos(letter.report.timestamp),
            dead_lettered_at: to_nanos(letter.dead_lettered_at),
            payload,
            summary_json,
            detail_json,
            imported,
            row_bytes,
            reason: letter.reason.as_str().to_owned(),
        })
    }

    /// This pushed row's key in `letter_groups` (state `dead`), and its
    /// first and last failure.
    pub(crate) fn group_key(&self) -> ([&str; 6], i64, i64, i64) {
        (
            [
                &self.signature,
                &self.topic,
                &self.component,
                self.category,
                &self.reason,
                "dead",
            ],
            super::summary::hour_of(self.dead_lettered_at),
            self.first_failure_at,
            self.last_failure_at,
        )
    }

    /// Inserts the row with a statement from [`insert_sql`]`(1)`, or from
    /// [`import_sql`] for an imported row (ignored if the id exists); returns
    /// whether it was new.
    pub(crate) fn insert(&self, stmt: &mut rusqlite::Statement<'_>) -> rusqlite::Result<bool> {
        self.bind(stmt, 0)?;
        if let Some(i) = &self.imported {
            let values: [&dyn ToSql; 4] =
                [&i.state, &i.replayed_at, &i.replay_topic, &i.replay_json];
            for (n, v) in values.into_iter().enumerate() {
                stmt.raw_bind_parameter(PARAMS_PER_ROW + 1 + n, v)?;
            }
        }
        Ok(stmt.raw_execute()? == 1)
    }

    /// Binds this row's pushed columns as row `nth` (from 0) of a statement
    /// from [`insert_sql`].
    pub(crate) fn bind(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        nth: usize,
    ) -> rusqlite::Result<()> {
        let values: [&dyn ToSql; PARAMS_PER_ROW] = [
            &self.id,
            &self.topic,
            &self.category,
            &self.component,
            &self.error_message,
            &self.signature,
            &self.first_failure_at,
            &self.last_failure_at,
            &self.dead_lettered_at,
            &&self.payload[..],
            &self.summary_json,
            &self.detail_json,
            &self.row_bytes,
        ];
        let first = nth * PARAMS_PER_ROW + 1;
        for (i, v) in values.into_iter().enumerate() {
            stmt.raw_bind_parameter(first + i, v)?;
        }
        Ok(())
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
    let summary: SummaryIn = parse(r, 2, "summary_json")?;
    let detail: DetailIn = parse(r, 3, "detail_json")?;
    let mut envelope = detail.envelope;
    envelope.payload = Bytes::from(payload);
    envelope.history = detail.history;
    let component: String = col(r, 4, "component")?;
    let mut letter = DeadLetter::new(
        envelope,
        detail.report,
        detail.reason,
        component,
        summary.group,
    );
    letter.id = id;
    letter.dead_lettered_at = from_nanos(col(r, 5, "dead_lettered_at")?);
    let replay_topic: Option<String> = col(r, 8, "replay_topic")?;
    let replay_topic = replay_topic
        .map(|t| Topic::new(&t).map_err(|e| bad("replay_topic", e)))
        .transpose()?;
    let mut stored = StoredLetter::new(letter);
    stored.state = state_col(r, 6)?;
    stored.replayed_at = col::<Option<i64>>(r, 7, "replayed_at")?.map(from_nanos);
    stored.replay_topic = replay_topic;
    stored.signature = col(r, 9, "signature")?;
    stored.replay_refusal = refusal_col(r, 10)?;
    Ok(stored)
}

/// Decodes a row selected with [`SUMMARY_COLUMNS`].
pub(crate) fn summary_from_row(r: &SqlRow<'_>) -> Result<LetterSummary, DlqError> {
    let category: String = col(r, 2, "category")?;
    let payload_len: i64 = col(r, 9, "payload")?;
    let summary: SummaryIn = parse(r, 12, "summary_json")?;
    Ok(LetterSummary {
        id: uuid_col(r, 0, "id")?,
        message_id: summary.message_id,
        topic: col(r, 1, "topic")?,
        category: category.parse().map_err(|e| bad("category", e))?,
        severity: summary.severity,
        reason: summary.reason,
        component: col(r, 3, "component")?,
        group: summary.group,
        error_type: summary.error_type,
        error_message: col(r, 4, "error_message")?,
        signature: col(r, 5, "signature")?,
        first_failure_at: from_nanos(col(r, 6, "first_failure_at")?),
        last_failure_at: from_nanos(col(r, 7, "last_failure_at")?),
        dead_lettered_at: from_nanos(col(r, 8, "dead_lettered_at")?),
        attempts: summary.attempts,
        payload_len: payload_len.unsigned_abs(),
        state: state_col(r, 10)?,
        replayed_at: col::<Option<i64>>(r, 11, "replayed_at")?.map(from_nanos),
        replay_refusal: refusal_col(r, 13)?,
    })
}

fn refusal_col(r: &SqlRow<'_>, i: usize) -> Result<Option<ReplayRefusal>, DlqError> {
    let text: Option<String> = col(r, i, "replay_json")?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| bad("replay_json", e)))
        .transpose()
}

/// `replay_json` of a refusal.
pub(crate) fn refusal_json(refusal: &ReplayRefusal) -> Result<String, DlqError> {
    json(refusal)
}
