//! A consumer PROCESS killed with SIGKILL mid-stream and restarted loses
//! nothing: every published message is handled at least once (duplicates
//! are counted, not hidden). Like sled's crash tests, this binary re-runs
//! itself as the child.
//!
//! The child's handler takes one credit byte from stdin per message (none
//! needed once stdin is closed) and reports each handled id on stdout. The
//! first child gets `N / 4` credits and is killed once it reported them,
//! blocked in its handler: mid-stream by construction, with no timing.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{Bus, Envelope, Message, SubscribeOptions, Topic, Transport};
use bus_nats::{NatsConfig, NatsTransport};
use common::{T, TestNats, config, nats_available};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const N: usize = 400;
const TOPIC: &str = "crash.work";
const GROUP: &str = "crashy";

fn child_config(stream: &str, subject: &str) -> NatsConfig {
    let mut c = NatsConfig::new(common::URL)
        .with_stream_prefix(stream)
        .with_subject_prefix(subject)
        .with_ack_wait(Duration::from_secs(2));
    c.prefetch = 16;
    c
}

fn child(stream: &str, subject: &str) -> ! {
    let nats = NatsTransport::connect(child_config(stream, subject)).expect("child connects");
    let bus = Bus::builder().transport(Arc::new(nats)).build();
    bus.subscriber(GROUP)
        .topic(TOPIC)
        .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
            let mut credit = [0_u8; 1];
            let _ = std::io::stdin().lock().read(&mut credit)?; // 0 bytes: stdin closed, no limit
            let mut out = std::io::stdout().lock();
            out.write_all(format!("{}\n", m.id).as_bytes())?;
            out.flush()
        })
        .expect("child subscribes");
    loop {
        std::thread::park();
    }
}

/// Starts a child whose stdin is `credits` and whose handled ids arrive on
/// the returned channel, one per line.
fn spawn(stream: &str, subject: &str, credits: Stdio) -> (Child, Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("BUS_NATS_CRASH_CHILD", "1")
        .env("BUS_NATS_STREAM", stream)
        .env("BUS_NATS_SUBJECT", subject)
        .stdin(credits)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn main() {
    if std::env::var("BUS_NATS_CRASH_CHILD").is_ok() {
        let v = |k: &str| std::env::var(k).unwrap();
        child(&v("BUS_NATS_STREAM"), &v("BUS_NATS_SUBJECT"));
    }
    if !nats_available("crash::consumer_killed_mid_stream_loses_nothing") {
        return;
    }
    let base = config();
    let (stream, subject) = (base.stream_prefix.clone(), base.subject_prefix.clone());
    let t = TestNats::new(child_config(&stream, &subject));
    let topic = Topic::new(TOPIC).unwrap();
    // Create the group before publishing, then publish everything.
    drop(
        t.nats
            .subscribe(&topic, &SubscribeOptions::group(GROUP))
            .unwrap(),
    );
    let mut published = HashSet::new();
    for i in 0..N {
        let env = Envelope::new(topic.clone(), i.to_string());
        published.insert(env.id.to_string());
        t.nats.publish(env, T).unwrap();
    }
    let mut all: Vec<String> = Vec::new();
    let (mut first, reports) = spawn(&stream, &subject, Stdio::piped());
    let mut credits = first.stdin.take().unwrap();
    credits.write_all(&[1; N / 4]).unwrap();
    credits.flush().unwrap();
    for _ in 0..N / 4 {
        let id = reports
            .recv_timeout(Duration::from_secs(30))
            .expect("first consumer made no progress");
        all.push(id);
    }
    // Out of credits, the child now waits inside its handler for the next one.
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    drop(credits);
    all.extend(reports.try_iter());
    let at_kill = all.len();
    assert!(
        at_kill < N,
        "killed too late to be mid-stream ({at_kill} of {N})"
    );

    let (mut second, reports) = spawn(&stream, &subject, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: HashSet<String> = all.iter().cloned().collect();
    while !published.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(id) = reports.recv_timeout(left) else {
            break;
        };
        seen.insert(id.clone());
        all.push(id);
    }
    let handled = seen;
    second.kill().unwrap();
    second.wait().unwrap();
    let total = all.len();
    let missing = published.difference(&handled).count();
    eprintln!(
        "crash test: {N} published, killed after {at_kill} handled, {} unique handled, {} duplicates",
        handled.len(),
        total - handled.len()
    );
    assert_eq!(missing, 0, "{missing} messages lost across a SIGKILL");
    assert_eq!(handled.len(), N, "something foreign was handled");
    println!("test consumer_killed_mid_stream_loses_nothing ... ok");
}
