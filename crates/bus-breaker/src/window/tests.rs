use super::*;

#[test]
fn count_window_folds_clean_successes_before_a_failure() {
    let w = CountWindow::new(10);
    for _ in 0..25 {
        assert!(!w.record(Mark::Success));
    }
    assert_eq!(
        w.counts(),
        Counts {
            calls: 10,
            failures: 0,
            slow: 0
        }
    );
    assert!(w.record(Mark::Failure));
    assert_eq!(
        w.counts(),
        Counts {
            calls: 10,
            failures: 1,
            slow: 0
        }
    );
    // Nine more successes push the failure out: the ring is clean again.
    for _ in 0..9 {
        w.record(Mark::Success);
    }
    assert_eq!(w.counts().failures, 1);
    w.record(Mark::Success);
    assert_eq!(
        w.counts(),
        Counts {
            calls: 10,
            failures: 0,
            slow: 0
        }
    );
}

#[test]
fn time_window_forgets_whole_buckets() {
    let w = TimeWindow::new(Duration::from_secs(10));
    let sec = 1_000_000_000;
    w.record(Mark::Failure, 0);
    w.record(Mark::Success, sec);
    w.record(Mark::SlowSuccess, 5 * sec);
    assert_eq!(
        w.counts(5 * sec),
        Counts {
            calls: 3,
            failures: 1,
            slow: 1
        }
    );
    assert_eq!(
        w.counts(10 * sec),
        Counts {
            calls: 2,
            failures: 0,
            slow: 1
        }
    );
    assert_eq!(w.counts(16 * sec), Counts::default());
}
