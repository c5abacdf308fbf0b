//! `/healthz` latency under a hostile crowd: the p99 of a fresh client's
//! `GET /healthz` (connect, request, whole answer) while 1 000 idle clients
//! are connected and one client has pipelined 1 000 `GET /metrics` and reads
//! nothing. Goal: p99 under 50 ms.
//!
//! Method: rounds of (start the crowd, then 200 `/healthz` requests one
//! after the other, then drop the crowd), so every sample is taken while
//! the pipelining client is stuck (its write timeout is 5 s; a round takes
//! well under that). 10 rounds, 3 with `--quick`. A request not answered
//! within 2 s counts as 2 s and as a timeout. The idle clients are fewer
//! when the open-file limit cannot be raised; the result says how many. It
//! also gives the process's thread count with the crowd connected.
//! Writes `target/bench-http.json` for `cargo xtask bench`. Run on its own:
//! `cargo bench -p bus-health --bench http`. Without `--bench` (as `cargo
//! test --benches` runs it) it does one small round and writes nothing.

#![allow(clippy::unwrap_used)] // a bench may unwrap

#[path = "../tests/support/clients.rs"]
mod clients;

use bus_core::time::{Clock, SystemClock};
use bus_core::{BusEvent, Observer, Topic};
use bus_health::{HealthMonitor, HealthServer};
use clients::{Crowd, try_get};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Threads in this process (0 where `/proc` is missing).
fn process_threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let measuring = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, per_round, idle) = match (measuring, quick) {
        (false, _) => (1, 20, 50),
        (true, true) => (3, 200, 1000),
        (true, false) => (10, 200, 1000),
    };

    let monitor = HealthMonitor::new();
    let topic = Topic::new("orders.created").unwrap();
    let at = SystemClock.stamp();
    for _ in 0..1000 {
        monitor.on_event(
            at,
            &BusEvent::Acked {
                topic: &topic,
                component: "billing",
                created_at: std::time::SystemTime::UNIX_EPOCH,
                handler_time: Duration::from_micros(300),
                attempt: 1,
            },
        );
    }
    let server = HealthServer::start("127.0.0.1:0", monitor).unwrap();
    let addr = server.local_addr();

    let mut samples: Vec<Duration> = Vec::with_capacity(rounds * per_round);
    let mut timeouts = 0usize;
    let mut idle_clients = idle;
    let mut threads = 0;
    for _ in 0..rounds {
        let crowd = Crowd::gather(addr, idle, 1000).unwrap();
        idle_clients = idle_clients.min(crowd.idle.len());
        // Once the server has taken the crowd in (this thread is the bench's only one).
        let _ = try_get(addr, "/healthz", TIMEOUT);
        threads = threads.max(process_threads());
        for _ in 0..per_round {
            let started = Instant::now();
            match try_get(addr, "/healthz", TIMEOUT) {
                Ok((200, _)) => samples.push(started.elapsed()),
                Ok((code, body)) => panic!("/healthz answered {code}: {body}"),
                Err(_) => {
                    timeouts += 1;
                    samples.push(TIMEOUT);
                }
            }
        }
        drop(crowd);
    }
    samples.sort_unstable();
    let at_quantile = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    let (p50, p99, max) = (at_quantile(0.5), at_quantile(0.99), at_quantile(1.0));
    println!(
        "http/healthz beside {idle_clients} idle clients and a pipelining client that never reads: \
         p50 {p50:?}, p99 {p99:?}, max {max:?} over {} requests, {timeouts} timed out (goal: p99 < 50 ms); \
         {threads} threads in the process",
        samples.len()
    );
    if measuring {
        let json = format!(
            "{{\n  \"idle_clients\": {idle_clients},\n  \"pipelined\": 1000,\n  \"samples\": {},\n  \"timeouts\": {timeouts},\n  \"quick\": {quick},\n  \"p50_ns\": {},\n  \"p99_ns\": {},\n  \"max_ns\": {},\n  \"threads\": {threads}\n}}\n",
            samples.len(),
            p50.as_nanos(),
            p99.as_nanos(),
            max.as_nanos()
        );
        let dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) => std::path::PathBuf::from(d),
            None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        };
        let path = dir.join("bench-http.json");
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}
