use super::*;

#[test]
fn the_goals_file_holds_exactly_the_goals_judged_here() {
    let goals = Goals::load().expect("xtask/goals.toml parses");
    let mut used = USED.to_vec();
    used.sort_unstable();
    assert_eq!(goals.names(), used);
}

/// Results files shaped as the measuring programs write them (the
/// latency bench nests its figures under `variants`) give every line.
#[test]
fn the_measuring_programs_files_give_their_lines_and_verdicts() {
    let goals = Goals::load().expect("xtask/goals.toml parses");
    let parse = |t: &str| serde_json::from_str::<Value>(t).expect("valid JSON");
    let throughput = parse(
        r#"{ "rounds": 45, "1to1/on_raw": { "median": 0.8500, "p25": 0.8000, "p75": 0.9000 },
             "1to4/on_raw": { "median": 0.7500, "p25": 0.7000, "p75": 0.8000 },
             "1to4/on_off": { "median": 0.9000, "p25": 0.8800, "p75": 0.9300 } }"#,
    );
    let latency = parse(
        r#"{ "interval_ns": 20000, "rounds": 9, "messages": 900, "quick": false, "variants": {
             "raw_crossbeam": {"count": 900, "mean_ns": 900, "p50_ns": 800, "p99_ns": 4000, "p999_ns": 9000, "max_ns": 12000},
             "bus_off": {"count": 900, "mean_ns": 1000, "p50_ns": 900, "p99_ns": 5000, "p999_ns": 9000, "max_ns": 12000},
             "bus_on": {"count": 900, "mean_ns": 1100, "p50_ns": 950, "p99_ns": 6000, "p999_ns": 9000, "max_ns": 12000},
             "added_p99_on_raw_ns": {"median": 3000, "p25": 2000, "p75": 4000},
             "added_p99_on_off_ns": {"median": 1000, "p25": 500, "p75": 1500},
             "added_p99_on_raw_worst_round_ns": 9000 } }"#,
    );
    let http = parse(
        r#"{ "idle_clients": 1000, "pipelined": 1000, "samples": 200, "timeouts": 0, "quick": false,
             "p50_ns": 1000000, "p99_ns": 60000000, "max_ns": 70000000, "threads": 4 }"#,
    );
    let rss = parse(
        r#"{ "messages": 1000000, "baseline_peak_kib": 4096, "after_errors_peak_kib": 20480,
             "after_dead_letters_peak_kib": 40960, "dlq_rows": 1000000 }"#,
    );
    let rounds = Rounds {
        breaker: None,
        throughput: Some(throughput),
        dlq: None,
        http: Some(http),
        idle: None,
        nats: None,
        sqlite: None,
        console: None,
        asynchronous: None,
    };
    let ratios = bench_ratios(&goals, &[], &rounds, Some(&latency), Some(&rss)).expect("judged");
    let line = |start: &str| {
        ratios
            .iter()
            .find(|r| r.name.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in {ratios:#?}"))
    };
    let on_raw = line("bus on / raw crossbeam, 1to1");
    assert!(
        on_raw.name.contains("p25-p75 80.0-90.0 %"),
        "{}",
        on_raw.name
    );
    assert_eq!((on_raw.shown.as_str(), on_raw.pass), ("85.0 %", Some(true)));
    assert_eq!(line("bus on / bus off, 1to4").pass, Some(false));
    let fan_out = line("bus on / raw crossbeam, 1to4");
    assert_eq!(
        (fan_out.shown.as_str(), fan_out.pass),
        ("75.0 %", Some(false))
    );
    let added = line("added p99 latency, bus on - raw (median of per-round differences)");
    assert_eq!((added.value, added.pass), (3000.0, Some(true)));
    assert_eq!(
        line("/healthz p99").pass,
        Some(false),
        "60 ms is over the goal"
    );
    assert_eq!(line("peak RSS after 1 M errors").pass, Some(true));
    assert_eq!(line("peak RSS after 1 M dead letters").shown, "40.0 MiB");

    let m = crate::report::Machine::probe(false, String::new(), 1.0);
    let md = crate::report::markdown::bench_markdown(
        &m,
        &[],
        &ratios,
        Some(&latency),
        Some(&rss),
        &crate::report::markdown::Sections::default(),
    );
    assert!(
        md.contains("One message every 20.00 µs, 900 recorded messages"),
        "{md}"
    );
    assert!(
        md.contains("| bus_on | 950 ns | 6.00 µs | 9.00 µs | 12.00 µs | 1.10 µs | 2.00 µs |"),
        "{md}"
    );
    assert!(
        md.contains("| peak RSS after the errors phase | 20.0 MiB |"),
        "{md}"
    );
    assert!(
        md.contains("| letters on disk (SQLite) | 1000000 |"),
        "{md}"
    );
}

#[test]
fn a_missed_goal_is_reported_missed_and_a_figure_without_one_is_not_judged() {
    let goals = Goals::load().expect("xtask/goals.toml parses");
    let idle: Value = serde_json::from_str(
        r#"{"seconds": 3, "subscribers_2": {"percent": 9.0}, "subscribers_1000": {"percent": 2.5}}"#,
    )
    .expect("valid JSON");
    let rounds = Rounds {
        breaker: None,
        throughput: None,
        dlq: None,
        http: None,
        idle: Some(idle),
        nats: None,
        sqlite: None,
        console: None,
        asynchronous: None,
    };
    let ratios = bench_ratios(&goals, &[], &rounds, None, None).expect("every goal there");
    let line = |n: &str| {
        ratios
            .iter()
            .find(|r| r.name.starts_with(&format!("idle CPU, {n} ")))
            .expect("an idle line")
    };
    assert_eq!(line("1000").pass, Some(false));
    assert_eq!(line("1000").goal, "< 1 %");
    assert_eq!(line("2").pass, None);
    assert_eq!(line("2").goal, "-");
}
