//! Every field survives the store, a reopen, and export/import.
// Test helpers live outside #[test] fns; PublishError (bus-core) is large by design.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use bus_dlq::{
    DeadLetterStore, DlqConfig, DlqQuery, Durability, Filter, LetterState, MemoryDlq, SqliteDlq,
};
use common::rich_letter;
use std::os::unix::fs::PermissionsExt;

#[test]
fn every_field_round_trips_through_sqlite_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let memory = MemoryDlq::new();
    for seed in 0..20 {
        let l = rich_letter(seed);
        assert_eq!(sqlite.push(&l).unwrap(), l.id);
        memory.push(&l).unwrap();
        let back = sqlite.get(l.id).unwrap().unwrap();
        assert_eq!(back.letter, l, "seed {seed}");
        assert_eq!(back.state, LetterState::Dead);
        assert_eq!(back.signature, bus_dlq::letter_signature(&l));
        assert_eq!(memory.get(l.id).unwrap().unwrap(), back);
    }
    assert_eq!(
        sqlite.list(&Filter::all()).unwrap(),
        memory.list(&Filter::all()).unwrap()
    );
}

#[test]
fn letters_survive_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let letters: Vec<_> = (0..50).map(rich_letter).collect();
    {
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path()).with_durability(Durability::Normal))
            .unwrap();
        for l in &letters {
            dlq.push(l).unwrap();
        }
        dlq.request_replay(&Filter::all().ids([letters[0].id]), None)
            .unwrap();
        dlq.close();
    }
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 50);
    for l in &letters {
        assert_eq!(&dlq.get(l.id).unwrap().unwrap().letter, l);
    }
    assert_eq!(
        dlq.get(letters[0].id).unwrap().unwrap().state,
        LetterState::ReplayRequested
    );
    let report = dlq.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows_checked, 50);
}

#[test]
fn files_are_private_to_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/bus-data");
    let dlq = SqliteDlq::open(DlqConfig::new(&data)).unwrap();
    dlq.push(&rich_letter(1)).unwrap();
    for name in ["dlq.sqlite", "dlq.sqlite-wal", "dlq.sqlite-shm"] {
        let meta = std::fs::metadata(data.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn export_then_import_gives_back_the_same_letters_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let src = SqliteDlq::open(DlqConfig::new(dir.path().join("a"))).unwrap();
    for seed in 0..30 {
        src.push(&rich_letter(seed)).unwrap();
    }
    let mut delivered = Vec::new();
    src.replay(&Filter::all().limit(5), None, &mut |e| {
        delivered.push(e);
        Ok(())
    })
    .unwrap();
    let mut jsonl = Vec::new();
    assert_eq!(src.export_jsonl(&Filter::all(), &mut jsonl).unwrap(), 30);
    assert_eq!(jsonl.iter().filter(|b| **b == b'\n').count(), 30);

    for dst in [
        Box::new(SqliteDlq::open(DlqConfig::new(dir.path().join("b"))).unwrap()) as Box<dyn Q>,
        Box::new(MemoryDlq::new()),
    ] {
        let r = dst.import(&jsonl);
        assert_eq!((r.read, r.inserted, r.existing), (30, 30, 0));
        for s in src.list(&Filter::all()).unwrap() {
            assert_eq!(dst.fetch(s.id), src.get(s.id).unwrap().unwrap());
        }
        // Importing again changes nothing.
        assert_eq!(dst.import(&jsonl).existing, 30);
    }
}

trait Q {
    fn import(&self, bytes: &[u8]) -> bus_dlq::ImportReport;
    fn fetch(&self, id: bus_dlq::LetterId) -> bus_dlq::StoredLetter;
}
impl<T: DlqQuery> Q for T {
    fn import(&self, mut bytes: &[u8]) -> bus_dlq::ImportReport {
        self.import_jsonl(&mut bytes).unwrap()
    }
    fn fetch(&self, id: bus_dlq::LetterId) -> bus_dlq::StoredLetter {
        DlqQuery::get(self, id).unwrap().unwrap()
    }
}

#[test]
fn import_of_a_bad_line_is_a_clear_error() {
    let dlq = MemoryDlq::new();
    let err = dlq
        .import_jsonl(&mut &b"{\"not\":\"a letter\"}\n"[..])
        .unwrap_err();
    assert!(
        matches!(err, bus_dlq::DlqError::BadInput { line: 1, .. }),
        "{err}"
    );
}

/// A 10 MB line, and a 100 000-character topic, appear in the error only in
/// part, with their length; the error says bad input with the line number,
/// never that the store is corrupt, and nothing of the bad line is stored.
#[test]
fn a_huge_bad_import_line_is_bad_input_shortened_with_its_length() {
    let dlq = MemoryDlq::new();
    let good = {
        let mut out = Vec::new();
        let src = MemoryDlq::new();
        src.push(&common::letter(
            "orders",
            bus_errors::ErrorCategory::Timeout,
            "svc",
            "x",
        ))
        .unwrap();
        src.export_jsonl(&bus_dlq::Filter::all(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let huge_variant = format!("{{\"state\":\"{}\"}}\n", "s".repeat(10_000_000));
    let long_topic = good.replace("\"orders\"", &format!("\"{}\"", "t".repeat(100_000)));
    assert_ne!(long_topic, good);
    for (bad, line) in [(huge_variant, 2_u64), (long_topic, 2)] {
        let input = format!("{good}{bad}");
        let err = dlq.import_jsonl(&mut input.as_bytes()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, bus_dlq::DlqError::BadInput { line: l, .. } if l == line),
            "{}",
            &msg[..msg.len().min(300)]
        );
        assert!(!msg.contains("corrupt"), "{}", &msg[..msg.len().min(300)]);
        assert!(msg.len() < 1_000, "the error is {} bytes long", msg.len());
        assert!(msg.contains("bytes"), "{msg}");
    }
    // The good first line is in (twice imported: once), the bad ones are not.
    assert_eq!(dlq.count(&bus_dlq::Filter::all()).unwrap(), 1);
}
