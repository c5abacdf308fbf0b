//! `busctl dlq replay --deliver`: the real binary publishes each letter to
//! the group that failed it over NATS (a real nats-server; skipped loudly
//! when there is none), and refuses on the memory transport.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{SubscribeOptions, Subscription, Topic, Transport};
use bus_dlq::{
    DeadLetterStore, DlqConfig, DlqQuery, Filter, LetterState, REPLAYED_FROM_HEADER, SqliteDlq,
};
use bus_errors::ErrorCategory;
use bus_nats::NatsTransport;
use bus_test::nats::{URL, nats_available};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn busctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_busctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A letter of `group` on orders.created with `payload`.
fn push(dir: &Path, group: &str, payload: Vec<u8>) -> bus_dlq::LetterId {
    let dlq = SqliteDlq::open(DlqConfig::new(dir)).unwrap();
    let mut l = common::letter("orders.created", ErrorCategory::Timeout, group, "boom");
    l.group = group.into();
    l.envelope.payload = payload.into();
    dlq.push(&l).unwrap()
}

fn state(dir: &Path, id: bus_dlq::LetterId) -> bus_dlq::StoredLetter {
    let dlq = SqliteDlq::open(DlqConfig::new(dir)).unwrap();
    dlq.get(id).unwrap().unwrap()
}

#[test]
fn deliver_on_the_memory_transport_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let id = push(dir.path(), "billing", b"x".to_vec());
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = busctl(&["dlq", "replay", "--data-dir", d, "--all", "--deliver"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("--deliver needs a durable transport (--transport nats)")
            && err.contains("only the application's own bus can deliver"),
        "{err}"
    );
    assert_eq!(state(dir.path(), id).state, LetterState::Dead);
    // The transport settings mean nothing without --deliver.
    let (ok, _, err) = busctl(&[
        "dlq",
        "replay",
        "--data-dir",
        d,
        "--all",
        "--transport",
        "nats",
    ]);
    assert!(!ok);
    assert!(err.contains("--deliver"), "{err}");
    assert_eq!(state(dir.path(), id).state, LetterState::Dead);
}

#[test]
fn deliver_over_nats_reaches_the_failed_group_and_marks_each_letter() {
    if !nats_available("busctl dlq replay --deliver") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // The groups exist, as after a run of the bus on this data dir.
    let config = busctl::transport::nats_config(Default::default(), Some(URL), dir.path()).unwrap();
    let nats = NatsTransport::connect(config).unwrap();
    let tp = Topic::new("orders.created").unwrap();
    let sub = |g: &str| -> Box<dyn Subscription> {
        nats.subscribe(&tp, &SubscribeOptions::group(g)).unwrap()
    };
    let (mut billing, mut audit) = (sub("billing"), sub("audit"));

    let good = push(dir.path(), "billing", b"fixed now".to_vec());
    // Over the server's 1 MiB max_payload: the publish is refused.
    let too_big = push(dir.path(), "billing", vec![b'x'; 2 << 20]);
    let (ok, out, err) = busctl(&[
        "dlq",
        "replay",
        "--data-dir",
        d,
        "--all",
        "--deliver",
        "--transport",
        "nats",
        "--nats-url",
        URL,
    ]);
    assert!(!ok, "one letter failed: the command fails\n{out}\n{err}");
    assert!(out.contains("replayed 1 of 2 letters"), "{out}");
    assert!(out.contains(&format!("{too_big} failed:")), "{out}");
    assert!(
        err.contains("1 of 2 letters could not be delivered (now replay_failed)"),
        "{err}"
    );

    let got = billing.next(T).unwrap().expect("billing gets the replay");
    assert_eq!(&got.envelope().payload[..], b"fixed now");
    assert_eq!(
        got.envelope()
            .headers
            .get(REPLAYED_FROM_HEADER)
            .map(String::as_str),
        Some(good.to_string().as_str())
    );
    got.ack();
    assert!(
        audit.next(Duration::from_millis(500)).unwrap().is_none(),
        "audit settled the original: it gets no replay"
    );
    assert!(billing.next(Duration::from_millis(300)).unwrap().is_none());

    let replayed = state(dir.path(), good);
    assert_eq!(replayed.state, LetterState::Replayed);
    assert!(replayed.replayed_at.is_some());
    let failed = state(dir.path(), too_big);
    assert_eq!(failed.state, LetterState::ReplayFailed);
    let refusal = failed.replay_refusal.expect("the error is recorded");
    assert!(refusal.reason.contains("payload"), "{}", refusal.reason);

    // Nothing left to deliver: a second run selects nothing and succeeds.
    let (ok, out, err) = busctl(&[
        "dlq",
        "replay",
        "--data-dir",
        d,
        "--all",
        "--deliver",
        "--transport",
        "nats",
        "--nats-url",
        URL,
        "--json",
    ]);
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["selected"], 0);
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    assert_eq!(
        dlq.count(&Filter::all().state(LetterState::Replayed))
            .unwrap(),
        1
    );
    drop((billing, audit));
    nats.delete_streams().unwrap();
}

/// Every `busctl dlq` command docs/operations.md shows is one busctl accepts.
#[test]
fn the_operations_guide_shows_dlq_commands_busctl_accepts() {
    use clap::Parser;
    #[derive(Parser)]
    struct Busctl {
        #[command(subcommand)]
        _cmd: busctl::dlq::DlqCommand,
    }
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    let mut checked = 0;
    for line in guide.lines() {
        let code = line.split(" #").next().unwrap_or_default();
        for command in code.split(';') {
            let words: Vec<&str> = command
                .split_whitespace()
                .map(|w| match w {
                    "<letter-id>" => "0190c0de-0000-7000-8000-000000000001",
                    w => w,
                })
                .collect();
            let ["busctl", "dlq", rest @ ..] = &words[..] else {
                continue;
            };
            if let Err(e) = Busctl::try_parse_from(std::iter::once(&"dlq").chain(rest)) {
                panic!("docs/operations.md: `{}`: {e}", command.trim());
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "the guide's commands were found ({checked})");
    assert!(guide.contains("--deliver --transport nats"));
}
