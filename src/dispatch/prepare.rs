//! Preparing events for a route, and a batch's request.
//!
//! [`prepare`] turns one stored event into what the route will send for it
//! (serialised, with the lane it must share a batch with), or settles it
//! (`skipped` / `failed` with the reason). [`request`] picks the
//! destination and credential of a batch from the current config, at send
//! time (Segment's `sentAt` is the send time), and has `deliver` build the
//! request. Mapping rules live in `map`; wire details (paths, headers,
//! limits) in `deliver`.

use bytes::Bytes;
use serde_json::Value;

use super::profile::Profile;
use crate::{
    config::{Config, LaunchDarklySource, SegmentSource, SourceRef},
    deliver::{launchdarkly, segment, Outbound, RequestError},
    domain::stored_message,
    domain::{LdEndpoint, LdMeta, Route},
    map::{self, ld_to_segment, mapping::Mapping, trigger::Dialect, Mapped, Unmappable},
    store::batches::{ClaimedBatch, StoredEvent},
};

/// What a route does with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Send `json`; only with events of the same `lane` (and source). An
    /// event that must travel `alone` (a diagnostic) gets a batch of one.
    Send {
        lane: String,
        alone: bool,
        json: String,
    },
    /// The route cannot carry it.
    Skip(String),
    /// It breaks the destination's rules and will never be accepted.
    Fail(String),
}

fn from_mapped(mapped: Mapped, max_bytes: Option<usize>) -> Prepared {
    match mapped {
        Mapped::Skip(reason) => Prepared::Skip(reason),
        Mapped::Send(value) => {
            // Into a byte buffer directly; `Value`'s `Display` goes through
            // `fmt::Formatter` for every token (it showed in the profile).
            let json = serde_json::to_string(&value).expect("a JSON value always serialises");
            match max_bytes {
                Some(limit) if json.len() > limit => Prepared::Fail(format!(
                    "mapped message is {} bytes; Segment accepts at most {limit} bytes per message",
                    json.len()
                )),
                _ => Prepared::Send {
                    lane: String::new(),
                    alone: false,
                    json,
                },
            }
        }
    }
}

/// The LaunchDarkly events a Segment call maps to, as array elements
/// joined by commas (two mappings taking one call send two events).
fn from_events(mapped: Result<Vec<(&Mapping, Value)>, Unmappable>) -> Prepared {
    match mapped {
        Err(Unmappable(reason)) => Prepared::Skip(reason),
        Ok(events) => {
            let mut json = Vec::new();
            for (n, (_, event)) in events.iter().enumerate() {
                if n > 0 {
                    json.push(b',');
                }
                serde_json::to_writer(&mut json, event).expect("a JSON value always serialises");
            }
            Prepared::Send {
                lane: String::new(),
                alone: false,
                json: String::from_utf8(json).expect("serde_json writes UTF-8"),
            }
        }
    }
}

/// The batch limits of `route`: the configured ones, tightened to Segment's
/// sender limits (segment.md §7.1: 475,000 bytes and 2,500 messages a
/// request, leaving room for the envelope) on routes to Segment.
pub fn limits(config: &Config, route: Route) -> (usize, usize) {
    let (events, bytes) = (
        config.dispatch.max_batch_events,
        config.dispatch.max_batch_bytes,
    );
    match route {
        Route::LaunchDarklyToSegment | Route::SegmentRelay => (
            events.min(segment::MAX_BATCH_MESSAGES),
            bytes.min(segment::MAX_BATCH_BYTES),
        ),
        Route::SegmentToLaunchDarkly | Route::LaunchDarklyRelay => (events, bytes),
    }
}

/// Prepares `event` for a new batch on `route`, mapped with `profile`
/// (the source's, from the current config): what the route sends for it,
/// or why it sends nothing (the source's `to_segment.trigger` does not take
/// it, or the mapping's reasons). Never fails: problems are `Skip`/`Fail`.
pub fn prepare(config: &Config, route: Route, event: &StoredEvent, profile: &Profile) -> Prepared {
    prepare_with(Some(config), route, event, profile)
}

/// Prepares an event of a batch already formed (a retry, a resend) with
/// the profile the batch was formed with: the mapping alone. Triggers are
/// checked only when an event is first batched, so a batch keeps its
/// events, and their bytes, whatever a reload changes.
pub fn prepare_again(route: Route, event: &StoredEvent, profile: &Profile) -> Prepared {
    prepare_with(None, route, event, profile)
}

/// Why `source`'s `to_segment.trigger` does not take `event`, if it does not.
fn not_triggered(config: &Config, source: &str, event: &Value) -> Option<String> {
    let source = ld_source(config, source).ok()?;
    let trigger = source.to_segment.as_ref()?.trigger.as_ref()?;
    (!trigger.matches(event, Dialect::LaunchDarkly)).then(|| {
        format!(
            "no mapping matches (to_segment.trigger: {})",
            trigger.text()
        )
    })
}

/// `config` is there when triggers decide (a new batch).
fn prepare_with(
    config: Option<&Config>,
    route: Route,
    event: &StoredEvent,
    profile: &Profile,
) -> Prepared {
    if route == Route::LaunchDarklyRelay {
        return relay_lane(event);
    }
    let mut value: Value = match serde_json::from_str(&event.body) {
        Ok(value) => value,
        Err(error) => return Prepared::Fail(format!("stored event is not valid JSON: {error}")),
    };
    if matches!(route, Route::SegmentToLaunchDarkly | Route::SegmentRelay) {
        let row = stored_message::Row {
            kind: &event.kind,
            dedupe_key: &event.dedupe_key,
            received_at: event.received_at,
        };
        stored_message::restore(&mut value, row);
    }
    match (route, profile) {
        (Route::SegmentToLaunchDarkly, Profile::Mappings(mappings)) => {
            from_events(map::segment_to_ld::map(mappings, &value, event.received_at))
        }
        (Route::SegmentRelay, _) => from_mapped(
            map::segment_relay::map(&value),
            Some(segment::MAX_SENT_MESSAGE_BYTES),
        ),
        (Route::LaunchDarklyToSegment, Profile::Export(export)) => {
            let meta = parse_meta(event);
            if meta.as_ref().is_some_and(|meta| meta.diagnostic) {
                return Prepared::Skip("diagnostic events are not exported to Segment".to_owned());
            }
            if let Some(reason) =
                config.and_then(|config| not_triggered(config, &event.source, &value))
            {
                return Prepared::Skip(reason);
            }
            let environment = meta
                .as_ref()
                .and_then(|meta| meta.env.as_deref())
                .or(export.environment.as_deref());
            let origin = ld_to_segment::Origin {
                dedupe_key: &event.dedupe_key,
                project_id: export.project_id.as_deref(),
                environment,
                copy_custom_data: export.copy_custom_data,
                user_id_kind: &export.user_id_context_kind,
            };
            from_mapped(
                ld_to_segment::map(&value, &origin),
                Some(segment::MAX_SENT_MESSAGE_BYTES),
            )
        }
        (route, profile) => Prepared::Fail(format!(
            "no {route} mapping in the batch's stored profile ({profile:?})"
        )),
    }
}

fn parse_meta(event: &StoredEvent) -> Option<LdMeta> {
    event
        .meta
        .as_deref()
        .and_then(|meta| serde_json::from_str(meta).ok())
}

/// The relay sends the stored bytes as they are; the lane keeps apart what
/// LaunchDarkly must receive in separate requests.
fn relay_lane(event: &StoredEvent) -> Prepared {
    let Some(meta) = parse_meta(event) else {
        return Prepared::Fail("stored LaunchDarkly event has no request metadata".to_owned());
    };
    let endpoint = match (&meta.endpoint, &meta.env) {
        (LdEndpoint::Client, Some(env)) => format!("client:{env}"),
        (endpoint, _) => format!("{endpoint:?}").to_lowercase(),
    };
    let mut lane = if meta.diagnostic {
        format!("{endpoint} diagnostic")
    } else {
        let schema = meta.schema.as_deref().unwrap_or("1");
        match &meta.tags {
            Some(tags) => format!("{endpoint} schema={schema} tags={tags}"),
            None => format!("{endpoint} schema={schema}"),
        }
    };
    // Payloads from different SDKs (or versions) never share a request:
    // each is relayed with its own identifying headers.
    for (name, value) in [
        ("ua", &meta.user_agent),
        ("ldua", &meta.sdk_user_agent),
        ("wrapper", &meta.wrapper),
    ] {
        if let Some(value) = value {
            lane.push_str(&format!(" {name}={value}"));
        }
    }
    Prepared::Send {
        lane,
        alone: meta.diagnostic,
        json: event.body.clone(),
    }
}

/// Why a batch's request could not be built, so it was not sent: the
/// batch retries, and a fixed config (reload, restart) sends it. Names the
/// source, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    #[error("{kind} source `{name}` is no longer configured")]
    SourceGone { kind: &'static str, name: String },
    #[error("{kind} source `{name}` has no {what}")]
    NoDestination {
        kind: &'static str,
        name: String,
        what: &'static str,
    },
    #[error("launchdarkly source `{name}` no longer has a {what}")]
    NoRelayKey { name: String, what: &'static str },
    #[error("stored LaunchDarkly events have no request metadata")]
    NoMetadata,
    #[error(transparent)]
    Request(#[from] RequestError),
}

fn segment_source<'c>(config: &'c Config, name: &str) -> Result<&'c SegmentSource, NotSent> {
    match config.source_by_name(name) {
        Some(SourceRef::Segment(source)) => Ok(source),
        _ => Err(NotSent::SourceGone {
            kind: "segment",
            name: name.to_owned(),
        }),
    }
}

fn ld_source<'c>(config: &'c Config, name: &str) -> Result<&'c LaunchDarklySource, NotSent> {
    match config.source_by_name(name) {
        Some(SourceRef::LaunchDarkly(source)) => Ok(source),
        _ => Err(NotSent::SourceGone {
            kind: "launchdarkly",
            name: name.to_owned(),
        }),
    }
}

/// Builds the request of `batch` from its prepared `elements`. `meta` is
/// the request metadata of its events (one lane, so the same for all).
/// Fails (and the batch retries) when the source or its destination is no
/// longer configured; the message names the source, never a credential.
///
/// Long on purpose: one arm per route.
pub fn request(
    config: &Config,
    batch: &ClaimedBatch,
    meta: Option<&str>,
    elements: &[String],
    now: i64,
) -> Result<Outbound, NotSent> {
    let array = || {
        Bytes::from(crate::deliver::json_array(
            elements.iter().map(String::as_str),
        ))
    };
    let missing = |kind, what| NotSent::NoDestination {
        kind,
        name: batch.source.clone(),
        what,
    };
    Ok(match batch.route {
        Route::SegmentToLaunchDarkly => {
            let source = segment_source(config, &batch.source)?;
            let destination = source
                .to_launchdarkly
                .as_ref()
                .ok_or_else(|| missing("segment", "to_launchdarkly destination"))?;
            let credential = match (&destination.client_side_id, &destination.sdk_key) {
                (Some(id), _) => launchdarkly::Credential::ClientSideId(id),
                (None, Some(key)) => launchdarkly::Credential::SdkKey(key.expose()),
                (None, None) => return Err(missing("segment", "LaunchDarkly credential")),
            };
            launchdarkly::bulk_request(
                destination
                    .events_url
                    .as_deref()
                    .unwrap_or(&config.launchdarkly.events_url),
                credential,
                "4",
                &batch.payload_id,
                array(),
            )?
        }
        Route::SegmentRelay => {
            let source = segment_source(config, &batch.source)?;
            segment::batch_request(
                &config.segment.api_url,
                source.write_key.expose(),
                elements,
                now,
            )?
        }
        Route::LaunchDarklyToSegment => {
            let source = ld_source(config, &batch.source)?;
            let destination = source
                .to_segment
                .as_ref()
                .ok_or_else(|| missing("launchdarkly", "to_segment destination"))?;
            segment::batch_request(
                destination
                    .api_url
                    .as_deref()
                    .unwrap_or(&config.segment.api_url),
                destination.write_key.expose(),
                elements,
                now,
            )?
        }
        Route::LaunchDarklyRelay => relay_request(config, batch, meta, elements)?,
    })
}

fn relay_request(
    config: &Config,
    batch: &ClaimedBatch,
    meta: Option<&str>,
    elements: &[String],
) -> Result<Outbound, NotSent> {
    let meta: LdMeta = meta
        .and_then(|meta| serde_json::from_str(meta).ok())
        .ok_or(NotSent::NoMetadata)?;
    let source = ld_source(config, &batch.source)?;
    let missing = |what| NotSent::NoRelayKey {
        name: batch.source.clone(),
        what,
    };
    let (path, key) =
        launchdarkly::relay_target(meta.endpoint, meta.diagnostic, meta.env.as_deref())
            .map_err(missing)?;
    let authorization = match key {
        launchdarkly::RelayKey::Sdk => {
            Some(source.sdk_key.as_ref().ok_or_else(|| missing("sdk_key"))?)
        }
        launchdarkly::RelayKey::Mobile => Some(
            source
                .mobile_key
                .as_ref()
                .ok_or_else(|| missing("mobile_key"))?,
        ),
        launchdarkly::RelayKey::None => None,
    };
    let (body, schema, payload_id) = if meta.diagnostic {
        // A diagnostic is one JSON object, without analytics headers.
        (
            Bytes::from(elements.first().cloned().unwrap_or_default()),
            None,
            None,
        )
    } else {
        let body = Bytes::from(crate::deliver::json_array(
            elements.iter().map(String::as_str),
        ));
        (
            body,
            meta.schema.as_deref(),
            Some(batch.payload_id.as_str()),
        )
    };
    let spec = launchdarkly::Request {
        path: &path,
        authorization: authorization.map(|key| key.expose()),
        schema,
        payload_id,
        tags: meta.tags.as_deref(),
        user_agent: meta.user_agent.as_deref(),
        sdk_user_agent: meta.sdk_user_agent.as_deref(),
        wrapper: meta.wrapper.as_deref(),
    };
    Ok(launchdarkly::request(
        &config.launchdarkly.events_url,
        &spec,
        body,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_segment_are_held_to_segments_request_limits() {
        let mut config = Config::default();
        config.dispatch.max_batch_events = 2_500;
        config.dispatch.max_batch_bytes = 500_000;
        assert_eq!(
            limits(&config, Route::LaunchDarklyToSegment),
            (2_500, 475_000)
        );
        assert_eq!(limits(&config, Route::SegmentRelay), (2_500, 475_000));
        assert_eq!(
            limits(&config, Route::SegmentToLaunchDarkly),
            (2_500, 500_000)
        );
        config.dispatch.max_batch_bytes = 100_000;
        assert_eq!(limits(&config, Route::SegmentRelay), (2_500, 100_000));
    }
}
