//! The stored form of a Segment message.
//!
//! Two fields of a normalised message are already columns of its event
//! row, so the stored body leaves them out (~100 bytes an event, a sixth of
//! a typical message): `messageId` (the `dedupe_key`) and the `receivedAt`
//! ldbridge stamped (`received_at`). [`restore`] puts them back, so every
//! route reads the message ingest normalised. A `receivedAt` that is not
//! ldbridge's (Segment's own, on webhooks) stays in the body.

use serde_json::{Map, Value};

/// Leaves out of `message` what its row holds: `messageId` when it is
/// `dedupe_key`, and `receivedAt` when it is `received_text` (the row's
/// `received_at`, as formatted by ingest).
pub fn strip(message: &mut Map<String, Value>, dedupe_key: &str, received_text: &str) {
    for (field, column) in [("messageId", dedupe_key), ("receivedAt", received_text)] {
        if message.get(field).and_then(Value::as_str) == Some(column) {
            message.shift_remove(field);
        }
    }
}

/// Puts back what [`strip`] left out: fields absent from `message` take the
/// row's values. Bodies stored whole (before migration 0004) are unchanged.
pub fn restore(message: &mut Value, dedupe_key: &str, received_at: i64) {
    if let Value::Object(fields) = message {
        if !fields.contains_key("messageId") {
            fields.insert("messageId".to_owned(), Value::from(dedupe_key));
        }
        if !fields.contains_key("receivedAt") {
            let text = crate::clock::format_ms(received_at);
            fields.insert("receivedAt".to_owned(), Value::String(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RECEIVED_AT: i64 = 1_715_679_087_412;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(fields) => fields,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_stripped_message_is_restored_to_what_ingest_normalised() {
        let received = crate::clock::format_ms(RECEIVED_AT);
        let normalised = json!({"type": "track", "messageId": "m-1", "event": "E",
                                "receivedAt": received, "timestamp": "2024-05-14T09:31:27.412Z"});
        let mut stored = object(normalised.clone());
        strip(&mut stored, "m-1", &received);
        assert!(!stored.contains_key("messageId") && !stored.contains_key("receivedAt"));
        let mut read = Value::Object(stored);
        restore(&mut read, "m-1", RECEIVED_AT);
        assert_eq!(read, normalised);
    }

    #[test]
    fn fields_that_differ_from_the_row_stay_in_the_body() {
        // A webhook message carries Segment's own receivedAt.
        let theirs = json!({"messageId": "m-1", "receivedAt": "2024-01-01T00:00:00.000Z"});
        let mut stored = object(theirs.clone());
        strip(&mut stored, "other", &crate::clock::format_ms(RECEIVED_AT));
        let mut read = Value::Object(stored);
        restore(&mut read, "other", RECEIVED_AT);
        assert_eq!(read, theirs);
    }
}
