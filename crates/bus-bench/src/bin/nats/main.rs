//! The bus over NATS beside raw async-nats, in interleaved rounds against
//! one server: publish + consume + ack of 1 KiB messages, each PubAck
//! awaited (window 1: `Bus::publish`) or with 16 and 256 PubAcks in flight
//! (a `Publisher` with that window).
//!
//! ```text
//! cargo run --profile bench -p bus-bench --bin nats -- [--rounds R] [--messages N]
//!     [--url URL] [--prefetch P] [--raw-settle awaited|pipelined:B] [--out PATH]
//! ```
//!
//! Every round runs every mode once, in a rotating order, so a slow spell
//! of the shared machine lands on all of them; the result per window is the
//! median over rounds of bus/raw (quartiles beside it). Writes
//! `target/bench-nats.json`. Needs nats-server with JetStream at `--url`
//! (default `nats://127.0.0.1:4222`); when none answers it says so, writes
//! a results file saying it skipped, and exits 0.
//!
//! The raw program does what the bus does, so the ratio is the bus's own
//! cost: each run gets a fresh stream and durable consumer created by the
//! transport itself (so both have the bus's configuration: limits
//! retention, file storage, the duplicate window, explicit acks,
//! `max_ack_pending`, `ack_wait`), every message carries the bus's headers
//! ([`bus_nats::to_headers`], `Nats-Msg-Id` included), the consumer pulls
//! in batches of the bus's prefetch and acks each message with a double
//! ack (confirmed by the server), pipelined as the transport's settles are:
//! at most `max_ack_pending` unconfirmed (`--raw-settle` picks another
//! way). A run ends when the handler has seen every message and the server
//! counts none pending or unacknowledged.

#![allow(clippy::unwrap_used)]

mod bus;
mod raw;
mod scratch;

use bus_bench::quartiles;
use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// PubAcks in flight: 1 is each publish awaited before the next.
const WINDOWS: [usize; 3] = [1, 16, 256];

/// Payload size, as the issue's goals state them.
const PAYLOAD_BYTES: usize = 1024;

/// How the raw consumer settles: as the transport's settler does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawSettle {
    /// Each double ack awaited before the next message is taken.
    Awaited,
    /// Double acks run as tasks, at most this many unconfirmed.
    Pipelined(usize),
}

impl RawSettle {
    fn parse(s: &str) -> Result<Self, BoxError> {
        match s.split_once(':') {
            None if s == "awaited" => Ok(Self::Awaited),
            Some(("pipelined", n)) => match n.parse()? {
                0 => Err("--raw-settle pipelined:B needs B >= 1".into()),
                n => Ok(Self::Pipelined(n)),
            },
            _ => Err(format!("--raw-settle: awaited or pipelined:B, not {s:?}").into()),
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Awaited => "awaited".into(),
            Self::Pipelined(n) => format!("pipelined:{n}"),
        }
    }
}

/// Messages per second of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    /// From the first publish until the server counts every message acked.
    total: f64,
    /// From the first publish until the last one is confirmed: how fast
    /// the publishing side went, whatever the consumer did.
    publish: f64,
}

impl Rates {
    pub(crate) fn of(n: u64, published: Duration, acked: Duration) -> Self {
        let per_second = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        Self {
            total: per_second(acked),
            publish: per_second(published),
        }
    }
}

/// One measured program: raw async-nats or the bus, at a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Raw(usize),
    Bus(usize),
}

struct Args {
    rounds: usize,
    messages: u64,
    url: String,
    prefetch: Option<usize>,
    /// `None`: as the transport settles.
    raw_settle: Option<RawSettle>,
    out: std::path::PathBuf,
}

fn args() -> Result<Args, BoxError> {
    let mut a = Args {
        rounds: 5,
        messages: 50_000,
        url: "nats://127.0.0.1:4222".into(),
        prefetch: None,
        raw_settle: None,
        out: bus_bench::target_dir().join("bench-nats.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = value()?.parse()?,
            "--messages" => a.messages = value()?.parse()?,
            "--url" => a.url = value()?,
            "--prefetch" => a.prefetch = Some(value()?.parse()?),
            "--raw-settle" => a.raw_settle = Some(RawSettle::parse(&value()?)?),
            "--out" => a.out = value()?.into(),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if a.rounds == 0 || a.messages == 0 {
        return Err("--rounds and --messages must be at least 1".into());
    }
    Ok(a)
}

fn write(out: &std::path::Path, json: &Value) -> Result<(), BoxError> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string_pretty(json)?;
    text.push('\n');
    std::fs::write(out, &text)?;
    print!("{text}");
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let a = args()?;
    let config = scratch::base_config(&a.url, a.prefetch);
    if let Err(why) = scratch::reachable(&config) {
        let msg = format!("nats-server not reachable at {}: {why}", a.url);
        eprintln!("SKIPPED: {msg}");
        write(&a.out, &serde_json::json!({ "skipped": msg }))?;
        return Ok(());
    }
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    // The transport confirms settles in the background, at most
    // max_ack_pending of a group unconfirmed; the raw consumer does the same.
    let raw_settle = a
        .raw_settle
        .unwrap_or(RawSettle::Pipelined(config.max_ack_pending));
    let raw = raw::Raw::connect(&config, raw_settle)?;
    raw.sweep_stale();
    let modes: Vec<Mode> = WINDOWS
        .iter()
        .flat_map(|&w| [Mode::Raw(w), Mode::Bus(w)])
        .filter(|m| match m {
            Mode::Bus(w) => bus::WINDOWS.contains(w),
            Mode::Raw(_) => true,
        })
        .collect();
    let run = |mode: Mode, n: u64| -> Result<Rates, BoxError> {
        let s = scratch::Scratch::new(&config)?;
        match mode {
            Mode::Raw(w) => raw.run(&s, w, n, &payload),
            Mode::Bus(w) => bus::run(&s, w, n, &payload),
        }
    };
    // One short warm-up pass (connections, allocator, the server's caches).
    for &m in &modes {
        run(m, a.messages.min(5_000))?;
    }
    let mut rates: Vec<Vec<Rates>> = vec![Vec::new(); modes.len()];
    for round in 0..a.rounds {
        let mut line = format!("round {}/{}:", round + 1, a.rounds);
        for k in 0..modes.len() {
            let i = (round + k) % modes.len();
            let r = run(modes[i], a.messages)?;
            rates[i].push(r);
            line.push_str(&format!(
                " {:?} {:.0}/s (publish {:.0}/s)",
                modes[i], r.total, r.publish
            ));
        }
        eprintln!("{line}");
    }
    let rate_of = |m: Mode| modes.iter().position(|&x| x == m).map(|i| &rates[i]);
    let mut json = serde_json::json!({
        "rounds": a.rounds,
        "messages": a.messages,
        "payload_bytes": PAYLOAD_BYTES,
        "server": raw.server_version(),
        "storage": format!("{:?}", config.storage).to_lowercase(),
        "prefetch": scratch::batch(&config),
        "raw_settle": raw_settle.describe(),
        "windows": WINDOWS,
        "bus_windows": bus::WINDOWS,
    });
    let mut figure = |key: String, v: Vec<f64>| {
        let (p25, median, p75) = quartiles(v);
        eprintln!("{key}: median {median:.3} (p25 {p25:.3}, p75 {p75:.3})");
        json[key] = serde_json::json!({ "median": median, "p25": p25, "p75": p75 });
    };
    for w in WINDOWS {
        let (raw_r, bus_r) = (rate_of(Mode::Raw(w)), rate_of(Mode::Bus(w)));
        for (who, r) in [("raw", raw_r), ("bus", bus_r)] {
            if let Some(r) = r {
                figure(
                    format!("window_{w}/{who}_rate"),
                    r.iter().map(|r| r.total).collect(),
                );
                figure(
                    format!("window_{w}/{who}_publish_rate"),
                    r.iter().map(|r| r.publish).collect(),
                );
            }
        }
        if let (Some(r), Some(b)) = (raw_r, bus_r) {
            let ratio = b.iter().zip(r).map(|(b, r)| b.total / r.total).collect();
            figure(format!("window_{w}/bus_over_raw"), ratio);
        }
    }
    write(&a.out, &json)
}

/// How long a run of `n` messages may take before it counts as stuck.
pub(crate) fn patience(n: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(n)
}
