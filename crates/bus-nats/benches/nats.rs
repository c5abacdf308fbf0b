//! Bus-over-NATS throughput beside raw async-nats JetStream, same run, same
//! semantics: each publish waits for its JetStream ack; consumers pull with
//! explicit acks. The consume group drains a stream filled beforehand, so
//! it measures settling alone: the bus's acks are confirmed by the server
//! (double acks), as are the raw program's. Needs nats-server on
//! 127.0.0.1:4222 (skipped otherwise).

use bus_core::{Bus, Envelope, SubscribeOptions, Topic, Transport};
use bus_nats::{NatsConfig, NatsTransport, async_nats};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BATCH: u64 = 200;
/// Messages drained per consume round.
const CONSUME: u64 = 2000;
const PAYLOAD: &[u8] = b"0123456789abcdef";

fn up() -> bool {
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:4222".parse().unwrap_or_else(|_| unreachable!()),
        Duration::from_millis(300),
    )
    .is_ok()
}

fn cfg() -> NatsConfig {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    NatsConfig::new("nats://127.0.0.1:4222")
        .with_stream_prefix(format!("B{}", &tag[..10]))
        .with_subject_prefix(format!("b{}", &tag[..10]))
        .with_prefetch(64)
}

fn bench(c: &mut Criterion) {
    if !up() {
        eprintln!("SKIPPED: nats-server not reachable on 127.0.0.1:4222 (bench)");
        return;
    }
    let mut g = c.benchmark_group("nats_publish_consume");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(10);

    // The bus: publish BATCH through Bus::publish, wait until all are acked.
    let nats = NatsTransport::connect(cfg()).expect("connect");
    let bus = Bus::builder().transport(Arc::new(nats.clone())).build();
    let acked = Arc::new(AtomicU64::new(0));
    let a2 = Arc::clone(&acked);
    bus.subscriber("bench")
        .topic("bench.bus")
        .start(
            move |_m: &bus_core::Message<'_>| -> Result<(), std::io::Error> {
                a2.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
        )
        .expect("subscribe");
    g.bench_function("bus_over_nats", |b| {
        b.iter(|| {
            let target = acked.load(Ordering::Relaxed) + BATCH;
            for _ in 0..BATCH {
                bus.publish("bench.bus", &b"0123456789abcdef"[..])
                    .expect("publish");
            }
            let until = Instant::now() + Duration::from_secs(30);
            while acked.load(Ordering::Relaxed) < target && Instant::now() < until {
                std::thread::yield_now();
            }
        });
    });
    let _ = bus.shutdown(Duration::from_secs(5));
    let _ = nats.delete_streams();
    // `shutdown` closed that transport: the raw client gets a fresh connection.
    let nats = NatsTransport::connect(cfg()).expect("connect");

    // Raw async-nats on the same runtime: awaited publishes, pulled and acked.
    let topic = Topic::new("bench.raw").unwrap_or_else(|_| unreachable!());
    drop(
        nats.subscribe(&topic, &SubscribeOptions::group("raw"))
            .expect("consumer"),
    );
    let js = nats.jetstream().clone();
    let subject = nats.config().subject_for(&topic);
    let stream_name = nats.config().stream_for(&topic);
    let consumer_name = nats.config().consumer_for(&topic, "raw");
    let _ = nats.publish(Envelope::new(topic.clone(), "warm"), Duration::from_secs(5));
    g.bench_function("raw_async_nats", |b| {
        b.iter(|| {
            let (js, subject, stream_name, consumer_name) = (
                js.clone(),
                subject.clone(),
                stream_name.clone(),
                consumer_name.clone(),
            );
            nats.block_on(Duration::from_secs(60), async move {
                let consumer: async_nats::jetstream::consumer::PullConsumer = js
                    .get_stream(&stream_name)
                    .await
                    .expect("stream")
                    .get_consumer(&consumer_name)
                    .await
                    .expect("consumer");
                let consume = tokio::spawn(async move {
                    let mut msgs = consumer
                        .stream()
                        .max_messages_per_batch(64)
                        .messages()
                        .await
                        .expect("pull");
                    let mut n = 0;
                    while n < BATCH {
                        if let Some(Ok(m)) = msgs.next().await {
                            if m.payload.as_ref() != b"warm" {
                                n += 1;
                            }
                            let _ = m.ack().await;
                        }
                    }
                });
                for _ in 0..BATCH {
                    js.publish(subject.clone(), "0123456789abcdef".into())
                        .await
                        .expect("send")
                        .await
                        .expect("ack");
                }
                consume.await.expect("consumer task");
            });
        });
    });
    g.finish();
    let _ = nats.delete_streams();
}

/// Stores `n` messages on `subject`, PubAcks pipelined (not timed).
fn fill(nats: &NatsTransport, subject: &str, n: u64) {
    let (js, subject) = (nats.jetstream().clone(), subject.to_owned());
    nats.block_on(Duration::from_secs(60), async move {
        let mut acks = Vec::new();
        for _ in 0..n {
            let ack = js
                .publish(subject.clone(), bytes::Bytes::from_static(PAYLOAD))
                .await
                .expect("send");
            acks.push(ack);
        }
        for ack in acks {
            ack.await.expect("ack");
        }
    })
    .expect("fill in time");
}

/// Consume side alone: a full stream drained and acked.
fn consume(c: &mut Criterion) {
    if !up() {
        eprintln!("SKIPPED: nats-server not reachable on 127.0.0.1:4222 (bench)");
        return;
    }
    let mut g = c.benchmark_group("nats_consume");
    g.throughput(Throughput::Elements(CONSUME));
    g.sample_size(10);
    let config = cfg();
    let topic = Topic::new("bench.drain").unwrap_or_else(|_| unreachable!());
    let subject = config.subject_for(&topic);

    // One thread: Subscription::next, then ack, as a bus worker does.
    let nats = NatsTransport::connect(config.clone()).expect("connect");
    let mut sub = nats
        .subscribe(&topic, &SubscribeOptions::group("transport"))
        .expect("subscribe");
    g.bench_function("transport_next_ack", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                fill(&nats, &subject, CONSUME);
                let start = Instant::now();
                let mut n = 0;
                while n < CONSUME {
                    // An error (a pull cut on a loaded machine) is
                    // reported; the next call opens the pull again, as a
                    // bus worker's does.
                    match sub.next(Duration::from_secs(5)) {
                        Ok(Some(d)) => {
                            d.ack();
                            n += 1;
                        }
                        Ok(None) => {}
                        Err(e) => eprintln!("next: {e}"),
                    }
                }
                took += start.elapsed();
            }
            took
        });
    });
    drop(sub);
    let _ = nats.delete_streams();

    // The bus: a subscriber (one worker) started on a filled stream. A
    // group of its own each round: a pull request the previous round's
    // closed connection left on the server would swallow messages until
    // ack_wait.
    let mut round = 0_u64;
    g.bench_function("bus_subscriber", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let group = format!("bus{round}");
                drop(
                    nats.subscribe(&topic, &SubscribeOptions::group(&group))
                        .expect("durable group"),
                );
                fill(&nats, &subject, CONSUME);
                // A bus closes its transport at shutdown: one each round.
                let own = NatsTransport::connect(config.clone()).expect("connect");
                let bus = Bus::builder().transport(Arc::new(own)).build();
                let handled = AtomicU64::new(0);
                // The last message wakes the timer: a thread spinning
                // beside the worker would take a core of the two.
                let (done, all) = std::sync::mpsc::sync_channel(1);
                let start = Instant::now();
                bus.subscriber("bus")
                    .group(&group)
                    .topic("bench.drain")
                    .start(
                        move |_m: &bus_core::Message<'_>| -> Result<(), std::io::Error> {
                            if handled.fetch_add(1, Ordering::Relaxed) + 1 == CONSUME {
                                let _ = done.try_send(());
                            }
                            Ok(())
                        },
                    )
                    .expect("subscribe");
                all.recv_timeout(Duration::from_secs(60))
                    .expect("all handled");
                took += start.elapsed();
                let _ = bus.shutdown(Duration::from_secs(5));
            }
            took
        });
    });
    let _ = nats.delete_streams();

    // Raw async-nats: pull, and every double ack in flight at once.
    drop(
        nats.subscribe(&topic, &SubscribeOptions::group("raw"))
            .expect("consumer"),
    );
    let (stream_name, consumer_name) = (
        config.stream_for(&topic),
        config.consumer_for(&topic, "raw"),
    );
    g.bench_function("raw_pull_double_ack", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                fill(&nats, &subject, CONSUME);
                let (js, s, c) = (
                    nats.jetstream().clone(),
                    stream_name.clone(),
                    consumer_name.clone(),
                );
                let start = Instant::now();
                nats.block_on(Duration::from_secs(60), async move {
                    let consumer: async_nats::jetstream::consumer::PullConsumer = js
                        .get_stream(&s)
                        .await
                        .expect("stream")
                        .get_consumer(&c)
                        .await
                        .expect("consumer");
                    let mut msgs = consumer
                        .stream()
                        .max_messages_per_batch(64)
                        .messages()
                        .await
                        .expect("pull");
                    let mut acks = Vec::new();
                    for _ in 0..CONSUME {
                        let m = msgs.next().await.expect("open").expect("message");
                        acks.push(tokio::spawn(async move { m.double_ack().await }));
                    }
                    for a in acks {
                        let _ = a.await;
                    }
                })
                .expect("drained in time");
                took += start.elapsed();
            }
            took
        });
    });
    g.finish();
    let _ = nats.delete_streams();
}

criterion_group!(benches, bench, consume);
criterion_main!(benches);
