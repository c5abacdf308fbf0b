//! Budget, fallback codec, adaptive deadlines and overrides, through the
//! `RecoveryPolicy` interface the pipeline uses.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use bus_core::dlq::DeadLetterReason;
use bus_core::time::Clock;
use bus_core::time::ManualClock;
use bus_core::{Bytes, Decision, Failure, RecoveryPolicy, Success};
use bus_errors::{ErrorCategory, HandlerError, Severity};
use bus_recovery::{
    Backoff, BudgetConfig, DeadlineConfig, Exhausted, FALLBACK_HEADER, Recovery, RetryPolicy,
    Strategy,
};
use common::{always_fail, deliver, envelope, report};
use std::sync::Arc;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn budgeted(clock: &ManualClock) -> Recovery {
    Recovery::builder()
        .seed(1)
        .clock(Arc::new(clock.clone()))
        .budget(BudgetConfig {
            window: Duration::from_secs(10),
            percent: 0.2,
            min_retries_per_sec: 10,
        })
        .build()
        .unwrap()
}

fn first_failure(r: &Recovery, category: ErrorCategory, component: &str) -> Decision {
    let env = envelope("orders", b"{}");
    let rep = report(category, &env, component);
    r.decide(&Failure::new(&rep, &env, component, Duration::ZERO))
        .decision
}

#[test]
fn a_total_outage_sheds_retries_beyond_the_budget_into_the_dlq() {
    let clock = ManualClock::new();
    let r = budgeted(&clock);
    let (mut retries, mut shed, mut successes) = (0_u64, 0_u64, 0_u64);
    for i in 0..10_000_u32 {
        if i % 200 == 0 {
            let env = envelope("orders", b"{}");
            r.on_success(&Success::new(
                &env,
                "billing",
                Duration::ZERO,
                clock.stamp(),
            ));
            successes += 1;
        }
        match first_failure(&r, ErrorCategory::MessageProcessing, "billing") {
            Decision::Retry { .. } => retries += 1,
            Decision::DeadLetter {
                reason: DeadLetterReason::RetryBudgetExhausted,
            } => shed += 1,
            other => panic!("unexpected {other:?}"),
        }
        clock.advance(Duration::from_micros(500)); // 10k failures in 5 s: one window
    }
    let budget = 10 * 10 + successes / 5;
    assert_eq!(successes, 50);
    assert_eq!(retries, budget, "floor 10/s * 10 s + 20% of 50 successes");
    assert_eq!(shed, 10_000 - budget);
    // Once the window has passed, the floor is available again.
    clock.advance(Duration::from_secs(11));
    assert!(matches!(
        first_failure(&r, ErrorCategory::MessageProcessing, "billing"),
        Decision::Retry { .. }
    ));
}

#[test]
fn non_retryable_failures_do_not_spend_the_budget() {
    let clock = ManualClock::new();
    let r = budgeted(&clock);
    for _ in 0..1_000 {
        let d = first_failure(&r, ErrorCategory::Authentication, "billing");
        assert!(matches!(
            d,
            Decision::Escalate {
                reason: DeadLetterReason::NotRetryable
            }
        ));
    }
    assert_eq!(r.budget().unwrap().available(), 100);
}

#[test]
fn concurrent_failures_and_successes_keep_retries_within_the_budget() {
    let clock = ManualClock::new();
    let r = Arc::new(budgeted(&clock));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let r = Arc::clone(&r);
            let clock = clock.clone();
            std::thread::spawn(move || {
                let (mut retries, mut successes) = (0_u64, 0_u64);
                for i in 0..3_000 {
                    if (i + t) % 4 == 0 {
                        let env = envelope("orders", b"{}");
                        r.on_success(&Success::new(
                            &env,
                            "billing",
                            Duration::ZERO,
                            clock.stamp(),
                        ));
                        successes += 1;
                    } else if matches!(
                        first_failure(&r, ErrorCategory::Connection, "billing"),
                        Decision::Reconnect { .. }
                    ) {
                        retries += 1;
                    }
                }
                (retries, successes)
            })
        })
        .collect();
    let (retries, successes) = threads
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!(
        retries <= 100 + successes / 5,
        "{retries} retries, {successes} successes"
    );
    assert!(retries >= 100, "the floor alone allows 100: {retries}");
}

fn with_codec() -> (Recovery, ManualClock) {
    let clock = ManualClock::new();
    let r = Recovery::builder()
        .seed(1)
        .clock(Arc::new(clock.clone()))
        .fallback_codec("legacy.orders", "v1-to-json", |raw: &[u8]| {
            let text = std::str::from_utf8(raw).map_err(HandlerError::from)?;
            let id = text
                .strip_prefix("v1:")
                .ok_or_else(|| HandlerError::msg("not a v1 payload"))?;
            Ok(Bytes::from(format!("{{\"id\":{id}}}")))
        })
        .build()
        .unwrap();
    (r, clock)
}

#[test]
fn a_fallback_codec_rescues_an_old_payload_once() {
    let (r, clock) = with_codec();
    let t = deliver(
        &r,
        &clock,
        envelope("legacy.orders", b"v1:42"),
        "orders",
        |env| {
            serde_json::from_slice::<serde_json::Value>(&env.payload)
                .map(drop)
                .map_err(|_| ErrorCategory::Serialization)
        },
    );
    assert!(t.acked);
    assert_eq!(t.decisions, [Decision::Retry { after: ms(500) }]);
    assert_eq!(&t.envelope.payload[..], b"{\"id\":42}");
    assert_eq!(t.envelope.headers[FALLBACK_HEADER], "v1-to-json");
}

#[test]
fn a_poison_payload_reaches_the_dlq_after_one_fallback_attempt() {
    let (r, clock) = with_codec();
    let mut handler_calls = 0;
    let t = deliver(
        &r,
        &clock,
        envelope("legacy.orders", b"v1:oops"),
        "orders",
        |env| {
            handler_calls += 1;
            serde_json::from_slice::<serde_json::Value>(&env.payload)
                .map(drop)
                .map_err(|_| ErrorCategory::Serialization)
        },
    );
    assert!(!t.acked);
    assert_eq!(handler_calls, 2, "the original and the transcoded payload");
    assert_eq!(
        t.decisions,
        [
            Decision::Retry { after: ms(500) },
            Decision::DeadLetter {
                reason: DeadLetterReason::NotRetryable
            }
        ]
    );
    assert_eq!(&t.envelope.payload[..], b"{\"id\":oops}");
    let note = t.notes.last().unwrap();
    assert!(
        note.contains("still failing after fallback codec \"v1-to-json\""),
        "{note}"
    );
}

#[test]
fn a_failing_codec_dead_letters_at_once_and_leaves_the_payload_alone() {
    let (r, clock) = with_codec();
    let t = always_fail(
        &r,
        &clock,
        ErrorCategory::Serialization,
        "legacy.orders",
        "orders",
    );
    assert_eq!(
        t.decisions,
        [Decision::DeadLetter {
            reason: DeadLetterReason::NotRetryable
        }]
    );
    assert_eq!(&t.envelope.payload[..], b"{}");
    assert!(!t.envelope.headers.contains_key(FALLBACK_HEADER));
    let note = t.notes.last().unwrap();
    assert!(note.contains("not a v1 payload"), "{note}");
}

#[test]
fn timeouts_grow_the_handler_deadline_and_successes_shrink_it() {
    let clock = ManualClock::new();
    let r = Recovery::builder()
        .clock(Arc::new(clock.clone()))
        .deadlines(DeadlineConfig {
            default: None,
            factor: 1.5,
            cap: Duration::from_secs(5),
            shrink_after: 2,
        })
        .component_deadline("slow", Duration::from_secs(2))
        .build()
        .unwrap();
    assert_eq!(r.handler_deadline("slow"), Some(Duration::from_secs(2)));
    assert_eq!(r.handler_deadline("other"), None);
    let t = always_fail(&r, &clock, ErrorCategory::Timeout, "orders", "slow");
    assert_eq!(t.decisions.len(), 3);
    // 2 s -> 3 s -> 4.5 s -> 5 s (cap)
    assert_eq!(r.handler_deadline("slow"), Some(Duration::from_secs(5)));
    let note = t.notes.last().unwrap();
    assert!(note.contains("handler deadline now 5s"), "{note}");
    assert_eq!(
        r.handler_deadline("other"),
        None,
        "other components keep theirs"
    );
    // A component with no base gets none from its timeouts, however fast
    // they failed: adaptive deadlines are off for it.
    let t = always_fail(&r, &clock, ErrorCategory::Timeout, "orders", "other");
    assert_eq!(r.handler_deadline("other"), None);
    assert!(
        t.notes.iter().all(|n| !n.contains("handler deadline")),
        "{:?}",
        t.notes
    );
    let env = envelope("orders", b"{}");
    let mut seen = Vec::new();
    for _ in 0..6 {
        r.on_success(&Success::new(
            &env,
            "slow",
            Duration::ZERO,
            bus_core::time::SystemClock.stamp(),
        ));
        seen.push(r.handler_deadline("slow").unwrap());
    }
    let s = Duration::from_secs_f64;
    assert_eq!(
        seen,
        [5.0, 5.0 / 1.5, 5.0 / 1.5, 2.222_222_222, 2.222_222_222, 2.0].map(s)
    );
}

#[test]
fn the_most_specific_policy_wins() {
    let clock = ManualClock::new();
    let c = |n| RetryPolicy::new(n, Backoff::constant(ms(u64::from(n))));
    let r = Recovery::builder()
        .seed(1)
        .no_budget()
        .clock(Arc::new(clock.clone()))
        .category(ErrorCategory::MessageProcessing, c(1))
        .topic("payments", None, c(2))
        .topic("payments", Some(ErrorCategory::Timeout), c(3))
        .component("fraud", None, c(4))
        .component("fraud", Some(ErrorCategory::Timeout), c(5))
        .build()
        .unwrap();
    let retries = |cat, topic: &str, comp: &str| {
        always_fail(&r, &clock, cat, topic, comp).decisions.len() - 1
    };
    use ErrorCategory::{MessageProcessing as Mp, Timeout as To};
    assert_eq!(retries(Mp, "orders", "billing"), 1, "category");
    assert_eq!(
        retries(Mp, "payments", "billing"),
        2,
        "topic, all categories"
    );
    assert_eq!(
        retries(To, "payments", "billing"),
        3,
        "topic, this category"
    );
    assert_eq!(retries(Mp, "payments", "fraud"), 4, "component beats topic");
    assert_eq!(
        retries(To, "payments", "fraud"),
        5,
        "component, this category"
    );
    assert_eq!(
        retries(To, "orders", "billing"),
        2,
        "default TIMEOUT untouched"
    );
    let t = always_fail(&r, &clock, Mp, "payments", "fraud");
    let note = t.notes.last().unwrap();
    assert!(note.contains("(component policy)"), "{note}");
}

#[test]
fn retry_on_sends_rejected_errors_straight_to_the_exhausted_outcome() {
    let clock = ManualClock::new();
    let policy = RetryPolicy::new(3, Backoff::constant(ms(100)))
        .strategy(Strategy::Retry)
        .on_exhausted(Exhausted::Escalate)
        .retry_on(|rep| rep.severity < Severity::High);
    let r = Recovery::builder()
        .clock(Arc::new(clock.clone()))
        .category(ErrorCategory::Connection, policy)
        .build()
        .unwrap();
    // Connection defaults to HIGH severity: rejected by the predicate.
    let t = always_fail(&r, &clock, ErrorCategory::Connection, "a", "b");
    assert_eq!(
        t.decisions,
        [Decision::Escalate {
            reason: DeadLetterReason::NotRetryable
        }]
    );
    let env = envelope("a", b"{}");
    let mut rep = report(ErrorCategory::Connection, &env, "b");
    rep.severity = Severity::Low;
    let d = r
        .decide(&Failure::new(&rep, &env, "b", Duration::ZERO))
        .decision;
    assert_eq!(d, Decision::Retry { after: ms(100) });
}

#[test]
fn invalid_builder_values_are_rejected_with_their_key() {
    let err = Recovery::builder()
        .topic(
            "orders",
            Some(ErrorCategory::Timeout),
            RetryPolicy::new(1, Backoff::exponential(ms(10), 0.5, ms(20))),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.key(), "topics.orders.categories.TIMEOUT.backoff.factor");
    let err = Recovery::builder()
        .component_deadline("slow", Duration::from_secs(3_600))
        .build()
        .unwrap_err();
    assert_eq!(err.key(), "deadlines.components.slow");
}
