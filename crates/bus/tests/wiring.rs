//! The assembled bus end to end: breakers, retries, SQLite DLQ, error log and
//! health wired by `Bus::builder()`, on a manual clock and a temp data dir.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus::breaker::CircuitState;
use bus::dlq::{DlqConfig, DlqQuery, Filter, LetterState, SqliteDlq};
use bus::errors::ErrorCategory;
use bus::health::HealthStatus;
use bus::plug::DeadLetterReason;
use bus::time::ManualClock;
use bus::{Bus, Config, Message};
use bus_test::{RecordingObserver, assert_invariant, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::from_toml_str(
        r#"
        replay_poll_interval = "5ms"

        [breaker]
        consecutive_failures = 3
        wait_in_open = "10s"
        permitted_calls_in_half_open = 1

        [recovery.categories.CONNECTION]
        max_retries = 20
        backoff = { kind = "constant", delay = "1s" }

        [recovery.categories.MESSAGE_PROCESSING]
        max_retries = 2
        backoff = { kind = "constant", delay = "1s" }
        "#,
    )
    .unwrap();
    cfg.data_dir = dir.to_owned();
    cfg.recovery.budget = None;
    cfg
}

fn build(dir: &std::path::Path, clock: &ManualClock, rec: &Arc<RecordingObserver>) -> Bus {
    let mut cfg = config(dir);
    cfg.poll_interval = Duration::from_millis(5);
    bus::BusBuilder::from_config(cfg)
        .clock(Arc::new(clock.clone()))
        .observer(rec.clone())
        .build()
        .unwrap()
}

#[test]
fn dependency_outage_opens_only_its_breaker_parks_messages_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let rec = RecordingObserver::new();
    let bus = build(dir.path(), &clock, &rec);

    let up = Arc::new(AtomicBool::new(false));
    let (inv_acked, bill_acked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (u, n) = (up.clone(), inv_acked.clone());
    bus.subscriber("inventory")
        .topic("orders.created")
        .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
            if !u.load(SeqCst) {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            n.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
    let n = bill_acked.clone();
    bus.subscriber("billing")
        .topic("orders.created")
        .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
            n.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();

    for i in 0..10 {
        bus.publish("orders.created", format!("{{\"id\":{i}}}").into_bytes())
            .unwrap();
    }
    // The other subscriber keeps flowing while inventory's dependency is down.
    assert!(wait_until(WAIT, || bill_acked.load(SeqCst) == 10));
    let breakers = bus.breakers().unwrap();
    assert!(wait_until(WAIT, || {
        breakers.get("inventory").state() == CircuitState::Open
    }));
    assert!(wait_until(WAIT, || bus.stats().parked >= 1));
    assert_eq!(breakers.get("billing").state(), CircuitState::Closed);
    assert!(rec.count("transition") >= 1, "CircuitTransition forwarded");
    let health = bus.health().unwrap();
    assert_eq!(health.circuits["inventory"], CircuitState::Open);
    assert_eq!(
        health.totals.published, 20,
        "the monitor reads the bus's ledger: 10 publishes to two groups"
    );
    let stats = bus.stats();
    assert_eq!(stats.dead_lettered, 0, "parked, not failed: {stats:?}");
    assert_eq!(stats.in_flight(), 10, "inventory's copies wait");
    assert_eq!(inv_acked.load(SeqCst), 0);

    // The dependency comes back; time passes; everything is delivered.
    up.store(true, SeqCst);
    assert!(wait_until(WAIT, || {
        clock.advance(Duration::from_millis(500));
        bus.stats().acked == 20
    }));
    assert_eq!(breakers.get("inventory").state(), CircuitState::Closed);
    assert!(rec.count("transition") >= 3, "open, half-open, closed");
    let report = bus.shutdown(WAIT);
    assert_invariant(&report.stats);
    assert_eq!(report.stats.dead_lettered, 0);
    assert_eq!(inv_acked.load(SeqCst), 10);
    assert_eq!(bus.dlq().unwrap().count(&Filter::all()).unwrap(), 0);
    // Every message that failed recovered, and the error log knows it.
    let logged = bus.logger().unwrap().statistics();
    assert_eq!(logged.recovery_success_rate, Some(1.0), "{logged:?}");
}

#[test]
fn poison_and_exhausted_messages_land_in_sqlite_with_reason_history_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let rec = RecordingObserver::new();
    let bus = build(dir.path(), &clock, &rec);
    bus.subscriber("parser")
        .topic("raw")
        .start(|m: &Message<'_>| -> Result<(), serde_json::Error> {
            serde_json::from_slice::<serde_json::Value>(&m.payload).map(|_| ())
        })
        .unwrap();
    bus.subscriber("broken")
        .topic("jobs")
        .start(
            |_m: &Message<'_>| -> Result<(), bus::errors::HandlerError> {
                Err(bus::errors::HandlerError::msg("always fails"))
            },
        )
        .unwrap();
    let poison = bus.publish("raw", &b"not json"[..]).unwrap();
    let good = bus.publish("raw", &b"{\"ok\":true}"[..]).unwrap();
    let job = bus.publish("jobs", &b"job"[..]).unwrap();
    assert!(wait_until(WAIT, || {
        clock.advance(Duration::from_millis(500));
        bus.stats().settled() == 3
    }));
    let report = bus.shutdown(WAIT);
    assert_invariant(&report.stats);
    assert_eq!(report.stats.acked, 1);
    assert_eq!(report.stats.dead_lettered, 2);
    assert!(good != poison);
    drop(bus);

    // Reopened from the files: both letters, by id, with reason and history.
    let dlq = SqliteDlq::open_existing(DlqConfig::new(dir.path())).unwrap();
    let rows = dlq.list(&Filter::all()).unwrap();
    assert_eq!(rows.len(), 2);
    let find = |id| {
        let s = rows.iter().find(|s| s.message_id == id).unwrap();
        dlq.get(s.id).unwrap().unwrap()
    };
    let p = find(poison);
    assert_eq!(p.letter.reason, DeadLetterReason::NotRetryable);
    assert_eq!(p.letter.report.category, ErrorCategory::Serialization);
    assert_eq!(p.letter.component, "parser");
    assert_eq!(p.letter.envelope.history.len(), 1);
    assert_eq!(p.state, LetterState::Dead);
    let j = find(job);
    assert_eq!(j.letter.reason, DeadLetterReason::RetriesExhausted);
    assert_eq!(j.letter.envelope.history.len(), 3, "1 try + 2 retries");

    // The error log has every failure report (1 poison + 3 attempts).
    let logged: Vec<bus::errors::ErrorReport> = bus::logger::read_reports(dir.path())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().any(|r| r.message_id == Some(poison)));
    assert_eq!(
        logged.iter().filter(|r| r.message_id == Some(job)).count(),
        3
    );
    // And the final health snapshot was written.
    let snap = bus::health::read_snapshot(dir.path()).unwrap();
    assert_eq!(snap.totals.dead_lettered, 2);
}

#[test]
fn without_error_handling_failures_go_straight_to_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus = bus::BusBuilder::from_config(config(dir.path()))
        .enable_error_handling(false)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    assert!(bus.breakers().is_none());
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    bus.subscriber("flaky")
        .topic("t")
        .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
            c.fetch_add(1, SeqCst);
            if m.payload[0].is_multiple_of(2) {
                Err(std::io::ErrorKind::ConnectionRefused.into())
            } else {
                Ok(())
            }
        })
        .unwrap();
    for i in 0u8..20 {
        bus.publish("t", vec![i]).unwrap();
    }
    assert!(wait_until(WAIT, || bus.stats().settled() == 20));
    let report = bus.shutdown(WAIT);
    assert_invariant(&report.stats);
    assert_eq!(report.stats.retried, 0);
    assert_eq!(report.stats.dead_lettered, 10);
    assert_eq!(calls.load(SeqCst), 20, "each message ran exactly once");
    let dlq = bus.dlq().unwrap();
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 10);
}

#[test]
fn replay_poller_delivers_a_requested_replay_after_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let fix = Fix::new();
    let bus = bus::BusBuilder::from_config(config(dir.path()))
        .recovery(Arc::new(bus::plug::NoRetry))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let fixed = fix.fixed.clone();
    let delivered = fix.delivered.clone();
    bus.subscriber("mailer")
        .topic("mail")
        .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
            if !fixed.load(SeqCst) {
                return Err(std::io::Error::other("template missing"));
            }
            delivered.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
    // A second group that handles the message the first time: the replay
    // is not its business.
    let archived = Arc::new(AtomicU64::new(0));
    let archive = Arc::clone(&archived);
    bus.subscriber("archive")
        .topic("mail")
        .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
            archive.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
    let id = bus.publish("mail", &b"hello"[..]).unwrap();
    let dlq = bus.dlq().unwrap().clone();
    assert!(wait_until(WAIT, || dlq.count(&Filter::all()).unwrap() == 1));

    // The fix, then an operator's request (what `busctl dlq replay` does).
    fix.fixed.store(true, SeqCst);
    assert_eq!(dlq.request_replay(&Filter::all(), None).unwrap(), 1);
    assert!(wait_until(WAIT, || fix.delivered.load(SeqCst) == 1));
    assert!(wait_until(WAIT, || {
        dlq.count(&Filter::all().state(LetterState::Replayed))
            .unwrap()
            == 1
    }));
    let report = bus.shutdown(WAIT);
    assert_invariant(&report.stats);
    assert_eq!(
        report.stats.published, 3,
        "original (one copy a group) + replay (mailer only)"
    );
    assert_eq!(report.stats.acked, 2);
    assert_eq!(archived.load(SeqCst), 1, "archive got the message once");
    let letter = dlq.list(&Filter::all()).unwrap().remove(0);
    assert_eq!(letter.message_id, id);
}

struct Fix {
    fixed: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
}

impl Fix {
    fn new() -> Self {
        Self {
            fixed: Arc::default(),
            delivered: Arc::default(),
        }
    }
}

#[test]
fn health_is_healthy_when_everything_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let rec = RecordingObserver::new();
    let bus = build(dir.path(), &clock, &rec);
    bus.subscriber("ok")
        .topic("a")
        .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
        .unwrap();
    for _ in 0..50 {
        bus.publish("a", &b"x"[..]).unwrap();
    }
    assert!(wait_until(WAIT, || bus.stats().acked == 50));
    assert_eq!(bus.health().unwrap().status, HealthStatus::Healthy);
    let report = bus.shutdown(WAIT);
    assert_invariant(&report.stats);
}

#[test]
fn an_idle_open_breaker_whose_wait_ran_out_reports_half_open_to_health() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus = bus::BusBuilder::from_config(config(dir.path()))
        .recovery(Arc::new(bus::plug::NoRetry))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    bus.subscriber("inventory")
        .topic("t")
        .start(|_m: &Message<'_>| -> Result<(), std::io::Error> {
            Err(std::io::ErrorKind::ConnectionRefused.into())
        })
        .unwrap();
    for _ in 0..3 {
        bus.publish("t", &b"x"[..]).unwrap();
    }
    assert!(wait_until(WAIT, || bus.stats().dead_lettered == 3));
    let circuits = || bus.health().unwrap().circuits["inventory"];
    assert_eq!(circuits(), CircuitState::Open);
    // No traffic is left to probe it; once the wait has run out the next
    // call would be a probe, and health must not stay held down.
    clock.advance(Duration::from_secs(10));
    assert_eq!(circuits(), CircuitState::HalfOpen);
    assert!(
        !bus.health()
            .unwrap()
            .reasons
            .iter()
            .any(|r| r.contains("inventory"))
    );
    assert_invariant(&bus.shutdown(WAIT).stats);
}

#[cfg(unix)]
#[test]
fn alerts_configured_in_the_file_reach_the_command_and_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert.json");
    // A one-shot webhook receiver on loopback that answers 204.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut body = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&body).contains("circuit_forced_open") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&body));
            body.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        String::from_utf8(body).unwrap()
    });
    let mut cfg = Config::from_toml_str(&format!(
        "[alerts]\ncommand = [\"sh\", \"-c\", \"cat > '{}'\"]\nwebhook = \"{url}\"\ntimeout = \"20s\"\n",
        out.display()
    ))
    .unwrap();
    cfg.data_dir = dir.path().join("data");
    let bus = bus::BusBuilder::from_config(cfg).build().unwrap();
    bus.subscriber("billing")
        .topic("orders")
        .start(|_: &Message<'_>| Ok::<(), std::io::Error>(()))
        .unwrap();
    bus.breakers().unwrap().get("billing").force_open();
    // Sinks deliver on the alert thread: the command's file is whole once
    // the command has exited, which may be after the queue is empty.
    let delivered =
        || std::fs::read_to_string(&out).is_ok_and(|w| w.contains("\"circuit_forced_open\""));
    assert!(wait_until(WAIT, delivered), "no alert in {}", out.display());
    assert!(received.join().unwrap().contains("\"billing\""));
    bus.shutdown(WAIT);
}

#[test]
fn a_bad_alert_setting_is_refused_by_its_key() {
    for (toml, key) in [
        (
            "[alerts]\nwebhook = \"https://example.invalid/\"\n",
            "alerts.webhook",
        ),
        ("[alerts]\ncommand = []\n", "alerts.command"),
        ("[alerts]\ntimeout = \"0s\"\n", "alerts.timeout"),
    ] {
        let err = Config::from_toml_str(toml).unwrap_err().to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
}

/// Every `observer` call adds one: both observers, and the health monitor
/// beside them, see every event.
#[test]
fn each_observer_call_adds_an_observer() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (RecordingObserver::new(), RecordingObserver::new());
    let bus = bus::Bus::builder()
        .data_dir(dir.path())
        .observer(first.clone())
        .observer(second.clone())
        .build()
        .unwrap();
    bus.subscriber("billing")
        .topic("orders")
        .start(|_: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
        .unwrap();
    bus.publish("orders", &b"{}"[..]).unwrap();
    assert!(bus.shutdown(WAIT).drained);
    assert_eq!(first.count("acked"), 1);
    assert_eq!(second.count("acked"), 1);
    assert_eq!(bus.health().unwrap().totals.acked, 1);
}
