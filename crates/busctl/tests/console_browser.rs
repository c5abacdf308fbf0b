//! The console in a real browser (headless chromium through chromedriver):
//! over a running demo, and over a data directory holding a hostile
//! letter. Screenshots go to `target/console-screenshots/` on every run.
#![allow(clippy::unwrap_used)]

#[path = "browser/webdriver.rs"]
mod webdriver;

use bus::dlq::{DlqConfig, SqliteDlq};
use bus::errors::{Classification, ErrorCategory, ErrorReport};
use bus::plug::{DeadLetter, DeadLetterReason, DeadLetterStore};
use bus::{Envelope, Topic};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use webdriver::Browser;

const TOKEN: &str = "browser-test-operator-token";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots")
}

/// A busctl process that prints `console: http://ADDR/` on stderr; killed
/// on drop.
struct Busctl(Child);

impl Drop for Busctl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn busctl(args: &[&str], token: Option<&str>) -> (Busctl, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_busctl"));
    cmd.args(args)
        .env_remove("BUS_CONSOLE_TOKEN")
        .env_remove("BUS_CONSOLE_TOKEN_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("BUS_CONSOLE_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end so the child never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("console: http://") {
                let addr = rest.split('/').next().unwrap_or_default().to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let child = Busctl(child);
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("busctl printed its console address");
    (child, addr.parse().unwrap())
}

/// A GET of the console's API with the token.
fn api(addr: SocketAddr, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    serde_json::from_slice(&out[split + 4..]).unwrap()
}

fn count(addr: SocketAddr, signature: &str, state: &str) -> u64 {
    api(
        addr,
        &format!("/api/dlq/letters?signature={signature}&state={state}&limit=1"),
    )["total"]
        .as_u64()
        .unwrap()
}

/// Console messages at level SEVERE (errors), as text.
fn errors(browser: &Browser) -> Vec<String> {
    browser
        .console_log()
        .into_iter()
        .filter(|m| m["level"] == "SEVERE")
        .map(|m| m["message"].to_string())
        .collect()
}

#[test]
fn over_a_running_demo_groups_show_and_a_replay_needs_the_token_and_is_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (_demo, addr) = busctl(
        // Few poison orders: the group replayed stays small, so the bus's
        // replay poller (256 letters a second) redelivers it in moments.
        &[
            "demo",
            "--data-dir",
            data,
            "--duration",
            "600s",
            "--http",
            "127.0.0.1:0",
            "--poison-rate",
            "0.001",
            "--fail-rate",
            "0",
            "--panic-rate",
            "0",
            "--seed",
            "27",
            "--publishers",
            "1",
        ],
        Some(TOKEN),
    );
    let browser = Browser::start();
    browser.goto(&format!("http://{addr}/"));
    let status = browser.wait("#status", 30);
    browser.until("the overview loads", 30, || {
        matches!(
            browser.text(&status).as_str(),
            "healthy" | "degraded" | "critical"
        )
    });
    browser.screenshot(&shots().join("demo-overview.png"));
    assert_eq!(
        errors(&browser),
        Vec::<String>::new(),
        "console errors on load"
    );

    browser.click_on("button[data-view=dlq]", 10);
    browser.wait(".group-row", 60);
    browser.screenshot(&shots().join("demo-groups.png"));
    assert_eq!(
        errors(&browser),
        Vec::<String>::new(),
        "console errors on the groups view"
    );
    let signature = browser
        .eval("return document.querySelector('.group-row').dataset.signature")
        .as_str()
        .unwrap()
        .to_owned();
    let replay = format!(".group-row[data-signature='{signature}'] .replay-group");
    let row = browser.text_of(&format!(".group-row[data-signature='{signature}']"));
    assert!(row.contains("not_retryable"), "{row}");

    // Without the token the action is refused and nothing is marked.
    browser.click_on(&replay, 10);
    browser.click_on("#confirm-yes", 10);
    let message = browser.wait("#message", 10);
    browser.until("the refusal is shown", 10, || {
        browser.text(&message).contains("refused")
    });
    browser.screenshot(&shots().join("demo-refused.png"));
    assert_eq!(
        count(addr, &signature, "replay_requested") + count(addr, &signature, "replayed"),
        0
    );

    // With the token the group is marked and the running bus redelivers it.
    browser.type_into(&browser.wait("#token", 10), TOKEN);
    browser.click_on("#token-use", 10);
    browser.click_on(&replay, 10);
    browser.click_on("#confirm-yes", 10);
    browser.until("the replay is confirmed", 10, || {
        browser.text(&message).contains("marked for replay")
    });
    let marked: u64 = browser
        .text(&message)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(marked > 0);
    browser.until("the bus redelivers the marked letters", 60, || {
        count(addr, &signature, "replayed") >= marked
    });
    browser.screenshot(&shots().join("demo-replayed.png"));
    let audit = std::fs::read_to_string(dir.path().join("console-audit.jsonl")).unwrap();
    assert_eq!(
        audit.lines().count(),
        1,
        "one audit line for the one accepted action"
    );
    assert!(audit.contains("\"dlq.replay\""));
}

#[test]
fn a_hostile_payload_and_error_show_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let script = "<script>alert(2)</script>";
    {
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
        let env = Envelope::new(
            Topic::new("orders.created").unwrap(),
            HOSTILE.as_bytes().to_vec(),
        )
        .with_header("x-note", "<b>bold?</b>");
        let report = ErrorReport::new(
            Classification::of(ErrorCategory::Serialization),
            "billing",
            script,
        );
        let letter = DeadLetter::new(
            env,
            report,
            DeadLetterReason::NotRetryable,
            "billing",
            "billing",
        );
        dlq.push(&letter).unwrap();
        dlq.close();
    }
    let (_console, addr) = busctl(
        &[
            "console",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ],
        None,
    );
    let browser = Browser::start();
    browser.goto(&format!("http://{addr}/#dlq"));
    browser.wait(".group-row .sample", 30);
    assert_eq!(browser.text_of(".group-row .sample"), script);
    browser.click_on(".open-group", 10);
    browser.click_on(".open-letter", 30);
    let payload = browser.wait("#payload", 30);
    browser.until("the payload is shown", 10, || {
        browser.text(&payload) == HOSTILE
    });
    browser.screenshot(&shots().join("hostile-letter.png"));
    assert_eq!(
        browser.eval("return document.querySelectorAll('img').length"),
        0
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('script').length"),
        1
    );
    assert!(!browser.dialog_open(), "no alert ran");
    let headers = browser.wait("#letter-headers", 10);
    assert!(browser.text(&headers).contains("<b>bold?</b>"));
    assert_eq!(errors(&browser), Vec::<String>::new());
}
