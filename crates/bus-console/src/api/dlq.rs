//! The dead-letter views and actions: groups by failure signature, a page
//! of letters, one letter, its payload as a download, replay and purge.

use crate::Console;
use crate::guard::{self, Access, error, json};
use crate::params::{self, Params};
use bus_dlq::{DlqQuery, LetterId, StoredLetter};
use bus_health::{AppRequest, AppResponse};
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use serde_json::{Value, json};
use std::time::SystemTime;

/// The dead-letter queue a console works.
pub type SharedDlq = std::sync::Arc<dyn DlqQuery + Send + Sync>;

/// The most payload bytes shown in a letter's view (the download has all).
const SHOWN_PAYLOAD: usize = 64 * 1024;

/// Letters counted for a page's `total` at most: past it the answer says
/// `more` instead, so a broad filter over a large store costs no full count.
pub(crate) const COUNT_CAP: usize = 10_000;

/// The most ids one action may name.
pub(crate) const MAX_IDS: usize = 1000;

fn store(c: &Console) -> Result<&SharedDlq, AppResponse> {
    c.dlq.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "this console has no dead-letter queue",
        )
    })
}

fn bad(e: String) -> AppResponse {
    error(StatusCode::BAD_REQUEST, e)
}

fn failed(e: &bus_dlq::DlqError) -> AppResponse {
    tracing::warn!(error = %e, "console: dead-letter query failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the dead-letter queue failed: {e}"),
    )
}

/// `GET /api/dlq/groups`
pub(crate) fn groups(
    c: &Console,
    req: &AppRequest,
    access: Access,
) -> Result<AppResponse, AppResponse> {
    let dlq = store(c)?;
    let p = Params::from_query(req.uri().query());
    let filter = p.filter(SystemTime::now()).map_err(bad)?;
    let groups = dlq.groups(&filter).map_err(|e| failed(&e))?;
    let letters: u64 = groups.iter().map(|g| g.count).sum();
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let mut v = serde_json::to_value(&g).unwrap_or(Value::Null);
            if !access.contents {
                v["sample_message"] = Value::Null;
            }
            v
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "groups": groups, "letters": letters, "contents_shown": access.contents }),
    ))
}

/// `GET /api/dlq/letters`: one page, keyed by the last id of the page
/// before (`after`), so a deep page costs what the first does.
pub(crate) fn letters(
    c: &Console,
    req: &AppRequest,
    access: Access,
) -> Result<AppResponse, AppResponse> {
    let dlq = store(c)?;
    let p = Params::from_query(req.uri().query());
    let filter = p.filter(SystemTime::now()).map_err(bad)?;
    let limit = p
        .number("limit", 50)
        .map_err(bad)?
        .clamp(1, c.config.max_page);
    let after = p
        .get("after")
        .map(|a| params::ids(&[a.to_owned()]).map(|v| v[0]))
        .transpose()
        .map_err(bad)?;
    let page = dlq.scan(&filter, after, limit).map_err(|e| failed(&e))?;
    let total = dlq
        .count(&filter.clone().limit(COUNT_CAP))
        .map_err(|e| failed(&e))?;
    let next = (page.len() == limit).then(|| page.last().map(|l| l.id.to_string()));
    let letters: Vec<Value> = page
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap_or(Value::Null);
            if !access.contents {
                v["error_message"] = Value::Null;
            }
            v
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "letters": letters,
            "total": total,
            "more": total >= COUNT_CAP as u64,
            "next": next.flatten(),
        }),
    ))
}

fn one(c: &Console, id: &str) -> Result<StoredLetter, AppResponse> {
    let dlq = store(c)?;
    let id: LetterId = params::ids(&[id.to_owned()]).map_err(bad)?[0];
    dlq.get(id)
        .map_err(|e| failed(&e))?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no letter {id}")))
}

/// `GET /api/dlq/letters/{id}`: everything about one letter. The payload
/// comes as text when it is UTF-8 and always as hex (the first 64 KiB).
pub(crate) fn letter(c: &Console, id: &str, access: Access) -> Result<AppResponse, AppResponse> {
    guard::require_contents(access)?;
    let stored = one(c, id)?;
    let l = &stored.letter;
    let mut message = serde_json::to_value(&l.envelope).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut message {
        m.remove("payload");
        m.remove("history");
    }
    let bytes = &l.envelope.payload[..];
    let shown = &bytes[..bytes.len().min(SHOWN_PAYLOAD)];
    let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "id": l.id,
            "state": stored.state,
            "signature": stored.signature,
            "reason": l.reason.as_str(),
            "component": l.component,
            "group": l.group,
            "dead_lettered_at": humantime::format_rfc3339_millis(l.dead_lettered_at).to_string(),
            "replayed_at": stored.replayed_at.map(|t| humantime::format_rfc3339_millis(t).to_string()),
            "replay_topic": stored.replay_topic,
            "replay_refusal": stored.replay_refusal,
            "message": message,
            "error": l.report,
            "history": l.envelope.history,
            "payload": {
                "len": bytes.len(),
                "text": std::str::from_utf8(shown).ok(),
                "hex": hex,
                "truncated": bytes.len() > shown.len(),
            },
        }),
    ))
}

/// `GET /api/dlq/letters/{id}/payload`: the payload bytes as a download.
pub(crate) fn payload(c: &Console, id: &str, access: Access) -> Result<AppResponse, AppResponse> {
    guard::require_contents(access)?;
    let stored = one(c, id)?;
    let mut r = guard::respond(
        StatusCode::OK,
        "application/octet-stream",
        stored.letter.envelope.payload.to_vec(),
    );
    let disposition = format!("attachment; filename=\"letter-{}.bin\"", stored.letter.id);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// What an action acts on: a group (`signature`, narrowed by any filter)
/// or letters by `ids`; never everything at once.
fn selection(req: &AppRequest) -> Result<(Params, bus_dlq::Filter), AppResponse> {
    let p = Params::from_json(req.body()).map_err(bad)?;
    if p.ids.len() > MAX_IDS {
        return Err(bad(format!("at most {MAX_IDS} ids per action")));
    }
    if p.get("signature").is_none() && p.ids.is_empty() {
        return Err(bad("name a group (signature) or letters (ids)".into()));
    }
    let filter = p.filter(SystemTime::now()).map_err(bad)?;
    Ok((p, filter))
}

fn target(p: &Params) -> Value {
    json!({ "signature": p.get("signature"), "ids": p.ids.len(), "topic": p.get("topic"),
            "group": p.get("group"), "category": p.get("category"), "reason": p.get("reason"),
            "state": p.get("state"), "since": p.get("since"), "until": p.get("until") })
}

/// `POST /api/dlq/replay`: marks the selection `replay_requested`; a
/// running bus re-publishes each letter to the group that failed it.
pub(crate) fn replay(
    c: &Console,
    req: &AppRequest,
    access: Access,
) -> Result<AppResponse, AppResponse> {
    guard::require_operator(access, c.config.token.as_ref())?;
    let dlq = store(c)?;
    let (p, filter) = selection(req)?;
    let outcome = dlq.request_replay(&filter, None);
    c.audit(
        req,
        "dlq.replay",
        &target(&p),
        &outcome.as_ref().map(|n| *n).map_err(ToString::to_string),
    );
    let marked = outcome.map_err(|e| failed(&e))?;
    Ok(json(StatusCode::OK, &json!({ "marked": marked })))
}

/// `POST /api/dlq/purge`: deletes the selection.
pub(crate) fn purge(
    c: &Console,
    req: &AppRequest,
    access: Access,
) -> Result<AppResponse, AppResponse> {
    guard::require_operator(access, c.config.token.as_ref())?;
    let dlq = store(c)?;
    let (p, filter) = selection(req)?;
    let outcome = dlq.purge(&filter);
    c.audit(
        req,
        "dlq.purge",
        &target(&p),
        &outcome.as_ref().map(|n| *n).map_err(ToString::to_string),
    );
    let purged = outcome.map_err(|e| failed(&e))?;
    Ok(json(StatusCode::OK, &json!({ "purged": purged })))
}
