//! The stored form of a Segment message.
//!
//! Three fields of a normalised message are already columns of its event
//! row, so the stored body leaves them out (~125 bytes an event, a fifth of
//! a typical message): `type` (the `kind`), `messageId` (the `dedupe_key`)
//! and the `receivedAt` ldbridge stamped (`received_at`). [`restore`] puts
//! them back, so every route reads the message ingest normalised. A
//! `receivedAt` that is not ldbridge's (Segment's own, on webhooks) stays in
//! the body.

use serde_json::Value;

/// The columns of an event row that a Segment body can leave out.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub kind: &'a str,
    pub dedupe_key: &'a str,
    pub received_at: i64,
}

/// What a stored body leaves out: each field, and the string its row holds
/// for it. Ingest leaves a field out when its value is that string: `type`
/// when it is the `kind`, `messageId` when it is the `dedupe_key`, and
/// `receivedAt` when it is `received_text` (the row's `received_at` as
/// ingest formats it).
pub fn row_fields<'r>(row: &Row<'r>, received_text: &'r str) -> [(&'static str, &'r str); 3] {
    [
        ("type", row.kind),
        ("messageId", row.dedupe_key),
        ("receivedAt", received_text),
    ]
}

/// Puts back what ingest left out: fields absent from `message` take the
/// row's values (`type` first, as Segment's libraries send it). Bodies
/// stored whole (before migration 0004) are unchanged.
pub fn restore(message: &mut Value, row: Row<'_>) {
    if let Value::Object(fields) = message {
        if !fields.contains_key("type") {
            fields.shift_insert(0, "type".to_owned(), Value::from(row.kind));
        }
        if !fields.contains_key("messageId") {
            fields.insert("messageId".to_owned(), Value::from(row.dedupe_key));
        }
        if !fields.contains_key("receivedAt") {
            let text = crate::clock::format_ms(row.received_at);
            fields.insert("receivedAt".to_owned(), Value::String(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    const RECEIVED_AT: i64 = 1_715_679_087_412;

    /// What ingest does with [`row_fields`].
    fn strip(message: &Value, row: &Row<'_>, received_text: &str) -> Value {
        let mut fields: Map<String, Value> = message.as_object().unwrap().clone();
        for (field, column) in row_fields(row, received_text) {
            if fields.get(field).and_then(Value::as_str) == Some(column) {
                fields.shift_remove(field);
            }
        }
        Value::Object(fields)
    }

    #[test]
    fn a_stripped_message_is_restored_to_what_ingest_normalised() {
        let received = crate::clock::format_ms(RECEIVED_AT);
        let normalised = json!({"type": "track", "messageId": "m-1", "event": "E",
                                "receivedAt": received, "timestamp": "2024-05-14T09:31:27.412Z"});
        let row = Row {
            kind: "track",
            dedupe_key: "m-1",
            received_at: RECEIVED_AT,
        };
        let mut read = strip(&normalised, &row, &received);
        assert_eq!(
            read,
            json!({"event": "E", "timestamp": "2024-05-14T09:31:27.412Z"})
        );
        restore(&mut read, row);
        assert_eq!(read, normalised);
        let keys: Vec<&String> = read.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "type");
    }

    #[test]
    fn fields_that_differ_from_the_row_stay_in_the_body() {
        // A webhook message carries Segment's own receivedAt.
        let theirs =
            json!({"type": "track", "messageId": "m-1", "receivedAt": "2024-01-01T00:00:00.000Z"});
        let row = Row {
            kind: "page",
            dedupe_key: "other",
            received_at: RECEIVED_AT,
        };
        let mut read = strip(&theirs, &row, &crate::clock::format_ms(RECEIVED_AT));
        restore(&mut read, row);
        assert_eq!(read, theirs);
    }
}
