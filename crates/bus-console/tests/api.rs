//! The console's JSON API over a real socket: views, actions, and every
//! security rule (token, origin, host, body size, rate, audit).
#![allow(clippy::unwrap_used)]

mod common;

use bus_breaker::{BreakerConfig, BreakerRegistry};
use bus_console::{CONTENT_SECURITY_POLICY, Console};
use bus_dlq::{DlqConfig, DlqQuery, Filter, LetterState, MemoryDlq, SqliteDlq};
use common::*;
use serde_json::json;
use std::sync::Arc;

fn memory_with(letters: &[bus_core::DeadLetter]) -> Arc<MemoryDlq> {
    let dlq = Arc::new(MemoryDlq::new());
    seed(dlq.as_ref(), letters);
    dlq
}

fn two_groups() -> Vec<bus_core::DeadLetter> {
    let mut v: Vec<_> = (0..5)
        .map(|i| {
            letter(
                "orders.created",
                "billing",
                "db 10.0.0.7 down",
                format!("{{\"n\":{i}}}").as_bytes(),
            )
        })
        .collect();
    v.extend((0..2).map(|_| letter("emails.send", "mailer", "smtp refused", b"\xff\x00binary")));
    v
}

#[test]
fn groups_letters_one_letter_and_its_download() {
    let dlq = memory_with(&two_groups());
    let server = serve(Console::builder(config(false)).dlq(dlq).build());
    let addr = server.local_addr();

    let a = get(addr, "/api/dlq/groups");
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-security-policy").as_deref(),
        Some(CONTENT_SECURITY_POLICY)
    );
    let groups = a.json();
    assert_eq!(groups["letters"], 7);
    let list = groups["groups"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["count"], 5);
    assert_eq!(list[0]["sample_message"], "db 10.0.0.7 down");
    assert_eq!(list[0]["reason"], "retries_exhausted");
    let sig = list[0]["signature"].as_str().unwrap().to_owned();

    // Each single filter narrows the groups.
    for (q, n) in [
        ("topic=emails.send", 1),
        ("group=billing", 1),
        ("category=timeout", 0),
        ("reason=shutdown", 0),
        ("state=dead", 2),
        ("since=1h", 2),
    ] {
        let g = get(addr, &format!("/api/dlq/groups?{q}")).json();
        assert_eq!(g["groups"].as_array().unwrap().len(), n, "{q}");
    }

    // The group's letters, two per page, keyed by the last id.
    let sig_q: String = sig.bytes().map(|b| format!("%{b:02X}")).collect();
    let p1 = get(addr, &format!("/api/dlq/letters?signature={sig_q}&limit=2")).json();
    assert_eq!(p1["total"], 5);
    assert_eq!(p1["letters"].as_array().unwrap().len(), 2);
    let next = p1["next"].as_str().unwrap();
    let p2 = get(
        addr,
        &format!("/api/dlq/letters?signature={sig_q}&limit=2&after={next}"),
    )
    .json();
    let (a1, b1) = (&p1["letters"][1]["id"], &p2["letters"][0]["id"]);
    assert!(a1.as_str().unwrap() < b1.as_str().unwrap());

    // One letter: headers, history, error; binary payload as hex only.
    let bin = get(addr, "/api/dlq/letters?topic=emails.send&limit=1").json();
    let id = bin["letters"][0]["id"].as_str().unwrap().to_owned();
    let one = get(addr, &format!("/api/dlq/letters/{id}")).json();
    assert_eq!(one["message"]["headers"]["tenant"], "acme");
    assert_eq!(one["error"]["message"], "smtp refused");
    assert_eq!(one["payload"]["hex"], "ff0062696e617279");
    assert!(one["payload"]["text"].is_null());

    let dl = get(addr, &format!("/api/dlq/letters/{id}/payload"));
    assert_eq!(dl.status, 200);
    assert_eq!(dl.body, b"\xff\x00binary");
    assert!(
        dl.header("content-disposition")
            .unwrap()
            .starts_with("attachment;")
    );
    assert_eq!(
        dl.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
}

#[test]
fn unknown_and_malformed_ids() {
    let server = serve(
        Console::builder(config(true))
            .dlq(memory_with(&two_groups()))
            .build(),
    );
    let addr = server.local_addr();
    assert_eq!(
        get_with_token(addr, "/api/dlq/letters/not-a-uuid").status,
        400
    );
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(
        get_with_token(addr, &format!("/api/dlq/letters/{unknown}")).status,
        404
    );
    assert_eq!(
        get_with_token(addr, &format!("/api/dlq/letters/{unknown}/payload")).status,
        404
    );
    assert_eq!(
        get_with_token(addr, "/api/dlq/letters?after=zzz").status,
        400
    );
    let r = post(
        addr,
        "/api/dlq/replay",
        Some(TOKEN),
        &json!({ "ids": [unknown.to_string()] }),
    );
    assert_eq!((r.status, r.json()["marked"].clone()), (200, json!(0)));
    let r = post(
        addr,
        "/api/dlq/purge",
        Some(TOKEN),
        &json!({ "ids": ["nope"] }),
    );
    assert_eq!(r.status, 400);
    // Neither a group nor letters: refused rather than acting on everything.
    assert_eq!(
        post(
            addr,
            "/api/dlq/purge",
            Some(TOKEN),
            &json!({ "topic": "emails.send" })
        )
        .status,
        400
    );
    assert_eq!(get(addr, "/api/nothing").status, 404);
}

#[test]
fn actions_are_off_without_a_configured_token() {
    let dlq = memory_with(&two_groups());
    let server = serve(Console::builder(config(false)).dlq(dlq.clone()).build());
    let sig = dlq.groups(&Filter::all()).unwrap()[0].signature.clone();
    for path in ["/api/dlq/replay", "/api/dlq/purge"] {
        let r = post(
            server.local_addr(),
            path,
            Some(TOKEN),
            &json!({ "signature": sig }),
        );
        assert_eq!(r.status, 403, "{path}");
    }
    assert_eq!(
        dlq.count(&Filter::all().state(LetterState::Dead)).unwrap(),
        7
    );
}

#[test]
fn a_missing_or_wrong_token_is_refused_and_the_right_one_acts_with_an_audit_line() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut cfg = config(true);
    cfg.audit_file = Some(audit.clone());
    let dlq = memory_with(&two_groups());
    let server = serve(Console::builder(cfg).dlq(dlq.clone()).build());
    let addr = server.local_addr();
    let sig = dlq.groups(&Filter::all()).unwrap()[0].signature.clone();
    let body = json!({ "signature": sig });

    for token in [None, Some("operator-secret-0123456788"), Some("short")] {
        let r = post(addr, "/api/dlq/replay", token, &body);
        assert_eq!(r.status, 401, "{token:?}");
        assert!(r.header("www-authenticate").is_some());
    }
    // A cookie is not a token.
    let r = call(
        addr,
        "POST",
        "/api/dlq/replay",
        &[
            ("Content-Type", "application/json"),
            ("Cookie", &format!("token={TOKEN}")),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        dlq.count(&Filter::all().state(LetterState::ReplayRequested))
            .unwrap(),
        0
    );
    assert!(!audit.exists(), "refused requests act on nothing");

    let r = post(addr, "/api/dlq/replay", Some(TOKEN), &body);
    assert_eq!((r.status, r.json()["marked"].clone()), (200, json!(5)));
    assert_eq!(
        dlq.count(&Filter::all().state(LetterState::ReplayRequested))
            .unwrap(),
        5
    );
    let r = post(
        addr,
        "/api/dlq/purge",
        Some(TOKEN),
        &json!({ "signature": sig, "state": "replay_requested" }),
    );
    assert_eq!(r.json()["purged"], 5);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["action"], "dlq.replay");
    assert_eq!(lines[0]["outcome"]["ok"], 5);
    assert_eq!(lines[1]["action"], "dlq.purge");
    assert_eq!(lines[1]["target"]["signature"], json!(sig));
    assert!(lines[1]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
}

#[test]
fn with_a_token_set_contents_need_it_too() {
    let dlq = memory_with(&two_groups());
    let server = serve(Console::builder(config(true)).dlq(dlq.clone()).build());
    let addr = server.local_addr();
    let id = dlq.list(&Filter::all()).unwrap()[0].id;
    assert_eq!(get(addr, &format!("/api/dlq/letters/{id}")).status, 401);
    assert_eq!(
        get(addr, &format!("/api/dlq/letters/{id}/payload")).status,
        401
    );
    let g = get(addr, "/api/dlq/groups").json();
    assert!(g["groups"][0]["sample_message"].is_null());
    let l = get(addr, "/api/dlq/letters").json();
    assert!(l["letters"][0]["error_message"].is_null());
    assert_eq!(l["total"], 7);

    assert_eq!(
        get_with_token(addr, &format!("/api/dlq/letters/{id}")).status,
        200
    );
    let g = get_with_token(addr, "/api/dlq/groups").json();
    assert_eq!(g["groups"][0]["sample_message"], "db 10.0.0.7 down");
}

#[test]
fn cross_origin_requests_and_foreign_hosts_are_refused() {
    let server = serve(
        Console::builder(config(true))
            .dlq(memory_with(&two_groups()))
            .build(),
    );
    let addr = server.local_addr();
    let host = format!("127.0.0.1:{}", addr.port());
    let evil = [("Host", host.as_str()), ("Origin", "http://evil.example")];
    assert_eq!(call(addr, "GET", "/api/dlq/groups", &evil, b"").status, 403);
    let r = call(
        addr,
        "POST",
        "/api/dlq/purge",
        &[
            ("Host", host.as_str()),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
        br#"{"signature":"x"}"#,
    );
    assert_eq!(r.status, 403);
    let fetch = [("Host", host.as_str()), ("Sec-Fetch-Site", "cross-site")];
    assert_eq!(call(addr, "GET", "/api/overview", &fetch, b"").status, 403);
    // DNS rebinding: the right address under a foreign name.
    assert_eq!(
        call(addr, "GET", "/", &[("Host", "attacker.example:80")], b"").status,
        421
    );
    // Same origin passes; a form's content type does not.
    let same = format!("http://{host}");
    assert_eq!(
        call(
            addr,
            "GET",
            "/api/overview",
            &[("Host", &host), ("Origin", &same)],
            b""
        )
        .status,
        200
    );
    let form = call(
        addr,
        "POST",
        "/api/dlq/purge",
        &[
            ("Host", host.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
        b"signature=x",
    );
    assert_eq!(form.status, 415);
}

#[test]
fn oversized_bodies_are_refused_before_they_are_read() {
    let server = serve(Console::builder(config(true)).dlq(memory_with(&[])).build());
    let big = format!("{{\"ids\":[\"{}\"]}}", "a".repeat(100 * 1024));
    let bearer = format!("Bearer {TOKEN}");
    let r = call(
        server.local_addr(),
        "POST",
        "/api/dlq/purge",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        big.as_bytes(),
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    let many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let r = post(
        server.local_addr(),
        "/api/dlq/purge",
        Some(TOKEN),
        &json!({ "ids": many }),
    );
    assert_eq!(r.status, 400, "more ids than one action takes");
}

#[test]
fn requests_past_the_rate_bound_get_429() {
    let mut cfg = config(false);
    cfg.requests_per_second = 0.0;
    cfg.burst = 3;
    let server = serve(Console::builder(cfg).build());
    let codes: Vec<u16> = (0..4)
        .map(|_| get(server.local_addr(), "/api/overview").status)
        .collect();
    assert_eq!(codes, [200, 200, 200, 429]);
}

#[test]
fn concurrent_purges_of_one_group_delete_each_letter_once() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = Arc::new(SqliteDlq::open(DlqConfig::new(dir.path())).unwrap());
    let letters: Vec<_> = (0..600)
        .map(|i| {
            letter(
                "orders.created",
                "billing",
                "db down",
                format!("{i}").as_bytes(),
            )
        })
        .collect();
    assert!(dlq.push_many(&letters).iter().all(Result::is_ok));
    let sig = dlq.groups(&Filter::all()).unwrap()[0].signature.clone();
    let server = serve(Console::builder(config(true)).dlq(dlq.clone()).build());
    let addr = server.local_addr();
    let purged: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let r = post(
                            addr,
                            "/api/dlq/purge",
                            Some(TOKEN),
                            &json!({ "signature": sig }),
                        );
                        if r.status != 503 {
                            assert_eq!(r.status, 200);
                            return r.json()["purged"].as_u64().unwrap();
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(purged, 600);
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 0);
}

#[test]
fn circuits_show_and_take_operator_actions() {
    let registry = Arc::new(BreakerRegistry::new(BreakerConfig::default()).unwrap());
    let _ = registry.get("billing");
    let server = serve(
        Console::builder(config(true))
            .breakers(registry.clone())
            .build(),
    );
    let addr = server.local_addr();
    let c = get(addr, "/api/circuits").json();
    assert_eq!(c["circuits"][0]["name"], "billing");
    assert_eq!(c["circuits"][0]["state"], "closed");
    assert_eq!(c["actions"], true);

    let act = |name: &str, action: &str, token| {
        post(
            addr,
            "/api/circuits/action",
            token,
            &json!({ "name": name, "action": action }),
        )
    };
    assert_eq!(act("billing", "force_open", None).status, 401);
    let r = act("billing", "force_open", Some(TOKEN));
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (200, json!("forced_open"))
    );
    assert_eq!(
        registry.get("billing").state(),
        bus_core::CircuitState::ForcedOpen
    );
    assert_eq!(
        act("billing", "disable", Some(TOKEN)).json()["state"],
        "disabled"
    );
    assert_eq!(
        act("billing", "reset", Some(TOKEN)).json()["state"],
        "closed"
    );
    assert_eq!(act("billing", "explode", Some(TOKEN)).status, 400);
    assert_eq!(act("nobody", "reset", Some(TOKEN)).status, 404);
    assert_eq!(
        registry.names(),
        ["billing"],
        "an unknown name creates no breaker"
    );
}

#[test]
fn the_page_and_its_assets_come_from_the_binary_with_the_policy() {
    let server = serve(Console::builder(config(false)).build());
    for (path, ty) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ] {
        let a = get(server.local_addr(), path);
        assert_eq!(a.status, 200, "{path}");
        assert!(a.header("content-type").unwrap().starts_with(ty));
        assert_eq!(
            a.header("content-security-policy").as_deref(),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert_eq!(
            a.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    let page = String::from_utf8(get(server.local_addr(), "/").body).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing loaded from outside"
    );
    // The endpoint's own routes stay.
    assert_eq!(get(server.local_addr(), "/healthz").status, 200);
    let o = get(server.local_addr(), "/api/overview").json();
    assert_eq!(o["status"], "healthy");
    assert_eq!(o["actions"], false);
    assert!(o["history"].as_array().unwrap().len() == 1);
}

#[test]
fn a_page_counts_its_total_up_to_a_cap_and_says_there_is_more() {
    let letters: Vec<_> = (0..10_001)
        .map(|i| {
            letter(
                "orders.created",
                "billing",
                "db down",
                format!("{i}").as_bytes(),
            )
        })
        .collect();
    let server = serve(
        Console::builder(config(false))
            .dlq(memory_with(&letters))
            .build(),
    );
    let all = get(server.local_addr(), "/api/dlq/letters?limit=1").json();
    assert_eq!(
        (all["total"].clone(), all["more"].clone()),
        (json!(10_000), json!(true))
    );
    let few = get(
        server.local_addr(),
        "/api/dlq/letters?limit=1&topic=nothing",
    )
    .json();
    assert_eq!(
        (few["total"].clone(), few["more"].clone()),
        (json!(0), json!(false))
    );
}

#[test]
fn queues_show_depth_capacity_and_what_is_in_flight() {
    let monitor = bus_health::HealthMonitor::builder()
        .with_queue_source(Arc::new(|| {
            vec![bus_core::QueueDepth {
                topic: "orders.created".into(),
                group: "billing".into(),
                depth: 5,
                capacity: 100,
                in_flight: 3,
            }]
        }))
        .build()
        .unwrap();
    let server = bus_health::HealthServer::start_with_app(
        "127.0.0.1:0",
        monitor,
        bus_health::HttpOptions::default(),
        Arc::new(Console::builder(config(false)).build()),
    )
    .unwrap();
    let q = get(server.local_addr(), "/api/queues").json();
    assert_eq!(
        q["queues"][0],
        json!({ "topic": "orders.created", "group": "billing", "depth": 5,
                "capacity": 100, "in_flight": 3 })
    );
}
