//! `segment-relay`: stored Segment messages back out to Segment, unchanged
//! but for the fields Segment's own servers set.
//!
//! A message keeps its `messageId` (so Segment dedupes retries and resends)
//! and its timestamps. Its `timestamp` is already the skew-corrected time
//! ldbridge computed on receipt, with the receiving clock as reference; the
//! batch's `sentAt` is the send time, so Segment's own correction
//! (`receivedAt − (sentAt − timestamp)`) leaves it where it is, whatever time
//! the message spent queued here. `receivedAt` and the per-message `sentAt`
//! are removed: Segment sets the first, and the batch carries the second.

use serde_json::Value;

use super::Mapped;

/// The message to relay, or why it is not relayed (a webhook `delete`
/// request has no place on the tracking API).
pub fn map(stored: &Value) -> Mapped {
    let Some(message) = stored.as_object() else {
        return Mapped::Skip("stored message is not a JSON object".to_owned());
    };
    match message.get("type").and_then(Value::as_str) {
        Some("track" | "identify" | "page" | "screen" | "group" | "alias") => {}
        Some(other) => {
            return Mapped::Skip(format!(
                "`{other}` messages are not relayed to Segment's tracking API"
            ))
        }
        None => return Mapped::Skip("message has no type".to_owned()),
    }
    let mut message = message.clone();
    message.remove("receivedAt");
    message.remove("sentAt");
    Mapped::Send(Value::Object(message))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_message_id_and_timestamps_and_drops_server_fields() {
        let stored = json!({"type": "track", "event": "E", "messageId": "m-1", "timestamp": "2024-05-14T09:35:00.500Z",
                            "originalTimestamp": "2024-05-14T09:34:58.000Z", "receivedAt": "2024-05-14T09:35:02.500Z",
                            "sentAt": "2024-05-14T09:35:00.000Z", "userId": "u"});
        let Mapped::Send(sent) = map(&stored) else {
            panic!("not sent")
        };
        assert_eq!(sent["messageId"], "m-1");
        assert_eq!(sent["timestamp"], "2024-05-14T09:35:00.500Z");
        assert_eq!(sent["originalTimestamp"], "2024-05-14T09:34:58.000Z");
        assert!(sent.get("receivedAt").is_none() && sent.get("sentAt").is_none());
    }

    #[test]
    fn delete_requests_and_untyped_values_are_skipped() {
        assert!(
            matches!(map(&json!({"type": "delete", "userId": "u"})), Mapped::Skip(reason) if reason.contains("delete"))
        );
        assert!(matches!(map(&json!([1])), Mapped::Skip(_)));
    }
}
