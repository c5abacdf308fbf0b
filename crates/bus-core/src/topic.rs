use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The longest topic accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// A validated topic name: dot-separated segments of ASCII letters, digits,
/// `_` and `-` (for example `orders.created`), at most [`MAX_TOPIC_LEN`]
/// bytes. The same rules as NATS subject tokens, so a topic maps one-to-one
/// onto a JetStream subject. Cheap to clone.
///
/// ```
/// use bus_core::{Topic, TopicError};
///
/// let t = Topic::new("orders.created").unwrap();
/// assert_eq!(t.as_str(), "orders.created");
/// assert!(matches!(Topic::new("orders..created"), Err(TopicError::EmptySegment { position: 7 })));
/// assert!(matches!(Topic::new("orders.*"), Err(TopicError::InvalidChar { ch: '*', position: 7 })));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(Arc<str>);

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty.
    #[error("topic is empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Two dots in a row, or a leading or trailing dot.
    #[error("topic has an empty segment at byte {position}")]
    EmptySegment {
        /// Byte offset of the empty segment.
        position: usize,
    },
    /// A character outside `[A-Za-z0-9_-]` and `.`.
    #[error(
        "topic has invalid character {ch:?} at byte {position}; allowed: A-Z a-z 0-9 _ - and . between segments"
    )]
    InvalidChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        position: usize,
    },
}

/// A topic name as an error message shows it: escaped, and cut after
/// [`SHOWN_CHARS`] characters with its length, so a megabyte of rejected
/// input never becomes a megabyte of log line.
pub(crate) struct Shown<'a>(pub(crate) &'a str);

/// How much of a rejected name an error message repeats.
const SHOWN_CHARS: usize = 64;

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

impl Topic {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        validate(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong {
            len: name.len(),
            max: MAX_TOPIC_LEN,
        });
    }
    let mut segment_start = 0;
    for (position, ch) in name.char_indices() {
        match ch {
            '.' => {
                if position == segment_start {
                    return Err(TopicError::EmptySegment { position });
                }
                segment_start = position + 1;
            }
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => {}
            _ => return Err(TopicError::InvalidChar { ch, position }),
        }
    }
    if segment_start == name.len() {
        return Err(TopicError::EmptySegment {
            position: name.len(),
        });
    }
    Ok(())
}

impl TryFrom<String> for Topic {
    type Error = TopicError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate(&s)?;
        Ok(Self(Arc::from(s)))
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Topic::new(s)
    }
}

impl From<Topic> for String {
    fn from(t: Topic) -> String {
        t.0.to_string()
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_shows_a_long_name_cut_with_its_length() {
        let long = "a".repeat(100_000);
        let shown = Shown(&long).to_string();
        assert_eq!(shown, format!("\"{}\"... (100000 bytes)", "a".repeat(64)));
        assert_eq!(Shown("orders.created").to_string(), "\"orders.created\"");
        // Cut on a character boundary, never inside one.
        let wide = "é".repeat(65);
        assert!(
            Shown(&wide)
                .to_string()
                .starts_with(&format!("\"{}\"...", "é".repeat(64)))
        );
    }
    use rstest::rstest;

    #[rstest]
    #[case("a")]
    #[case("orders.created")]
    #[case("a-b_c.D9")]
    fn valid_topics_are_accepted(#[case] name: &str) {
        assert_eq!(Topic::new(name).unwrap().as_str(), name);
    }

    #[rstest]
    #[case("", TopicError::Empty)]
    #[case(".a", TopicError::EmptySegment { position: 0 })]
    #[case("a.", TopicError::EmptySegment { position: 2 })]
    #[case("a..b", TopicError::EmptySegment { position: 2 })]
    #[case("a b", TopicError::InvalidChar { ch: ' ', position: 1 })]
    #[case("a.>", TopicError::InvalidChar { ch: '>', position: 2 })]
    #[case("é", TopicError::InvalidChar { ch: 'é', position: 0 })]
    fn invalid_topics_are_refused_with_the_reason(#[case] name: &str, #[case] err: TopicError) {
        assert_eq!(Topic::new(name), Err(err));
    }

    #[test]
    fn overlong_topics_are_refused_and_the_limit_is_inclusive() {
        assert!(Topic::new(&"a".repeat(MAX_TOPIC_LEN)).is_ok());
        assert_eq!(
            Topic::new(&"a".repeat(256)),
            Err(TopicError::TooLong { len: 256, max: 255 })
        );
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<Topic>("\"ok.topic\"").is_ok());
        assert!(serde_json::from_str::<Topic>("\"bad topic\"").is_err());
    }
}
