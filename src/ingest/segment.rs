//! Segment's tracking API on the way in (segment.md §2–§6).
//!
//! Owns: which paths are Segment's, finding the write key (Basic username,
//! then the body's `writeKey`, then the first item's), the webhook
//! signature, the 32 KB per-message limit, and taking a request message by
//! message: each is validated and normalised by `normalize.rs`, and an
//! invalid one is refused alone (index, reason code and text) while the
//! rest are stored. Output is a [`Parsed`] for the writer. Does not own
//! mapping or delivery.

use base64::Engine;
use hyper::{header::AUTHORIZATION, HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{value::RawValue, Value};

use super::{
    message::{self, Message},
    normalize::{normalize, Label, Shared},
    Parsed, Refusal, Refused, RequestRefused,
};
use crate::{
    config::{Config, SegmentSource},
    domain::{
        accepted::{IngestBatch, NewEvent},
        Protocol,
    },
};

/// The largest Segment message ingest accepts (32 KiB, as analytics-python
/// counts Segment's 32 KB); what goes out is held to
/// `deliver::segment::MAX_SENT_MESSAGE_BYTES`, the strictest library's.
pub const MAX_ACCEPTED_MESSAGE_BYTES: usize = 32 * 1024;

/// A Segment ingest path: one message of a known type, a batch envelope, or
/// what Segment's Webhooks destinations push (one message or an array).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentPath {
    Single(&'static str),
    Batch,
    Webhook,
}

/// The endpoint for `path`, including the one-letter aliases analytics.js
/// uses and `/v1/import`; `None` for anything else.
pub fn parse_path(path: &str) -> Option<SegmentPath> {
    if path.trim_end_matches('/') == "/segment/webhook" {
        return Some(SegmentPath::Webhook);
    }
    let tail = path.strip_prefix("/v1/")?.trim_end_matches('/');
    Some(match tail {
        "track" | "t" => SegmentPath::Single("track"),
        "identify" | "i" => SegmentPath::Single("identify"),
        "page" | "p" => SegmentPath::Single("page"),
        "screen" | "s" => SegmentPath::Single("screen"),
        "group" | "g" => SegmentPath::Single("group"),
        "alias" | "a" => SegmentPath::Single("alias"),
        "batch" | "import" | "b" => SegmentPath::Batch,
        _ => return None,
    })
}

/// The batch envelope. Other top-level keys (analytics-go's request
/// `messageId`) are ignored.
#[derive(Deserialize, Default)]
struct Envelope<'a> {
    /// Borrowed from the body: each message is parsed once, not copied first.
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    #[serde(rename = "sentAt", borrow)]
    sent_at: Option<&'a RawValue>,
    context: Option<Value>,
    integrations: Option<Value>,
}

/// Parses, authenticates, validates and normalises one request.
///
/// A request that carries several messages is taken message by message, as
/// Segment's API does: the valid ones become the batch's events, each
/// invalid one (breaks the spec, over 32 KB) is in `refused` with its index
/// and reason, and the request still succeeds. `Err` (nothing stored) is
/// for what makes the whole request unusable: malformed JSON, no batch
/// array, no or an unknown key, a bad signature, or the one message of a
/// single-message endpoint refused.
pub fn parse(
    endpoint: SegmentPath,
    headers: &HeaderMap,
    body: &[u8],
    config: &Config,
    received_at: i64,
) -> Result<Parsed, RequestRefused> {
    let basic = basic_username(headers)?;
    let basic_source = basic
        .as_deref()
        .map(|key| find_source(config, key))
        .transpose()?;
    // Refused before the body names a source: the Basic key's, if any.
    let refused_early = |refusal: Refusal| match basic_source {
        Some(source) => Box::new(Refused::from(refusal).from_source(&source.name)),
        None => Box::new(Refused::from(refusal)),
    };
    // Lone surrogates are repaired in what is parsed and stored; a webhook
    // signature covers the bytes as sent.
    let repaired = super::surrogates::repair(body);
    let request = read_request(endpoint, repaired.as_ref()).map_err(refused_early)?;
    // A single message that is no JSON object is the request's problem
    // whatever the key: said before asking for one.
    if request.labels.is_none() {
        if let Err(refusal) = &request.items[0].message {
            if matches!(
                refusal.code,
                "invalid_json" | "not_an_object" | "message_too_large"
            ) {
                return Err(refused_early(refusal.clone()));
            }
        }
    }
    let key = write_key(basic, &request)?;
    let source = find_source(config, &key)?;
    let webhook = endpoint == SegmentPath::Webhook;
    if webhook {
        verify_signature(source, headers, body)
            .map_err(|refusal| Box::new(Refused::from(refusal).from_source(&source.name)))?;
    }
    let (events, refused) = take_messages(request, source, webhook, received_at)?;
    Ok(Parsed {
        batch: IngestBatch {
            source: source.name.clone(),
            protocol: Protocol::Segment,
            received_at,
            meta: None,
            payload_id: None,
            routes: source.routes(),
            events,
            refusals: Vec::new(),
        },
        refused,
    })
}

/// A request's messages, read but not yet validated, with what they share.
struct Request<'a> {
    items: Vec<Item<'a>>,
    envelope: Envelope<'a>,
    /// The call type of a single-message path (`/v1/track` → track).
    path_kind: Option<&'static str>,
    /// The name of the array the messages came in (`batch`, `""` for an
    /// Actions webhook batch); `None` for one message, which is the request.
    labels: Option<&'static str>,
}

/// Reads `body` as `endpoint` expects it. Only a body unusable as a whole
/// (not JSON, no `batch` array) fails.
fn read_request(endpoint: SegmentPath, body: &[u8]) -> Result<Request<'_>, Refusal> {
    Ok(match endpoint {
        SegmentPath::Single(kind) => Request {
            items: vec![single_message(body)],
            envelope: Envelope::default(),
            path_kind: Some(kind),
            labels: None,
        },
        SegmentPath::Batch => {
            let (items, envelope) = batch_messages(body)?;
            Request {
                items,
                envelope,
                path_kind: None,
                labels: Some("batch"),
            }
        }
        SegmentPath::Webhook => {
            let (items, array) = webhook_messages(body)?;
            Request {
                items,
                envelope: Envelope::default(),
                path_kind: None,
                labels: array.then_some(""),
            }
        }
    })
}

/// The write key: the Basic username, else the envelope's `writeKey`, else
/// the first message's; a 401 when there is none.
fn write_key(basic: Option<String>, request: &Request<'_>) -> Result<String, Refusal> {
    basic
        .or_else(|| {
            let key = request.envelope.write_key.as_ref().and_then(Value::as_str);
            key.filter(|key| !key.is_empty()).map(str::to_owned)
        })
        .or_else(|| {
            request
                .items
                .iter()
                .filter_map(|item| item.message.as_ref().ok()?.string("writeKey"))
                .find(|key| !key.is_empty())
        })
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "missing_write_key",
                "no write key: send it as the HTTP Basic username or as writeKey in the body",
            )
        })
}

/// Validates and normalises each message of `request` from `source`: the
/// events to store, and the messages refused alone. The one message of a
/// single-message request refused is the request refused.
fn take_messages(
    request: Request<'_>,
    source: &SegmentSource,
    webhook: bool,
    received_at: i64,
) -> Result<(Vec<NewEvent>, Vec<Refused>), RequestRefused> {
    let Request {
        items,
        envelope,
        path_kind,
        labels,
    } = request;
    let shared = Shared::new(
        envelope.sent_at,
        envelope.context,
        envelope.integrations,
        received_at,
    );
    let mut events = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let label = labels.map_or(Label::Whole, |array| Label::Item(array, index));
        // A refused message keeps its messageId (normalising removes it
        // only from a message that passes).
        let normalized = match item.message {
            Ok(mut message) => normalize(&mut message, label, path_kind, &shared, webhook)
                .map_err(|refusal| (refusal, message.string("messageId"))),
            Err(refusal) => Err((refusal, None)),
        };
        let (refusal, message_id) = match normalized {
            Ok(event) => {
                events.push(event);
                continue;
            }
            Err(failed) => failed,
        };
        let one = Refused {
            message_id,
            ..Refused::from(refusal).from_source(&source.name)
        };
        if labels.is_none() {
            return Err(Box::new(one));
        }
        refused.push(Refused {
            index: Some(index),
            excerpt: Some(excerpt_of(item.raw)),
            ..one
        });
    }
    Ok((events, refused))
}

/// One message of a request: its text as sent and what reading it gave.
struct Item<'a> {
    raw: &'a str,
    message: Result<Message<'a>, Refusal>,
}

/// Enough of a refused message's text for the refusal log's 1 KB excerpt
/// (cut on a character boundary; the log redacts, which handles a value
/// cut short, and cuts it again).
fn excerpt_of(raw: &str) -> String {
    let mut end = raw.len().min(super::refusal_log::EXCERPT_BYTES);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    raw[..end].to_owned()
}

/// Checks `X-Signature` when the source has a `webhook_secret`: lowercase
/// hex HMAC-SHA1 over the exact body bytes, or, for an Actions batch, over
/// the first element's bytes (segment.md §11). Compared in constant time.
fn verify_signature(
    source: &SegmentSource,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    use hmac::Mac;
    let Some(secret) = &source.webhook_secret else {
        return Ok(());
    };
    let refused =
        |message: &str| Refusal::new(StatusCode::UNAUTHORIZED, "invalid_signature", message);
    let signature = headers
        .get("x-signature")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| refused("X-Signature is required for this source"))?;
    let signature =
        decode_hex(signature.trim()).ok_or_else(|| refused("X-Signature is not hex"))?;
    let matches = |bytes: &[u8]| {
        let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.expose().as_bytes())
        else {
            return false;
        };
        mac.update(bytes);
        mac.verify_slice(&signature).is_ok()
    };
    if matches(body) || first_element(body).is_some_and(|first| matches(first.as_bytes())) {
        Ok(())
    } else {
        Err(refused("X-Signature does not match the body"))
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// Element 0 of a JSON array body, as its exact bytes (what an Actions
/// batch's signature covers); `None` for any other body.
fn first_element(body: &[u8]) -> Option<&str> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).ok()?;
    items.first().map(|first| first.get())
}

/// A webhook body: one message (classic, or Actions single) or an array of
/// them (Actions batch, `true`), each read on its own.
fn webhook_messages(body: &[u8]) -> Result<(Vec<Item<'_>>, bool), Refusal> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|error| invalid_json(&error))?;
    if !raw.get().starts_with('[') {
        return Ok((vec![single_message(body)], false));
    }
    let items: Vec<&RawValue> =
        serde_json::from_str(raw.get()).map_err(|error| invalid_json(&error))?;
    let items = items
        .iter()
        .enumerate()
        .map(|(index, item)| item_message(item, Label::Item("", index)))
        .collect();
    Ok((items, true))
}

fn find_source<'c>(config: &'c Config, key: &str) -> Result<&'c SegmentSource, Refusal> {
    config.segment_source_by_key(key).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid_write_key",
            "unknown write key",
        )
    })
}

/// The username of `Authorization: Basic …` (the write key); `None` when
/// there is no Basic header (Bearer tokens are ignored: the body key is used).
fn basic_username(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid_authorization",
            "Authorization is not valid Basic auth",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let Some((scheme, encoded)) = text.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    // Keys encoded without the trailing colon are accepted too (segment.md §3).
    let username = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    Ok((!username.is_empty()).then(|| username.to_owned()))
}

/// The body of a single-message endpoint. Not UTF-8 or not JSON is the
/// whole request's problem (`invalid_json`), and so, here, is every other.
fn single_message(body: &[u8]) -> Item<'_> {
    let Ok(text) = std::str::from_utf8(body) else {
        let error = std::str::from_utf8(body).unwrap_err();
        return Item {
            raw: "",
            message: Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("request body is not valid JSON: {error}"),
            )),
        };
    };
    if body.len() > MAX_ACCEPTED_MESSAGE_BYTES {
        return Item {
            raw: text,
            message: Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                format!(
                    "message is {} bytes; Segment's limit is {MAX_ACCEPTED_MESSAGE_BYTES} bytes per message",
                    body.len()
                ),
            )),
        };
    }
    let message = message::check(text)
        .map_err(|error| invalid_json(&error))
        .and_then(|()| {
            Message::parse(text).map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "not_an_object",
                    "the body must be a JSON object (one Segment message)",
                )
            })
        });
    Item { raw: text, message }
}

/// A batch body: the envelope, and each element read on its own. Only a
/// body that is not JSON, or has no `batch` array, fails as a whole.
fn batch_messages(body: &[u8]) -> Result<(Vec<Item<'_>>, Envelope<'_>), Refusal> {
    let mut envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_batch",
                format!("batch envelope: {error}"),
            )
        } else {
            invalid_json(&error)
        }
    })?;
    let items = envelope.batch.take().ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            "batch: missing; a batch body is {\"batch\": [ ... ]}",
        )
    })?;
    let items = items
        .iter()
        .enumerate()
        .map(|(index, item)| item_message(item, Label::Item("batch", index)))
        .collect();
    Ok((items, envelope))
}

/// One element of an array (named `label` in refusals): within Segment's
/// size limit, every value readable, and an object.
fn item_message(item: &RawValue, label: Label) -> Item<'_> {
    let raw = item.get();
    // Formatted only for a refusal: `batch[3]: …`.
    let refuse = |code, reason: String| {
        let place = label.to_string();
        let place = place.trim_end_matches('.');
        Refusal::new(StatusCode::BAD_REQUEST, code, format!("{place}: {reason}"))
    };
    let message = if raw.len() > MAX_ACCEPTED_MESSAGE_BYTES {
        Err(refuse(
            "message_too_large",
            format!(
                "message is {} bytes; Segment's limit is {MAX_ACCEPTED_MESSAGE_BYTES} bytes per message",
                raw.len()
            ),
        ))
    } else {
        message::check(raw)
            .map_err(|error| refuse("invalid_json", error.to_string()))
            .and_then(|()| {
                Message::parse(raw)
                    .map_err(|_| refuse("not_an_object", "must be a JSON object".to_owned()))
            })
    };
    Item { raw, message }
}

fn invalid_json(error: &serde_json::Error) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        format!("request body is not valid JSON: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_include_short_forms_and_import() {
        assert_eq!(parse_path("/v1/t"), Some(SegmentPath::Single("track")));
        assert_eq!(
            parse_path("/v1/screen"),
            Some(SegmentPath::Single("screen"))
        );
        assert_eq!(parse_path("/v1/import"), Some(SegmentPath::Batch));
        assert_eq!(parse_path("/v1/b"), Some(SegmentPath::Batch));
        assert_eq!(parse_path("/v1/x"), None);
        assert_eq!(parse_path("/bulk"), None);
    }

    #[test]
    fn basic_auth_yields_the_username_with_or_without_colon() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            "Basic UXg0cEx3OVR6UjJtVmJON3NLMXlIYzVkSmY4YUdlM1U6"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            basic_username(&headers).unwrap().as_deref(),
            Some("Qx4pLw9TzR2mVbN7sK1yHc5dJf8aGe3U")
        );
        headers.insert(AUTHORIZATION, "Basic YWJjMTIz".parse().unwrap());
        assert_eq!(basic_username(&headers).unwrap().as_deref(), Some("abc123"));
        headers.insert(AUTHORIZATION, "Bearer token".parse().unwrap());
        assert_eq!(basic_username(&headers).unwrap(), None);
        headers.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(
            basic_username(&headers).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }
}
