//! A mounted application: what answers the paths the endpoint's own routes
//! (`/healthz`, `/metrics`) do not, such as an operator console and its
//! JSON API.
//!
//! The endpoint keeps its bounds for the application's requests too, and
//! adds those a request with a body needs: the body is read only up to
//! [`HttpOptions::max_body_bytes`](super::HttpOptions::max_body_bytes)
//! (413 past it, before reading more when `Content-Length` says so) and
//! must arrive within the read timeout (408). The application runs on
//! tokio's blocking threads, at most
//! [`HttpOptions::max_app_in_flight`](super::HttpOptions::max_app_in_flight)
//! at once (503 with `Retry-After` past that), so a slow query never holds
//! up `/healthz`.

use super::router::{Body, text};
use crate::monitor::{HealthMonitor, Readings};
use crate::report::HealthReport;
use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use std::sync::Arc;

/// A request as the application sees it: the head and the whole body.
pub type AppRequest = hyper::http::Request<Bytes>;

/// The application's answer, whole.
pub type AppResponse = hyper::http::Response<Bytes>;

/// An application mounted on the health endpoint with
/// [`HealthServer::start_with_app`](super::HealthServer::start_with_app).
///
/// ```
/// use bus_health::{AppContext, AppRequest, AppResponse, HealthMonitor, HealthServer, HttpApp, HttpOptions};
/// use std::sync::Arc;
///
/// struct Hello;
/// impl HttpApp for Hello {
///     fn handle(&self, req: AppRequest, ctx: &AppContext) -> AppResponse {
///         let status = ctx.health().status;
///         AppResponse::new(format!("{} is {status}\n", req.uri().path()).into())
///     }
/// }
/// let server = HealthServer::start_with_app(
///     "127.0.0.1:0", HealthMonitor::new(), HttpOptions::default(), Arc::new(Hello),
/// ).unwrap();
/// # drop(server);
/// ```
pub trait HttpApp: Send + Sync + 'static {
    /// Answers one request; runs on a blocking thread.
    fn handle(&self, request: AppRequest, ctx: &AppContext) -> AppResponse;
}

/// What the endpoint hands an application beside the request.
pub struct AppContext {
    pub(super) monitor: HealthMonitor,
    pub(super) readings: Arc<ArcSwap<Readings>>,
    pub(super) peer: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for AppContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppContext")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl AppContext {
    /// The health report from the latest source readings (like `/healthz`:
    /// it never waits on a queue, circuit or broker source).
    pub fn health(&self) -> HealthReport {
        self.monitor
            .inner
            .report_with(Readings::clone(&self.readings.load()))
    }

    /// The monitor the endpoint serves.
    pub fn monitor(&self) -> &HealthMonitor {
        &self.monitor
    }

    /// The client's address.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }
}

/// The mounted application and its bound on requests running at once.
pub(super) struct Mounted {
    pub(super) app: Arc<dyn HttpApp>,
    pub(super) slots: Arc<tokio::sync::Semaphore>,
}

/// Reads the body (bounded in size and time), then runs the application on
/// a blocking thread.
pub(super) async fn serve(
    mounted: &Mounted,
    ctx: AppContext,
    req: hyper::Request<hyper::body::Incoming>,
    options: &super::HttpOptions,
) -> hyper::Response<Body> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > options.max_body_bytes as u64) {
        return closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        ));
    }
    let body = match tokio::time::timeout(
        options.read_timeout,
        read_body(body, options.max_body_bytes),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(status)) => return closing(text(status, "request body refused\n")),
        Err(_) => {
            return closing(text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"));
        }
    };
    let Ok(permit) = Arc::clone(&mounted.slots).try_acquire_owned() else {
        let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "busy, retry shortly\n");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let app = Arc::clone(&mounted.app);
    let request = hyper::Request::from_parts(parts, body);
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        app.handle(request, &ctx)
    })
    .await;
    match answer {
        Ok(response) => response.map(Body::new),
        Err(e) => {
            tracing::error!(error = %e, "bus-health: the mounted application failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// The whole body, or 413 once it passes `max` bytes (400 if it breaks off).
async fn read_body(mut body: hyper::body::Incoming, max: usize) -> Result<Bytes, StatusCode> {
    use hyper::body::Body as _;
    let mut buf = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Closes the connection after `r`: an unread body would otherwise be taken
/// for the next request.
fn closing(mut r: hyper::Response<Body>) -> hyper::Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
