//! A small route table: a path and a method lead to a handler; anything
//! else gets 404 or 405 from one place. More routes (a JSON API, an event
//! stream) are added with [`Router::route`] without touching the dispatch.

use super::conn::Busy;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A handler: reads the shared state `C` and the request head, answers at once.
type Handler<C> = Box<dyn Fn(&C, &Parts) -> Response<Body> + Send + Sync>;

struct Route<C> {
    method: Method,
    path: &'static str,
    handler: Handler<C>,
}

/// Routes by exact path and method. `GET` routes also answer `HEAD` (hyper
/// sends the head of the `GET` response without its body).
pub(crate) struct Router<C> {
    routes: Vec<Route<C>>,
}

impl<C> Router<C> {
    pub(crate) fn new() -> Self {
        Self { routes: Vec::new() }
    }

    /// Serves `method path` with `handler`.
    pub(crate) fn route(
        mut self,
        method: Method,
        path: &'static str,
        handler: impl Fn(&C, &Parts) -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        self.routes.push(Route {
            method,
            path,
            handler: Box::new(handler),
        });
        self
    }

    /// Serves `GET path` (and `HEAD path`) with `handler`.
    pub(crate) fn get(
        self,
        path: &'static str,
        handler: impl Fn(&C, &Parts) -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        self.route(Method::GET, path, handler)
    }

    /// Whether some route has `path`.
    pub(crate) fn serves(&self, path: &str) -> bool {
        self.routes.iter().any(|r| r.path == path)
    }

    /// The handler's answer, or 404 (unknown path) or 405 (known path,
    /// other method, with `Allow`).
    pub(crate) fn dispatch(&self, state: &C, req: &Parts) -> Response<Body> {
        let path = req.uri.path();
        let mut allowed: Vec<&str> = Vec::new();
        for r in self.routes.iter().filter(|r| r.path == path) {
            let head_of_get = req.method == Method::HEAD && r.method == Method::GET;
            if r.method == req.method || head_of_get {
                return (r.handler)(state, req);
            }
            allowed.push(r.method.as_str());
            if r.method == Method::GET {
                allowed.push(Method::HEAD.as_str());
            }
        }
        if allowed.is_empty() {
            let mut paths: Vec<&str> = self.routes.iter().map(|r| r.path).collect();
            paths.dedup();
            return text(
                StatusCode::NOT_FOUND,
                format!("not found; try {}\n", paths.join(" or ")),
            );
        }
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(header::ALLOW, v);
        }
        response
    }
}

/// A response of `content_type` with `body`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Body::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

/// A response body, whole in memory. It carries the connection's [`Busy`]
/// mark until hyper has taken the last byte, so the connection does not
/// count as idle while it still has a response to send.
pub(crate) struct Body {
    data: Option<Bytes>,
    busy: Option<Busy>,
}

impl Body {
    pub(crate) fn new(data: Bytes) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            busy: None,
        }
    }

    /// Keeps `busy` until the body is sent or dropped.
    pub(crate) fn hold(&mut self, busy: Busy) {
        self.busy = Some(busy);
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.data.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => {
                this.busy = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hyper::Request;

    fn parts(method: Method, uri: &str) -> Parts {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn router() -> Router<&'static str> {
        Router::new()
            .get("/a", |state: &&str, _: &Parts| text(StatusCode::OK, *state))
            .route(Method::POST, "/b", |_: &&str, _: &Parts| {
                text(StatusCode::ACCEPTED, "posted")
            })
    }

    #[test]
    fn routes_by_path_and_method_with_404_and_405() {
        let r = router();
        assert_eq!(
            r.dispatch(&"x", &parts(Method::GET, "/a?q=1")).status(),
            200
        );
        assert_eq!(r.dispatch(&"x", &parts(Method::HEAD, "/a")).status(), 200);
        assert_eq!(r.dispatch(&"x", &parts(Method::POST, "/b")).status(), 202);
        assert_eq!(r.dispatch(&"x", &parts(Method::GET, "/c")).status(), 404);
        let wrong = r.dispatch(&"x", &parts(Method::DELETE, "/a"));
        assert_eq!(wrong.status(), 405);
        assert_eq!(wrong.headers()[header::ALLOW], "GET, HEAD");
        let wrong = r.dispatch(&"x", &parts(Method::GET, "/b"));
        assert_eq!(wrong.headers()[header::ALLOW], "POST");
    }
}
