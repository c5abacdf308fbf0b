//! A nats-server of the test's own, on a free loopback port with a
//! temporary store: a test may kill and restart it without touching the
//! shared server. Killed when the guard drops.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server with JetStream, owned by the test.
pub struct OwnServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl OwnServer {
    /// Starts one, or `None` (with a note) when `nats-server` is not on PATH.
    pub fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut s = Self {
            child: None,
            port,
            store: tempfile::tempdir().unwrap(),
        };
        if let Err(e) = s.spawn() {
            assert!(
                std::env::var("BUS_REQUIRE_NATS").map_or(true, |v| v != "1"),
                "nats-server cannot start: {e}"
            );
            eprintln!("SKIPPED: nats-server cannot start: {e}");
            return None;
        }
        Some(s)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        if self.wait_reachable(Duration::from_secs(15)) {
            Ok(())
        } else {
            Err(format!("not reachable on port {}", self.port))
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it keeps its streams.
    pub fn store(&self) -> &Path {
        self.store.path()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, its sockets stay open, nothing is
    /// answered until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([which, &pid]).status().unwrap();
        assert!(status.success(), "kill {which} {pid}: {status}");
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().unwrap();
    }

    fn wait_reachable(&self, within: Duration) -> bool {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}
