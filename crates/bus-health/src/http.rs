//! The HTTP endpoint (feature `http`): `GET /healthz` and `GET /metrics` on
//! its own thread, served by `tiny_http`.
//!
//! Limits: only `GET`/`HEAD` (405 otherwise), no request body (413), URL at
//! most [`HttpOptions::max_url_len`] (414), headers at most
//! [`HttpOptions::max_header_bytes`] in total (431). Binding a non-loopback
//! address must be asked for with [`HttpOptions::allow_remote`].
//! `tiny_http` 0.12 reads request heads on its own worker threads and offers
//! no read timeout; a slow client ties up one of its workers, never this
//! server's loop or the bus.

use crate::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
use crate::monitor::HealthMonitor;
use crate::report::HealthStatus;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response, Server};

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The address did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The address is not loopback and `allow_remote` is off.
    #[error("refusing to serve health on non-loopback {0} (set HttpOptions::allow_remote)")]
    NotLoopback(SocketAddr),
    /// Binding or spawning failed.
    #[error("cannot start the health server on {addr}: {reason}")]
    Start {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Server limits and exposure.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Allow binding a non-loopback address.
    pub allow_remote: bool,
    /// Longest request target accepted.
    pub max_url_len: usize,
    /// Largest total size of request header names and values.
    pub max_header_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allow_remote: false,
            max_url_len: 1024,
            max_header_bytes: 8 * 1024,
        }
    }
}

/// A running health endpoint. Stops (and joins its thread) when dropped.
#[must_use = "the server stops when dropped"]
pub struct HealthServer {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HealthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HealthServer {
    /// Serves `monitor` on `addr` (loopback only) with default limits. Port 0
    /// picks a free port; see [`local_addr`](Self::local_addr).
    pub fn start(addr: impl ToSocketAddrs, monitor: HealthMonitor) -> Result<Self, HttpError> {
        Self::start_with(addr, monitor, HttpOptions::default())
    }

    /// Serves with explicit options.
    pub fn start_with(
        addr: impl ToSocketAddrs,
        monitor: HealthMonitor,
        options: HttpOptions,
    ) -> Result<Self, HttpError> {
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| HttpError::Resolve(e.to_string()))?
            .next()
            .ok_or_else(|| HttpError::Resolve("no address".into()))?;
        if !addr.ip().is_loopback() && !options.allow_remote {
            return Err(HttpError::NotLoopback(addr));
        }
        let start_err = |reason: String| HttpError::Start { addr, reason };
        let server = Arc::new(Server::http(addr).map_err(|e| start_err(e.to_string()))?);
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| start_err("not an IP listener".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("bus-health-http".into())
                .spawn(move || serve(&server, &stop, &monitor, &options))
                .map_err(|e| start_err(e.to_string()))?
        };
        Ok(Self {
            addr: bound,
            server,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(server: &Server, stop: &AtomicBool, monitor: &HealthMonitor, options: &HttpOptions) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(request)) => {
                if let Err(e) = handle(request, monitor, options) {
                    tracing::debug!(error = %e, "bus-health: response not sent");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "bus-health: accept failed");
            }
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|()| {
        Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).unwrap_or_else(|()| unreachable!())
    })
}

fn text(status: u16, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn handle(request: Request, monitor: &HealthMonitor, options: &HttpOptions) -> std::io::Result<()> {
    let method = request.method().clone();
    if !matches!(method, Method::Get | Method::Head) {
        let r = text(405, "method not allowed\n").with_header(header("Allow", "GET, HEAD"));
        return request.respond(r);
    }
    if request.url().len() > options.max_url_len {
        return request.respond(text(414, "URI too long\n"));
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|h| h.field.as_str().as_str().len() + h.value.as_str().len() + 4)
        .sum();
    if header_bytes > options.max_header_bytes {
        return request.respond(text(431, "request headers too large\n"));
    }
    if request.body_length().is_some_and(|n| n > 0) {
        return request.respond(text(413, "request bodies are not accepted\n"));
    }
    let path = request.url().split('?').next().unwrap_or("");
    match path {
        "/healthz" => {
            let report = monitor.report();
            let code = if report.status == HealthStatus::Critical {
                503
            } else {
                200
            };
            let r = Response::from_string(report.to_json())
                .with_status_code(code)
                .with_header(header("Content-Type", "application/json"))
                .with_header(header("Cache-Control", "no-store"));
            request.respond(r)
        }
        "/metrics" => {
            // OpenMetrics when the scraper asks for it, else Prometheus text 0.0.4.
            let openmetrics = request.headers().iter().any(|h| {
                h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
            });
            let (body, content_type) = if openmetrics {
                (monitor.render_metrics(), OPENMETRICS_CONTENT_TYPE)
            } else {
                (monitor.render_metrics_text(), PROMETHEUS_TEXT_CONTENT_TYPE)
            };
            let r = Response::from_string(body).with_header(header("Content-Type", content_type));
            request.respond(r)
        }
        _ => request.respond(text(404, "not found; try /healthz or /metrics\n")),
    }
}
