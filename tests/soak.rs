//! The whole promise, end to end, on the assembled bus: several publishers and
//! subscribers, random transient failures, poison messages, panics, slow
//! handlers and a dependency outage, then shutdown and a reopen of the
//! dead-letter queue from its files.
//!
//! `cargo xtask validate` runs it at CI size; `cargo xtask soak` sets
//! `BUS_SOAK=1` for one million messages (release build).

use bus::dlq::{DlqConfig, DlqQuery, Filter, SqliteDlq};
use bus::errors::HandlerError;
use bus::health::HealthStatus;
use bus::{BusBuilder, Config, Envelope, Message, MessageId, PublishError, Topic};
use bus_test::{Fault, FaultInjector, assert_invariant, wait_until};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
publish_timeout = "5s"
[breaker]
consecutive_failures = 5
wait_in_open = "20ms"
permitted_calls_in_half_open = 2
[recovery.categories.CONNECTION]
max_retries = 30
backoff = { kind = "exponential", base = "5ms", factor = 2.0, cap = "50ms" }
[recovery.categories.MESSAGE_PROCESSING]
max_retries = 2
backoff = { kind = "constant", delay = "5ms" }
[dlq]
durability = "normal"
[health]
window = "1s"
buckets = 10
"#;

/// The first `OUTAGE_START` inventory calls succeed, the next `OUTAGE_CALLS`
/// fail with ConnectionRefused, the rest succeed.
const OUTAGE_START: u64 = 500;
const OUTAGE_CALLS: u64 = 50;

#[test]
fn no_message_is_lost_under_faults_outage_and_shutdown() {
    let soak = std::env::var_os("BUS_SOAK").is_some();
    let (publishers, per_publisher) = if soak { (4, 250_000) } else { (4, 5_000) };
    let total = publishers * per_publisher;
    let started = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml_str(CONFIG).unwrap();
    config.data_dir = dir.path().to_path_buf();
    let bus = Arc::new(BusBuilder::from_config(config).build().unwrap());

    // billing: transient failures, poison messages and panics.
    let faults = FaultInjector::new(1)
        .transient(0.05)
        .poison(0.01)
        .panics(0.005);
    bus.subscriber("billing")
        .topic("orders")
        .workers(2)
        .start(faults.handler())
        .unwrap();

    // inventory: a dependency that goes down for a while; a few slow calls.
    let calls = Arc::new(AtomicU64::new(0));
    let inventory_acked = Arc::new(Mutex::new(HashSet::new()));
    {
        let calls = Arc::clone(&calls);
        let acked = Arc::clone(&inventory_acked);
        bus.subscriber("inventory")
            .topic("orders")
            .workers(2)
            .start(move |m: &Message<'_>| -> Result<(), HandlerError> {
                let n = calls.fetch_add(1, SeqCst);
                if (OUTAGE_START..OUTAGE_START + OUTAGE_CALLS).contains(&n) {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
                }
                if n.is_multiple_of(500) {
                    std::hint::black_box((0..20_000).sum::<u64>()); // a slow call
                }
                acked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(m.id);
                Ok(())
            })
            .unwrap();
    }

    // audit: never fails; must keep flowing while inventory's breaker is open.
    let audit_seen = Arc::new(AtomicU64::new(0));
    {
        let seen = Arc::clone(&audit_seen);
        bus.subscriber("audit")
            .topic("orders")
            .start(move |_: &Message<'_>| -> Result<(), HandlerError> {
                seen.fetch_add(1, SeqCst);
                Ok(())
            })
            .unwrap();
    }

    // Watch health and the inventory breaker while publishing.
    let publishing = Arc::new(AtomicBool::new(true));
    let watcher = {
        let bus = Arc::clone(&bus);
        let publishing = Arc::clone(&publishing);
        std::thread::spawn(move || {
            let (mut unhealthy, mut breaker_opened) = (false, false);
            while publishing.load(SeqCst) || bus.stats().in_flight() > 0 {
                if bus
                    .health()
                    .is_some_and(|h| h.status != HealthStatus::Healthy)
                {
                    unhealthy = true;
                }
                if bus
                    .breakers()
                    .map(|r| r.get("inventory"))
                    .is_some_and(|b| b.state() != bus::breaker::CircuitState::Closed)
                {
                    breaker_opened = true;
                }
                std::thread::yield_now();
            }
            (unhealthy, breaker_opened)
        })
    };

    let rejected_retries = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..publishers)
        .map(|p| {
            let bus = Arc::clone(&bus);
            let rejected = Arc::clone(&rejected_retries);
            std::thread::spawn(move || {
                let topic = Topic::new("orders").unwrap();
                let mut ids = Vec::with_capacity(per_publisher);
                for i in 0..per_publisher {
                    let mut env = Envelope::new(topic.clone(), format!("{p}:{i}").into_bytes());
                    // A full queue hands the message back; the publisher keeps
                    // it and tries again (each refusal is counted as rejected).
                    let id = loop {
                        match bus.publish_envelope(env) {
                            Ok(id) => break id,
                            Err(PublishError::QueueFull { envelope, .. }) => {
                                rejected.fetch_add(1, SeqCst);
                                env = envelope;
                            }
                            Err(e) => panic!("unexpected publish error: {e}"),
                        }
                    };
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let ids: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    publishing.store(false, SeqCst);
    assert_eq!(ids.len(), total);
    let published_in = started.elapsed();
    let (unhealthy_seen, breaker_opened) = watcher.join().unwrap();
    let drained_in = started.elapsed();

    // Health returns to healthy once the outage has passed the window.
    assert!(
        wait_until(Duration::from_secs(30), || bus
            .health()
            .is_some_and(|h| h.status == HealthStatus::Healthy)),
        "health did not recover: {:?}",
        bus.health().map(|h| h.reasons)
    );
    let healthy_in = started.elapsed();
    let report = bus.shutdown(Duration::from_secs(60));
    let s = report.stats;
    let elapsed = started.elapsed();
    let rss = bus_test::proc_status().map(|s| s.peak_rss_kib);
    eprintln!(
        "soak: {total} messages x 3 groups in {elapsed:.1?} ({:.0} deliveries/s; published by {published_in:.1?}, drained by {drained_in:.1?}, healthy by {healthy_in:.1?}); {s:?}; publisher retries after QueueFull: {}; peak RSS {} MiB",
        (3 * total) as f64 / elapsed.as_secs_f64(),
        rejected_retries.load(SeqCst),
        rss.map_or("?".into(), |k| (k / 1024).to_string()),
    );

    // 1. The invariant holds exactly.
    assert!(report.drained, "{report:?}");
    assert_invariant(&s);
    assert_eq!(s.published - s.rejected_at_publish, 3 * total as u64);
    assert_eq!(s.rejected_at_publish, rejected_retries.load(SeqCst));

    // 2. Every transient failure with retries left was acked; so was every
    //    inventory message despite the outage, and every audit message.
    let acked = faults.acked();
    let mut expected_dead: HashMap<MessageId, &str> = HashMap::new();
    for id in &ids {
        match faults.fault_for(*id) {
            Fault::Clean | Fault::Transient(_) => {
                assert!(acked.contains_key(id), "billing lost {id}")
            }
            Fault::Poison => drop(expected_dead.insert(*id, "not_retryable")),
            Fault::Panic => drop(expected_dead.insert(*id, "retries_exhausted")),
        }
    }
    assert!(
        calls.load(SeqCst) > OUTAGE_START + OUTAGE_CALLS,
        "the outage happened and ended"
    );
    assert_eq!(
        inventory_acked.lock().unwrap().len(),
        total,
        "inventory lost messages"
    );
    assert_eq!(audit_seen.load(SeqCst), total as u64);
    assert!(breaker_opened, "the outage opened inventory's breaker");
    assert!(unhealthy_seen, "health saw the outage");

    // 3. Every dead letter on disk, reopened from its files, matches a counted
    //    dead-lettered message by id, with its reason.
    drop(bus);
    let dlq = SqliteDlq::open_existing(DlqConfig::new(dir.path())).unwrap();
    let letters = dlq.list(&Filter::all()).unwrap();
    assert_eq!(letters.len() as u64, s.dead_lettered);
    for l in &letters {
        assert_eq!(l.component, "billing", "only billing dead-letters: {l:?}");
        assert_eq!(
            expected_dead.get(&l.message_id).copied(),
            Some(l.reason.as_str()),
            "{l:?}"
        );
    }
    assert_eq!(letters.len(), expected_dead.len());
    assert!(dlq.verify().unwrap().is_ok());

    // 4. Memory stayed bounded.
    if let Some(kib) = rss {
        assert!(kib < 1024 * 1024, "peak RSS {kib} KiB");
    }
}
