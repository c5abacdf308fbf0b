//! The exact schedule of every category's default policy, driven the way the
//! pipeline drives it.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use bus_core::dlq::DeadLetterReason;
use bus_core::time::ManualClock;
use bus_core::{Decision, RecoveryPolicy};
use bus_errors::ErrorCategory;
use bus_recovery::{Backoff, Jitter, Recovery, RetryPolicy};
use common::{always_fail, deliver, envelope};
use std::sync::Arc;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn recovery(seed: u64) -> (Recovery, ManualClock) {
    let clock = ManualClock::new();
    let r = Recovery::builder()
        .seed(seed)
        .clock(Arc::new(clock.clone()))
        .no_budget()
        .build()
        .unwrap();
    (r, clock)
}

fn retry(n: u64) -> Decision {
    Decision::Retry { after: ms(n) }
}

#[test]
fn message_processing_retries_after_1s_and_2s_then_dead_letters() {
    let (r, clock) = recovery(1);
    let t = always_fail(
        &r,
        &clock,
        ErrorCategory::MessageProcessing,
        "orders",
        "billing",
    );
    assert_eq!(
        t.decisions,
        [
            retry(1_000),
            retry(2_000),
            Decision::DeadLetter {
                reason: DeadLetterReason::RetriesExhausted
            }
        ]
    );
    assert_eq!(clock.elapsed(), ms(3_000), "waiting is the clock's job");
}

#[test]
fn timeout_retries_after_1_5s_and_3s_then_dead_letters() {
    let (r, clock) = recovery(1);
    let t = always_fail(&r, &clock, ErrorCategory::Timeout, "orders", "billing");
    assert_eq!(
        t.decisions,
        [
            retry(1_500),
            retry(3_000),
            Decision::DeadLetter {
                reason: DeadLetterReason::RetriesExhausted
            }
        ]
    );
}

#[test]
fn serialization_without_a_fallback_codec_is_poison_at_once() {
    let (r, clock) = recovery(1);
    let t = always_fail(
        &r,
        &clock,
        ErrorCategory::Serialization,
        "orders",
        "billing",
    );
    assert_eq!(
        t.decisions,
        [Decision::DeadLetter {
            reason: DeadLetterReason::NotRetryable
        }]
    );
}

#[test]
fn authentication_and_configuration_escalate_without_retry() {
    for category in [ErrorCategory::Authentication, ErrorCategory::Configuration] {
        let (r, clock) = recovery(1);
        let t = always_fail(&r, &clock, category, "orders", "billing");
        assert_eq!(
            t.decisions,
            [Decision::Escalate {
                reason: DeadLetterReason::NotRetryable
            }],
            "{category}"
        );
        assert_eq!(clock.elapsed(), Duration::ZERO);
    }
}

#[test]
fn resource_exhaustion_retries_slowly_then_escalates() {
    let (r, clock) = recovery(1);
    let t = always_fail(
        &r,
        &clock,
        ErrorCategory::ResourceExhaustion,
        "orders",
        "billing",
    );
    assert_eq!(
        t.decisions,
        [
            retry(2_000),
            retry(4_000),
            Decision::Escalate {
                reason: DeadLetterReason::RetriesExhausted
            }
        ]
    );
}

#[test]
fn connection_reconnects_three_times_with_full_jitter_then_dead_letters() {
    for seed in 0..50 {
        let (r, clock) = recovery(seed);
        let t = always_fail(&r, &clock, ErrorCategory::Connection, "orders", "billing");
        assert_eq!(t.decisions.len(), 4, "{:?}", t.decisions);
        // The same seed drives a reference generator: the exact delays.
        let mut rng = fastrand::Rng::with_seed(seed);
        let nominal = Backoff::exponential(ms(2_000), 2.0, ms(30_000));
        let jittered = nominal.with_jitter(Jitter::Full);
        for (i, d) in t.decisions[..3].iter().enumerate() {
            let i = u32::try_from(i).unwrap();
            let expect = jittered.delay(i, None, &mut rng);
            assert_eq!(
                *d,
                Decision::Reconnect { after: expect },
                "seed {seed} retry {i}"
            );
            assert!(
                expect <= nominal.nominal(i),
                "full jitter stays under 2s * 2^{i}"
            );
        }
        assert_eq!(
            t.decisions[3],
            Decision::DeadLetter {
                reason: DeadLetterReason::RetriesExhausted
            }
        );
    }
}

#[test]
fn queue_overflow_backs_off_with_equal_jitter_then_dead_letters_as_overflow() {
    for seed in 0..50 {
        let (r, clock) = recovery(seed);
        let t = always_fail(
            &r,
            &clock,
            ErrorCategory::QueueOverflow,
            "orders",
            "billing",
        );
        let delays: Vec<Duration> = t.decisions[..2]
            .iter()
            .map(|d| match d {
                Decision::Retry { after } => *after,
                other => panic!("expected a retry, got {other:?}"),
            })
            .collect();
        assert!(ms(500) <= delays[0] && delays[0] <= ms(1_000), "{delays:?}");
        assert!(
            ms(1_000) <= delays[1] && delays[1] <= ms(2_000),
            "{delays:?}"
        );
        assert_eq!(
            t.decisions[2..],
            [Decision::DeadLetter {
                reason: DeadLetterReason::QueueOverflow
            }]
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_another_seed_differs() {
    let run = |seed| {
        let (r, clock) = recovery(seed);
        always_fail(&r, &clock, ErrorCategory::Connection, "orders", "billing").decisions
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

#[test]
fn a_handler_failing_twice_then_succeeding_is_acked_after_two_retries_and_says_so() {
    let (r, clock) = recovery(1);
    let mut calls = 0;
    let t = deliver(&r, &clock, envelope("orders", b"{}"), "billing", |_| {
        calls += 1;
        if calls <= 2 {
            Err(ErrorCategory::MessageProcessing)
        } else {
            Ok(())
        }
    });
    assert!(t.acked);
    assert_eq!(t.decisions, [retry(1_000), retry(2_000)]);
    assert_eq!(t.envelope.attempt, 3);
    assert_eq!(t.envelope.history.len(), 2);
    // The policy's explanation is what the history and the report record.
    let said = "MESSAGE_PROCESSING attempt 2 of 3 (category policy): retry in 2s";
    assert_eq!(t.envelope.history[1].decision, said);
    let last = &t.reports[1];
    assert!(last.recovery_attempted);
    assert_eq!(last.retry_count, 1);
    assert_eq!(last.recovery_action.as_deref(), Some(said));
    assert_eq!(t.notes.last().unwrap(), said);
}

#[test]
fn every_give_up_note_explains_category_attempt_and_reason() {
    let (r, clock) = recovery(1);
    let t = always_fail(
        &r,
        &clock,
        ErrorCategory::ResourceExhaustion,
        "orders",
        "billing",
    );
    let note = t.notes.last().unwrap();
    assert_eq!(
        note,
        "RESOURCE_EXHAUSTION attempt 3 of 3 (category policy): \
         dead-letter and escalate: retries_exhausted; all 2 retries failed"
    );
    let t = always_fail(
        &r,
        &clock,
        ErrorCategory::Authentication,
        "orders",
        "billing",
    );
    let note = t.notes.last().unwrap();
    assert!(note.starts_with("AUTHENTICATION attempt 1 of 1"), "{note}");
    assert!(note.ends_with("category is not retryable"), "{note}");
}

#[test]
fn the_default_policy_never_discards() {
    for seed in 0..5 {
        let (r, clock) = recovery(seed);
        for category in ErrorCategory::ALL {
            let t = always_fail(&r, &clock, category, "orders", "billing");
            let last = t.decisions.last().unwrap();
            assert!(
                matches!(
                    last,
                    Decision::DeadLetter { .. } | Decision::Escalate { .. }
                ),
                "{category}: {last:?}"
            );
        }
    }
}

#[test]
fn discard_happens_only_where_configured() {
    let clock = ManualClock::new();
    let r = Recovery::builder()
        .clock(Arc::new(clock.clone()))
        .category(
            ErrorCategory::MessageProcessing,
            RetryPolicy::new(1, Backoff::constant(ms(10))),
        )
        .discard_on(ErrorCategory::MessageProcessing)
        .build()
        .unwrap();
    let t = always_fail(
        &r,
        &clock,
        ErrorCategory::MessageProcessing,
        "metrics",
        "sampler",
    );
    assert_eq!(t.decisions[0], retry(10));
    assert!(
        matches!(&t.decisions[1], Decision::Discard { reason } if reason.contains("MESSAGE_PROCESSING attempt 2 of 2")),
        "{:?}",
        t.decisions[1]
    );
    let t = always_fail(&r, &clock, ErrorCategory::Timeout, "metrics", "sampler");
    assert!(matches!(
        t.decisions.last(),
        Some(Decision::DeadLetter { .. })
    ));
}

#[test]
fn decorrelated_jitter_grows_from_the_previous_delay_recorded_on_the_envelope() {
    let clock = ManualClock::new();
    let backoff = Backoff::exponential(ms(100), 2.0, ms(10_000)).with_jitter(Jitter::Decorrelated);
    let r = Recovery::builder()
        .seed(3)
        .no_budget()
        .clock(Arc::new(clock.clone()))
        .category(
            ErrorCategory::MessageProcessing,
            RetryPolicy::new(8, backoff),
        )
        .build()
        .unwrap();
    let t = always_fail(&r, &clock, ErrorCategory::MessageProcessing, "a", "b");
    let mut rng = fastrand::Rng::with_seed(3);
    let expected: Vec<Decision> = backoff
        .schedule(&mut rng)
        .take(8)
        .map(|after| Decision::Retry { after })
        .collect();
    assert_eq!(t.decisions[..8], expected[..]);
    let _: &dyn RecoveryPolicy = &r;
}
