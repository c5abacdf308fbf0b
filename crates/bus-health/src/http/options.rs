//! [`HttpOptions`]: the endpoint's limits and exposure.

use super::HttpError;
use std::time::Duration;

/// Server limits and exposure.
///
/// ```
/// use bus_health::{HealthMonitor, HealthServer, HttpOptions};
/// use std::time::Duration;
///
/// let mut options = HttpOptions::default();
/// options.max_connections = 16;
/// options.read_timeout = Duration::from_secs(2);
/// let server = HealthServer::start_with("127.0.0.1:0", HealthMonitor::new(), options).unwrap();
/// assert!(server.local_addr().ip().is_loopback());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Allow binding a non-loopback address (default false).
    pub allow_remote: bool,
    /// Longest request target accepted (default 1024 bytes).
    pub max_url_len: usize,
    /// Largest request head, request line and headers (default 8 KiB). A
    /// larger head gets 431 and the connection is closed after reading
    /// about this much of it.
    pub max_header_bytes: usize,
    /// Connections open at once (default 64). At the cap the connection
    /// idle the longest is closed to admit a new one; while none is idle,
    /// new connections wait in the listen queue.
    pub max_connections: usize,
    /// How long a request head may take to arrive whole, counted from when
    /// the server starts waiting for it: this closes a connection left idle
    /// as well as one whose head trickles in (default 5 s).
    pub read_timeout: Duration,
    /// How long a response write may wait for the client to read before
    /// the connection is closed (default 5 s).
    pub write_timeout: Duration,
    /// How often the monitor's queue, circuit and age sources are read for
    /// the answers (default 500 ms): how stale those parts may be. Each
    /// read of a NATS transport's queue source asks the broker once per
    /// subscriber group.
    pub refresh_interval: Duration,
    /// Largest request body a mounted [`HttpApp`](super::HttpApp) is handed (default
    /// 64 KiB; 413 past it). The endpoint's own routes take no body.
    pub max_body_bytes: usize,
    /// Requests a mounted [`HttpApp`](super::HttpApp) runs at once (default 4); past that
    /// a request gets 503 with `Retry-After: 1`.
    pub max_app_in_flight: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allow_remote: false,
            max_url_len: 1024,
            max_header_bytes: 8 * 1024,
            max_connections: 64,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_millis(500),
            max_body_bytes: 64 * 1024,
            max_app_in_flight: 4,
        }
    }
}

impl HttpOptions {
    pub(super) fn validate(&self) -> Result<(), HttpError> {
        let check = |ok: bool, what| {
            if ok {
                Ok(())
            } else {
                Err(HttpError::Options(what))
            }
        };
        check(
            self.max_connections > 0,
            "max_connections must be at least 1",
        )?;
        check(
            self.max_header_bytes >= 256,
            "max_header_bytes must be at least 256",
        )?;
        check(
            !self.read_timeout.is_zero(),
            "read_timeout must be positive",
        )?;
        check(
            !self.write_timeout.is_zero(),
            "write_timeout must be positive",
        )?;
        check(
            self.max_app_in_flight > 0,
            "max_app_in_flight must be at least 1",
        )?;
        check(
            !self.refresh_interval.is_zero(),
            "refresh_interval must be positive",
        )
    }
}
