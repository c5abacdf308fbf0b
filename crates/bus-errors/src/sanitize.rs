use crate::ErrorReport;

/// Truncates and redacts an [`ErrorReport`] before it leaves the process.
///
/// Context values longer than `max_value_chars` are cut at a character
/// boundary and marked `…[truncated N chars]`; values whose key contains a
/// sensitive word (case-insensitive) become `[REDACTED]`. The error message,
/// source chain and backtrace are bounded too (`max_message_chars`), since
/// handlers often format payloads into them.
///
/// ```
/// use bus_errors::{Classification, ErrorReport, Sanitizer};
///
/// let mut r = ErrorReport::new(Classification::FALLBACK, "api", "failed")
///     .with_context("Authorization", "Bearer abc")
///     .with_context("body", "x".repeat(5000));
/// Sanitizer::default().sanitize(&mut r);
/// assert_eq!(r.context["Authorization"], "[REDACTED]");
/// assert!(r.context["body"].chars().count() < 1100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitizer {
    /// Longest context value kept, in characters (default 1000).
    pub max_value_chars: usize,
    /// Longest message, source-chain entry and backtrace kept, in characters
    /// (default 4096).
    pub max_message_chars: usize,
    /// Key fragments whose values are redacted (lowercase).
    pub sensitive_keys: Vec<String>,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Self {
            max_value_chars: 1000,
            max_message_chars: 4096,
            sensitive_keys: [
                "password",
                "passwd",
                "secret",
                "token",
                "api_key",
                "apikey",
                "authorization",
                "cookie",
                "credential",
                "private_key",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl Sanitizer {
    /// Adds a key fragment to redact.
    #[must_use]
    pub fn redact(mut self, key_fragment: &str) -> Self {
        self.sensitive_keys.push(key_fragment.to_ascii_lowercase());
        self
    }

    /// Whether values under `key` are redacted.
    pub fn is_sensitive(&self, key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        self.sensitive_keys.iter().any(|s| k.contains(s.as_str()))
    }

    /// Truncates and redacts `report` in place.
    pub fn sanitize(&self, report: &mut ErrorReport) {
        for (k, v) in report.context.iter_mut() {
            if self.is_sensitive(k) {
                *v = "[REDACTED]".to_owned();
            } else {
                truncate(v, self.max_value_chars);
            }
        }
        truncate(&mut report.message, self.max_message_chars);
        for s in &mut report.source_chain {
            truncate(s, self.max_message_chars);
        }
        if let Some(bt) = &mut report.backtrace {
            truncate(bt, self.max_message_chars);
        }
    }
}

fn truncate(s: &mut String, max_chars: usize) {
    if s.len() <= max_chars {
        return; // byte length bounds char count: nothing to cut
    }
    if let Some((cut, _)) = s.char_indices().nth(max_chars) {
        let dropped = s[cut..].chars().count();
        s.truncate(cut);
        s.push_str(&format!("…[truncated {dropped} chars]"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Classification;

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut r = ErrorReport::new(Classification::FALLBACK, "c", "m")
            .with_context("k", "é".repeat(1500));
        Sanitizer::default().sanitize(&mut r);
        assert!(r.context["k"].starts_with(&"é".repeat(1000)));
        assert!(r.context["k"].ends_with("…[truncated 500 chars]"));
    }

    #[test]
    fn sensitive_keys_match_case_insensitively_and_are_configurable() {
        let s = Sanitizer::default().redact("SSN");
        let mut r = ErrorReport::new(Classification::FALLBACK, "c", "m")
            .with_context("DB_PASSWORD", "hunter2")
            .with_context("customer_ssn", "123")
            .with_context("order", "42");
        s.sanitize(&mut r);
        assert_eq!(r.context["DB_PASSWORD"], "[REDACTED]");
        assert_eq!(r.context["customer_ssn"], "[REDACTED]");
        assert_eq!(r.context["order"], "42");
    }

    #[test]
    fn short_values_are_untouched() {
        let mut r = ErrorReport::new(Classification::FALLBACK, "c", "short").with_context("k", "v");
        let before = r.clone();
        Sanitizer::default().sanitize(&mut r);
        assert_eq!(r, before);
    }
}
