//! The query API: both stores agree, replay and purge do what they say.
// Test helpers live outside #[test] fns; PublishError (bus-core) is large by design.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use bus_core::{Envelope, PublishError, Topic};
use bus_dlq::{
    DeadLetterStore, DlqConfig, DlqQuery, Filter, LetterState, MemoryDlq, REPLAYED_FROM_HEADER,
    SqliteDlq,
};
use bus_errors::ErrorCategory;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn both() -> (tempfile::TempDir, SqliteDlq, MemoryDlq) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    (dir, s, MemoryDlq::new())
}

fn push_both(s: &SqliteDlq, m: &MemoryDlq, l: &bus_core::DeadLetter) {
    s.push(l).unwrap();
    m.push(l).unwrap();
}

#[test]
fn sqlite_and_memory_select_the_same_letters_for_every_filter() {
    let (_d, s, m) = both();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let cats = [
        ErrorCategory::Connection,
        ErrorCategory::Timeout,
        ErrorCategory::Serialization,
    ];
    let mut ids = Vec::new();
    for i in 0..60_u32 {
        let mut l = common::letter(
            ["a.x", "b.y", "c"][i as usize % 3],
            cats[i as usize % 3 / 2 + (i as usize % 2)],
            ["c1", "c2"][i as usize % 2],
            &format!(
                "{} id {i}",
                ["Refused by Peer", "bad JSON", "deadline"][i as usize % 3]
            ),
        );
        l.dead_lettered_at = t0 + Duration::from_secs(u64::from(i) * 60);
        ids.push(l.id);
        push_both(&s, &m, &l);
    }
    s.request_replay(&Filter::all().topic("c").limit(5), None)
        .unwrap();
    m.request_replay(&Filter::all().topic("c").limit(5), None)
        .unwrap();
    let from = [LetterState::Dead, LetterState::ReplayRequested];
    let at = Some(t0 + Duration::from_secs(5));
    s.set_state(&ids[..4], &from, LetterState::Replayed, at, None)
        .unwrap();
    m.set_state(&ids[..4], &from, LetterState::Replayed, at, None)
        .unwrap();
    let sig = s.list(&Filter::all()).unwrap()[7].signature.clone();
    let filters = [
        Filter::all(),
        Filter::all().topic("a.x"),
        Filter::all().category(ErrorCategory::Timeout),
        Filter::all().component("c2"),
        Filter::all().text("refused BY"),
        Filter::all().text("nothing like it"),
        Filter::all().signature(sig),
        Filter::all().state(LetterState::ReplayRequested),
        Filter::all().state(LetterState::Replayed),
        Filter::all().between(
            Some(t0 + Duration::from_secs(600)),
            Some(t0 + Duration::from_secs(1800)),
        ),
        Filter::all().between(None, Some(t0 + Duration::from_secs(120))),
        Filter::all().ids([ids[3], ids[9], ids[59]]),
        Filter::all()
            .topic("b.y")
            .category(ErrorCategory::Connection)
            .limit(3)
            .offset(2),
        Filter::all().offset(55),
        Filter::all().limit(0),
        Filter::all().reason("retries_exhausted"),
        Filter::all().reason("shutdown"),
    ];
    for f in &filters {
        let a = s.list(f).unwrap();
        let b = m.list(f).unwrap();
        assert!(
            a == b,
            "stores disagree on {f:?}: {} vs {} letters",
            a.len(),
            b.len()
        );
        assert_eq!(s.count(f).unwrap(), a.len() as u64, "{f:?}");
        assert_eq!(m.count(f).unwrap(), a.len() as u64, "{f:?}");
        assert_eq!(s.groups(f).unwrap(), m.groups(f).unwrap(), "{f:?}");
        // Export reads whole letters a page per query in SQLite, letter
        // by letter in memory: the same lines either way.
        let (mut xs, mut xm) = (Vec::new(), Vec::new());
        assert_eq!(s.export_jsonl(f, &mut xs).unwrap(), a.len() as u64);
        m.export_jsonl(f, &mut xm).unwrap();
        assert!(xs == xm, "exports differ on {f:?}");
        assert!(a.iter().all(|l| f.matches(l)));
    }
    // Filters narrow for real: spot-check a few counts.
    assert_eq!(s.count(&filters[1]).unwrap(), 20);
    assert_eq!(s.count(&filters[4]).unwrap(), 20);
    assert_eq!(s.count(&filters[9]).unwrap(), 20);
    assert_eq!(s.count(&filters[12]).unwrap(), 3);
    assert_eq!(s.count(&filters[13]).unwrap(), 5);
    assert_eq!(s.stats().unwrap(), m.stats().unwrap());
}

#[test]
fn stats_count_by_topic_category_reason_and_state() {
    let m = MemoryDlq::new();
    for i in 0..6 {
        let cat = if i < 4 {
            ErrorCategory::Timeout
        } else {
            ErrorCategory::Connection
        };
        m.push(&common::letter(
            if i % 2 == 0 { "a" } else { "b" },
            cat,
            "c",
            "x",
        ))
        .unwrap();
    }
    m.request_replay(&Filter::all().limit(2), None).unwrap();
    let st = m.stats().unwrap();
    assert_eq!(st.total, 6);
    assert_eq!(st.by_topic["a"], 3);
    assert_eq!(st.by_category["TIMEOUT"], 4);
    assert_eq!(st.by_category["CONNECTION"], 2);
    assert_eq!(st.by_reason["retries_exhausted"], 6);
    assert_eq!(st.by_state["dead"], 4);
    assert_eq!(st.by_state["replay_requested"], 2);
}

#[test]
fn groups_gather_repeat_failures_by_normalized_message_and_component() {
    let m = MemoryDlq::new();
    for i in 0..5 {
        m.push(&common::letter(
            "a",
            ErrorCategory::Connection,
            "orders",
            &format!("connect 10.0.0.{i}:5432 refused"),
        ))
        .unwrap();
    }
    for i in 0..2 {
        m.push(&common::letter(
            "b",
            ErrorCategory::Connection,
            "orders",
            &format!("connect 10.0.0.{i}:5432 refused"),
        ))
        .unwrap();
        m.push(&common::letter(
            "a",
            ErrorCategory::Connection,
            "billing",
            &format!("connect 10.0.0.{i}:5432 refused"),
        ))
        .unwrap();
    }
    let g = m.groups(&Filter::all()).unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!((g[0].count, g[0].component.as_str()), (7, "orders"));
    assert_eq!(
        g[0].topics.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!((g[1].count, g[1].component.as_str()), (2, "billing"));
    // One fix, one replay: the whole group by its signature.
    let mut out = Vec::new();
    let r = m
        .replay(
            &Filter::all().signature(g[0].signature.clone()),
            None,
            &mut |e| {
                out.push(e);
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(r.replayed.len(), 7);
    assert_eq!(out.len(), 7);
}

#[test]
fn replay_then_purge_leaves_the_store_empty_and_the_messages_delivered() {
    let (_d, s, m) = both();
    let letters: Vec<_> = (0..40).map(common::rich_letter).collect();
    for l in &letters {
        push_both(&s, &m, l);
    }
    for store in [&s as &dyn Check, &m] {
        store.check(&letters);
    }
}

trait Check {
    fn check(&self, letters: &[bus_core::DeadLetter]);
}
impl<T: DlqQuery> Check for T {
    fn check(&self, letters: &[bus_core::DeadLetter]) {
        let mut bus: Vec<Envelope> = Vec::new();
        let report = self
            .replay(&Filter::all(), None, &mut |e| {
                bus.push(e);
                Ok(())
            })
            .unwrap();
        assert_eq!(report.selected, 40);
        assert_eq!(report.replayed.len(), 40);
        assert!(report.failed.is_empty() && report.unmarked.is_empty());
        assert_eq!(bus.len(), 40);
        for l in letters {
            let env = bus
                .iter()
                .find(|e| e.headers.get(REPLAYED_FROM_HEADER) == Some(&l.id.to_string()))
                .unwrap();
            // A replay is a new delivery (a fresh id, so no broker drops it as
            // a duplicate); the original id travels in a header.
            assert_ne!(env.id, l.envelope.id);
            assert_eq!(
                env.headers.get(bus_dlq::ORIGINAL_ID_HEADER),
                Some(&l.envelope.id.to_string())
            );
            assert_eq!(env.payload, l.envelope.payload);
            assert_eq!(env.topic, l.envelope.topic);
            assert_eq!(env.history, l.envelope.history);
            assert_eq!(env.attempt, 1);
        }
        // A second replay re-publishes nothing.
        let again = self
            .replay(&Filter::all(), None, &mut |e| {
                bus.push(e);
                Ok(())
            })
            .unwrap();
        assert_eq!((again.selected, bus.len()), (0, 40));
        // Within the audit period nothing is purged; after it, everything.
        let now = SystemTime::now();
        assert_eq!(
            self.purge_replayed_older_than(Duration::from_secs(7 * 86400), now)
                .unwrap(),
            0
        );
        let later = now + Duration::from_secs(8 * 86400);
        assert_eq!(
            self.purge_replayed_older_than(Duration::from_secs(7 * 86400), later)
                .unwrap(),
            40
        );
        assert_eq!(self.count(&Filter::all()).unwrap(), 0);
    }
}

#[test]
fn a_refused_publish_leaves_the_letter_dead_and_reported() {
    let (_d, s, _m) = both();
    let a = common::letter("a", ErrorCategory::Timeout, "c", "x");
    let b = common::letter("b", ErrorCategory::Timeout, "c", "x");
    s.push(&a).unwrap();
    s.push(&b).unwrap();
    let mut accepted = Vec::new();
    let report = s
        .replay(&Filter::all(), None, &mut |e| {
            if e.topic.as_str() == "a" {
                Err(PublishError::Closed { envelope: e })
            } else {
                accepted.push(e);
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(report.replayed, vec![b.id]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, a.id);
    assert!(report.failed[0].1.contains("closed"), "{:?}", report.failed);
    assert_eq!(s.get(a.id).unwrap().unwrap().state, LetterState::Dead);
    assert_eq!(s.get(b.id).unwrap().unwrap().state, LetterState::Replayed);
    assert!(s.get(b.id).unwrap().unwrap().replayed_at.is_some());
}

#[test]
fn replay_can_target_another_topic() {
    let m = MemoryDlq::new();
    m.push(&common::letter("orders", ErrorCategory::Timeout, "c", "x"))
        .unwrap();
    let target = Topic::new("orders.retry").unwrap();
    let mut out = Vec::new();
    m.replay(&Filter::all(), Some(&target), &mut |e| {
        out.push(e);
        Ok(())
    })
    .unwrap();
    assert_eq!(out[0].topic, target);
}

#[test]
fn requested_replays_are_taken_by_the_bus_and_marked() {
    let (_d, s, _m) = both();
    for i in 0..10 {
        s.push(&common::letter(
            "a",
            ErrorCategory::Timeout,
            "c",
            &format!("x{i}"),
        ))
        .unwrap();
    }
    let target = Topic::new("a.again").unwrap();
    // Another process (busctl) asks; this one (the bus) polls.
    let cli = SqliteDlq::open_existing(DlqConfig::new(s.path().parent().unwrap())).unwrap();
    assert_eq!(
        cli.request_replay(&Filter::all().limit(6), Some(&target))
            .unwrap(),
        6
    );
    assert_eq!(
        cli.request_replay(&Filter::all().limit(6), Some(&target))
            .unwrap(),
        0,
        "already requested"
    );
    let taken = s
        .take_replay_requests(4, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(taken.len(), 4);
    assert!(
        taken
            .iter()
            .all(|t| t.replay_topic.as_ref() == Some(&target))
    );
    let ids: Vec<_> = taken.iter().map(|t| t.letter.id).collect();
    assert_eq!(s.mark_replayed(&ids).unwrap(), 4);
    assert_eq!(
        s.take_replay_requests(100, std::time::SystemTime::now())
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        cli.count(&Filter::all().state(LetterState::Replayed))
            .unwrap(),
        4
    );
}

#[test]
fn purge_by_id_filter_and_age() {
    let (_d, s, _m) = both();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let old: Vec<_> = (0..3)
        .map(|i| common::letter_at("old", t0 + Duration::from_secs(i)))
        .collect();
    let new: Vec<_> = (0..3)
        .map(|i| common::letter_at("new", t0 + Duration::from_secs(86400 * 10 + i)))
        .collect();
    for l in old.iter().chain(&new) {
        s.push(l).unwrap();
    }
    assert_eq!(s.purge(&Filter::all().ids([new[0].id])).unwrap(), 1);
    assert!(s.get(new[0].id).unwrap().is_none());
    let now = t0 + Duration::from_secs(86400 * 11);
    assert_eq!(
        s.purge_older_than(Duration::from_secs(86400 * 5), now)
            .unwrap(),
        3
    );
    assert_eq!(s.count(&Filter::all().topic("old")).unwrap(), 0);
    assert_eq!(s.purge(&Filter::all().topic("new")).unwrap(), 2);
    assert_eq!(s.count(&Filter::all()).unwrap(), 0);
}

/// The SQLite store marks a replay in one statement; the memory store
/// through the shared page-by-page code: both mark the same letters for
/// every filter, pages (`limit`, `offset`) and states included.
#[test]
fn sqlite_and_memory_mark_the_same_letters_for_a_replay() {
    let (_d, s, m) = both();
    let mut ids = Vec::new();
    for i in 0..40_u32 {
        let l = common::letter(
            ["a", "b"][i as usize % 2],
            ErrorCategory::Timeout,
            "c",
            &format!("failed {i}"),
        );
        ids.push(l.id);
        push_both(&s, &m, &l);
    }
    let from = [LetterState::Dead];
    for q in [&s as &dyn DlqQuery, &m] {
        q.set_state(&ids[..3], &from, LetterState::Replayed, None, None)
            .unwrap();
        q.set_state(&ids[5..9], &from, LetterState::ReplayFailed, None, None)
            .unwrap();
    }
    let target = bus_core::Topic::new("elsewhere").unwrap();
    let filters = [
        (Filter::all().topic("a").limit(4).offset(1), None),
        (Filter::all().offset(30), Some(&target)),
        (
            Filter::all().state(LetterState::ReplayFailed).limit(2),
            None,
        ),
        (Filter::all().ids([ids[0], ids[12], ids[13]]), None),
        (Filter::all().text("failed 2"), Some(&target)),
        (Filter::all().limit(0), None),
        (Filter::all(), None),
    ];
    for (f, to) in &filters {
        let marked = s.request_replay(f, *to).unwrap();
        assert_eq!(marked, m.request_replay(f, *to).unwrap(), "{f:?}");
        let all = |q: &dyn DlqQuery| -> Vec<_> {
            q.list(&Filter::all())
                .unwrap()
                .iter()
                .map(|l| {
                    let full = q.get(l.id).unwrap().unwrap();
                    (l.id, full.state, full.replay_topic)
                })
                .collect()
        };
        assert_eq!(all(&s), all(&m), "after {f:?}");
    }
    assert_eq!(
        s.count(&Filter::all().state(LetterState::ReplayRequested))
            .unwrap(),
        37,
        "an unfiltered request takes dead and replay_failed letters: all but the 3 replayed"
    );
}
