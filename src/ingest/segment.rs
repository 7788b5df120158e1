//! Segment's tracking API on the way in (segment.md §2–§6).
//!
//! Owns: which paths are Segment's, finding the write key (Basic username,
//! then the body's `writeKey`, then the first item's), validating every
//! message (400 naming index, field and reason), the 32 KB per-message
//! limit, merging the batch envelope's `context`/`integrations`, and
//! Segment's clock-skew correction, keeping the client's values
//! (`originalTimestamp`, `sentAt`). Output is an [`IngestBatch`] for the
//! writer. Does not own mapping or delivery.

use std::fmt::Display;

use base64::Engine;
use hyper::{header::AUTHORIZATION, HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{value::RawValue, Map, Value};

use super::Refusal;
use crate::{
    clock,
    config::{Config, SegmentSource},
    store::{
        writer::{IngestBatch, NewEvent},
        Protocol, Route,
    },
};

/// Segment's per-message limit, applied to each message as sent (bytes).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Segment documents `messageId` as at most 100 characters.
const MAX_MESSAGE_ID_CHARS: usize = 100;
const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// A Segment ingest path: one message of a known type, a batch envelope, or
/// what Segment's Webhooks destinations push (one message or an array).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Single(&'static str),
    Batch,
    Webhook,
}

/// The endpoint for `path`, including the one-letter aliases analytics.js
/// uses and `/v1/import`; `None` for anything else.
pub fn endpoint(path: &str) -> Option<Endpoint> {
    if path.trim_end_matches('/') == "/segment/webhook" {
        return Some(Endpoint::Webhook);
    }
    let tail = path.strip_prefix("/v1/")?.trim_end_matches('/');
    Some(match tail {
        "track" | "t" => Endpoint::Single("track"),
        "identify" | "i" => Endpoint::Single("identify"),
        "page" | "p" => Endpoint::Single("page"),
        "screen" | "s" => Endpoint::Single("screen"),
        "group" | "g" => Endpoint::Single("group"),
        "alias" | "a" => Endpoint::Single("alias"),
        "batch" | "import" | "b" => Endpoint::Batch,
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
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    context: Option<Value>,
    integrations: Option<Value>,
}

/// Parses, authenticates, validates and normalises one request. Nothing is
/// stored when this fails; the refusal says why.
pub fn parse(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
    config: &Config,
    received_at: i64,
) -> Result<IngestBatch, Refusal> {
    let basic = basic_username(headers)?;
    if let Some(key) = &basic {
        find_source(config, key)?;
    }
    let (messages, envelope, path_kind, first_raw) = match endpoint {
        Endpoint::Single(kind) => (
            vec![single_message(body)?],
            Envelope::default(),
            Some(kind),
            None,
        ),
        Endpoint::Batch => {
            let (messages, envelope) = batch_messages(body)?;
            (messages, envelope, None, None)
        }
        Endpoint::Webhook => {
            let (messages, first_raw) = webhook_messages(body)?;
            (messages, Envelope::default(), None, first_raw)
        }
    };
    let key = basic
        .or_else(|| string_of(envelope.write_key.as_ref()))
        .or_else(|| messages.first().and_then(|m| string_of(m.get("writeKey"))))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "missing_write_key",
                "no write key: send it as the HTTP Basic username or as writeKey in the body",
            )
        })?;
    let source = find_source(config, &key)?;
    let webhook = endpoint == Endpoint::Webhook;
    if webhook {
        verify_signature(source, headers, body, first_raw.as_deref())?;
    }
    let context = Shared::new(&envelope, received_at)?;
    let label_of = |index: usize| match (endpoint, first_raw.is_some()) {
        (Endpoint::Batch, _) => Label::Item("batch", index),
        (Endpoint::Webhook, true) => Label::Item("", index),
        _ => Label::Whole,
    };
    let events = messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| normalize(message, label_of(index), path_kind, &context, webhook))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(IngestBatch {
        source: source.name.clone(),
        protocol: Protocol::Segment,
        received_at,
        meta: None,
        payload_id: None,
        routes: routes(source),
        events,
    })
}

/// The routes a Segment source feeds.
pub fn routes(source: &SegmentSource) -> Vec<Route> {
    let mut routes = Vec::new();
    if source.to_launchdarkly.is_some() {
        routes.push(Route::SegmentToLaunchDarkly);
    }
    if source.relay_to_segment {
        routes.push(Route::SegmentRelay);
    }
    routes
}

/// Checks `X-Signature` when the source has a `webhook_secret`: lowercase
/// hex HMAC-SHA1 over the exact body bytes, or, for an Actions batch, over
/// the first element's bytes (segment.md §11). Compared in constant time.
fn verify_signature(
    source: &SegmentSource,
    headers: &HeaderMap,
    body: &[u8],
    first_element: Option<&str>,
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
    if matches(body) || first_element.is_some_and(|first| matches(first.as_bytes())) {
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

/// Parsed messages of one request, in order.
type Messages = Vec<Map<String, Value>>;

/// A webhook body: one message (classic, or Actions single) or an array of
/// them (Actions batch). For an array, also returns element 0's exact bytes,
/// which the batch signature covers.
fn webhook_messages(body: &[u8]) -> Result<(Messages, Option<String>), Refusal> {
    let raw: Box<RawValue> = serde_json::from_slice(body).map_err(|error| invalid_json(&error))?;
    if !raw.get().starts_with('[') {
        return Ok((vec![single_message(body)?], None));
    }
    let items: Vec<Box<RawValue>> =
        serde_json::from_str(raw.get()).map_err(|error| invalid_json(&error))?;
    let first = items.first().map(|item| item.get().to_owned());
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if item.get().len() > MAX_MESSAGE_BYTES {
            return Err(Refusal::too_large(format!(
                "[{index}]: message is {} bytes; Segment's limit is {MAX_MESSAGE_BYTES} bytes per message",
                item.get().len()
            )));
        }
        match serde_json::from_str::<Value>(item.get()) {
            Ok(Value::Object(message)) => messages.push(message),
            _ => {
                return Err(Refusal::bad_request(format!(
                    "[{index}]: must be a JSON object"
                )))
            }
        }
    }
    Ok((messages, first))
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

fn string_of(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
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

fn single_message(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(Refusal::too_large(format!(
            "message is {} bytes; Segment's limit is {MAX_MESSAGE_BYTES} bytes per message",
            body.len()
        )));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(message)) => Ok(message),
        Ok(_) => Err(Refusal::bad_request(
            "the body must be a JSON object (one Segment message)",
        )),
        Err(error) => Err(invalid_json(&error)),
    }
}

fn batch_messages(body: &[u8]) -> Result<(Vec<Map<String, Value>>, Envelope<'_>), Refusal> {
    let mut envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            Refusal::bad_request(format!("batch envelope: {error}"))
        } else {
            invalid_json(&error)
        }
    })?;
    let items = envelope.batch.take().ok_or_else(|| {
        Refusal::bad_request("batch: missing; a batch body is {\"batch\": [ ... ]}")
    })?;
    let mut messages = Vec::with_capacity(items.len());
    for (index, raw) in items.iter().enumerate() {
        let size = raw.get().len();
        if size > MAX_MESSAGE_BYTES {
            return Err(Refusal::too_large(format!(
                "batch[{index}]: message is {size} bytes; Segment's limit is {MAX_MESSAGE_BYTES} bytes per message"
            )));
        }
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Object(message)) => messages.push(message),
            _ => {
                return Err(Refusal::bad_request(format!(
                    "batch[{index}]: must be a JSON object"
                )))
            }
        }
    }
    Ok((messages, envelope))
}

fn invalid_json(error: &serde_json::Error) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        format!("request body is not valid JSON: {error}"),
    )
}

/// What every message of a request shares: the envelope's values and the
/// receive time.
struct Shared {
    received_at: i64,
    received_text: String,
    sent_at: Option<(String, i64)>,
    context: Option<Value>,
    integrations: Option<Value>,
}

impl Shared {
    fn new(envelope: &Envelope<'_>, received_at: i64) -> Result<Shared, Refusal> {
        let sent_at = match &envelope.sent_at {
            None | Some(Value::Null) => None,
            Some(value) => Some(timestamp(value, "sentAt")?),
        };
        for (name, value) in [
            ("context", &envelope.context),
            ("integrations", &envelope.integrations),
        ] {
            if !matches!(value, None | Some(Value::Null) | Some(Value::Object(_))) {
                return Err(Refusal::bad_request(format!("{name}: must be an object")));
            }
        }
        Ok(Shared {
            received_at,
            received_text: clock::format_ms(received_at),
            sent_at,
            context: envelope.context.clone().filter(Value::is_object),
            integrations: envelope.integrations.clone().filter(Value::is_object),
        })
    }
}

/// Parses an ISO-8601 timestamp field, naming it when it is not one
/// (`field` is only formatted then).
fn timestamp(value: &Value, field: impl Display) -> Result<(String, i64), Refusal> {
    let text = value
        .as_str()
        .ok_or_else(|| Refusal::bad_request(format!("{field}: must be an ISO-8601 date string")))?;
    let ms = clock::parse_ms(text).ok_or_else(|| {
        Refusal::bad_request(format!("{field}: `{text}` is not an ISO-8601 date"))
    })?;
    Ok((text.to_owned(), ms))
}

/// Where a message sits in its request, as refusals name it (`batch[3].`).
/// Written only into a refusal, never formatted for a message that passes.
#[derive(Debug, Clone, Copy)]
enum Label {
    /// The body is the message.
    Whole,
    /// Element `.1` of the array named `.0` (`""` for a top-level array).
    Item(&'static str, usize),
}

impl Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Whole => Ok(()),
            Label::Item(array, index) => write!(f, "{array}[{index}]."),
        }
    }
}

/// Validates one message and turns it into the stored form.
/// `webhook`: the message was pushed by Segment, which already set
/// `receivedAt` and corrected `timestamp`: it is not corrected again, and
/// Segment's `delete` requests are accepted (no route sends them on).
fn normalize(
    mut message: Map<String, Value>,
    label: Label,
    path_kind: Option<&str>,
    shared: &Shared,
    webhook: bool,
) -> Result<NewEvent, Refusal> {
    let is_delete = webhook && message.get("type") == Some(&Value::String("delete".to_owned()));
    let kind = if is_delete {
        "delete".to_owned()
    } else {
        message_type(&message, label, path_kind)?
    };
    message.insert("type".to_owned(), Value::String(kind.clone()));
    if !is_delete {
        validate(&message, label, &kind)?;
    }
    // The write key is a credential: it is never stored.
    message.remove("writeKey");
    merge_envelope(&mut message, shared);
    let already_corrected =
        webhook && !matches!(message.get("receivedAt"), None | Some(Value::Null));
    if !already_corrected {
        correct_clock(&mut message, label, shared)?;
    }
    let dedupe_key = match message.get("messageId") {
        Some(Value::String(id)) => id.clone(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            message.insert("messageId".to_owned(), Value::String(id.clone()));
            id
        }
    };
    let row = crate::store::body::Row {
        kind: &kind,
        dedupe_key: &dedupe_key,
        received_at: shared.received_at,
    };
    crate::store::body::strip(&mut message, row, &shared.received_text);
    // Straight into a byte buffer: `Value`'s `Display` goes through
    // `fmt::Formatter` for every token, which showed in the ingest profile.
    let body = serde_json::to_string(&message).expect("a JSON map always serialises");
    Ok(NewEvent {
        dedupe_key,
        kind,
        body,
    })
}

fn message_type(
    message: &Map<String, Value>,
    label: impl Display,
    path_kind: Option<&str>,
) -> Result<String, Refusal> {
    match (message.get("type"), path_kind) {
        (Some(Value::String(kind)), _) if !TYPES.contains(&kind.as_str()) => Err(Refusal::bad_request(format!(
            "{label}type: `{kind}` is not a Segment call type (track, identify, page, screen, group, alias)"
        ))),
        (Some(Value::String(kind)), Some(path)) if kind != path => Err(Refusal::bad_request(format!(
            "{label}type: `{kind}` does not match the endpoint for {path} calls"
        ))),
        (Some(Value::String(kind)), _) => Ok(kind.clone()),
        (None | Some(Value::Null), Some(path)) => Ok(path.to_owned()),
        (None | Some(Value::Null), None) => Err(Refusal::bad_request(format!("{label}type: required in a batch"))),
        (Some(_), _) => Err(Refusal::bad_request(format!("{label}type: must be a string"))),
    }
}

/// Present means: not missing, not `null`, not `""` (real libraries send
/// `"userId": null`; an empty id is no id).
fn present(message: &Map<String, Value>, field: &str) -> bool {
    !matches!(message.get(field), None | Some(Value::Null))
        && message.get(field) != Some(&Value::String(String::new()))
}

fn validate(message: &Map<String, Value>, label: impl Display, kind: &str) -> Result<(), Refusal> {
    let fail =
        |field: &str, reason: &str| Err(Refusal::bad_request(format!("{label}{field}: {reason}")));
    for field in ["userId", "anonymousId", "previousId", "groupId"] {
        if !matches!(
            message.get(field),
            None | Some(Value::Null | Value::String(_) | Value::Number(_))
        ) {
            return fail(field, "must be a string");
        }
    }
    for field in ["properties", "traits", "context", "integrations"] {
        if !matches!(
            message.get(field),
            None | Some(Value::Null | Value::Object(_))
        ) {
            return fail(field, "must be an object");
        }
    }
    match message.get("messageId") {
        None | Some(Value::Null) => {}
        Some(Value::String(id)) if id.is_empty() => return fail("messageId", "must not be empty"),
        Some(Value::String(id)) if id.chars().count() > MAX_MESSAGE_ID_CHARS => {
            return fail("messageId", "longer than Segment's limit of 100 characters")
        }
        Some(Value::String(_)) => {}
        Some(_) => return fail("messageId", "must be a string"),
    }
    match kind {
        "alias" if !present(message, "userId") => fail("userId", "alias calls need userId"),
        "alias" if !present(message, "previousId") => {
            fail("previousId", "alias calls need previousId")
        }
        "alias" => Ok(()),
        _ if !present(message, "userId") && !present(message, "anonymousId") => {
            fail("userId", "every call needs userId or anonymousId")
        }
        "track" if !matches!(message.get("event"), Some(Value::String(e)) if !e.is_empty()) => {
            fail("event", "track calls need a non-empty event name")
        }
        "group" if !present(message, "groupId") => fail("groupId", "group calls need groupId"),
        _ => Ok(()),
    }
}

/// Envelope `context`/`integrations` merge under each message's own: the
/// message wins key by key (deep), a bridge decision (segment.md §5.3).
fn merge_envelope(message: &mut Map<String, Value>, shared: &Shared) {
    for (field, base) in [
        ("context", &shared.context),
        ("integrations", &shared.integrations),
    ] {
        let Some(base) = base else { continue };
        let slot = message.entry(field.to_owned()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = base.clone();
        } else {
            deep_merge(slot, base);
        }
    }
}

fn deep_merge(target: &mut Value, base: &Value) {
    let (Value::Object(target), Value::Object(base)) = (target, base) else {
        return;
    };
    for (key, value) in base {
        match target.get_mut(key) {
            None => {
                target.insert(key.clone(), value.clone());
            }
            Some(existing) => deep_merge(existing, value),
        }
    }
}

/// Segment's skew correction (segment.md §6): `receivedAt` = now,
/// `originalTimestamp` = the client's `timestamp`, and
/// `timestamp = receivedAt − (sentAt − originalTimestamp)`. Without
/// `sentAt` the client's time is kept (bridge decision); without
/// `timestamp` the receive time is used.
fn correct_clock(
    message: &mut Map<String, Value>,
    label: impl Display,
    shared: &Shared,
) -> Result<(), Refusal> {
    let own_sent_at = match message.get("sentAt") {
        None | Some(Value::Null) => None,
        Some(value) => Some(timestamp(value, format_args!("{label}sentAt"))?),
    };
    let sent_at = own_sent_at.or_else(|| shared.sent_at.clone());
    if let Some((text, _)) = &sent_at {
        message.insert("sentAt".to_owned(), Value::String(text.clone()));
    }
    message.insert(
        "receivedAt".to_owned(),
        Value::String(shared.received_text.clone()),
    );
    let original = match message.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(value) => Some(timestamp(value, format_args!("{label}timestamp"))?),
    };
    let corrected = match (&original, &sent_at) {
        (Some((_, at)), Some((_, sent))) => clock::format_ms(shared.received_at - (sent - at)),
        (Some((text, _)), None) => text.clone(),
        (None, _) => shared.received_text.clone(),
    };
    if let Some((text, _)) = original {
        message.insert("originalTimestamp".to_owned(), Value::String(text));
    }
    message.insert("timestamp".to_owned(), Value::String(corrected));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(sent_at: Option<&str>, received: &str) -> Shared {
        let received_at = clock::parse_ms(received).unwrap();
        Shared {
            received_at,
            received_text: clock::format_ms(received_at),
            sent_at: sent_at.map(|s| (s.to_owned(), clock::parse_ms(s).unwrap())),
            context: None,
            integrations: None,
        }
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn paths_include_short_forms_and_import() {
        assert_eq!(endpoint("/v1/t"), Some(Endpoint::Single("track")));
        assert_eq!(endpoint("/v1/screen"), Some(Endpoint::Single("screen")));
        assert_eq!(endpoint("/v1/import"), Some(Endpoint::Batch));
        assert_eq!(endpoint("/v1/b"), Some(Endpoint::Batch));
        assert_eq!(endpoint("/v1/x"), None);
        assert_eq!(endpoint("/bulk"), None);
    }

    #[test]
    fn skew_correction_matches_segments_documented_example() {
        // segment.md §6: received .266, sent .169, original .152 → .249
        let mut message = object(serde_json::json!({"timestamp": "2015-12-12T19:11:01.152Z"}));
        let shared = shared(Some("2015-12-12T19:11:01.169Z"), "2015-12-12T19:11:01.266Z");
        correct_clock(&mut message, "", &shared).unwrap();
        assert_eq!(message["timestamp"], "2015-12-12T19:11:01.249Z");
        assert_eq!(message["originalTimestamp"], "2015-12-12T19:11:01.152Z");
        assert_eq!(message["receivedAt"], "2015-12-12T19:11:01.266Z");
        assert_eq!(message["sentAt"], "2015-12-12T19:11:01.169Z");
    }

    #[test]
    fn without_sent_at_the_client_time_is_kept_and_without_timestamp_now_is_used() {
        let mut message = object(serde_json::json!({"timestamp": "2024-05-14T09:31:27.412+00:00"}));
        correct_clock(&mut message, "", &shared(None, "2024-05-14T10:00:00Z")).unwrap();
        assert_eq!(message["timestamp"], "2024-05-14T09:31:27.412+00:00");
        let mut message = Map::new();
        correct_clock(&mut message, "", &shared(None, "2024-05-14T10:00:00Z")).unwrap();
        assert_eq!(message["timestamp"], "2024-05-14T10:00:00.000Z");
        assert!(!message.contains_key("originalTimestamp"));
    }

    #[test]
    fn item_sent_at_wins_over_the_envelope() {
        let mut message = object(serde_json::json!({
            "timestamp": "2024-01-01T00:00:00.000Z", "sentAt": "2024-01-01T00:00:01.000Z"
        }));
        let shared = shared(Some("2024-01-01T00:00:05.000Z"), "2024-01-01T00:00:10.000Z");
        correct_clock(&mut message, "", &shared).unwrap();
        assert_eq!(message["timestamp"], "2024-01-01T00:00:09.000Z");
    }

    #[test]
    fn envelope_context_merges_under_the_message() {
        let mut message =
            object(serde_json::json!({"context": {"ip": "1.2.3.4", "library": {"name": "mine"}}}));
        let mut shared = shared(None, "2024-01-01T00:00:00Z");
        shared.context = Some(
            serde_json::json!({"library": {"name": "analytics-go", "version": "3"}, "os": "x"}),
        );
        merge_envelope(&mut message, &shared);
        assert_eq!(
            message["context"],
            serde_json::json!({"ip": "1.2.3.4", "library": {"name": "mine", "version": "3"}, "os": "x"})
        );
    }

    #[test]
    fn validation_names_field_and_reason() {
        let check = |value: Value, kind: &str| {
            validate(&object(value), "batch[2].", kind).map_err(|r| r.message)
        };
        assert_eq!(
            check(serde_json::json!({"anonymousId": "a"}), "track").unwrap_err(),
            "batch[2].event: track calls need a non-empty event name"
        );
        assert_eq!(
            check(serde_json::json!({"userId": null, "event": "x"}), "track").unwrap_err(),
            "batch[2].userId: every call needs userId or anonymousId"
        );
        assert_eq!(
            check(serde_json::json!({"userId": "u"}), "alias").unwrap_err(),
            "batch[2].previousId: alias calls need previousId"
        );
        assert_eq!(
            check(serde_json::json!({"userId": "u"}), "group").unwrap_err(),
            "batch[2].groupId: group calls need groupId"
        );
        assert_eq!(
            check(serde_json::json!({"userId": {"a": 1}}), "identify").unwrap_err(),
            "batch[2].userId: must be a string"
        );
        assert_eq!(
            check(serde_json::json!({"userId": "u", "properties": []}), "page").unwrap_err(),
            "batch[2].properties: must be an object"
        );
        assert!(check(serde_json::json!({"userId": 42, "event": "x"}), "track").is_ok());
        assert!(check(serde_json::json!({"anonymousId": "a"}), "identify").is_ok());
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
