//! A real TCP client against the endpoint.
#![allow(clippy::unwrap_used)] // tests may unwrap
#![cfg(feature = "http")]

mod support;

use bus_core::CircuitState;
use bus_health::{
    HealthConfig, HealthServer, HttpError, HttpOptions, OPENMETRICS_CONTENT_TYPE,
    PROMETHEUS_TEXT_CONTENT_TYPE,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::*;

/// Sends raw request bytes; returns (status code, full response text).
fn send(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn healthz_is_200_then_503_after_a_forced_open_circuit() {
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 10, 1);
    let server = HealthServer::start("127.0.0.1:0", m.clone()).unwrap();
    let (code, body) = get(server.local_addr(), "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("application/json"));
    assert!(body.contains("\"status\": \"healthy\""), "{body}");

    circuit(
        &m,
        "billing",
        CircuitState::Closed,
        CircuitState::ForcedOpen,
    );
    let (code, body) = get(server.local_addr(), "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"status\": \"critical\""), "{body}");
    server.stop();
}

#[test]
fn metrics_404_405_and_413() {
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 4, 1);
    let server = HealthServer::start("127.0.0.1:0", m).unwrap();
    let addr = server.local_addr();
    let (code, body) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains(PROMETHEUS_TEXT_CONTENT_TYPE), "{body}");
    assert!(body.contains("bus_messages_acked_total 4"), "{body}");
    let (code, body) = send(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    assert!(body.contains(OPENMETRICS_CONTENT_TYPE), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert_eq!(get(addr, "/nope").0, 404);
    let (code, body) = send(
        addr,
        "DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405);
    assert!(body.contains("Allow: GET, HEAD"), "{body}");
    let (code, _) = send(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(code, 413);
    assert_eq!(get(addr, &format!("/healthz?{}", "a".repeat(2000))).0, 414);
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(9000)
    );
    assert_eq!(send(addr, &big).0, 431);
}

#[test]
fn non_loopback_needs_consent_and_drop_unblocks_the_server_thread() {
    let (m, _) = monitor(HealthConfig::default());
    let err = HealthServer::start("0.0.0.0:0", m.clone()).unwrap_err();
    assert!(matches!(err, HttpError::NotLoopback(_)));
    let server = HealthServer::start("127.0.0.1:0", m).unwrap();
    assert_eq!(get(server.local_addr(), "/healthz").0, 200);
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        drop(server); // joins the serving thread: returns only if it was unblocked
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "drop did not stop the server"
    );
}

#[test]
fn out_of_range_options_are_refused_with_a_typed_error() {
    let (m, _) = monitor(HealthConfig::default());
    let mut no_connections = HttpOptions::default();
    no_connections.max_connections = 0;
    let mut no_time = HttpOptions::default();
    no_time.write_timeout = Duration::ZERO;
    for options in [no_connections, no_time] {
        let err = HealthServer::start_with("127.0.0.1:0", m.clone(), options).unwrap_err();
        assert!(matches!(err, HttpError::Options(_)), "{err}");
    }
}
