//! Every `curl` line docs/console.md shows runs against a live
//! `busctl console`, and succeeds (or prints the status its comment says).
#![allow(clippy::unwrap_used)]

use bus::dlq::{DlqConfig, DlqQuery, Filter, SqliteDlq};
use bus::errors::{Classification, ErrorCategory, ErrorReport};
use bus::plug::{DeadLetter, DeadLetterReason, DeadLetterStore};
use bus::{Envelope, Topic};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const TOKEN: &str = "docs-example-operator-token";

#[test]
fn the_console_guide_curl_examples_run() {
    let dir = tempfile::tempdir().unwrap();
    let (signature, id) = {
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
        for i in 0..3 {
            let env = Envelope::new(
                Topic::new("orders.created").unwrap(),
                format!("{{\"n\":{i}}}"),
            );
            let report = ErrorReport::new(
                Classification::of(ErrorCategory::Serialization),
                "billing",
                "bad json",
            );
            dlq.push(&DeadLetter::new(
                env,
                report,
                DeadLetterReason::NotRetryable,
                "billing",
                "billing",
            ))
            .unwrap();
        }
        let g = dlq.groups(&Filter::all()).unwrap();
        let id = dlq.list(&Filter::all()).unwrap()[0].id;
        dlq.close();
        (g[0].signature.clone(), id.to_string())
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_busctl"))
        .args([
            "console",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ])
        .env("BUS_CONSOLE_TOKEN", TOKEN)
        .env_remove("BUS_CONSOLE_TOKEN_FILE")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let console = line
        .strip_prefix("console: ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .trim_end_matches('/')
        .to_owned();

    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/console.md"
    ))
    .unwrap();
    let mut in_sh = false;
    let mut ran = 0;
    for l in guide.lines() {
        if l.starts_with("```") {
            in_sh = l == "```sh";
            continue;
        }
        if !in_sh || !l.starts_with("curl ") {
            continue;
        }
        let (cmd, expect) = match l.rsplit_once("  # ") {
            Some((c, code)) if code.chars().all(|c| c.is_ascii_digit()) => (c, Some(code)),
            _ => (l, None),
        };
        let cmd = cmd
            .replace("<signature>", &signature)
            .replace("<letter-id>", &id);
        let out = Command::new("sh")
            .args(["-c", &cmd])
            .env("CONSOLE", &console)
            .env("BUS_CONSOLE_TOKEN", TOKEN)
            .current_dir(dir.path())
            .output()
            .expect("curl is installed (.ci/run installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cmd}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        match expect {
            Some(code) => assert_eq!(stdout.trim(), code, "{cmd}"),
            None if !cmd.contains(" -o ") => {
                let _: serde_json::Value = serde_json::from_str(&stdout)
                    .unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}): {stdout}"));
            }
            None => {}
        }
        ran += 1;
    }
    assert!(ran >= 10, "the guide's curl lines were found ({ran})");
    assert_eq!(
        std::fs::read(dir.path().join("letter.bin")).unwrap(),
        b"{\"n\":0}"
    );
    let audit = std::fs::read_to_string(dir.path().join("console-audit.jsonl")).unwrap();
    assert_eq!(
        audit.lines().count(),
        2,
        "the replay and the purge: {audit}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
