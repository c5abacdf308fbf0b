use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn deadlines(default: Option<Duration>, cap: Duration, shrink_after: u32) -> AdaptiveDeadlines {
    let config = DeadlineConfig {
        default,
        factor: 1.5,
        cap,
        shrink_after,
    };
    config.validate().unwrap();
    AdaptiveDeadlines::new(config, HashMap::from([("slow".to_owned(), secs(4.0))]))
}

#[test]
fn each_timeout_grows_the_deadline_by_half_up_to_the_cap() {
    let d = deadlines(Some(secs(2.0)), secs(6.0), 10);
    assert_eq!(d.deadline("a"), Some(secs(2.0)));
    let grown: Vec<_> = (0..4).map(|_| d.on_timeout("a")).collect();
    assert_eq!(
        grown,
        [
            Some(secs(3.0)),
            Some(secs(4.5)),
            Some(secs(6.0)),
            Some(secs(6.0))
        ]
    );
    assert_eq!(d.deadline("a"), Some(secs(6.0)));
    assert_eq!(
        d.deadline("b"),
        Some(secs(2.0)),
        "other components untouched"
    );
}

#[test]
fn successes_shrink_it_back_step_by_step_to_the_base() {
    let d = deadlines(Some(secs(2.0)), secs(60.0), 3);
    d.on_timeout("a");
    d.on_timeout("a");
    assert_eq!(d.deadline("a"), Some(secs(4.5)));
    let mut seen = Vec::new();
    for _ in 0..12 {
        d.on_success("a");
        seen.push(d.deadline("a").unwrap());
    }
    let expect = [4.5, 4.5, 3.0, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0].map(secs);
    assert_eq!(seen, expect);
}

#[test]
fn a_timeout_resets_the_success_streak() {
    let d = deadlines(Some(secs(2.0)), secs(60.0), 3);
    d.on_timeout("a"); // 3 s
    d.on_success("a");
    d.on_success("a");
    d.on_timeout("a"); // 4.5 s, streak reset
    d.on_success("a");
    d.on_success("a");
    assert_eq!(d.deadline("a"), Some(secs(4.5)));
    d.on_success("a");
    assert_eq!(d.deadline("a"), Some(secs(3.0)));
}

#[test]
fn component_bases_beat_the_default_and_a_timeout_never_invents_one() {
    let d = deadlines(None, secs(60.0), 10);
    assert_eq!(d.deadline("slow"), Some(secs(4.0)));
    assert_eq!(d.deadline("fresh"), None, "no default: no deadline");
    assert_eq!(d.on_timeout("slow"), Some(secs(6.0)));
    // A timeout error returned fast (as one from a client library can be)
    // must not become the deadline the handler is then held to.
    assert_eq!(d.on_timeout("fresh"), None);
    assert_eq!(d.deadline("fresh"), None);
    let with_default = deadlines(Some(secs(2.0)), secs(60.0), 10);
    assert_eq!(
        with_default.on_timeout("fresh"),
        Some(secs(3.0)),
        "grows from the default"
    );
}

#[test]
fn concurrent_timeouts_and_successes_stay_within_base_and_cap() {
    let d = Arc::new(deadlines(Some(secs(1.0)), secs(30.0), 2));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let d = Arc::clone(&d);
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    let name = ["a", "b", "c"][(i + t) % 3];
                    if (i + t) % 5 == 0 {
                        d.on_timeout(name);
                    } else {
                        d.on_success(name);
                    }
                    let now = d.deadline(name).unwrap();
                    assert!(secs(1.0) <= now && now <= secs(30.0), "{now:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for _ in 0..200 {
        for name in ["a", "b", "c"] {
            d.on_success(name);
        }
    }
    for name in ["a", "b", "c"] {
        assert_eq!(d.deadline(name), Some(secs(1.0)), "{name} shrank back");
    }
}

#[test]
fn validation_names_the_bad_key() {
    let bad = DeadlineConfig {
        factor: 0.9,
        ..DeadlineConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().key(), "factor");
    let bad = DeadlineConfig {
        default: Some(secs(120.0)),
        ..DeadlineConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().key(), "cap");
    let bad = DeadlineConfig {
        shrink_after: 0,
        ..DeadlineConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().key(), "shrink_after");
}
