//! A small WebDriver client (the W3C protocol over HTTP/1.1 and JSON)
//! driving Debian's `chromium` through `chromedriver`, headless. A missing
//! browser or driver fails the test that asked for one.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end on drop.
pub struct Browser {
    driver: Driver,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

/// The chromedriver process, stopped when dropped: also when the browser
/// session never started.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request to the driver; the answer's `value`, or the error.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Value> {
    let mut s = TcpStream::connect(addr).map_err(|e| json!(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // The driver may keep the connection open: read the head, then exactly
    // the body it announces.
    let mut out = Vec::new();
    let mut buf = [0_u8; 8192];
    let split = loop {
        if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the driver closed the connection");
        out.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while out.len() < split + 4 + len {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the driver closed the connection");
        out.extend_from_slice(&buf[..n]);
    }
    let v: Value = serde_json::from_slice(&out[split + 4..split + 4 + len]).unwrap_or(Value::Null);
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status == 200 { Ok(value) } else { Err(value) }
}

/// Asks `probe` until it answers, for up to `secs`. The page is in another
/// process with no event WebDriver can wait on, so this polls; every
/// 100 ms, because each probe is a command to the driver.
fn poll<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Browser {
    /// Starts chromedriver and a headless chromium with a fresh profile.
    pub fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // chromedriver says on stdout when it listens; the reader keeps
        // draining the pipe until it exits, so a full pipe never stalls it.
        let stdout = driver.stdout.take().expect("chromedriver's stdout");
        let driver = Driver(driver);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if line.contains("started successfully") {
                    let _ = ready_tx.send(());
                }
            }
        });
        assert!(
            ready.recv_timeout(Duration::from_secs(30)).is_ok(),
            "chromedriver did not start"
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-sync", "--window-size=1400,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let session = call(addr, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("no browser session: {e}"));
        let session = session["sessionId"].as_str().unwrap().to_owned();
        Self {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .unwrap();
    }

    /// The elements matching a CSS selector now.
    pub fn all(&self, css: &str) -> Vec<Element> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| Element(e[ELEMENT].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Waits up to `secs` for `css` to match a displayed element.
    pub fn wait(&self, css: &str, secs: u64) -> Element {
        poll(&format!("an element matching {css}"), secs, || {
            self.all(css).into_iter().find(|e| self.displayed(e))
        })
    }

    /// Waits up to `secs` for `check` to hold.
    pub fn until(&self, what: &str, secs: u64, mut check: impl FnMut() -> bool) {
        poll(what, secs, || check().then_some(()));
    }

    pub fn displayed(&self, e: &Element) -> bool {
        self.cmd("GET", &format!("/element/{}/displayed", e.0), None)
            .is_ok_and(|v| v == json!(true))
    }

    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})))
            .unwrap();
    }

    /// Clicks the first displayed element matching `css`, finding it again
    /// if the page re-rendered it between finding and clicking (the
    /// console redraws its tables as it polls).
    pub fn click_on(&self, css: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let e = self.wait(css, secs);
            match self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({}))) {
                Ok(_) => return,
                Err(why) => assert!(Instant::now() < deadline, "cannot click {css}: {why}"),
            }
        }
    }

    /// The text content of the first element matching `css` now ("" if none).
    pub fn text_of(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : '';",
            json!(css)
        );
        self.eval(&script).as_str().unwrap_or_default().to_owned()
    }

    pub fn type_into(&self, e: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .unwrap();
    }

    /// The rendered text of an element (empty if it went away).
    pub fn text(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.0), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Runs `script` in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .unwrap()
    }

    /// The browser's console messages since the last call.
    pub fn console_log(&self) -> Vec<Value> {
        self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })))
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Whether an alert, confirm or prompt dialog is open.
    pub fn dialog_open(&self) -> bool {
        self.cmd("GET", "/alert/text", None).is_ok()
    }

    /// Writes a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None).unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session ends the browser; dropping `driver` then stops it.
        let _ = self.cmd("DELETE", "", None);
    }
}
