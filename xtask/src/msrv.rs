//! `rust-version` check: every workspace crate declares at least the
//! `rust-version` of everything it builds with. Cargo only enforces a
//! declaration against the running toolchain, so a crate can claim 1.85 and
//! still pull in a dependency that needs 1.89; a user on 1.85 then gets a
//! build error instead of the resolver's clear refusal.
//!
//! Reads `cargo metadata --format-version 1` (every package there carries
//! `rust_version`) and walks each member's normal and build dependencies
//! through the resolved graph. Dev-dependencies are left out: they build
//! tests, not the crate its users get.

use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// A `rust-version` as (major, minor, patch); `"1.89"` is `(1, 89, 0)`.
type Version = (u64, u64, u64);

fn parse(v: &str) -> Option<Version> {
    let mut parts = v.split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

fn show((major, minor, patch): Version) -> String {
    if patch == 0 {
        format!("{major}.{minor}")
    } else {
        format!("{major}.{minor}.{patch}")
    }
}

/// One member that declares less than a dependency needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Shortfall {
    pub(crate) member: String,
    /// `None`: the member declares no `rust-version` at all.
    pub(crate) declared: Option<String>,
    pub(crate) needed: String,
    /// The dependency that needs it, and the path to it from the member.
    pub(crate) path: Vec<String>,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} declares rust-version {} but needs {} for {}",
            self.member,
            self.declared.as_deref().unwrap_or("(none)"),
            self.needed,
            self.path.join(" -> ")
        )
    }
}

/// Every workspace member whose `rust-version` is below the highest one
/// among its normal and build dependencies, direct or not.
pub(crate) fn shortfalls(metadata: &Value) -> Result<Vec<Shortfall>, String> {
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata: no `packages`")?;
    let mut name = BTreeMap::new();
    let mut version = BTreeMap::new();
    for p in packages {
        let id = p["id"]
            .as_str()
            .ok_or("cargo metadata: a package without id")?;
        name.insert(id, p["name"].as_str().unwrap_or(id));
        if let Some(v) = p["rust_version"].as_str() {
            let parsed = parse(v).ok_or_else(|| format!("{id}: bad rust_version {v:?}"))?;
            version.insert(id, parsed);
        }
    }
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata: no `resolve` (was --no-deps given?)")?;
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in nodes {
        let id = n["id"]
            .as_str()
            .ok_or("cargo metadata: a node without id")?;
        let built_with = n["deps"].as_array().into_iter().flatten().filter(|d| {
            d["dep_kinds"].as_array().into_iter().flatten().any(|k| {
                // `null` is a normal dependency.
                matches!(k["kind"].as_str(), None | Some("build"))
            })
        });
        deps.insert(id, built_with.filter_map(|d| d["pkg"].as_str()).collect());
    }
    let members = metadata["workspace_members"]
        .as_array()
        .ok_or("cargo metadata: no `workspace_members`")?;
    let mut out = Vec::new();
    for m in members.iter().filter_map(Value::as_str) {
        // Depth-first over what the member builds with, keeping the path to
        // the dependency with the highest requirement.
        let mut seen = HashSet::from([m]);
        let mut stack = vec![vec![m]];
        let mut highest: Option<(Version, Vec<&str>)> = None;
        while let Some(path) = stack.pop() {
            let Some(&last) = path.last() else { continue };
            for &d in deps.get(last).into_iter().flatten() {
                if !seen.insert(d) {
                    continue;
                }
                let mut p = path.clone();
                p.push(d);
                if let Some(&v) = version.get(d) {
                    if highest.as_ref().is_none_or(|(h, _)| v > *h) {
                        highest = Some((v, p.clone()));
                    }
                }
                stack.push(p);
            }
        }
        let Some((needed, path)) = highest else {
            continue;
        };
        let declared = version.get(m).copied();
        if declared.is_none_or(|v| v < needed) {
            out.push(Shortfall {
                member: name[m].to_owned(),
                declared: declared.map(show),
                needed: show(needed),
                path: path[1..].iter().map(|id| name[id].to_owned()).collect(),
            });
        }
    }
    Ok(out)
}

/// Runs `cargo metadata` on the workspace and fails with every shortfall.
pub(crate) fn check(mut cargo: std::process::Command) -> Result<(), String> {
    let out = cargo
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .map_err(|e| format!("cargo metadata: could not start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let metadata: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let short = shortfalls(&metadata)?;
    if short.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = short.iter().map(ToString::to_string).collect();
    Err(format!("rust-version too low:\n  {}", lines.join("\n  ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(packages: &[(&str, Option<&str>)], edges: &[(&str, &str, Option<&str>)]) -> Value {
        let nodes: Vec<Value> = packages
            .iter()
            .map(|(id, _)| {
                let deps: Vec<Value> = edges
                    .iter()
                    .filter(|(from, _, _)| from == id)
                    .map(|(_, to, kind)| json!({"pkg": to, "dep_kinds": [{"kind": kind}]}))
                    .collect();
                json!({"id": id, "deps": deps})
            })
            .collect();
        json!({
            "packages": packages.iter().map(|(id, v)| json!({"id": id, "name": id, "rust_version": v})).collect::<Vec<_>>(),
            "workspace_members": ["cli", "lib"],
            "resolve": {"nodes": nodes},
        })
    }

    #[test]
    fn a_member_below_an_indirect_dependency_is_named_with_the_path() {
        let m = metadata(
            &[
                ("cli", Some("1.85")),
                ("lib", Some("1.89")),
                ("nats", Some("1.89.0")),
                ("serde", Some("1.61")),
            ],
            &[
                ("cli", "lib", None),
                ("lib", "nats", None),
                ("lib", "serde", None),
            ],
        );
        let s = shortfalls(&m).unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            s[0].to_string(),
            "cli declares rust-version 1.85 but needs 1.89 for lib"
        );
    }

    #[test]
    fn dev_dependencies_do_not_count_and_build_dependencies_do() {
        let m = metadata(
            &[
                ("cli", Some("1.85")),
                ("lib", Some("1.85")),
                ("bench", Some("1.90")),
                ("cc", Some("1.88")),
            ],
            &[("cli", "bench", Some("dev")), ("lib", "cc", Some("build"))],
        );
        let s = shortfalls(&m).unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            (s[0].member.as_str(), s[0].needed.as_str()),
            ("lib", "1.88")
        );
    }

    #[test]
    fn a_member_without_rust_version_is_a_shortfall_when_a_dependency_has_one() {
        let m = metadata(
            &[("cli", None), ("lib", Some("1.85")), ("x", Some("1.70"))],
            &[("cli", "x", None)],
        );
        let s = shortfalls(&m).unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].declared, None);
    }

    /// The workspace itself: what `cargo xtask validate` checks, also run
    /// by `cargo test`.
    #[test]
    fn every_workspace_crate_declares_what_its_dependencies_need() {
        check(crate::cargo()).unwrap();
    }
}
