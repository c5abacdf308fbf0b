//! `cargo xtask soak`: the long no-loss fault-injection run (`tests/soak.rs`
//! in release, enabled by `BUS_SOAK=1`), then bus-sqlite's long runs: the
//! crash harness with 200 kills, a million messages through one file
//! whose size must stay bounded, and 10 million messages left pending
//! against a 100 MiB RSS limit.

use crate::{cargo, step};

pub(crate) fn soak(_args: &[String]) -> Result<(), String> {
    let mut s = cargo();
    s.args([
        "test",
        "--release",
        "-p",
        "bus-tests",
        "--test",
        "soak",
        "--",
        "--nocapture",
    ])
    .env("BUS_SOAK", "1");
    step("soak", s)?;
    let mut crash = cargo();
    crash
        .args(["test", "--release", "-p", "bus-sqlite", "--test", "crash"])
        .env("BUS_SQLITE_CRASH_KILLS", "200");
    step("soak: bus-sqlite crash harness, 200 kills", crash)?;
    let mut steady = cargo();
    steady
        .args([
            "test",
            "--release",
            "-p",
            "bus-sqlite",
            "--test",
            "steady_size",
        ])
        .env("BUS_SQLITE_STEADY", "50x20000");
    step(
        "soak: bus-sqlite file size under a steady load, 50 x 20 000",
        steady,
    )?;
    let mut pending = cargo();
    pending
        .args([
            "test",
            "--release",
            "-p",
            "bus-sqlite",
            "--test",
            "pending_rss",
        ])
        .env("BUS_SQLITE_PENDING", "10000000");
    step(
        "soak: bus-sqlite, 10 million messages pending, RSS < 100 MiB",
        pending,
    )
}
