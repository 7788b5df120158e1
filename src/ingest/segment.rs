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
use serde_json::{value::RawValue, Value};

use super::{
    message::{self, Kind, Message},
    Refusal,
};
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
    #[serde(rename = "sentAt", borrow)]
    sent_at: Option<&'a RawValue>,
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
        .or_else(|| {
            let key = envelope.write_key.as_ref().and_then(Value::as_str);
            key.filter(|key| !key.is_empty()).map(str::to_owned)
        })
        .or_else(|| {
            let key = messages.first().and_then(|m| m.string("writeKey"));
            key.filter(|key| !key.is_empty())
        })
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

/// Parsed messages of one request, in order, borrowed from its body.
type Messages<'a> = Vec<Message<'a>>;

/// A webhook body: one message (classic, or Actions single) or an array of
/// them (Actions batch). For an array, also returns element 0's exact bytes,
/// which the batch signature covers.
fn webhook_messages(body: &[u8]) -> Result<(Messages<'_>, Option<String>), Refusal> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|error| invalid_json(&error))?;
    if !raw.get().starts_with('[') {
        return Ok((vec![single_message(body)?], None));
    }
    let items: Vec<&RawValue> =
        serde_json::from_str(raw.get()).map_err(|error| invalid_json(&error))?;
    let first = items.first().map(|item| item.get().to_owned());
    let messages = items
        .iter()
        .enumerate()
        .map(|(index, item)| item_message(item, format_args!("[{index}]")))
        .collect::<Result<_, _>>()?;
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

fn single_message(body: &[u8]) -> Result<Message<'_>, Refusal> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(Refusal::too_large(format!(
            "message is {} bytes; Segment's limit is {MAX_MESSAGE_BYTES} bytes per message",
            body.len()
        )));
    }
    let text = std::str::from_utf8(body).map_err(|error| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON: {error}"),
        )
    })?;
    message::check(text).map_err(|error| invalid_json(&error))?;
    Message::parse(text)
        .map_err(|_| Refusal::bad_request("the body must be a JSON object (one Segment message)"))
}

fn batch_messages(body: &[u8]) -> Result<(Messages<'_>, Envelope<'_>), Refusal> {
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
    let messages = items
        .iter()
        .enumerate()
        .map(|(index, item)| item_message(item, format_args!("batch[{index}]")))
        .collect::<Result<_, _>>()?;
    Ok((messages, envelope))
}

/// One element of a batch (named `label` in refusals): within Segment's
/// size limit, every value readable, and an object.
fn item_message<'a>(item: &'a RawValue, label: impl Display) -> Result<Message<'a>, Refusal> {
    let size = item.get().len();
    if size > MAX_MESSAGE_BYTES {
        return Err(Refusal::too_large(format!(
            "{label}: message is {size} bytes; Segment's limit is {MAX_MESSAGE_BYTES} bytes per message"
        )));
    }
    message::check(item.get())
        .map_err(|error| Refusal::bad_request(format!("{label}: {error}")))?;
    Message::parse(item.get())
        .map_err(|_| Refusal::bad_request(format!("{label}: must be a JSON object")))
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
        let sent_at = message::non_null(envelope.sent_at)
            .map(|value| timestamp(value, "sentAt"))
            .transpose()?;
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
fn timestamp(value: &RawValue, field: impl Display) -> Result<(String, i64), Refusal> {
    let text = message::string_of(value)
        .ok_or_else(|| Refusal::bad_request(format!("{field}: must be an ISO-8601 date string")))?;
    let ms = clock::parse_ms(&text).ok_or_else(|| {
        Refusal::bad_request(format!("{field}: `{text}` is not an ISO-8601 date"))
    })?;
    Ok((text, ms))
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
    mut message: Message<'_>,
    label: Label,
    path_kind: Option<&str>,
    shared: &Shared,
    webhook: bool,
) -> Result<NewEvent, Refusal> {
    let is_delete = webhook && message.string("type").as_deref() == Some("delete");
    let kind = if is_delete {
        "delete".to_owned()
    } else {
        message_type(&message, label, path_kind)?
    };
    // The row's kind column holds it (store::body puts it back on reading).
    message.remove("type");
    if !is_delete {
        validate(&message, label, &kind)?;
    }
    // The write key is a credential: it is never stored.
    message.remove("writeKey");
    merge_envelope(&mut message, shared);
    let already_corrected = webhook && message.non_null("receivedAt").is_some();
    if !already_corrected {
        correct_clock(&mut message, label, shared)?;
    }
    // The row's dedupe key column holds it.
    let dedupe_key = message
        .string("messageId")
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    message.remove("messageId");
    let row = crate::store::body::Row {
        kind: &kind,
        dedupe_key: &dedupe_key,
        received_at: shared.received_at,
    };
    // What else the row holds: the `receivedAt` ldbridge stamped.
    for (field, column) in crate::store::body::row_fields(&row, &shared.received_text) {
        if message.string(field).as_deref() == Some(column) {
            message.remove(field);
        }
    }
    Ok(NewEvent {
        dedupe_key,
        kind,
        body: message.to_json(),
    })
}

fn message_type(
    message: &Message<'_>,
    label: impl Display,
    path_kind: Option<&str>,
) -> Result<String, Refusal> {
    let kind = match message.kind("type") {
        None | Some(Kind::Null) => None,
        Some(Kind::String) => message.string("type"),
        Some(_) => {
            return Err(Refusal::bad_request(format!(
                "{label}type: must be a string"
            )))
        }
    };
    match (kind, path_kind) {
        (Some(kind), _) if !TYPES.contains(&kind.as_str()) => Err(Refusal::bad_request(format!(
            "{label}type: `{kind}` is not a Segment call type (track, identify, page, screen, group, alias)"
        ))),
        (Some(kind), Some(path)) if kind != path => Err(Refusal::bad_request(format!(
            "{label}type: `{kind}` does not match the endpoint for {path} calls"
        ))),
        (Some(kind), _) => Ok(kind),
        (None, Some(path)) => Ok(path.to_owned()),
        (None, None) => Err(Refusal::bad_request(format!("{label}type: required in a batch"))),
    }
}

/// Present means: not missing, not `null`, not `""` (real libraries send
/// `"userId": null`; an empty id is no id).
fn present(message: &Message<'_>, field: &str) -> bool {
    message.non_null(field).is_some() && !message.is_empty_string(field)
}

fn validate(message: &Message<'_>, label: impl Display, kind: &str) -> Result<(), Refusal> {
    let fail =
        |field: &str, reason: &str| Err(Refusal::bad_request(format!("{label}{field}: {reason}")));
    for field in ["userId", "anonymousId", "previousId", "groupId"] {
        if !matches!(
            message.kind(field),
            None | Some(Kind::Null | Kind::String | Kind::Number)
        ) {
            return fail(field, "must be a string");
        }
    }
    for field in ["properties", "traits", "context", "integrations"] {
        if !matches!(message.kind(field), None | Some(Kind::Null | Kind::Object)) {
            return fail(field, "must be an object");
        }
    }
    match message.kind("messageId") {
        None | Some(Kind::Null) => {}
        Some(Kind::String) => {
            let id = message.string("messageId").unwrap_or_default();
            if id.is_empty() {
                return fail("messageId", "must not be empty");
            }
            if id.chars().count() > MAX_MESSAGE_ID_CHARS {
                return fail("messageId", "longer than Segment's limit of 100 characters");
            }
        }
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
        "track"
            if message.kind("event") != Some(Kind::String) || message.is_empty_string("event") =>
        {
            fail("event", "track calls need a non-empty event name")
        }
        "group" if !present(message, "groupId") => fail("groupId", "group calls need groupId"),
        _ => Ok(()),
    }
}

/// Envelope `context`/`integrations` merge under each message's own: the
/// message wins key by key (deep), a bridge decision (segment.md §5.3).
/// Only then is the message's own parsed.
fn merge_envelope(message: &mut Message<'_>, shared: &Shared) {
    for (field, base) in [
        ("context", &shared.context),
        ("integrations", &shared.integrations),
    ] {
        let Some(base) = base else { continue };
        let own: Option<Value> = message
            .get(field)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .filter(|value: &Value| !value.is_null());
        let merged = match own {
            None => message::to_raw(base),
            Some(mut own) => {
                deep_merge(&mut own, base);
                message::to_raw(&own)
            }
        };
        message.set(field, merged);
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
    message: &mut Message<'_>,
    label: impl Display,
    shared: &Shared,
) -> Result<(), Refusal> {
    let own_sent_at = message
        .non_null("sentAt")
        .map(|value| timestamp(value, format_args!("{label}sentAt")))
        .transpose()?;
    let sent_at = own_sent_at.or_else(|| shared.sent_at.clone());
    if let Some((text, _)) = &sent_at {
        message.set_string("sentAt", text);
    }
    message.set_string("receivedAt", &shared.received_text);
    let original = message
        .non_null("timestamp")
        .map(|value| timestamp(value, format_args!("{label}timestamp")))
        .transpose()?;
    let corrected = match (&original, &sent_at) {
        (Some((_, at)), Some((_, sent))) => clock::format_ms(shared.received_at - (sent - at)),
        (Some((text, _)), None) => text.clone(),
        (None, _) => shared.received_text.clone(),
    };
    if let Some((text, _)) = original {
        message.set_string("originalTimestamp", &text);
    }
    message.set_string("timestamp", &corrected);
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

    /// `value`'s fields as a message (owned).
    fn object(value: Value) -> Message<'static> {
        let mut message = Message::default();
        for (key, field) in value.as_object().unwrap() {
            message.set(key, message::to_raw(field));
        }
        message
    }

    /// The message as a value, to look into.
    fn json(message: &Message<'_>) -> Value {
        serde_json::from_str(&message.to_json()).unwrap()
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
        assert_eq!(json(&message)["timestamp"], "2015-12-12T19:11:01.249Z");
        assert_eq!(
            json(&message)["originalTimestamp"],
            "2015-12-12T19:11:01.152Z"
        );
        assert_eq!(json(&message)["receivedAt"], "2015-12-12T19:11:01.266Z");
        assert_eq!(json(&message)["sentAt"], "2015-12-12T19:11:01.169Z");
    }

    #[test]
    fn without_sent_at_the_client_time_is_kept_and_without_timestamp_now_is_used() {
        let mut message = object(serde_json::json!({"timestamp": "2024-05-14T09:31:27.412+00:00"}));
        correct_clock(&mut message, "", &shared(None, "2024-05-14T10:00:00Z")).unwrap();
        assert_eq!(json(&message)["timestamp"], "2024-05-14T09:31:27.412+00:00");
        let mut message = Message::default();
        correct_clock(&mut message, "", &shared(None, "2024-05-14T10:00:00Z")).unwrap();
        assert_eq!(json(&message)["timestamp"], "2024-05-14T10:00:00.000Z");
        assert!(message.get("originalTimestamp").is_none());
    }

    #[test]
    fn item_sent_at_wins_over_the_envelope() {
        let mut message = object(serde_json::json!({
            "timestamp": "2024-01-01T00:00:00.000Z", "sentAt": "2024-01-01T00:00:01.000Z"
        }));
        let shared = shared(Some("2024-01-01T00:00:05.000Z"), "2024-01-01T00:00:10.000Z");
        correct_clock(&mut message, "", &shared).unwrap();
        assert_eq!(json(&message)["timestamp"], "2024-01-01T00:00:09.000Z");
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
            json(&message)["context"],
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
