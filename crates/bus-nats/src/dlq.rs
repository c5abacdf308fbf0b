//! [`NatsDlq`]: dead letters on a JetStream stream, for when the machines
//! that handle messages should not keep them on local disk.

use crate::transport::{Inner, NatsTransport};
use async_nats::jetstream::{self, stream};
use bus_core::{DeadLetter, DeadLetterStore, DlqError, LetterId};
use std::sync::Arc;
use std::time::Duration;

/// A [`DeadLetterStore`] publishing each letter, serialized as JSON, to a
/// JetStream stream (default `BUS_DLQ`, subjects `bus-dlq.<topic>`).
/// `push` returns `Ok` only after the server acknowledged the write (file
/// storage: on disk); the letter id is the de-duplication key, so a push
/// retried after a lost ack is stored once.
///
/// It shares the connection and runtime of a [`NatsTransport`].
#[derive(Clone)]
pub struct NatsDlq {
    inner: Arc<Inner>,
    stream: String,
    subject_prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for NatsDlq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDlq")
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsDlq {
    /// The DLQ stream `stream` (created if missing) with subjects
    /// `<subject_prefix>.<topic>`, on `transport`'s connection.
    pub fn new(
        transport: &NatsTransport,
        stream: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> Result<Self, bus_core::TransportError> {
        let inner = Arc::clone(&transport.inner);
        let stream = stream.into();
        let subject_prefix = subject_prefix.into();
        let cfg = stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subject_prefix}.>")],
            storage: stream::StorageType::File,
            num_replicas: inner.config.replicas,
            duplicate_window: inner.config.duplicate_window,
            ..Default::default()
        };
        let js = inner.js.clone();
        let timeout = inner.config.request_timeout;
        inner
            .call(timeout, async move { js.get_or_create_stream(cfg).await })
            .ok_or(bus_core::TransportError::Timeout(timeout))?
            .map_err(crate::transport::other)?;
        Ok(Self {
            inner,
            stream,
            subject_prefix,
            timeout,
        })
    }

    /// The default DLQ: stream `BUS_DLQ`, subjects `bus-dlq.<topic>`.
    pub fn default_for(transport: &NatsTransport) -> Result<Self, bus_core::TransportError> {
        Self::new(transport, "BUS_DLQ", "bus-dlq")
    }

    /// The stream name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Reads every letter in the stream, oldest first (for tools and tests).
    pub fn letters(&self) -> Result<Vec<DeadLetter>, DlqError> {
        let js = self.inner.js.clone();
        let name = self.stream.clone();
        self.inner
            .call(self.timeout * 4, async move {
                let mut out = Vec::new();
                let s = js.get_stream(&name).await.map_err(boxed)?;
                let info = s.get_info().await.map_err(boxed)?;
                for seq in info.state.first_sequence..=info.state.last_sequence {
                    if info.state.messages == 0 {
                        break;
                    }
                    if let Ok(m) = s.get_raw_message(seq).await {
                        let letter: DeadLetter = serde_json::from_slice(&m.payload)
                            .map_err(|e| DlqError::Corrupt(e.to_string()))?;
                        out.push(letter);
                    }
                }
                Ok(out)
            })
            .unwrap_or(Err(DlqError::Io(std::io::ErrorKind::TimedOut.into())))
    }

    /// Deletes the DLQ stream (for tests and demos).
    pub fn delete(&self) -> Result<(), DlqError> {
        let js = self.inner.js.clone();
        let name = self.stream.clone();
        self.inner
            .call(self.timeout, async move {
                js.delete_stream(&name).await.map(|_| ())
            })
            .unwrap_or_else(|| Ok(()))
            .map_err(boxed)
    }
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> DlqError {
    DlqError::Other(Box::new(e))
}

impl DeadLetterStore for NatsDlq {
    fn push(&self, letter: &DeadLetter) -> Result<LetterId, DlqError> {
        let body = serde_json::to_vec(letter).map_err(|e| DlqError::Other(Box::new(e)))?;
        let subject = format!("{}.{}", self.subject_prefix, letter.envelope.topic.as_str());
        let msg = jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(letter.id.to_string())
            .header("Bus-Reason", letter.reason.as_str());
        let js = self.inner.js.clone();
        let client = self.inner.client.clone();
        let id = letter.id;
        self.inner
            .call(self.timeout, async move {
                Inner::wait_connected(&client).await;
                js.send_publish(subject, msg).await?.await?;
                Ok::<_, async_nats::Error>(())
            })
            .ok_or(DlqError::Io(std::io::ErrorKind::TimedOut.into()))?
            .map_err(DlqError::Other)?;
        Ok(id)
    }
}
