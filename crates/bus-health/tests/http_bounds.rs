//! The endpoint's bounds against hostile and careless clients, over real
//! TCP: idle crowds, a client that pipelines and never reads, an oversized
//! head, a trickling head, a full house, and a source that hangs.
#![allow(clippy::unwrap_used)] // tests may unwrap
#![cfg(feature = "http")]

mod support;

use bus_core::QueueDepth;
use bus_health::{HealthConfig, HealthMonitor, HealthServer, HttpOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::clients::*;
use support::*;

/// [`try_get`], failing the test when no answer comes within `within`.
fn get(addr: SocketAddr, path: &str, within: Duration) -> (u16, String) {
    try_get(addr, path, within)
        .unwrap_or_else(|e| panic!("no answer to GET {path} within {within:?}: {e}"))
}

/// True once the peer has closed or reset `s` (it never reads what the
/// server sent, so it cannot wait for end of file).
fn peer_gone(s: &TcpStream) -> bool {
    if let Ok(Some(_)) = s.take_error() {
        return true;
    }
    s.set_nonblocking(true).unwrap();
    let probe = (&*s).write(b"x");
    s.set_nonblocking(false).unwrap();
    matches!(probe, Err(e) if e.kind() != ErrorKind::WouldBlock)
}

#[test]
fn healthz_answers_beside_a_thousand_idle_clients_and_one_that_never_reads() {
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 10, 1);
    let server = HealthServer::start("127.0.0.1:0", m).unwrap();
    let addr = server.local_addr();

    let wanted = 1000;
    let crowd = Crowd::gather(addr, wanted, 1000).unwrap();
    if crowd.idle.len() < wanted {
        eprintln!(
            "the open-file limit fits {} idle clients, not {wanted}",
            crowd.idle.len()
        );
    }

    for _ in 0..3 {
        let (code, body) = get(addr, "/healthz", Duration::from_secs(2));
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"acked\": 10"), "{body}");
    }
    drop(crowd);
}

#[test]
fn a_64_mib_header_is_refused_after_reading_about_the_limit() {
    let (m, _) = monitor(HealthConfig::default());
    let server = HealthServer::start("127.0.0.1:0", m).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        .unwrap();
    let total = 64 << 20;
    let chunk = vec![b'a'; 64 << 10];
    let mut written = 0;
    let stopped = loop {
        if written >= total {
            break None;
        }
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break Some(e),
        }
    };
    // What the server did: answered 431 and closed, or closed (reset).
    let mut answer = String::new();
    let read = s.read_to_string(&mut answer);
    let closed = match &stopped {
        Some(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        None => false,
    };
    assert!(
        closed || answer.starts_with("HTTP/1.1 431"),
        "the server neither answered 431 nor closed: write {stopped:?}, read {read:?}, {answer:?}"
    );
    // Loopback socket buffers hold a few MiB; the server read about 8 KiB.
    assert!(
        written < 16 << 20,
        "{written} bytes of the header were taken before the server stopped reading"
    );
}

#[test]
fn at_the_cap_the_longest_idle_connection_makes_room() {
    let (m, _) = monitor(HealthConfig::default());
    let mut options = HttpOptions::default();
    // Idle clients must outlast the test.
    options.read_timeout = Duration::from_secs(120);
    let cap = options.max_connections;
    let server = HealthServer::start_with("127.0.0.1:0", m, options).unwrap();
    let addr = server.local_addr();
    let mut idle: Vec<TcpStream> = (0..cap)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();

    let (code, body) = get(addr, "/healthz", Duration::from_secs(10));
    assert_eq!(code, 200, "{body}");

    // The first opened (idle the longest) was closed to make room ...
    let mut first = idle.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(first.read(&mut buf), Ok(0)),
        "the longest-idle connection was not closed"
    );
    // ... and only it.
    for s in &idle {
        s.set_nonblocking(true).unwrap();
        let r = (&*s).read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock),
            "another idle connection was closed: {r:?}"
        );
    }
}

#[test]
fn a_head_trickling_in_slower_than_the_read_timeout_is_cut_off() {
    let (m, _) = monitor(HealthConfig::default());
    let mut options = HttpOptions::default();
    options.read_timeout = Duration::from_millis(300);
    let server = HealthServer::start_with("127.0.0.1:0", m, options).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut reader = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut answer = Vec::new();
        let r = reader.read_to_end(&mut answer);
        let _ = tx.send((r.map_err(|e| e.kind()), answer));
    });
    // One byte of the header every 50 ms, never ending the head, for at
    // most 10 s (the head never completes, so only a cut ends it sooner).
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        if let Ok(end) = rx.recv_timeout(Duration::from_millis(50)) {
            break Some(end);
        }
        if Instant::now() > deadline || s.write_all(b"a").is_err() {
            break rx.recv_timeout(Duration::from_secs(5)).ok();
        }
    };
    let (read, answer) = ended.expect("the server kept the trickling connection open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains(" 200 "),
        "a head that never completed was answered: {read:?} {answer}"
    );
}

#[test]
fn a_client_that_never_reads_is_closed_after_the_write_timeout() {
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 3, 1);
    let mut options = HttpOptions::default();
    options.write_timeout = Duration::from_millis(300);
    // Only the write timeout may end this connection.
    options.read_timeout = Duration::from_secs(120);
    let server = HealthServer::start_with("127.0.0.1:0", m, options).unwrap();
    let s = TcpStream::connect(server.local_addr()).unwrap();
    // Pipeline until the server stops taking requests: its writes are
    // stuck behind the responses this client never reads.
    s.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent < 200_000 && Instant::now() < deadline {
        match (&s).write(PIPELINED) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("the connection failed before it stalled: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !peer_gone(&s) {
        assert!(
            Instant::now() < deadline,
            "a client that never reads kept its connection ({sent} requests sent)"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[test]
fn healthz_answers_while_a_source_hangs() {
    let (release, hang) = crossbeam_channel::bounded::<()>(0);
    let m = HealthMonitor::builder()
        .with_queue_source(Arc::new(move || {
            // A broker that does not answer until the test lets it.
            let _ = hang.recv_timeout(Duration::from_secs(60));
            vec![QueueDepth {
                topic: "orders.created".into(),
                group: "billing".into(),
                depth: 3,
                capacity: 100,
                in_flight: 1,
            }]
        }))
        .build()
        .unwrap();
    let server = HealthServer::start("127.0.0.1:0", m).unwrap();
    let addr = server.local_addr();
    // Answered while the source is still blocked.
    let (code, body) = get(addr, "/healthz", Duration::from_secs(10));
    assert_eq!(code, 200, "{body}");
    let (code, body) = get(addr, "/metrics", Duration::from_secs(10));
    assert_eq!(code, 200, "{body}");
    drop(release);
    // Once the source answers, its reading shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(addr, "/healthz", Duration::from_secs(10));
        if body.contains("\"group\": \"billing\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reading never showed: {body}"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
}
