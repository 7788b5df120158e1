//! Segment → LaunchDarkly: one stored Segment message becomes the one
//! LaunchDarkly event that Segment's "LaunchDarkly (Actions)" destination
//! builds with its default field mappings (`spec/mapping.md` §a).
//!
//! Owns the `track` → `custom` and `identify`/`alias` → `alias` rules, the
//! coercion of ids and metric values, and the skip reasons operators see.
//! Does not own skew correction (ingest stores the corrected `timestamp`),
//! the bulk array, headers or payload id (`deliver`), or batching (`dispatch`).

use serde_json::{json, Map, Number, Value};

use super::{Mapped, Unmappable};
use crate::clock;

/// The kind `contextKeys` uses for the user key (`context_kind` default).
const USER_KIND: &str = "user";
/// The kind the anonymous id goes under (`additional_context_keys` default).
const ANONYMOUS_KIND: &str = "unauthenticatedUser";
/// Tail of every "no equivalent" skip reason.
const ONLY_MAPPED: &str = "Segment's LaunchDarkly destination maps only track, identify and alias";

type Fields = Map<String, Value>;

/// Maps one stored Segment message to the LaunchDarkly event Segment's
/// destination would send for it.
///
/// `creationDate` comes from the message's (already skew-corrected)
/// `timestamp`; `now_ms` is used when it is missing or unparsable. Returns
/// [`Mapped::Skip`] with an operator-facing reason when the message is not a
/// JSON object, its `type` has no LaunchDarkly equivalent (page, screen,
/// group, unknown or missing), or a field the destination requires is missing
/// or invalid. Never panics.
pub fn map(message: &Value, now_ms: i64) -> Mapped {
    let Some(fields) = message.as_object() else {
        return Mapped::Skip("stored message is not a JSON object".to_string());
    };
    if let Some(reason) = turned_off(fields.get("integrations")) {
        return Mapped::Skip(reason);
    }
    let created = creation_date(fields.get("timestamp"), now_ms);
    let result = match fields.get("type").and_then(Value::as_str) {
        Some("track") => track(fields, created),
        Some(kind @ ("identify" | "alias")) => alias(fields, kind, created),
        Some(kind @ ("page" | "screen" | "group")) => Err(Unmappable(format!(
            "{kind} calls have no LaunchDarkly equivalent ({ONLY_MAPPED})"
        ))),
        Some(other) => Err(Unmappable(format!(
            "unknown Segment type {other:?} ({ONLY_MAPPED})"
        ))),
        None => Err(Unmappable(format!(
            "message has no string `type` ({ONLY_MAPPED})"
        ))),
    };
    match result {
        Ok(event) => Mapped::Send(event),
        Err(unmappable) => unmappable.into(),
    }
}

/// The names Segment knows LaunchDarkly's destinations by, in a message's
/// `integrations` object.
const DESTINATION_NAMES: [&str; 2] = ["LaunchDarkly", "LaunchDarkly (Actions)"];

/// Why the message's `integrations` object keeps it from LaunchDarkly, as
/// Segment would: either destination name set to `false`, or `All: false`
/// without either set to `true` (an options object counts as on). `None`
/// when LaunchDarkly is on, which is the default.
fn turned_off(integrations: Option<&Value>) -> Option<String> {
    let integrations = integrations?.as_object()?;
    let setting = |name: &str| integrations.get(name).filter(|value| !value.is_null());
    if let Some(name) = DESTINATION_NAMES
        .iter()
        .find(|name| setting(name) == Some(&Value::Bool(false)))
    {
        return Some(format!(
            "integrations.{name:?} is false: the message is not for LaunchDarkly"
        ));
    }
    let on = DESTINATION_NAMES
        .iter()
        .any(|name| setting(name).is_some_and(|value| value != &Value::Bool(false)));
    (integrations.get("All") == Some(&Value::Bool(false)) && !on).then(|| {
        "integrations.All is false and LaunchDarkly is not turned back on: \
         the message is not for LaunchDarkly"
            .to_owned()
    })
}

/// `track` → `custom`, keys in the order the destination produces them.
fn track(fields: &Fields, created: i64) -> Result<Value, Unmappable> {
    let key = match fields.get("event") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(Unmappable(
                "track without an event name has no LaunchDarkly event key".to_string(),
            ))
        }
        Some(_) => return Err(Unmappable("track `event` is not a string".to_string())),
    };
    let properties = match fields.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(properties)) => properties.clone(),
        Some(_) => {
            return Err(Unmappable(
                "track `properties` is not a JSON object".to_string(),
            ))
        }
    };
    let context_keys = context_keys(fields)?;
    let metric = metric_value(&properties)?;

    let mut event = Map::new();
    event.insert("kind".to_string(), "custom".into());
    event.insert("key".to_string(), key.into());
    event.insert("contextKeys".to_string(), context_keys);
    event.insert("creationDate".to_string(), created.into());
    if let Some(metric) = metric {
        event.insert("metricValue".to_string(), metric);
    }
    event.insert("data".to_string(), Value::Object(properties));
    Ok(Value::Object(event))
}

/// `identify` or `alias` → legacy `alias` event (the Alias User preset).
fn alias(fields: &Fields, kind: &str, created: i64) -> Result<Value, Unmappable> {
    let key = id_field(fields, "userId")?.ok_or_else(|| {
        Unmappable(format!(
            "{kind} without userId has no LaunchDarkly user key to alias"
        ))
    })?;
    let previous = match id_field(fields, "previousId")? {
        Some(previous) => previous,
        None => id_field(fields, "anonymousId")?.ok_or_else(|| {
            format!(
                "{kind} has neither previousId nor anonymousId, \
                 so there is no previous key to alias"
            )
        })?,
    };
    Ok(json!({
        "kind": "alias",
        "key": key,
        "previousKey": previous,
        "contextKind": USER_KIND,
        "previousContextKind": "anonymousUser",
        "creationDate": created,
    }))
}

/// Segment's `constructContextKeys` with the default mappings: the anonymous
/// id first, then the user key spread last so it would win a same-named kind.
fn context_keys(fields: &Fields) -> Result<Value, Unmappable> {
    let user = user_key(fields)?.ok_or_else(|| {
        "track has neither userId nor anonymousId, so there is no LaunchDarkly context key"
            .to_string()
    })?;
    let mut keys = Map::new();
    // Segment would stringify an explicit null anonymousId to "null"; the spec's
    // bridge decision is to leave null and empty additional keys out instead.
    if let Some(anonymous) = id_field(fields, "anonymousId")? {
        keys.insert(ANONYMOUS_KIND.to_string(), anonymous.into());
    }
    keys.insert(USER_KIND.to_string(), user.into());
    Ok(Value::Object(keys))
}

/// `userId` if present, else `anonymousId`; `Ok(None)` when neither is.
fn user_key(fields: &Fields) -> Result<Option<String>, Unmappable> {
    match id_field(fields, "userId")? {
        Some(id) => Ok(Some(id)),
        None => id_field(fields, "anonymousId"),
    }
}

/// An id as the string Segment's destination would send; `Ok(None)` when absent.
///
/// `null` is absent, as in Segment's `@if exists`. Empty strings are absent
/// too, which is a bridge decision: Segment picks `""`, strips it and drops the
/// whole event for a missing key, whereas falling back to the next id keeps
/// events from libraries that send `userId: ""` for logged-out visitors.
/// Numbers and booleans take their JS `String(v)` form, as Segment's type
/// coercion gives them; objects and arrays fail its validation.
fn id_field(fields: &Fields, name: &str) -> Result<Option<String>, Unmappable> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.is_empty() => Ok(None),
        Some(Value::String(id)) => Ok(Some(id.clone())),
        Some(Value::Number(number)) => Ok(Some(js_string(number))),
        Some(Value::Bool(flag)) => Ok(Some(flag.to_string())),
        Some(_) => Err(Unmappable(format!(
            "`{name}` is a JSON object or array, not an id"
        ))),
    }
}

/// JS `String(n)`, as Segment's destination (JavaScript) writes a numeric
/// id: every JSON number is a double there, so `1e21` is "1e+21", `1e-7`
/// is "1e-7", `1.0` is "1", and an integer past 2^53 is its nearest
/// double's text ("12345678901234567000"). `ryu-js` implements
/// ECMAScript's Number::toString.
pub fn js_string(number: &Number) -> String {
    match number.as_f64() {
        Some(float) => ryu_js::Buffer::new().format(float).to_owned(),
        None => number.to_string(),
    }
}

/// `properties.revenue` if present (not null), else `properties.value`,
/// coerced to a number the way Segment's validation (Ajv `coerceTypes`) does.
/// `Ok(None)` when neither is present; `Err` when Segment would reject the event.
fn metric_value(properties: &Fields) -> Result<Option<Value>, Unmappable> {
    let picked = ["revenue", "value"].into_iter().find_map(|name| {
        properties
            .get(name)
            .filter(|value| !value.is_null())
            .map(|value| (name, value))
    });
    let Some((name, value)) = picked else {
        return Ok(None);
    };
    let not_a_number = || {
        Unmappable(format!(
            "properties.{name} is not a number, so Segment's validation would reject the event"
        ))
    };
    match value {
        Value::Number(_) => Ok(Some(value.clone())),
        // Segment strips empty strings from the mapped payload, leaving no metric
        // rather than falling back to `value`.
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(text) => numeric_string(text).map(Some).ok_or_else(not_a_number),
        Value::Bool(flag) => Ok(Some(u8::from(*flag).into())),
        _ => Err(not_a_number()),
    }
}

/// A numeric string as the JSON number JS would send; `None` when not numeric.
fn numeric_string(text: &str) -> Option<Value> {
    let number = text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())?;
    // JSON.stringify writes the JS number from "49" as 49, not 49.0; below 2^53
    // the integral f64 converts to i64 exactly.
    if number.fract() == 0.0 && number.abs() < 9_007_199_254_740_992.0 {
        Some(Value::from(number as i64))
    } else {
        Number::from_f64(number).map(Value::Number)
    }
}

/// Epoch ms of `timestamp` (RFC 3339 string or epoch-ms number); `now_ms` when
/// it is missing or unparsable, as Segment's destination falls back to now.
fn creation_date(timestamp: Option<&Value>, now_ms: i64) -> i64 {
    match timestamp {
        Some(Value::String(text)) => clock::parse_ms(text).unwrap_or(now_ms),
        Some(Value::Number(number)) => number
            .as_i64()
            .or_else(|| {
                number
                    .as_f64()
                    .filter(|float| float.is_finite())
                    .map(|float| float as i64)
            })
            .unwrap_or(now_ms),
        _ => now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any time far from the fixtures' 2022/2024 timestamps.
    const NOW: i64 = 1_900_000_000_000;
    /// `2022-03-30T17:24:58Z`, the timestamp of Segment's action tests.
    const TEST_TS: &str = "2022-03-30T17:24:58Z";
    const TEST_MS: i64 = 1_648_661_098_000;
    const ANON: &str = "72d7bed1-4f42-4f2f-8955-72677340546b";

    fn sent(message: Value) -> Value {
        match map(&message, NOW) {
            Mapped::Send(event) => event,
            Mapped::Skip(reason) => panic!("expected Send, got Skip({reason:?})"),
        }
    }

    fn skip_reason(message: Value) -> String {
        match map(&message, NOW) {
            Mapped::Skip(reason) => reason,
            Mapped::Send(event) => panic!("expected Skip, got Send({event})"),
        }
    }

    fn track_with(properties: Value) -> Value {
        json!({"type": "track", "event": "Test Event", "userId": "user1234",
               "timestamp": TEST_TS, "properties": properties})
    }

    #[test]
    fn t1_default_mapping_gives_the_full_output_in_order() {
        let event = sent(json!({
            "type": "track", "event": "Test Event", "userId": "user1234", "anonymousId": ANON,
            "timestamp": TEST_TS, "properties": {"revenue": 123.456},
        }));
        let expected = format!(
            r#"{{"kind":"custom","key":"Test Event","contextKeys":{{"unauthenticatedUser":"{ANON}","user":"user1234"}},"creationDate":{TEST_MS},"metricValue":123.456,"data":{{"revenue":123.456}}}}"#
        );
        assert_eq!(event.to_string(), expected);
    }

    #[test]
    fn t5_anonymous_only_puts_the_anonymous_id_under_both_kinds() {
        let event = sent(json!({
            "type": "track", "event": "Test Event", "anonymousId": ANON,
            "timestamp": TEST_TS, "properties": {"revenue": 123.456},
        }));
        assert_eq!(
            event["contextKeys"].to_string(),
            format!(r#"{{"unauthenticatedUser":"{ANON}","user":"{ANON}"}}"#)
        );
        assert_eq!(event["metricValue"], json!(123.456));
    }

    #[test]
    fn a1_identify_aliases_the_anonymous_id_in_order() {
        let event = sent(json!({
            "type": "identify", "userId": "user1234",
            "anonymousId": "701a9c00-aabe-4074-80b7-0fd6cab41c08",
            "timestamp": TEST_TS, "traits": {"email": "a@example.com"},
        }));
        let expected = format!(
            r#"{{"kind":"alias","key":"user1234","previousKey":"701a9c00-aabe-4074-80b7-0fd6cab41c08","contextKind":"user","previousContextKind":"anonymousUser","creationDate":{TEST_MS}}}"#
        );
        assert_eq!(event.to_string(), expected);
    }

    #[test]
    fn a3_alias_prefers_previous_id_over_anonymous_id() {
        let event = sent(json!({
            "type": "alias", "userId": "user1234", "anonymousId": "anonId1234",
            "previousId": "701a9c00-aabe-4074-80b7-0fd6cab41c08", "timestamp": TEST_TS,
        }));
        assert_eq!(event["previousKey"], "701a9c00-aabe-4074-80b7-0fd6cab41c08");
        assert_eq!(event["key"], "user1234");
        assert_eq!(event["creationDate"], TEST_MS);
    }

    #[test]
    fn a4_missing_previous_key_is_skipped_naming_both_fields() {
        let reason = skip_reason(json!({
            "type": "identify", "userId": "user1234", "anonymousId": null,
            "previousId": null, "timestamp": TEST_TS,
        }));
        assert!(
            reason.contains("previousId") && reason.contains("anonymousId"),
            "{reason}"
        );
    }

    #[test]
    fn identify_without_user_id_is_skipped() {
        let reason = skip_reason(json!({"type": "identify", "anonymousId": ANON}));
        assert_eq!(
            reason,
            "identify without userId has no LaunchDarkly user key to alias"
        );
        let reason = skip_reason(json!({"type": "alias", "previousId": ANON, "userId": null}));
        assert!(reason.starts_with("alias without userId"), "{reason}");
    }

    #[test]
    fn required_fields_only_gives_user_key_now_and_empty_data() {
        let name = "8&tx*8iz0@V]qDguvfK";
        let event = sent(json!({"type": "track", "event": name, "userId": name}));
        let expected = format!(
            r#"{{"kind":"custom","key":"{name}","contextKeys":{{"user":"{name}"}},"creationDate":{NOW},"data":{{}}}}"#
        );
        assert_eq!(event.to_string(), expected);
    }

    #[test]
    fn alias_required_fields_only_uses_now() {
        let event =
            sent(json!({"type": "alias", "userId": "qkWpQ2NP*4", "previousId": "qkWpQ2NP*4"}));
        assert_eq!(event["creationDate"], NOW);
        assert_eq!(event["previousKey"], "qkWpQ2NP*4");
    }

    #[test]
    fn null_counts_as_absent_everywhere() {
        let event = sent(json!({
            "type": "track", "event": "E", "userId": null, "anonymousId": ANON,
            "timestamp": null, "properties": null,
        }));
        assert_eq!(
            event["contextKeys"],
            json!({"unauthenticatedUser": ANON, "user": ANON})
        );
        assert_eq!(event["creationDate"], NOW);
        assert_eq!(event["data"], json!({}));

        let event =
            sent(json!({"type": "track", "event": "E", "userId": "u", "anonymousId": null}));
        assert_eq!(event["contextKeys"].to_string(), r#"{"user":"u"}"#);

        let event =
            sent(json!({"type": "alias", "userId": "u", "previousId": null, "anonymousId": "a"}));
        assert_eq!(event["previousKey"], "a");
    }

    #[test]
    fn null_revenue_falls_back_to_value_and_stays_in_data() {
        let event = sent(track_with(json!({"revenue": null, "value": 7})));
        assert_eq!(event["metricValue"], json!(7));
        assert_eq!(event["data"].to_string(), r#"{"revenue":null,"value":7}"#);
    }

    #[test]
    fn empty_string_ids_count_as_absent() {
        let event = sent(json!({"type": "track", "event": "E", "userId": "", "anonymousId": ANON}));
        assert_eq!(
            event["contextKeys"],
            json!({"unauthenticatedUser": ANON, "user": ANON})
        );

        let event = sent(json!({"type": "track", "event": "E", "userId": "u", "anonymousId": ""}));
        assert_eq!(event["contextKeys"].to_string(), r#"{"user":"u"}"#);

        let event =
            sent(json!({"type": "alias", "userId": "u", "previousId": "", "anonymousId": "a"}));
        assert_eq!(event["previousKey"], "a");

        let reason = skip_reason(json!({"type": "identify", "userId": "", "anonymousId": "a"}));
        assert!(reason.contains("without userId"), "{reason}");
        let reason =
            skip_reason(json!({"type": "track", "event": "E", "userId": "", "anonymousId": ""}));
        assert!(
            reason.contains("neither userId nor anonymousId"),
            "{reason}"
        );
    }

    #[test]
    fn numeric_and_boolean_ids_are_stringified_like_js() {
        let event = sent(json!({"type": "track", "event": "E", "userId": 42, "anonymousId": true}));
        assert_eq!(
            event["contextKeys"].to_string(),
            r#"{"unauthenticatedUser":"true","user":"42"}"#
        );

        let event = sent(json!({"type": "track", "event": "E", "userId": 1.0, "anonymousId": 2.5}));
        assert_eq!(
            event["contextKeys"].to_string(),
            r#"{"unauthenticatedUser":"2.5","user":"1"}"#
        );

        let event = sent(json!({"type": "identify", "userId": -7, "anonymousId": false}));
        assert_eq!(event["key"], "-7");
        assert_eq!(event["previousKey"], "false");
    }

    #[test]
    fn numeric_ids_at_any_magnitude_are_written_as_javascripts_string_writes_them() {
        let user = |id: &str| {
            let message: Value =
                serde_json::from_str(&format!(r#"{{"type":"track","event":"E","userId":{id}}}"#))
                    .unwrap();
            sent(message)["contextKeys"]["user"].clone()
        };
        assert_eq!(user("1e21"), "1e+21");
        assert_eq!(user("1e-7"), "1e-7");
        assert_eq!(user("123456789012345678901"), "123456789012345680000");
        assert_eq!(user("9007199254740993"), "9007199254740992");
        assert_eq!(user("12345678901234567890"), "12345678901234567000");
        assert_eq!(user("0.1"), "0.1");
        assert_eq!(user("-0"), "0");
        assert_eq!(user("100"), "100");
    }

    #[test]
    fn integrations_that_turn_launchdarkly_off_skip_the_message_with_the_reason() {
        let with = |integrations: Value| {
            map(
                &json!({"type": "track", "event": "E", "userId": "u", "integrations": integrations}),
                NOW,
            )
        };
        for off in [
            json!({"All": false}),
            json!({"LaunchDarkly": false}),
            json!({"LaunchDarkly (Actions)": false}),
            json!({"All": true, "LaunchDarkly": false}),
            json!({"All": false, "LaunchDarkly": true, "LaunchDarkly (Actions)": false}),
        ] {
            let Mapped::Skip(reason) = with(off.clone()) else {
                panic!("{off} should turn LaunchDarkly off");
            };
            assert!(reason.contains("integrations."), "{reason}");
        }
        for on in [
            json!({}),
            json!({"All": true}),
            json!({"All": false, "LaunchDarkly": true}),
            json!({"All": false, "LaunchDarkly (Actions)": {"option": 1}}),
            json!({"Mixpanel": false}),
        ] {
            assert!(
                matches!(with(on.clone()), Mapped::Send(_)),
                "{on} should send"
            );
        }
    }

    #[test]
    fn object_ids_are_skipped() {
        let reason = skip_reason(json!({"type": "track", "event": "E", "userId": {"id": 1}}));
        assert!(reason.contains("`userId`"), "{reason}");
        let reason = skip_reason(json!({"type": "alias", "userId": "u", "previousId": ["p"]}));
        assert!(reason.contains("`previousId`"), "{reason}");
    }

    #[test]
    fn numeric_string_metrics_become_numbers() {
        let event = sent(track_with(json!({"revenue": "39.95"})));
        assert_eq!(event["metricValue"].to_string(), "39.95");
        let event = sent(track_with(json!({"value": " 49 "})));
        assert_eq!(event["metricValue"].to_string(), "49");
        let event = sent(track_with(json!({"revenue": "-1e3"})));
        assert_eq!(event["metricValue"].to_string(), "-1000");
        assert_eq!(event["data"], json!({"revenue": "-1e3"}));
    }

    #[test]
    fn non_numeric_metrics_are_skipped() {
        for bad in [
            json!("lots"),
            json!("NaN"),
            json!("Infinity"),
            json!([1]),
            json!({"a": 1}),
        ] {
            let reason = skip_reason(track_with(json!({"revenue": bad})));
            assert!(
                reason.contains("properties.revenue is not a number"),
                "{reason}"
            );
        }
        let reason = skip_reason(track_with(json!({"value": "n/a"})));
        assert!(reason.contains("properties.value"), "{reason}");
    }

    #[test]
    fn metric_value_rules() {
        let metric = |properties: Value| sent(track_with(properties)).get("metricValue").cloned();
        assert_eq!(metric(json!({"value": 0})), Some(json!(0)));
        assert_eq!(metric(json!({"revenue": 10, "value": 20})), Some(json!(10)));
        assert_eq!(metric(json!({"revenue": 0, "value": 20})), Some(json!(0)));
        assert_eq!(metric(json!({"revenue": true})), Some(json!(1)));
        assert_eq!(metric(json!({"revenue": "", "value": 20})), None);
        assert_eq!(metric(json!({"price": 5})), None);
        assert_eq!(metric(json!({})), None);
    }

    #[test]
    fn unmapped_types_are_skipped_with_a_reason() {
        for kind in ["page", "screen", "group"] {
            let reason = skip_reason(json!({"type": kind, "userId": "u", "event": "E"}));
            assert_eq!(
                reason,
                format!("{kind} calls have no LaunchDarkly equivalent (Segment's LaunchDarkly destination maps only track, identify and alias)")
            );
        }
        let reason = skip_reason(json!({"type": "delete", "userId": "u"}));
        assert!(
            reason.starts_with("unknown Segment type \"delete\""),
            "{reason}"
        );
        let reason = skip_reason(json!({"userId": "u", "event": "E"}));
        assert!(reason.contains("no string `type`"), "{reason}");
        assert_eq!(
            skip_reason(json!(["not", "an", "object"])),
            "stored message is not a JSON object"
        );
    }

    #[test]
    fn track_needs_an_event_name_and_an_id() {
        for event in [json!(null), json!("")] {
            let reason = skip_reason(json!({"type": "track", "event": event, "userId": "u"}));
            assert!(reason.contains("without an event name"), "{reason}");
        }
        let reason = skip_reason(json!({"type": "track", "userId": "u"}));
        assert!(reason.contains("without an event name"), "{reason}");
        let reason = skip_reason(json!({"type": "track", "event": 42, "userId": "u"}));
        assert_eq!(reason, "track `event` is not a string");
        let reason = skip_reason(json!({"type": "track", "event": "E", "properties": {}}));
        assert!(
            reason.contains("neither userId nor anonymousId"),
            "{reason}"
        );
        let reason =
            skip_reason(json!({"type": "track", "event": "E", "userId": "u", "properties": [1]}));
        assert_eq!(reason, "track `properties` is not a JSON object");
    }

    #[test]
    fn creation_date_accepts_rfc3339_and_epoch_ms_and_falls_back_to_now() {
        let created = |timestamp: Value| {
            sent(json!({"type": "alias", "userId": "u", "previousId": "p", "timestamp": timestamp}))
                ["creationDate"]
                .clone()
        };
        assert_eq!(
            created(json!("2024-05-14T11:31:27.412+02:00")),
            json!(1_715_679_087_412_i64)
        );
        assert_eq!(
            created(json!(1_715_679_087_412_i64)),
            json!(1_715_679_087_412_i64)
        );
        assert_eq!(
            created(json!(1_715_679_087_412.9)),
            json!(1_715_679_087_412_i64)
        );
        assert_eq!(created(json!("last tuesday")), json!(NOW));
        assert_eq!(created(json!({"at": 1})), json!(NOW));
    }

    /// Segment's skew correction (segment.md §6) for the fixtures; ingest owns the real one.
    fn corrected(original: &str, sent: &str, received: &str) -> String {
        let ms = |text: &str| clock::parse_ms(text).expect("fixture times are RFC 3339");
        clock::format_ms(ms(received) - (ms(sent) - ms(original)))
    }

    /// The stored messages of one request body: an object, `{"batch": [...]}` or an array.
    fn messages(body: &Value) -> Vec<Value> {
        match body {
            Value::Array(items) => items.clone(),
            Value::Object(fields) => match fields.get("batch") {
                Some(Value::Array(items)) => items.clone(),
                _ => vec![body.clone()],
            },
            other => panic!("fixture body is neither object nor array: {other}"),
        }
    }

    /// How ingest treats a fixture's timestamps.
    enum Arrival {
        /// Library traffic whose `receivedAt` equals its `sentAt`.
        ZeroSkew,
        /// Library traffic received at this server time.
        ReceivedAt(&'static str),
        /// Segment Webhooks: `timestamp` is already corrected.
        Webhook,
    }

    fn stored(body: &Value, arrival: &Arrival) -> Vec<Value> {
        let envelope_sent = body
            .get("sentAt")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut messages = messages(body);
        if matches!(arrival, Arrival::Webhook) {
            return messages;
        }
        for message in &mut messages {
            let sent = message
                .get("sentAt")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let Some(sent) = sent.or_else(|| envelope_sent.clone()) else {
                continue;
            };
            let received = match arrival {
                Arrival::ReceivedAt(received) => received,
                _ => sent.as_str(),
            };
            let original = message["timestamp"]
                .as_str()
                .expect("fixture has a timestamp");
            let timestamp = corrected(original, &sent, received);
            message["timestamp"] = timestamp.into();
        }
        messages
    }

    macro_rules! fixture {
        ($name:literal, $arrival:expr) => {
            (
                $name,
                include_str!(concat!("../../tests/fixtures/", $name, ".in.json")),
                include_str!(concat!("../../tests/fixtures/", $name, ".to-ld.json")),
                $arrival,
            )
        };
    }

    #[test]
    fn fixtures_map_to_their_expected_launchdarkly_events() {
        let fixtures = [
            fixture!("segment-track", Arrival::ZeroSkew),
            fixture!("segment-identify", Arrival::ZeroSkew),
            fixture!("segment-alias", Arrival::ZeroSkew),
            fixture!("segment-page", Arrival::ZeroSkew),
            fixture!("segment-batch", Arrival::ZeroSkew),
            fixture!(
                "segment-batch-skew",
                Arrival::ReceivedAt("2024-05-14T09:35:02.500Z")
            ),
            fixture!("segment-webhook-track", Arrival::Webhook),
            fixture!("segment-webhook-actions-batch", Arrival::Webhook),
        ];
        for (name, input, expected, arrival) in fixtures {
            let body: Value = serde_json::from_str(input).expect("fixture input is JSON");
            let expected: Value = serde_json::from_str(expected).expect("fixture output is JSON");
            let events: Vec<Value> = stored(&body, &arrival)
                .iter()
                .filter_map(|message| match map(message, NOW) {
                    Mapped::Send(event) => Some(event),
                    Mapped::Skip(_) => None,
                })
                .collect();
            assert_eq!(Value::Array(events), expected, "fixture {name}");
        }
    }
}
