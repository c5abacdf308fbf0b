//! Request parameters: a query string or a JSON object body, read into a
//! dead-letter [`Filter`].

use bus_dlq::{Filter, LetterId, LetterState};
use bus_errors::ErrorCategory;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Named string parameters.
#[derive(Debug, Default)]
pub(crate) struct Params {
    values: BTreeMap<String, String>,
    /// `ids` of a JSON body.
    pub(crate) ids: Vec<String>,
}

impl Params {
    /// From `a=1&b=x%20y` (`+` is a space).
    pub(crate) fn from_query(query: Option<&str>) -> Self {
        let mut values = BTreeMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            if !v.is_empty() {
                values.insert(decode(k), v);
            }
        }
        Self {
            values,
            ids: Vec::new(),
        }
    }

    /// From a JSON object body; string, number and boolean values are read
    /// as text, `ids` as an array of strings.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, String> {
        if body.is_empty() {
            return Ok(Self::default());
        }
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err("the body must be a JSON object".into());
        };
        let mut out = Self::default();
        for (k, v) in map {
            match (k.as_str(), v) {
                ("ids", serde_json::Value::Array(ids)) => {
                    for id in ids {
                        match id {
                            serde_json::Value::String(s) => out.ids.push(s),
                            _ => return Err("ids must be strings".into()),
                        }
                    }
                }
                (_, serde_json::Value::String(s)) => {
                    if !s.is_empty() {
                        out.values.insert(k, s);
                    }
                }
                (_, serde_json::Value::Null) => {}
                (_, v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    out.values.insert(k, v.to_string());
                }
                _ => return Err(format!("{k}: expected a string")),
            }
        }
        Ok(out)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A non-negative number, or `default` when absent.
    pub(crate) fn number(&self, key: &str, default: usize) -> Result<usize, String> {
        self.get(key).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("{key}: expected a number, got {v:?}"))
        })
    }

    /// The dead-letter filter these parameters describe: `topic`, `group`
    /// (the subscriber that gave up), `category`, `reason`, `state` (or
    /// `any`), `signature`, `text`, `since`, `until` (RFC 3339 or an age
    /// such as `15m`) and the body's `ids`.
    pub(crate) fn filter(&self, now: SystemTime) -> Result<Filter, String> {
        let mut f = Filter::all();
        if let Some(v) = self.get("topic") {
            f = f.topic(v);
        }
        if let Some(v) = self.get("group") {
            f = f.component(v);
        }
        if let Some(v) = self.get("category") {
            let c: ErrorCategory = v.parse().map_err(|e| format!("category: {e}"))?;
            f = f.category(c);
        }
        if let Some(v) = self.get("reason") {
            f = f.reason(v);
        }
        if let Some(v) = self.get("state").filter(|s| *s != "any") {
            let s: LetterState = v.parse().map_err(|e| format!("state: {e}"))?;
            f = f.state(s);
        }
        if let Some(v) = self.get("signature") {
            f = f.signature(v);
        }
        if let Some(v) = self.get("text") {
            f = f.text(v);
        }
        let since = self
            .get("since")
            .map(|v| time("since", v, now))
            .transpose()?;
        let until = self
            .get("until")
            .map(|v| time("until", v, now))
            .transpose()?;
        f = f.between(since, until);
        if !self.ids.is_empty() {
            f = f.ids(ids(&self.ids)?);
        }
        Ok(f)
    }
}

/// Letter ids from text; any that is not a UUID is refused.
pub(crate) fn ids(texts: &[String]) -> Result<Vec<LetterId>, String> {
    texts
        .iter()
        .map(|t| {
            t.parse::<LetterId>()
                .map_err(|_| format!("not a letter id: {:?}", excerpt(t)))
        })
        .collect()
}

/// At most 40 characters of `s`, for echoing it back.
pub(crate) fn excerpt(s: &str) -> String {
    s.chars().take(40).collect()
}

fn time(key: &str, v: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return Ok(t);
    }
    humantime::parse_duration(v)
        .map(|age| now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
        .map_err(|_| format!("{key}: expected an RFC 3339 time or an age such as 15m"))
}

/// Percent-decoding; an invalid escape is kept as it is.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn query_strings_decode() {
        let p = Params::from_query(Some("topic=orders.created&text=db+10%2E0&bad=%zz&end=%4"));
        assert_eq!(p.get("topic"), Some("orders.created"));
        assert_eq!(p.get("text"), Some("db 10.0"));
        assert_eq!(p.get("bad"), Some("%zz"));
        assert_eq!(p.get("end"), Some("%4"));
    }

    #[test]
    fn filters_read_every_field_and_refuse_bad_values() {
        let p = Params::from_query(Some(
            "topic=t&group=g&category=timeout&reason=retries_exhausted&state=dead&since=1h",
        ));
        let f = p.filter(SystemTime::now()).unwrap();
        assert_eq!(f.topic.as_deref(), Some("t"));
        assert_eq!(f.component.as_deref(), Some("g"));
        assert_eq!(f.category, Some(ErrorCategory::Timeout));
        assert_eq!(f.reason.as_deref(), Some("retries_exhausted"));
        assert_eq!(f.state, Some(LetterState::Dead));
        assert!(f.since.is_some());
        for bad in ["category=nope", "state=gone", "since=yesterday"] {
            assert!(
                Params::from_query(Some(bad))
                    .filter(SystemTime::now())
                    .is_err()
            );
        }
        let body = Params::from_json(br#"{"ids":["not-a-uuid"]}"#).unwrap();
        assert!(body.filter(SystemTime::now()).is_err());
    }
}
