//! The facade's feature combinations: each must build and lint clean, so a
//! feature turned off leaves no item unused (no blanket `allow(unused_*)`
//! needed), and its default docs must link only to what they build. Fixed
//! combinations, not the power set: none, the default, all, and each optional
//! sub-crate alone (the combinations where an item used by only one of them
//! is left unused).

use crate::{cargo, step};

/// `--features` lists for `cargo clippy -p bus --no-default-features`.
pub(super) const COMBINATIONS: [&str; 9] = [
    "",
    "breaker",
    "recovery",
    "dlq",
    "logger",
    "health",
    "console",
    "default",
    "default,signal,nats,sqlite,otel,tokio",
];

/// Lints the facade's library in every combination, then builds its docs
/// with its default features, broken intra-doc links denied: validate's own
/// doc step builds the whole workspace, where busctl turns `signal` on, so a
/// link to an item of a feature off by default would pass there unseen.
pub(super) fn check() -> Result<(), String> {
    for features in COMBINATIONS {
        let mut c = cargo();
        c.args([
            "clippy",
            "--quiet",
            "-p",
            "bus",
            "--lib",
            "--no-default-features",
        ]);
        if !features.is_empty() {
            c.args(["--features", features]);
        }
        c.args(["--", "-D", "warnings"]);
        let shown = if features.is_empty() {
            "none"
        } else {
            features
        };
        step(&format!("tidy: bus with features [{shown}]"), c)?;
    }
    let mut doc = cargo();
    doc.args(["doc", "--quiet", "-p", "bus", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    step("tidy: bus docs with default features", doc)
}

#[cfg(test)]
mod tests {
    use super::COMBINATIONS;

    /// Every feature of the facade is turned on alone or in the last
    /// combination, and no combination names a feature the crate lacks.
    #[test]
    fn the_combinations_name_only_and_every_feature_of_the_facade() {
        let manifest = std::fs::read_to_string(crate::root().join("crates/bus/Cargo.toml"))
            .expect("crates/bus/Cargo.toml");
        let declared: Vec<&str> = manifest
            .lines()
            .skip_while(|l| l.trim() != "[features]")
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| !k.is_empty() && !k.starts_with('#'))
            .collect();
        let named: Vec<&str> = COMBINATIONS
            .iter()
            .flat_map(|c| c.split(','))
            .filter(|f| !f.is_empty())
            .collect();
        for f in &named {
            assert!(declared.contains(f), "{f} is not a feature of bus");
        }
        for f in &declared {
            assert!(
                named.contains(f) || *f == "http",
                "feature {f} is in no combination"
            );
        }
        // Each combination is a clippy run of the facade (about 25 s):
        // the sub-crates alone, the default and all, nothing more.
        assert!(COMBINATIONS.len() <= 9);
    }
}
