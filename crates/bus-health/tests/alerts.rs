//! Alert de-duplication and rate limiting under an outage, and the sinks.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::time::ManualClock;
use bus_core::{BusEvent, CircuitState};
use bus_errors::{ErrorCategory, Severity};
use bus_health::{AlertKind, CommandAlertSink, HealthConfig, HealthMonitor, WebhookAlertSink};
use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

fn alerting(
    interval: Duration,
) -> (
    HealthMonitor,
    ManualClock,
    crossbeam_channel::Receiver<bus_health::Alert>,
) {
    let clock = ManualClock::new();
    let (sink, rx) = channel_sink();
    let mut cfg = HealthConfig::default();
    cfg.alert_interval = interval;
    cfg.evaluate_every = Duration::from_secs(3600); // only explicit reports evaluate
    let m = HealthMonitor::builder()
        .with_config(cfg)
        .with_clock(Arc::new(clock.clone()))
        .with_alert_sink(sink)
        .build()
        .unwrap();
    (m, clock, rx)
}

fn critical_errors(m: &HealthMonitor, n: usize) {
    let r = report(
        ErrorCategory::ResourceExhaustion,
        Severity::Critical,
        "billing",
    );
    for _ in 0..n {
        m.observe(&BusEvent::Failed { report: &r });
    }
}

#[test]
fn ten_thousand_critical_errors_give_one_alert_per_interval() {
    let (m, clock, rx) = alerting(Duration::from_secs(60));
    critical_errors(&m, 10_000);
    assert!(m.flush_alerts(WAIT));
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, AlertKind::CriticalReport);
    assert_eq!(got[0].suppressed, 0);
    assert_eq!(got[0].key, "critical_report:RESOURCE_EXHAUSTION:billing");

    // still inside the interval: nothing more
    clock.advance(Duration::from_secs(59));
    critical_errors(&m, 10_000);
    assert!(m.flush_alerts(WAIT));
    assert_eq!(rx.try_iter().count(), 0);

    // next interval: one alert carrying the suppressed count
    clock.advance(Duration::from_secs(1));
    critical_errors(&m, 10_000);
    assert!(m.flush_alerts(WAIT));
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].suppressed, 19_999);
    assert_eq!(m.report().alerts_dropped, 0);
}

#[test]
fn different_keys_alert_separately_and_escalations_alert() {
    let (m, _, rx) = alerting(Duration::from_secs(60));
    let a = report(ErrorCategory::Authentication, Severity::High, "billing");
    let b = report(ErrorCategory::Authentication, Severity::High, "shipping");
    for _ in 0..100 {
        m.observe(&BusEvent::Escalated { report: &a });
        m.observe(&BusEvent::Escalated { report: &b });
    }
    let low = report(ErrorCategory::Timeout, Severity::Medium, "billing");
    m.observe(&BusEvent::Failed { report: &low }); // not critical: no alert
    assert!(m.flush_alerts(WAIT));
    let mut comps: Vec<_> = rx.try_iter().map(|a| (a.kind, a.component)).collect();
    comps.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        comps,
        vec![
            (AlertKind::Escalated, "billing".to_owned()),
            (AlertKind::Escalated, "shipping".to_owned())
        ]
    );
}

#[test]
fn transition_to_critical_raises_one_alert() {
    let (m, clock, rx) = alerting(Duration::from_secs(60));
    failed(&m, 50, ErrorCategory::Timeout);
    for _ in 0..5 {
        assert_eq!(m.report().status, bus_health::HealthStatus::Critical);
    }
    assert!(m.flush_alerts(WAIT));
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, AlertKind::StatusCritical);
    // recover, then fail again after the interval: a new transition alert
    clock.advance(Duration::from_secs(61));
    assert_eq!(m.report().status, bus_health::HealthStatus::Healthy);
    failed(&m, 5, ErrorCategory::Timeout);
    assert_eq!(m.report().status, bus_health::HealthStatus::Critical);
    assert!(m.flush_alerts(WAIT));
    assert_eq!(rx.try_iter().count(), 1);
}

#[test]
fn forced_open_circuit_alerts() {
    let (m, _, rx) = alerting(Duration::from_secs(60));
    circuit(
        &m,
        "billing",
        CircuitState::Closed,
        CircuitState::ForcedOpen,
    );
    assert!(m.flush_alerts(WAIT));
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, AlertKind::CircuitForcedOpen);
    assert_eq!(got[0].severity, Severity::Critical);
}

#[cfg(unix)]
#[test]
fn command_sink_gets_the_alert_json_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert.json");
    let sink = CommandAlertSink::new("sh", ["-c", &format!("cat > '{}'", out.display())]);
    let (m, _, rx) = alerting(Duration::from_secs(60));
    critical_errors(&m, 1);
    assert!(m.flush_alerts(WAIT));
    let alert = rx.try_recv().unwrap();
    sink.run(&alert).unwrap();
    let written: bus_health::Alert =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(written, alert);
    let failing = CommandAlertSink::new("sh", ["-c", "exit 3"]);
    assert!(matches!(
        failing.run(&alert),
        Err(bus_health::AlertError::Exit(_))
    ));
}

/// Reads one HTTP request (head and `Content-Length` body) from `stream`:
/// (request line, body).
fn read_request(stream: &mut std::net::TcpStream) -> (String, String) {
    let mut reader = std::io::BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (
        request_line.trim_end().to_owned(),
        String::from_utf8(body).unwrap(),
    )
}

#[test]
fn webhook_sink_posts_json_to_a_loopback_server() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let (m, _, rx) = alerting(Duration::from_secs(60));
    critical_errors(&m, 1);
    assert!(m.flush_alerts(WAIT));
    let alert = rx.try_recv().unwrap();
    let hook = WebhookAlertSink::new(&format!("http://127.0.0.1:{port}/hooks/bus")).unwrap();
    let sent = alert.clone();
    let client = std::thread::spawn(move || hook.post(&sent));
    let (mut conn, _) = server.accept().unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let (request_line, body) = read_request(&mut conn);
    assert_eq!(request_line, "POST /hooks/bus HTTP/1.1");
    conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        .unwrap();
    drop(conn);
    assert_eq!(client.join().unwrap().unwrap(), 204);
    assert_eq!(
        serde_json::from_str::<bus_health::Alert>(&body).unwrap(),
        alert
    );
    assert!(matches!(
        WebhookAlertSink::new("https://x"),
        Err(bus_health::AlertError::BadUrl(_))
    ));
}
