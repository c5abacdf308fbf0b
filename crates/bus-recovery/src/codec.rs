//! Fallback codecs for SERIALIZATION failures: a topic may register one
//! transcoder (say, an old schema to the current one). On a payload's first
//! SERIALIZATION failure the payload is transcoded in place, the envelope is
//! marked with [`FALLBACK_HEADER`], and it is retried once; a payload that
//! already went through the fallback, or whose topic has none, is poison and
//! is dead-lettered at once.

use bus_errors::HandlerError;
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The header naming the fallback codec a payload was transcoded with.
pub const FALLBACK_HEADER: &str = "bus-fallback-codec";

/// A transcoder: the failing payload in, a payload the handler can read out.
pub type CodecFn = dyn Fn(&[u8]) -> Result<Bytes, HandlerError> + Send + Sync;

/// A named fallback codec.
#[derive(Clone)]
pub struct FallbackCodec {
    name: String,
    transcode: Arc<CodecFn>,
}

impl FallbackCodec {
    /// A codec called `name`.
    pub fn new(
        name: impl Into<String>,
        transcode: impl Fn(&[u8]) -> Result<Bytes, HandlerError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            transcode: Arc::new(transcode),
        }
    }

    /// Its name (written to [`FALLBACK_HEADER`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Transcodes `payload`.
    pub fn transcode(&self, payload: &[u8]) -> Result<Bytes, HandlerError> {
        (self.transcode)(payload)
    }
}

impl fmt::Debug for FallbackCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackCodec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Fallback codecs by exact topic name.
#[derive(Debug, Clone, Default)]
pub struct FallbackCodecs {
    by_topic: HashMap<String, FallbackCodec>,
}

impl FallbackCodecs {
    /// Registers `codec` for `topic` (replacing an earlier one).
    pub fn insert(&mut self, topic: impl Into<String>, codec: FallbackCodec) {
        self.by_topic.insert(topic.into(), codec);
    }

    /// The codec for `topic`.
    pub fn get(&self, topic: &str) -> Option<&FallbackCodec> {
        self.by_topic.get(topic)
    }
}
