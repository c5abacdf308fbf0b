//! The tidy rules, each a pure function over a file's workspace-relative
//! path and text, returning what the file breaks.

use std::path::{Path, PathBuf};

/// The longest a source file may be: past it, a reader loses the file's shape.
pub(super) const MAX_LINES: usize = 500;

/// The most files [`MAX_LINES`] may name as exceptions.
pub(super) const MAX_EXCEPTIONS: usize = 5;

/// Whether the length and marker rules read `rel`: Rust sources, except test
/// code (`tests/` directories, `tests.rs` modules), benches, and generated
/// tables (a file whose first line says `@generated`).
pub(super) fn is_source(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    rel.ends_with(".rs")
        && !parts[..parts.len() - 1]
            .iter()
            .any(|d| *d == "tests" || *d == "benches")
        && parts.last() != Some(&"tests.rs")
}

/// Whether `rel` is a crate's root: `src/lib.rs` or `src/main.rs` of a
/// workspace member.
pub(super) fn is_crate_root(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    matches!(
        parts.as_slice(),
        ["crates", _, "src", "lib.rs" | "main.rs"] | ["xtask", "src", "main.rs"]
    )
}

/// A source over [`MAX_LINES`] lines that is not an exception.
pub(super) fn file_length(rel: &str, text: &str, exceptions: &[&str]) -> Option<String> {
    if text
        .lines()
        .next()
        .is_some_and(|l| l.contains("@generated"))
    {
        return None;
    }
    let n = text.lines().count();
    (n > MAX_LINES && !exceptions.contains(&rel)).then(|| {
        format!(
            "{rel}: {n} lines, over {MAX_LINES}: split it by what its parts do \
             (or name it in LONG_FILES in xtask/src/tidy/mod.rs, with why)"
        )
    })
}

/// The exceptions list itself: not too long, each entry with a reason.
pub(super) fn exceptions_list(list: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    if list.len() > MAX_EXCEPTIONS {
        out.push(format!(
            "LONG_FILES names {} files, at most {MAX_EXCEPTIONS} may be",
            list.len()
        ));
    }
    for (path, why) in list {
        if why.trim().is_empty() {
            out.push(format!("LONG_FILES: {path} has no reason"));
        }
    }
    out
}

/// An exception that is no longer needed: gone, or back under the limit.
pub(super) fn stale_exceptions(exceptions: &[&str], files: &[PathBuf], root: &Path) -> Vec<String> {
    exceptions
        .iter()
        .filter_map(|rel| {
            let path = root.join(rel);
            let lines = files
                .contains(&path)
                .then(|| std::fs::read_to_string(&path).ok())
                .flatten()
                .map(|t| t.lines().count());
            match lines {
                None => Some(format!("LONG_FILES names {rel}, which is not there")),
                Some(n) if n <= MAX_LINES => Some(format!(
                    "{rel}: {n} lines, under {MAX_LINES} now: remove it from LONG_FILES"
                )),
                Some(_) => None,
            }
        })
        .collect()
}

/// A crate root without crate docs, or a library root without
/// `#![warn(missing_docs)]`.
pub(super) fn crate_docs(rel: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    // The docs open the file: only inner attributes and blank lines before them.
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("#!["));
    if !first.is_some_and(|l| l.starts_with("//!")) {
        out.push(format!("{rel}: no crate docs (`//!`) at the top"));
    }
    let attr = ["#![warn(", "missing_docs)]"].concat();
    if rel.ends_with("lib.rs") && !text.lines().any(|l| l.trim() == attr) {
        out.push(format!("{rel}: a library crate without `{attr}`"));
    }
    out
}

/// Left-behind markers in non-test code: unfinished-work notes, debug
/// prints, and placeholder macros. A file's test module (a column-0
/// `mod` under `#[cfg(test)]`, to the end of the file) may keep them.
pub(super) fn stray_markers(rel: &str, text: &str) -> Vec<String> {
    // Spelled in pieces so this file does not flag itself.
    let words = [["TO", "DO"].concat(), ["FIX", "ME"].concat(), "X".repeat(3)];
    let macros = [
        ["dbg", "!("].concat(),
        ["todo", "!("].concat(),
        ["unimplemented", "!("].concat(),
    ];
    let mut out = Vec::new();
    let mut after_test_cfg = false;
    for (i, line) in text.lines().enumerate() {
        if after_test_cfg && line.starts_with("mod ") {
            break;
        }
        after_test_cfg = line.starts_with("#[cfg(test)]") || line.starts_with("#[cfg(all(test");
        let word_hit = line
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| words.iter().any(|m| m == w));
        let macro_hit = macros.iter().find(|m| {
            line.match_indices(m.as_str()).any(|(at, _)| {
                !line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        });
        if let Some(hit) = word_hit.or(macro_hit.map(String::as_str)) {
            out.push(format!("{rel}:{}: stray `{hit}` in non-test code", i + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_source_is_reported_unless_excepted_or_generated() {
        let long = "fn f() {}\n".repeat(MAX_LINES + 1);
        let hit = file_length("crates/a/src/big.rs", &long, &[]).expect("reported");
        assert!(hit.contains("501 lines"), "{hit}");
        assert!(file_length("crates/a/src/big.rs", &long, &["crates/a/src/big.rs"]).is_none());
        let generated = format!("// @generated by a script\n{long}");
        assert!(file_length("crates/a/src/table.rs", &generated, &[]).is_none());
        let fits = "fn f() {}\n".repeat(MAX_LINES);
        assert!(file_length("crates/a/src/ok.rs", &fits, &[]).is_none());
    }

    #[test]
    fn tests_and_benches_are_not_sources_for_the_length_rule() {
        assert!(is_source("crates/a/src/lib.rs"));
        assert!(is_source("crates/a/examples/demo.rs"));
        assert!(!is_source("crates/a/tests/pipeline.rs"));
        assert!(!is_source("crates/a/src/memory/tests.rs"));
        assert!(!is_source("crates/a/benches/b.rs"));
        assert!(!is_source("crates/a/notes.txt"));
    }

    #[test]
    fn too_many_exceptions_or_one_without_reason_is_reported() {
        let six: Vec<(&str, &str)> = (0..=MAX_EXCEPTIONS).map(|_| ("a.rs", "why")).collect();
        assert_eq!(exceptions_list(&six).len(), 1);
        assert_eq!(exceptions_list(&[("a.rs", " ")]).len(), 1);
        assert!(exceptions_list(&[("a.rs", "why")]).is_empty());
    }

    #[test]
    fn a_stale_exception_is_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let short = dir.join("short.rs");
        std::fs::write(&short, "fn f() {}\n").expect("write");
        let found = stale_exceptions(&["short.rs", "gone.rs"], &[short], &dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("under 500"), "{found:?}");
        assert!(found[1].contains("not there"), "{found:?}");
    }

    #[test]
    fn a_crate_root_without_docs_or_missing_docs_lint_is_reported() {
        let good = "//! A crate.\n\n#![warn(missing_docs)]\n\npub fn f() {}\n";
        assert!(crate_docs("crates/a/src/lib.rs", good).is_empty());
        let undocumented = "#![warn(missing_docs)]\n\npub fn f() {}\n";
        assert_eq!(crate_docs("crates/a/src/lib.rs", undocumented).len(), 1);
        let unlinted = "//! A crate.\npub fn f() {}\n";
        let found = crate_docs("crates/a/src/lib.rs", unlinted);
        assert!(found[0].contains("missing_docs"), "{found:?}");
        // A binary needs docs, not the lint.
        assert!(crate_docs("crates/a/src/main.rs", unlinted).is_empty());
        assert!(is_crate_root("crates/a/src/lib.rs") && is_crate_root("xtask/src/main.rs"));
        assert!(!is_crate_root("crates/a/src/other.rs"));
    }

    #[test]
    fn stray_markers_are_reported_outside_tests_only() {
        // The markers are spelled in pieces so this file holds none itself.
        let todo_call = concat!("to", "do!()");
        let unimplemented_call = concat!("unimple", "mented!()");
        for bad in [
            format!("// {}: later", concat!("TO", "DO")),
            format!("// {}", concat!("FIX", "ME")),
            format!("let x = 1; // {}", concat!("X", "XX")),
            format!("let y = {}(x);", concat!("db", "g!")),
            format!("fn f() {{ {todo_call} }}"),
            format!("fn g() {{ {unimplemented_call} }}"),
        ] {
            let found = stray_markers("crates/a/src/lib.rs", &format!("fn a() {{}}\n{bad}\n"));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert!(found[0].starts_with("crates/a/src/lib.rs:2:"), "{found:?}");
        }
        for fine in [
            "// TODOS and XXXX are other words",
            "let t = mktemp(\"fileXXXXXX\");",
            "my_dbg!(x);",
        ] {
            assert!(stray_markers("a.rs", fine).is_empty(), "{fine}");
        }
        let in_tests =
            format!("fn a() {{}}\n#[cfg(test)]\nmod tests {{ fn t() {{ {todo_call} }} }}\n");
        assert!(stray_markers("a.rs", &in_tests).is_empty());
        let test_item_then_code = format!("#[cfg(test)]\nstruct Gate;\nfn b() {{ {todo_call} }}\n");
        assert_eq!(stray_markers("a.rs", &test_item_then_code).len(), 1);
    }
}
