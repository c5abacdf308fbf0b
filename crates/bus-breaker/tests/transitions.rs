//! One test per transition and threshold, driven by a manual clock.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_breaker::{
    BreakerConfig, BreakerConfigBuilder, BreakerGuard, BreakerRegistry, CallError, CircuitBreaker,
    SlidingWindow, Transition,
};
use bus_core::time::ManualClock;
use bus_core::{CircuitState, Guard, GuardProvider, Outcome};
use bus_errors::{Classification, ErrorCategory};
use rstest::rstest;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn cfg() -> BreakerConfigBuilder {
    BreakerConfig::builder()
}

fn breaker(config: BreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder("dep")
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (b, clock)
}

fn record(b: &CircuitBreaker, pattern: &str) {
    for c in pattern.chars() {
        let p = b.try_acquire().unwrap();
        match c {
            's' => p.success(),
            'f' => p.failure(),
            'i' => p.ignore(),
            _ => panic!("bad pattern {c}"),
        }
    }
}

fn trip(b: &CircuitBreaker) {
    b.force_open();
    b.reset();
    for _ in 0..b.config().consecutive_failures.unwrap_or(1000) {
        if b.state() != CircuitState::Closed {
            break;
        }
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.state(), CircuitState::Open);
}

#[rstest]
#[case::five_in_a_row(5, "ffff", "f")]
#[case::success_resets_the_run(3, "ffsff", "f")]
#[case::ignored_does_not_reset(3, "fifi", "f")]
#[case::one_is_enough(1, "", "f")]
fn opens_after_n_consecutive_failures(#[case] n: u32, #[case] before: &str, #[case] last: &str) {
    let (b, _) = breaker(
        cfg()
            .consecutive_failures(Some(n))
            .failure_rate_threshold(None)
            .build()
            .unwrap(),
    );
    record(&b, before);
    assert_eq!(b.state(), CircuitState::Closed, "not yet after {before:?}");
    record(&b, last);
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(b.metrics().trips, 1);
}

/// Once a count window is full of fast successes a success takes a fast path
/// that writes nothing; it must still end a failure run.
#[rstest]
#[case::run_reset_after_settling("ssssssff", "sff", CircuitState::Closed)]
#[case::run_completes_after_settling("ssssssff", "f", CircuitState::Open)]
#[case::stale_success_counts_nowhere("ssssssff", "xf", CircuitState::Open)]
fn settled_window_successes_still_reset_the_run(
    #[case] settle: &str,
    #[case] then: &str,
    #[case] state: CircuitState,
) {
    let (b, _) = breaker(
        cfg()
            .consecutive_failures(Some(3))
            .failure_rate_threshold(None)
            .window(SlidingWindow::Count { size: 4 })
            .build()
            .unwrap(),
    );
    record(&b, settle);
    for c in then.chars() {
        if c == 'x' {
            // A permit from before a force-open/reset cycle is stale.
            let stale = b.try_acquire().unwrap();
            b.force_open();
            b.reset();
            record(&b, "ssssff");
            stale.success();
        } else {
            record(&b, &c.to_string());
        }
    }
    assert_eq!(b.state(), state, "{settle} then {then}");
}

#[rstest]
// window 10, min 4, threshold 50%
#[case::below_minimum_calls("fsf", false)]
#[case::at_minimum_calls_and_rate("sfsf", true)]
#[case::a_success_completes_the_minimum_at_the_rate("ffss", true)]
#[case::a_success_completes_the_minimum_below_the_rate("fsss", false)]
#[case::rate_below_threshold("sssssssff", false)]
#[case::rate_reaches_threshold_as_old_successes_slide_out("sssssssssssfffff", true)]
#[case::clean_successes_before_count(&"s".repeat(50), false)]
#[case::failures_after_a_settled_window(&format!("{}fffff", "s".repeat(50)), true)]
fn opens_on_failure_rate_over_count_window(#[case] pattern: &str, #[case] opens: bool) {
    let (b, _) = breaker(
        cfg()
            .consecutive_failures(None)
            .window(SlidingWindow::Count { size: 10 })
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    record(&b, pattern);
    assert_eq!(b.state() == CircuitState::Open, opens, "{pattern}");
}

#[test]
fn successes_before_the_first_failure_count_toward_minimum_calls() {
    // 19 successes are folded from the per-thread stripes: with them the
    // window holds 20 calls, 1 failure = 5 %, so it must not trip; without them
    // it would be 1 call at 100 % (below minimum) and the next failures would trip.
    let (b, _) = breaker(cfg().consecutive_failures(None).build().unwrap());
    record(&b, &"s".repeat(19));
    record(&b, "f");
    let m = b.metrics();
    assert_eq!((m.calls, m.failed_calls), (20, 1));
    record(&b, &"f".repeat(8)); // 9 / 28 = 32 %
    assert_eq!(b.state(), CircuitState::Closed);
    record(&b, &"f".repeat(10)); // 19 / 38 = 50 %
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn time_window_forgets_failures_older_than_its_length() {
    let (b, clock) = breaker(
        cfg()
            .consecutive_failures(None)
            .window(SlidingWindow::Time {
                length: Duration::from_secs(10),
            })
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    record(&b, "ff");
    clock.advance(11 * SEC);
    record(&b, "ssf"); // the two old failures are gone: 1 / 3
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.metrics().calls, 3);
    record(&b, "f"); // 2 / 4 = 50 %
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn time_window_trips_on_a_success_that_completes_the_minimum() {
    let (b, clock) = breaker(
        cfg()
            .consecutive_failures(None)
            .window(SlidingWindow::Time {
                length: Duration::from_secs(10),
            })
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    record(&b, "ffs");
    assert_eq!(
        b.state(),
        CircuitState::Closed,
        "3 calls, below the minimum"
    );
    record(&b, "s"); // 2 / 4 = 50 %, judged after the success
    assert_eq!(b.state(), CircuitState::Open);

    // Once the failures have left the window, successes judge nothing.
    b.reset();
    record(&b, "ff");
    clock.advance(11 * SEC);
    record(&b, "ssss");
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn slow_calls_trip_the_breaker() {
    let (b, clock) = breaker(
        cfg()
            .consecutive_failures(None)
            .window(SlidingWindow::Count { size: 4 })
            .minimum_calls(4)
            .slow_call_threshold(Some(SEC))
            .slow_call_rate_threshold(75.0)
            .build()
            .unwrap(),
    );
    for slow in [true, true, false] {
        let p = b.try_acquire().unwrap();
        if slow {
            clock.advance(2 * SEC);
        }
        p.success();
    }
    assert_eq!(b.state(), CircuitState::Closed);
    let p = b.try_acquire().unwrap();
    clock.advance(SEC); // exactly at the threshold counts as slow
    p.success();
    assert_eq!(b.metrics().slow_calls, 3);
    assert_eq!(b.state(), CircuitState::Open);
}

#[rstest]
#[case::serialization_is_ignored_by_default(ErrorCategory::Serialization, CircuitState::Closed)]
#[case::connection_counts(ErrorCategory::Connection, CircuitState::Open)]
#[case::message_processing_counts(ErrorCategory::MessageProcessing, CircuitState::Open)]
fn ignored_categories_do_not_trip(#[case] category: ErrorCategory, #[case] after: CircuitState) {
    let (b, _) = breaker(cfg().consecutive_failures(Some(2)).build().unwrap());
    for _ in 0..2 {
        b.try_acquire().unwrap().failure_with(category);
    }
    assert_eq!(b.state(), after);
    // Same through the bus-core Guard.
    let (g, _) = breaker(cfg().consecutive_failures(Some(2)).build().unwrap());
    let g = BreakerGuard::new(Arc::new(g));
    for _ in 0..2 {
        let p = g.try_acquire().unwrap();
        let class = Classification::of(category);
        g.record(
            p,
            Outcome::Failure {
                elapsed: SEC,
                class,
            },
        );
    }
    assert_eq!(g.state(), after);
}

#[test]
fn call_uses_the_failure_predicate() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder("dep")
        .config(cfg().consecutive_failures(Some(1)).build().unwrap())
        .clock(Arc::new(clock))
        .failure_predicate(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() != std::io::ErrorKind::InvalidInput)
        })
        .build()
        .unwrap();
    let invalid = b.call(|| Err::<(), _>(std::io::Error::from(std::io::ErrorKind::InvalidInput)));
    assert!(matches!(invalid, Err(CallError::Failed(_))));
    assert_eq!(b.state(), CircuitState::Closed);
    let down = b.call(|| Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
    assert!(matches!(down, Err(CallError::Failed(_))));
    let refused = b.call(|| Ok::<_, std::io::Error>(7));
    assert!(matches!(refused, Err(CallError::Rejected(r)) if r.state == CircuitState::Open));
}

#[test]
fn open_rejects_until_the_wait_ends_then_goes_half_open() {
    let (b, clock) = breaker(cfg().consecutive_failures(Some(1)).build().unwrap());
    record(&b, "f");
    clock.advance(59 * SEC);
    let r = b.try_acquire().unwrap_err();
    assert_eq!((r.state, r.retry_after), (CircuitState::Open, SEC));
    clock.advance(SEC);
    let probe = b.try_acquire().unwrap();
    assert_eq!(probe.state(), CircuitState::HalfOpen);
    assert_eq!(b.metrics().rejected_calls, 1);
    probe.ignore();
}

#[rstest]
#[case::one(1)]
#[case::three(3)]
#[case::ten(10)]
fn half_open_permits_exactly_n_probes(#[case] n: u32) {
    let (b, clock) = breaker(
        cfg()
            .consecutive_failures(Some(1))
            .permitted_calls_in_half_open(n)
            .build()
            .unwrap(),
    );
    record(&b, "f");
    clock.advance(60 * SEC);
    let probes: Vec<_> = (0..n).map(|_| b.try_acquire().unwrap()).collect();
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.state, CircuitState::HalfOpen);
    assert!(r.retry_after <= SEC && !r.retry_after.is_zero());
    for p in probes {
        assert_eq!(
            b.state(),
            CircuitState::HalfOpen,
            "decided before all probes reported"
        );
        p.success();
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

#[rstest]
// 4 probes, failure rate threshold 50 %
#[case::all_succeed("ssss", CircuitState::Closed)]
#[case::one_of_four_fails("sfss", CircuitState::Closed)]
#[case::half_fail("fssf", CircuitState::Open)]
#[case::ignored_probe_is_replaced("sisss", CircuitState::Closed)]
fn half_open_decides_when_all_probes_reported(#[case] pattern: &str, #[case] to: CircuitState) {
    let (b, clock) = breaker(
        cfg()
            .consecutive_failures(Some(1))
            .permitted_calls_in_half_open(4)
            .build()
            .unwrap(),
    );
    record(&b, "f");
    clock.advance(60 * SEC);
    record(&b, pattern);
    assert_eq!(b.state(), to);
}

#[test]
fn reopens_when_half_open_probes_never_report() {
    let (b, clock) = breaker(
        cfg()
            .consecutive_failures(Some(1))
            .permitted_calls_in_half_open(2)
            .max_wait_in_half_open(10 * SEC)
            .build()
            .unwrap(),
    );
    record(&b, "f");
    clock.advance(60 * SEC);
    let stuck = [b.try_acquire().unwrap(), b.try_acquire().unwrap()];
    clock.advance(9 * SEC);
    assert!(matches!(b.try_acquire(), Err(r) if r.state == CircuitState::HalfOpen));
    clock.advance(SEC);
    assert!(matches!(b.try_acquire(), Err(r) if r.state == CircuitState::Open));
    assert_eq!(b.state(), CircuitState::Open);
    // The stuck probes finally report: stale, they change nothing.
    for p in stuck {
        p.success();
    }
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(b.metrics().trips, 2);
}

#[test]
fn dropped_permit_does_not_leak_a_probe_slot() {
    let (b, clock) = breaker(
        cfg()
            .consecutive_failures(Some(1))
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap(),
    );
    record(&b, "f");
    clock.advance(60 * SEC);
    drop(b.try_acquire().unwrap());
    let p = b
        .try_acquire()
        .expect("the dropped probe's slot is free again");
    p.success();
    assert_eq!(b.state(), CircuitState::Closed);
    // A stale half-open permit dropped later releases nothing in a new episode.
    trip(&b);
    clock.advance(60 * SEC);
    let old = b.try_acquire().unwrap();
    trip(&b);
    clock.advance(60 * SEC);
    let new = b.try_acquire().unwrap();
    drop(old);
    assert!(matches!(b.try_acquire(), Err(r) if r.state == CircuitState::HalfOpen));
    new.success();
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn open_wait_grows_exponentially_up_to_cap() {
    let (b, clock) = breaker(
        cfg()
            .consecutive_failures(Some(1))
            .permitted_calls_in_half_open(1)
            .wait_in_open(10 * SEC)
            .open_wait_multiplier(2.0)
            .max_wait_in_open(50 * SEC)
            .build()
            .unwrap(),
    );
    record(&b, "f");
    for expected in [10, 20, 40, 50, 50] {
        let r = b.try_acquire().unwrap_err();
        assert_eq!(r.retry_after, expected * SEC);
        clock.advance(expected * SEC);
        b.try_acquire().unwrap().failure(); // the probe fails: reopen, longer
    }
    clock.advance(50 * SEC);
    b.try_acquire().unwrap().success(); // closes: the growth resets
    record(&b, "f");
    assert_eq!(b.try_acquire().unwrap_err().retry_after, 10 * SEC);
}

#[test]
fn operator_states_force_disable_and_metrics_only() {
    let (b, _) = breaker(cfg().consecutive_failures(Some(1)).build().unwrap());
    b.force_open();
    let r = b.try_acquire().unwrap_err();
    assert_eq!(
        (r.state, r.retry_after),
        (CircuitState::ForcedOpen, 60 * SEC)
    );

    b.disable();
    record(&b, "fffff");
    assert_eq!(b.state(), CircuitState::Disabled);
    assert_eq!(b.metrics().calls, 0, "disabled records nothing");

    b.metrics_only();
    record(&b, "fffff");
    assert_eq!(b.state(), CircuitState::MetricsOnly);
    assert_eq!(b.metrics().failed_calls, 5, "metrics-only records");

    b.reset();
    assert_eq!(b.metrics().calls, 0);
    record(&b, "f");
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn listeners_hear_every_transition_in_order() {
    let seen: Arc<Mutex<Vec<(CircuitState, CircuitState)>>> = Arc::default();
    let clock = ManualClock::new();
    let registry = BreakerRegistry::with_clock(
        cfg()
            .consecutive_failures(Some(1))
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let sink = seen.clone();
    registry.on_transition(Arc::new(move |t: &Transition| {
        assert_eq!(&*t.component, "orders");
        sink.lock().unwrap().push((t.from, t.to));
    }));
    let guard = registry.guard("orders");
    let p = guard.try_acquire().unwrap();
    guard.record(
        p,
        Outcome::Failure {
            elapsed: SEC,
            class: Classification::of(ErrorCategory::Timeout),
        },
    );
    clock.advance(60 * SEC);
    let p = guard.try_acquire().unwrap();
    guard.record(p, Outcome::Success { elapsed: SEC });
    use CircuitState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
    let list = registry.list();
    assert_eq!(list.len(), 1);
    assert!(matches!(&list[0], (name, Closed, m) if name == "orders" && m.trips == 1));
}

#[test]
fn registry_uses_per_key_config_and_reuses_breakers() {
    let registry = BreakerRegistry::new(BreakerConfig::default()).unwrap();
    registry
        .configure(
            "fragile",
            cfg().consecutive_failures(Some(1)).build().unwrap(),
        )
        .unwrap();
    let a = registry.get("fragile");
    assert!(Arc::ptr_eq(&a, &registry.get("fragile")));
    a.try_acquire().unwrap().failure();
    assert_eq!(a.state(), CircuitState::Open);
    let sturdy = registry.get("sturdy");
    sturdy.try_acquire().unwrap().failure();
    assert_eq!(sturdy.state(), CircuitState::Closed);
    assert_eq!(registry.names(), ["fragile", "sturdy"]);
    let bad = cfg().build().map(|mut c| {
        c.permitted_calls_in_half_open = 0;
        c
    });
    assert!(registry.configure("x", bad.unwrap()).is_err());
}

#[test]
fn metrics_snapshot_serializes() {
    let (b, clock) = breaker(cfg().consecutive_failures(Some(3)).build().unwrap());
    record(&b, "ssf");
    clock.advance(5 * SEC);
    let m = b.metrics();
    assert_eq!((m.calls, m.failed_calls, m.consecutive_failures), (3, 1, 1));
    assert_eq!(m.time_in_state, 5 * SEC);
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["state"], "closed");
    assert_eq!(json["time_in_state"], "5s");
}

#[test]
fn an_open_breaker_whose_wait_ran_out_is_effectively_half_open() {
    let (b, clock) = breaker(cfg().consecutive_failures(Some(1)).build().unwrap());
    trip(&b);
    assert_eq!(b.effective_state(), CircuitState::Open);
    clock.advance(b.config().wait_in_open);
    // Nothing has called since: the state word still says open ...
    assert_eq!(b.state(), CircuitState::Open);
    // ... but the next call would be admitted as a probe.
    assert_eq!(b.effective_state(), CircuitState::HalfOpen);
    let probe = b.try_acquire().unwrap();
    assert_eq!(b.state(), CircuitState::HalfOpen);
    probe.success();
}
