//! One Segment message, validated and normalised into the form it is
//! stored in (segment.md §5–§6): its `type` (from the body or the path),
//! the checks that make it refusable (each with a reason code), the batch
//! envelope's `context`/`integrations` merged under it, and Segment's
//! clock-skew correction. The write key and what the row's columns hold
//! are left out of the body.
//!
//! Does not own the request (paths, auth, the envelope's parsing):
//! `segment.rs` does.

use std::fmt::Display;

use serde_json::{value::RawValue, Value};

use super::{
    message::{self, Kind, Message},
    Refusal,
};
use crate::{clock, domain::accepted::NewEvent};

/// Segment documents `messageId` as at most 100 characters.
const MAX_MESSAGE_ID_CHARS: usize = 100;
const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// A message refused for `field`: 400 (when it is the whole request), with
/// `code` for the refusal log and the field's place in the text.
fn refuse(code: &'static str, label: impl Display, field: &str, reason: impl Display) -> Refusal {
    Refusal::new(
        hyper::StatusCode::BAD_REQUEST,
        code,
        format!("{label}{field}: {reason}"),
    )
}

/// What every message of a request shares: the envelope's values and the
/// receive time.
pub struct Shared {
    pub(super) received_at: i64,
    pub(super) received_text: String,
    pub(super) sent_at: Option<(String, i64)>,
    pub(super) context: Option<Value>,
    pub(super) integrations: Option<Value>,
}

impl Shared {
    /// The envelope's `sentAt`, `context` and `integrations`. Each that is
    /// not what it should be (a `sentAt` that is no date, a `context` that
    /// is no object) is left out rather than refusing every message of the
    /// batch for it: the messages are good, and without an envelope
    /// `sentAt` their clocks are kept as sent (a bridge decision).
    pub fn new(
        sent_at: Option<&RawValue>,
        context: Option<Value>,
        integrations: Option<Value>,
        received_at: i64,
    ) -> Shared {
        let sent_at = message::non_null(sent_at).and_then(|value| timestamp(value, "sentAt").ok());
        Shared {
            received_at,
            received_text: clock::format_ms(received_at),
            sent_at,
            context: context.filter(Value::is_object),
            integrations: integrations.filter(Value::is_object),
        }
    }
}

/// Parses an ISO-8601 timestamp field, naming it when it is not one
/// (`field` is only formatted then).
fn timestamp(value: &RawValue, field: impl Display) -> Result<(String, i64), Refusal> {
    let text = message::string_of(value).ok_or_else(|| {
        refuse(
            "invalid_timestamp",
            "",
            &field.to_string(),
            "must be an ISO-8601 date string",
        )
    })?;
    let ms = clock::parse_ms(&text).ok_or_else(|| {
        refuse(
            "invalid_timestamp",
            "",
            &field.to_string(),
            format_args!("`{text}` is not an ISO-8601 date"),
        )
    })?;
    Ok((text, ms))
}

/// Where a message sits in its request, as refusals name it (`batch[3].`).
/// Written only into a refusal, never formatted for a message that passes.
#[derive(Debug, Clone, Copy)]
pub enum Label {
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

/// Validates one message and turns it into the stored form. On a refusal
/// the message still has its `messageId` (the caller records it).
/// `webhook`: the message was pushed by Segment, which already set
/// `receivedAt` and corrected `timestamp`: it is not corrected again, and
/// Segment's `delete` requests are accepted (no route sends them on).
pub fn normalize(
    message: &mut Message<'_>,
    label: Label,
    path_kind: Option<&str>,
    shared: &Shared,
    webhook: bool,
) -> Result<NewEvent, Refusal> {
    let is_delete = webhook && message.string("type").as_deref() == Some("delete");
    let kind = if is_delete {
        "delete".to_owned()
    } else {
        message_type(message, label, path_kind)?
    };
    // The row's kind column holds it (domain::stored_message puts it back on reading).
    message.remove("type");
    if !is_delete {
        validate(message, label, &kind)?;
    }
    // The write key is a credential: it is never stored.
    message.remove("writeKey");
    merge_envelope(message, shared);
    let already_corrected = webhook && message.non_null("receivedAt").is_some();
    if !already_corrected {
        correct_clock(message, label, shared)?;
    }
    // The row's dedupe key column holds it.
    let dedupe_key = message
        .string("messageId")
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    message.remove("messageId");
    let row = crate::domain::stored_message::Row {
        kind: &kind,
        dedupe_key: &dedupe_key,
        received_at: shared.received_at,
    };
    // What else the row holds: the `receivedAt` ldbridge stamped.
    for (field, column) in crate::domain::stored_message::row_fields(&row, &shared.received_text) {
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
        Some(_) => return Err(refuse("invalid_type", label, "type", "must be a string")),
    };
    match (kind, path_kind) {
        (Some(kind), _) if !TYPES.contains(&kind.as_str()) => Err(refuse(
            "invalid_type",
            label,
            "type",
            format_args!(
                "`{kind}` is not a Segment call type (track, identify, page, screen, group, alias)"
            ),
        )),
        (Some(kind), Some(path)) if kind != path => Err(refuse(
            "invalid_type",
            label,
            "type",
            format_args!("`{kind}` does not match the endpoint for {path} calls"),
        )),
        (Some(kind), _) => Ok(kind),
        (None, Some(path)) => Ok(path.to_owned()),
        (None, None) => Err(refuse("missing_type", label, "type", "required in a batch")),
    }
}

/// Present means: not missing, not `null`, not `""` (real libraries send
/// `"userId": null`; an empty id is no id).
fn present(message: &Message<'_>, field: &str) -> bool {
    message.non_null(field).is_some() && !message.is_empty_string(field)
}

/// Long on purpose: one rule per message type, as Segment checks them.
fn validate(message: &Message<'_>, label: impl Display, kind: &str) -> Result<(), Refusal> {
    let fail = |code, field: &str, reason: &str| Err(refuse(code, &label, field, reason));
    for field in ["userId", "anonymousId", "previousId", "groupId"] {
        if !matches!(
            message.kind(field),
            None | Some(Kind::Null | Kind::String | Kind::Number)
        ) {
            return fail("invalid_field", field, "must be a string");
        }
    }
    for field in ["properties", "traits", "context", "integrations"] {
        if !matches!(message.kind(field), None | Some(Kind::Null | Kind::Object)) {
            return fail("invalid_field", field, "must be an object");
        }
    }
    match message.kind("messageId") {
        None | Some(Kind::Null) => {}
        Some(Kind::String) => {
            let id = message.string("messageId").unwrap_or_default();
            if id.is_empty() {
                return fail("invalid_message_id", "messageId", "must not be empty");
            }
            if id.chars().count() > MAX_MESSAGE_ID_CHARS {
                return fail(
                    "invalid_message_id",
                    "messageId",
                    "longer than Segment's limit of 100 characters",
                );
            }
        }
        Some(_) => return fail("invalid_message_id", "messageId", "must be a string"),
    }
    match kind {
        "alias" if !present(message, "userId") => {
            fail("missing_user_id", "userId", "alias calls need userId")
        }
        // Segment's destination takes the anonymousId as the previous key
        // when there is no previousId (mapping.md §a).
        "alias" if !present(message, "previousId") && !present(message, "anonymousId") => fail(
            "missing_previous_id",
            "previousId",
            "alias calls need previousId (or an anonymousId)",
        ),
        "alias" => Ok(()),
        _ if !present(message, "userId") && !present(message, "anonymousId") => fail(
            "missing_user_id",
            "userId",
            "every call needs userId or anonymousId",
        ),
        "track"
            if message.kind("event") != Some(Kind::String) || message.is_empty_string("event") =>
        {
            fail(
                "missing_event",
                "event",
                "track calls need a non-empty event name",
            )
        }
        "group" if !present(message, "groupId") => {
            fail("missing_group_id", "groupId", "group calls need groupId")
        }
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
            check(
                serde_json::json!({"userId": "u", "anonymousId": null}),
                "alias"
            )
            .unwrap_err(),
            "batch[2].previousId: alias calls need previousId (or an anonymousId)"
        );
        // Segment's destination takes the anonymousId as the previous key.
        assert!(check(
            serde_json::json!({"userId": "u", "anonymousId": "a"}),
            "alias"
        )
        .is_ok());
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
}
