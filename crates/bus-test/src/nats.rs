//! Finding (or starting) the local nats-server that NATS-backed tests need,
//! shared so every crate's tests skip or fail the same way.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the tests expect nats-server.
pub const ADDR: &str = "127.0.0.1:4222";
/// [`ADDR`] as a NATS URL.
pub const URL: &str = "nats://127.0.0.1:4222";

/// Whether something accepts connections on [`ADDR`].
pub fn reachable() -> bool {
    let Ok(addr) = ADDR.parse::<SocketAddr>() else {
        return false;
    };
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Waits until the server accepts connections (up to `within`).
pub fn wait_reachable(within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if reachable() {
            return true;
        }
        std::thread::park_timeout(Duration::from_millis(50));
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
