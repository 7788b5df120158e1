//! Reading a request body within limits.
//!
//! `max_request_bytes` bounds the bytes on the wire and, separately, the
//! decompressed size of a gzip body, so a small gzip bomb cannot expand
//! into memory. Chunked bodies need nothing special: hyper de-chunks them.

use std::io::Read;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{
    body::Incoming,
    header::{CONTENT_ENCODING, CONTENT_LENGTH},
    HeaderMap, StatusCode,
};

use super::Refusal;

/// Reads the whole body (decompressed if `Content-Encoding: gzip`). Over
/// `max` bytes either way → 413; a broken stream or bad gzip → 400;
/// another encoding → 415.
pub async fn read(headers: &HeaderMap, body: Incoming, max: usize) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::too_large(format!(
            "request body is larger than max_request_bytes ({max} bytes)"
        ))
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    let collected = Limited::new(body, max).collect().await.map_err(|error| {
        if error
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            too_large()
        } else {
            Refusal::bad_request(format!("could not read the request body: {error}"))
        }
    })?;
    let raw = collected.to_bytes();
    match encoding(headers)?.as_deref() {
        None | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => gunzip(&raw, max),
        Some(other) => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding `{other}` is not supported (use gzip or none)"),
        )),
    }
}

fn encoding(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    match headers.get(CONTENT_ENCODING) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim().to_ascii_lowercase()))
            .map_err(|_| Refusal::bad_request("Content-Encoding is not valid text")),
    }
}

/// Decompresses at most `max` bytes; one byte more means the body is too large.
fn gunzip(raw: &[u8], max: usize) -> Result<Bytes, Refusal> {
    let mut decoder = flate2::read::MultiGzDecoder::new(raw).take(max as u64 + 1);
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(max + 1));
    decoder
        .read_to_end(&mut out)
        .map_err(|error| Refusal::bad_request(format!("invalid gzip body: {error}")))?;
    if out.len() > max {
        return Err(Refusal::too_large(format!(
            "decompressed request body is larger than max_request_bytes ({max} bytes)"
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gunzip_round_trips_within_the_limit() {
        let body = gzip(b"{\"a\":1}");
        assert_eq!(&gunzip(&body, 100).unwrap()[..], b"{\"a\":1}");
    }

    #[test]
    fn gzip_bomb_is_refused_without_inflating_it_all() {
        let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000);
        let refused = gunzip(&bomb, 512_000).unwrap_err();
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn corrupt_gzip_is_a_bad_request() {
        let refused = gunzip(b"not gzip at all", 1000).unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    }
}
