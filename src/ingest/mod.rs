//! The ingest HTTP service: Segment- (and later LaunchDarkly-) compatible
//! endpoints on `server.listen`.
//!
//! Owns routing by path, reading bodies within `max_request_bytes` (gzip
//! included, decompressed size bounded), auth against the configured
//! sources, and the answers. Parsed events go to the store's writer; the
//! answer is sent only after their commit. Knows no destinations: which
//! routes a source feeds comes from config.

mod body;
pub mod launchdarkly;
mod message;
pub mod segment;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER},
    Method, Request, Response, StatusCode,
};
use serde_json::json;

use crate::{
    clock,
    config::ConfigHandle,
    metrics::Metrics,
    store::writer::{IngestBatch, WriteError, Writer},
};

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

/// Shared state of the ingest service.
#[derive(Debug)]
pub struct Ingest {
    config: ConfigHandle,
    writer: Writer,
    metrics: Arc<Metrics>,
}

/// Which protocol a path belongs to.
enum Endpoint {
    Segment(segment::Endpoint),
    LaunchDarkly(launchdarkly::Endpoint),
}

fn endpoint(path: &str) -> Option<Endpoint> {
    segment::endpoint(path)
        .map(Endpoint::Segment)
        .or_else(|| launchdarkly::endpoint(path).map(Endpoint::LaunchDarkly))
}

impl Ingest {
    pub fn new(config: ConfigHandle, writer: Writer, metrics: Arc<Metrics>) -> Arc<Ingest> {
        Arc::new(Ingest {
            config,
            writer,
            metrics,
        })
    }

    /// Answers one HTTP request. Never fails: every problem is an answer.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(endpoint) = endpoint(request.uri().path()) else {
            return refusal(&Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            ));
        };
        if request.method() == Method::OPTIONS {
            return preflight();
        }
        if request.method() != Method::POST {
            let refused = Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST",
            );
            return refusal(&refused);
        }
        let (protocol, accepted) = match &endpoint {
            Endpoint::Segment(kind) => {
                let accepted = self
                    .accept(request, |headers, body, config, at| {
                        segment::parse(*kind, headers, body, config, at)
                    })
                    .await;
                ("segment", accepted)
            }
            Endpoint::LaunchDarkly(kind) => {
                let accepted = self
                    .accept(request, |headers, body, config, at| {
                        launchdarkly::parse(kind, headers, body, config, at)
                    })
                    .await;
                ("launchdarkly", accepted)
            }
        };
        let response = match (&accepted, &endpoint) {
            (Ok(_), Endpoint::Segment(_)) => json_response(StatusCode::OK, r#"{"success":true}"#),
            // LaunchDarkly's events service answers 202 with an empty body.
            (Ok(_), Endpoint::LaunchDarkly(_)) => {
                let mut response = json_response(StatusCode::ACCEPTED, Bytes::new());
                response.headers_mut().remove(CONTENT_TYPE);
                response
            }
            (Err(refused), _) => refusal(refused),
        };
        let (source, events) = match &accepted {
            Ok((source, events)) => (source.as_str(), *events),
            Err(_) => ("unknown", 0),
        };
        self.metrics
            .ingest_request(protocol, source, response.status().as_u16(), events as u64);
        response
    }

    /// Reads the body, parses it with `parse`, and commits the events.
    /// Returns the source and the number of events acknowledged.
    async fn accept(
        &self,
        request: Request<Incoming>,
        parse: impl FnOnce(
            &hyper::HeaderMap,
            &Bytes,
            &crate::config::Config,
            i64,
        ) -> Result<IngestBatch, Refusal>,
    ) -> Result<(String, usize), Refusal> {
        let config = self.config.get();
        let received_at = clock::now_ms();
        let (parts, incoming) = request.into_parts();
        let read = body::read(&parts.headers, incoming, config.server.max_request_bytes);
        let bytes = tokio::time::timeout(config.server.body_timeout, read)
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
            })??;
        let batch = parse(&parts.headers, &bytes, &config, received_at)?;
        let (source, events) = (batch.source.clone(), batch.events.len());
        self.commit(batch).await?;
        Ok((source, events))
    }

    async fn commit(&self, batch: IngestBatch) -> Result<(), Refusal> {
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

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
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

/// CORS preflight for browser libraries (analytics.js, LaunchDarkly's JS SDK).
fn preflight() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "Authorization, Content-Type, Content-Encoding, Content-Length, Accept-Encoding, \
             X-LaunchDarkly-User-Agent, X-LaunchDarkly-Payload-ID, X-LaunchDarkly-Wrapper, \
             X-LaunchDarkly-Event-Schema, X-LaunchDarkly-Tags",
        ),
    );
    headers.insert("access-control-max-age", HeaderValue::from_static("300"));
    response
}
