//! `busctl dlq` read commands never write, changing ones leave no
//! preallocated log behind, `verify` reports a damaged write-ahead log, and
//! refused replays show with their reason. Real SQLite files in temp dirs.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use bus_dlq::{
    DeadLetterStore, DlqConfig, DlqError, DlqQuery, Filter, LetterState, ReplayRefusal, SqliteDlq,
};
use bus_errors::ErrorCategory;
use busctl::dlq::{CliError, DlqCommand, run};
use clap::Parser;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

#[derive(Parser)]
struct Busctl {
    #[command(subcommand)]
    cmd: DlqCommand,
}

fn exec(args: &[&str]) -> Result<String, CliError> {
    let cmd = Busctl::try_parse_from(std::iter::once("dlq").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .cmd;
    let mut out = Vec::new();
    run(cmd, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

/// A closed store (no WAL left) holding `n` letters.
fn closed_store(n: usize) -> (tempfile::TempDir, Vec<bus_dlq::LetterId>) {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let ids = (0..n)
        .map(|i| {
            dlq.push(&common::letter(
                "orders",
                ErrorCategory::Timeout,
                "svc",
                &format!("failed {i}"),
            ))
            .unwrap()
        })
        .collect();
    dlq.close();
    (dir, ids)
}

/// Moves every letter back into `inbox`, where a bus killed right after
/// its pushes leaves them until something folds them (any write does).
/// Staged letters are not in the failure-group counts: those go too.
fn stage_everything(dir: &Path) {
    let c = rusqlite::Connection::open(dir.join("dlq.sqlite")).unwrap();
    c.execute_batch(
        "BEGIN; INSERT INTO inbox SELECT * FROM letters; DELETE FROM letters; \
         DELETE FROM letter_groups; COMMIT;",
    )
    .unwrap();
}

/// Every file in `dir`: its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (std::fs::read(e.path()).unwrap(), m.modified().unwrap()),
            )
        })
        .collect()
}

/// Tests run as root, where a 0555 directory does not stop a write: the
/// proof is that no byte, no mtime and no file name changed.
#[test]
fn read_commands_change_no_byte_and_create_no_file_in_a_read_only_dir() {
    let (dir, ids) = closed_store(3);
    stage_everything(dir.path());
    let d = dir.path().to_str().unwrap();
    let export = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = snapshot(dir.path());
    assert_eq!(before.keys().collect::<Vec<_>>(), ["dlq.sqlite"]);
    let id = ids[1].to_string();
    let out_path = export.path().to_str().unwrap();
    for args in [
        vec!["stats", "--data-dir", d],
        vec!["list", "--data-dir", d, "--json"],
        vec!["show", "--data-dir", d, &id],
        vec!["groups", "--data-dir", d],
        vec!["verify", "--data-dir", d],
        vec!["export", "--data-dir", d, "--output", out_path],
        vec!["replay", "--data-dir", d, "--all", "--dry-run"],
        vec!["purge", "--data-dir", d, "--all", "--dry-run"],
    ] {
        let out = exec(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(!out.is_empty(), "{args:?}");
        assert_eq!(snapshot(dir.path()), before, "{args:?} changed the store");
    }
    assert_eq!(
        std::fs::read_to_string(export.path())
            .unwrap()
            .lines()
            .count(),
        3
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn an_empty_file_is_not_a_store_and_gets_no_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dlq.sqlite");
    std::fs::write(&db, b"").unwrap();
    let d = dir.path().to_str().unwrap();
    for cmd in ["stats", "list", "groups", "verify", "export"] {
        let err = exec(&[cmd, "--data-dir", d]).unwrap_err();
        assert!(
            matches!(err, CliError::Dlq(DlqError::NotAStore { .. })),
            "{cmd}: {err}"
        );
        assert!(
            err.to_string().contains("is not a dead-letter store"),
            "{err}"
        );
    }
    // Changing commands refuse it too: they do not create a store either.
    let err = exec(&["purge", "--data-dir", d, "--all"]).unwrap_err();
    assert!(
        matches!(err, CliError::Dlq(DlqError::NotAStore { .. })),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
    assert_eq!(snapshot(dir.path()).len(), 1, "no -wal or -shm beside it");
}

#[test]
fn a_missing_store_is_no_store_for_every_command_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["stats", "--data-dir", d],
        vec!["verify", "--data-dir", d],
        vec!["replay", "--data-dir", d, "--all", "--dry-run"],
        vec!["replay", "--data-dir", d, "--all"],
        vec!["purge", "--data-dir", d, "--all"],
    ] {
        let err = exec(&args).unwrap_err();
        assert!(
            matches!(err, CliError::Dlq(DlqError::NoStore(_))),
            "{args:?}: {err}"
        );
    }
    assert!(snapshot(dir.path()).is_empty());
}

/// A purge that fails (here a trigger refuses the delete) while another
/// connection keeps the store open, so SQLite does not delete the WAL on
/// close: nothing may have grown it to 32 MiB.
#[test]
fn a_failed_purge_leaves_no_preallocated_wal() {
    let (dir, _) = closed_store(3);
    let db = dir.path().join("dlq.sqlite");
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER refuse_delete BEFORE DELETE ON letters \
             BEGIN SELECT RAISE(ABORT, 'delete refused'); END;",
        )
        .unwrap();
    let n: i64 = other
        .query_row("SELECT count(*) FROM letters", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    let err = exec(&["purge", "--data-dir", dir.path().to_str().unwrap(), "--all"]).unwrap_err();
    assert!(err.to_string().contains("delete refused"), "{err}");
    let wal = std::fs::metadata(dir.path().join("dlq.sqlite-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(wal < 1 << 20, "the WAL is {wal} bytes after a failed purge");
    drop(other);
}

/// A bit flipped in an early frame of a WAL with later commits: SQLite's
/// recovery would stop there and a checkpoint would make the loss final.
/// `verify` reports it, typed, and leaves the log as it was.
#[test]
fn verify_reports_a_damaged_wal_and_does_not_checkpoint_it() {
    // The schema checkpointed into the file; then letters, one commit each.
    let (live, _) = closed_store(1);
    let dlq = SqliteDlq::open(DlqConfig::new(live.path())).unwrap();
    for i in 0..6 {
        dlq.push(&common::letter(
            "orders",
            ErrorCategory::Timeout,
            "svc",
            &format!("failed {i}"),
        ))
        .unwrap();
    }
    // The files as a crash would leave them: the store still open.
    let copy = tempfile::tempdir().unwrap();
    for name in ["dlq.sqlite", "dlq.sqlite-wal"] {
        std::fs::copy(live.path().join(name), copy.path().join(name)).unwrap();
    }
    drop(dlq);
    let wal_path = copy.path().join("dlq.sqlite-wal");
    let mut wal = std::fs::read(&wal_path).unwrap();
    let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    // A byte inside the page of frame 2.
    let at = 32 + (24 + page) + 24 + 100;
    wal[at] ^= 0x5a;
    std::fs::write(&wal_path, &wal).unwrap();

    let d = copy.path().to_str().unwrap();
    let out = {
        let cmd = Busctl::try_parse_from(["dlq", "verify", "--data-dir", d, "--json"])
            .unwrap()
            .cmd;
        let mut out = Vec::new();
        let err = run(cmd, &mut out).unwrap_err();
        assert!(matches!(err, CliError::VerifyFailed(n) if n >= 1), "{err}");
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    let damage = &out["wal_damage"];
    assert_eq!(damage["broken_at_frame"], 2, "{out}");
    assert!(
        damage["commits_after_break"].as_u64().unwrap() >= 1,
        "{out}"
    );
    let text = exec(&["verify", "--data-dir", d]).unwrap_err();
    assert!(matches!(text, CliError::VerifyFailed(_)));
    // Damage in the commit that created the schema: the file alone is no
    // store, and verify says why rather than only that.
    let fresh = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(fresh.path())).unwrap();
    let early = tempfile::tempdir().unwrap();
    for name in ["dlq.sqlite", "dlq.sqlite-wal"] {
        std::fs::copy(fresh.path().join(name), early.path().join(name)).unwrap();
    }
    drop(dlq);
    let mut log = std::fs::read(early.path().join("dlq.sqlite-wal")).unwrap();
    log[at] ^= 0x5a;
    std::fs::write(early.path().join("dlq.sqlite-wal"), &log).unwrap();
    let mut out = Vec::new();
    let cmd = Busctl::try_parse_from([
        "dlq",
        "verify",
        "--data-dir",
        early.path().to_str().unwrap(),
    ])
    .unwrap()
    .cmd;
    assert!(matches!(run(cmd, &mut out), Err(CliError::VerifyFailed(_))));
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("breaks at frame 2"), "{out}");
    assert_eq!(
        std::fs::read(&wal_path).unwrap(),
        wal,
        "verify left the log as it was (no checkpoint)"
    );
}

#[test]
fn a_refused_replay_shows_its_reason_in_list_show_and_stats() {
    let (dir, ids) = closed_store(2);
    let d = dir.path().to_str().unwrap();
    {
        let dlq = bus_dlq::DlqFile::open_read_write(dir.path()).unwrap();
        dlq.request_replay(&Filter::all(), None).unwrap();
        let refusal =
            ReplayRefusal::new("no subscriber for topic orders", 1, SystemTime::now(), None);
        assert!(
            dlq.refuse_replay(ids[0], &refusal, LetterState::ReplayFailed)
                .unwrap()
        );
    }
    let list: serde_json::Value =
        serde_json::from_str(&exec(&["list", "--data-dir", d, "--json"]).unwrap()).unwrap();
    assert_eq!(list[0]["state"], "replay_failed");
    assert_eq!(
        list[0]["replay_refusal"]["reason"],
        "no subscriber for topic orders"
    );
    assert_eq!(list[1]["state"], "replay_requested");
    let show = exec(&["show", "--data-dir", d, &ids[0].to_string()]).unwrap();
    assert!(show.contains("refused 1 time(s)"), "{show}");
    assert!(show.contains("no subscriber for topic orders"), "{show}");
    let stats = exec(&["stats", "--data-dir", d]).unwrap();
    assert!(stats.contains("replay_failed"), "{stats}");
    assert!(stats.contains("no subscriber for topic orders"), "{stats}");
    // Fixed, it can be requested again; a plain `replay` leaves it alone.
    assert!(
        exec(&["replay", "--data-dir", d, "--all"])
            .unwrap()
            .contains("of 0 letters")
    );
    let again = exec(&["replay", "--data-dir", d, "--state", "replay_failed"]).unwrap();
    assert!(again.contains("of 1 letters"), "{again}");
}
