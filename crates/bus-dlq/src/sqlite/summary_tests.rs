//! `letter_groups` against brute force: random pushes (staged and
//! indexed), purges, replay marks, refusals and imports, and after each the
//! groups read from the summary must equal both SQLite's grouping of the
//! letters and the provided walk over every letter, for every single
//! filter and time windows whose edges fall inside and on hours.

use super::*;
use crate::query::walk_groups;
use crate::testutil::letter;
use bus_core::{AttemptRecord, DeadLetterReason, Envelope};
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use std::collections::BTreeSet;
use std::time::Duration;

const TOPICS: [&str; 3] = ["orders", "payments", "mail"];
const COMPONENTS: [&str; 2] = ["billing", "shipping"];
const CATEGORIES: [ErrorCategory; 3] = [
    ErrorCategory::Timeout,
    ErrorCategory::Connection,
    ErrorCategory::Serialization,
];
const MESSAGES: [&str; 3] = ["lost order", "bad amount", "no route"];
const STATES: [LetterState; 4] = [
    LetterState::Dead,
    LetterState::ReplayRequested,
    LetterState::Replayed,
    LetterState::ReplayFailed,
];
const HOUR: Duration = Duration::from_secs(3600);

/// The start of an hour, so windows can be put on and off hour edges.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000 / 3600 * 3600)
}

/// A random letter within six hours of [`t0`]. Its last failure is
/// `unique` nanoseconds past a random second, so no two letters tie for the
/// latest of a group (SQLite's grouping of the letters picks any of them).
fn random_letter(rng: &mut fastrand::Rng, unique: u64) -> DeadLetter {
    let topic = TOPICS[rng.usize(..TOPICS.len())];
    let component = COMPONENTS[rng.usize(..COMPONENTS.len())];
    let category = CATEGORIES[rng.usize(..CATEGORIES.len())];
    let message = format!("{} {}", MESSAGES[rng.usize(..MESSAGES.len())], rng.u32(..));
    let env = Envelope::new(Topic::new(topic).unwrap(), vec![1, 2, 3]);
    let at = t0() + Duration::from_secs(rng.u64(..6 * 3600)) + Duration::from_nanos(unique);
    let mut report = ErrorReport::new(Classification::of(category), component, &message);
    report.timestamp = at;
    let mut l = DeadLetter::new(
        env,
        report,
        if rng.bool() {
            DeadLetterReason::RetriesExhausted
        } else {
            DeadLetterReason::NotRetryable
        },
        component,
        "g",
    );
    if rng.bool() {
        l.envelope.history.push(AttemptRecord {
            attempt: 1,
            at: at - Duration::from_secs(rng.u64(..4 * 3600)),
            component: component.to_owned(),
            category,
            severity: Severity::High,
            error_type: "E".to_owned(),
            message: message.clone(),
            decision: "retry".to_owned(),
        });
    }
    // Dead-lettered up to two hours after the last failure: a letter's
    // hour is not its failure's.
    l.dead_lettered_at = at + Duration::from_secs(rng.u64(..2 * 3600));
    l
}

fn filters(rng: &mut fastrand::Rng) -> Vec<Filter> {
    let mut out = vec![Filter::all()];
    out.extend(TOPICS.iter().map(|t| Filter::all().topic(*t)));
    out.extend(CATEGORIES.iter().map(|c| Filter::all().category(*c)));
    out.extend(COMPONENTS.iter().map(|c| Filter::all().component(*c)));
    out.extend(STATES.iter().map(|s| Filter::all().state(*s)));
    for reason in ["retries_exhausted", "not_retryable"] {
        let mut f = Filter::all();
        f.reason = Some(reason.to_owned());
        out.push(f);
    }
    for _ in 0..4 {
        // On an hour edge half the time, else anywhere.
        let mut at = || {
            let hours = HOUR * rng.u32(..9);
            if rng.bool() {
                t0() + hours
            } else {
                t0() + hours + Duration::from_millis(rng.u64(..3_600_000))
            }
        };
        let (since, until) = (at(), at());
        out.push(Filter::all().between(Some(since), None));
        out.push(Filter::all().between(None, Some(until)));
        out.push(Filter::all().between(Some(since), Some(until)));
        out.push(Filter::all().topic(TOPICS[0]).between(Some(since), None));
    }
    out
}

fn assert_groups_agree(dlq: &SqliteDlq, rng: &mut fastrand::Rng, step: &str) {
    let report = dlq.verify().unwrap();
    assert!(report.is_ok(), "{step}: {report:?}");
    for f in filters(rng) {
        let from_summary = dlq
            .file
            .summary_groups(&f)
            .unwrap()
            .unwrap_or_else(|| panic!("{step}: the summary does not answer {f:?}"));
        assert_eq!(
            from_summary,
            dlq.file.sql_groups(&f).unwrap(),
            "{step}: {f:?}"
        );
        assert_eq!(from_summary, walk_groups(dlq, &f).unwrap(), "{step}: {f:?}");
    }
}

fn some_ids(dlq: &SqliteDlq, rng: &mut fastrand::Rng, max: usize) -> Vec<LetterId> {
    let ids: Vec<LetterId> = dlq
        .list(&Filter::all())
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut picked: Vec<LetterId> = (0..rng.usize(..=max))
        .map(|_| ids[rng.usize(..ids.len())])
        .collect();
    picked.sort();
    picked.dedup();
    picked
}

#[test]
fn summary_groups_equal_brute_force_through_random_changes() {
    for seed in 0..4_u64 {
        let dir = tempfile::tempdir().unwrap();
        let durability = if seed % 2 == 0 {
            Durability::Full
        } else {
            Durability::Normal
        };
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path()).with_durability(durability)).unwrap();
        // Staged letters stay in `inbox` until a write folds them.
        dlq.hold_idle_fold();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut unique = 0;
        let mut purged: Vec<StoredLetter> = Vec::new();
        for round in 0..40 {
            let step = match rng.u8(..7) {
                0 | 1 => {
                    let n = if rng.bool() {
                        rng.usize(1..=3)
                    } else {
                        rng.usize(4..60)
                    };
                    let letters: Vec<DeadLetter> = (0..n)
                        .map(|_| {
                            unique += 1;
                            random_letter(&mut rng, unique)
                        })
                        .collect();
                    assert!(dlq.push_many(&letters).iter().all(Result::is_ok));
                    format!("push {n}")
                }
                2 => {
                    let ids = some_ids(&dlq, &mut rng, 12);
                    purged.extend(ids.iter().filter_map(|id| dlq.get(*id).unwrap()));
                    dlq.delete(&ids).unwrap();
                    format!("delete {}", ids.len())
                }
                3 => {
                    let ids = some_ids(&dlq, &mut rng, 12);
                    let to = STATES[rng.usize(..STATES.len())];
                    let from = [STATES[rng.usize(..STATES.len())], LetterState::Dead];
                    dlq.set_state(&ids, &from, to, Some(t0()), None).unwrap();
                    format!("set {} to {to:?} from {from:?}", ids.len())
                }
                4 => {
                    let mut f = Filter::all().topic(TOPICS[rng.usize(..TOPICS.len())]);
                    if rng.bool() {
                        f = f.limit(rng.usize(1..10));
                    }
                    dlq.request_replay(&f, None).unwrap();
                    format!("request replay {f:?}")
                }
                5 => {
                    let ids = some_ids(&dlq, &mut rng, 3);
                    let refusal = ReplayRefusal {
                        reason: "refused".into(),
                        attempts: 1,
                        at: t0(),
                        retry_at: None,
                    };
                    for id in &ids {
                        dlq.refuse_replay(*id, &refusal, LetterState::ReplayFailed)
                            .unwrap();
                    }
                    format!("refuse {}", ids.len())
                }
                _ => {
                    let back: Vec<StoredLetter> =
                        purged.drain(..purged.len().min(rng.usize(..8))).collect();
                    dlq.insert(&back).unwrap();
                    format!("import {}", back.len())
                }
            };
            assert_groups_agree(
                &dlq,
                &mut rng,
                &format!("seed {seed} round {round}: {step}"),
            );
        }
    }
}

#[test]
fn the_latest_letter_of_a_group_is_the_greatest_id_among_ties() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let at = t0();
    let letters: Vec<DeadLetter> = (0..6)
        .map(|i| {
            let mut l = crate::testutil::letter("orders", "boom", i);
            l.report.timestamp = at;
            l.dead_lettered_at = at;
            l
        })
        .collect();
    // Pushed alone (staged) and in a batch (indexed).
    dlq.push(&letters[0]).unwrap();
    assert!(dlq.push_many(&letters[1..]).iter().all(Result::is_ok));
    let groups = dlq.file.summary_groups(&Filter::all()).unwrap().unwrap();
    assert_eq!(groups, walk_groups(&dlq, &Filter::all()).unwrap());
    let latest = letters.iter().max_by_key(|l| l.id).unwrap();
    assert_eq!(groups[0].sample_message, latest.report.message);
}

#[test]
fn a_summary_out_of_step_is_not_read_and_a_writable_open_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    // Normal: the letters go to `letters` at once, not staged.
    let config = DlqConfig::new(dir.path()).with_durability(Durability::Normal);
    {
        let dlq = SqliteDlq::open(config.clone()).unwrap();
        assert!(
            dlq.push_many(&[letter("a", "x", 1), letter("b", "y", 2)])
                .iter()
                .all(Result::is_ok)
        );
        // What an older build's purge does: the letter goes, its count stays.
        dlq.conn()
            .execute("DELETE FROM letters WHERE topic = 'a'", [])
            .unwrap();
        assert_eq!(dlq.verify().unwrap().groups_mismatch, Some(1));
        assert!(dlq.file.summary_groups(&Filter::all()).unwrap().is_none());
        let groups = dlq.groups(&Filter::all()).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].topics, BTreeSet::from(["b".to_owned()]));
    }
    let dlq = SqliteDlq::open(config).unwrap();
    assert!(dlq.verify().unwrap().is_ok());
    assert!(dlq.file.summary_groups(&Filter::all()).unwrap().is_some());
}

/// The plan SQLite picks for `sql` (with `params`), one step a line.
fn plan(dlq: &SqliteDlq, sql: &str, params: Vec<rusqlite::types::Value>) -> String {
    let conn = dlq.conn();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
}

#[test]
fn a_page_filtered_by_topic_component_or_category_reads_its_index_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    for (f, index) in [
        (Filter::all().topic("orders"), "letters_topic"),
        (Filter::all().component("billing"), "letters_component"),
        (
            Filter::all().category(ErrorCategory::Timeout),
            "letters_category",
        ),
    ] {
        let (clause, params) = filter_sql::compile(&f);
        let p = plan(
            &dlq,
            &format!("SELECT id FROM letters WHERE {clause} ORDER BY id LIMIT 50"),
            params,
        );
        assert!(p.contains(index), "{f:?}: {p}");
        assert!(!p.contains("TEMP B-TREE"), "{f:?}: {p}");
    }
}

#[test]
fn a_groups_sample_is_found_through_the_signature_index() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    // Even beside a filter another index could serve.
    for f in [
        Filter::all(),
        Filter::all().topic("orders").between(Some(t0()), None),
    ] {
        let (clause, params) = filter_sql::compile(&f);
        let mut all = vec![String::from("0123456789abcdef").into(), 1_i64.into()];
        all.extend(params);
        let p = plan(
            &dlq,
            &format!(
                "SELECT id FROM letters INDEXED BY letters_signature \
                 WHERE signature = ? AND last_failure_at = ? AND {clause} \
                 ORDER BY id DESC LIMIT 1"
            ),
            all,
        );
        assert!(
            p.contains("letters_signature (signature=? AND last_failure_at=?)"),
            "{f:?}: {p}"
        );
    }
}

#[test]
fn adding_the_last_rows_seeks_them_by_rowid() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let p = plan(&dlq, &summary::add_last_sql(), vec![1_i64.into()]);
    assert!(p.contains("USING INTEGER PRIMARY KEY (rowid>?)"), "{p}");
}
