//! An operator console for the bus: a web page and the JSON API behind it,
//! served by the bus's own health endpoint (the listener of `/healthz`).
//!
//! - Overview: status, throughput, success and error rates over the last
//!   minutes, errors by category.
//! - Circuits: state, failure and slow-call rates, trips, time in state;
//!   force open, disable, reset.
//! - Queues: depth and capacity per topic and group.
//! - Dead letters: groups by failure signature with filters, the letters of
//!   a group page by page, one letter in full, its payload as a download;
//!   replay or purge a group or chosen letters.
//!
//! Security ([`ConsoleConfig`]): every mutation is off unless an operator
//! [`Token`] is configured, and then needs it as `Authorization: Bearer`;
//! with a token set, payloads, headers and error texts need it too. The
//! `Host` header must name an allowed host and a cross-origin request is
//! refused. Every answer carries `Content-Security-Policy: default-src
//! 'self'`; requests are rate-bounded; each mutation writes an audit line.
//! The API is described, with `curl` examples, in `docs/console.md`.
//!
//! ```
//! use bus_console::{Console, ConsoleConfig};
//! use bus_dlq::MemoryDlq;
//! use bus_health::{HealthMonitor, HealthServer, HttpOptions};
//! use std::sync::Arc;
//!
//! let console = Console::builder(ConsoleConfig::default())
//!     .dlq(Arc::new(MemoryDlq::new()))
//!     .build();
//! let server = HealthServer::start_with_app(
//!     "127.0.0.1:0", HealthMonitor::new(), HttpOptions::default(), Arc::new(console),
//! ).unwrap();
//! println!("console at http://{}/", server.local_addr());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod assets;
mod audit;
mod config;
mod guard;
mod params;

pub use api::dlq::SharedDlq;
pub use config::{ConsoleConfig, MIN_TOKEN_LEN, TOKEN_ENV, TOKEN_FILE_ENV, Token, TokenError};
pub use guard::CONTENT_SECURITY_POLICY;

use bus_breaker::BreakerRegistry;
use bus_health::{AppContext, AppRequest, AppResponse, HttpApp};
use guard::{RateLimit, error};
use hyper::{Method, StatusCode};
use std::sync::Arc;

/// The console: mount it on a [`HealthServer`](bus_health::HealthServer)
/// with [`start_with_app`](bus_health::HealthServer::start_with_app).
pub struct Console {
    config: ConsoleConfig,
    dlq: Option<SharedDlq>,
    breakers: Option<Arc<BreakerRegistry>>,
    bus_attached: bool,
    limit: RateLimit,
    audit: audit::Audit,
    history: api::bus::History,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("config", &self.config)
            .field("dlq", &self.dlq.is_some())
            .field("breakers", &self.breakers.is_some())
            .field("bus_attached", &self.bus_attached)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Console`] from what it shows.
#[must_use = "a builder does nothing until built"]
pub struct ConsoleBuilder {
    config: ConsoleConfig,
    dlq: Option<SharedDlq>,
    breakers: Option<Arc<BreakerRegistry>>,
    bus_attached: bool,
}

impl std::fmt::Debug for ConsoleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConsoleBuilder {
    /// The dead-letter queue to show and work.
    pub fn dlq(mut self, dlq: SharedDlq) -> Self {
        self.dlq = Some(dlq);
        self
    }

    /// The circuit breakers to show and act on.
    pub fn breakers(mut self, breakers: Arc<BreakerRegistry>) -> Self {
        self.breakers = Some(breakers);
        self
    }

    /// Whether a running bus feeds the health monitor (the overview says
    /// so; a console over a data directory alone has none).
    pub fn bus_attached(mut self, attached: bool) -> Self {
        self.bus_attached = attached;
        self
    }

    /// The console.
    pub fn build(self) -> Console {
        Console {
            limit: RateLimit::new(self.config.requests_per_second, self.config.burst),
            audit: audit::Audit::new(self.config.audit_file.clone()),
            history: api::bus::History::default(),
            config: self.config,
            dlq: self.dlq,
            breakers: self.breakers,
            bus_attached: self.bus_attached,
        }
    }
}

impl Console {
    /// A builder with `config`; nothing attached yet.
    pub fn builder(config: ConsoleConfig) -> ConsoleBuilder {
        ConsoleBuilder {
            config,
            dlq: None,
            breakers: None,
            bus_attached: false,
        }
    }

    fn audit(
        &self,
        req: &AppRequest,
        action: &str,
        target: &serde_json::Value,
        outcome: &Result<impl serde::Serialize, String>,
    ) {
        let outcome = match outcome {
            Ok(v) => serde_json::json!({ "ok": v }),
            Err(e) => serde_json::json!({ "error": e }),
        };
        let peer = req.extensions().get::<Peer>().and_then(|p| p.0);
        self.audit.record(peer, action, target, &outcome);
    }

    fn route(&self, req: &AppRequest, ctx: &AppContext) -> Result<AppResponse, AppResponse> {
        let access = guard::admit(req, &self.config, &self.limit)?;
        let path = req.uri().path();
        let method = req.method();
        let get = method == Method::GET || method == Method::HEAD;
        if get && let Some(asset) = assets::get(path) {
            return Ok(asset);
        }
        if method == Method::POST {
            let json_body = req
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            if !json_body {
                // A cross-site form cannot send this type without a CORS
                // preflight, which nothing here answers.
                return Err(error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "actions take a JSON body (Content-Type: application/json)",
                ));
            }
        }
        use api::{bus, dlq};
        match (get, method == Method::POST, path) {
            (true, _, "/api/overview") => Ok(bus::overview(self, ctx, access)),
            (true, _, "/api/queues") => Ok(bus::queues(ctx)),
            (true, _, "/api/circuits") => Ok(bus::circuits(self, ctx)),
            (_, true, "/api/circuits/action") => bus::circuit_action(self, req, access),
            (true, _, "/api/dlq/groups") => dlq::groups(self, req, access),
            (true, _, "/api/dlq/letters") => dlq::letters(self, req, access),
            (_, true, "/api/dlq/replay") => dlq::replay(self, req, access),
            (_, true, "/api/dlq/purge") => dlq::purge(self, req, access),
            (true, _, p) if p.starts_with("/api/dlq/letters/") => {
                let rest = &p["/api/dlq/letters/".len()..];
                match rest.split_once('/') {
                    None => dlq::letter(self, rest, access),
                    Some((id, "payload")) => dlq::payload(self, id, access),
                    Some(_) => Err(error(StatusCode::NOT_FOUND, "not found")),
                }
            }
            (false, _, p) if known(p) => {
                Err(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"))
            }
            _ => Err(error(StatusCode::NOT_FOUND, "not found")),
        }
    }
}

/// Whether `path` is served (by some method).
fn known(path: &str) -> bool {
    assets::get(path).is_some()
        || path.starts_with("/api/dlq/letters/")
        || matches!(
            path,
            "/api/overview"
                | "/api/queues"
                | "/api/circuits"
                | "/api/circuits/action"
                | "/api/dlq/groups"
                | "/api/dlq/letters"
                | "/api/dlq/replay"
                | "/api/dlq/purge"
        )
}

/// The client's address, carried in the request's extensions for the
/// audit line.
#[derive(Debug, Clone, Copy)]
struct Peer(Option<std::net::SocketAddr>);

impl HttpApp for Console {
    fn handle(&self, mut request: AppRequest, ctx: &AppContext) -> AppResponse {
        let started = std::time::Instant::now();
        request.extensions_mut().insert(Peer(ctx.peer()));
        let mut response = self.route(&request, ctx).unwrap_or_else(|refusal| refusal);
        // The time spent here, for operators and the scale bench: what a
        // view costs the server, without the network's share.
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
            response.headers_mut().insert("server-timing", v);
        }
        response
    }
}
