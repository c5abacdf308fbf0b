//! Bus-over-NATS throughput beside raw async-nats JetStream, same run, same
//! semantics: each publish waits for its JetStream ack; consumers pull with
//! explicit acks. Needs nats-server on 127.0.0.1:4222 (skipped otherwise).

use bus_core::{Bus, Envelope, SubscribeOptions, Topic, Transport};
use bus_nats::{NatsConfig, NatsTransport, async_nats};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BATCH: u64 = 200;

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

criterion_group!(benches, bench);
criterion_main!(benches);
