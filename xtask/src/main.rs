//! `cargo xtask <task>`: the project's automation, in plain Rust.
//!
//! - `validate`: what CI runs. fmt check, each crate's `rust-version` against
//!   its dependencies', tidy, clippy `-D warnings`, every test (unit, integration,
//!   doctests), `cargo doc` with broken links denied, the CI subset of
//!   `chaos`, and the loom models.
//! - `tidy`: the source rules no compiler checks (file length, crate docs,
//!   stray TODOs, the facade's feature combinations); see `tidy/`.
//! - `bench [--quick]`: the criterion benches, then `target/bench-report.json`
//!   and `docs/benchmarks.md`, judged against `xtask/goals.toml`.
//! - `soak`: the long no-loss fault-injection run.
//! - `loom`: the loom models alone (`validate` runs them last).
//! - `chaos [--ci] [--only NAME]... [--list]`: faults from outside, run as
//!   black boxes against the built `busctl` (see `chaos/`).

mod bench;
mod chaos;
mod docrefs;
mod msrv;
mod report;
mod soak;
mod tidy;
mod validate;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let result = match task {
        "validate" => validate::validate(rest),
        "tidy" => tidy::tidy(rest),
        "bench" => bench::bench(rest),
        "soak" => soak::soak(rest),
        "chaos" => chaos::chaos(rest),
        "loom" => validate::loom(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <validate|tidy|bench [--quick]|soak|chaos [--ci] [--only NAME] [--list]|loom>"
            );
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

/// Every file under the workspace's `dirs` whose extension is one of
/// `extensions`, sorted; `target` directories are left out.
pub(crate) fn files_under(root: &Path, dirs: &[&str], extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    todo.push(p);
                }
            } else if p
                .extension()
                .is_some_and(|x| extensions.iter().any(|e| x == *e))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    /// The tasks `main` runs, with the flags each takes.
    const TASKS: [(&str, &[&str]); 6] = [
        ("validate", &[]),
        ("tidy", &[]),
        ("bench", &["--quick"]),
        ("soak", &[]),
        ("chaos", &["--ci", "--only", "--list"]),
        ("loom", &[]),
    ];

    /// Every `cargo xtask ...` the README, CONTRIBUTING.md and docs/ show
    /// names a task and flags that exist, and CONTRIBUTING.md shows each task.
    #[test]
    fn the_docs_show_only_tasks_and_flags_that_exist() {
        let root = crate::root();
        let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
        let docs = std::fs::read_dir(root.join("docs")).expect("docs/");
        files.extend(docs.flatten().map(|e| e.path()));
        let mut shown = Vec::new();
        for path in files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
        {
            let text = std::fs::read_to_string(path).expect("readable");
            for line in text.lines() {
                let Some((_, after)) = line.split_once("cargo xtask ") else {
                    continue;
                };
                let mut words = after.split(|c: char| c.is_whitespace() || c == '`');
                let task = words.next().unwrap_or_default();
                if task.starts_with('<') {
                    continue; // a placeholder: `cargo xtask <task>`
                }
                let Some((_, flags)) = TASKS.iter().find(|(t, _)| *t == task) else {
                    panic!("{}: `cargo xtask {task}` is no task", path.display());
                };
                for flag in words.take_while(|w| !w.is_empty() && *w != "#") {
                    if flag.starts_with("--") {
                        assert!(
                            flags.contains(&flag),
                            "{}: `cargo xtask {task} {flag}`",
                            path.display()
                        );
                    }
                }
                if path.ends_with("CONTRIBUTING.md") {
                    shown.push(task.to_owned());
                }
            }
        }
        for (task, _) in TASKS {
            assert!(
                shown.iter().any(|s| s == task),
                "CONTRIBUTING.md does not show `cargo xtask {task}`"
            );
        }
    }
}
