//! Many threads pushing at once lose nothing.
// Test helpers live outside #[test] fns; PublishError (bus-core) is large by design.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use bus_dlq::{DeadLetterStore, DlqConfig, DlqQuery, Filter, LetterId, MemoryDlq, SqliteDlq};
use bus_errors::ErrorCategory;
use std::collections::BTreeSet;
use std::sync::Arc;

fn hammer<S: DeadLetterStore + DlqQuery + Send + Sync + 'static>(store: Arc<S>) {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..500)
                    .map(|i| {
                        let l = common::letter(
                            &format!("t{t}"),
                            ErrorCategory::Connection,
                            "c",
                            &format!("refused {i}"),
                        );
                        store.push(&l).unwrap()
                    })
                    .collect::<Vec<LetterId>>()
            })
        })
        .collect();
    let acked: BTreeSet<LetterId> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(acked.len(), 4000);
    assert_eq!(store.count(&Filter::all()).unwrap(), 4000);
    let stored: BTreeSet<LetterId> = store
        .list(&Filter::all())
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(stored, acked);
    for t in 0..8 {
        assert_eq!(
            store.count(&Filter::all().topic(format!("t{t}"))).unwrap(),
            500
        );
    }
    // All share one signature: the numbers are normalized away.
    let groups = store.groups(&Filter::all()).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].count, 4000);
    assert_eq!(groups[0].topics.len(), 8);
}

#[test]
fn eight_threads_pushing_500_each_into_sqlite_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = Arc::new(SqliteDlq::open(DlqConfig::new(dir.path())).unwrap());
    hammer(Arc::clone(&dlq));
    assert!(dlq.verify().unwrap().is_ok());
}

#[test]
fn eight_threads_pushing_500_each_into_memory_lose_nothing() {
    hammer(Arc::new(MemoryDlq::new()));
}

#[test]
fn readers_and_purgers_run_beside_pushers() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = Arc::new(SqliteDlq::open(DlqConfig::new(dir.path())).unwrap());
    let pushers: Vec<_> = (0..4)
        .map(|t| {
            let dlq = Arc::clone(&dlq);
            std::thread::spawn(move || {
                for i in 0..300 {
                    let topic = if i % 2 == 0 { "keep" } else { "drop" };
                    let l = common::letter(topic, ErrorCategory::Timeout, "c", &format!("{t} {i}"));
                    dlq.push(&l).unwrap();
                }
            })
        })
        .collect();
    // A second process's view: its own connection, reading and deleting meanwhile.
    let other = SqliteDlq::open_existing(DlqConfig::new(dir.path())).unwrap();
    let mut purged = 0;
    while pushers.iter().any(|p| !p.is_finished()) {
        purged += other.purge(&Filter::all().topic("drop")).unwrap();
        let _ = other.stats().unwrap();
    }
    for p in pushers {
        p.join().unwrap();
    }
    purged += other.purge(&Filter::all().topic("drop")).unwrap();
    assert_eq!(purged, 600);
    assert_eq!(dlq.count(&Filter::all().topic("keep")).unwrap(), 600);
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 600);
}
