//! The schema's SQL: the first version and one forward migration per
//! version since, applied in order when a store is opened.

/// Forward migrations: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

pub(crate) const V1: &str = r#"
CREATE TABLE letters (
    id               TEXT PRIMARY KEY NOT NULL,
    message_id       TEXT NOT NULL,
    topic            TEXT NOT NULL,
    category         TEXT NOT NULL,
    severity         TEXT NOT NULL,
    reason           TEXT NOT NULL,
    component        TEXT NOT NULL,
    "group"          TEXT NOT NULL,
    error_type       TEXT NOT NULL,
    error_message    TEXT NOT NULL,
    signature        TEXT NOT NULL,
    first_failure_at INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    envelope_json    TEXT NOT NULL,
    report_json      TEXT NOT NULL,
    history_json     TEXT NOT NULL,
    reason_json      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'dead'
                     CHECK (state IN ('dead', 'replay_requested', 'replayed')),
    replayed_at      INTEGER,
    replay_topic     TEXT,
    row_bytes        INTEGER NOT NULL
);
CREATE INDEX letters_topic ON letters(topic);
CREATE INDEX letters_category ON letters(category);
CREATE INDEX letters_last_failure ON letters(last_failure_at);
CREATE INDEX letters_dead_lettered ON letters(dead_lettered_at);
CREATE INDEX letters_signature ON letters(signature);
CREATE INDEX letters_state ON letters(state);
CREATE TABLE totals (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    letters INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
INSERT INTO totals VALUES (1, 0, 0);
CREATE TRIGGER letters_count_insert AFTER INSERT ON letters BEGIN
    UPDATE totals SET letters = letters + 1, bytes = bytes + NEW.row_bytes WHERE id = 1;
END;
CREATE TRIGGER letters_count_delete AFTER DELETE ON letters BEGIN
    UPDATE totals SET letters = letters - 1, bytes = bytes - OLD.row_bytes WHERE id = 1;
END;
"#;

/// Version 2, for the writer's cost per letter:
///
/// - Inserts no longer fire a trigger per row. Whoever inserts adds to
///   `totals` once per transaction ([`add_to_totals`]): the per-row trigger
///   cost the writer a sub-program per letter, and it made SQLite stage a
///   multi-row `INSERT` in a temporary table. Deletes keep their trigger.
/// - The state index leaves out `dead`, the state every push writes: a push
///   no longer touches it (one page fewer in a one-letter commit), and the
///   queries it serves (letters to replay, replayed letters to purge) find
///   the few letters in other states through it. A filter on `dead` (most
///   letters) now reads the table instead of the index; counting dead
///   letters is slower on a large store, finding them hardly.
const V2: &str = "DROP TRIGGER letters_count_insert;
DROP INDEX letters_state;
CREATE INDEX letters_state_active ON letters(state) WHERE state <> 'dead';";

/// Version 3, for the writer's cost per letter and the first-failure index:
///
/// - The columns no query filters or indexes are packed into two JSON
///   columns: `summary_json` (message id, severity, reason, group, error
///   type, attempts: what a listing shows) and `detail_json` (envelope
///   without payload and history, last report, history, reason: what
///   rebuilding the letter needs). A push binds 13 values instead of 24;
///   binding each (SQLite copies it) was over a quarter of the writer's
///   instructions under callgrind before this version (43.3k -> 30.5k per
///   letter with 4 pipelined pushers, `examples/dlq_profile.rs`).
///   `state`, `replayed_at` and `replay_topic` are not bound by a push: they
///   keep their defaults.
/// - The `state` CHECK compares with `=` instead of `IN (...)`: SQLite built
///   a temporary b-tree of the three values for every insert statement.
/// - `first_failure_at` is indexed (the issue asks for first and last
///   failure time).
///
/// The table is rebuilt (SQLite cannot change a CHECK in place): rows keep
/// their rowid, state and `row_bytes` (so `totals` stays exact); the JSON
/// columns are re-nested with SQLite's `json()`, which keeps the text of
/// every value. `DROP TABLE` drops the old indexes and delete trigger
/// without firing it.
const V3: &str = r#"
CREATE TABLE letters_v3 (
    id               TEXT PRIMARY KEY NOT NULL,
    topic            TEXT NOT NULL,
    category         TEXT NOT NULL,
    component        TEXT NOT NULL,
    error_message    TEXT NOT NULL,
    signature        TEXT NOT NULL,
    first_failure_at INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    summary_json     TEXT NOT NULL,
    detail_json      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'dead'
                     CHECK (state = 'dead' OR state = 'replay_requested' OR state = 'replayed'),
    replayed_at      INTEGER,
    replay_topic     TEXT,
    row_bytes        INTEGER NOT NULL
);
INSERT INTO letters_v3 (rowid, id, topic, category, component, error_message, signature,
    first_failure_at, last_failure_at, dead_lettered_at, payload, summary_json, detail_json,
    state, replayed_at, replay_topic, row_bytes)
SELECT rowid, id, topic, category, component, error_message, signature,
    first_failure_at, last_failure_at, dead_lettered_at, payload,
    json_object('message_id', message_id, 'severity', severity, 'reason', reason,
                'group', "group", 'error_type', error_type, 'attempts', attempts),
    json_object('envelope', json(envelope_json), 'report', json(report_json),
                'history', json(history_json), 'reason', json(reason_json)),
    state, replayed_at, replay_topic, row_bytes
FROM letters;
DROP TABLE letters;
ALTER TABLE letters_v3 RENAME TO letters;
CREATE INDEX letters_topic ON letters(topic);
CREATE INDEX letters_category ON letters(category);
CREATE INDEX letters_signature ON letters(signature);
CREATE INDEX letters_first_failure ON letters(first_failure_at);
CREATE INDEX letters_last_failure ON letters(last_failure_at);
CREATE INDEX letters_dead_lettered ON letters(dead_lettered_at);
CREATE INDEX letters_state_active ON letters(state) WHERE state <> 'dead';
CREATE TRIGGER letters_count_delete AFTER DELETE ON letters BEGIN
    UPDATE totals SET letters = letters - 1, bytes = bytes - OLD.row_bytes WHERE id = 1;
END;
"#;

/// Version 4: `inbox`, where the writer stages letters pushed alone under
/// `Durability::Full` (see [`super::writer`]). A commit into `letters` writes
/// a page of the table, a page of each of its seven indexes and `totals`:
/// ten WAL frames, about 80 KiB to sync for a 1 KiB letter. A commit into
/// `inbox` writes one or two: it has the same columns but no index at all
/// (ids stay unique because staging checks both tables first; `verify`
/// reports an id found twice), and is not counted in `totals` (whoever
/// needs its size sums it: it holds at most `FOLD_AT` rows per writer).
/// The writer folds it into `letters` ([`fold_inbox`]) once it holds
/// [`super::writer::FOLD_AT`] letters, before a larger batch, when it has
/// been idle a moment, and at close; so does every other write (purge,
/// replay marks, import), and every read looks in both tables. The view
/// `every_letter` is both, for whoever reads the file with SQL.
const V4: &str = r#"
CREATE TABLE inbox (
    id               TEXT NOT NULL,
    topic            TEXT NOT NULL,
    category         TEXT NOT NULL,
    component        TEXT NOT NULL,
    error_message    TEXT NOT NULL,
    signature        TEXT NOT NULL,
    first_failure_at INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    summary_json     TEXT NOT NULL,
    detail_json      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'dead'
                     CHECK (state = 'dead' OR state = 'replay_requested' OR state = 'replayed'),
    replayed_at      INTEGER,
    replay_topic     TEXT,
    row_bytes        INTEGER NOT NULL
);
CREATE VIEW every_letter AS
    SELECT id, topic, category, component, error_message, signature, first_failure_at,
        last_failure_at, dead_lettered_at, payload, summary_json, detail_json, state,
        replayed_at, replay_topic, row_bytes FROM letters
    UNION ALL
    SELECT id, topic, category, component, error_message, signature, first_failure_at,
        last_failure_at, dead_lettered_at, payload, summary_json, detail_json, state,
        replayed_at, replay_topic, row_bytes FROM inbox;
"#;

/// Version 5, so that a replay the bus refuses cannot block the replays
/// behind it: the state `replay_failed` (a refusal that will not pass by
/// itself) and `replay_json`, why the bus refused the last replay, how many
/// times, and when it tries again (NULL while it never refused). Both tables
/// are rebuilt, as in version 3, because SQLite cannot change a CHECK in
/// place; rows keep their rowid and `row_bytes` (so `totals` stays exact).
/// The view is dropped first: renaming a table checks the views that use it.
const V5: &str = r#"
DROP VIEW every_letter;
CREATE TABLE letters_v5 (
    id               TEXT PRIMARY KEY NOT NULL,
    topic            TEXT NOT NULL,
    category         TEXT NOT NULL,
    component        TEXT NOT NULL,
    error_message    TEXT NOT NULL,
    signature        TEXT NOT NULL,
    first_failure_at INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    summary_json     TEXT NOT NULL,
    detail_json      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'dead'
                     CHECK (state = 'dead' OR state = 'replay_requested' OR state = 'replayed'
                            OR state = 'replay_failed'),
    replayed_at      INTEGER,
    replay_topic     TEXT,
    row_bytes        INTEGER NOT NULL,
    replay_json      TEXT
);
INSERT INTO letters_v5 (rowid, id, topic, category, component, error_message, signature,
    first_failure_at, last_failure_at, dead_lettered_at, payload, summary_json, detail_json,
    state, replayed_at, replay_topic, row_bytes)
SELECT rowid, id, topic, category, component, error_message, signature,
    first_failure_at, last_failure_at, dead_lettered_at, payload, summary_json, detail_json,
    state, replayed_at, replay_topic, row_bytes
FROM letters;
DROP TABLE letters;
ALTER TABLE letters_v5 RENAME TO letters;
CREATE INDEX letters_topic ON letters(topic);
CREATE INDEX letters_category ON letters(category);
CREATE INDEX letters_signature ON letters(signature);
CREATE INDEX letters_first_failure ON letters(first_failure_at);
CREATE INDEX letters_last_failure ON letters(last_failure_at);
CREATE INDEX letters_dead_lettered ON letters(dead_lettered_at);
CREATE INDEX letters_state_active ON letters(state) WHERE state <> 'dead';
CREATE TRIGGER letters_count_delete AFTER DELETE ON letters BEGIN
    UPDATE totals SET letters = letters - 1, bytes = bytes - OLD.row_bytes WHERE id = 1;
END;
CREATE TABLE inbox_v5 (
    id               TEXT NOT NULL,
    topic            TEXT NOT NULL,
    category         TEXT NOT NULL,
    component        TEXT NOT NULL,
    error_message    TEXT NOT NULL,
    signature        TEXT NOT NULL,
    first_failure_at INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    summary_json     TEXT NOT NULL,
    detail_json      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'dead'
                     CHECK (state = 'dead' OR state = 'replay_requested' OR state = 'replayed'
                            OR state = 'replay_failed'),
    replayed_at      INTEGER,
    replay_topic     TEXT,
    row_bytes        INTEGER NOT NULL,
    replay_json      TEXT
);
INSERT INTO inbox_v5 (rowid, id, topic, category, component, error_message, signature,
    first_failure_at, last_failure_at, dead_lettered_at, payload, summary_json, detail_json,
    state, replayed_at, replay_topic, row_bytes)
SELECT rowid, id, topic, category, component, error_message, signature,
    first_failure_at, last_failure_at, dead_lettered_at, payload, summary_json, detail_json,
    state, replayed_at, replay_topic, row_bytes
FROM inbox;
DROP TABLE inbox;
ALTER TABLE inbox_v5 RENAME TO inbox;
CREATE VIEW every_letter AS
    SELECT id, topic, category, component, error_message, signature, first_failure_at,
        last_failure_at, dead_lettered_at, payload, summary_json, detail_json, state,
        replayed_at, replay_topic, row_bytes, replay_json FROM letters
    UNION ALL
    SELECT id, topic, category, component, error_message, signature, first_failure_at,
        last_failure_at, dead_lettered_at, payload, summary_json, detail_json, state,
        replayed_at, replay_topic, row_bytes, replay_json FROM inbox;
"#;

/// Version 6, so that the failure groups of a large store answer without
/// reading every letter:
///
/// - `letter_groups`, one row per signature, topic, component, category,
///   reason, state and hour of `dead_lettered_at` (floor of nanoseconds
///   divided by 3 600 000 000 000), with how many letters of `letters` it
///   holds, their earliest `first_failure_at` and latest
///   `last_failure_at`. Every transaction that changes `letters` changes it
///   too (see `sqlite/summary.rs`): an upsert per distinct key for what it
///   inserts, a subtraction per key for what it deletes or moves to another
///   state, and a recount of a key's extremes only when the letters
///   holding them went. The hour keeps the `since` and `until` filters
///   exact: whole hours come from here, the partial hours at the edges from
///   `letters` through `letters_dead_lettered`. Staged letters (`inbox`)
///   are not in it; readers add them.
/// - `letters_signature` becomes `(signature, last_failure_at)`: the
///   latest letter of a group (its sample) is found through it.
/// - The topic and category indexes carry `id`, and `component` gets one:
///   a page of letters filtered by one of them, in id order, reads the
///   index in order and stops after the page, instead of sorting every
///   match.
const V6: &str = r#"
CREATE TABLE letter_groups (
    signature TEXT NOT NULL,
    topic     TEXT NOT NULL,
    component TEXT NOT NULL,
    category  TEXT NOT NULL,
    reason    TEXT NOT NULL,
    state     TEXT NOT NULL,
    hour      INTEGER NOT NULL,
    letters   INTEGER NOT NULL,
    first_at  INTEGER NOT NULL,
    last_at   INTEGER NOT NULL,
    PRIMARY KEY (signature, topic, component, category, reason, state, hour)
) WITHOUT ROWID;
INSERT INTO letter_groups
SELECT signature, topic, component, category,
    coalesce(json_extract(summary_json, '$.reason'), ''), state,
    CASE WHEN dead_lettered_at >= 0 THEN dead_lettered_at / 3600000000000
         ELSE (dead_lettered_at + 1) / 3600000000000 - 1 END,
    count(*), min(first_failure_at), max(last_failure_at)
FROM letters WHERE 1 GROUP BY 1, 2, 3, 4, 5, 6, 7;
DROP INDEX letters_signature;
CREATE INDEX letters_signature ON letters(signature, last_failure_at);
DROP INDEX letters_topic;
CREATE INDEX letters_topic ON letters(topic, id);
DROP INDEX letters_category;
CREATE INDEX letters_category ON letters(category, id);
CREATE INDEX letters_component ON letters(component, id);
"#;
