//! `cargo xtask soak`: the long no-loss fault-injection run (`tests/soak.rs`
//! in release, enabled by `BUS_SOAK=1`).

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
    step("soak", s)
}
