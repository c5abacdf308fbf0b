//! `cargo xtask tidy`: the rules about the sources that no compiler checks,
//! in the manner of rust-analyzer's tidy tests. Each rule is a function from
//! a file's path and text to what it breaks (`rules.rs`), so a unit test can
//! feed it a violating input; this module walks the workspace and runs them,
//! then checks the facade's feature combinations (`features.rs`).

mod features;
mod rules;

use crate::root;
use std::path::{Path, PathBuf};

/// The sources over [`rules::MAX_LINES`] that may stay so, each with why.
/// At most [`rules::MAX_EXCEPTIONS`]; a file that drops under the limit must
/// leave the list (tidy says so), so the list only shrinks.
const LONG_FILES: &[(&str, &str)] = &[
    (
        "crates/bus-core/src/bus/mod.rs",
        "the pipeline's settling code, being moved into one settle module of its own",
    ),
    (
        "crates/bus-core/src/transport.rs",
        "the Transport trait and its types, being reshaped with the settle module",
    ),
    (
        "crates/bus-core/src/memory/queue.rs",
        "the memory queue, whose overflow policy is moving to the core and whose locking to bus-sync",
    ),
    (
        "crates/bus-nats/src/transport.rs",
        "the NATS transport, gaining per-group replay consumers",
    ),
    (
        "crates/bus-nats/src/subscription.rs",
        "the NATS subscription, merging the replay consumer into `next`",
    ),
];

/// `cargo xtask tidy`: every rule over every source, then the feature
/// combinations; fails listing every violation found.
pub(crate) fn tidy(_args: &[String]) -> Result<(), String> {
    eprintln!("==> tidy: file length, crate docs, stray markers");
    let (files, problems) = source_problems(&root())?;
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("    {p}");
        }
        return Err(format!("{} problem(s), listed above", problems.len()));
    }
    eprintln!("    tidy: {files} files ok");
    features::check()
}

/// How many sources under `root` were read, and what they break.
fn source_problems(root: &Path) -> Result<(usize, Vec<String>), String> {
    let mut problems = Vec::new();
    let exceptions: Vec<&str> = LONG_FILES.iter().map(|(p, _)| *p).collect();
    problems.extend(rules::exceptions_list(LONG_FILES));
    let files = rust_files(root);
    for path in &files {
        let rel = relative(root, path);
        let text = std::fs::read_to_string(path).map_err(|e| format!("{rel}: {e}"))?;
        if rules::is_source(&rel) {
            problems.extend(rules::file_length(&rel, &text, &exceptions));
            problems.extend(rules::stray_markers(&rel, &text));
        }
        if rules::is_crate_root(&rel) {
            problems.extend(rules::crate_docs(&rel, &text));
        }
    }
    problems.extend(rules::stale_exceptions(&exceptions, &files, root));
    Ok((files.len(), problems))
}

/// Every `*.rs` under `crates/`, `xtask/` and `tests/`, `target` left out.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    crate::files_under(root, &["crates", "xtask", "tests"], &["rs"])
}

/// `path` relative to the workspace root, with `/` separators.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    /// The source rules hold on the workspace itself, so `cargo test` fails
    /// on a long file or a stray marker as `cargo xtask tidy` does.
    #[test]
    fn the_workspace_is_tidy() {
        let (files, problems) = super::source_problems(&crate::root()).expect("sources read");
        assert!(files > 100, "only {files} sources found");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
