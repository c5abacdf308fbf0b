//! The MaxDeliver backstop: JetStream stops redelivering a message after
//! `max_deliver` deliveries and publishes an advisory. Those advisories are
//! captured in a stream of their own (so none is missed while no process
//! runs) and turned into dead letters here, by fetching the message by its
//! stream sequence. Nothing is lost even if a consumer process died
//! mid-retry.

use crate::codec;
use crate::config::NatsConfig;
use crate::state::Counters;
use crate::transport::Inner;
use async_nats::jetstream::{self, consumer, message::AckKind};
use bus_core::{DeadLetter, DeadLetterReason, DeadLetterStore};
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use uuid::Uuid;

const CONSUMER: &str = "bus_backstop";
const RETRY: Duration = Duration::from_secs(2);

#[derive(serde::Deserialize)]
struct Advisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

struct Ctx {
    js: jetstream::Context,
    config: NatsConfig,
    counters: Arc<Counters>,
    closed: Arc<AtomicBool>,
    dlq: Arc<Mutex<Option<Arc<dyn DeadLetterStore>>>>,
}

/// Starts the backstop of `stream` on the transport's runtime. Members in
/// several processes share one durable consumer, so each advisory is handled
/// once.
pub(crate) fn spawn(inner: &Arc<Inner>, stream: String) {
    let ctx = Ctx {
        js: inner.js.clone(),
        config: inner.config.clone(),
        counters: Arc::clone(&inner.counters),
        closed: Arc::clone(&inner.closed),
        dlq: Arc::clone(&inner.dlq),
    };
    inner.handle.spawn(async move {
        while !ctx.closed.load(Ordering::Acquire) {
            if let Err(error) = run(&ctx, &stream).await {
                tracing::warn!(%error, %stream, "MaxDeliver backstop interrupted; restarting");
                tokio::time::sleep(RETRY).await;
            }
        }
    });
}

async fn run(ctx: &Ctx, stream: &str) -> Result<(), async_nats::Error> {
    let adv = ctx
        .js
        .get_stream(NatsConfig::advisory_stream_for(stream))
        .await?;
    let consumer: consumer::PullConsumer = adv
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(16)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await?;
    loop {
        if ctx.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
        let msg = match next {
            Err(_) => continue,
            Ok(None) => return Err("advisory stream ended".into()),
            Ok(Some(m)) => m?,
        };
        let store = ctx
            .dlq
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(store) = store else {
            // No store yet: leave the advisory for later (or another process).
            msg.ack_with(AckKind::Nak(Some(RETRY * 5))).await?;
            continue;
        };
        match handle(ctx, &msg.payload, store).await {
            Ok(()) => msg.ack().await?,
            Err(error) => {
                tracing::error!(%error, "MaxDeliver backstop could not dead-letter; will retry");
                msg.ack_with(AckKind::Nak(Some(RETRY))).await?;
            }
        }
    }
}

async fn handle(
    ctx: &Ctx,
    payload: &[u8],
    store: Arc<dyn DeadLetterStore>,
) -> Result<(), async_nats::Error> {
    let Ok(adv) = serde_json::from_slice::<Advisory>(payload) else {
        tracing::warn!("ignoring a malformed MaxDeliver advisory");
        return Ok(());
    };
    let stream = ctx.js.get_stream(&adv.stream).await?;
    let group = match stream.consumer_info(&adv.consumer).await {
        Ok(info) => info
            .config
            .description
            .clone()
            .unwrap_or_else(|| adv.consumer.clone()),
        Err(_) => adv.consumer.clone(),
    };
    let raw = match stream.get_raw_message(adv.stream_seq).await {
        Ok(m) => m,
        Err(error)
            if matches!(
                error.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            // The stream no longer has it (limits, purge): nothing to save,
            // and the loss is counted.
            tracing::error!(%error, stream = %adv.stream, seq = adv.stream_seq, "message of a MaxDeliver advisory is gone from the stream: lost");
            Counters::inc(&ctx.counters.backstop_lost);
            return Ok(());
        }
        // Not an answer (the connection, a timeout): retry the advisory.
        Err(error) => return Err(error.into()),
    };
    let Some(topic) = ctx.config.topic_of(raw.subject.as_str()) else {
        tracing::warn!(subject = %raw.subject, "MaxDeliver advisory for a foreign subject ignored");
        return Ok(());
    };
    let fallback = Uuid::from_u64_pair(0, adv.stream_seq);
    let mut env = codec::from_message(topic, raw.payload, Some(&raw.headers), fallback);
    env.attempt = u32::try_from(adv.deliveries).unwrap_or(u32::MAX);
    let class = Classification::new(ErrorCategory::MessageProcessing, Severity::High);
    let mut report = ErrorReport::new(
        class,
        group.clone(),
        format!(
            "JetStream stopped redelivering after {} deliveries (MaxDeliver) to consumer {}",
            adv.deliveries, adv.consumer
        ),
    )
    .with_topic(env.topic.as_str())
    .with_message_id(env.id)
    .with_attempt(env.attempt);
    report.record_recovery(true, Some(false), "dead-letter: max_deliver backstop");
    let letter = DeadLetter::new(
        env,
        report,
        DeadLetterReason::RetriesExhausted,
        group.clone(),
        group,
    );
    // The store is synchronous and may block: keep it off the async workers.
    let pushed = tokio::task::spawn_blocking(move || store.push(&letter)).await?;
    pushed?;
    Counters::inc(&ctx.counters.backstop_dead_letters);
    Ok(())
}
