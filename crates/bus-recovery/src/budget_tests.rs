use super::*;
use bus_core::time::ManualClock;
use std::sync::Arc;

fn budget(percent: f64, floor_per_sec: u32, window_secs: u64) -> (RetryBudget, ManualClock) {
    let clock = ManualClock::new();
    let cfg = BudgetConfig {
        window: Duration::from_secs(window_secs),
        percent,
        min_retries_per_sec: floor_per_sec,
    };
    (RetryBudget::new(cfg, Arc::new(clock.clone())), clock)
}

fn drain(b: &RetryBudget) -> u64 {
    let mut n = 0;
    while b.try_withdraw() {
        n += 1;
        assert!(n < 1_000_000, "budget never runs out");
    }
    n
}

#[test]
fn with_no_traffic_only_the_floor_is_available() {
    let (b, _clock) = budget(0.2, 10, 10);
    assert_eq!(b.available(), 100);
    assert_eq!(drain(&b), 100);
    assert_eq!(b.available(), 0);
}

#[test]
fn successes_earn_percent_of_a_token_each() {
    let (b, _clock) = budget(0.2, 0, 10);
    for _ in 0..49 {
        b.deposit();
    }
    assert_eq!(drain(&b), 9, "49 * 0.2 = 9.8 tokens: 9 whole retries");
    b.deposit();
    assert_eq!(drain(&b), 1, "the 50th success completes the 10th token");
}

#[test]
fn a_failure_burst_is_held_to_floor_plus_percent_of_successes() {
    let (b, clock) = budget(0.2, 10, 10);
    let mut retries = 0_u64;
    let mut successes = 0_u64;
    for i in 0..10_000_u64 {
        if i % 500 == 0 {
            b.deposit();
            successes += 1;
        }
        if b.try_withdraw() {
            retries += 1;
        }
        clock.advance(Duration::from_micros(100)); // 10k events in 1 s: one window
    }
    assert_eq!(successes, 20);
    assert_eq!(
        retries,
        100 + 20 / 5,
        "floor 10/s * 10 s + 0.2 * 20 successes"
    );
}

#[test]
fn old_deposits_and_withdrawals_leave_the_window() {
    let (b, clock) = budget(1.0, 0, 10);
    for _ in 0..5 {
        b.deposit();
    }
    assert_eq!(b.available(), 5);
    clock.advance(Duration::from_secs(5));
    assert_eq!(b.available(), 5, "still inside the window");
    clock.advance(Duration::from_secs(6));
    assert_eq!(b.available(), 0, "deposits expired");

    let (b, clock) = budget(0.0, 1, 10);
    assert_eq!(drain(&b), 10);
    clock.advance(Duration::from_secs(11));
    assert_eq!(b.available(), 10, "withdrawals expired: the floor is back");
}

#[test]
fn the_window_slides_slot_by_slot() {
    let (b, clock) = budget(1.0, 0, 10);
    b.deposit(); // slot 0
    clock.advance(Duration::from_secs(5));
    b.deposit(); // slot 5
    clock.advance(Duration::from_secs(5)); // now in slot 10: slot 0 fell out
    assert_eq!(b.available(), 1);
    clock.advance(Duration::from_secs(5)); // slot 15: slot 5 fell out
    assert_eq!(b.available(), 0);
}

#[test]
fn concurrent_failures_never_overdraw_the_budget() {
    let (b, _clock) = budget(0.2, 5, 10);
    let b = Arc::new(b);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                let (mut ok, mut deposits) = (0_u64, 0_u64);
                for i in 0..5_000 {
                    if (i + t) % 7 == 0 {
                        b.deposit();
                        deposits += 1;
                    }
                    if b.try_withdraw() {
                        ok += 1;
                    }
                }
                (ok, deposits)
            })
        })
        .collect();
    let (ok, deposits) = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert!(
        ok <= 50 + deposits / 5,
        "{ok} retries for {deposits} successes"
    );
    assert!(ok >= 50, "the floor was available: {ok}");
    assert_eq!(b.available(), 50 + deposits / 5 - ok);
}

#[test]
fn validation_rejects_bad_percent_and_window() {
    let bad = BudgetConfig {
        percent: 1.5,
        ..BudgetConfig::default()
    };
    let err = bad.validate().unwrap_err();
    assert_eq!(err.key(), "percent");
    assert!(err.to_string().contains("1.5"), "{err}");
    let bad = BudgetConfig {
        percent: f64::NAN,
        ..BudgetConfig::default()
    };
    assert!(bad.validate().is_err());
    let bad = BudgetConfig {
        window: Duration::ZERO,
        ..BudgetConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().key(), "window");
    assert!(BudgetConfig::default().validate().is_ok());
}

#[test]
fn a_late_deposit_does_not_erase_the_newer_count_in_its_slot() {
    // A 10 s window: ten 1 s slots. A success stamped in slot 0 of the
    // first window, deposited after the same stripe's slot 0 moved on to
    // the next window, earns nothing and leaves the newer count alone.
    let (b, clock) = budget(1.0, 0, 10);
    let old = bus_core::time::Clock::stamp(&clock);
    clock.advance(Duration::from_secs(10));
    for _ in 0..5 {
        b.deposit();
    }
    b.deposit_at(old);
    assert_eq!(b.available(), 5, "the five successes of this window");
}

#[test]
fn tags_order_epochs_across_their_wrap() {
    let space = (1_u64 << (64 - COUNT_BITS)) - 1;
    let t = RetryBudget::tag;
    assert!(RetryBudget::newer(t(11), t(1)));
    assert!(!RetryBudget::newer(t(1), t(11)));
    assert!(!RetryBudget::newer(t(7), t(7)));
    // Just past the wrap: epoch `space` has tag 1, and is newer than `space - 1`.
    assert!(RetryBudget::newer(t(space), t(space - 1)));
    assert!(
        !RetryBudget::newer(0, t(3)),
        "a slot never written is older"
    );
}
