//! Every report reaches the `tracing` subscriber that was the default where
//! the logger was opened, at a level mapped from its severity.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::ErrorSink;
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use bus_logger::{ErrorLogger, LoggerConfig, REPORT_TARGET, TRACING_TARGET};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Debug, Clone)]
struct Seen {
    target: String,
    level: Level,
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let target = event.metadata().target();
        if !target.starts_with(TRACING_TARGET) {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Seen {
            target: target.to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn report(sev: Severity, n: usize) -> ErrorReport {
    ErrorReport::new(
        Classification::new(ErrorCategory::Timeout, sev),
        "payments",
        format!("report {n}"),
    )
    .with_topic("orders.created")
    .with_message_id(uuid::Uuid::now_v7())
    .with_correlation_id(format!("corr-{n}"))
}

#[test]
fn every_report_becomes_an_event_at_its_severity_level() {
    let capture = Capture::default();
    let dir = tempfile::tempdir().unwrap();
    let reports: Vec<_> = Severity::ALL
        .iter()
        .enumerate()
        .map(|(n, s)| report(*s, n))
        .collect();
    tracing::subscriber::with_default(capture.clone(), || {
        let logger = ErrorLogger::open(dir.path(), LoggerConfig::default()).unwrap();
        for r in &reports {
            logger.record(r);
        }
        logger.flush().unwrap();
    });
    let seen = capture.0.lock().unwrap().clone();
    let events: Vec<_> = seen
        .iter()
        .filter(|s| s.fields.contains_key("report_id"))
        .collect();
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| e.target == REPORT_TARGET));
    let want = [Level::INFO, Level::WARN, Level::ERROR, Level::ERROR];
    for ((event, r), level) in events.iter().zip(&reports).zip(want) {
        assert_eq!(event.level, level, "{:?}", r.severity);
        let f = &event.fields;
        assert_eq!(f["report_id"], r.id.to_string());
        assert_eq!(f["message_id"], r.message_id.unwrap().to_string());
        assert_eq!(f["correlation_id"], r.correlation_id.clone().unwrap());
        assert_eq!(f["category"], "TIMEOUT");
        assert_eq!(f["component"], "payments");
        assert_eq!(f["topic"], "orders.created");
        assert_eq!(f["message"], r.message);
        let escalated = r.severity == Severity::Critical;
        assert_eq!(f["escalated"], escalated.to_string());
    }
}

#[test]
fn runtime_write_failures_are_reported_as_a_rate_limited_error_event() {
    let capture = Capture::default();
    let dir = tempfile::tempdir().unwrap();
    // A frozen clock: the rate limit cannot expire during the test.
    let clock = Arc::new(bus_core::time::ManualClock::new());
    tracing::subscriber::with_default(capture.clone(), || {
        let config = LoggerConfig::default().with_clock(clock);
        let logger = ErrorLogger::open(dir.path(), config).unwrap();
        let logs = logger.log_dir().to_path_buf();
        std::fs::remove_dir_all(&logs).unwrap();
        std::fs::write(&logs, b"in the way").unwrap();
        for n in 0..20 {
            logger.record(&report(Severity::Low, n));
            let _ = logger.flush();
        }
        assert_eq!(logger.counters().write_failures, 20);
    });
    let seen = capture.0.lock().unwrap().clone();
    let complaints: Vec<_> = seen
        .iter()
        .filter(|s| s.fields.contains_key("write_failures"))
        .collect();
    assert_eq!(complaints.len(), 1, "{complaints:?}");
    assert_eq!(complaints[0].level, Level::ERROR);
    // The logger's own trouble, not a report: `bus_logger::report=off`
    // does not hide it.
    assert_eq!(complaints[0].target, TRACING_TARGET);
    assert!(complaints[0].fields["dir"].ends_with("logs"));
}
