//! Segment → LaunchDarkly: one stored Segment message becomes the
//! LaunchDarkly events its source's mappings produce: by default the one
//! event Segment's "LaunchDarkly (Actions)" destination builds with its
//! default field mappings (`spec/mapping.md` §a), else one event per
//! configured mapping whose trigger takes the call ([`super::mapping`]).
//!
//! Owns applying a mapping: the `custom` and `alias` event shapes, the
//! coercion of ids and metric values, and the skip reasons operators see.
//! Does not own skew correction (ingest stores the corrected `timestamp`),
//! the bulk array, headers or payload id (`deliver`), or batching (`dispatch`).

use std::borrow::Cow;

use serde_json::{json, Map, Number, Value};

use super::{
    mapping::{Action, Field, Mapping, Mappings},
    Unmappable,
};
use crate::clock;

/// The kind `contextKeys` uses for the user key when `context_kind` has no value.
const USER_KIND: &str = "user";
/// Tail of every "no equivalent" skip reason of the default mappings.
const ONLY_MAPPED: &str = "Segment's LaunchDarkly destination maps only track, identify and alias";

/// Maps one stored Segment message with `mappings`: the events of every
/// mapping whose trigger takes it, in the mappings' order, each with the
/// mapping that produced it.
///
/// `creationDate` comes from the `timestamp` field (by default the
/// message's skew-corrected `timestamp`); `fallback_ms` (the time the
/// event was received) is used when it has none or it is unparsable, so
/// a batch maps the same on every attempt. Errs with an operator-facing
/// reason when the message is not a JSON object, its `integrations` turn
/// LaunchDarkly off, no mapping takes it, or every mapping that takes it
/// lacks a field it requires (each one named). Never panics.
pub fn map<'m>(
    mappings: &'m Mappings,
    message: &Value,
    fallback_ms: i64,
) -> Result<Vec<(&'m Mapping, Value)>, Unmappable> {
    if !message.is_object() {
        return Err(Unmappable(
            "stored message is not a JSON object".to_string(),
        ));
    }
    if let Some(reason) = turned_off(message.get("integrations")) {
        return Err(Unmappable(reason));
    }
    let mut events = Vec::new();
    let mut reasons = Vec::new();
    for mapping in mappings.iter().filter(|mapping| mapping.takes(message)) {
        match apply(mapping, message, fallback_ms) {
            Ok(event) => events.push((mapping, event)),
            Err(Unmappable(reason)) => reasons.push(format!("{}: {reason}", mapping.label())),
        }
    }
    if !events.is_empty() {
        return Ok(events);
    }
    if !reasons.is_empty() {
        return Err(Unmappable(reasons.join("; ")));
    }
    Err(Unmappable(no_match(mappings, message)))
}

/// Applies one mapping that takes `call`.
pub fn apply(mapping: &Mapping, call: &Value, fallback_ms: i64) -> Result<Value, Unmappable> {
    let created = creation_date(
        mapping.timestamp.resolve(call, true).as_deref(),
        fallback_ms,
    );
    match mapping.action {
        Action::Custom => custom(mapping, call, created),
        Action::Alias => alias(mapping, call, created),
    }
}

/// Why no mapping takes `message`: for the defaults, the call type's
/// story; else every mapping's trigger.
fn no_match(mappings: &Mappings, message: &Value) -> String {
    if mappings.configured() {
        let triggers: Vec<String> = mappings
            .iter()
            .map(|mapping| format!("{} takes {}", mapping.label(), mapping.trigger.text()))
            .collect();
        return if triggers.is_empty() {
            "no mapping matches (every mapping of the source is turned off)".to_owned()
        } else {
            format!("no mapping matches ({})", triggers.join("; "))
        };
    }
    match message.get("type").and_then(Value::as_str) {
        Some(kind @ ("page" | "screen" | "group")) => {
            format!("{kind} calls have no LaunchDarkly equivalent ({ONLY_MAPPED})")
        }
        Some(other) => format!("unknown Segment type {other:?} ({ONLY_MAPPED})"),
        None => format!("message has no string `type` ({ONLY_MAPPED})"),
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

/// A `custom` event (trackEvent), keys in the order the destination
/// produces them.
fn custom(mapping: &Mapping, call: &Value, created: i64) -> Result<Value, Unmappable> {
    let key = match mapping.event_name.pick(call, true) {
        Some((_, Cow::Borrowed(Value::String(name)))) => name.clone(),
        Some((_, Cow::Owned(Value::String(name)))) => name,
        None => return Err(missing("event_name", &mapping.event_name)),
        Some((from, _)) => {
            return Err(Unmappable(format!(
                "event_name ({}) is not a string",
                from.describe()
            )))
        }
    };
    let properties = match mapping.event_properties.pick(call, false) {
        None => Map::new(),
        Some((_, Cow::Owned(Value::Object(properties)))) => properties,
        Some((_, Cow::Borrowed(Value::Object(properties)))) => properties.clone(),
        Some((from, _)) => {
            return Err(Unmappable(format!(
                "event_properties ({}) is not a JSON object",
                from.describe()
            )))
        }
    };
    let context_keys = context_keys(mapping, call)?;
    let metric = metric_value(&mapping.metric_value, call)?;

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

/// A legacy `alias` event (aliasUser).
fn alias(mapping: &Mapping, call: &Value, created: i64) -> Result<Value, Unmappable> {
    let key = id(&mapping.user_key, "user_key", call)?
        .ok_or_else(|| missing("user_key", &mapping.user_key))?;
    let previous = id(&mapping.previous_key, "previous_key", call)?
        .ok_or_else(|| missing("previous_key", &mapping.previous_key))?;
    Ok(json!({
        "kind": "alias",
        "key": key,
        "previousKey": previous,
        "contextKind": USER_KIND,
        "previousContextKind": "anonymousUser",
        "creationDate": created,
    }))
}

/// The skip reason for a required field with no value, naming it as
/// Segment's destination does.
fn missing(name: &str, field: &Field) -> Unmappable {
    Unmappable(format!(
        "the required field {name} ({}) has no value",
        field.describe()
    ))
}

/// Segment's `constructContextKeys`: the additional keys first, then the
/// user key under the context kind, spread last so it wins a same-named
/// kind.
fn context_keys(mapping: &Mapping, call: &Value) -> Result<Value, Unmappable> {
    let user = id(&mapping.user_key, "user_key", call)?
        .ok_or_else(|| missing("user_key", &mapping.user_key))?;
    let kind = match mapping.context_kind.pick(call, true) {
        None => USER_KIND.to_owned(),
        Some((_, value)) if value.is_string() => value.as_str().unwrap_or(USER_KIND).to_owned(),
        Some((from, _)) => {
            return Err(Unmappable(format!(
                "context_kind ({}) is not a string",
                from.describe()
            )))
        }
    };
    let mut keys = Map::new();
    // Segment would stringify a null additional key to "null"; the spec's
    // bridge decision is to leave null and empty additional keys out instead.
    for (name, field) in &mapping.additional_context_keys {
        if let Some(key) = id(field, "additional_context_keys", call)? {
            keys.insert(name.clone(), key.into());
        }
    }
    keys.insert(kind, user.into());
    Ok(Value::Object(keys))
}

/// An id as the string Segment's destination would send; `Ok(None)` when
/// the field has no value.
///
/// `null` is no value, as in Segment's `@if exists`. Empty strings are no
/// value either, which is a bridge decision: Segment picks `""`, strips it
/// and drops the whole event for a missing key, whereas falling back to
/// the next id of a list keeps events from libraries that send
/// `userId: ""` for logged-out visitors. Numbers and booleans take their
/// JS `String(v)` form, as Segment's type coercion gives them; objects and
/// arrays fail its validation.
fn id(field: &Field, name: &str, call: &Value) -> Result<Option<String>, Unmappable> {
    let Some((from, value)) = field.pick(call, true) else {
        return Ok(None);
    };
    match value.as_ref() {
        Value::String(id) => Ok(Some(id.clone())),
        Value::Number(number) => Ok(Some(js_string(number))),
        Value::Bool(flag) => Ok(Some(flag.to_string())),
        _ => Err(Unmappable(format!(
            "{name} ({}) is a JSON object or array, not an id",
            from.describe()
        ))),
    }
}

/// The metric value, coerced to a number the way Segment's validation (Ajv
/// `coerceTypes`) does. `Ok(None)` when the field has no value; `Err` when
/// Segment would reject the event.
fn metric_value(field: &Field, call: &Value) -> Result<Option<Value>, Unmappable> {
    // An empty string is a value here (a list stops at it): Segment strips
    // it from the mapped payload, leaving no metric rather than falling back.
    let Some((from, value)) = field.pick(call, false) else {
        return Ok(None);
    };
    let not_a_number = || {
        Unmappable(format!(
            "metric_value ({}) is not a number, so Segment's validation would reject the event",
            from.describe()
        ))
    };
    match value.as_ref() {
        Value::Number(_) => Ok(Some(value.into_owned())),
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(text) => numeric_string(text).map(Some).ok_or_else(not_a_number),
        Value::Bool(flag) => Ok(Some(u8::from(*flag).into())),
        _ => Err(not_a_number()),
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

    /// What the default mappings send for `message`: one event.
    fn sent(message: Value) -> Value {
        let defaults = Mappings::default();
        match map(&defaults, &message, NOW) {
            Ok(mut events) if events.len() == 1 => events.remove(0).1,
            Ok(events) => panic!("expected one event, got {}", events.len()),
            Err(Unmappable(reason)) => panic!("expected Send, got Skip({reason:?})"),
        }
    }

    fn skip_reason(message: Value) -> String {
        match map(&Mappings::default(), &message, NOW) {
            Err(Unmappable(reason)) => reason,
            Ok(events) => panic!("expected Skip, got {} event(s)", events.len()),
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
            "default alias mapping: the required field user_key ($.userId) has no value"
        );
        let reason = skip_reason(json!({"type": "alias", "previousId": ANON, "userId": null}));
        assert!(
            reason.contains("user_key ($.userId) has no value"),
            "{reason}"
        );
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
        assert!(
            reason.contains("user_key ($.userId) has no value"),
            "{reason}"
        );
        let reason =
            skip_reason(json!({"type": "track", "event": "E", "userId": "", "anonymousId": ""}));
        assert!(
            reason.contains("user_key ([$.userId, $.anonymousId]) has no value"),
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
        let defaults = Mappings::default();
        let with = |integrations: Value| {
            map(
                &defaults,
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
            let Err(Unmappable(reason)) = with(off.clone()) else {
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
            assert!(with(on.clone()).is_ok(), "{on} should send");
        }
    }

    #[test]
    fn object_ids_are_skipped() {
        let reason = skip_reason(json!({"type": "track", "event": "E", "userId": {"id": 1}}));
        assert!(
            reason.contains("user_key ($.userId) is a JSON object"),
            "{reason}"
        );
        let reason = skip_reason(json!({"type": "alias", "userId": "u", "previousId": ["p"]}));
        assert!(
            reason.contains("previous_key ($.previousId) is a JSON object"),
            "{reason}"
        );
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
                reason.contains("metric_value ($.properties.revenue) is not a number"),
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
            assert_eq!(
                reason,
                "default custom mapping: the required field event_name ($.event) has no value"
            );
        }
        let reason = skip_reason(json!({"type": "track", "userId": "u"}));
        assert!(
            reason.contains("event_name ($.event) has no value"),
            "{reason}"
        );
        let reason = skip_reason(json!({"type": "track", "event": 42, "userId": "u"}));
        assert_eq!(
            reason,
            "default custom mapping: event_name ($.event) is not a string"
        );
        let reason = skip_reason(json!({"type": "track", "event": "E", "properties": {}}));
        assert!(
            reason.contains("user_key ([$.userId, $.anonymousId]) has no value"),
            "{reason}"
        );
        let reason =
            skip_reason(json!({"type": "track", "event": "E", "userId": "u", "properties": [1]}));
        assert_eq!(
            reason,
            "default custom mapping: event_properties ($.properties) is not a JSON object"
        );
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
        let defaults = Mappings::default();
        for (name, input, expected, arrival) in fixtures {
            let body: Value = serde_json::from_str(input).expect("fixture input is JSON");
            let expected: Value = serde_json::from_str(expected).expect("fixture output is JSON");
            let events: Vec<Value> = stored(&body, &arrival)
                .iter()
                .flat_map(|message| match map(&defaults, message, NOW) {
                    Ok(events) => events.into_iter().map(|(_, event)| event).collect(),
                    Err(_) => Vec::new(),
                })
                .collect();
            assert_eq!(Value::Array(events), expected, "fixture {name}");
        }
    }

    fn fixture_mappings() -> Mappings {
        let specs: Vec<crate::map::mapping::MappingSpec> = serde_json::from_str(include_str!(
            "../../tests/fixtures/segment-mappings.mappings.json"
        ))
        .expect("the fixture's mappings are specs");
        Mappings::from_specs(&specs).expect("the fixture's mappings are valid")
    }

    #[test]
    fn configured_mappings_map_their_fixture() {
        let mappings = fixture_mappings();
        let body: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/segment-mappings.in.json"
        ))
        .unwrap();
        let expected: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/segment-mappings.to-ld.json"
        ))
        .unwrap();
        let calls = messages(&body);
        let outcomes: Vec<Result<Vec<(usize, Value)>, String>> = calls
            .iter()
            .map(|call| {
                map(&mappings, call, NOW)
                    .map(|events| events.into_iter().map(|(m, e)| (m.index, e)).collect())
                    .map_err(|Unmappable(reason)| reason)
            })
            .collect();
        let sent: Vec<Value> = outcomes
            .iter()
            .flat_map(|outcome| outcome.iter().flatten().map(|(_, event)| event.clone()))
            .collect();
        assert_eq!(Value::Array(sent), expected);
        // Both mappings take the first call, each sends its own event.
        let producers: Vec<usize> = outcomes[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(producers, [1, 2]);
        let second = mappings.iter().nth(1).unwrap();
        assert_eq!(
            outcomes[1].as_ref().unwrap_err(),
            &format!(
                "mapping 2 (custom, #{}): the required field user_key ($.context.groupId) has no value",
                second.hash
            )
        );
        for skipped in [2, 3] {
            let reason = outcomes[skipped].as_ref().unwrap_err();
            assert!(
                reason.starts_with("no mapping matches (mapping 1 (custom, #"),
                "{reason}"
            );
            assert!(
                reason.contains("takes type = \"track\" and event = \"Order Completed\""),
                "{reason}"
            );
        }
        // The last call: only the first mapping's event (the second lacks its key).
        let producers: Vec<usize> = outcomes[4]
            .as_ref()
            .unwrap()
            .iter()
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(producers, [1]);
    }

    #[test]
    fn the_defaults_written_out_as_mappings_send_the_same_bytes_on_every_fixture() {
        let specs: Vec<crate::map::mapping::MappingSpec> = serde_json::from_value(json!([
            {"action": "custom", "trigger": "type = \"track\"", "event_name": "$.event",
             "context_kind": "user", "user_key": ["$.userId", "$.anonymousId"],
             "additional_context_keys": {"unauthenticatedUser": "$.anonymousId"},
             "metric_value": ["$.properties.revenue", "$.properties.value"],
             "event_properties": "$.properties", "timestamp": "$.timestamp"},
            {"action": "alias", "trigger": "type = \"identify\" or type = \"alias\"",
             "user_key": "$.userId", "previous_key": ["$.previousId", "$.anonymousId"],
             "timestamp": "$.timestamp"},
        ]))
        .unwrap();
        let written = Mappings::from_specs(&specs).unwrap();
        let defaults = Mappings::default();
        let inputs = [
            include_str!("../../tests/fixtures/segment-track.in.json"),
            include_str!("../../tests/fixtures/segment-identify.in.json"),
            include_str!("../../tests/fixtures/segment-alias.in.json"),
            include_str!("../../tests/fixtures/segment-page.in.json"),
            include_str!("../../tests/fixtures/segment-batch.in.json"),
            include_str!("../../tests/fixtures/segment-batch-skew.in.json"),
            include_str!("../../tests/fixtures/segment-webhook-track.in.json"),
            include_str!("../../tests/fixtures/segment-webhook-actions-batch.in.json"),
            include_str!("../../tests/fixtures/segment-mappings.in.json"),
        ];
        let mut compared = 0;
        for input in inputs {
            let body: Value = serde_json::from_str(input).unwrap();
            for call in messages(&body) {
                let bytes = |mappings: &Mappings| {
                    map(mappings, &call, NOW).map(|events| {
                        events
                            .iter()
                            .map(|(_, e)| serde_json::to_string(e).unwrap())
                            .collect::<Vec<_>>()
                    })
                };
                match (bytes(&written), bytes(&defaults)) {
                    (Ok(left), Ok(right)) => {
                        assert_eq!(left, right, "{call}");
                        compared += 1;
                    }
                    (Err(_), Err(_)) => {}
                    (left, right) => panic!("{call}: written {left:?}, defaults {right:?}"),
                }
            }
        }
        assert!(compared >= 12, "only {compared} calls were sent");
    }

    #[test]
    fn a_mapping_reads_its_timestamp_and_falls_back_to_the_receive_time() {
        let specs: Vec<crate::map::mapping::MappingSpec> = serde_json::from_value(json!([
            {"action": "custom", "timestamp": "$.originalTimestamp"},
        ]))
        .unwrap();
        let mappings = Mappings::from_specs(&specs).unwrap();
        let call = json!({"type": "track", "event": "E", "userId": "u",
                          "timestamp": TEST_TS, "originalTimestamp": "2024-05-14T11:31:27.412+02:00"});
        let events = map(&mappings, &call, NOW).unwrap();
        assert_eq!(events[0].1["creationDate"], json!(1_715_679_087_412_i64));
        let call = json!({"type": "track", "event": "E", "userId": "u", "timestamp": TEST_TS});
        let events = map(&mappings, &call, NOW).unwrap();
        assert_eq!(events[0].1["creationDate"], json!(NOW));
    }

    #[test]
    fn an_alias_mapping_reads_its_own_fields() {
        let specs: Vec<crate::map::mapping::MappingSpec> = serde_json::from_value(json!([
            {"action": "alias", "trigger": "type = \"identify\" and traits.email != null",
             "user_key": "$.traits.email", "previous_key": ["$.context.traits.legacyId", "$.userId"],
             "timestamp": "$.originalTimestamp"},
        ]))
        .unwrap();
        let mappings = Mappings::from_specs(&specs).unwrap();
        let call = json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"},
                          "context": {"traits": {"legacyId": "L-9"}},
                          "timestamp": TEST_TS, "originalTimestamp": "2024-05-14T11:31:27.412+02:00"});
        let events = map(&mappings, &call, NOW).unwrap();
        assert_eq!(
            events[0].1.to_string(),
            r#"{"kind":"alias","key":"ada@example.com","previousKey":"L-9","contextKind":"user","previousContextKind":"anonymousUser","creationDate":1715679087412}"#
        );
        // The list falls back; the trigger's `!=` needs the trait.
        let mut without_legacy = call.clone();
        without_legacy["context"] = json!({});
        assert_eq!(
            map(&mappings, &without_legacy, NOW).unwrap()[0].1["previousKey"],
            "u-1"
        );
        let mut without_email = call;
        without_email["traits"] = json!({});
        let reason = map(&mappings, &without_email, NOW).unwrap_err().0;
        assert!(
            reason.starts_with("no mapping matches (mapping 1 (alias, #"),
            "{reason}"
        );
    }
}
