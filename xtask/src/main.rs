//! `cargo xtask <task>`: the project's automation, in plain Rust.
//!
//! - `validate`: what CI runs. fmt check, clippy `-D warnings`, every test
//!   (unit, integration, doctests), `cargo doc` with broken links denied, and
//!   the loom models.
//! - `bench [--quick]`: the criterion benches, then `target/bench-report.json`.
//! - `soak`: the long no-loss fault-injection run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let result = match task {
        "validate" => validate(rest),
        "bench" => bench(rest),
        "soak" => soak(rest),
        _ => {
            eprintln!("usage: cargo xtask <validate|bench [--quick]|soak>");
            return if task == "help" || task == "--help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a step, printing its name and duration; fails on a non-zero status.
fn step(name: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("==> {name}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    eprintln!(
        "    {name}: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("step `{name}` failed ({status})"))
    }
}

fn validate(_args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    step("fmt --check", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("clippy -D warnings", clippy)?;

    let mut test = cargo();
    test.args(["test", "--workspace", "--all-targets"]);
    step("tests", test)?;

    let mut doctest = cargo();
    doctest.args(["test", "--workspace", "--doc"]);
    step("doctests", doctest)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    step("doc (broken links denied)", doc)?;

    if root().join("crates/bus-breaker/tests/loom.rs").exists() {
        let mut loom = cargo();
        loom.args(["test", "-p", "bus-breaker", "--release", "--test", "loom"])
            .env("RUSTFLAGS", "--cfg bus_loom")
            .env("CARGO_TARGET_DIR", root().join("target/loom"));
        step("loom models", loom)?;
    }
    eprintln!(
        "validate: all steps passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut b = cargo();
    b.args(["bench", "--workspace"]);
    if quick {
        b.args([
            "--",
            "--quick",
            "--warm-up-time",
            "0.2",
            "--measurement-time",
            "0.5",
        ]);
    }
    step("criterion benches", b)
}

fn soak(_args: &[String]) -> Result<(), String> {
    let mut s = cargo();
    s.args([
        "test",
        "--release",
        "-p",
        "bus",
        "--test",
        "soak",
        "--",
        "--nocapture",
    ])
    .env("BUS_SOAK", "1");
    step("soak", s)
}
