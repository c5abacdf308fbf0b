use super::*;
use crate::testutil::letter;

#[allow(unreachable_pub)]
#[path = "../../tests/common/mod.rs"]
mod common;

#[test]
fn a_failed_commit_poisons_the_store_and_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let kept = letter("a", "x", 1);
    dlq.push(&kept).unwrap();
    dlq.fail_next_commit();
    let lost = letter("a", "x", 2);
    let err = dlq.push(&lost).unwrap_err();
    assert!(
        matches!(err, DlqError::Poisoned(ref m) if m.contains("commit failed")),
        "{err}"
    );
    assert!(dlq.poisoned().is_some());
    // Every later push is refused, and the letter from the failed batch was not kept.
    assert!(matches!(
        dlq.push(&letter("a", "x", 3)),
        Err(DlqError::Poisoned(_))
    ));
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 1);
    assert!(dlq.get(lost.id).unwrap().is_none());
    drop(dlq);
    // A reopen starts clean and still has the committed letter.
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    assert!(dlq.poisoned().is_none());
    assert!(dlq.get(kept.id).unwrap().is_some());
    dlq.push(&letter("a", "x", 4)).unwrap();
}

#[test]
fn bounds_refuse_with_full_and_keep_what_fits() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path()).with_max_letters(3)).unwrap();
    for i in 0..3 {
        dlq.push(&letter("a", "x", i)).unwrap();
    }
    let err = dlq.push(&letter("a", "x", 9)).unwrap_err();
    assert!(matches!(err, DlqError::Full(_)), "{err}");
    assert!(dlq.poisoned().is_none());
    // Purging makes room again.
    assert_eq!(dlq.purge(&Filter::all().limit(1)).unwrap(), 1);
    dlq.push(&letter("a", "x", 10)).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 3);
}

#[test]
fn byte_bound_counts_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path()).with_max_bytes(20_000)).unwrap();
    let mut big = letter("a", "x", 1);
    big.envelope.payload = vec![7_u8; 15_000].into();
    dlq.push(&big).unwrap();
    let mut big2 = letter("a", "x", 2);
    big2.envelope.payload = vec![7_u8; 15_000].into();
    assert!(matches!(dlq.push(&big2), Err(DlqError::Full(_))));
    dlq.push(&letter("a", "x", 3)).unwrap();
}

#[test]
fn pushing_the_same_letter_twice_keeps_one() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let l = letter("a", "x", 1);
    assert_eq!(dlq.push(&l).unwrap(), l.id);
    assert_eq!(dlq.push(&l).unwrap(), l.id);
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 1);
}

#[test]
fn push_many_commits_every_letter_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(
        DlqConfig::new(dir.path())
            .with_max_letters(70)
            .with_max_batch(16),
    )
    .unwrap();
    let letters: Vec<_> = (0..80).map(|i| letter("a", "x", i)).collect();
    let results = dlq.push_many(&letters);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 70);
    assert!(
        results[70..]
            .iter()
            .all(|r| matches!(r, Err(DlqError::Full(_))))
    );
    for (l, r) in letters.iter().zip(&results).take(70) {
        assert_eq!(r.as_ref().unwrap(), &l.id);
        assert!(dlq.get(l.id).unwrap().is_some());
    }
}

#[test]
fn push_then_commits_every_letter_and_calls_back_exactly_once_each() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let dlq = Arc::new(SqliteDlq::open(DlqConfig::new(dir.path())).unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    let calls = Arc::new(AtomicUsize::new(0));
    let pushers: Vec<_> = (0..4)
        .map(|t| {
            let dlq = Arc::clone(&dlq);
            let tx = tx.clone();
            let calls = Arc::clone(&calls);
            std::thread::spawn(move || {
                for i in 0..250 {
                    let tx = tx.clone();
                    let calls = Arc::clone(&calls);
                    dlq.push_then(
                        letter("a", "x", t * 1000 + i),
                        Box::new(move |r, l| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tx.send((r.map_err(|e| e.to_string()), l.id)).unwrap();
                        }),
                    );
                }
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    let mut ids = std::collections::HashSet::new();
    for _ in 0..1000 {
        let (r, id) = rx.recv().unwrap();
        assert_eq!(r, Ok(id));
        assert!(ids.insert(id), "a callback ran twice");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1000);
    // Each Ok meant committed: all are readable now, from this or another connection.
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 1000);
    for id in ids {
        assert!(dlq.get(id).unwrap().is_some());
    }
}

#[test]
fn push_then_on_a_poisoned_store_refuses_through_the_callback() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    dlq.fail_next_commit();
    assert!(dlq.push(&letter("a", "x", 1)).is_err());
    let (tx, rx) = crossbeam_channel::bounded(1);
    let l = letter("a", "x", 2);
    let id = l.id;
    dlq.push_then(l, Box::new(move |r, back| tx.send((r, back.id)).unwrap()));
    let (r, back) = rx.recv().unwrap();
    assert!(matches!(r, Err(DlqError::Poisoned(_))));
    assert_eq!(back, id, "the letter is handed back");
}

#[test]
fn a_panicking_callback_does_not_kill_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    dlq.push_then(letter("a", "x", 1), Box::new(|_, _| panic!("callback bug")));
    // The writer survives and keeps committing.
    dlq.push(&letter("a", "x", 2)).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 2);
}

/// `totals`, and the failure-group counts, against the rows themselves.
fn assert_totals_exact(dlq: &SqliteDlq) {
    let mut report = VerifyReport::default();
    super::verify::check_totals(&dlq.conn(), &mut report).unwrap();
    assert_eq!(report.totals_mismatch, None);
    assert_eq!(super::summary::mismatches(&dlq.conn()).unwrap(), 0);
}

#[test]
fn totals_stay_exact_through_chunks_duplicates_imports_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let letters: Vec<DeadLetter> = (0..150).map(|i| letter("a", "x", i)).collect();
    // Every letter twice, so duplicates fall inside multi-row chunks.
    let twice: Vec<DeadLetter> = letters
        .iter()
        .flat_map(|l| [l.clone(), l.clone()])
        .collect();
    assert!(dlq.push_many(&twice).iter().all(Result::is_ok));
    assert!(dlq.push_many(&letters).iter().all(Result::is_ok));
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 150);
    assert_totals_exact(&dlq);
    let stored: Vec<StoredLetter> = letters[..10]
        .iter()
        .map(|l| dlq.get(l.id).unwrap().unwrap())
        .collect();
    assert_eq!(dlq.purge(&Filter::all().limit(20)).unwrap(), 20);
    assert_totals_exact(&dlq);
    assert_eq!(dlq.insert(&stored).unwrap(), 10);
    assert_totals_exact(&dlq);
}

#[test]
fn a_bound_inside_a_large_batch_keeps_exactly_what_fits() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path()).with_max_letters(50)).unwrap();
    let letters: Vec<DeadLetter> = (0..100).map(|i| letter("a", "x", i)).collect();
    let results = dlq.push_many(&letters);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 50);
    assert!(
        results[50..]
            .iter()
            .all(|r| matches!(r, Err(DlqError::Full(_))))
    );
    assert_totals_exact(&dlq);
}

/// Inserts `stored` as a version 1 or 2 build did: one column per field,
/// the four JSON documents apart.
fn insert_old_row(c: &rusqlite::Connection, stored: &StoredLetter) {
    let l = &stored.letter;
    let mut env = l.envelope.clone();
    env.payload = bus_core::Bytes::new();
    let history = std::mem::take(&mut env.history);
    fn json<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }
    let (envelope_json, history_json) = (json(&env), json(&history));
    let (report_json, reason_json) = (json(&l.report), json(&l.reason));
    let row_bytes =
        l.envelope.payload.len() + envelope_json.len() + history_json.len() + report_json.len();
    c.execute(
        "INSERT INTO letters (id, message_id, topic, category, severity, reason, component, \
         \"group\", error_type, error_message, signature, first_failure_at, last_failure_at, \
         dead_lettered_at, attempts, payload, envelope_json, report_json, history_json, \
         reason_json, state, replayed_at, replay_topic, row_bytes) VALUES (?1, ?2, ?3, ?4, \
         ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
         ?23, ?24)",
        rusqlite::params![
            l.id.to_string(),
            l.envelope.id.to_string(),
            l.envelope.topic.as_str(),
            l.report.category.as_str(),
            l.report.severity.as_str(),
            l.reason.as_str(),
            l.component,
            l.group,
            l.report.error_type,
            l.report.message,
            stored.signature,
            crate::record::to_nanos(crate::record::first_failure_at(l)),
            crate::record::to_nanos(l.report.timestamp),
            crate::record::to_nanos(l.dead_lettered_at),
            l.envelope.attempt,
            &l.envelope.payload[..],
            envelope_json,
            report_json,
            history_json,
            reason_json,
            stored.state.as_str(),
            stored.replayed_at.map(crate::record::to_nanos),
            stored.replay_topic.as_ref().map(|t| t.as_str().to_owned()),
            i64::try_from(row_bytes).unwrap(),
        ],
    )
    .unwrap();
}

/// A database file as a version 1 build created it (after `pragmas`).
fn v1_file(config: &DlqConfig, pragmas: &str) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(config.db_path()).unwrap();
    c.execute_batch(pragmas).unwrap();
    c.execute_batch(schema::V1).unwrap();
    c.execute_batch(&format!(
        "PRAGMA application_id = {}; PRAGMA user_version = 1;",
        schema::APPLICATION_ID
    ))
    .unwrap();
    c
}

/// Every letter's id and rowid, in rowid order.
fn rowids(c: &rusqlite::Connection) -> Vec<(String, i64)> {
    let mut stmt = c
        .prepare("SELECT CAST(id AS TEXT), rowid FROM letters ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_version_1_file_is_migrated_with_every_field_and_keeps_its_totals() {
    let dir = tempfile::tempdir().unwrap();
    let config = DlqConfig::new(dir.path());
    let old = StoredLetter::new(common::rich_letter(1));
    let mut replayed = StoredLetter::new(common::rich_letter(2));
    replayed.state = LetterState::Replayed;
    replayed.replayed_at =
        Some(replayed.letter.dead_lettered_at + std::time::Duration::from_secs(9));
    replayed.replay_topic = Some(Topic::new("orders.fixed").unwrap());
    let old_rowids = {
        // A file as a version 1 build left it, with letters its insert
        // trigger counted.
        let c = v1_file(&config, "");
        insert_old_row(&c, &old);
        insert_old_row(&c, &replayed);
        rowids(&c)
    };
    let dlq = SqliteDlq::open(config).unwrap();
    assert_eq!(rowids(&dlq.conn()), old_rowids, "the rebuild keeps rowids");
    let version: i32 = dlq
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
    assert_eq!(in_table(&dlq, "inbox"), 0);
    assert_totals_exact(&dlq);
    // Every field survives the re-nesting of the JSON columns.
    assert_eq!(dlq.get(old.letter.id).unwrap().unwrap(), old);
    assert_eq!(dlq.get(replayed.letter.id).unwrap().unwrap(), replayed);
    let listed = dlq.list(&Filter::all()).unwrap();
    assert_eq!(listed, vec![old.summary(), replayed.summary()]);
    assert!(dlq.verify().unwrap().is_ok());
    // And the migrated store works as a new one.
    dlq.push(&letter("a", "x", 2)).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 3);
    assert_totals_exact(&dlq);
    assert_eq!(
        dlq.request_replay(&Filter::all().state(LetterState::Dead), None)
            .unwrap(),
        2
    );
    let replay = Filter::all().state(LetterState::ReplayRequested);
    assert_eq!(dlq.count(&replay).unwrap(), 2);
    assert_eq!(dlq.purge(&Filter::all()).unwrap(), 3);
    assert_totals_exact(&dlq);
}

#[test]
fn a_new_store_has_8_kib_pages_and_an_old_one_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let size: u32 = dlq
        .conn()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(size, schema::PAGE_SIZE);
    drop(dlq);
    // A store made by an older build (4 KiB pages, WAL) opens as it is.
    let old = tempfile::tempdir().unwrap();
    let config = DlqConfig::new(old.path());
    drop(v1_file(
        &config,
        "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;",
    ));
    let dlq = SqliteDlq::open(config).unwrap();
    let size: u32 = dlq
        .conn()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(size, 4096);
    dlq.push(&letter("a", "x", 1)).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 1);
}

#[test]
fn every_required_column_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let conn = dlq.conn();
    let mut stmt = conn
        .prepare(
            "SELECT ii.name FROM pragma_index_list('letters') il, \
             pragma_index_info(il.name) ii WHERE ii.seqno = 0",
        )
        .unwrap();
    let leading: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for column in [
        "id",
        "topic",
        "category",
        "signature",
        "first_failure_at",
        "last_failure_at",
        "dead_lettered_at",
        "state",
    ] {
        assert!(leading.iter().any(|c| c == column), "{column}: {leading:?}");
    }
}

#[test]
fn the_wal_starts_over_under_a_steady_stream_of_commits() {
    let dir = tempfile::tempdir().unwrap();
    let config = DlqConfig::new(dir.path());
    let max_batch = config.max_batch;
    let dlq = SqliteDlq::open(config).unwrap();
    let letters: Vec<DeadLetter> = (0..16_000)
        .map(|i| {
            let mut l = letter("a", "x", i);
            l.envelope.payload = vec![0xAB_u8; 1024].into();
            l
        })
        .collect();
    // About 8000 WAL frames in all, twice `INLINE_FRAMES`: if only passive
    // checkpoints racing the writer ran, the WAL would hold them all.
    for chunk in letters.chunks(500) {
        assert!(dlq.push_many(chunk).iter().all(Result::is_ok));
    }
    let mut wal = dlq.path().as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = std::fs::metadata(wal).unwrap().len();
    // The writer's own checkpoint past INLINE_FRAMES, plus at most one batch
    // (under a page per letter) committed before the WAL starts over.
    let frames = u64::try_from(super::checkpoint::INLINE_FRAMES).unwrap() + max_batch as u64;
    let page = u64::from(schema::PAGE_SIZE);
    assert!(
        wal_bytes <= frames * (page + 24) + 32,
        "WAL grew to {wal_bytes} bytes"
    );
    // The log that started over still holds frames of its earlier
    // generation behind the new ones: they are not damage.
    let report = dlq.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    drop(dlq);
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 16_000);
    assert_totals_exact(&dlq);
}

#[test]
fn replay_queries_use_the_partial_state_index() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let l = letter("a", "x", 1);
    dlq.push(&l).unwrap();
    let plan = |state: LetterState| {
        let (clause, params) = filter_sql::compile(&Filter::all().state(state));
        let conn = dlq.conn();
        let mut stmt = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM letters WHERE {clause} ORDER BY id"
            ))
            .unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    for state in [LetterState::ReplayRequested, LetterState::Replayed] {
        let p = plan(state);
        assert!(p.contains("letters_state_active"), "{state:?}: {p}");
    }
    // And the filter still finds the letter once it is in that state.
    dlq.request_replay(&Filter::all(), None).unwrap();
    let found = dlq
        .scan(&Filter::all().state(LetterState::ReplayRequested), None, 10)
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, l.id);
}

/// How long a test waits for a thread it expects to get somewhere: a bound
/// on a hang, not a pause (every wait ends as soon as the event happens).
const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(60);

/// A `Full` store whose batches are synced on the writer when it is idle
/// (`inline`), or always on the syncer thread.
fn full_store(dir: &std::path::Path, inline: bool) -> (std::sync::Arc<SqliteDlq>, &'static str) {
    let dlq = SqliteDlq::open(DlqConfig::new(dir)).unwrap();
    if !inline {
        dlq.never_sync_inline();
    }
    // A lone push with nothing handed to the syncer is synced on the writer.
    let syncs_on = if inline {
        "bus-dlq-writer"
    } else {
        "bus-dlq-syncer"
    };
    (std::sync::Arc::new(dlq), syncs_on)
}

#[test]
fn a_push_is_answered_only_after_a_sync_that_covers_its_commit() {
    for inline in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (dlq, syncs_on) = full_store(dir.path(), inline);
        answered_only_after_sync(&dlq, syncs_on);
    }
}

fn answered_only_after_sync(dlq: &std::sync::Arc<SqliteDlq>, syncs_on: &str) {
    use std::sync::Arc;
    let (go, reached) = dlq.gate_next_sync();

    // push_then: the callback runs on whichever thread answers, so had the
    // answer been sent before the sync started, it would be in `answered`
    // before the syncer reaches the gate.
    let first = letter("a", "x", 1);
    let (answered_tx, answered) = crossbeam_channel::bounded(1);
    dlq.push_then(
        first.clone(),
        Box::new(move |r, l| {
            answered_tx
                .send((r.map_err(|e| e.to_string()), l.id))
                .unwrap()
        }),
    );
    let on = reached.recv_timeout(EVENTUALLY).expect("the sync starts");
    assert_eq!(on, syncs_on);
    // Committed (another connection reads it) but not yet durable: unanswered.
    assert!(dlq.get(first.id).unwrap().is_some());
    assert!(answered.try_recv().is_err(), "answered before the sync");
    go.send(Ok(())).unwrap();
    let (r, id) = answered.recv_timeout(EVENTUALLY).unwrap();
    assert_eq!((r, id), (Ok(first.id), first.id));

    // A blocking push the same way: it has not returned while the sync is held.
    let (go, reached) = dlq.gate_next_sync();
    let second = letter("a", "x", 2);
    let pusher = std::thread::spawn({
        let (dlq, second) = (Arc::clone(dlq), second.clone());
        move || dlq.push(&second)
    });
    let on = reached.recv_timeout(EVENTUALLY).expect("the sync starts");
    assert_eq!(on, syncs_on);
    assert!(dlq.get(second.id).unwrap().is_some());
    assert!(!pusher.is_finished(), "push returned before the sync");
    go.send(Ok(())).unwrap();
    assert_eq!(pusher.join().unwrap().unwrap(), second.id);
    assert!(dlq.poisoned().is_none());
}

#[test]
fn a_failed_sync_fails_the_pushes_it_covered_and_poisons_the_store() {
    for inline in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (dlq, syncs_on) = full_store(dir.path(), inline);
        failed_sync_poisons(&dlq, syncs_on);
    }
}

fn failed_sync_poisons(dlq: &std::sync::Arc<SqliteDlq>, syncs_on: &str) {
    use std::sync::Arc;
    let kept = letter("a", "x", 1);
    dlq.push(&kept).unwrap();
    let (go, reached) = dlq.gate_next_sync();
    let lost = letter("a", "x", 2);
    let pusher = std::thread::spawn({
        let (dlq, lost) = (Arc::clone(dlq), lost.clone());
        move || dlq.push(&lost)
    });
    let on = reached.recv_timeout(EVENTUALLY).expect("the sync starts");
    assert_eq!(on, syncs_on);
    go.send(Err(std::io::Error::other("injected EIO"))).unwrap();
    let err = pusher.join().unwrap().unwrap_err();
    assert!(
        matches!(err, DlqError::Poisoned(ref m) if m.contains("syncing the WAL failed")),
        "{err}"
    );
    assert!(dlq.poisoned().unwrap().contains("injected EIO"));
    // Never retried and pretended: every later push is refused, both ways.
    assert!(matches!(
        dlq.push(&letter("a", "x", 3)),
        Err(DlqError::Poisoned(_))
    ));
    let (tx, rx) = crossbeam_channel::bounded(1);
    dlq.push_then(
        letter("a", "x", 4),
        Box::new(move |r, _| tx.send(r).unwrap()),
    );
    assert!(matches!(rx.recv().unwrap(), Err(DlqError::Poisoned(_))));
    // Reads still work; the earlier letter is there.
    assert!(dlq.get(kept.id).unwrap().is_some());
}

#[test]
fn normal_durability_answers_without_a_syncer() {
    let dir = tempfile::tempdir().unwrap();
    let dlq =
        SqliteDlq::open(DlqConfig::new(dir.path()).with_durability(Durability::Normal)).unwrap();
    assert!(dlq.syncer.is_none() && dlq._wal.is_none());
    let l = letter("a", "x", 1);
    dlq.push(&l).unwrap();
    assert!(dlq.get(l.id).unwrap().is_some());
}

#[test]
fn the_writer_commits_the_next_batch_while_the_syncer_syncs_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (dlq, _) = full_store(dir.path(), false);
    let (go, reached) = dlq.gate_next_sync();
    let (answers_tx, answers) = crossbeam_channel::unbounded();
    let first = letter("a", "x", 1);
    let answer = answers_tx.clone();
    dlq.push_then(
        first,
        Box::new(move |r, l| answer.send((r.is_ok(), l.id)).unwrap()),
    );
    reached.recv_timeout(EVENTUALLY).expect("the sync starts");
    // The first sync is held; the writer still takes and commits the next.
    let second = letter("a", "x", 2);
    let answer = answers_tx.clone();
    dlq.push_then(
        second.clone(),
        Box::new(move |r, l| answer.send((r.is_ok(), l.id)).unwrap()),
    );
    assert!(
        bus_test::wait_until(EVENTUALLY, || dlq.get(second.id).unwrap().is_some()),
        "never committed"
    );
    assert!(answers.try_recv().is_err(), "answered before its sync");
    go.send(Ok(())).unwrap();
    // Both answered Ok: the second by the first sync or the next one.
    let mut got = [answers.recv().unwrap(), answers.recv().unwrap()];
    got.sort();
    assert!(got.iter().all(|(ok, _)| *ok));
    assert!(got.iter().any(|(_, id)| *id == second.id));
}

/// What docs/formats.md says of the columns and connections: the reader
/// (purges, replay marks, imports) keeps `synchronous=FULL` under `Full`
/// while the writer's commits are synced by the syncer, and the packed JSON
/// columns answer SQLite's JSON functions.
#[test]
fn the_reader_syncs_its_own_commits_and_summary_json_is_queryable() {
    for (durability, expect) in [(Durability::Full, 2), (Durability::Normal, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path()).with_durability(durability)).unwrap();
        let sync: i64 = dlq
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, expect, "{durability:?}");
        let l = letter("a", "x", 1);
        dlq.push(&l).unwrap();
        let severity: String = dlq
            .conn()
            .query_row(
                "SELECT json_extract(summary_json, '$.severity') FROM every_letter",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(severity, l.report.severity.as_str());
    }
}

fn wal_len(dlq: &SqliteDlq) -> u64 {
    let mut wal = dlq.path().as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).unwrap().len()
}

#[test]
fn a_full_store_preallocates_its_wal_and_commits_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let len = checkpoint::wal_bytes(&dlq.conn()).unwrap();
    assert_eq!(wal_len(&dlq), len);
    for i in 0..200 {
        dlq.push(&letter("a", "x", i)).unwrap();
    }
    // Each lone commit wrote its frames inside the preallocated file.
    assert_eq!(wal_len(&dlq), len);
    drop(dlq);
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 200);
}

#[test]
fn preallocating_keeps_the_frames_another_connection_committed() {
    let dir = tempfile::tempdir().unwrap();
    let normal = DlqConfig::new(dir.path()).with_durability(Durability::Normal);
    let dlq = SqliteDlq::open(normal).unwrap();
    for i in 0..50 {
        dlq.push(&letter("a", "x", i)).unwrap();
    }
    // Keeps the WAL, with its frames, past the store's close (the last
    // connection to close would checkpoint and delete it).
    let keep = schema::connect(dlq.path(), Durability::Normal).unwrap();
    let before = wal_len(&dlq);
    drop(dlq);
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    assert!(wal_len(&dlq) > before, "{} <= {before}", wal_len(&dlq));
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 50);
    for i in 50..100 {
        dlq.push(&letter("a", "x", i)).unwrap();
    }
    drop(dlq);
    drop(keep);
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 100);
    assert!(dlq.verify().unwrap().is_ok());
    assert_totals_exact(&dlq);
}

/// Rows in `table` (`letters` or `inbox`).
fn in_table(dlq: &SqliteDlq, table: &str) -> i64 {
    dlq.conn()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Folds whatever the writer staged, as every write on the reader does.
fn fold(dlq: &SqliteDlq) {
    dlq.write_folded(|_| Ok(())).unwrap();
}

fn ids_of(summaries: &[LetterSummary]) -> Vec<LetterId> {
    summaries.iter().map(|s| s.id).collect()
}

#[test]
fn lone_pushes_are_staged_and_every_query_and_write_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    dlq.hold_idle_fold();
    let indexed: Vec<DeadLetter> = (0..10).map(|i| letter("a", "x", i)).collect();
    assert!(dlq.push_many(&indexed).iter().all(Result::is_ok));
    // The writer may have taken the first or last few as a batch to stage.
    fold(&dlq);
    let lone = [
        letter("b", "y", 10),
        letter("a", "y", 11),
        letter("b", "z", 12),
    ];
    for l in &lone {
        dlq.push(l).unwrap();
    }
    assert_eq!(
        (in_table(&dlq, "letters"), in_table(&dlq, "inbox")),
        (10, 3)
    );
    // A staged id and an indexed one pushed again alone stay single.
    dlq.push(&lone[0]).unwrap();
    dlq.push(&indexed[0]).unwrap();
    assert_eq!(in_table(&dlq, "inbox"), 3);
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 13);
    let mut all: Vec<LetterId> = indexed.iter().chain(&lone).map(|l| l.id).collect();
    all.sort();
    assert_eq!(ids_of(&dlq.list(&Filter::all()).unwrap()), all);
    // Paging walks across both tables in id order.
    let first = dlq.scan(&Filter::all(), None, 7).unwrap();
    let rest = dlq.scan(&Filter::all(), Some(first[6].id), 100).unwrap();
    assert_eq!([ids_of(&first), ids_of(&rest)].concat(), all);
    let topic_b = Filter::all().topic("b");
    assert_eq!(
        ids_of(&dlq.list(&topic_b).unwrap()),
        vec![lone[0].id, lone[2].id]
    );
    assert_eq!(dlq.count(&topic_b).unwrap(), 2);
    for l in &lone {
        assert_eq!(dlq.get(l.id).unwrap().unwrap().letter.id, l.id);
    }
    // A write folds the staged letters into `letters` first.
    assert_eq!(dlq.request_replay(&topic_b, None).unwrap(), 2);
    assert_eq!(
        (in_table(&dlq, "letters"), in_table(&dlq, "inbox")),
        (13, 0)
    );
    assert_eq!(
        dlq.count(&Filter::all().state(LetterState::ReplayRequested))
            .unwrap(),
        2
    );
    assert_totals_exact(&dlq);
    dlq.push(&letter("c", "x", 13)).unwrap();
    assert_eq!(dlq.purge(&Filter::all().topic("c")).unwrap(), 1);
    assert_eq!(
        (in_table(&dlq, "letters"), in_table(&dlq, "inbox")),
        (13, 0)
    );
    assert_totals_exact(&dlq);
    assert!(dlq.verify().unwrap().is_ok());
}

#[test]
fn staged_ids_pushed_again_in_batches_stay_unique() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    dlq.hold_idle_fold();
    let letters: Vec<DeadLetter> = (0..10).map(|i| letter("a", "x", i)).collect();
    dlq.push(&letters[0]).unwrap();
    dlq.push(&letters[1]).unwrap();
    assert_eq!(in_table(&dlq, "inbox"), 2);
    // The staged two again, in batches staged or inserted into `letters`
    // (however the writer happens to cut them).
    assert!(dlq.push_many(&letters).iter().all(Result::is_ok));
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 10);
    fold(&dlq);
    assert_eq!(
        (in_table(&dlq, "letters"), in_table(&dlq, "inbox")),
        (10, 0)
    );
    assert_totals_exact(&dlq);
}

#[test]
fn the_writer_folds_past_fold_at_when_idle_and_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    dlq.hold_idle_fold();
    let first = letter("a", "x", 0);
    dlq.push(&first).unwrap();
    for i in 1..writer::FOLD_AT {
        dlq.push(&letter("a", "x", u32::try_from(i).unwrap()))
            .unwrap();
    }
    let fold_at = i64::try_from(writer::FOLD_AT).unwrap();
    assert_eq!(in_table(&dlq, "inbox"), fold_at);
    // Past `FOLD_AT` the push goes into `letters`, after the fold: a staged
    // id pushed again is not stored twice.
    dlq.push(&first).unwrap();
    assert_eq!(
        (in_table(&dlq, "letters"), in_table(&dlq, "inbox")),
        (fold_at, 0)
    );
    assert_totals_exact(&dlq);
    dlq.push(&letter("a", "x", 1000)).unwrap();
    dlq.push(&letter("a", "x", 1001)).unwrap();
    drop(dlq);
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    assert_eq!(
        (in_table(&dlq, "letters"), in_table(&dlq, "inbox")),
        (fold_at + 2, 0)
    );
    assert_totals_exact(&dlq);
    // Without the hold, an idle writer folds on its own.
    dlq.push(&letter("a", "x", 1002)).unwrap();
    assert!(bus_test::wait_until(EVENTUALLY, || in_table(&dlq, "inbox") == 0));
    assert_eq!(in_table(&dlq, "letters"), fold_at + 3);
    assert_totals_exact(&dlq);
}

#[test]
fn bounds_count_the_staged_letters() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path()).with_max_letters(4)).unwrap();
    dlq.hold_idle_fold();
    let indexed: Vec<DeadLetter> = (0..5).map(|i| letter("a", "x", i)).collect();
    let results = dlq.push_many(&indexed[..]);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    assert_eq!(dlq.purge(&Filter::all().limit(2)).unwrap(), 2);
    dlq.push(&letter("a", "x", 10)).unwrap();
    dlq.push(&letter("a", "x", 11)).unwrap();
    assert_eq!(in_table(&dlq, "inbox"), 2);
    let err = dlq.push(&letter("a", "x", 12)).unwrap_err();
    assert!(matches!(err, DlqError::Full(_)), "{err}");
}

#[test]
fn normal_durability_does_not_stage() {
    let dir = tempfile::tempdir().unwrap();
    let dlq =
        SqliteDlq::open(DlqConfig::new(dir.path()).with_durability(Durability::Normal)).unwrap();
    dlq.hold_idle_fold();
    dlq.push(&letter("a", "x", 1)).unwrap();
    assert_eq!((in_table(&dlq, "letters"), in_table(&dlq, "inbox")), (1, 0));
}

/// Preallocation only makes commits cheaper: when it cannot be done (a
/// full disk in the field; here, a handle that cannot write) the WAL keeps
/// its frames and length, and opening goes on.
#[test]
fn a_wal_that_cannot_be_preallocated_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let normal = DlqConfig::new(dir.path()).with_durability(Durability::Normal);
    let dlq = SqliteDlq::open(normal).unwrap();
    dlq.push(&letter("a", "x", 1)).unwrap();
    let keep = schema::connect(dlq.path(), Durability::Normal).unwrap();
    let before = wal_len(&dlq);
    let mut path = dlq.path().as_os_str().to_owned();
    path.push("-wal");
    let read_only = std::fs::File::open(path).unwrap();
    syncer::preallocate(&read_only, &keep, before + (8 << 20))
        .expect("a failed preallocation does not fail the open");
    assert_eq!(wal_len(&dlq), before);
    dlq.push(&letter("a", "x", 2)).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 2);
    assert!(dlq.verify().unwrap().is_ok());
}

/// `verify` reads both tables in one snapshot and flags a letter stored in
/// both (the fold would silently drop the staged copy).
#[test]
fn verify_flags_a_letter_both_staged_and_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    dlq.hold_idle_fold();
    let l = letter("a", "x", 7);
    dlq.push(&l).unwrap();
    fold(&dlq);
    assert_eq!((in_table(&dlq, "letters"), in_table(&dlq, "inbox")), (1, 0));
    assert!(dlq.verify().unwrap().is_ok());
    dlq.conn()
        .execute_batch(
            "INSERT INTO inbox SELECT id, topic, category, component, error_message, \
             signature, first_failure_at, last_failure_at, dead_lettered_at, payload, \
             summary_json, detail_json, state, replayed_at, replay_topic, row_bytes, replay_json FROM letters",
        )
        .unwrap();
    let report = dlq.verify().unwrap();
    assert_eq!(report.bad_rows.len(), 1, "{report:?}");
    assert_eq!(report.bad_rows[0].id, l.id.to_string());
    assert!(report.bad_rows[0].error.contains("stored twice"));
}

/// `verify` checks the running totals, which the bounds judge by, against
/// the table: a totals row off by one letter is reported, with both sides.
#[test]
fn verify_flags_totals_that_disagree_with_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    dlq.hold_idle_fold();
    for n in 0..3 {
        dlq.push(&letter("a", "x", n)).unwrap();
    }
    fold(&dlq);
    // One more staged and not folded: not in the totals yet, and not a mismatch.
    dlq.push(&letter("a", "x", 9)).unwrap();
    assert_eq!(in_table(&dlq, "inbox"), 1);
    let report = dlq.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    dlq.conn()
        .execute_batch("UPDATE totals SET letters = letters - 1 WHERE id = 1")
        .unwrap();
    let report = dlq.verify().unwrap();
    assert!(!report.is_ok());
    let t = report.totals_mismatch.expect("the mismatch is reported");
    assert_eq!((t.recorded_letters, t.counted_letters), (2, 3));
    assert_eq!(t.recorded_bytes, t.counted_bytes);
}

/// A store of the previous schema, as a running older bus keeps it, is read
/// by a read-only open as it is: every field, nothing migrated or written.
/// One too old to bridge is refused by name, also unchanged.
#[test]
fn a_read_only_open_reads_the_previous_schema_without_migrating_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = DlqConfig::new(dir.path());
    let old = StoredLetter::new(common::rich_letter(1));
    let mut replayed = StoredLetter::new(common::rich_letter(2));
    replayed.state = LetterState::Replayed;
    replayed.replayed_at =
        Some(replayed.letter.dead_lettered_at + std::time::Duration::from_secs(9));
    {
        let c = v1_file(&config, "PRAGMA journal_mode = WAL;");
        insert_old_row(&c, &old);
        insert_old_row(&c, &replayed);
        let file = DlqFile::open_read_only(dir.path()).unwrap_err();
        assert!(
            matches!(file, DlqError::NotAStore { ref reason, .. } if reason.contains("older")),
            "{file}"
        );
        for (v, sql) in schema::MIGRATIONS.iter().enumerate().take(4).skip(1) {
            c.execute_batch(sql).unwrap();
            c.execute_batch(&format!("PRAGMA user_version = {};", v + 1))
                .unwrap();
        }
    }
    let before = std::fs::read(config.db_path()).unwrap();
    let file = DlqFile::open_read_only(dir.path()).unwrap();
    assert_eq!(file.get(old.letter.id).unwrap().unwrap(), old);
    assert_eq!(file.get(replayed.letter.id).unwrap().unwrap(), replayed);
    assert_eq!(
        file.list(&Filter::all()).unwrap(),
        vec![old.summary(), replayed.summary()]
    );
    assert!(file.verify().unwrap().is_ok());
    drop(file);
    assert_eq!(std::fs::read(config.db_path()).unwrap(), before);
    assert!(!dir.path().join("dlq.sqlite-wal").exists());
}
