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

/// Lone pushes under `Full` are staged in `inbox` and folded into `letters`
/// every 64: readers running meanwhile must see every acknowledged letter,
/// once, whichever table it is in when their query runs.
#[test]
fn readers_see_each_letter_once_while_the_writer_folds() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    const LETTERS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let dlq = Arc::new(SqliteDlq::open(DlqConfig::new(dir.path())).unwrap());
    let acked = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(std::sync::Barrier::new(3));
    let pusher = {
        let (dlq, acked, start) = (Arc::clone(&dlq), Arc::clone(&acked), Arc::clone(&start));
        std::thread::spawn(move || {
            start.wait();
            for i in 0..LETTERS {
                let l = common::letter("t", ErrorCategory::Timeout, "c", &format!("lone {i}"));
                dlq.push(&l).unwrap();
                acked.fetch_add(1, SeqCst);
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (dlq, acked, start) = (Arc::clone(&dlq), Arc::clone(&acked), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let mut queries = 0;
                loop {
                    let floor = acked.load(SeqCst);
                    let ids: Vec<LetterId> = dlq
                        .list(&Filter::all())
                        .unwrap()
                        .into_iter()
                        .map(|l| l.id)
                        .collect();
                    let unique: BTreeSet<LetterId> = ids.iter().copied().collect();
                    assert_eq!(unique.len(), ids.len(), "a letter listed twice");
                    assert!(
                        ids.len() >= floor,
                        "{} listed, {floor} acknowledged before the query",
                        ids.len()
                    );
                    let counted = dlq.count(&Filter::all()).unwrap();
                    assert!(counted >= ids.len() as u64, "the count went back");
                    queries += 1;
                    if floor == LETTERS {
                        return queries;
                    }
                }
            })
        })
        .collect();
    pusher.join().unwrap();
    for r in readers {
        assert!(r.join().unwrap() > 1, "the reader ran beside the pusher");
    }
    assert_eq!(dlq.count(&Filter::all()).unwrap(), LETTERS as u64);
    assert!(dlq.verify().unwrap().is_ok());
}
