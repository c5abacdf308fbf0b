//! Built-in [`AlertSink`]s: the tracing log, a command, a webhook.

use super::{Alert, AlertSink};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A sink failed to deliver an alert.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertError {
    /// Spawning, writing or connecting failed.
    #[error("alert delivery I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The command or the server did not finish within the timeout.
    #[error("alert delivery timed out after {0:?}")]
    Timeout(Duration),
    /// The command exited unsuccessfully.
    #[error("alert command failed: {0}")]
    Exit(ExitStatus),
    /// The webhook answered with a non-2xx status.
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    /// The webhook URL is not a plain `http://host:port/path` URL.
    #[error("unsupported webhook URL {0:?} (only http:// is supported)")]
    BadUrl(String),
}

/// Writes each alert to the `tracing` log at ERROR level.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAlertSink;

impl AlertSink for TracingAlertSink {
    fn alert(&self, alert: &Alert) {
        tracing::error!(
            target: "bus_health::alert",
            kind = alert.kind.as_str(),
            key = %alert.key,
            component = %alert.component,
            suppressed = alert.suppressed,
            "{}",
            alert.message
        );
    }
}

/// Runs a command per alert with the alert JSON on its stdin (like a
/// pager hook). The command is killed if it runs past the timeout.
#[derive(Debug, Clone)]
pub struct CommandAlertSink {
    program: OsString,
    args: Vec<OsString>,
    timeout: Duration,
}

impl CommandAlertSink {
    /// Runs `program` with `args`; 10 s timeout.
    pub fn new(
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the command for `alert` and waits for it (up to the timeout).
    pub fn run(&self, alert: &Alert) -> Result<(), AlertError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that exits without reading gives a broken pipe: its
            // exit status below is what counts.
            let _ = stdin.write_all(alert.to_json().as_bytes());
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(AlertError::Exit(status))
                };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AlertError::Timeout(self.timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl AlertSink for CommandAlertSink {
    fn alert(&self, alert: &Alert) {
        if let Err(e) = self.run(alert) {
            tracing::warn!(error = %e, key = %alert.key, "bus-health: alert command failed");
        }
    }
}

/// POSTs each alert as JSON to an `http://` URL (plain HTTP/1.1, for a
/// local relay such as Alertmanager's webhook receiver or a sidecar).
#[derive(Debug, Clone)]
pub struct WebhookAlertSink {
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
}

impl WebhookAlertSink {
    /// Parses `url` (`http://host[:port][/path]`); 5 s timeout.
    pub fn new(url: &str) -> Result<Self, AlertError> {
        let bad = || AlertError::BadUrl(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (authority, 80),
        };
        if host.is_empty() || path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            timeout: Duration::from_secs(5),
        })
    }

    /// Sets the connect/read/write timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `alert`; returns the HTTP status on success (2xx).
    pub fn post(&self, alert: &Alert) -> Result<u16, AlertError> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| AlertError::BadUrl(self.host.clone()))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let body = alert.to_json();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        let mut buf = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while buf.len() < 1024 && !buf.ends_with(b"\r\n") {
            if stream.read(&mut byte)? == 0 {
                break;
            }
            buf.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or(AlertError::Status(0))?;
        if (200..300).contains(&code) {
            Ok(code)
        } else {
            Err(AlertError::Status(code))
        }
    }
}

impl AlertSink for WebhookAlertSink {
    fn alert(&self, alert: &Alert) {
        if let Err(e) = self.post(alert) {
            tracing::warn!(error = %e, key = %alert.key, "bus-health: alert webhook failed");
        }
    }
}
