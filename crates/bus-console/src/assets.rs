//! The page, compiled into the binary: nothing is loaded from elsewhere.

use crate::guard;
use bus_health::AppResponse;
use hyper::StatusCode;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");
const ICON: &str = include_str!("../assets/favicon.svg");

/// The asset at `path`, if there is one.
pub(crate) fn get(path: &str) -> Option<AppResponse> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/console.css" => ("text/css; charset=utf-8", STYLE),
        // Browsers ask for an icon; a 404 would be an error on the page.
        "/favicon.svg" | "/favicon.ico" => ("image/svg+xml", ICON),
        _ => return None,
    };
    Some(guard::respond(
        StatusCode::OK,
        content_type,
        body.as_bytes().to_vec(),
    ))
}
