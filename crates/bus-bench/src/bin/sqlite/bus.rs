//! The transport's side: pipelined publishers with a consumer, and a lone
//! publisher.

use super::{LEASE, MAX_BATCH, PAYLOAD_BYTES, PUBLISHERS, WINDOW};
use bus_core::{Confirm, Envelope, Route, SubscribeOptions, Topic, Transport};
use bus_sqlite::{SqliteConfig, SqliteTransport};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn open(dir: &Path) -> (Arc<SqliteTransport>, Topic) {
    let config = SqliteConfig::new(dir)
        .with_prefetch(LEASE)
        .with_max_batch(MAX_BATCH);
    let t = Arc::new(SqliteTransport::open(config).unwrap());
    (t, Topic::new("bench.orders").unwrap())
}

/// Publishes `n` messages from 4 threads with confirms while one consumer
/// acks them; the time until all are acked and the transport closed.
pub(crate) fn pipelined(dir: &Path, n: usize) -> Duration {
    let (t, topic) = open(dir);
    let mut sub = t
        .subscribe(
            &topic,
            &SubscribeOptions::group("g").with_capacity(usize::MAX / 2),
        )
        .unwrap();
    let payload = bytes::Bytes::from(vec![0xAB_u8; PAYLOAD_BYTES]);
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        let mut got = 0;
        while got < n {
            if let Some(d) = sub.next(T).unwrap() {
                d.ack();
                got += 1;
            }
        }
    });
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (t, topic, payload) = (Arc::clone(&t), topic.clone(), payload.clone());
            std::thread::spawn(move || {
                let (permit, freed) = crossbeam_channel::bounded::<()>(WINDOW);
                for _ in 0..n / PUBLISHERS {
                    permit.send(()).unwrap();
                    let freed = freed.clone();
                    let confirm = Confirm::new(move |outcome| {
                        outcome.unwrap();
                        let _ = freed.try_recv();
                    });
                    t.send(
                        Envelope::new(topic.clone(), payload.clone()),
                        Route::Topic,
                        T,
                        confirm,
                    );
                }
                // The last confirms.
                while !permit.is_empty() {
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    consumer.join().unwrap();
    t.close();
    start.elapsed()
}

/// Seconds per `publish` of one thread, each waiting for its commit.
pub(crate) fn single(dir: &Path, n: usize) -> f64 {
    let (t, topic) = open(dir);
    let _sub = t
        .subscribe(&topic, &SubscribeOptions::group("g").with_capacity(n + 1))
        .unwrap();
    let payload = bytes::Bytes::from(vec![0xAB_u8; PAYLOAD_BYTES]);
    let start = Instant::now();
    for _ in 0..n {
        t.publish(Envelope::new(topic.clone(), payload.clone()), T)
            .unwrap();
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    t.close();
    per
}
