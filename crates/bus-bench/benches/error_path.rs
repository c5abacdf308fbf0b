//! The cost of a failure.
//!
//! `error_path/one_failure/*`: one failed message fully handled, on the
//! calling thread, by the real components in the order of bus-core's
//! `worker::fail`: breaker permit and failure record, classify
//! (`DefaultClassifier`), build and sanitize the `ErrorReport`, decide
//! (`bus_recovery::Recovery`, every category dead-letters at once), record to
//! the `ErrorLogger`, `Failed` event to the `HealthMonitor`, attempt history,
//! then the dead letter: `bus_core::MemoryDeadLetters` (`memory_dlq`) or
//! `SqliteDlq` with `Durability::Normal` (`sqlite_normal`), and the
//! `DeadLettered` event. `one_success` is the success path's plug work
//! (permit, success record, `on_success`, `Acked` event) for comparison.
//! The envelope is built outside the measured time.
//!
//! `error_path/throughput/*`: whole-bus throughput (1 publisher, 1
//! subscriber) with 0 %, 10 % and 100 % of messages failing. The recovery
//! policy dead-letters at the first failure (no retries, so each failing
//! message costs exactly one failure and one dead letter); bus on uses
//! breakers that count but never open (a default breaker would park a 100 %
//! failing stream for 60 s, measuring nothing).
//!
//! `cargo bench -p bus-bench --bench error_path -- --quick` for a short run.

#![allow(clippy::unwrap_used)]

mod support;

use bus_bench::{BenchError, FailEvery, Fixture, OnOptions, TOPIC, payload};
use bus_breaker::{BreakerConfig, BreakerRegistry};
use bus_core::time::{Clock, SystemClock};
use bus_core::{
    AttemptRecord, BusEvent, DeadLetter, DeadLetterStore, Decision, Envelope, ErrorSink, Failure,
    Guard, GuardProvider, MemoryDeadLetters, Observer, Outcome, RecoveryPolicy, Success, Topic,
};
use bus_dlq::{DlqConfig, Durability, SqliteDlq};
use bus_errors::{Classifier, DefaultClassifier, ErrorCategory, ErrorContext, ErrorReport};
use bus_errors::{HandlerError, Sanitizer};
use bus_health::HealthMonitor;
use bus_logger::{ErrorLogger, LoggerConfig};
use bus_recovery::{Exhausted, Recovery, RetryPolicy};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{publish_from, settle, subscribe};

const COMPONENT: &str = "bench";

type MakeFixture = fn() -> Fixture;

/// The plugs of a bus with error handling on, driven by hand.
struct Pipeline {
    guard: Arc<dyn Guard>,
    classifier: DefaultClassifier,
    sanitizer: Sanitizer,
    recovery: Recovery,
    logger: ErrorLogger,
    health: HealthMonitor,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    fn new() -> Self {
        let base = bus_bench::target_dir().join("bench-scratch");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let breaker = BreakerConfig::builder()
            .consecutive_failures(None)
            .failure_rate_threshold(None)
            .build()
            .unwrap();
        let registry = BreakerRegistry::new(breaker).unwrap();
        let recovery = ErrorCategory::ALL
            .iter()
            .fold(Recovery::builder(), |b, &c| {
                b.category(c, RetryPolicy::never(Exhausted::DeadLetter))
            })
            .build()
            .unwrap();
        Self {
            guard: registry.guard(COMPONENT),
            classifier: DefaultClassifier::default(),
            sanitizer: Sanitizer::default(),
            recovery,
            logger: ErrorLogger::open(dir.path(), LoggerConfig::default()).unwrap(),
            health: HealthMonitor::new(),
            _dir: dir,
        }
    }

    /// What `worker::fail` does for one failed delivery that is dead-lettered.
    fn fail_one(&self, mut env: Envelope, dlq: &dyn DeadLetterStore) {
        let permit = self.guard.try_acquire().unwrap();
        let elapsed = Duration::from_micros(1);
        // The worker reads its clock once when the handler returns.
        let ended = SystemClock.stamp();
        let error = HandlerError::from(BenchError(7));
        let ctx = ErrorContext::new(COMPONENT)
            .with_topic(env.topic.as_str())
            .with_attempt(env.attempt);
        let class = self.classifier.classify(error.as_error(), &ctx);
        self.guard
            .record(permit, Outcome::Failure { elapsed, class });
        let mut report = ErrorReport::from_error(&error, class, COMPONENT)
            .with_topic(env.topic.as_str())
            .with_message_id(env.id)
            .with_attempt(env.attempt);
        report.retry_count = env.retries();
        self.sanitizer.sanitize(&mut report);
        let resolution = self
            .recovery
            .decide(&Failure::new(&report, &env, COMPONENT, elapsed));
        let (decision, action) = resolution.apply(&mut env);
        report.record_recovery(false, Some(false), action.clone());
        self.logger.record(&report);
        self.health
            .on_event(ended, &BusEvent::Failed { report: &report });
        env.history.push(AttemptRecord {
            attempt: env.attempt,
            at: report.timestamp,
            component: COMPONENT.to_string(),
            category: report.category,
            severity: report.severity,
            error_type: report.error_type.clone(),
            message: report.message.clone(),
            decision: action,
        });
        let Decision::DeadLetter { reason } = decision else {
            panic!("expected a dead letter, got {decision:?}");
        };
        let letter = DeadLetter::new(env, report, reason, COMPONENT, COMPONENT);
        dlq.push(&letter).unwrap();
        // Stamped when the store answers (the bus reads its clock then).
        self.health.on_event(
            SystemClock.stamp(),
            &BusEvent::DeadLettered {
                topic: &letter.envelope.topic,
                component: COMPONENT,
                category: letter.report.category,
                reason: &letter.reason,
            },
        );
    }

    /// The plug work of a successful delivery, for comparison.
    fn succeed_one(&self, env: Envelope) {
        let permit = self.guard.try_acquire().unwrap();
        let elapsed = Duration::from_micros(1);
        let ended = SystemClock.stamp();
        self.guard.record(permit, Outcome::Success { elapsed });
        self.recovery
            .on_success(&Success::new(&env, COMPONENT, elapsed, ended));
        self.health.on_event(
            ended,
            &BusEvent::Acked {
                topic: &env.topic,
                component: COMPONENT,
                created_at: env.created_at,
                handler_time: elapsed,
                attempt: env.attempt,
            },
        );
    }
}

fn envelope() -> Envelope {
    Envelope::new(Topic::new(TOPIC).unwrap(), payload(7))
}

fn one_failure(c: &mut Criterion) {
    let p = Pipeline::new();
    let mut g = c.benchmark_group("error_path/one_failure");
    g.bench_function("one_success", |b| {
        b.iter_batched(envelope, |env| p.succeed_one(env), BatchSize::SmallInput)
    });
    // A fresh in-memory store every 10 000 letters (outside the measured
    // time) so a long run does not measure a growing Vec or run out of memory.
    g.bench_function("memory_dlq", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(10_000);
                left -= chunk;
                let store = MemoryDeadLetters::new();
                let envs: Vec<Envelope> = (0..chunk).map(|_| envelope()).collect();
                let t0 = Instant::now();
                for env in envs {
                    p.fail_one(env, &store);
                }
                total += t0.elapsed();
                assert_eq!(store.len() as u64, chunk);
            }
            total
        })
    });
    let dir = tempfile::tempdir_in(bus_bench::target_dir().join("bench-scratch")).unwrap();
    let sqlite =
        SqliteDlq::open(DlqConfig::new(dir.path()).with_durability(Durability::Normal)).unwrap();
    g.bench_function("sqlite_normal", |b| {
        b.iter_batched(
            envelope,
            |env| p.fail_one(env, &sqlite),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let counters = p.logger.counters();
    eprintln!("error logger after one_failure: {counters:?}");
}

fn failure_throughput(c: &mut Criterion) {
    let n = support::messages(20_000, 4_000);
    let mut g = c.benchmark_group("error_path/throughput");
    g.throughput(Throughput::Elements(n));
    let cases: [(&str, u64, MakeFixture); 6] = [
        ("bus_off_fail_0pct", 0, Fixture::off),
        ("bus_off_fail_10pct", 10, Fixture::off),
        ("bus_off_fail_100pct", 1, Fixture::off),
        ("bus_on_fail_0pct", 0, || {
            Fixture::on(OnOptions::failing()).unwrap()
        }),
        ("bus_on_fail_10pct", 10, || {
            Fixture::on(OnOptions::failing()).unwrap()
        }),
        ("bus_on_fail_100pct", 1, || {
            Fixture::on(OnOptions::failing()).unwrap()
        }),
    ];
    for (name, every, make) in cases {
        let fx = make();
        subscribe(&fx, 1, FailEvery(every));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    publish_from(1, 0, n, &|seq| fx.publish(seq));
                    settle(&fx);
                    total += t0.elapsed();
                }
                total
            })
        });
        let stats = fx.shutdown().stats;
        assert!(stats.invariant_holds(), "{stats:?}");
        assert_eq!(stats.failed, stats.dead_lettered, "{stats:?}");
        assert_eq!(stats.parked, 0, "{stats:?}");
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = one_failure, failure_throughput
}
criterion_main!(benches);
