//! Every `*.md` file the docs and the code name is in the repository: a
//! reference to a document that is not there sends the reader nowhere.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The files to read: README.md, and every Markdown file under docs/
    /// and every source, manifest and Markdown file under crates/ and xtask/.
    fn sources(root: &Path) -> Vec<PathBuf> {
        let mut out = vec![root.join("README.md")];
        out.extend(crate::files_under(
            root,
            &["docs", "crates", "xtask"],
            &["rs", "md", "toml"],
        ));
        out
    }

    /// The `name.md` tokens of `text` (letters, digits, `_ - . /`).
    fn md_names(text: &str) -> Vec<&str> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "_-./".contains(c);
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find(".md") {
            let after = &rest[i + 3..];
            let start = rest[..i].rfind(|c: char| !ok(c)).map_or(0, |s| s + 1);
            if !after.starts_with(|c: char| c.is_ascii_alphanumeric()) && start < i {
                names.push(&rest[start..i + 3]);
            }
            rest = after;
        }
        names
    }

    #[test]
    fn md_names_reads_paths_and_skips_other_words() {
        assert_eq!(
            md_names("see docs/tuning.md, (STYLE.md) and x.mdx; ../../README.md"),
            ["docs/tuning.md", "STYLE.md", "../../README.md"]
        );
    }

    #[test]
    fn every_document_named_in_the_docs_and_code_exists() {
        let root = crate::root();
        let mut missing = Vec::new();
        // This file's own examples are not references.
        for file in sources(&root)
            .into_iter()
            .filter(|f| !f.ends_with("xtask/src/docrefs.rs"))
        {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let dir = file.parent().unwrap_or(&root);
            for name in md_names(&text) {
                let from_root = name.trim_start_matches(['/', '.']);
                if !dir.join(name).exists() && !root.join(from_root).exists() {
                    let shown = file.strip_prefix(&root).unwrap_or(&file);
                    missing.push(format!("{} names {name}", shown.display()));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "missing documents:\n{}",
            missing.join("\n")
        );
    }
}
