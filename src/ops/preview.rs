//! `ldbridge map`: what each route of a source would send for one Segment
//! call or one LaunchDarkly payload, or why it would send nothing, without
//! a database or a network.
//!
//! The input goes through the real ingest parser (so what ingest would
//! refuse is refused here too, with the same reason), each event through
//! the dispatcher's own preparation with the source's current mapping
//! profile, and each route's request through the same builder delivery
//! uses. Secrets are replaced with `***` in what is shown.

use std::io::Read;

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING};
use serde_json::{json, Value};

use crate::{
    clock,
    config::{Config, SourceRef},
    dispatch::{
        prepare::{self, Prepared},
        profile::Profile,
    },
    domain::Route,
    ingest::{launchdarkly as ld_ingest, segment as segment_ingest},
    map::segment_to_ld,
    store::batches::{ClaimedBatch, StoredEvent},
};

/// The payload id shown for LaunchDarkly requests: each batch gets its own.
const PREVIEW_PAYLOAD_ID: &str = "00000000-0000-4000-8000-000000000000";

/// What one route would do with the input.
#[derive(Debug, Clone)]
pub struct RoutePreview {
    pub route: Route,
    /// The request it would send, if any event goes.
    pub request: Option<Request>,
    /// Per input event: the mappings that produced what it sends, or why
    /// it sends nothing.
    pub events: Vec<EventPreview>,
}

#[derive(Debug, Clone)]
pub enum EventPreview {
    /// Sent; by these mappings (on `segment-to-launchdarkly`).
    Sent {
        mapped_by: Vec<String>,
    },
    Skipped(String),
    Failed(String),
}

/// A request as it would go out, secrets replaced.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// The whole answer.
#[derive(Debug, Clone)]
pub struct Preview {
    pub source: String,
    pub routes: Vec<RoutePreview>,
}

/// Why nothing can be shown.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no source named {0:?} in the config")]
    NoSource(String),
    #[error("source {0:?} feeds no route (no to_launchdarkly, relay_to_segment, to_segment or relay_to_launchdarkly)")]
    NoRoute(String),
    #[error("cannot read the input: {0}")]
    Input(String),
    #[error("ingest would refuse it ({status}): {message}")]
    Refused { status: u16, message: String },
}

/// Reads the input: a file, or standard input for `-` or none.
pub fn read_input(path: Option<&std::path::Path>) -> Result<Vec<u8>, PreviewError> {
    let mut bytes = Vec::new();
    match path {
        Some(path) if path != std::path::Path::new("-") => {
            bytes = std::fs::read(path)
                .map_err(|error| PreviewError::Input(format!("{}: {error}", path.display())))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|error| PreviewError::Input(format!("standard input: {error}")))?;
        }
    }
    Ok(bytes)
}

/// Previews `input` (one Segment call for a Segment source, one
/// LaunchDarkly payload or event for a LaunchDarkly source) at `now`.
pub fn preview(
    config: &Config,
    source: &str,
    input: &[u8],
    now: i64,
) -> Result<Preview, PreviewError> {
    let found = config
        .source_by_name(source)
        .ok_or_else(|| PreviewError::NoSource(source.to_owned()))?;
    let (events, routes) = match found {
        SourceRef::Segment(segment) => (
            segment_events(config, segment, input, now)?,
            segment.routes(),
        ),
        SourceRef::LaunchDarkly(ld) => (ld_events(config, ld, input, now)?, ld.routes()),
    };
    if routes.is_empty() {
        return Err(PreviewError::NoRoute(source.to_owned()));
    }
    let routes = routes
        .into_iter()
        .map(|route| route_preview(config, route, source, &events, now))
        .collect();
    Ok(Preview {
        source: source.to_owned(),
        routes,
    })
}

fn refused(refused: crate::ingest::Refused) -> PreviewError {
    PreviewError::Refused {
        status: refused.refusal.status.as_u16(),
        message: refused.refusal.message.clone(),
    }
}

/// One Segment call through ingest, as the source's library would post it.
fn segment_events(
    config: &Config,
    source: &crate::config::SegmentSource,
    input: &[u8],
    now: i64,
) -> Result<Vec<StoredEvent>, PreviewError> {
    let call: Value = serde_json::from_slice(input)
        .map_err(|error| PreviewError::Input(format!("not JSON: {error}")))?;
    if !call.is_object() || call.get("batch").is_some() {
        return Err(PreviewError::Input(
            "give one Segment call (a JSON object with a `type`), not a batch".to_owned(),
        ));
    }
    let body = json!({"batch": [call], "writeKey": source.write_key.expose()}).to_string();
    let parsed = segment_ingest::parse(
        segment_ingest::SegmentPath::Batch,
        &HeaderMap::new(),
        body.as_bytes(),
        config,
        now,
    )
    .map_err(|error| refused(*error))?;
    if let Some(refusal) = parsed.refused.first() {
        return Err(PreviewError::Refused {
            status: refusal.refusal.status.as_u16(),
            message: refusal.refusal.message.clone(),
        });
    }
    Ok(stored(parsed.batch))
}

/// One LaunchDarkly payload (or a single event) through ingest, on the
/// endpoint of the source's first credential.
fn ld_events(
    config: &Config,
    source: &crate::config::LaunchDarklySource,
    input: &[u8],
    now: i64,
) -> Result<Vec<StoredEvent>, PreviewError> {
    let payload: Value = serde_json::from_slice(input)
        .map_err(|error| PreviewError::Input(format!("not JSON: {error}")))?;
    let payload = match payload {
        Value::Array(_) => payload,
        Value::Object(_) => Value::Array(vec![payload]),
        _ => {
            return Err(PreviewError::Input(
                "give one LaunchDarkly payload (a JSON array of events) or one event".to_owned(),
            ))
        }
    };
    let mut headers = HeaderMap::new();
    let path = match (&source.sdk_key, &source.mobile_key, &source.client_side_id) {
        (Some(key), _, _) => {
            headers.insert(AUTHORIZATION, header(key.expose())?);
            "/bulk".to_owned()
        }
        (None, Some(key), _) => {
            headers.insert(AUTHORIZATION, header(key.expose())?);
            "/mobile/events/bulk".to_owned()
        }
        (None, None, Some(id)) => format!("/events/bulk/{id}"),
        (None, None, None) => {
            return Err(PreviewError::Input(
                "the source has no credential to receive with".to_owned(),
            ))
        }
    };
    headers.insert("x-launchdarkly-event-schema", HeaderValue::from_static("4"));
    headers.insert(
        "x-launchdarkly-payload-id",
        HeaderValue::from_static(PREVIEW_PAYLOAD_ID),
    );
    let endpoint = ld_ingest::parse_path(&path).expect("the preview paths are endpoints");
    let parsed = ld_ingest::parse(
        &endpoint,
        &headers,
        payload.to_string().as_bytes(),
        config,
        now,
    )
    .map_err(|error| refused(*error))?;
    Ok(stored(parsed.batch))
}

fn header(value: &str) -> Result<HeaderValue, PreviewError> {
    HeaderValue::from_str(value)
        .map_err(|_| PreviewError::Input("a credential is not a valid header value".to_owned()))
}

/// The events of an accepted request as the dispatcher reads them back
/// (ids from 1).
pub fn stored(batch: crate::domain::accepted::IngestBatch) -> Vec<StoredEvent> {
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, event)| StoredEvent {
            event_id: i as i64 + 1,
            source: batch.source.clone(),
            dedupe_key: event.dedupe_key,
            kind: event.kind,
            received_at: batch.received_at,
            meta: batch.meta.clone(),
            body: event.body,
        })
        .collect()
}

/// What `route` would send for `events`: one batch of what it carries.
fn route_preview(
    config: &Config,
    route: Route,
    source: &str,
    events: &[StoredEvent],
    now: i64,
) -> RoutePreview {
    let profile = Profile::of(config, route, source);
    let mut elements = Vec::new();
    let mut previews = Vec::new();
    let mut meta = None;
    for event in events {
        previews.push(match prepare::prepare(config, route, event, &profile) {
            Prepared::Send { json, .. } => {
                elements.push(json);
                meta = meta.or(event.meta.clone());
                EventPreview::Sent {
                    mapped_by: mapped_by(&profile, event),
                }
            }
            Prepared::Skip(reason) => EventPreview::Skipped(reason),
            Prepared::Fail(reason) => EventPreview::Failed(reason),
        });
    }
    let request = (!elements.is_empty()).then(|| {
        let batch = ClaimedBatch {
            id: 0,
            route,
            source: source.to_owned(),
            lane: String::new(),
            payload_id: PREVIEW_PAYLOAD_ID.to_owned(),
            created_at: now,
            attempts: 0,
            trigger: "scheduled".to_owned(),
            profile: None,
        };
        match prepare::request(config, &batch, meta.as_deref(), &elements, now) {
            Ok(outbound) => shown(outbound),
            Err(not_sent) => Request {
                url: String::new(),
                headers: Vec::new(),
                body: Value::String(format!("not sent: {not_sent}")),
            },
        }
    });
    RoutePreview {
        route,
        request,
        events: previews,
    }
}

/// The labels of the mappings that produce what `event` sends on
/// `segment-to-launchdarkly` (empty on the other routes).
pub fn mapped_by(profile: &Profile, event: &StoredEvent) -> Vec<String> {
    let Profile::Mappings(mappings) = profile else {
        return Vec::new();
    };
    let Ok(mut call) = serde_json::from_str::<Value>(&event.body) else {
        return Vec::new();
    };
    let row = crate::domain::stored_message::Row {
        kind: &event.kind,
        dedupe_key: &event.dedupe_key,
        received_at: event.received_at,
    };
    crate::domain::stored_message::restore(&mut call, row);
    segment_to_ld::map(mappings, &call, event.received_at)
        .map(|events| events.iter().map(|(mapping, _)| mapping.label()).collect())
        .unwrap_or_default()
}

/// The request with its body decoded (gzip undone) and every secret
/// (sensitive headers, a `writeKey` in the body) replaced with `***`.
fn shown(outbound: crate::deliver::Outbound) -> Request {
    let gzipped = outbound
        .headers
        .iter()
        .any(|(name, value)| name == CONTENT_ENCODING && value == "gzip");
    let bytes = if gzipped {
        let mut plain = Vec::new();
        match flate2::read::GzDecoder::new(&outbound.body[..]).read_to_end(&mut plain) {
            Ok(_) => plain,
            Err(_) => outbound.body.to_vec(),
        }
    } else {
        outbound.body.to_vec()
    };
    let mut body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if let Some(key) = body.get_mut("writeKey") {
        *key = Value::from("***");
    }
    let headers = outbound
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if value.is_sensitive() || name == AUTHORIZATION {
                "***".to_owned()
            } else {
                value.to_str().unwrap_or("(not text)").to_owned()
            };
            (name.as_str().to_owned(), shown)
        })
        .collect();
    Request {
        url: outbound.url,
        headers,
        body,
    }
}

impl Preview {
    pub fn json(&self) -> Value {
        json!({
            "source": self.source,
            "routes": self.routes.iter().map(|route| json!({
                "route": route.route.as_str(),
                "request": route.request.as_ref().map(|request| json!({
                    "method": "POST",
                    "url": request.url,
                    "headers": request.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
                    "body": request.body,
                })),
                "events": route.events.iter().map(|event| match event {
                    EventPreview::Sent { mapped_by } => json!({"outcome": "sent", "mapped_by": mapped_by}),
                    EventPreview::Skipped(reason) => json!({"outcome": "skipped", "reason": reason}),
                    EventPreview::Failed(reason) => json!({"outcome": "failed", "reason": reason}),
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for route in &self.routes {
            let _ = writeln!(out, "== {} (source {})", route.route, self.source);
            for (n, event) in route.events.iter().enumerate() {
                let line = match event {
                    EventPreview::Sent { mapped_by } if mapped_by.is_empty() => "sent".to_owned(),
                    EventPreview::Sent { mapped_by } => {
                        format!("sent, by {}", mapped_by.join(" and "))
                    }
                    EventPreview::Skipped(reason) => format!("skipped: {reason}"),
                    EventPreview::Failed(reason) => format!("failed, never sent: {reason}"),
                };
                let _ = writeln!(out, "event {}: {line}", n + 1);
            }
            match &route.request {
                None => out.push_str("nothing would be sent\n"),
                Some(request) => {
                    let _ = writeln!(out, "POST {}", request.url);
                    for (name, value) in &request.headers {
                        let _ = writeln!(out, "{name}: {value}");
                    }
                    let body = serde_json::to_string_pretty(&request.body).unwrap_or_default();
                    let _ = writeln!(out, "\n{body}");
                }
            }
            out.push('\n');
        }
        let _ = write!(
            out,
            "(a preview at {}: payload ids and sentAt are set per batch and attempt)",
            clock::format_ms(clock::now_ms())
        );
        out
    }
}
