//! The admin HTTP API on `server.admin_listen`: the operator views of `ops`
//! as JSON (the same documents as the CLI's `--json`), Prometheus
//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Everything but the two health probes needs `Authorization: Bearer
//! <admin_token>` when a token is configured (compared in constant time;
//! config validation refuses a non-loopback listener without one).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::Incoming,
    header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::{
    clock,
    config::{ConfigHandle, Secret},
    dispatch::Dispatcher,
    domain::BatchStatus,
    domain::Route,
    metrics::Metrics,
    ops,
    store::{delivery_log, Store},
};

/// How long `/readyz` waits for its test write.
const READY_WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// A failed ingest commit keeps `/readyz` not-ready this long (unless a
/// commit succeeds sooner), so a balancer backs off, then tries again.
const COMMIT_FAILURE_MEMORY_MS: i64 = 10_000;

/// Shared state of the admin service.
pub struct Admin {
    pub store: Store,
    pub config: ConfigHandle,
    pub metrics: Arc<Metrics>,
    pub dispatcher: Arc<Dispatcher>,
    pub writer: crate::store::writer::Writer,
    /// Readiness allows this long between scheduler ticks.
    pub tick_allowance: Duration,
    /// Room on the database's file system.
    pub space: Arc<crate::space::Space>,
    /// The Delivery Overview's sessions (`/ui/`).
    pub ui: crate::ui::Ui,
}

type Answer = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    respond(
        status,
        "application/json",
        serde_json::to_string_pretty(value).unwrap_or_default(),
    )
}

fn error(status: StatusCode, message: &str) -> Answer {
    json_answer(status, &json!({"error": message}))
}

/// Query-string value of `key` (no percent-decoding beyond `%3A` and `+`,
/// which is all our parameters need: statuses, routes, names, RFC 3339).
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == key).then(|| {
            value
                .replace("%3A", ":")
                .replace("%3a", ":")
                .replace('+', " ")
                .replace("%2B", "+")
        })
    })
}

/// The body of `POST /api/resend`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResendBody {
    #[serde(default)]
    ids: Vec<i64>,
    status: Option<String>,
    route: Option<String>,
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
}

impl Admin {
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let config = self.config.get();
        let Some(token) = config.server.admin_token.as_ref() else {
            return true;
        };
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        tokens_match(token, presented)
    }

    /// Answers one admin request, and logs it at debug level (method,
    /// path without its query, status, time; never a header). Never fails:
    /// every problem is an answer.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Answer {
        let started = std::time::Instant::now();
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let answer = self.answer(request).await;
        tracing::debug!(
            %method, %path, status = answer.status().as_u16(),
            duration_ms = started.elapsed().as_millis() as u64, "Admin request."
        );
        answer
    }

    async fn answer(&self, request: Request<Incoming>) -> Answer {
        let path = request.uri().path().trim_end_matches('/').to_owned();
        match (request.method(), path.as_str()) {
            (&Method::GET, "/healthz") => return respond(StatusCode::OK, "text/plain", "ok\n"),
            (&Method::GET, "/readyz") => return self.readyz().await,
            _ => {}
        }
        // Without a token the listener is loopback only; a page reached by
        // another name (DNS rebinding) must not get in either.
        if self.config.get().server.admin_token.is_none()
            && !crate::ui::loopback_host(request.headers())
        {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                "this admin listener has no token and answers only Host names that are loopback \
                 (localhost, 127.0.0.1, [::1])",
            );
        }
        if crate::ui::is_page_path(&path) {
            return self.ui.handle(self, request, &path).await;
        }
        if !self.authorized(&request) {
            self.ui.bad_token(self).await;
            let mut answer = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            answer
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return answer;
        }
        match self.route(request, &path).await {
            Ok(answer) => answer,
            Err(ApiError(status, message)) => error(status, &message),
        }
    }

    /// Long on purpose: the admin API's routing table, one arm per endpoint.
    async fn route(&self, request: Request<Incoming>, path: &str) -> Result<Answer, ApiError> {
        let internal = |error: crate::store::StoreError| {
            tracing::warn!(%error, "Admin request failed.");
            error_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "database error; see the ldbridge log",
            )
        };
        let query = request.uri().query().unwrap_or_default().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (request.method().clone(), segments.as_slice()) {
            (Method::GET, ["metrics"]) => Ok(self.metrics_answer().await),
            (Method::GET, ["api", "stats"]) => {
                let now = clock::now_ms();
                let time = |key: &str| {
                    query_param(&query, key)
                        .map(|text| ops::filters::parse_time(&text, now).map_err(bad_filter))
                        .transpose()
                };
                let window = match (time("since")?, time("until")?) {
                    (Some(since), until) => Some((since, until.unwrap_or(now))),
                    (None, _) => None,
                };
                let stats = ops::stats(&self.store, now, window)
                    .await
                    .map_err(internal)?;
                Ok(json_answer(StatusCode::OK, &stats.json()))
            }
            (Method::GET, ["api", "batches"]) => {
                let filter = batch_filter(&query)?;
                let batches = ops::log(&self.store, &filter).await.map_err(internal)?;
                Ok(json_answer(
                    StatusCode::OK,
                    &Value::Array(batches.iter().map(ops::batch_json).collect()),
                ))
            }
            (Method::GET, ["api", "batches", id]) => {
                let id = parse_id(id)?;
                match ops::show(&self.store, id).await.map_err(internal)? {
                    Some(detail) => Ok(json_answer(StatusCode::OK, &detail.json())),
                    None => Err(error_answer(
                        StatusCode::NOT_FOUND,
                        &format!("no batch {id}"),
                    )),
                }
            }
            (Method::POST, ["api", "batches", id, "resend"]) => {
                let request = ops::ResendRequest {
                    ids: vec![parse_id(id)?],
                    force: query_param(&query, "force").is_some_and(|v| v == "true"),
                    dry_run: query_param(&query, "dry_run").is_some_and(|v| v == "true"),
                    ..Default::default()
                };
                self.resend(&request).await
            }
            (Method::POST, ["api", "resend"]) => {
                let body = read_json::<ResendBody>(request).await?;
                let status = body
                    .status
                    .clone()
                    .or_else(|| body.ids.is_empty().then(|| BatchStatus::Failed.to_string()));
                let filter = ops::filters::batch_filter(
                    status.as_deref(),
                    body.route.as_deref(),
                    body.source.as_deref(),
                    body.since.as_deref(),
                    body.until.as_deref(),
                    1_000_000,
                    clock::now_ms(),
                )
                .map_err(bad_filter)?;
                let request = ops::ResendRequest {
                    ids: body.ids,
                    filter,
                    force: body.force,
                    dry_run: body.dry_run,
                };
                self.resend(&request).await
            }
            (Method::GET, ["api", "events", id]) => {
                let found = ops::explain(&self.store, id).await.map_err(internal)?;
                if found.is_empty() {
                    return Err(error_answer(
                        StatusCode::NOT_FOUND,
                        &format!("no event with id, messageId or payload id `{id}`, and no refusal of one"),
                    ));
                }
                Ok(json_answer(StatusCode::OK, &found.json()))
            }
            (Method::GET, ["api", "refusals"]) => {
                let limit = match query_param(&query, "limit") {
                    Some(limit) => limit.parse().map_err(|_| {
                        error_answer(StatusCode::BAD_REQUEST, "limit must be a number")
                    })?,
                    None => 50,
                };
                let filter = ops::filters::refusal_filter(
                    query_param(&query, "since").as_deref(),
                    query_param(&query, "source").as_deref(),
                    query_param(&query, "reason").as_deref(),
                    limit,
                    clock::now_ms(),
                )
                .map_err(bad_filter)?;
                let found = ops::refusals::list(&self.store, &filter)
                    .await
                    .map_err(internal)?;
                Ok(json_answer(
                    StatusCode::OK,
                    &Value::Array(found.iter().map(ops::refusals::json).collect()),
                ))
            }
            _ => Err(error_answer(
                StatusCode::NOT_FOUND,
                "no such admin endpoint",
            )),
        }
    }

    async fn resend(&self, request: &ops::ResendRequest) -> Result<Answer, ApiError> {
        let report = ops::resend(&self.store, request, clock::now_ms())
            .await
            .map_err(|error| {
                tracing::warn!(%error, "Admin resend failed.");
                error_answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "database error; see the ldbridge log",
                )
            })?;
        if report.matched == 0 {
            return Err(error_answer(
                StatusCode::NOT_FOUND,
                "no batch matched; nothing was requeued",
            ));
        }
        Ok(json_answer(StatusCode::OK, &report.json()))
    }

    /// `/metrics`: gauges that come from the database are refreshed first.
    async fn metrics_answer(&self) -> Answer {
        let now = clock::now_ms();
        self.metrics.clear_scrape_gauges();
        self.metrics.set_room(
            self.space.free(),
            self.space.reserve_held(),
            self.space.ingest_refused(),
        );
        if let Ok(open) = delivery_log::open_deliveries(&self.store).await {
            for (route, status, count) in open {
                self.metrics.set_queue_depth(&route, status, count);
            }
        }
        for route in Route::ALL {
            if let Ok(oldest) = delivery_log::oldest_undelivered(&self.store, route.as_str()).await
            {
                let age = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
                self.metrics.set_oldest_undelivered_age(route.as_str(), age);
            }
        }
        respond(StatusCode::OK, Metrics::CONTENT_TYPE, self.metrics.encode())
    }

    /// Ready: not shutting down, the database takes a write within the
    /// deadline, and the scheduler ticked recently.
    async fn readyz(&self) -> Answer {
        let now = clock::now_ms();
        let mut problems = Vec::new();
        if self.dispatcher.stopping() {
            problems.push("shutting down".to_owned());
        }
        if let Err(problem) =
            crate::store::maintenance::heartbeat(&self.store, now, READY_WRITE_DEADLINE).await
        {
            problems.push(problem.to_string());
        }
        if let Some((at, why)) = self.writer.last_failure() {
            if now - at < COMMIT_FAILURE_MEMORY_MS {
                problems.push(format!("ingest commits are failing: {why}"));
            }
        }
        if self.space.ingest_refused() {
            problems.push(crate::space::disk_full_text(&self.space));
        }
        if let Ok(Some(room)) = self.store.ingest_room().await {
            let wanted = 2 * self.config.get().server.max_request_bytes as u64;
            if room < wanted {
                problems.push(format!(
                    "the database is full: store.max_database_bytes leaves {room} bytes for ingest"
                ));
            }
        }
        let since_tick = self.dispatcher.since_last_tick(now);
        if since_tick > self.tick_allowance.as_millis() as i64 {
            problems.push(format!(
                "the dispatch scheduler has not ticked for {}",
                ops::humanize_ms(since_tick)
            ));
        }
        if problems.is_empty() {
            json_answer(StatusCode::OK, &json!({"ready": true}))
        } else {
            json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "problems": problems}),
            )
        }
    }
}

/// Constant-time comparison of the presented token with the configured one.
pub(crate) fn tokens_match(token: &Secret, presented: &str) -> bool {
    bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes()))
}

/// A refused admin request: status and message, turned into a JSON
/// answer in one place (`handle`).
struct ApiError(StatusCode, String);

fn error_answer(status: StatusCode, message: &str) -> ApiError {
    ApiError(status, message.to_owned())
}

fn parse_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        error_answer(
            StatusCode::BAD_REQUEST,
            &format!("`{text}` is not a batch id"),
        )
    })
}

/// A filter the caller got wrong: 400 with the reason.
fn bad_filter(reason: String) -> ApiError {
    error_answer(StatusCode::BAD_REQUEST, &reason)
}

fn batch_filter(query: &str) -> Result<delivery_log::BatchFilter, ApiError> {
    let param = |key: &str| query_param(query, key);
    let limit = match param("limit") {
        Some(text) => text
            .parse()
            .map_err(|_| error_answer(StatusCode::BAD_REQUEST, "limit must be a number"))?,
        None => 50,
    };
    let mut filter = ops::filters::batch_filter(
        param("status").as_deref(),
        param("route").as_deref(),
        param("source").as_deref(),
        param("since").as_deref(),
        param("until").as_deref(),
        limit,
        clock::now_ms(),
    )
    .map_err(bad_filter)?;
    if let Some(before) = param("before") {
        filter.before_id = Some(parse_id(&before)?);
    }
    Ok(filter)
}

async fn read_json<T: for<'de> Deserialize<'de> + Default>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let body = Limited::new(request.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| {
            error_answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or unreadable",
            )
        })?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| error_answer(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let token = Secret::new("s3cret-token");
        assert!(tokens_match(&token, "s3cret-token"));
        assert!(!tokens_match(&token, "s3cret-tokeN"));
        assert!(!tokens_match(&token, "s3cret"));
        assert!(!tokens_match(&token, ""));
    }

    #[test]
    fn query_parameters_are_found_and_decoded() {
        let query = "status=failed&since=2026-11-21T07%3A00%3A00Z&limit=5";
        assert_eq!(query_param(query, "status").as_deref(), Some("failed"));
        assert_eq!(
            query_param(query, "since").as_deref(),
            Some("2026-11-21T07:00:00Z")
        );
        assert_eq!(query_param(query, "route"), None);
    }
}
