//! What ingest keeps of a refusal, and how much: the row the refusal log
//! stores, its excerpt with write keys redacted, and the rate limit that
//! keeps a flood of garbage from filling the disk or slowing valid ingest.
//!
//! Does not own writing the rows (the store's writer does, with its group
//! commit) or the row cap (the store drops the oldest rows).

use std::{sync::Mutex, time::Instant};

use super::Refused;
use crate::domain::accepted::NewRefusal;

/// Bytes of a message kept in its refusal row.
pub const EXCERPT_BYTES: usize = 1024;
/// Bytes of a whole request's body read for its excerpt (before redaction).
const BODY_EXCERPT_BYTES: usize = 4 * 1024;

/// A token bucket: `rate` refusals a second, bursts of as many.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<(f64, Instant)>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            state: Mutex::new((f64::MAX, Instant::now())),
        }
    }
}

impl Limiter {
    /// How many of `wanted` refusals may be recorded now at `rate` a second
    /// (the rate is passed each time, so a config reload changes it).
    pub fn admit(&self, wanted: usize, rate: u32) -> usize {
        if wanted == 0 {
            return 0;
        }
        // std Mutex: held for a few arithmetic operations, never across an await.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        let rate = f64::from(rate);
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        let admitted = (*tokens).floor().min(wanted as f64).max(0.0);
        *tokens -= admitted;
        admitted as usize
    }
}

/// The row recording `refused`, answered with `status` at `at`. `body` is
/// the request's body, the excerpt when the refusal has none of its own.
pub fn row(refused: &Refused, path: &str, status: u16, at: i64, body: &[u8]) -> NewRefusal {
    let excerpt = match &refused.excerpt {
        Some(text) => redact(text),
        None => {
            let head = &body[..body.len().min(BODY_EXCERPT_BYTES)];
            redact(&String::from_utf8_lossy(head))
        }
    };
    NewRefusal {
        at,
        source: refused.source.clone(),
        path: path.to_owned(),
        item: refused.index.map(|index| index as i64),
        status,
        code: refused.refusal.code.to_owned(),
        reason: refused.refusal.message.clone(),
        message_id: refused.message_id.clone(),
        excerpt: cut(excerpt, EXCERPT_BYTES),
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The JSON key whose string value is a credential (Segment's write key,
/// which analytics.js also puts into every message of a batch).
const SECRET_KEY: &str = "\"writeKey\"";

/// `text` with the string value of every `"writeKey"` replaced by
/// `"[redacted]"`. Works on any text, JSON or not, whole or cut short: a
/// value that runs to the end is redacted to the end.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find(SECRET_KEY) {
        let after_key = found + SECRET_KEY.len();
        out.push_str(&rest[..after_key]);
        rest = &rest[after_key..];
        // `: "` with any white space around the colon.
        let value = rest.trim_start();
        let Some(value) = value.strip_prefix(':').map(str::trim_start) else {
            continue;
        };
        let Some(inside) = value.strip_prefix('"') else {
            continue;
        };
        out.push_str(&rest[..rest.len() - inside.len()]);
        out.push_str("[redacted]");
        rest = match string_end(inside) {
            Some(end) => &inside[end..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// The offset of the quote closing a JSON string whose contents begin
/// `inside`; `None` when it is not closed.
fn string_end(inside: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in inside.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(at),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_keys_are_redacted_wherever_they_stand() {
        assert_eq!(
            redact(r#"{"writeKey":"abc","event":"E","batch":[{"writeKey" : "x\"y"}]}"#),
            r#"{"writeKey":"[redacted]","event":"E","batch":[{"writeKey" : "[redacted]"}]}"#
        );
        // Cut short inside the value: redacted to the end.
        assert_eq!(
            redact(r#"{"writeKey":"abcdef"#),
            r#"{"writeKey":"[redacted]"#
        );
        // Not a string value, or no value: left as it is.
        assert_eq!(redact(r#"{"writeKey":12}"#), r#"{"writeKey":12}"#);
        assert_eq!(redact(r#"{"writeKey""#), r#"{"writeKey""#);
        assert_eq!(redact("no keys here"), "no keys here");
    }

    #[test]
    fn excerpts_are_cut_to_one_kilobyte_on_a_character_boundary() {
        let text = "é".repeat(1000);
        let cut = cut(text, EXCERPT_BYTES);
        assert!(cut.len() <= EXCERPT_BYTES && cut.len() >= EXCERPT_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_limiter_admits_a_burst_then_its_rate() {
        let limiter = Limiter::default();
        assert_eq!(limiter.admit(500, 100), 100);
        assert_eq!(limiter.admit(10, 100), 0);
        assert_eq!(limiter.admit(0, 100), 0);
        {
            // A second later the bucket is full again (and no fuller).
            let mut state = limiter.state.lock().unwrap();
            state.1 -= std::time::Duration::from_secs(5);
        }
        assert_eq!(limiter.admit(500, 100), 100);
    }
}
