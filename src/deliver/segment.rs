//! Requests to Segment's tracking API (segment.md §10).
//!
//! `POST {api_url}/v1/batch` with Basic auth (the destination write key as
//! username), body `{"batch": [...], "sentAt": <now>, "writeKey": <key>}`,
//! gzip-compressed when that makes the request smaller. `sentAt` is set at
//! each send, so Segment's own skew correction measures only the network.

use std::io::Write;

use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use serde_json::Value;

use super::{Outbound, RequestError};
use crate::clock;

/// Segment's limit per message, strict (segment.md §7.1: the libraries use
/// 32,000 bytes).
pub const MAX_SENT_MESSAGE_BYTES: usize = 32_000;
/// Messages a request may carry (segment.md §7.1: 2,500 a request).
pub const MAX_BATCH_MESSAGES: usize = 2_500;
/// Bytes of messages a request may carry, leaving room for the envelope
/// within Segment's 500 KB (segment.md §7.1; analytics-python cuts at this).
pub const MAX_BATCH_BYTES: usize = 475_000;

/// Builds the batch request for `messages` (each already a serialised
/// Segment message). Fails only if the write key cannot be a header value
/// (the message never contains the key).
pub fn batch_request(
    api_url: &str,
    write_key: &str,
    messages: &[String],
    now: i64,
) -> Result<Outbound, RequestError> {
    let mut body = String::with_capacity(messages.iter().map(|m| m.len() + 1).sum::<usize>() + 128);
    body.push_str("{\"batch\":");
    body.push_str(&super::json_array(messages.iter().map(String::as_str)));
    body.push_str(",\"sentAt\":\"");
    body.push_str(&clock::format_ms(now));
    body.push_str("\",\"writeKey\":");
    body.push_str(&Value::String(write_key.to_owned()).to_string());
    body.push('}');
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
    let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
        .map_err(|_| RequestError::InvalidCredential("write key"))?;
    authorization.set_sensitive(true);
    let mut headers = vec![
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (USER_AGENT, HeaderValue::from_static(super::USER_AGENT)),
        (AUTHORIZATION, authorization),
    ];
    let body = match gzip(body.as_bytes()) {
        Some(compressed) if compressed.len() < body.len() => {
            headers.push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
            Bytes::from(compressed)
        }
        _ => Bytes::from(body),
    };
    Ok(Outbound {
        url: format!("{}/v1/batch", api_url.trim_end_matches('/')),
        headers,
        body,
    })
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    // Fast compression: JSON shrinks ~5x at level 1, and the CPU goes to
    // delivering more, not squeezing harder.
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn decoded(request: &Outbound) -> Value {
        let mut text = String::new();
        if request
            .headers
            .iter()
            .any(|(name, _)| name == CONTENT_ENCODING)
        {
            flate2::read::GzDecoder::new(&request.body[..])
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text = String::from_utf8(request.body.to_vec()).unwrap();
        }
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn batch_carries_messages_sent_at_and_basic_auth() {
        let messages = vec![r#"{"type":"track","event":"custom"}"#.to_owned(); 20];
        let request = batch_request(
            "https://api.segment.io/",
            "Qx4p",
            &messages,
            1_715_679_110_000,
        )
        .unwrap();
        assert_eq!(request.url, "https://api.segment.io/v1/batch");
        let body = decoded(&request);
        assert_eq!(body["batch"].as_array().unwrap().len(), 20);
        assert_eq!(body["sentAt"], "2024-05-14T09:31:50.000Z");
        assert_eq!(body["writeKey"], "Qx4p");
        let auth = request
            .headers
            .iter()
            .find(|(n, _)| n == AUTHORIZATION)
            .unwrap()
            .1
            .to_str()
            .unwrap();
        assert_eq!(auth, "Basic UXg0cDo=");
        assert!(!format!("{request:?}").contains("Qx4p"));
    }

    #[test]
    fn gzip_only_when_it_makes_the_request_smaller() {
        let many =
            vec![r#"{"type":"track","event":"custom","properties":{"k":"v"}}"#.to_owned(); 50];
        let request = batch_request("http://x", "k", &many, 0).unwrap();
        assert!(request
            .headers
            .iter()
            .any(|(n, v)| n == CONTENT_ENCODING && v == "gzip"));
        let tiny = batch_request("http://x", "k", &[], 0).unwrap();
        assert!(!tiny.headers.iter().any(|(n, _)| n == CONTENT_ENCODING));
        assert_eq!(decoded(&tiny)["batch"], serde_json::json!([]));
    }
}
