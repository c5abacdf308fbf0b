use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Random but valid backoffs: properties must hold for every one of them.
fn configs(rng: &mut fastrand::Rng, n: usize) -> Vec<Backoff> {
    (0..n)
        .map(|_| {
            let base = ms(rng.u64(0..5_000));
            let cap = base + ms(rng.u64(0..60_000));
            match rng.u8(0..3) {
                0 => Backoff::constant(base),
                1 => Backoff::linear(base, ms(rng.u64(0..3_000)), cap),
                _ => Backoff::exponential(base, 1.0 + rng.f64() * 3.0, cap),
            }
        })
        .collect()
}

#[test]
fn curves_follow_their_formula_and_stop_at_the_cap() {
    let mut rng = fastrand::Rng::with_seed(1);
    let c = Backoff::constant(ms(500));
    let l = Backoff::linear(ms(100), ms(250), ms(800));
    let e = Backoff::exponential(ms(1_500), 2.0, ms(10_000));
    let got = |b: Backoff, rng: &mut fastrand::Rng| -> Vec<Duration> {
        (0..5).map(|i| b.delay(i, None, rng)).collect()
    };
    assert_eq!(got(c, &mut rng), [500, 500, 500, 500, 500].map(ms));
    assert_eq!(got(l, &mut rng), [100, 350, 600, 800, 800].map(ms));
    assert_eq!(
        got(e, &mut rng),
        [1_500, 3_000, 6_000, 10_000, 10_000].map(ms)
    );
}

#[test]
fn exponential_never_overflows_on_huge_indices() {
    let e = Backoff::exponential(ms(1), 10.0, Duration::from_secs(3600));
    assert_eq!(e.nominal(u32::MAX), Duration::from_secs(3600));
    let l = Backoff::linear(ms(1), Duration::from_secs(u64::MAX / 2), ms(5));
    assert_eq!(l.nominal(u32::MAX), ms(5));
}

#[test]
fn full_jitter_stays_within_zero_and_the_nominal_delay() {
    let mut cfg_rng = fastrand::Rng::with_seed(11);
    for b in configs(&mut cfg_rng, 200) {
        let b = b.with_jitter(Jitter::Full);
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            for i in 0..8 {
                let d = b.delay(i, None, &mut rng);
                assert!(d <= b.nominal(i), "{b:?} retry {i}: {d:?}");
            }
        }
    }
}

#[test]
fn equal_jitter_stays_within_half_and_the_whole_delay() {
    let mut cfg_rng = fastrand::Rng::with_seed(12);
    for b in configs(&mut cfg_rng, 200) {
        let b = b.with_jitter(Jitter::Equal);
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            for i in 0..8 {
                let (d, n) = (b.delay(i, None, &mut rng), b.nominal(i));
                assert!(n / 2 <= d && d <= n, "{b:?} retry {i}: {d:?} vs {n:?}");
            }
        }
    }
}

#[test]
fn decorrelated_jitter_stays_within_base_and_cap_and_at_most_triples() {
    let mut cfg_rng = fastrand::Rng::with_seed(13);
    for b in configs(&mut cfg_rng, 200) {
        let b = b.with_jitter(Jitter::Decorrelated);
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut prev = b.base();
            for d in b.schedule(&mut rng).take(10) {
                assert!(b.base() <= d && d <= b.cap(), "{b:?}: {d:?}");
                assert!(d <= prev * 3 || d == b.base(), "{b:?}: {prev:?} -> {d:?}");
                prev = d;
            }
        }
    }
}

#[test]
fn jitter_actually_varies_the_delay() {
    let b = Backoff::exponential(Duration::from_secs(2), 2.0, Duration::from_secs(60));
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        let b = b.with_jitter(jitter);
        let mut rng = fastrand::Rng::with_seed(5);
        let mut seen: Vec<Duration> = (0..50).map(|_| b.delay(1, None, &mut rng)).collect();
        seen.sort();
        seen.dedup();
        assert!(
            seen.len() > 40,
            "{jitter:?} produced only {} values",
            seen.len()
        );
    }
}

#[test]
fn a_seed_fixes_the_schedule() {
    let b = Backoff::exponential(ms(100), 2.0, ms(5_000)).with_jitter(Jitter::Decorrelated);
    let a: Vec<_> = b
        .schedule(&mut fastrand::Rng::with_seed(42))
        .take(10)
        .collect();
    let again: Vec<_> = b
        .schedule(&mut fastrand::Rng::with_seed(42))
        .take(10)
        .collect();
    let other: Vec<_> = b
        .schedule(&mut fastrand::Rng::with_seed(43))
        .take(10)
        .collect();
    assert_eq!(a, again);
    assert_ne!(a, other);
}

#[test]
fn validation_names_the_bad_key_and_value() {
    let bad_factor = Backoff::exponential(ms(1), 0.5, ms(10));
    let err = bad_factor.validate().unwrap_err();
    assert_eq!(err.key(), "factor");
    assert!(err.to_string().contains("0.5"), "{err}");
    assert!(
        Backoff::exponential(ms(1), f64::NAN, ms(10))
            .validate()
            .is_err()
    );
    let err = Backoff::linear(ms(10), ms(1), ms(5))
        .validate()
        .unwrap_err();
    assert_eq!(err.key(), "cap");
    let err = Backoff::exponential(ms(10), 2.0, ms(5))
        .validate()
        .unwrap_err();
    assert_eq!(err.key(), "cap");
    assert!(Backoff::exponential(ms(1), 1.0, ms(1)).validate().is_ok());
}

#[test]
fn deserializes_from_json_with_humantime_durations() {
    let b: Backoff = serde_json::from_str(
        r#"{"kind":"exponential","base":"2s","factor":2.0,"cap":"1m","jitter":"full"}"#,
    )
    .unwrap();
    assert_eq!(
        b,
        Backoff::exponential(Duration::from_secs(2), 2.0, Duration::from_secs(60))
            .with_jitter(Jitter::Full)
    );
    let c: Backoff = serde_json::from_str(r#"{"kind":"constant","delay":"500ms"}"#).unwrap();
    assert_eq!(c, Backoff::constant(ms(500)));
}
