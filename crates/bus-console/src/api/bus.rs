//! The bus views: overview (status, rates, a few minutes of history,
//! errors by category), circuits with their operator actions, queues.

use crate::Console;
use crate::guard::{self, Access, error, json};
use crate::params::Params;
use bus_core::CircuitState;
use bus_dlq::Filter;
use bus_health::{AppContext, AppRequest, AppResponse, Counts};
use hyper::StatusCode;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Samples kept for the overview's charts: five minutes at one a second.
const HISTORY: usize = 300;
/// The least time between two samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Totals since start, sampled when the overview is asked for, at most once
/// a second; the page draws rates from the differences.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<(VecDeque<Value>, Option<Instant>)>,
}

impl History {
    fn sample(&self, totals: &Counts) -> Vec<Value> {
        let mut s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = s.1.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY);
        if due {
            let at_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            s.0.push_back(json!({
                "at_ms": u64::try_from(at_ms).unwrap_or(u64::MAX),
                "published": totals.published,
                "acked": totals.acked,
                "failed": totals.failed,
                "dead_lettered": totals.dead_lettered,
            }));
            if s.0.len() > HISTORY {
                s.0.pop_front();
            }
            s.1 = Some(Instant::now());
        }
        s.0.iter().cloned().collect()
    }
}

/// `GET /api/overview`
pub(crate) fn overview(c: &Console, ctx: &AppContext, access: Access) -> AppResponse {
    let report = ctx.health();
    let history = c.history.sample(&report.totals);
    let dlq = c.dlq.as_ref().map(|d| {
        d.count(&Filter::all()).map_or_else(
            |e| json!({ "error": e.to_string() }),
            |n| json!({ "letters": n }),
        )
    });
    json(
        StatusCode::OK,
        &json!({
            "bus": c.bus_attached,
            "status": report.status,
            "reasons": report.reasons,
            "uptime_seconds": report.uptime_seconds,
            "window_seconds": report.window_seconds,
            "window": report.window,
            "totals": report.totals,
            "success_rate": report.success_rate,
            "delivery_success_rate": report.delivery_success_rate,
            "error_rate_per_minute": report.error_rate_per_minute,
            "categories": report.categories,
            "category_totals": report.category_totals,
            "dlq_failing": report.dlq_failing,
            "history": history,
            "dlq": dlq,
            "actions": c.config.token.is_some(),
            "operator": access.operator,
        }),
    )
}

/// `GET /api/queues`
pub(crate) fn queues(ctx: &AppContext) -> AppResponse {
    let report = ctx.health();
    json(
        StatusCode::OK,
        &json!({
            "queues": report.queues,
            "oldest_message_age_seconds": report.oldest_message_age_seconds,
        }),
    )
}

/// `GET /api/circuits`: every breaker with its rates, trips and time in
/// state (states the monitor heard of without a registry come bare).
pub(crate) fn circuits(c: &Console, ctx: &AppContext) -> AppResponse {
    let mut out: Vec<Value> = Vec::new();
    if let Some(registry) = &c.breakers {
        out.extend(
            registry
                .list()
                .into_iter()
                .map(|(_, _, m)| serde_json::to_value(&m).unwrap_or(Value::Null)),
        );
    } else {
        out.extend(
            ctx.health()
                .circuits
                .into_iter()
                .map(|(name, state)| json!({ "name": name, "state": state })),
        );
    }
    json(
        StatusCode::OK,
        &json!({ "circuits": out, "actions": c.breakers.is_some() && c.config.token.is_some() }),
    )
}

/// `POST /api/circuits/action` with `{"name": ..., "action": "force_open" |
/// "disable" | "reset"}`.
pub(crate) fn circuit_action(
    c: &Console,
    req: &AppRequest,
    access: Access,
) -> Result<AppResponse, AppResponse> {
    guard::require_operator(access, c.config.token.as_ref())?;
    let registry = c.breakers.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "this console has no circuit breakers",
        )
    })?;
    let p = Params::from_json(req.body()).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let (Some(name), Some(action)) = (p.get("name"), p.get("action")) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "name and action are required",
        ));
    };
    // `get` would create a breaker for any name: act on known ones only.
    if !registry.names().iter().any(|n| n == name) {
        return Err(error(StatusCode::NOT_FOUND, "no such circuit"));
    }
    let breaker = registry.get(name);
    match action {
        "force_open" => breaker.force_open(),
        "disable" => breaker.disable(),
        "reset" => breaker.reset(),
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "action must be force_open, disable or reset",
            ));
        }
    }
    let state: CircuitState = breaker.state();
    c.audit(
        req,
        &format!("circuit.{action}"),
        &json!({ "name": name }),
        &Ok::<_, String>(json!(state)),
    );
    Ok(json(
        StatusCode::OK,
        &json!({ "name": name, "state": state }),
    ))
}
