//! A consumer PROCESS killed with SIGKILL mid-stream and restarted loses
//! nothing: every published message is handled at least once (duplicates
//! are counted, not hidden). Like sled's crash tests, this binary re-runs
//! itself as the child.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{Bus, Envelope, Message, SubscribeOptions, Topic, Transport};
use bus_nats::{NatsConfig, NatsTransport};
use common::{T, TestNats, config, nats_available};
use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command};
use std::sync::Arc;
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

fn child(stream: &str, subject: &str, out: &str) -> ! {
    let nats = NatsTransport::connect(child_config(stream, subject)).expect("child connects");
    let bus = Bus::builder().transport(Arc::new(nats)).build();
    let path = out.to_owned();
    bus.subscriber(GROUP)
        .topic(TOPIC)
        .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
            // Slow enough that the kill lands mid-stream.
            std::thread::sleep(Duration::from_millis(2)); // simulated work in the child, not a wait
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(format!("{}\n", m.id).as_bytes())
        })
        .expect("child subscribes");
    loop {
        std::thread::park();
    }
}

fn spawn(stream: &str, subject: &str, out: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("BUS_NATS_CRASH_CHILD", "1")
        .env("BUS_NATS_STREAM", stream)
        .env("BUS_NATS_SUBJECT", subject)
        .env("BUS_NATS_OUT", out)
        .spawn()
        .expect("spawn child")
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn main() {
    if std::env::var("BUS_NATS_CRASH_CHILD").is_ok() {
        let v = |k: &str| std::env::var(k).unwrap();
        child(
            &v("BUS_NATS_STREAM"),
            &v("BUS_NATS_SUBJECT"),
            &v("BUS_NATS_OUT"),
        );
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
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("handled.txt");

    let mut first = spawn(&stream, &subject, &out);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(&out).len() < N / 4 {
        assert!(Instant::now() < deadline, "first consumer made no progress");
        std::thread::sleep(Duration::from_millis(10)); // polling another process's output
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let at_kill = lines(&out).len();
    assert!(
        at_kill < N,
        "killed too late to be mid-stream ({at_kill} of {N})"
    );

    let mut second = spawn(&stream, &subject, &out);
    let deadline = Instant::now() + Duration::from_secs(60);
    let handled = loop {
        let seen: HashSet<String> = lines(&out).into_iter().collect();
        if published.is_subset(&seen) || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50)); // polling another process's output
    };
    second.kill().unwrap();
    second.wait().unwrap();
    let total = lines(&out).len();
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
