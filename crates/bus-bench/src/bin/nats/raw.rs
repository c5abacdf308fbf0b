//! The baseline: a plain async-nats program on its own connection and
//! runtime, publishing and consuming what the bus would.

use crate::scratch::{self, GROUP, Scratch};
use crate::{BoxError, Rates, RawSettle, patience};
use bus_core::{Envelope, Topic};
use bus_nats::NatsConfig;
use bus_nats::async_nats::{
    self,
    jetstream::{
        self,
        consumer::{PullConsumer, pull::MessagesErrorKind},
        context::PublishAckFuture,
    },
};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// A client and the runtime it runs on.
pub(crate) struct Raw {
    rt: Runtime,
    client: async_nats::Client,
    js: jetstream::Context,
    settle: RawSettle,
}

impl Raw {
    /// Connects to the server of `config`, on a runtime shaped like the
    /// transport's (two worker threads).
    pub(crate) fn connect(config: &NatsConfig, settle: RawSettle) -> Result<Self, BoxError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("raw-nats")
            .enable_all()
            .build()?;
        let client = rt.block_on(async_nats::connect(config.url.as_str()))?;
        // The context spawns its PubAck task on the runtime it is made in.
        let js = {
            let _in_rt = rt.enter();
            jetstream::new(client.clone())
        };
        Ok(Self {
            rt,
            client,
            js,
            settle,
        })
    }

    /// The server's version, for the results file.
    pub(crate) fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// Deletes the streams of earlier runs that were stopped before their
    /// cleanup: bench streams created over an hour ago (no run lasts that
    /// long, so a run going on beside this one keeps its own).
    pub(crate) fn sweep_stale(&self) {
        let js = self.js.clone();
        let swept = self.rt.block_on(async move {
            let mut names = js.stream_names();
            let mut stale = Vec::new();
            while let Some(name) = names.next().await {
                let name = name?;
                if !name.starts_with(scratch::STREAM_PREFIX) {
                    continue;
                }
                let Ok(mut stream) = js.get_stream(&name).await else {
                    continue;
                };
                let created = stream.info().await?.created.unix_timestamp();
                let age = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
                    - created;
                if age > 3600 {
                    js.delete_stream(&name).await?;
                    stale.push(name);
                }
            }
            Ok::<_, BoxError>(stale)
        });
        match swept {
            Ok(stale) if !stale.is_empty() => {
                eprintln!("deleted {} streams left by earlier runs", stale.len());
            }
            Ok(_) => {}
            Err(e) => eprintln!("could not sweep streams left by earlier runs: {e}"),
        }
    }

    /// Publishes `n` messages with at most `window` PubAcks in flight while
    /// a task consumes and acks them.
    pub(crate) fn run(
        &self,
        s: &Scratch,
        window: usize,
        n: u64,
        payload: &Bytes,
    ) -> Result<Rates, BoxError> {
        let cfg = s.nats.config();
        let stream = cfg.stream_for(&s.topic);
        let consumer_name = cfg.consumer_for(&s.topic, GROUP);
        let subject = cfg.subject_for(&s.topic);
        let batch = scratch::batch(cfg);
        let (js, settle, topic, payload) = (
            self.js.clone(),
            self.settle,
            s.topic.clone(),
            payload.clone(),
        );
        let (t0, published) = self.rt.block_on(async move {
            let consumer: PullConsumer = js
                .get_stream(&stream)
                .await?
                .get_consumer(&consumer_name)
                .await?;
            let t0 = Instant::now();
            let consuming = tokio::spawn(consume(consumer, n, batch, settle));
            publish(&js, subject, &topic, window, n, &payload).await?;
            let published = t0.elapsed();
            consuming.await??;
            Ok::<_, BoxError>((t0, published))
        })?;
        s.drained(patience(n))?;
        Ok(Rates::of(n, published, t0.elapsed()))
    }
}

/// Publishes `n` envelopes' payloads with their bus headers, each PubAck
/// awaited (`window` 1) or at most `window` of them in flight.
async fn publish(
    js: &jetstream::Context,
    subject: String,
    topic: &Topic,
    window: usize,
    n: u64,
    payload: &Bytes,
) -> Result<(), BoxError> {
    let mut in_flight: VecDeque<PublishAckFuture> = VecDeque::with_capacity(window);
    for _ in 0..n {
        let env = Envelope::new(topic.clone(), payload.clone());
        let message = jetstream::message::PublishMessage::build()
            .headers(bus_nats::to_headers(&env))
            .payload(env.payload);
        in_flight.push_back(js.send_publish(subject.clone(), message).await?);
        if in_flight.len() >= window.max(1) {
            confirmed(in_flight.pop_front()).await?;
        }
    }
    while !in_flight.is_empty() {
        confirmed(in_flight.pop_front()).await?;
    }
    Ok(())
}

/// Waits for one PubAck; a duplicate would mean a message was not stored anew.
async fn confirmed(ack: Option<PublishAckFuture>) -> Result<(), BoxError> {
    let Some(ack) = ack else { return Ok(()) };
    let ack = ack.await?;
    if ack.duplicate {
        return Err(format!("seq {} stored as a duplicate", ack.sequence).into());
    }
    Ok(())
}

/// Pulls `n` messages in batches of `batch` and double-acks each, as the
/// transport's subscription and settler do.
async fn consume(
    consumer: PullConsumer,
    n: u64,
    batch: usize,
    settle: RawSettle,
) -> Result<(), BoxError> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await?;
    let bound = match settle {
        RawSettle::Awaited => 1,
        RawSettle::Pipelined(b) => b,
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(bound));
    let mut acks = tokio::task::JoinSet::new();
    let mut got = 0;
    while got < n {
        let m = match messages.next().await.ok_or("the pull ended")? {
            Ok(m) => m,
            // A late heartbeat on a busy machine: the pull goes on, and the
            // transport's subscription keeps it too.
            Err(e) if e.kind() == MessagesErrorKind::MissingHeartbeat => continue,
            Err(e) => return Err(e.into()),
        };
        got += 1;
        match settle {
            RawSettle::Awaited => m.double_ack().await?,
            RawSettle::Pipelined(_) => {
                let permit = Arc::clone(&permits).acquire_owned().await?;
                acks.spawn(async move {
                    let acked = m.double_ack().await;
                    drop(permit);
                    acked
                });
                // Reap the finished ones so the set stays small.
                while let Some(done) = acks.try_join_next() {
                    done??;
                }
            }
        }
    }
    while let Some(done) = acks.join_next().await {
        done??;
    }
    Ok(())
}
