//! The ingest HTTP service: Segment- and LaunchDarkly-compatible
//! endpoints on `server.listen`.
//!
//! Owns routing by path, reading bodies within `max_request_bytes` (gzip
//! included, decompressed size bounded), the answers, CORS (every answer
//! carries it, so a browser SDK can read a refusal and back off), and
//! handing refusals to the refusal log. Parsed events go to the store's
//! writer; the answer is sent only after their commit. Knows no
//! destinations: which routes a source feeds comes from config.

mod body;
mod cors;
pub mod launchdarkly;
mod message;
mod normalize;
pub mod refusal_log;
pub mod segment;
mod surrogates;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER},
    HeaderMap, Method, Request, Response, StatusCode,
};
use serde_json::json;

use crate::{
    clock,
    config::{Config, ConfigHandle},
    domain::accepted::IngestBatch,
    metrics::Metrics,
    store::writer::{WriteError, Writer},
};

/// How much later a request carrying only refused messages is answered
/// while refusals arrive faster than `store.refusal_log_per_second`.
const GARBAGE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECONDS: &str = "5";

/// A request refused with a client-visible status. `message` names the
/// field, index and reason; it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn too_large(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
}

/// A message or request refused, with what the refusal log records of it.
#[derive(Debug, Clone)]
pub struct Refused {
    pub refusal: Refusal,
    /// The source, once its key was known; `None` for an unknown or missing key.
    pub source: Option<String>,
    /// The message's index in the request's array; `None`: the whole request.
    pub index: Option<usize>,
    /// The message's `messageId` (Segment) or the payload id (LaunchDarkly).
    pub message_id: Option<String>,
    /// The refused message's text; `None`: the request's body is the excerpt.
    pub excerpt: Option<String>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Refused {
        Refused {
            refusal,
            source: None,
            index: None,
            message_id: None,
            excerpt: None,
        }
    }
}

/// A whole request refused, as parsers return it (boxed: the error path is
/// the rare one, and keeps the `Ok` path's result small).
pub type RequestRefused = Box<Refused>;

impl From<Refusal> for Box<Refused> {
    fn from(refusal: Refusal) -> Box<Refused> {
        Box::new(refusal.into())
    }
}

impl Refused {
    /// The same refusal, attributed to the source named `name`.
    pub fn from_source(mut self, name: &str) -> Refused {
        self.source = Some(name.to_owned());
        self
    }
}

/// A request taken: the events to store, and the messages of it refused
/// on their own (the rest of the request is accepted all the same).
#[derive(Debug)]
pub struct Parsed {
    pub batch: IngestBatch,
    pub refused: Vec<Refused>,
}

/// The parser of one protocol: headers, body, config, receive time.
type Parse<'a> =
    dyn FnOnce(&HeaderMap, &[u8], &Config, i64) -> Result<Parsed, RequestRefused> + Send + 'a;

/// Shared state of the ingest service.
#[derive(Debug)]
pub struct Ingest {
    config: ConfigHandle,
    writer: Writer,
    metrics: Arc<Metrics>,
    /// Room on the database's file system: no room, no ingest.
    space: Arc<crate::space::Space>,
    /// Refusals recorded per second (`store.refusal_log_per_second`).
    refusal_rate: refusal_log::Limiter,
}

/// An ingest path: which protocol it belongs to, and what it takes.
enum IngestPath {
    Segment(segment::SegmentPath),
    LaunchDarkly(launchdarkly::LdPath),
}

fn parse_path(path: &str) -> Option<IngestPath> {
    segment::parse_path(path)
        .map(IngestPath::Segment)
        .or_else(|| launchdarkly::parse_path(path).map(IngestPath::LaunchDarkly))
}

impl Ingest {
    pub fn new(
        config: ConfigHandle,
        writer: Writer,
        metrics: Arc<Metrics>,
        space: Arc<crate::space::Space>,
    ) -> Arc<Ingest> {
        Arc::new(Ingest {
            config,
            writer,
            metrics,
            space,
            refusal_rate: refusal_log::Limiter::default(),
        })
    }

    /// Answers one HTTP request. Never fails: every problem is an answer,
    /// and every answer carries CORS headers.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let cors = cors::Cors::of(request.headers());
        let mut response = self.answer(request).await;
        cors.apply(&mut response);
        response
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let telemetry = path.trim_end_matches('/') == "/v1/m";
        let endpoint = parse_path(&path);
        if endpoint.is_none() && !telemetry {
            let refused = Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
            return refusal(&refused);
        }
        if request.method() == Method::OPTIONS {
            return cors::preflight(request.headers());
        }
        if request.method() != Method::POST {
            let refused = Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST",
            );
            return refusal(&refused);
        }
        let Some(endpoint) = endpoint else {
            // analytics.js reports its own metrics here; Segment takes them,
            // ldbridge has no use for them.
            self.metrics.telemetry();
            return json_response(StatusCode::OK, r#"{"success":true}"#);
        };
        match &endpoint {
            IngestPath::Segment(kind) => {
                let parse = |headers: &HeaderMap, body: &[u8], config: &Config, at| {
                    segment::parse(*kind, headers, body, config, at)
                };
                self.accept("segment", request, &path, Box::new(parse))
                    .await
            }
            IngestPath::LaunchDarkly(kind) => {
                let parse = |headers: &HeaderMap, body: &[u8], config: &Config, at| {
                    launchdarkly::parse(kind, headers, body, config, at)
                };
                self.accept("launchdarkly", request, &path, Box::new(parse))
                    .await
            }
        }
    }

    /// Reads the body, parses it with `parse`, records what was refused and
    /// commits the events; answers as `protocol`'s service would.
    async fn accept(
        &self,
        protocol: &'static str,
        request: Request<Incoming>,
        path: &str,
        parse: Box<Parse<'_>>,
    ) -> Response<Full<Bytes>> {
        let config = self.config.get();
        let received_at = clock::now_ms();
        let (parts, incoming) = request.into_parts();
        let body = match self.read(&parts.headers, incoming, &config).await {
            Ok(body) => body,
            Err(refused) => return self.refuse(protocol, &refused.into(), path, &[], received_at),
        };
        let Parsed { mut batch, refused } = match parse(&parts.headers, &body, &config, received_at)
        {
            Ok(parsed) => parsed,
            Err(refused) => return self.refuse(protocol, &refused, path, &body, received_at),
        };
        let source = batch.source.clone();
        for (code, count) in count_by_code(&refused) {
            self.metrics.ingest_refused(&source, code, count);
        }
        let admitted = self.admit(refused.len(), &config);
        if batch.events.is_empty() && admitted < refused.len() {
            // Nothing but refusals, faster than the refusal log records
            // them: a flood of garbage. Answering it a little later slows
            // that client's loop (nothing of its request is lost: there is
            // nothing to store), so its connections cannot take the CPU
            // that valid ingest on other connections needs.
            tokio::time::sleep(GARBAGE_DELAY).await;
        }
        batch.refusals = refused[..admitted]
            .iter()
            .map(|one| refusal_log::row(one, path, StatusCode::OK.as_u16(), received_at, &body))
            .collect();
        let events = batch.events.len();
        let response = match self.commit(batch).await {
            Ok(()) => accepted(protocol, &refused),
            Err(unavailable) => refusal(&unavailable),
        };
        let stored = if response.status().is_success() {
            events
        } else {
            0
        };
        self.metrics
            .ingest_request(protocol, &source, response.status().as_u16(), stored as u64);
        response
    }

    /// The body within `max_request_bytes` and `body_timeout`.
    async fn read(
        &self,
        headers: &HeaderMap,
        incoming: Incoming,
        config: &Config,
    ) -> Result<Bytes, Refusal> {
        let read = body::read(headers, incoming, config.server.max_request_bytes);
        tokio::time::timeout(config.server.body_timeout, read)
            .await
            .map_err(|_| {
                Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within server.body_timeout ({})",
                        humantime::format_duration(config.server.body_timeout)
                    ),
                )
            })?
    }

    /// Answers a refused request, counts it, and records it in the refusal
    /// log (a 503 is no refusal: nothing was wrong with the request).
    fn refuse(
        &self,
        protocol: &'static str,
        refused: &Refused,
        path: &str,
        body: &[u8],
        at: i64,
    ) -> Response<Full<Bytes>> {
        let status = refused.refusal.status;
        let source = refused.source.as_deref().unwrap_or("unknown");
        self.metrics
            .ingest_request(protocol, source, status.as_u16(), 0);
        if status.is_client_error() {
            self.metrics.ingest_refused(source, refused.refusal.code, 1);
            if self.space.ingest_refused() {
                // Room is kept for delivery while the disk is full.
                self.metrics.refusals_unrecorded("disk_full", 1);
            } else if self.admit(1, &self.config.get()) == 1 {
                let row = refusal_log::row(refused, path, status.as_u16(), at, body);
                if !self.writer.record(vec![row]) {
                    self.metrics.refusals_unrecorded("busy", 1);
                }
            }
        }
        refusal(&refused.refusal)
    }

    /// How many of `wanted` refusals the rate limit lets the log record now;
    /// the rest are counted as unrecorded.
    fn admit(&self, wanted: usize, config: &Config) -> usize {
        let admitted = self
            .refusal_rate
            .admit(wanted, config.store.refusal_log_per_second);
        // Every accepted request passes here with nothing refused: no
        // metric update (a label lookup) for that.
        if admitted < wanted {
            self.metrics
                .refusals_unrecorded("rate", (wanted - admitted) as u64);
        }
        admitted
    }

    async fn commit(&self, batch: IngestBatch) -> Result<(), Refusal> {
        if self.space.ingest_refused() {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "disk_full",
                format!(
                    "{}; nothing was accepted, retry later",
                    crate::space::disk_full_text(&self.space)
                ),
            ));
        }
        let source = batch.source.clone();
        match self.writer.submit(batch).await {
            Ok(committed) => {
                tracing::debug!(%source, stored = committed.stored, duplicates = committed.duplicates, "Ingest committed.");
                Ok(())
            }
            Err(error) => {
                if !matches!(error, WriteError::Busy) {
                    tracing::warn!(%error, %source, "Ingest not committed; answered 503.");
                }
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "events could not be stored right now; nothing was accepted, retry later",
                ))
            }
        }
    }
}

/// How many of `refused` have each reason code (a flood of one bad
/// message type is one metric update per request, not one per message).
fn count_by_code(refused: &[Refused]) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for one in refused {
        match counts
            .iter_mut()
            .find(|(code, _)| *code == one.refusal.code)
        {
            Some((_, count)) => *count += 1,
            None => counts.push((one.refusal.code, 1)),
        }
    }
    counts
}

/// One refused message as the success answer lists it.
#[derive(serde::Serialize)]
struct Listed<'a> {
    index: Option<usize>,
    code: &'a str,
    message: &'a str,
}

/// The success answer of `protocol`: Segment's `200 {"success":true}`,
/// listing the messages refused on their own if any; LaunchDarkly's events
/// service answers 202 with an empty body.
fn accepted(protocol: &str, refused: &[Refused]) -> Response<Full<Bytes>> {
    if protocol == "launchdarkly" {
        let mut response = json_response(StatusCode::ACCEPTED, Bytes::new());
        response.headers_mut().remove(CONTENT_TYPE);
        return response;
    }
    if refused.is_empty() {
        return json_response(StatusCode::OK, r#"{"success":true}"#);
    }
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        success: bool,
        refused: Vec<Listed<'a>>,
    }
    let answer = Answer {
        success: true,
        refused: refused
            .iter()
            .map(|one| Listed {
                index: one.index,
                code: one.refusal.code,
                message: &one.refusal.message,
            })
            .collect(),
    };
    let body = serde_json::to_vec(&answer).expect("the answer always serialises");
    json_response(StatusCode::OK, body)
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"success":false,"code":…,"message":…,"error":…}`: `error` is
/// architecture.md's field; `code`/`message` are what analytics-python reads
/// (with a `code`, it gives up on a 4xx instead of retrying a bad batch).
fn refusal(refused: &Refusal) -> Response<Full<Bytes>> {
    let body = json!({
        "success": false,
        "code": refused.code,
        "message": refused.message,
        "error": refused.message,
    });
    let mut response = json_response(refused.status, body.to_string());
    if refused.status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body may still be on its way: do not reuse.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if refused.status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}
