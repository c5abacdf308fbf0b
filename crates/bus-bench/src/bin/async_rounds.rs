//! Async handlers on tokio beside a hand-written tokio consumer, in
//! interleaved rounds: the baseline, the bus with error handling off and
//! on, one after the other in every round (in a rotating order), on one
//! runtime and one kind of transport. Each round gives one ratio per pair;
//! the median over rounds is the result, the quartiles its spread.
//!
//! ```text
//! cargo run --profile bench -p bus-bench --bin async_rounds -- [--rounds R] [--messages N] [--timer-messages M] [--only trivial|timer] [--out PATH]
//! ```
//!
//! The baseline is what a team writes without the bus: a memory-transport
//! subscription awaited through the same bridge
//! ([`AsyncSubscription`]), and per message an owned semaphore permit (the
//! same in-flight limit) and a task that runs the handler inside
//! `catch_unwind` and a timeout, then acks. The bus runs the same handler
//! through its pipeline with the same limit and a handler timeout of the
//! same length.
//!
//! Two workloads, on a runtime of two worker threads:
//!
//! - `trivial`: a handler that returns at once, 64 in flight, N messages;
//! - `timer`: a handler that awaits a 20 ms timer, 1 000 in flight, M
//!   messages; the process's thread count is read at the end of each round.
//!
//! Writes `target/bench-async.json`. With `ASYNC_ROUNDS_CPU` set, each
//! timed batch also prints the process's CPU time per message (all
//! threads), a figure a loaded machine disturbs less than a rate.

#![allow(clippy::unwrap_used)]

use bus_bench::{Fixture, OnOptions, TOPIC, payload, quartiles};
use bus_core::memory::MemoryTransport;
use bus_core::runtime::{AsyncSubscription, OwnedMessage};
use bus_core::{Envelope, SubscribeOptions, Topic, Transport};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The deadline both sides put on every call (never reached).
const DEADLINE: Duration = Duration::from_secs(10);

/// What a handler does with one message.
#[derive(Clone, Copy)]
enum Work {
    Trivial,
    Timer(Duration),
}

impl Work {
    async fn run(self, payload_len: usize) -> Result<(), std::io::Error> {
        std::hint::black_box(payload_len);
        if let Work::Timer(d) = self {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }
}

/// The hand-written consumer: a subscription of its own on a memory
/// transport, driven by one task on the runtime.
struct Baseline {
    transport: Arc<MemoryTransport>,
    topic: Topic,
    handled: Arc<AtomicU64>,
}

impl Baseline {
    fn start(rt: &Runtime, work: Work, in_flight: usize) -> Self {
        let transport = Arc::new(MemoryTransport::new());
        let topic = Topic::new(TOPIC).unwrap();
        let sub = transport
            .subscribe(&topic, &SubscribeOptions::group("baseline"))
            .unwrap();
        let mut sub = AsyncSubscription::new(sub, Duration::from_millis(50)).unwrap();
        let handled = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&handled);
        let limit = Arc::new(Semaphore::new(in_flight));
        rt.spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    break;
                };
                let Some(delivery) = sub.next().await else {
                    break;
                };
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    let _permit = permit;
                    let env = delivery.envelope().clone();
                    let called =
                        match catch_unwind(AssertUnwindSafe(|| work.run(env.payload.len()))) {
                            Ok(fut) => {
                                let mut fut = pin!(fut);
                                let caught = std::future::poll_fn(move |cx| {
                                    match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                                        Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
                                        Ok(Poll::Pending) => Poll::Pending,
                                        Err(p) => Poll::Ready(Err(p)),
                                    }
                                });
                                tokio::time::timeout(DEADLINE, caught).await.is_ok()
                            }
                            Err(_) => false,
                        };
                    std::hint::black_box(called);
                    delivery.ack();
                    done.fetch_add(1, Ordering::Release);
                });
            }
        });
        Self {
            transport,
            topic,
            handled,
        }
    }

    fn publish(&self, seq: u64) {
        let env = Envelope::new(self.topic.clone(), payload(seq));
        self.transport
            .publish(env, Duration::from_secs(60))
            .unwrap();
    }

    fn wait(&self, target: u64) {
        while self.handled.load(Ordering::Acquire) < target {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

/// An async subscriber on a bench fixture, with the baseline's limit and
/// deadline.
fn subscribe(fx: &Fixture, rt: &Runtime, work: Work, in_flight: usize) {
    fx.bus
        .subscriber("bench-async")
        .topic(TOPIC)
        .runtime(rt.handle().clone())
        .in_flight(in_flight)
        .handler_timeout(DEADLINE)
        .start_async(move |msg: OwnedMessage| work.run(msg.payload.len()))
        .unwrap();
}

/// Messages per second of one timed batch published from one thread.
fn rate(n: u64, publish: impl Fn(u64), wait: impl FnOnce()) -> f64 {
    let cpu0 = cpu_ns();
    let t0 = Instant::now();
    for seq in 0..n {
        publish(seq);
    }
    wait();
    let r = n as f64 / t0.elapsed().as_secs_f64();
    if std::env::var_os("ASYNC_ROUNDS_CPU").is_some() {
        eprintln!(
            "cpu {:.0} ns/msg rate {r:.0}",
            (cpu_ns() - cpu0) as f64 / n as f64
        );
    }
    r
}

/// The whole process's CPU time, in nanoseconds.
fn cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The process's live threads.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// One workload in `rounds` interleaved rounds of `n` messages: its JSON
/// entries.
fn workload(
    rt: &Runtime,
    name: &str,
    work: Work,
    in_flight: usize,
    rounds: usize,
    n: u64,
) -> Result<Vec<String>, BoxError> {
    let base = Baseline::start(rt, work, in_flight);
    let off = Fixture::off();
    subscribe(&off, rt, work, in_flight);
    let on = Fixture::on(OnOptions::default())?;
    subscribe(&on, rt, work, in_flight);
    let mut handled = 0;
    let mut run = |v: usize| match v {
        0 => {
            handled += n;
            let target = handled;
            rate(n, |seq| base.publish(seq), || base.wait(target))
        }
        1 => rate(
            n,
            |seq| off.publish(seq),
            || assert!(off.wait_idle(Duration::from_secs(120))),
        ),
        _ => rate(
            n,
            |seq| on.publish(seq),
            || assert!(on.wait_idle(Duration::from_secs(120))),
        ),
    };
    // One warm-up round, not recorded.
    let _ = (run(0), run(1), run(2));
    let mut pairs = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut most_threads = 0;
    for round in 0..rounds {
        let mut r = [0.0; 3];
        for k in 0..3 {
            let v = (round + k) % 3;
            r[v] = run(v);
            most_threads = most_threads.max(threads());
        }
        for (all, v) in pairs
            .iter_mut()
            .zip([r[2] / r[0], r[1] / r[0], r[0], r[1], r[2]])
        {
            all.push(v);
        }
    }
    for fx in [&off, &on] {
        let stats = fx.shutdown().stats;
        if !stats.invariant_holds() || stats.failed != 0 {
            return Err(format!("{name}: ledger broken: {stats:?}").into());
        }
    }
    let mut entries = Vec::new();
    for (pair, values) in ["on_base", "off_base", "base_rate", "off_rate", "on_rate"]
        .into_iter()
        .zip(pairs)
    {
        let (p25, median, p75) = quartiles(values);
        eprintln!("{name} {pair}: median {median:.3} (p25 {p25:.3}, p75 {p75:.3})");
        entries.push(format!(
            "  \"{name}/{pair}\": {{ \"median\": {median:.4}, \"p25\": {p25:.4}, \"p75\": {p75:.4} }}"
        ));
    }
    entries.push(format!("  \"{name}/in_flight\": {in_flight}"));
    entries.push(format!("  \"{name}/messages\": {n}"));
    entries.push(format!("  \"{name}/threads\": {most_threads}"));
    Ok(entries)
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mut rounds: usize = 15;
    let mut n: u64 = 200_000;
    let mut timer_n: u64 = 20_000;
    let mut out = bus_bench::target_dir().join("bench-async.json");
    let mut only = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => only = Some(args.next().ok_or("--only trivial|timer")?),
            "--rounds" => rounds = args.next().ok_or("--rounds R")?.parse()?,
            "--messages" => n = args.next().ok_or("--messages N")?.parse()?,
            "--timer-messages" => timer_n = args.next().ok_or("--timer-messages M")?.parse()?,
            "--out" => out = args.next().ok_or("--out PATH")?.into(),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if rounds == 0 || n == 0 || timer_n == 0 {
        return Err("--rounds and the message counts must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    let mut entries = Vec::new();
    if only.as_deref() != Some("timer") {
        entries.extend(workload(&rt, "trivial", Work::Trivial, 64, rounds, n)?);
    }
    if only.as_deref() != Some("trivial") {
        let timer = Work::Timer(Duration::from_millis(20));
        entries.extend(workload(&rt, "timer", timer, 1000, rounds, timer_n)?);
    }
    let json = format!(
        "{{\n  \"rounds\": {rounds},\n  \"runtime_workers\": 2,\n{}\n}}\n",
        entries.join(",\n")
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &json)?;
    print!("{json}");
    Ok(())
}
