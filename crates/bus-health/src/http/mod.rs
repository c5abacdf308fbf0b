//! The HTTP endpoint (feature `http`): `GET /healthz` and `GET /metrics`,
//! served by hyper (HTTP/1.1) on a tokio current-thread runtime that the
//! server's own thread runs; a thousand idle connections cost no thread.
//!
//! Bounds, all in [`HttpOptions`]: at most [`max_connections`] open (at the
//! cap the longest-idle one is closed to admit a new one); a request head
//! (request line and headers) at most [`max_header_bytes`] (431, read no
//! further); a head must arrive whole within [`read_timeout`] of the server
//! starting to wait for it, which also closes idle keep-alive connections;
//! a response write that makes no progress for [`write_timeout`] closes its
//! connection. Only `GET`/`HEAD` (405 otherwise), no request body (413), a
//! request target at most [`max_url_len`] (414). Binding a non-loopback
//! address must be asked for with [`HttpOptions::allow_remote`].
//!
//! Answers never wait on a source: the queue, circuit and age sources (a
//! queue source over a broker asks the broker, and hangs while it is
//! unreachable) are read on a thread of their own every
//! [`refresh_interval`]; each answer combines the latest readings with the
//! counters read at that moment.
//!
//! [`max_connections`]: HttpOptions::max_connections
//! [`max_header_bytes`]: HttpOptions::max_header_bytes
//! [`read_timeout`]: HttpOptions::read_timeout
//! [`write_timeout`]: HttpOptions::write_timeout
//! [`max_url_len`]: HttpOptions::max_url_len
//! [`refresh_interval`]: HttpOptions::refresh_interval
//!
//! An [`HttpApp`] mounted with [`HealthServer::start_with_app`] answers
//! every other path, under the same bounds plus those of a request body
//! (see the `app` module's docs on [`HttpApp`]).

mod app;
mod conn;
mod options;
mod router;

pub use options::HttpOptions;

pub use app::{AppContext, AppRequest, AppResponse, HttpApp};

use crate::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
use crate::monitor::{HealthMonitor, Readings};
use crate::report::HealthStatus;
use arc_swap::ArcSwap;
use conn::{Connections, Tracked};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use router::{Body, Router, respond, text};
use std::convert::Infallible;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

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
    /// An option is out of range.
    #[error("invalid HTTP option: {0}")]
    Options(&'static str),
    /// Binding or spawning failed.
    #[error("cannot start the health server on {addr}: {reason}")]
    Start {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Connections the kernel queues while the server is at its cap.
const LISTEN_BACKLOG: u32 = 1024;
/// The smallest read buffer hyper accepts.
const MIN_READ_BUFFER: usize = 8192;
/// The pause after a failed accept (out of file descriptors, say), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A running health endpoint. Stops (and joins its thread) when dropped.
///
/// ```
/// use bus_health::{HealthMonitor, HealthServer};
/// use std::io::{Read, Write};
///
/// let server = HealthServer::start("127.0.0.1:0", HealthMonitor::new()).unwrap();
/// let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
/// s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
/// let mut answer = String::new();
/// s.read_to_string(&mut answer).unwrap();
/// assert!(answer.starts_with("HTTP/1.1 200 OK"));
/// ```
#[must_use = "the server stops when dropped"]
pub struct HealthServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Dropping it ends the refresh thread after the read in progress; it
    /// is not joined, so a source that hangs cannot hold up a shutdown.
    _refresh_stop: crossbeam_channel::Sender<()>,
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
        Self::start_inner(addr, monitor, options, None)
    }

    /// Serves with explicit options and `app` answering every path but
    /// `/healthz` and `/metrics`.
    pub fn start_with_app(
        addr: impl ToSocketAddrs,
        monitor: HealthMonitor,
        options: HttpOptions,
        app: Arc<dyn HttpApp>,
    ) -> Result<Self, HttpError> {
        Self::start_inner(addr, monitor, options, Some(app))
    }

    fn start_inner(
        addr: impl ToSocketAddrs,
        monitor: HealthMonitor,
        options: HttpOptions,
        app: Option<Arc<dyn HttpApp>>,
    ) -> Result<Self, HttpError> {
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| HttpError::Resolve(e.to_string()))?
            .next()
            .ok_or_else(|| HttpError::Resolve("no address".into()))?;
        if !addr.ip().is_loopback() && !options.allow_remote {
            return Err(HttpError::NotLoopback(addr));
        }
        options.validate()?;
        let start_err = |e: std::io::Error| HttpError::Start {
            addr,
            reason: e.to_string(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(start_err)?;
        let listener = {
            let _in_runtime = runtime.enter();
            listen(addr).map_err(start_err)?
        };
        let bound = listener.local_addr().map_err(start_err)?;

        let readings = Arc::new(ArcSwap::from_pointee(Readings::default()));
        let (refresh_stop, stopped) = crossbeam_channel::bounded(0);
        {
            let (monitor, readings) = (monitor.clone(), Arc::clone(&readings));
            let every = options.refresh_interval;
            std::thread::Builder::new()
                .name("bus-health-refresh".into())
                .spawn(move || refresh(&monitor, &readings, every, &stopped))
                .map_err(start_err)?;
        }
        let endpoint = Arc::new(Endpoint {
            monitor,
            readings,
            router: routes(),
            app: app.map(|app| app::Mounted {
                app,
                slots: Arc::new(tokio::sync::Semaphore::new(options.max_app_in_flight)),
            }),
            options,
        });
        let (stop, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("bus-health-http".into())
            .spawn(move || runtime.block_on(serve(listener, endpoint, stop_rx)))
            .map_err(start_err)?;
        Ok(Self {
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
            _refresh_stop: refresh_stop,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread; open connections are closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender wakes the accept loop as sending would.
        drop(self.stop.take());
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

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Keeps `readings` current until `stop` is dropped.
fn refresh(
    monitor: &HealthMonitor,
    readings: &ArcSwap<Readings>,
    every: Duration,
    stop: &crossbeam_channel::Receiver<()>,
) {
    loop {
        readings.store(Arc::new(monitor.inner.read_sources()));
        if !matches!(
            stop.recv_timeout(every),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        ) {
            return;
        }
    }
}

/// What the request handlers share.
struct Endpoint {
    monitor: HealthMonitor,
    readings: Arc<ArcSwap<Readings>>,
    router: Router<Endpoint>,
    app: Option<app::Mounted>,
    options: HttpOptions,
}

impl Endpoint {
    /// The latest source readings (never waits for a source).
    fn readings(&self) -> Readings {
        Readings::clone(&self.readings.load())
    }

    async fn respond(&self, req: Request<Incoming>, peer: Option<SocketAddr>) -> Response<Body> {
        let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target_len > self.options.max_url_len {
            return text(StatusCode::URI_TOO_LONG, "URI too long\n");
        }
        if let Some(mounted) = &self.app
            && !self.router.serves(req.uri().path())
        {
            let ctx = AppContext {
                monitor: self.monitor.clone(),
                readings: Arc::clone(&self.readings),
                peer,
            };
            return app::serve(mounted, ctx, req, &self.options).await;
        }
        let (parts, body) = req.into_parts();
        if !body.is_end_stream() {
            let mut r = text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request bodies are not accepted\n",
            );
            // The unread body would otherwise be taken for the next request.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        self.router.dispatch(self, &parts)
    }
}

/// The routes served; a console adds its own here.
fn routes() -> Router<Endpoint> {
    Router::new()
        .get("/healthz", healthz)
        .get("/metrics", metrics)
}

fn healthz(ep: &Endpoint, _: &Parts) -> Response<Body> {
    let report = ep.monitor.inner.report_with(ep.readings());
    let status = if report.status == HealthStatus::Critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut r = respond(status, "application/json", report.to_json());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn metrics(ep: &Endpoint, req: &Parts) -> Response<Body> {
    // OpenMetrics when the scraper asks for it, else Prometheus text 0.0.4.
    let openmetrics = req.headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        PROMETHEUS_TEXT_CONTENT_TYPE
    };
    let body = ep.monitor.render_metrics_with(ep.readings(), openmetrics);
    respond(StatusCode::OK, content_type, body)
}

/// Accepts until `stop` fires; returning drops every open connection.
async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>, mut stop: oneshot::Receiver<()>) {
    let connections = Connections::new(endpoint.options.max_connections);
    loop {
        let stream = tokio::select! {
            biased;
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "bus-health: accept failed");
                    tokio::select! {
                        _ = &mut stop => return,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = connections.admit() => {}
        }
        serve_connection(&connections, stream, &endpoint);
    }
}

fn serve_connection(
    connections: &Arc<Connections>,
    stream: tokio::net::TcpStream,
    endpoint: &Arc<Endpoint>,
) {
    let options = &endpoint.options;
    // Responses are small and whole: send each at once.
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (activity, registration) = connections.open();
    let io = TokioIo::new(Tracked::new(
        stream,
        Arc::clone(&activity),
        options.write_timeout,
    ));
    let service = {
        let (endpoint, activity) = (Arc::clone(endpoint), Arc::clone(&activity));
        hyper::service::service_fn(move |req| {
            let busy = activity.busy();
            let endpoint = Arc::clone(&endpoint);
            async move {
                let mut response = endpoint.respond(req, peer).await;
                response.body_mut().hold(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.read_timeout)
        .max_header_size(options.max_header_bytes)
        .max_buf_size(options.max_header_bytes.max(MIN_READ_BUFFER))
        // `Content-Type`, not `content-type`: scripts that match header
        // names exactly keep working.
        .title_case_headers(true);
    let id = registration.id();
    let connection = http.serve_connection(io, service);
    // The registration lives in the task: it unregisters the connection
    // however the task ends, aborted included.
    let task = tokio::spawn(async move {
        let _registration = registration;
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "bus-health: connection ended");
        }
    });
    // The task cannot have run yet: this thread is the runtime's only one.
    connections.attach(id, activity, task.abort_handle());
}
