//! Peak resident memory of the bus with error handling on, after a million
//! errors and after a million dead letters.
//!
//! ```text
//! cargo run --profile bench -p bus-bench --bin rss -- [--messages N] [--out PATH]
//! ```
//!
//! Phase 1 ("errors"): N messages through [`Fixture::on`], every one failing
//! on its first attempt and retried once with zero delay (the retry
//! succeeds): N error reports go through the breaker, the `ErrorLogger`
//! (bounded history, rotated files) and the `HealthMonitor`; no dead letters.
//! Phase 2 ("dead letters"): a fresh bus-on fixture where N messages fail
//! and are dead-lettered at once into `SqliteDlq` (`Durability::Normal`, on
//! disk). After each phase the process's peak RSS (`VmHWM`) is read from
//! `/proc/self/status`; the results go to `target/bench-rss.json`.

use bus_bench::{FailEvery, Fixture, OnOptions, OnRecovery, proc_status};
use bus_dlq::{DlqQuery, Filter};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Phase {
    seconds: f64,
    peak_kib: u64,
    rss_kib: u64,
}

fn run(fx: &Fixture, n: u64, label: &str) -> Result<Phase, BoxError> {
    let started = Instant::now();
    for seq in 0..n {
        fx.publish(seq);
        if (seq + 1) % 200_000 == 0 {
            let s = proc_status().unwrap_or_default();
            eprintln!(
                "{label}: {} published, peak {} KiB, rss {} KiB",
                seq + 1,
                s.peak_rss_kib,
                s.rss_kib
            );
        }
    }
    if !fx.wait_settled(n, Duration::from_secs(600)) {
        return Err(format!("{label}: bus stalled at {:?}", fx.bus.stats()).into());
    }
    let seconds = started.elapsed().as_secs_f64();
    let s = proc_status().ok_or("no /proc/self/status")?;
    Ok(Phase {
        seconds,
        peak_kib: s.peak_rss_kib,
        rss_kib: s.rss_kib,
    })
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mut n: u64 = 1_000_000;
    let mut out = bus_bench::target_dir().join("bench-rss.json");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => n = args.next().ok_or("--messages N")?.parse()?,
            "--out" => out = args.next().ok_or("--out PATH")?.into(),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if let Some(line) = isolate(n) {
        println!("{line}");
        return Ok(());
    }
    let baseline = proc_status().ok_or("no /proc/self/status")?;

    let errors = {
        let options = OnOptions::failing().recovery(OnRecovery::RetryOnceNoDelay);
        let fx = Fixture::on(options)?;
        fx.bus
            .subscriber("rss")
            .topic(bus_bench::TOPIC)
            .start(FailEvery(1).handler(Arc::new(AtomicU64::new(0))))?;
        let phase = run(&fx, n, "errors")?;
        let logger = fx.logger.as_ref().ok_or("no logger")?;
        let history = logger.history().len();
        let logged = logger.statistics().total;
        let stats = fx.shutdown().stats;
        if stats.failed != n || stats.acked != n || stats.dead_lettered != 0 {
            return Err(format!("errors phase: unexpected stats {stats:?}").into());
        }
        eprintln!("errors: logger total {logged}, history {history}");
        (phase, history, logged)
    };

    let letters = {
        let fx = Fixture::on(OnOptions::failing())?;
        fx.bus
            .subscriber("rss")
            .topic(bus_bench::TOPIC)
            .start(FailEvery(1).handler(Arc::new(AtomicU64::new(0))))?;
        let phase = run(&fx, n, "dead letters")?;
        let stats = fx.shutdown().stats;
        let rows = fx.dlq.as_ref().ok_or("no dlq")?.count(&Filter::all())?;
        if stats.dead_lettered != n || rows != n {
            return Err(format!("dead-letter phase: {rows} rows, stats {stats:?}").into());
        }
        (phase, rows)
    };

    let json = format!(
        "{{\n  \"messages\": {n},\n  \"baseline_peak_kib\": {},\n  \"after_errors_peak_kib\": {},\n  \"after_errors_rss_kib\": {},\n  \"errors_seconds\": {:.2},\n  \"logger_history_len\": {},\n  \"logger_total\": {},\n  \"after_dead_letters_peak_kib\": {},\n  \"after_dead_letters_rss_kib\": {},\n  \"dead_letters_seconds\": {:.2},\n  \"dlq_rows\": {}\n}}\n",
        baseline.peak_rss_kib,
        errors.0.peak_kib,
        errors.0.rss_kib,
        errors.0.seconds,
        errors.1,
        errors.2,
        letters.0.peak_kib,
        letters.0.rss_kib,
        letters.0.seconds,
        letters.1,
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &json)?;
    print!("{json}");
    Ok(())
}

/// Diagnostics: `RSS_ONLY=dlq|health` pushes N letters straight into a
/// `SqliteDlq`, or N `DeadLettered` events into a `HealthMonitor`.
pub fn isolate(n: u64) -> Option<String> {
    use bus_core::{BusEvent, DeadLetter, DeadLetterReason, DeadLetterStore, Envelope, Topic};
    use bus_errors::{Classification, ErrorCategory, ErrorReport};
    let what = std::env::var("RSS_ONLY").ok()?;
    let dir = tempfile::tempdir().ok()?;
    let env = Envelope::new(Topic::new(bus_bench::TOPIC).ok()?, bus_bench::payload(1));
    let report = ErrorReport::new(
        Classification::of(ErrorCategory::MessageProcessing),
        "rss",
        "x",
    );
    let letter = DeadLetter::new(
        env,
        report,
        DeadLetterReason::RetriesExhausted,
        "rss",
        "rss",
    );
    if what == "dlq" {
        let dlq = bus_dlq::SqliteDlq::open(
            bus_dlq::DlqConfig::new(dir.path()).with_durability(bus_dlq::Durability::Normal),
        )
        .ok()?;
        for _ in 0..n {
            dlq.push(&letter).ok()?;
        }
    } else {
        let h = bus_health::HealthMonitor::new();
        for _ in 0..n {
            h.observe(&BusEvent::DeadLettered {
                topic: &letter.envelope.topic,
                component: "rss",
                category: ErrorCategory::MessageProcessing,
                reason: &letter.reason,
            });
        }
    }
    Some(format!("{what}: {:?}", proc_status()))
}
