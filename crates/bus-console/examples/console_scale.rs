//! The console's dead-letter views at scale: the groups view and one page
//! of letters, unfiltered and with each single filter, over a store of
//! many letters spread over many failure signatures (by default 1 000 000
//! over 1 000, the goal's size). Each view is asked for over HTTP, warm
//! (a few requests first), and timed by the console's own
//! `Server-Timing` header: server time, without the client's.
//!
//! `cargo run --profile bench -p bus-console --example console_scale --
//! <scratch-dir> <letters> <signatures> <requests> <out.json>`
//!
//! The store is kept in the scratch directory between runs and seeded
//! again only when it does not hold exactly `letters` letters.

// A measuring program, not library code: unwrap as tests do.
#![allow(clippy::unwrap_used)]

use bus_console::{Console, ConsoleConfig};
use bus_core::{AttemptRecord, DeadLetter, DeadLetterReason, Envelope, Topic};
use bus_dlq::{DlqConfig, DlqQuery, Durability, Filter, SqliteDlq};
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use bus_health::{HealthMonitor, HealthServer, HttpOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

const TOPICS: u64 = 10;
const COMPONENTS: u64 = 20;
const CATEGORIES: [ErrorCategory; 4] = [
    ErrorCategory::Connection,
    ErrorCategory::Timeout,
    ErrorCategory::Serialization,
    ErrorCategory::MessageProcessing,
];
const REASONS: [DeadLetterReason; 2] = [
    DeadLetterReason::RetriesExhausted,
    DeadLetterReason::NotRetryable,
];

/// Letter `seq` of `signatures` signatures: the signature is the error
/// message's shape and the component, so `seq % signatures` picks it.
fn letter(seq: u64, signatures: u64) -> DeadLetter {
    let sig = seq % signatures;
    let topic = format!("orders.t{}", sig % TOPICS);
    let component = format!("svc{}", sig % COMPONENTS);
    let category = CATEGORIES[(sig % 4) as usize];
    let payload = format!(
        "{{\"seq\":{seq},\"amount_cents\":{},\"customer\":\"c-{}\"}}",
        seq % 10_000,
        seq % 977
    );
    let mut env = Envelope::new(Topic::new(&topic).unwrap(), payload).with_header("tenant", "acme");
    env.attempt = 3;
    env.history.push(AttemptRecord {
        attempt: 1,
        at: SystemTime::now(),
        component: component.clone(),
        category,
        severity: Severity::High,
        error_type: format!("app::Error{sig}"),
        message: format!("step {sig} failed for order {seq}"),
        decision: "retry in 1s".into(),
    });
    let mut report = ErrorReport::new(
        Classification::of(category),
        &component,
        format!("step {sig} failed for order {seq}"),
    );
    report.error_type = format!("app::Error{sig}");
    DeadLetter::new(
        env,
        report,
        REASONS[(sig % 2) as usize].clone(),
        &component,
        &component,
    )
}

fn seed(dir: &Path, letters: u64, signatures: u64) -> SqliteDlq {
    let config = || {
        DlqConfig::new(dir)
            .with_durability(Durability::Normal)
            .with_max_batch(4096)
    };
    {
        let dlq = SqliteDlq::open(config()).unwrap();
        let have = dlq.count(&Filter::all()).unwrap();
        if have == letters {
            eprintln!("console_scale: reusing {have} letters in {}", dir.display());
            return dlq;
        }
        drop(dlq);
    }
    let _ = std::fs::remove_dir_all(dir);
    let dlq = SqliteDlq::open(config()).unwrap();
    let t0 = Instant::now();
    let mut seq = 0;
    while seq < letters {
        let n = (letters - seq).min(8192);
        let batch: Vec<_> = (seq..seq + n).map(|i| letter(i, signatures)).collect();
        assert!(dlq.push_many(&batch).iter().all(Result::is_ok));
        seq += n;
        if seq % 100_000 == 0 {
            eprintln!(
                "console_scale: seeded {seq} letters in {:.0?}",
                t0.elapsed()
            );
        }
    }
    dlq
}

/// Server time of one GET, from `Server-Timing: app;dur=<ms>`.
fn timed_get(addr: SocketAddr, path: &str) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        &text[..text.len().min(300)]
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Server-Timing: app;dur="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{path}: no Server-Timing"))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, letters, signatures, requests, out] = &args[..] else {
        eprintln!(
            "usage: console_scale <scratch-dir> <letters> <signatures> <requests> <out.json>"
        );
        std::process::exit(2);
    };
    let (letters, signatures, requests): (u64, u64, usize) = (
        letters.parse().unwrap(),
        signatures.parse().unwrap(),
        requests.parse().unwrap(),
    );
    let dlq = Arc::new(seed(Path::new(dir), letters, signatures));
    // The rate bound protects a live console from a flood; this program
    // times the views themselves, warm request after warm request.
    let mut config = ConsoleConfig::default();
    config.requests_per_second = f64::MAX;
    config.burst = u32::MAX;
    let console = Console::builder(config).dlq(dlq).build();
    let mut options = HttpOptions::default();
    options.read_timeout = std::time::Duration::from_secs(60);
    let server = HealthServer::start_with_app(
        "127.0.0.1:0",
        HealthMonitor::new(),
        options,
        Arc::new(console),
    )
    .unwrap();
    let addr = server.local_addr();
    let filters = [
        ("unfiltered", String::new()),
        ("topic", "topic=orders.t3".to_owned()),
        ("group", "group=svc7".to_owned()),
        ("category", "category=TIMEOUT".to_owned()),
        ("reason", "reason=not_retryable".to_owned()),
        ("state", "state=dead".to_owned()),
        ("since", "since=1h".to_owned()),
    ];
    let mut views = serde_json::Map::new();
    let mut worst: f64 = 0.0;
    for (view, path) in [
        ("groups", "/api/dlq/groups"),
        ("letters_page", "/api/dlq/letters"),
    ] {
        for (name, query) in &filters {
            let url = if query.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{query}")
            };
            for _ in 0..3 {
                timed_get(addr, &url);
            }
            let mut ms: Vec<f64> = (0..requests).map(|_| timed_get(addr, &url)).collect();
            ms.sort_by(f64::total_cmp);
            let (p50, p95) = (quantile(&ms, 0.5), quantile(&ms, 0.95));
            worst = worst.max(p95);
            eprintln!("console_scale: {view} {name:<10} p50 {p50:8.1} ms  p95 {p95:8.1} ms");
            views.insert(
                format!("{view}/{name}"),
                serde_json::json!({ "p50_ms": p50, "p95_ms": p95, "max_ms": ms[ms.len() - 1], "requests": requests }),
            );
        }
    }
    let report = serde_json::json!({
        "letters": letters,
        "signatures": signatures,
        "requests": requests,
        "views": views,
        "worst_p95_ms": worst,
    });
    std::fs::write(out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
}
