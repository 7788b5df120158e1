//! Property-based tests (proptest) of both ingest parsers and all three
//! mappers: arbitrary bytes and arbitrary JSON in every field never panic,
//! refusals are 4xx, whatever is accepted maps without panicking, and what a
//! client sent survives the trip through the store byte for byte.
//!
//! These call the parsers and mappers directly (no HTTP), so thousands of
//! cases run in seconds. `PROPTEST_CASES=10000 cargo test --test it properties`
//! runs a longer search.

use hyper::{
    header::{HeaderValue, AUTHORIZATION},
    HeaderMap,
};
use ldbridge::domain::DeliveryStatus;
use ldbridge::map::mapping::Mappings;
use ldbridge::{
    config::Config,
    domain::accepted::{IngestBatch, NewEvent},
    ingest::{launchdarkly, segment, Refused},
    map::{ld_to_segment, segment_relay, segment_to_ld, Mapped},
};
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::{
    fixture::Fixture,
    helpers::{basic, WRITE_KEY},
};

const RECEIVED_AT: i64 = 1_700_000_000_000;

fn config() -> Config {
    let nowhere = "http://127.0.0.1:9";
    Fixture::new(std::path::Path::new("unused"), nowhere, nowhere).config()
}

fn segment_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&basic(WRITE_KEY)).unwrap(),
    );
    headers
}

fn ld_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static(ldbridge::demo::SDK_KEY),
    );
    headers.insert("x-launchdarkly-payload-id", HeaderValue::from_static("p-1"));
    headers
}

/// Any JSON value, up to a few levels deep, with arbitrary Unicode strings
/// and keys, and numbers of every kind JSON allows.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// An object whose `tag` field is one of `known` (or any JSON value) and
/// which has any of `fields`, each holding any JSON value.
fn shaped(
    tag: &'static str,
    known: &'static [&'static str],
    fields: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            prop::sample::select(known).prop_map(Value::from),
            json_value(),
        ],
        prop::collection::vec((prop::sample::select(fields), json_value()), 0..8),
    )
        .prop_map(move |(kind, fields)| {
            let mut object = Map::new();
            object.insert(tag.to_owned(), kind);
            for (name, value) in fields {
                object.insert(name.to_owned(), value);
            }
            Value::Object(object)
        })
}

/// A Segment-shaped message: a type (known or not) and any of the fields
/// Segment defines.
fn segment_message() -> impl Strategy<Value = Value> {
    shaped(
        "type",
        &["track", "identify", "page", "screen", "group", "alias"],
        &[
            "userId",
            "anonymousId",
            "event",
            "properties",
            "traits",
            "timestamp",
            "messageId",
            "context",
            "previousId",
            "groupId",
            "name",
            "integrations",
            "sentAt",
        ],
    )
}

/// A LaunchDarkly-shaped event: a kind (known or not) and any of the fields
/// the SDKs send.
fn ld_event() -> impl Strategy<Value = Value> {
    shaped(
        "kind",
        &[
            "feature", "custom", "click", "pageview", "identify", "index", "summary",
        ],
        &[
            "key",
            "creationDate",
            "context",
            "contextKeys",
            "data",
            "metricValue",
            "url",
            "value",
            "version",
            "variation",
            "default",
            "reason",
            "user",
            "userKey",
            "prereqOf",
        ],
    )
}

fn assert_refusal_is_4xx(refused: &Refused) {
    let refused = &refused.refusal;
    assert!(
        refused.status.is_client_error(),
        "refused with {}: {}",
        refused.status,
        refused.message
    );
    assert!(!refused.message.is_empty());
}

/// Maps every stored Segment event on both Segment routes; each result is
/// either a JSON object to send or a reason to skip.
/// A stored Segment body as the dispatcher reads it: parsed, with the
/// fields its row holds put back.
fn read_back(batch: &IngestBatch, event: &NewEvent) -> Value {
    let mut stored: Value = serde_json::from_str(&event.body).expect("stored body is JSON");
    let row = ldbridge::domain::stored_message::Row {
        kind: &event.kind,
        dedupe_key: &event.dedupe_key,
        received_at: batch.received_at,
    };
    ldbridge::domain::stored_message::restore(&mut stored, row);
    stored
}

fn map_segment_batch(batch: &IngestBatch) {
    for event in &batch.events {
        let stored = read_back(batch, event);
        assert!(stored.is_object());
        // What the row holds comes back: every route sees the whole message.
        assert_eq!(stored["type"], Value::from(event.kind.as_str()));
        assert_eq!(stored["messageId"], Value::from(event.dedupe_key.as_str()));
        assert!(stored["receivedAt"].is_string());
        match segment_to_ld::map(&Mappings::default(), &stored, RECEIVED_AT) {
            Ok(events) => assert!(events.iter().all(|(_, event)| event.is_object())),
            Err(reason) => assert!(!reason.0.is_empty()),
        }
        match segment_relay::map(&stored) {
            Mapped::Send(value) => assert!(value.is_object()),
            Mapped::Skip(reason) => assert!(!reason.is_empty()),
        }
    }
}

fn origin(dedupe_key: &str) -> ld_to_segment::Origin<'_> {
    ld_to_segment::Origin {
        dedupe_key,
        project_id: Some(ldbridge::demo::PROJECT_ID),
        environment: Some(ldbridge::demo::CLIENT_SIDE_ID),
        copy_custom_data: true,
        user_id_kind: "user",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn segment_parser_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let config = config();
        for endpoint in [segment::SegmentPath::Batch, segment::SegmentPath::Single("track"), segment::SegmentPath::Webhook] {
            match segment::parse(endpoint, &segment_headers(), &body, &config, RECEIVED_AT) {
                Ok(parsed) => map_segment_batch(&parsed.batch),
                Err(refused) => assert_refusal_is_4xx(&refused),
            }
        }
    }

    #[test]
    fn launchdarkly_parser_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let config = config();
        let endpoint = launchdarkly::parse_path("/bulk").unwrap();
        if let Err(refused) = launchdarkly::parse(&endpoint, &ld_headers(), &body, &config, RECEIVED_AT) {
            assert_refusal_is_4xx(&refused);
        }
    }

    #[test]
    fn segment_messages_with_any_field_values_are_refused_4xx_or_stored_and_mapped(
        messages in prop::collection::vec(segment_message(), 1..4),
    ) {
        let config = config();
        let body = serde_json::json!({ "batch": messages }).to_string();
        match segment::parse(segment::SegmentPath::Batch, &segment_headers(), body.as_bytes(), &config, RECEIVED_AT) {
            Ok(parsed) => {
                // Taken message by message: each one stored or refused alone.
                prop_assert_eq!(parsed.batch.events.len() + parsed.refused.len(), messages.len());
                for refused in &parsed.refused {
                    assert_refusal_is_4xx(refused);
                    prop_assert!(refused.index.is_some_and(|index| index < messages.len()));
                }
                map_segment_batch(&parsed.batch);
            }
            Err(refused) => assert_refusal_is_4xx(&refused),
        }
    }

    #[test]
    fn launchdarkly_events_with_any_field_values_are_refused_4xx_or_stored_and_mapped(
        events in prop::collection::vec(ld_event(), 1..4),
    ) {
        let config = config();
        let body = Value::Array(events.clone()).to_string();
        let endpoint = launchdarkly::parse_path("/bulk").unwrap();
        match launchdarkly::parse(&endpoint, &ld_headers(), body.as_bytes(), &config, RECEIVED_AT) {
            Ok(parsed) => {
                let batch = parsed.batch;
                prop_assert_eq!(batch.events.len(), events.len());
                for (event, sent) in batch.events.iter().zip(&events) {
                    // Stored byte for byte, for the relay.
                    let stored: Value = serde_json::from_str(&event.body).unwrap();
                    prop_assert_eq!(&stored, sent);
                    let first = ld_to_segment::map(&stored, &origin(&event.dedupe_key));
                    let again = ld_to_segment::map(&stored, &origin(&event.dedupe_key));
                    match (first, again) {
                        (Mapped::Send(message), Mapped::Send(repeat)) => {
                            prop_assert!(message.is_object());
                            prop_assert_eq!(
                                &message["messageId"],
                                &Value::from(ld_to_segment::message_id(&event.dedupe_key))
                            );
                            prop_assert_eq!(message, repeat, "mapping is deterministic");
                        }
                        (Mapped::Skip(reason), Mapped::Skip(_)) => prop_assert!(!reason.is_empty()),
                        _ => prop_assert!(false, "mapping the same event twice differed"),
                    }
                }
            }
            Err(refused) => assert_refusal_is_4xx(&refused),
        }
    }

    #[test]
    fn any_sequence_of_unicode_escapes_in_an_event_name_is_taken_and_maps(
        units in prop::collection::vec(prop_oneof![0xD800u16..0xE000, any::<u16>()], 1..12),
        text in "[a-z \\\\]{0,4}",
    ) {
        // Escapes as a JavaScript client writes them, lone surrogates and
        // all (JSON.stringify keeps them as escapes): taken, never refused.
        let escapes: String = units.iter().map(|unit| format!("\\u{unit:04x}")).collect();
        let name = format!("{}{escapes}", text.replace('\\', "\\\\"));
        let body = format!(r#"{{"userId":"u1","event":"{name}x"}}"#);
        let batch = segment::parse(
            segment::SegmentPath::Single("track"), &segment_headers(), body.as_bytes(), &config(), RECEIVED_AT,
        ).unwrap().batch;
        let stored = read_back(&batch, &batch.events[0]);
        let defaults = Mappings::default();
        let Ok(events) = segment_to_ld::map(&defaults, &stored, RECEIVED_AT) else {
            panic!("a valid track was skipped");
        };
        let event = &events[0].1;
        let key = event["key"].as_str().unwrap();
        prop_assert!(key.ends_with('x'));
        // Each escape is one character: itself, or U+FFFD for a lone half.
        let expected: String = char::decode_utf16(units.iter().copied())
            .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        prop_assert!(key.ends_with(&format!("{expected}x")), "{key:?} vs {expected:?}");
    }

    #[test]
    fn a_track_arrives_at_launchdarkly_with_its_name_and_properties_unchanged(
        name in ".{1,30}",
        properties in prop::collection::btree_map("[a-zA-Z0-9_ .-]{1,10}", json_value(), 0..6),
    ) {
        let mut properties: Map<String, Value> = properties.into_iter().collect();
        // revenue/value become metricValue by rule, tested elsewhere.
        properties.remove("revenue");
        properties.remove("value");
        let message = serde_json::json!({
            "type": "track", "userId": "u1", "event": name, "properties": properties,
        });
        let body = message.to_string();
        let batch = segment::parse(
            segment::SegmentPath::Single("track"), &segment_headers(), body.as_bytes(), &config(), RECEIVED_AT,
        ).unwrap().batch;
        let stored = read_back(&batch, &batch.events[0]);
        let defaults = Mappings::default();
        let Ok(events) = segment_to_ld::map(&defaults, &stored, RECEIVED_AT) else {
            panic!("a valid track was skipped");
        };
        let event = &events[0].1;
        prop_assert_eq!(&event["key"], &Value::from(name));
        prop_assert_eq!(&event["data"], &Value::Object(properties));
    }
}

/// Regression, found by the properties above: serde_json's default number
/// parsing is best-effort, so a float could come out one digit off in its
/// last place after the store → map trip (a price of 4.602112335161006e-119
/// arrived as 4.6021123351610065e-119). `float_roundtrip` is now on.
#[tokio::test]
async fn regression_floats_reach_the_destination_with_every_digit() {
    let app = crate::helpers::spawn_app().await;
    let track = r#"{"type":"track","userId":"u1","event":"Bought","properties":{"price":4.602112335161006e-119,"ratio":0.30000000000000004}}"#;
    let reply = app
        .post("/v1/track", track.as_bytes(), crate::helpers::Dress::Basic)
        .await;
    assert_eq!(reply.http_status(), Some(200));
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 1)
        .await;
    let sent = String::from_utf8(app.launchdarkly.requests()[0].body.to_vec()).unwrap();
    assert!(sent.contains("4.602112335161006e-119"), "{sent}");
    assert!(sent.contains("0.30000000000000004"), "{sent}");
}
