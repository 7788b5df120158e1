//! LaunchDarkly's SDK event endpoints on the way in (launchdarkly.md §2,
//! §3, §8.1): what the Relay Proxy accepts, with the same credentials.
//!
//! Owns: which paths are LaunchDarkly's, authenticating the SDK key (server),
//! mobile key (with or without `api_key `) or client-side id (browser, in the
//! path) against `[[launchdarkly_source]]`, structural validation (an array
//! of objects with a `kind`; a diagnostic is one object), and dedupe keys
//! from `X-LaunchDarkly-Payload-ID` and position. Each event is stored as
//! the exact bytes the SDK sent, so the relay forwards them unchanged.
//! Validation is deliberately light: anything LaunchDarkly itself would
//! take must not be refused here, or the SDK would drop it.

use hyper::{header::AUTHORIZATION, HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{message::Checked, Parsed, Refusal, Refused, RequestRefused};
use crate::{
    config::{Config, LaunchDarklySource},
    domain::{
        accepted::{IngestBatch, NewEvent},
        LdEndpoint, LdMeta, Protocol,
    },
};

/// Longest payload id accepted (SDKs send a 36-character UUID).
const MAX_PAYLOAD_ID: usize = 128;

/// A LaunchDarkly ingest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdPath {
    pub kind: LdEndpoint,
    pub diagnostic: bool,
    /// The client-side id of a browser path.
    pub env: Option<String>,
}

/// The endpoint for `path` (trailing slash tolerated, as SDKs differ);
/// `None` for anything else.
pub fn parse_path(path: &str) -> Option<LdPath> {
    let path = path.trim_end_matches('/');
    let fixed = |kind, diagnostic| {
        Some(LdPath {
            kind,
            diagnostic,
            env: None,
        })
    };
    match path {
        "/bulk" => fixed(LdEndpoint::Server, false),
        "/diagnostic" => fixed(LdEndpoint::Server, true),
        "/mobile" | "/mobile/events" | "/mobile/events/bulk" => fixed(LdEndpoint::Mobile, false),
        "/mobile/events/diagnostic" => fixed(LdEndpoint::Mobile, true),
        _ => {
            let (diagnostic, env) = match path.strip_prefix("/events/bulk/") {
                Some(env) => (false, env),
                None => (true, path.strip_prefix("/events/diagnostic/")?),
            };
            (!env.is_empty() && !env.contains('/')).then(|| LdPath {
                kind: LdEndpoint::Client,
                diagnostic,
                env: Some(env.to_owned()),
            })
        }
    }
}

/// Whether browsers call this path (CORS preflight is answered for these).
pub fn is_browser(endpoint: &LdPath) -> bool {
    endpoint.kind == LdEndpoint::Client
}

/// The fields ingest looks at (`kind`); everything else is kept verbatim,
/// but checked to be JSON the mappers can read later: every number in range
/// (`1e400` is refused) and every string escape valid, which skimming with
/// `IgnoredAny` does not check.
struct Probe {
    kind: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Probe;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Probe, A::Error> {
                let mut kind = None;
                while let Some(IsKind(is_kind)) = map.next_key()? {
                    if is_kind {
                        kind = map.next_value()?;
                    } else {
                        map.next_value::<Checked>()?;
                    }
                }
                Ok(Probe { kind })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// Whether an object key is `kind` (without allocating the key).
struct IsKind(bool);

impl<'de> Deserialize<'de> for IsKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl serde::de::Visitor<'_> for Key {
            type Value = IsKind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<IsKind, E> {
                Ok(IsKind(key == "kind"))
            }
        }
        deserializer.deserialize_str(Key)
    }
}

/// Authenticates, validates and splits one request into events. A payload
/// is taken or refused as a whole (nothing is stored when this fails; the
/// refusal says why), as LaunchDarkly's events service does.
pub fn parse(
    endpoint: &LdPath,
    headers: &HeaderMap,
    body: &[u8],
    config: &Config,
    received_at: i64,
) -> Result<Parsed, RequestRefused> {
    let source = authenticate(endpoint, headers, config)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let payload_id = header("x-launchdarkly-payload-id");
    let batch =
        events(endpoint, body, payload_id, received_at, source, &header).map_err(|refusal| {
            Box::new(Refused {
                message_id: payload_id.map(str::to_owned),
                ..Refused::from(refusal).from_source(&source.name)
            })
        })?;
    Ok(Parsed {
        batch,
        refused: Vec::new(),
    })
}

/// The events of an authenticated request from `source`.
fn events<'h>(
    endpoint: &LdPath,
    body: &[u8],
    payload_id: Option<&str>,
    received_at: i64,
    source: &LaunchDarklySource,
    header: &impl Fn(&str) -> Option<&'h str>,
) -> Result<IngestBatch, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::bad_request("body may not be empty"));
    }
    // Lone surrogates become U+FFFD (what Go's encoding/json, behind the
    // events service, does) rather than refusing the payload.
    let body = &super::surrogates::repair(body)[..];
    let (events, payload_id) = if endpoint.diagnostic {
        (vec![diagnostic_event(body)?], None)
    } else {
        let payload_id = match payload_id {
            Some(id) if id.len() > MAX_PAYLOAD_ID => {
                return Err(Refusal::bad_request(
                    "X-LaunchDarkly-Payload-ID: must be 1 to 128 characters",
                ))
            }
            Some(id) => id.to_owned(),
            // Old SDKs send none: such a payload cannot be recognised again.
            None => uuid::Uuid::new_v4().to_string(),
        };
        (analytics_events(body, &payload_id)?, Some(payload_id))
    };
    let meta = LdMeta {
        endpoint: endpoint.kind,
        diagnostic: endpoint.diagnostic,
        schema: (!endpoint.diagnostic)
            .then(|| header("x-launchdarkly-event-schema").map(str::to_owned))
            .flatten(),
        env: endpoint.env.clone(),
        tags: header("x-launchdarkly-tags").map(str::to_owned),
        user_agent: header("user-agent").map(str::to_owned),
        sdk_user_agent: header("x-launchdarkly-user-agent").map(str::to_owned),
        wrapper: header("x-launchdarkly-wrapper").map(str::to_owned),
    };
    Ok(IngestBatch {
        source: source.name.clone(),
        protocol: Protocol::LaunchDarkly,
        received_at,
        meta: serde_json::to_string(&meta).ok(),
        payload_id,
        routes: source.routes(),
        events,
        refusals: Vec::new(),
    })
}

fn authenticate<'c>(
    endpoint: &LdPath,
    headers: &HeaderMap,
    config: &'c Config,
) -> Result<&'c LaunchDarklySource, Refusal> {
    let unauthorized =
        |message: &str| Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let authorization = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty());
    match endpoint.kind {
        LdEndpoint::Server => {
            let key = authorization
                .ok_or_else(|| unauthorized("no SDK key: send it as the Authorization header"))?;
            config
                .launchdarkly_source_by_sdk_key(key)
                .ok_or_else(|| unauthorized("unknown SDK key"))
        }
        LdEndpoint::Mobile => {
            let key = authorization.ok_or_else(|| {
                unauthorized("no mobile key: send it as the Authorization header")
            })?;
            // Older iOS/Android SDKs prefix the key with `api_key `.
            let key = match key.get(..8) {
                Some(prefix) if prefix.eq_ignore_ascii_case("api_key ") => key[8..].trim(),
                _ => key,
            };
            config
                .launchdarkly_source_by_mobile_key(key)
                .ok_or_else(|| unauthorized("unknown mobile key"))
        }
        LdEndpoint::Client => {
            let env = endpoint.env.as_deref().unwrap_or_default();
            config
                .launchdarkly_source_by_client_side_id(env)
                .ok_or_else(|| unauthorized("unknown client-side id"))
        }
    }
}

fn invalid_json(error: &serde_json::Error) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        format!("request body is not valid JSON: {error}"),
    )
}

/// The `kind` of one event, or the refusal naming where it is missing.
/// `label` is `[i]` for an element of a payload, `body` for a diagnostic.
fn kind_of(raw: &RawValue, label: impl std::fmt::Display) -> Result<String, Refusal> {
    let probe: Probe = serde_json::from_str(raw.get()).map_err(|error| {
        if raw.get().starts_with('{') {
            Refusal::bad_request(format!("{label}: {error}"))
        } else {
            Refusal::bad_request(format!("{label}: must be a JSON object"))
        }
    })?;
    match probe.kind {
        Some(serde_json::Value::String(kind)) if !kind.is_empty() => Ok(kind),
        _ => Err(Refusal::bad_request(format!(
            "{label}.kind: required, a non-empty string"
        ))),
    }
}

fn analytics_events(body: &[u8], payload_id: &str) -> Result<Vec<NewEvent>, Refusal> {
    // Borrowed from the body: each element is copied once, into its row.
    let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            Refusal::bad_request("the body must be a JSON array of events")
        } else {
            invalid_json(&error)
        }
    })?;
    elements
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            Ok(NewEvent {
                dedupe_key: format!("{payload_id}:{index}"),
                // The label is formatted only into a refusal.
                kind: kind_of(raw, format_args!("[{index}]"))?,
                body: raw.get().to_owned(),
            })
        })
        .collect()
}

/// A diagnostic post: one object. Its id and creation date identify it, so
/// an SDK's retry of the same post is stored once.
fn diagnostic_event(body: &[u8]) -> Result<NewEvent, Refusal> {
    #[derive(Deserialize)]
    struct Identity {
        id: Option<serde_json::Value>,
        #[serde(rename = "creationDate")]
        creation_date: Option<serde_json::Value>,
    }
    let raw: Box<RawValue> = serde_json::from_slice(body).map_err(|error| invalid_json(&error))?;
    let kind = kind_of(&raw, "body")?;
    let identity: Identity =
        serde_json::from_str(raw.get()).map_err(|error| invalid_json(&error))?;
    let dedupe_key = match (
        identity.id.as_ref().and_then(|id| id.get("diagnosticId")),
        identity.creation_date,
    ) {
        (Some(serde_json::Value::String(id)), Some(date)) => format!("diagnostic:{id}:{date}"),
        _ => format!("diagnostic:{}", uuid::Uuid::new_v4()),
    };
    Ok(NewEvent {
        dedupe_key,
        kind,
        body: raw.get().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_path_is_recognised() {
        let kinds: Vec<_> = [
            "/bulk",
            "/mobile",
            "/mobile/events",
            "/mobile/events/bulk/",
            "/events/bulk/abc",
        ]
        .iter()
        .map(|path| parse_path(path).map(|e| (e.kind, e.diagnostic)))
        .collect();
        assert_eq!(
            kinds,
            vec![
                Some((LdEndpoint::Server, false)),
                Some((LdEndpoint::Mobile, false)),
                Some((LdEndpoint::Mobile, false)),
                Some((LdEndpoint::Mobile, false)),
                Some((LdEndpoint::Client, false)),
            ]
        );
        assert!(parse_path("/diagnostic").unwrap().diagnostic);
        assert!(parse_path("/mobile/events/diagnostic").unwrap().diagnostic);
        assert_eq!(
            parse_path("/events/diagnostic/abc").unwrap().env.as_deref(),
            Some("abc")
        );
        assert_eq!(parse_path("/events/bulk/"), None);
        assert_eq!(parse_path("/events/bulk/a/b"), None);
        assert_eq!(parse_path("/v1/batch"), None);
    }

    #[test]
    fn events_keep_their_exact_bytes_and_get_positional_dedupe_keys() {
        let body = br#"[{"kind":"custom","key":"k",  "creationDate":1},{"kind":"index"}]"#;
        let events = analytics_events(body, "pid").unwrap();
        assert_eq!(events[0].dedupe_key, "pid:0");
        assert_eq!(
            events[0].body,
            r#"{"kind":"custom","key":"k",  "creationDate":1}"#
        );
        assert_eq!(
            (events[1].dedupe_key.as_str(), events[1].kind.as_str()),
            ("pid:1", "index")
        );
    }

    #[test]
    fn malformed_payloads_name_the_index_and_reason() {
        let message = |body: &[u8]| analytics_events(body, "p").unwrap_err().message;
        assert_eq!(
            message(br#"[{"kind":"custom"},{"key":"x"}]"#),
            "[1].kind: required, a non-empty string"
        );
        assert_eq!(
            message(br#"[{"kind":"custom"},3]"#),
            "[1]: must be a JSON object"
        );
        assert_eq!(
            message(br#"{"kind":"custom"}"#),
            "the body must be a JSON array of events"
        );
        assert!(message(b"[{").starts_with("request body is not valid JSON"));
    }
}
