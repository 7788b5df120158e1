//! LaunchDarkly → Segment: one stored LaunchDarkly SDK event (schema 4 or 3)
//! becomes the one Segment message that LaunchDarkly's Data Export to Segment
//! would produce for it (`spec/mapping.md` §b).
//!
//! Owns the kind filter, the normalisation of `contextKeys` / `context` /
//! schema-3 `userKey`/`user` into `properties.contextKeys`, the choice of
//! `userId` or `anonymousId`, the deterministic `messageId` and `eventId`, and
//! the skip reasons operators see. Does not own reading the payload id or the
//! `{envId}` path segment (ingest passes them in [`Origin`]), the `/v1/batch`
//! envelope, `sentAt` or the write key (`deliver`), batching (`dispatch`), or
//! diagnostic events, which are never mapped.

use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use super::{Mapped, Unmappable};
use crate::clock;

/// The kind whose key becomes Segment's `userId` by default, and the kind
/// of a context that names none.
pub const USER_KIND: &str = "user";
/// Tail of every "kind not exported" skip reason.
const EXPORTED: &str = "LaunchDarkly's Data Export sends only feature, custom, click and pageview";
/// Kinds LaunchDarkly SDKs and tools send that Data Export leaves out; any
/// other unexported kind is reported as unknown so operators notice new ones.
const KNOWN_UNEXPORTED: [&str; 9] = [
    "index",
    "identify",
    "summary",
    "debug",
    "migration_op",
    "alias",
    "click_pageview",
    "diagnostic",
    "diagnostic-init",
];

type Fields = Map<String, Value>;

/// Where an event came from: what the mapping needs besides the event.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// `<X-LaunchDarkly-Payload-ID>:<index in the payload, 0-based>`: the
    /// stored event's dedupe key, the name hashed into messageId and eventId.
    pub dedupe_key: &'a str,
    /// LaunchDarkly project id from config (`properties.project`; omitted when None).
    pub project_id: Option<&'a str>,
    /// Environment id = client-side id: the `{envId}` path segment for browser
    /// payloads, else the source's configured client_side_id
    /// (`properties.environment`; omitted when None).
    pub environment: Option<&'a str>,
    /// Also copy a custom event's `data` (bridge option, off by default as
    /// LaunchDarkly does): put it at `properties.data` (nested, so it can never
    /// overwrite key/version/…) when it is present and not null.
    pub copy_custom_data: bool,
    /// The context kind whose key becomes `userId` (`to_segment.user_id_context_kind`,
    /// default `user`).
    pub user_id_kind: &'a str,
}

/// The four kinds Data Export sends to Segment.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Feature,
    Click,
    Custom,
    Pageview,
}

impl Kind {
    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "feature" => Some(Self::Feature),
            "click" => Some(Self::Click),
            "custom" => Some(Self::Custom),
            "pageview" => Some(Self::Pageview),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Feature => "feature",
            Self::Click => "click",
            Self::Custom => "custom",
            Self::Pageview => "pageview",
        }
    }

    /// What `key` names for this kind, for skip reasons.
    fn key_meaning(self) -> &'static str {
        match self {
            Self::Feature => "flag key",
            Self::Custom => "event key",
            Self::Click | Self::Pageview => "goal key",
        }
    }

    /// Segment `event` name; `None` for a page view, which becomes a `page`
    /// call without a name, as in LaunchDarkly's example.
    fn track_event(self) -> Option<&'static str> {
        match self {
            Self::Pageview => None,
            kind => Some(kind.name()),
        }
    }
}

/// Maps one LaunchDarkly SDK event (schema 4 or 3) to one Segment message, or
/// says why not.
///
/// The message is a `track` (`feature`, `click`, `custom`) or `page`
/// (`pageview`) whose keys are in the order LaunchDarkly's examples use, with
/// `context.library` naming ldbridge last. Returns [`Mapped::Skip`] with an
/// operator-facing reason when the event is not a JSON object, its `kind` is
/// missing or not one of those four (index, identify, summary, debug,
/// migration_op, alias, click_pageview, diagnostics, unknown kinds), or it
/// lacks a non-empty string `key`, a numeric `creationDate` or any string
/// context key. Never panics.
pub fn map(event: &Value, origin: &Origin<'_>) -> Mapped {
    match message(event, origin) {
        Ok(message) => Mapped::Send(message),
        Err(unmappable) => unmappable.into(),
    }
}

/// UUID v5 (RFC 4122 URL namespace 6ba7b811-9dad-11d1-80b4-00c04fd430c8) of
/// `name`, as fixtures/README.md specifies, in lowercase hyphenated form.
/// Any string, the empty one included, gives a valid id.
pub fn message_id(name: &str) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

/// First 24 lowercase hex chars of SHA-1(`name`). Any string, the empty one
/// included, gives a 24-char id.
pub fn event_id(name: &str) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(24);
    for byte in Sha1::digest(name.as_bytes()).iter().take(12) {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// The Segment message, keys in LaunchDarkly's order, or the skip reason.
fn message(event: &Value, origin: &Origin<'_>) -> Result<Value, Unmappable> {
    let fields = event
        .as_object()
        .ok_or_else(|| "stored LaunchDarkly event is not a JSON object".to_string())?;
    let kind = exported_kind(fields)?;
    let key = key_text(fields.get("key")).ok_or_else(|| {
        format!(
            "{} event has no string `key` (the {}), so Segment's properties.key would be empty",
            kind.name(),
            kind.key_meaning()
        )
    })?;
    let created = creation_date(fields).ok_or_else(|| {
        format!(
            "{} event has no numeric `creationDate`, so there is no event time for Segment's timestamp",
            kind.name()
        )
    })?;
    let context_keys = context_keys(fields);
    let (id_field, id) = identity(&context_keys, origin.user_id_kind).ok_or_else(|| {
        format!(
            "{} event has no context key (no string key in contextKeys, context, userKey or user), \
             so Segment would get neither userId nor anonymousId",
            kind.name()
        )
    })?;

    let mut message = Map::new();
    let segment_type = if kind == Kind::Pageview {
        "page"
    } else {
        "track"
    };
    message.insert("type".to_string(), segment_type.into());
    if let Some(name) = kind.track_event() {
        message.insert("event".to_string(), name.into());
    }
    message.insert(id_field.to_string(), id.into());
    message.insert(
        "messageId".to_string(),
        message_id(origin.dedupe_key).into(),
    );
    message.insert("timestamp".to_string(), clock::format_ms(created).into());
    message.insert("integrations".to_string(), json!({}));
    let properties = properties(fields, kind, key, context_keys, origin);
    message.insert("properties".to_string(), properties);
    // LaunchDarkly sends no context; naming the bridge lets Segment users tell
    // these events from ones LaunchDarkly exported itself.
    message.insert(
        "context".to_string(),
        json!({"library": {"name": "ldbridge", "version": env!("CARGO_PKG_VERSION")}}),
    );
    Ok(Value::Object(message))
}

/// The exported kind, or the reason naming the kind that is not exported.
fn exported_kind(fields: &Fields) -> Result<Kind, Unmappable> {
    let Some(kind) = fields.get("kind").and_then(Value::as_str) else {
        return Err(Unmappable(format!(
            "LaunchDarkly event has no string `kind` ({EXPORTED})"
        )));
    };
    Kind::parse(kind).ok_or_else(|| {
        Unmappable(if KNOWN_UNEXPORTED.contains(&kind) {
            format!("{kind} events are not exported to Segment ({EXPORTED})")
        } else {
            format!(
                "unknown LaunchDarkly event kind {kind:?} is not exported to Segment ({EXPORTED})"
            )
        })
    })
}

/// `creationDate` as epoch ms; `None` when missing or not a finite number.
/// Fractional milliseconds are truncated.
fn creation_date(fields: &Fields) -> Option<i64> {
    let number = fields.get("creationDate")?.as_number()?;
    number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|float| float.is_finite())
            .map(|float| float as i64)
    })
}

/// A usable key: a non-empty string. LaunchDarkly keys are strings, and an
/// empty one would give Segment an empty id, which it treats as missing.
fn key_text(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

/// `{kind: key}` for every context of the event, from the first source that
/// has any usable key: `contextKeys`, then the inline `context`, then the
/// schema-3 user. Empty when none has one.
fn context_keys(fields: &Fields) -> Fields {
    let sources: [fn(&Fields) -> Fields; 3] = [from_context_keys, from_context, from_legacy_user];
    sources
        .iter()
        .map(|source| source(fields))
        .find(|keys| !keys.is_empty())
        .unwrap_or_default()
}

/// Schema-4 `contextKeys`, minus entries whose key is not a usable string.
fn from_context_keys(fields: &Fields) -> Fields {
    let Some(keys) = fields.get("contextKeys").and_then(Value::as_object) else {
        return Fields::new();
    };
    keys.iter()
        .filter_map(|(kind, key)| Some((kind.clone(), key_text(Some(key))?.into())))
        .collect()
}

/// Schema-4 inline `context`: one entry, or one per nested kind of a multi
/// context in the context's own key order.
fn from_context(fields: &Fields) -> Fields {
    let Some(context) = fields.get("context").and_then(Value::as_object) else {
        return Fields::new();
    };
    let kind = context.get("kind").and_then(Value::as_str);
    if kind == Some("multi") {
        return context
            .iter()
            .filter(|(kind, _)| kind.as_str() != "kind")
            .filter_map(|(kind, nested)| {
                let key = key_text(nested.as_object()?.get("key"))?;
                Some((kind.clone(), key.into()))
            })
            .collect();
    }
    let mut keys = Fields::new();
    if let Some(key) = key_text(context.get("key")) {
        keys.insert(kind.unwrap_or(USER_KIND).to_string(), key.into());
    }
    keys
}

/// Schema-3 `userKey` or `user.key` under the `user` kind. Anonymous users
/// (`contextKind: "anonymousUser"`) go there too: a bridge decision recorded
/// in fixtures/README.md, since LaunchDarkly's own choice is unconfirmed.
fn from_legacy_user(fields: &Fields) -> Fields {
    let key = key_text(fields.get("userKey")).or_else(|| {
        let user = fields.get("user").and_then(Value::as_object)?;
        key_text(user.get("key"))
    });
    let mut keys = Fields::new();
    if let Some(key) = key {
        keys.insert(USER_KIND.to_string(), key.into());
    }
    keys
}

/// `("userId", key)` for `user_kind` (`user` by default), else
/// `("anonymousId", "<kind>:<key>")` of the alphabetically first kind,
/// because Segment rejects a message with neither id. `None` when there
/// are no context keys.
fn identity(context_keys: &Fields, user_kind: &str) -> Option<(&'static str, String)> {
    if let Some(user) = context_keys.get(user_kind).and_then(Value::as_str) {
        return Some(("userId", user.to_string()));
    }
    let (kind, key) = context_keys
        .iter()
        .min_by(|(left, _), (right, _)| left.cmp(right))?;
    Some(("anonymousId", format!("{kind}:{}", key.as_str()?)))
}

/// `properties`: the common head, the kind's own fields, then `version: 1`
/// (the export schema version, not the flag version).
fn properties(
    fields: &Fields,
    kind: Kind,
    key: &str,
    context_keys: Fields,
    origin: &Origin<'_>,
) -> Value {
    let mut properties = Map::new();
    properties.insert("contextKeys".to_string(), Value::Object(context_keys));
    if let Some(project) = origin.project_id {
        properties.insert("project".to_string(), project.into());
    }
    if let Some(environment) = origin.environment {
        properties.insert("environment".to_string(), environment.into());
    }
    let event_id = event_id(origin.dedupe_key);
    properties.insert("eventId".to_string(), event_id.into());
    properties.insert("key".to_string(), key.into());
    match kind {
        Kind::Feature => feature_properties(fields, &mut properties),
        Kind::Click => {
            copy_present(fields, &mut properties, "selector", "selector");
            copy_present(fields, &mut properties, "url", "url");
        }
        Kind::Pageview => copy_present(fields, &mut properties, "url", "url"),
        Kind::Custom => {
            copy_present(fields, &mut properties, "metricValue", "metricValue");
            if origin.copy_custom_data {
                copy_present(fields, &mut properties, "data", "data");
            }
        }
    }
    properties.insert("version".to_string(), 1.into());
    Value::Object(properties)
}

/// Feature-event properties. `value` and `default` keep an explicit `null`,
/// which is a real flag or application default value; the other fields are
/// ones SDKs omit rather than null, so a `null` there counts as absent.
fn feature_properties(fields: &Fields, properties: &mut Fields) {
    copy_verbatim(fields, properties, "value", "value");
    copy_present(fields, properties, "version", "flagVersion");
    copy_present(fields, properties, "variation", "variation");
    copy_verbatim(fields, properties, "default", "default");
    copy_present(fields, properties, "prereqOf", "prereqOf");
    let Some(reason) = fields.get("reason").and_then(Value::as_object) else {
        return;
    };
    if let Some(reason_kind) = reason.get("kind").filter(|kind| !kind.is_null()) {
        properties.insert("reasonKind".to_string(), reason_kind.clone());
    }
    // LaunchDarkly's schema documents the flag as present only when true.
    if reason.get("inExperiment") == Some(&Value::Bool(true)) {
        properties.insert("inExperiment".to_string(), true.into());
    }
}

/// Copies `from[name]` to `to[renamed]` when present, `null` included.
fn copy_verbatim(from: &Fields, to: &mut Fields, name: &str, renamed: &str) {
    if let Some(value) = from.get(name) {
        to.insert(renamed.to_string(), value.clone());
    }
}

/// Copies `from[name]` to `to[renamed]` when present and not `null`.
fn copy_present(from: &Fields, to: &mut Fields, name: &str, renamed: &str) {
    if let Some(value) = from.get(name).filter(|value| !value.is_null()) {
        to.insert(renamed.to_string(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = "5744c96707c9900708000004";
    const ENVIRONMENT: &str = "6488674dc2ea1d6673731ba2";
    const DEDUPE_KEY: &str = "c0a8012e-5b7d-4f3e-9a61-2e4d8b7c9f10:3";

    fn origin(dedupe_key: &str) -> Origin<'_> {
        Origin {
            dedupe_key,
            project_id: Some(PROJECT),
            environment: Some(ENVIRONMENT),
            copy_custom_data: false,
            user_id_kind: USER_KIND,
        }
    }

    fn sent_with(event: Value, origin: &Origin<'_>) -> Value {
        match map(&event, origin) {
            Mapped::Send(message) => message,
            Mapped::Skip(reason) => panic!("expected Send, got Skip({reason:?})"),
        }
    }

    fn sent(event: Value) -> Value {
        sent_with(event, &origin(DEDUPE_KEY))
    }

    fn skip_reason(event: Value) -> String {
        match map(&event, &origin(DEDUPE_KEY)) {
            Mapped::Skip(reason) => reason,
            Mapped::Send(message) => panic!("expected Skip, got Send({message})"),
        }
    }

    /// Maps every element of a fixture payload as ingest would, checks each
    /// skip names its kind, and compares the sent messages, key order
    /// included, with the fixture's batch after removing the allowed
    /// `context` extra.
    fn assert_fixture(input: &str, expected: &str, payload_id: &str) {
        let events: Value = serde_json::from_str(input).unwrap();
        let expected: Value = serde_json::from_str(expected).unwrap();
        let mut batch = Vec::new();
        for (index, event) in events.as_array().unwrap().iter().enumerate() {
            let dedupe_key = format!("{payload_id}:{index}");
            match map(event, &origin(&dedupe_key)) {
                Mapped::Send(mut message) => {
                    let context = message.as_object_mut().unwrap().shift_remove("context");
                    assert_eq!(
                        context,
                        Some(
                            json!({"library": {"name": "ldbridge", "version": env!("CARGO_PKG_VERSION")}})
                        )
                    );
                    batch.push(message);
                }
                Mapped::Skip(reason) => {
                    let kind = event["kind"].as_str().unwrap();
                    assert!(reason.contains(kind), "{kind}: {reason}");
                }
            }
        }
        assert_eq!(
            serde_json::to_string_pretty(&batch).unwrap(),
            serde_json::to_string_pretty(&expected["batch"]).unwrap()
        );
    }

    #[test]
    fn server_bulk_fixture_maps_features_and_customs_and_drops_the_rest() {
        assert_fixture(
            include_str!("../../tests/fixtures/ld-server-bulk.in.json"),
            include_str!("../../tests/fixtures/ld-server-bulk.to-segment.json"),
            "c0a8012e-5b7d-4f3e-9a61-2e4d8b7c9f10",
        );
    }

    #[test]
    fn client_js_bulk_fixture_maps_page_click_custom_and_feature() {
        assert_fixture(
            include_str!("../../tests/fixtures/ld-client-js-bulk.in.json"),
            include_str!("../../tests/fixtures/ld-client-js-bulk.to-segment.json"),
            "5b2e8f14-0c3d-4a7e-b96f-d1e2f3a4b5c6",
        );
    }

    #[test]
    fn client_js_legacy_fixture_drops_click_pageview() {
        assert_fixture(
            include_str!("../../tests/fixtures/ld-client-js-legacy.in.json"),
            include_str!("../../tests/fixtures/ld-client-js-legacy.to-segment.json"),
            "f3d2c1b0-a9e8-4d7c-8b6a-5f4e3d2c1b0a",
        );
    }

    #[test]
    fn schema3_legacy_fixture_puts_known_and_anonymous_users_under_user() {
        assert_fixture(
            include_str!("../../tests/fixtures/ld-schema3-legacy.in.json"),
            include_str!("../../tests/fixtures/ld-schema3-legacy.to-segment.json"),
            "7e6d5c4b-3a29-4817-b6f5-e4d3c2b1a098",
        );
    }

    #[test]
    fn diagnostic_init_is_skipped_naming_its_kind() {
        let event: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/ld-diagnostic-init.in.json"
        ))
        .unwrap();
        assert_eq!(
            map(&event, &origin(DEDUPE_KEY)),
            Mapped::Skip(format!(
                "diagnostic-init events are not exported to Segment ({EXPORTED})"
            ))
        );
    }

    #[test]
    fn unexported_unknown_and_missing_kinds_are_skipped_with_reasons() {
        assert_eq!(
            skip_reason(json!({"kind": "summary", "startDate": 1, "endDate": 2})),
            "summary events are not exported to Segment \
             (LaunchDarkly's Data Export sends only feature, custom, click and pageview)"
        );
        for kind in [
            "index",
            "identify",
            "debug",
            "migration_op",
            "alias",
            "click_pageview",
        ] {
            let reason = skip_reason(json!({"kind": kind, "key": "k", "creationDate": 1}));
            assert!(reason.starts_with(&format!("{kind} events")), "{reason}");
        }
        let reason = skip_reason(json!({"kind": "teleport", "creationDate": 1}));
        assert!(
            reason.starts_with("unknown LaunchDarkly event kind \"teleport\""),
            "{reason}"
        );
        let reason = skip_reason(json!({"key": "k", "creationDate": 1}));
        assert!(reason.contains("no string `kind`"), "{reason}");
        let reason = skip_reason(json!({"kind": 7}));
        assert!(reason.contains("no string `kind`"), "{reason}");
        let reason = skip_reason(json!(["feature"]));
        assert_eq!(reason, "stored LaunchDarkly event is not a JSON object");
    }

    #[test]
    fn feature_message_keys_are_in_launchdarkly_order() {
        let message = sent(json!({
            "kind": "feature", "creationDate": 1715679100130_i64, "key": "checkout-theme",
            "version": 7, "contextKeys": {"user": "u_8412", "organization": "org_77"},
            "variation": 0, "value": "dark", "default": "light", "prereqOf": "new-checkout-flow",
            "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "inExperiment": true},
        }));
        let expected = format!(
            concat!(
                r#"{{"type":"track","event":"feature","userId":"u_8412","#,
                r#""messageId":"e5177c99-aa2e-5573-a108-4d8f027d85fe","#,
                r#""timestamp":"2024-05-14T09:31:40.130Z","integrations":{{}},"#,
                r#""properties":{{"contextKeys":{{"user":"u_8412","organization":"org_77"}},"#,
                r#""project":"{PROJECT}","environment":"{ENVIRONMENT}","#,
                r#""eventId":"8dfdf5782825cd781eaec62f","key":"checkout-theme","value":"dark","#,
                r#""flagVersion":7,"variation":0,"default":"light","prereqOf":"new-checkout-flow","#,
                r#""reasonKind":"RULE_MATCH","inExperiment":true,"version":1}},"#,
                r#""context":{{"library":{{"name":"ldbridge","version":"{VERSION}"}}}}}}"#
            ),
            PROJECT = PROJECT,
            ENVIRONMENT = ENVIRONMENT,
            VERSION = env!("CARGO_PKG_VERSION"),
        );
        assert_eq!(message.to_string(), expected);
    }

    #[test]
    fn multi_kind_without_user_uses_the_alphabetically_first_kind_as_anonymous_id() {
        let message = sent(json!({
            "kind": "custom", "creationDate": 1, "key": "e",
            "context": {"kind": "multi", "organization": {"key": "org_77"}, "device": {"key": "d-1"}},
        }));
        assert_eq!(message["anonymousId"], "device:d-1");
        assert!(message.get("userId").is_none());
        assert_eq!(
            message["properties"]["contextKeys"].to_string(),
            r#"{"organization":"org_77","device":"d-1"}"#
        );
        let keys: Vec<&String> = message.as_object().unwrap().keys().collect();
        assert_eq!(keys[..4], ["type", "event", "anonymousId", "messageId"]);
    }

    #[test]
    fn multi_kind_with_user_uses_the_user_key_as_user_id() {
        let message = sent(json!({
            "kind": "feature", "creationDate": 1, "key": "f", "value": true,
            "context": {"kind": "multi", "organization": {"key": "org_77"}, "user": {"key": "u-1"}},
        }));
        assert_eq!(message["userId"], "u-1");
        assert!(message.get("anonymousId").is_none());
    }

    #[test]
    fn context_keys_win_over_an_inline_context() {
        let message = sent(json!({
            "kind": "custom", "creationDate": 1, "key": "e",
            "contextKeys": {"user": "from-keys"},
            "context": {"kind": "user", "key": "from-context"},
        }));
        assert_eq!(message["userId"], "from-keys");
        assert_eq!(
            message["properties"]["contextKeys"],
            json!({"user": "from-keys"})
        );
    }

    #[test]
    fn single_kind_context_defaults_to_the_user_kind() {
        let message = sent(json!({
            "kind": "custom", "creationDate": 1, "key": "e", "context": {"key": "u-9"},
        }));
        assert_eq!(message["userId"], "u-9");
        assert_eq!(message["properties"]["contextKeys"], json!({"user": "u-9"}));
    }

    #[test]
    fn schema3_user_object_gives_the_user_kind() {
        let message = sent(json!({
            "kind": "feature", "creationDate": 1, "key": "f", "value": 1,
            "user": {"key": "u_5120", "name": "Grace Hopper"},
        }));
        assert_eq!(message["userId"], "u_5120");
        assert_eq!(
            message["properties"]["contextKeys"],
            json!({"user": "u_5120"})
        );

        let message = sent(json!({
            "kind": "custom", "creationDate": 1, "key": "e",
            "contextKind": "anonymousUser", "user": {"key": "anon-1", "anonymous": true},
        }));
        assert_eq!(message["userId"], "anon-1");
    }

    #[test]
    fn non_string_and_empty_context_keys_are_left_out() {
        let message = sent(json!({
            "kind": "custom", "creationDate": 1, "key": "e",
            "contextKeys": {"user": 42, "organization": "org_77", "device": ""},
        }));
        assert_eq!(
            message["properties"]["contextKeys"],
            json!({"organization": "org_77"})
        );
        assert_eq!(message["anonymousId"], "organization:org_77");

        // Unusable contextKeys fall through to the next source.
        let message = sent(json!({
            "kind": "custom", "creationDate": 1, "key": "e",
            "contextKeys": {"user": null}, "userKey": "u-3",
        }));
        assert_eq!(message["userId"], "u-3");
    }

    #[test]
    fn an_event_without_any_context_key_is_skipped() {
        for event in [
            json!({"kind": "custom", "creationDate": 1, "key": "e"}),
            json!({"kind": "custom", "creationDate": 1, "key": "e", "contextKeys": {"user": 42}}),
            json!({"kind": "custom", "creationDate": 1, "key": "e", "context": {"kind": "multi"}}),
            json!({"kind": "custom", "creationDate": 1, "key": "e", "user": {"name": "x"}}),
        ] {
            let reason = skip_reason(event);
            assert!(
                reason.starts_with("custom event has no context key"),
                "{reason}"
            );
        }
    }

    #[test]
    fn missing_or_non_numeric_creation_date_is_skipped() {
        for created in [None, Some(json!("1715679100123")), Some(Value::Null)] {
            let mut event = json!({"kind": "click", "key": "g", "contextKeys": {"user": "u"}});
            if let Some(created) = created {
                event["creationDate"] = created;
            }
            let reason = skip_reason(event);
            assert!(
                reason.starts_with("click event has no numeric `creationDate`"),
                "{reason}"
            );
        }
        let message = sent(json!({
            "kind": "click", "key": "g", "contextKeys": {"user": "u"},
            "creationDate": 1715679105877.9,
        }));
        assert_eq!(message["timestamp"], "2024-05-14T09:31:45.877Z");
    }

    #[test]
    fn missing_or_non_string_key_is_skipped() {
        for key in [None, Some(json!(12)), Some(json!(""))] {
            let mut event =
                json!({"kind": "pageview", "creationDate": 1, "contextKeys": {"user": "u"}});
            if let Some(key) = key {
                event["key"] = key;
            }
            let reason = skip_reason(event);
            assert!(
                reason.starts_with("pageview event has no string `key` (the goal key)"),
                "{reason}"
            );
        }
        let reason = skip_reason(
            json!({"kind": "feature", "creationDate": 1, "contextKeys": {"user": "u"}}),
        );
        assert!(reason.contains("(the flag key)"), "{reason}");
    }

    #[test]
    fn custom_data_is_copied_nested_only_when_enabled_and_not_null() {
        let event = json!({
            "kind": "custom", "creationDate": 1, "key": "e", "contextKeys": {"user": "u"},
            "metricValue": 2.5, "data": {"key": "not-the-key", "version": 9},
        });
        let message = sent(event.clone());
        assert!(message["properties"].get("data").is_none());

        let copying = Origin {
            copy_custom_data: true,
            ..origin(DEDUPE_KEY)
        };
        let message = sent_with(event, &copying);
        let properties = &message["properties"];
        assert_eq!(properties["key"], "e");
        assert_eq!(properties["version"], 1);
        assert_eq!(
            properties["data"],
            json!({"key": "not-the-key", "version": 9})
        );
        let keys: Vec<&String> = properties.as_object().unwrap().keys().collect();
        assert_eq!(keys[keys.len() - 3..], ["metricValue", "data", "version"]);

        let message = sent_with(
            json!({"kind": "custom", "creationDate": 1, "key": "e",
                   "contextKeys": {"user": "u"}, "data": null}),
            &copying,
        );
        assert!(message["properties"].get("data").is_none());
    }

    #[test]
    fn data_is_never_copied_for_other_kinds() {
        let copying = Origin {
            copy_custom_data: true,
            ..origin(DEDUPE_KEY)
        };
        let message = sent_with(
            json!({"kind": "click", "creationDate": 1, "key": "g", "contextKeys": {"user": "u"},
                   "url": "https://example.com/", "data": {"x": 1}}),
            &copying,
        );
        assert!(message["properties"].get("data").is_none());
    }

    #[test]
    fn in_experiment_false_and_missing_reason_fields_are_omitted() {
        let message = sent(json!({
            "kind": "feature", "creationDate": 1, "key": "f", "contextKeys": {"user": "u"},
            "value": null, "default": null, "reason": {"kind": "OFF", "inExperiment": false},
        }));
        let properties = message["properties"].as_object().unwrap();
        assert!(properties.get("inExperiment").is_none());
        assert_eq!(properties["reasonKind"], "OFF");
        // A null flag value and a null application default are real values.
        assert_eq!(properties.get("value"), Some(&Value::Null));
        assert_eq!(properties.get("default"), Some(&Value::Null));
        for absent in ["flagVersion", "variation", "prereqOf"] {
            assert!(properties.get(absent).is_none(), "{absent}");
        }

        let message = sent(json!({
            "kind": "feature", "creationDate": 1, "key": "f", "contextKeys": {"user": "u"},
            "value": true, "variation": null,
        }));
        let properties = message["properties"].as_object().unwrap();
        assert!(properties.get("reasonKind").is_none());
        assert!(properties.get("variation").is_none());
        assert!(properties.get("default").is_none());
    }

    #[test]
    fn project_and_environment_are_omitted_when_not_configured() {
        let bare = Origin {
            project_id: None,
            environment: None,
            ..origin(DEDUPE_KEY)
        };
        let message = sent_with(
            json!({"kind": "pageview", "creationDate": 1, "key": "p",
                   "contextKeys": {"user": "u"}, "url": "https://example.com/"}),
            &bare,
        );
        assert_eq!(
            message["properties"].to_string(),
            r#"{"contextKeys":{"user":"u"},"eventId":"8dfdf5782825cd781eaec62f","key":"p","url":"https://example.com/","version":1}"#
        );
        assert!(message.get("event").is_none());
        assert_eq!(message["type"], "page");
    }

    #[test]
    fn message_and_event_ids_match_the_fixture_rules() {
        assert_eq!(
            message_id("c0a8012e-5b7d-4f3e-9a61-2e4d8b7c9f10:2"),
            "58128f16-eddc-5802-a2ab-9908cf9e5b33"
        );
        assert_eq!(
            event_id("c0a8012e-5b7d-4f3e-9a61-2e4d8b7c9f10:2"),
            "5c87c5410c75ddd1b80a94d5"
        );
        assert_eq!(
            message_id("7e6d5c4b-3a29-4817-b6f5-e4d3c2b1a098:3"),
            "eb05b695-ae6e-5559-ad68-e51049da3fa3"
        );
        assert_eq!(
            event_id("7e6d5c4b-3a29-4817-b6f5-e4d3c2b1a098:3"),
            "53405608b07f0770dcf27f93"
        );
        // SHA-1("") = da39a3ee5e6b4b0d3255bfef95601890afd80709
        assert_eq!(event_id(""), "da39a3ee5e6b4b0d3255bfef");
        assert_eq!(
            message_id(""),
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"").to_string()
        );
    }

    #[test]
    fn user_id_context_kind_picks_the_kind_whose_key_is_the_user_id() {
        let event = json!({"kind": "custom", "creationDate": 1, "key": "e",
                           "contextKeys": {"user": "u-1", "organization": "org-9"}});
        let by_org = Origin {
            user_id_kind: "organization",
            ..origin(DEDUPE_KEY)
        };
        let message = sent_with(event.clone(), &by_org);
        assert_eq!(message["userId"], "org-9");
        assert_eq!(sent(event)["userId"], "u-1");
        // A kind the event lacks: the anonymousId rule, as without the user kind.
        let by_device = Origin {
            user_id_kind: "device",
            ..origin(DEDUPE_KEY)
        };
        let message = sent_with(
            json!({"kind": "custom", "creationDate": 1, "key": "e", "contextKeys": {"user": "u-1"}}),
            &by_device,
        );
        assert_eq!(message["anonymousId"], "user:u-1");
        assert!(message.get("userId").is_none());
    }
}
