//! The checks every request passes before a view or an action runs, and
//! the headers every answer carries.

use crate::config::{ConsoleConfig, Token};
use bus_health::{AppRequest, AppResponse};
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use std::sync::Mutex;
use std::time::Instant;

/// The policy every answer carries: nothing but this origin, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; frame-ancestors 'none'";

/// What the caller may see and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access {
    /// A token is configured and the request carries it.
    pub(crate) operator: bool,
    /// Message contents (payloads, headers, error texts) may be shown:
    /// no token is configured, or the request carries it.
    pub(crate) contents: bool,
}

/// An answer with the console's headers.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> AppResponse {
    let mut r = AppResponse::new(body.into());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    r
}

/// Adds the headers no console answer goes without.
pub(crate) fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> AppResponse {
    respond(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// A JSON error: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> AppResponse {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// A global token bucket.
#[derive(Debug)]
pub(crate) struct RateLimit {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub(crate) fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: per_second.max(0.0),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one request's token; `false` when the bucket is empty.
    pub(crate) fn take(&self) -> bool {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.per_second;
        s.0 = (s.0 + refill).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The host name of a `Host` header value, without its port.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Refuses a request from the wrong host or origin, or past the rate
/// bound; otherwise says what it may see and do.
pub(crate) fn admit(
    req: &AppRequest,
    config: &ConsoleConfig,
    limit: &RateLimit,
) -> Result<Access, AppResponse> {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "a Host header is required"))?;
    let name = host_name(host).to_ascii_lowercase();
    if !config
        .allowed_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(&name))
    {
        return Err(error(
            StatusCode::MISDIRECTED_REQUEST,
            "this host name is not served here (see the console's allowed hosts)",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin.to_str().is_ok_and(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        });
        if !same {
            return Err(error(
                StatusCode::FORBIDDEN,
                "cross-origin requests are refused",
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|s| s == "cross-site" || s == "same-site")
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            "cross-origin requests are refused",
        ));
    }
    if !limit.take() {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    }
    let operator = config
        .token
        .as_ref()
        .is_some_and(|t| bearer(headers).is_some_and(|b| t.matches(b)));
    Ok(Access {
        operator,
        contents: config.token.is_none() || operator,
    })
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = v.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| v[7..].trim_ascii())
}

/// Refuses a mutation the caller may not make: 403 when no token is
/// configured (mutations are off), 401 when the token is missing or wrong.
pub(crate) fn require_operator(access: Access, token: Option<&Token>) -> Result<(), AppResponse> {
    if token.is_none() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "actions are off: no operator token is configured",
        ));
    }
    if !access.operator {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "this needs the operator token as Authorization: Bearer <token>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"bus-console\""),
        );
        return Err(r);
    }
    Ok(())
}

/// Refuses to show message contents to a caller without the token.
pub(crate) fn require_contents(access: Access) -> Result<(), AppResponse> {
    if access.contents {
        Ok(())
    } else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "message contents need the operator token as Authorization: Bearer <token>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"bus-console\""),
        );
        Err(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_drop_their_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:9"), "[::1]");
        assert_eq!(host_name("evil.example:80"), "evil.example");
    }

    #[test]
    fn the_bucket_refuses_past_its_burst() {
        let limit = RateLimit::new(0.0, 3);
        assert!((0..3).all(|_| limit.take()));
        assert!(!limit.take());
    }
}
