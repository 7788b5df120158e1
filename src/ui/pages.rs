//! The Delivery Overview's views: one function per page, each gathering
//! what `ops` and `store` already answer for the CLI and rendering an
//! askama template (`templates/`, HTML-escaped). Each view is its own URL
//! with its state in the query, so a link can be shared.

use std::collections::HashMap;

use askama::Template;
use hyper::{Method, StatusCode};
use serde_json::json;

use super::{html, json, Answer};
use crate::{
    admin::Admin,
    clock,
    dispatch::{prepare, profile::Profile},
    domain::{BatchStatus, Route},
    ops::{self, filters, window::Window},
    store::{batches, counts, delivery_log},
};

type Form = HashMap<String, String>;

/// Window choices: query value, label, length in ms.
const WINDOWS: [(&str, &str, i64); 5] = [
    ("10m", "10 min", 600_000),
    ("1h", "1 hour", 3_600_000),
    ("24h", "24 hours", 86_400_000),
    ("7d", "7 days", 604_800_000),
    ("14d", "14 days", 1_209_600_000),
];

fn render(template: &impl Template) -> Answer {
    match template.render() {
        Ok(body) => html(StatusCode::OK, body),
        Err(error) => {
            tracing::warn!(%error, "A page could not be rendered.");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>The page could not be rendered; see the ldbridge log.".to_owned(),
            )
        }
    }
}

fn store_error(error: crate::store::StoreError) -> Answer {
    tracing::warn!(%error, "A page's query failed.");
    message_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Database error",
        "The database could not answer; see the ldbridge log.",
    )
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    nav: &'a str,
    heading: &'a str,
    text: &'a str,
}

fn message_page(status: StatusCode, heading: &str, text: &str) -> Answer {
    let mut answer = render(&MessagePage {
        nav: "",
        heading,
        text,
    });
    *answer.status_mut() = status;
    answer
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    next: &'a str,
}

/// The login page; `next` is where to go after.
pub fn login(next: &str) -> Answer {
    render(&LoginPage { next })
}

/// Answers a page request (already authenticated and, when it changes
/// state, checked to come from the page).
pub async fn route(admin: &Admin, method: &Method, path: &str, form: &Form) -> Answer {
    let segments: Vec<&str> = path.trim_start_matches("/ui/").split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, [""]) => overview(admin, form).await,
        (&Method::GET, ["batches"]) => batches_page(admin, form).await,
        (&Method::GET, ["batches", id]) => match id.parse() {
            Ok(id) => batch_page(admin, id).await,
            Err(_) => not_found(),
        },
        (&Method::POST, ["batches", id, "resend"]) => match id.parse() {
            Ok(id) => {
                let request = ops::ResendRequest {
                    ids: vec![id],
                    force: flag(form, "force"),
                    dry_run: flag(form, "dry_run"),
                    ..Default::default()
                };
                resend(admin, &request).await
            }
            Err(_) => not_found(),
        },
        (&Method::GET, ["resend"]) => render(&ResendPage {
            nav: "resend",
            statuses: [
                ("failed", true),
                ("retrying", false),
                ("pending", false),
                ("delivered", false),
            ],
            routes: Route::ALL.map(Route::as_str),
        }),
        (&Method::POST, ["resend"]) => resend_by_filter(admin, form).await,
        (&Method::GET, ["explain"]) => explain_page(admin, form).await,
        (&Method::GET, ["refusals"]) => refusals_page(admin, form).await,
        (&Method::GET, ["events"]) => events_page(admin, form).await,
        _ => not_found(),
    }
}

fn not_found() -> Answer {
    message_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page. The views are Overview, Batches, Resend, Explain and Refusals.",
    )
}

fn flag(form: &Form, name: &str) -> bool {
    form.get(name)
        .is_some_and(|value| value == "true" || value == "1" || value == "on")
}

fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

/// The window a query asks for: a named one (default 1 h), or `since`
/// and `until` (RFC 3339 or a duration ago).
fn chosen_window(form: &Form, now: i64) -> Result<(i64, i64, String), String> {
    let until = match field(form, "until") {
        Some(text) => filters::parse_time(text, now)?,
        None => now,
    };
    if let Some(text) = field(form, "since") {
        return Ok((filters::parse_time(text, now)?, until, "custom".to_owned()));
    }
    let key = field(form, "window").unwrap_or("1h");
    let (key, _, length) = WINDOWS
        .iter()
        .find(|(name, _, _)| *name == key)
        .copied()
        .ok_or_else(|| format!("unknown window `{key}`: choose 10m, 1h, 24h, 7d or 14d"))?;
    Ok((until - length, until, key.to_owned()))
}

struct Step {
    label: &'static str,
    class: &'static str,
    text: String,
    href: String,
}

struct ReasonRow {
    outcome: &'static str,
    reason: String,
    text: String,
    href: String,
}

struct RefusedRow {
    source: String,
    reason: String,
    n: i64,
    href: String,
}

struct RouteView {
    name: &'static str,
    steps: Vec<Step>,
    reasons: Vec<ReasonRow>,
    pending_now: i64,
    oldest: String,
    chart: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: &'static str,
    windows: Vec<(&'static str, &'static str, bool)>,
    since_input: String,
    until_input: String,
    since_text: String,
    until_text: String,
    percent: bool,
    empty: bool,
    refused: Vec<RefusedRow>,
    routes: Vec<RouteView>,
    bucket: &'static str,
}

/// The overview: per route, the window's pipeline from the kept counts,
/// what waits now, and a chart per minute (per hour past 6 hours).
async fn overview(admin: &Admin, form: &Form) -> Answer {
    let now = clock::now_ms();
    let (since, until, key) = match chosen_window(form, now) {
        Ok(window) => window,
        Err(why) => return message_page(StatusCode::BAD_REQUEST, "Bad window", &why),
    };
    let counted = match ops::window::window(&admin.store, since, until).await {
        Ok(counted) => counted,
        Err(error) => return store_error(error),
    };
    let totals = match delivery_log::delivery_counts(&admin.store).await {
        Ok(totals) => totals,
        Err(error) => return store_error(error),
    };
    let percent = field(form, "as") == Some("percent");
    use counts::Flow;
    let (start, end, bucket) = counts::span(since, until);
    let per_bucket = match counts::per_bucket(
        &admin.store,
        &[
            Flow::Delivered,
            Flow::Retried,
            Flow::Failed,
            Flow::OldestAge,
        ],
        since,
        until,
    )
    .await
    {
        Ok(rows) => rows,
        Err(error) => return store_error(error),
    };
    // The routes some source feeds, and any with counts (a source removed
    // since); the others would be rows of zeros.
    let config = admin.config.get();
    let fed: Vec<Route> = config
        .segment_sources
        .iter()
        .flat_map(|source| source.routes())
        .chain(
            config
                .launchdarkly_sources
                .iter()
                .flat_map(|source| source.routes()),
        )
        .collect();
    let mut routes = Vec::new();
    for (route, flows) in &counted.routes {
        let counted_now = totals.iter().any(|(name, _, _)| name == route.as_str());
        if !fed.contains(route) && !counted_now && *flows == ops::window::RouteFlows::default() {
            continue;
        }
        let waiting: i64 = totals
            .iter()
            .filter(|(name, status, _)| {
                name == route.as_str()
                    && matches!(
                        status,
                        crate::domain::DeliveryStatus::Pending
                            | crate::domain::DeliveryStatus::Batched
                    )
            })
            .map(|(_, _, n)| n)
            .sum();
        let oldest = match delivery_log::oldest_undelivered(&admin.store, route.as_str()).await {
            Ok(Some(at)) => ops::humanize_ms((now - at).max(0)),
            Ok(None) => "none waiting".to_owned(),
            Err(error) => return store_error(error),
        };
        let chart = chart(*route, &per_bucket, since, until);
        routes.push(route_view(
            *route, flows, &counted, percent, waiting, oldest, chart,
        ));
    }
    let refused = counted
        .refused
        .iter()
        .map(|(source, code, n)| RefusedRow {
            source: if source.is_empty() {
                "(unknown key)".to_owned()
            } else {
                source.clone()
            },
            reason: code.clone(),
            n: *n,
            href: format!(
                "/ui/refusals?reason={}&since={}",
                encode(code),
                encode(&clock::format_ms(since))
            ),
        })
        .collect();
    render(&OverviewPage {
        nav: "overview",
        windows: WINDOWS
            .iter()
            .map(|(name, label, _)| (*name, *label, key == *name))
            .collect(),
        since_input: field(form, "since").unwrap_or_default().to_owned(),
        until_input: field(form, "until").unwrap_or_default().to_owned(),
        since_text: clock::format_ms(start),
        until_text: clock::format_ms(end),
        percent,
        empty: counted.is_empty() && totals.is_empty(),
        refused,
        routes,
        bucket: if bucket == 60_000 { "minute" } else { "hour" },
    })
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `since=…&until=…` of the window, for the links behind its numbers.
fn window_query(window: &Window) -> String {
    format!(
        "since={}&until={}",
        encode(&clock::format_ms(counts::minute(window.since) * 60_000)),
        encode(&clock::format_ms(
            (counts::minute(window.until) + 1) * 60_000
        ))
    )
}

fn route_view(
    route: Route,
    flows: &ops::window::RouteFlows,
    window: &Window,
    percent: bool,
    waiting: i64,
    oldest: String,
    chart: String,
) -> RouteView {
    let name = route.as_str();
    let query = window_query(window);
    let text = |n: i64| {
        if percent && flows.received > 0 {
            format!("{:.1} %", n as f64 * 100.0 / flows.received as f64)
        } else {
            n.to_string()
        }
    };
    let batches = |status: &str| format!("/ui/batches?route={name}&status={status}&{query}");
    let events = |status: &str| format!("/ui/events?route={name}&status={status}&{query}");
    let steps = vec![
        Step {
            label: "received",
            class: "received",
            text: flows.received.to_string(),
            href: format!("/ui/batches?route={name}&{query}"),
        },
        Step {
            label: "skipped",
            class: "skipped",
            text: text(flows.skipped),
            href: events("skipped"),
        },
        Step {
            label: "delivered",
            class: "delivered",
            text: text(flows.delivered),
            href: batches("delivered"),
        },
        Step {
            label: "retried",
            class: "retried",
            text: text(flows.retried),
            href: batches("retrying"),
        },
        Step {
            label: "failed",
            class: "failed",
            text: text(flows.failed),
            href: batches("failed"),
        },
        Step {
            label: "resent",
            class: "resent",
            text: text(flows.resent),
            href: batches("delivered"),
        },
    ];
    // Skipped events have no batch: their rows are events. Failed ones are
    // mostly in failed batches (those failed unsent are in `explain`).
    let mut reasons = Vec::new();
    for (outcome, list, href) in [
        ("skipped", &flows.skipped_by_reason, events("skipped")),
        ("failed", &flows.failed_by_reason, batches("failed")),
    ] {
        for (reason, n) in list {
            reasons.push(ReasonRow {
                outcome,
                reason: reason.clone(),
                text: text(*n),
                href: href.clone(),
            });
        }
    }
    RouteView {
        name,
        steps,
        reasons,
        pending_now: waiting,
        oldest,
        chart,
    }
}

/// An inline SVG bar chart of the route's delivered (green), retried
/// (amber) and failed (red) events per bucket of the window, and a line of
/// the oldest waiting event's age (blue) under it. Numbers only: nothing
/// from an event goes into it. `counted` is [`counts::per_bucket`]'s.
fn chart(
    route: Route,
    counted: &[(i64, String, counts::Flow, i64)],
    since: i64,
    until: i64,
) -> String {
    use counts::Flow;
    let (start, end, bucket_ms) = counts::span(since, until);
    let buckets = ((end - start) / bucket_ms).clamp(1, 400) as usize;
    let per = if bucket_ms == 60_000 {
        "minute"
    } else {
        "hour"
    };
    let mut series = [
        vec![0i64; buckets],
        vec![0i64; buckets],
        vec![0i64; buckets],
    ];
    let mut ages = vec![0i64; buckets];
    for (at, name, flow, n) in counted {
        if name != route.as_str() {
            continue;
        }
        let slot = ((at - start) / bucket_ms).clamp(0, buckets as i64 - 1) as usize;
        match flow {
            Flow::Delivered => series[0][slot] += n,
            Flow::Retried => series[1][slot] += n,
            Flow::Failed => series[2][slot] += n,
            Flow::OldestAge => ages[slot] = ages[slot].max(*n),
            _ => {}
        }
    }
    let highest = (0..buckets)
        .map(|b| series.iter().map(|s| s[b]).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height) = (600.0, 120.0);
    let bar = width / buckets as f64;
    let mut svg = format!(
        r##"<svg class="chart" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" aria-label="{} per {per}: highest {highest} events"><rect width="{width}" height="{height}" fill="#f6f8fa"/>"##,
        route.as_str()
    );
    for b in 0..buckets {
        let mut top = height;
        for (series, color) in series.iter().zip(["#1a7f37", "#bf8700", "#cf222e"]) {
            let n = series[b];
            if n == 0 {
                continue;
            }
            let h = n as f64 / highest as f64 * (height - 4.0);
            top -= h;
            svg.push_str(&format!(
                r##"<rect x="{:.2}" y="{top:.2}" width="{:.2}" height="{h:.2}" fill="{color}"/>"##,
                b as f64 * bar,
                (bar - 0.5).max(0.5)
            ));
        }
    }
    svg.push_str("</svg>");
    let oldest = ages.iter().copied().max().unwrap_or(0);
    let label = if oldest == 0 {
        "nothing waited past a minute's sample".to_owned()
    } else {
        format!("the most: {}", ops::humanize_ms(oldest))
    };
    svg.push_str(&format!(
        r##"<svg class="chart age" viewBox="0 0 {width} 60" preserveAspectRatio="none" role="img" aria-label="oldest undelivered event's age per {per}: {label}"><rect width="{width}" height="60" fill="#f6f8fa"/>"##
    ));
    if oldest > 0 {
        let points: Vec<String> = ages
            .iter()
            .enumerate()
            .map(|(b, age)| {
                format!(
                    "{:.2},{:.2}",
                    (b as f64 + 0.5) * bar,
                    58.0 - *age as f64 / oldest as f64 * 54.0
                )
            })
            .collect();
        svg.push_str(&format!(
            r##"<polyline points="{}" fill="none" stroke="#0969da" stroke-width="2" vector-effect="non-scaling-stroke"/>"##,
            points.join(" ")
        ));
    }
    svg.push_str("</svg>");
    svg
}

struct BatchRow {
    id: i64,
    status: String,
    route: String,
    source: String,
    events: i64,
    attempts: i64,
    updated: String,
    error: String,
}

#[derive(Template)]
#[template(path = "batches.html")]
struct BatchesPage {
    nav: &'static str,
    statuses: Vec<(&'static str, bool)>,
    routes: Vec<(&'static str, bool)>,
    source: String,
    since: String,
    until: String,
    batches: Vec<BatchRow>,
    next: String,
}

/// The delivery log with `ldbridge log`'s filters, newest first, 50 a page.
async fn batches_page(admin: &Admin, form: &Form) -> Answer {
    let mut filter = match filters::batch_filter(
        field(form, "status"),
        field(form, "route"),
        field(form, "source"),
        field(form, "since"),
        field(form, "until"),
        50,
        clock::now_ms(),
    ) {
        Ok(filter) => filter,
        Err(why) => return message_page(StatusCode::BAD_REQUEST, "Bad filter", &why),
    };
    filter.before_id = field(form, "before").and_then(|id| id.parse().ok());
    let found = match ops::log(&admin.store, &filter).await {
        Ok(found) => found,
        Err(error) => return store_error(error),
    };
    let next = match found.last() {
        Some(last) if found.len() == filter.limit => {
            let mut query: Vec<(String, String)> = form
                .iter()
                .filter(|(name, _)| name.as_str() != "before")
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            query.sort();
            query.push(("before".to_owned(), last.id.to_string()));
            let mut out = form_urlencoded::Serializer::new(String::new());
            out.extend_pairs(query);
            format!("/ui/batches?{}", out.finish())
        }
        _ => String::new(),
    };
    let selected_status = field(form, "status").unwrap_or_default();
    let selected_route = field(form, "route").unwrap_or_default();
    render(&BatchesPage {
        nav: "batches",
        statuses: BatchStatus::ALL
            .iter()
            .map(|status| (status.as_str(), status.as_str() == selected_status))
            .collect(),
        routes: Route::ALL
            .iter()
            .map(|route| (route.as_str(), route.as_str() == selected_route))
            .collect(),
        source: field(form, "source").unwrap_or_default().to_owned(),
        since: field(form, "since").unwrap_or_default().to_owned(),
        until: field(form, "until").unwrap_or_default().to_owned(),
        batches: found
            .iter()
            .map(|b| BatchRow {
                id: b.id,
                status: b.status.to_string(),
                route: b.route.clone(),
                source: b.source.clone(),
                events: b.event_count,
                attempts: b.attempts,
                updated: clock::format_ms(b.updated_at),
                error: b
                    .last_error
                    .clone()
                    .map(|e| ops::truncate(&e, 80))
                    .unwrap_or_default(),
            })
            .collect(),
        next,
    })
}

struct AttemptRow {
    number: i64,
    trigger: String,
    started: String,
    took: String,
    status: String,
    outcome: String,
    detail: String,
}

struct EventRow {
    id: i64,
    kind: String,
    status: String,
    dedupe: String,
    mapped_by: String,
    payload: String,
}

#[derive(Template)]
#[template(path = "batch.html")]
struct BatchPage {
    nav: &'static str,
    id: i64,
    status: String,
    route: String,
    source: String,
    payload_id: String,
    created: String,
    updated: String,
    next_attempt: String,
    last_error: String,
    children: Vec<i64>,
    resendable: bool,
    force: bool,
    attempts: Vec<AttemptRow>,
    events: Vec<EventRow>,
}

/// One batch: every attempt, its events as sent (prepared again with the
/// profile the batch was formed with, as its next attempt would be), and
/// Resend.
async fn batch_page(admin: &Admin, id: i64) -> Answer {
    let detail = match ops::show(&admin.store, id).await {
        Ok(Some(detail)) => detail,
        Ok(None) => {
            return message_page(
                StatusCode::NOT_FOUND,
                "No such batch",
                &format!("There is no batch {id}."),
            )
        }
        Err(error) => return store_error(error),
    };
    let payloads = match sent_payloads(admin, &detail.batch).await {
        Ok(payloads) => payloads,
        Err(error) => return store_error(error),
    };
    let b = &detail.batch;
    let refusal = b.status.resend_refusal(b.status == BatchStatus::Delivered);
    render(&BatchPage {
        nav: "batches",
        id: b.id,
        status: b.status.to_string(),
        route: b.route.clone(),
        source: b.source.clone(),
        payload_id: b.payload_id.clone(),
        created: clock::format_ms(b.created_at),
        updated: clock::format_ms(b.updated_at),
        next_attempt: match (b.next_attempt_at, b.status) {
            (Some(at), BatchStatus::Retrying | BatchStatus::Pending) => clock::format_ms(at),
            _ => String::new(),
        },
        last_error: b.last_error.clone().unwrap_or_default(),
        children: detail.children.clone(),
        resendable: refusal.is_none(),
        force: b.status == BatchStatus::Delivered,
        attempts: detail
            .attempts
            .iter()
            .map(|a| AttemptRow {
                number: a.attempt,
                trigger: a.trigger.clone(),
                started: clock::format_ms(a.started_at),
                took: ops::humanize_ms(a.duration_ms),
                status: a.http_status.map_or("-".to_owned(), |s| s.to_string()),
                outcome: a.outcome.clone(),
                detail: a
                    .error
                    .clone()
                    .or_else(|| a.response.clone())
                    .map(|text| ops::truncate(&text, 300))
                    .unwrap_or_default(),
            })
            .collect(),
        events: detail
            .events
            .iter()
            .map(|e| EventRow {
                id: e.event_id,
                kind: e.kind.clone(),
                status: e.status.to_string(),
                dedupe: e.dedupe_key.clone(),
                mapped_by: detail
                    .mapped_by
                    .get(&e.event_id)
                    .map(|labels| labels.join(" and "))
                    .unwrap_or_default(),
                payload: payloads.get(&e.event_id).cloned().unwrap_or_default(),
            })
            .collect(),
    })
}

/// What each event of `batch` sends, pretty-printed, by event id.
async fn sent_payloads(
    admin: &Admin,
    batch: &delivery_log::BatchSummary,
) -> Result<HashMap<i64, String>, crate::store::StoreError> {
    let Ok(route) = batch.route.parse::<Route>() else {
        return Ok(HashMap::new());
    };
    let profile = match batches::batch_profile_definition(&admin.store, batch.id).await? {
        Some(definition) => Profile::from_definition(route, &definition)
            .unwrap_or_else(|_| Profile::of(&admin.config.get(), route, &batch.source)),
        None => Profile::of(&admin.config.get(), route, &batch.source),
    };
    let events = batches::batch_events(&admin.store, batch.id).await?;
    Ok(events
        .iter()
        .map(|event| {
            let shown = match prepare::prepare_again(route, event, &profile) {
                prepare::Prepared::Send { json, .. } => pretty(&json),
                prepare::Prepared::Skip(reason) => format!("(not sent: {reason})"),
                prepare::Prepared::Fail(reason) => format!("(never sent: {reason})"),
            };
            (event.event_id, shown)
        })
        .collect())
}

/// One or more JSON values (comma-joined array elements), indented.
fn pretty(elements: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(&format!("[{elements}]")) {
        Ok(serde_json::Value::Array(values)) if values.len() == 1 => {
            serde_json::to_string_pretty(&values[0]).unwrap_or_default()
        }
        Ok(values) => serde_json::to_string_pretty(&values).unwrap_or_default(),
        Err(_) => elements.to_owned(),
    }
}

async fn resend(admin: &Admin, request: &ops::ResendRequest) -> Answer {
    match ops::resend(&admin.store, request, clock::now_ms()).await {
        Ok(report) if report.matched == 0 => json(
            StatusCode::NOT_FOUND,
            &json!({"error": "no batch matched; nothing was requeued"}),
        ),
        Ok(report) => json(StatusCode::OK, &report.json()),
        Err(error) => {
            tracing::warn!(%error, "A resend from the page failed.");
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "database error; see the ldbridge log"}),
            )
        }
    }
}

async fn resend_by_filter(admin: &Admin, form: &Form) -> Answer {
    let filter = filters::batch_filter(
        Some(field(form, "status").unwrap_or("failed")),
        field(form, "route"),
        field(form, "source"),
        field(form, "since"),
        field(form, "until"),
        100_000,
        clock::now_ms(),
    );
    match filter {
        Ok(filter) => {
            let request = ops::ResendRequest {
                ids: Vec::new(),
                filter,
                force: flag(form, "force"),
                dry_run: flag(form, "dry_run"),
            };
            resend(admin, &request).await
        }
        Err(why) => json(StatusCode::BAD_REQUEST, &json!({"error": why})),
    }
}

#[derive(Template)]
#[template(path = "resend.html")]
struct ResendPage {
    nav: &'static str,
    /// (status, selected)
    statuses: [(&'static str, bool); 4],
    routes: [&'static str; 4],
}

struct Explained {
    title: String,
    /// (sentence, link to its batch or "").
    lines: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainPage {
    nav: &'static str,
    query: String,
    found: Vec<Explained>,
}

/// What `ldbridge explain` answers, refusals included.
async fn explain_page(admin: &Admin, form: &Form) -> Answer {
    let query = field(form, "q").unwrap_or_default().to_owned();
    let mut found = Vec::new();
    if !query.is_empty() {
        let explained = match ops::explain(&admin.store, &query).await {
            Ok(explained) => explained,
            Err(error) => return store_error(error),
        };
        for item in &explained.events {
            let e = &item.event;
            let mut lines: Vec<(String, String)> = vec![(
                format!(
                    "dedupe id {}, received {}",
                    e.dedupe_key,
                    clock::format_ms(e.received_at)
                ),
                String::new(),
            )];
            for state in &item.routes {
                let link = state
                    .batch
                    .as_ref()
                    .map_or(String::new(), |b| format!("/ui/batches/{}", b.id));
                lines.push((
                    format!("{}: {}", state.route, ops::route_sentence(state)),
                    link,
                ));
                if state.route == Route::SegmentToLaunchDarkly.as_str()
                    && !item.mapped_by.is_empty()
                {
                    lines.push((
                        format!("mapped by {}", item.mapped_by.join(" and ")),
                        String::new(),
                    ));
                }
            }
            found.push(Explained {
                title: format!(
                    "Event {}: {} {} from source {}",
                    e.id, e.protocol, e.kind, e.source
                ),
                lines,
            });
        }
        for refusal in &explained.refusals {
            found.push(Explained {
                title: format!(
                    "Message {}",
                    refusal.refusal.message_id.as_deref().unwrap_or("-")
                ),
                lines: vec![(ops::refusals::sentence(refusal), String::new())],
            });
        }
    }
    render(&ExplainPage {
        nav: "explain",
        query,
        found,
    })
}

struct RefusalRow {
    at: String,
    source: String,
    path: String,
    code: String,
    message: String,
    excerpt: String,
}

#[derive(Template)]
#[template(path = "refusals.html")]
struct RefusalsPage {
    nav: &'static str,
    reason: String,
    source: String,
    since: String,
    rows: Vec<RefusalRow>,
}

/// Samples of the refusal log, newest first, by reason and source.
async fn refusals_page(admin: &Admin, form: &Form) -> Answer {
    let filter = match filters::refusal_filter(
        field(form, "since"),
        field(form, "source"),
        field(form, "reason"),
        100,
        clock::now_ms(),
    ) {
        Ok(filter) => filter,
        Err(why) => return message_page(StatusCode::BAD_REQUEST, "Bad filter", &why),
    };
    let rows = match ops::refusals::list(&admin.store, &filter).await {
        Ok(rows) => rows,
        Err(error) => return store_error(error),
    };
    render(&RefusalsPage {
        nav: "refusals",
        reason: field(form, "reason").unwrap_or_default().to_owned(),
        source: field(form, "source").unwrap_or_default().to_owned(),
        since: field(form, "since").unwrap_or_default().to_owned(),
        rows: rows
            .iter()
            .map(|r| RefusalRow {
                at: clock::format_ms(r.refusal.at),
                source: r
                    .refusal
                    .source
                    .clone()
                    .unwrap_or_else(|| "(unknown key)".to_owned()),
                path: r.refusal.path.clone(),
                code: r.refusal.code.clone(),
                message: r.refusal.reason.clone(),
                excerpt: ops::truncate(&r.refusal.excerpt, 160),
            })
            .collect(),
    })
}

struct SettledRow {
    id: i64,
    received: String,
    kind: String,
    dedupe: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    nav: &'static str,
    heading: String,
    rows: Vec<SettledRow>,
}

/// The events behind a skipped (or never-sent failed) count: a route's
/// deliveries in that status among the events received in the window.
async fn events_page(admin: &Admin, form: &Form) -> Answer {
    let now = clock::now_ms();
    let (since, until, _) = match chosen_window(form, now) {
        Ok(window) => window,
        Err(why) => return message_page(StatusCode::BAD_REQUEST, "Bad window", &why),
    };
    let Some(route) = field(form, "route").and_then(|r| r.parse::<Route>().ok()) else {
        return message_page(StatusCode::BAD_REQUEST, "Bad filter", "name a route");
    };
    let status = match field(form, "status") {
        Some("failed") => crate::domain::DeliveryStatus::Failed,
        _ => crate::domain::DeliveryStatus::Skipped,
    };
    let rows = match delivery_log::settled_in(&admin.store, route, status, since, until, 200).await
    {
        Ok(rows) => rows,
        Err(error) => return store_error(error),
    };
    render(&EventsPage {
        nav: "overview",
        heading: format!("{status} on {route}, newest first"),
        rows: rows
            .into_iter()
            .map(|row| SettledRow {
                id: row.event_id,
                received: clock::format_ms(row.received_at),
                kind: row.kind,
                dedupe: row.dedupe_key,
                reason: row.reason.unwrap_or_default(),
            })
            .collect(),
    })
}
