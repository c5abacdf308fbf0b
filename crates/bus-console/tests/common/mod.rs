//! A raw HTTP client and seeded stores for the console's tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use bus_console::{Console, ConsoleConfig, Token};
use bus_core::{DeadLetter, DeadLetterReason, DeadLetterStore, Envelope, Topic};
use bus_errors::{Classification, ErrorCategory, ErrorReport};
use bus_health::{HealthMonitor, HealthServer, HttpOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub const TOKEN: &str = "operator-secret-0123456789";

/// One answer: status, head (lowercased names), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: 127.0.0.1\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, "GET", path, &[], b"")
}

pub fn get_with_token(addr: SocketAddr, path: &str) -> Answer {
    let bearer = format!("Bearer {TOKEN}");
    call(addr, "GET", path, &[("Authorization", &bearer)], b"")
}

/// A JSON POST, with the token when `token` is given.
pub fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &serde_json::Value) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    call(addr, "POST", path, &headers, body.to_string().as_bytes())
}

/// A letter on `topic` failed by `component` with `message`.
pub fn letter(topic: &str, component: &str, message: &str, payload: &[u8]) -> DeadLetter {
    let env =
        Envelope::new(Topic::new(topic).unwrap(), payload.to_vec()).with_header("tenant", "acme");
    let report = ErrorReport::new(
        Classification::of(ErrorCategory::Connection),
        component,
        message,
    );
    DeadLetter::new(
        env,
        report,
        DeadLetterReason::RetriesExhausted,
        component,
        component,
    )
}

/// A config with the token set, or none.
pub fn config(token: bool) -> ConsoleConfig {
    let mut c = ConsoleConfig::default();
    if token {
        c.token = Some(Token::new(TOKEN).unwrap());
    }
    c
}

/// A server with `console` mounted on loopback.
pub fn serve(console: Console) -> HealthServer {
    HealthServer::start_with_app(
        "127.0.0.1:0",
        HealthMonitor::new(),
        HttpOptions::default(),
        Arc::new(console),
    )
    .unwrap()
}

/// Pushes `letters` into `store`.
pub fn seed(store: &dyn DeadLetterStore, letters: &[DeadLetter]) {
    for l in letters {
        store.push(l).unwrap();
    }
}
