//! `cargo xtask validate`: what CI runs, step by step, stopping at the first
//! failure.

use crate::{cargo, chaos, msrv, root, step, tidy};
use std::time::Instant;

pub(crate) fn validate(_args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    step("fmt --check", fmt)?;

    eprintln!("==> rust-version");
    msrv::check(cargo())?;
    eprintln!("    rust-version: ok");

    // Before clippy and the tests: it reads sources and checks the facade's
    // feature combinations, so a long file or a broken combination fails in
    // a minute, not after the whole test run.
    tidy::tidy(&[])?;

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

    // Unit, integration, example and doc tests in one build (benches are
    // compiled by clippy above and run by `cargo xtask bench`).
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    step("tests and doctests", test)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    step("doc (broken links denied)", doc)?;

    // Faults from outside, against the built busctl (needs root: it mounts
    // a tmpfs and drops to `nobody` for limits root ignores).
    chaos::chaos(&["--ci".to_owned()])?;

    loom(&[])?;
    eprintln!(
        "validate: all steps passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The crates with loom models (`tests/loom.rs`, compiled only under
/// `--cfg bus_loom`). Each model sets its own preemption bound; all of them
/// together stay under 3 minutes on a 2-core machine once `target/loom` is
/// built.
const LOOM_CRATES: [&str; 2] = ["bus-sync", "bus-breaker"];

/// `cargo xtask loom`: every loom model, in release (loom explores
/// thousands of executions) and in a target dir of its own (the cfg changes
/// every crate's build).
pub(crate) fn loom(_args: &[String]) -> Result<(), String> {
    let mut loom = cargo();
    loom.args(["test", "--release"]);
    for krate in LOOM_CRATES {
        loom.args(["-p", krate]);
    }
    loom.args(["--test", "loom"])
        .env("RUSTFLAGS", "--cfg bus_loom")
        .env("CARGO_TARGET_DIR", root().join("target/loom"));
    step("loom models", loom)
}
