//! Shared by the integration tests: find (or start) the nats-server on
//! 127.0.0.1:4222, and give each test its own streams.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use bus_nats::{NatsConfig, NatsTransport};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

pub const ADDR: &str = "127.0.0.1:4222";
pub const URL: &str = "nats://127.0.0.1:4222";

fn reachable() -> bool {
    let addr: SocketAddr = ADDR.parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Waits until the server accepts connections (up to `within`).
pub fn wait_reachable(within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if reachable() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reachable()
}

/// Starts the server as a daemon (a no-op if it runs).
pub fn start_server() -> Result<(), String> {
    let out = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/nats-server",
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ])
        .output()
        .map_err(|e| format!("cannot run start-stop-daemon: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "start-stop-daemon failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Stops the server (and waits until it is gone).
pub fn stop_server() -> Result<(), String> {
    let out = Command::new("start-stop-daemon")
        .args([
            "--stop",
            "--oknodo",
            "--retry",
            "10",
            "--exec",
            "/usr/sbin/nats-server",
        ])
        .output()
        .map_err(|e| format!("cannot run start-stop-daemon: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether the server is up, starting it if needed. When it cannot be
/// reached: fails under `BUS_REQUIRE_NATS=1`, otherwise says loudly that
/// the test is skipped and returns false.
pub fn nats_available(test: &str) -> bool {
    if reachable() {
        return true;
    }
    let why = match start_server() {
        Ok(()) if wait_reachable(Duration::from_secs(10)) => return true,
        Ok(()) => "started nats-server but it does not accept connections".to_owned(),
        Err(e) => e,
    };
    if std::env::var("BUS_REQUIRE_NATS").is_ok_and(|v| v == "1") {
        panic!("nats-server not reachable on {ADDR} ({why}) and BUS_REQUIRE_NATS=1");
    }
    eprintln!("SKIPPED: nats-server not reachable on {ADDR} ({why}) [{test}]");
    false
}

/// A configuration with stream and subject prefixes of its own.
pub fn config() -> NatsConfig {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let tag = &tag[..12];
    NatsConfig::new(URL)
        .with_stream_prefix(format!("T{tag}"))
        .with_subject_prefix(format!("t{tag}"))
}

/// A transport whose streams are deleted when it is dropped.
pub struct TestNats {
    pub nats: NatsTransport,
}

impl TestNats {
    pub fn new(config: NatsConfig) -> Self {
        Self {
            nats: NatsTransport::connect(config).expect("connect to nats-server"),
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let _ = self.nats.delete_streams();
    }
}

pub const T: Duration = Duration::from_secs(5);
