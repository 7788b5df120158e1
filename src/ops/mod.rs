//! The operator views: what `ldbridge log/show/explain/resend/stats/purge`
//! print and what the admin API returns — one implementation, so the CLI's
//! `--json` and the API are the same documents.
//!
//! Each view is a typed value with `json()` (stable field names of
//! architecture.md §4, times in RFC 3339 UTC) and `text()` (aligned tables
//! within 100 columns, durations humanised). Reads and writes go through
//! `store`; no SQL here.

pub mod filters;
pub mod online;
pub mod preview;
pub mod refusals;
pub mod window;

use std::{collections::HashMap, fmt::Write as _};

use serde_json::{json, Value};

use crate::{
    clock,
    dispatch::profile::Profile,
    domain::Route,
    domain::{BatchStatus, DeliveryStatus},
    store::{
        batches,
        delivery_log::{
            self, AttemptSummary, BatchFilter, BatchMember, BatchSummary, EventSummary, RouteState,
        },
        maintenance::{self, Purged},
        refusals::Refusal,
        Store, StoreError,
    },
};

/// `1h 5m`, `3m 12s`, `4.2s`, `850ms`: a duration for people.
pub fn humanize_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {}s", ms / 60_000, ms % 60_000 / 1000),
        3_600_000..=86_399_999 => format!("{}h {}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{}d {}h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

pub(crate) fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

/// A batch as `--json` shows it (architecture.md §4 field names).
pub fn batch_json(batch: &BatchSummary) -> Value {
    json!({
        "id": batch.id,
        "route": batch.route,
        "source": batch.source,
        "lane": batch.lane,
        "status": batch.status,
        "payload_id": batch.payload_id,
        "event_count": batch.event_count,
        "attempts": batch.attempts,
        "created_at": clock::format_ms(batch.created_at),
        "updated_at": clock::format_ms(batch.updated_at),
        "next_attempt_at": batch.next_attempt_at.map(clock::format_ms),
        "last_error": batch.last_error,
        "parent_id": batch.parent_id,
    })
}

/// The delivery log as an aligned table that fits 100 columns.
pub fn batch_table(batches: &[BatchSummary]) -> String {
    let mut out = format!(
        "{:>7}  {:<9}  {:<23}  {:<12}  {:>6}  {:>5}  {:<24}\n",
        "BATCH", "STATUS", "ROUTE", "SOURCE", "EVENTS", "TRIES", "CREATED"
    );
    for batch in batches {
        let _ = writeln!(
            out,
            "{:>7}  {:<9}  {:<23}  {:<12}  {:>6}  {:>5}  {:<24}",
            batch.id,
            batch.status,
            batch.route,
            truncate(&batch.source, 12),
            batch.event_count,
            batch.attempts,
            clock::format_ms(batch.created_at),
        );
        if let Some(error) = batch
            .last_error
            .as_deref()
            .filter(|_| batch.status != BatchStatus::Delivered)
        {
            let _ = writeln!(out, "{:>7}  └ {}", "", truncate(error, 89));
        }
    }
    if batches.is_empty() {
        out.push_str("(no batches)\n");
    }
    out
}

/// `ldbridge log`: batches matching `filter`, newest first.
pub async fn log(store: &Store, filter: &BatchFilter) -> Result<Vec<BatchSummary>, StoreError> {
    delivery_log::list_batches(store, filter).await
}

/// `ldbridge show`: one batch, its events and every attempt.
#[derive(Debug, Clone)]
pub struct BatchDetail {
    pub batch: BatchSummary,
    pub events: Vec<BatchMember>,
    pub attempts: Vec<AttemptSummary>,
    /// The halves of a split batch.
    pub children: Vec<i64>,
    /// On `segment-to-launchdarkly`: the mappings that produced what each
    /// event sends, by event id.
    pub mapped_by: HashMap<i64, Vec<String>>,
}

/// One batch by id; `None` when there is none.
pub async fn show(store: &Store, id: i64) -> Result<Option<BatchDetail>, StoreError> {
    let Some(batch) = delivery_log::batch(store, id).await? else {
        return Ok(None);
    };
    Ok(Some(BatchDetail {
        events: delivery_log::batch_members(store, id).await?,
        attempts: delivery_log::batch_attempts(store, id).await?,
        children: delivery_log::children(store, id).await?,
        mapped_by: mapped_by(store, &batch).await?,
        batch,
    }))
}

/// Which mappings produced what each event of a `segment-to-launchdarkly`
/// batch sends ("mapping 1 (custom, #1a2b3c4)"), by event id, from the
/// profile the batch was formed with. Empty on the other routes.
async fn mapped_by(
    store: &Store,
    batch: &BatchSummary,
) -> Result<HashMap<i64, Vec<String>>, StoreError> {
    let route = Route::SegmentToLaunchDarkly;
    if batch.route != route.as_str() {
        return Ok(HashMap::new());
    }
    let profile = match batches::batch_profile_definition(store, batch.id).await? {
        Some(definition) => match Profile::from_definition(route, &definition) {
            Ok(profile) => profile,
            Err(_) => return Ok(HashMap::new()),
        },
        // Formed before profiles were stored, when the default mappings
        // were the only ones.
        None => Profile::Mappings(Default::default()),
    };
    let events = batches::batch_events(store, batch.id).await?;
    Ok(events
        .iter()
        .map(|event| (event.event_id, preview::mapped_by(&profile, event)))
        .collect())
}

fn attempt_json(attempt: &AttemptSummary) -> Value {
    json!({
        "batch_id": attempt.batch_id,
        "attempt": attempt.attempt,
        "trigger": attempt.trigger,
        "started_at": clock::format_ms(attempt.started_at),
        "duration_ms": attempt.duration_ms,
        "http_status": attempt.http_status,
        "error": attempt.error,
        "response": attempt.response,
        "outcome": attempt.outcome,
    })
}

impl BatchDetail {
    pub fn json(&self) -> Value {
        json!({
            "batch": batch_json(&self.batch),
            "events": self.events.iter().map(|e| json!({
                "event_id": e.event_id, "route": e.route, "dedupe_id": e.dedupe_key, "kind": e.kind, "status": e.status,
                "mapped_by": self.mapped_by.get(&e.event_id),
            })).collect::<Vec<_>>(),
            "attempts": self.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
            "split_into": self.children,
        })
    }

    /// Long on purpose: the `show` text, line by line as it prints.
    pub fn text(&self) -> String {
        let b = &self.batch;
        let mut out = format!(
            "Batch {}  {}  route {}  source {}{}\n  payload id {}  {} event(s)\n  created {}  updated {}\n",
            b.id,
            b.status,
            b.route,
            b.source,
            if b.lane.is_empty() { String::new() } else { format!("  lane {}", b.lane) },
            b.payload_id,
            b.event_count,
            clock::format_ms(b.created_at),
            clock::format_ms(b.updated_at),
        );
        if let (Some(next), BatchStatus::Retrying | BatchStatus::Pending) =
            (b.next_attempt_at, b.status)
        {
            let _ = writeln!(out, "  next attempt {}", clock::format_ms(next));
        }
        if let Some(error) = &b.last_error {
            let _ = writeln!(out, "  last error: {}", truncate(error, 86));
        }
        if !self.children.is_empty() {
            let ids: Vec<String> = self.children.iter().map(i64::to_string).collect();
            let _ = writeln!(out, "  split into batches {}", ids.join(", "));
        }
        let _ = writeln!(
            out,
            "\nAttempts:\n{:>3}  {:<9}  {:<24}  {:>8}  {:<6}  {:<9}  RESPONSE / ERROR",
            "#", "TRIGGER", "STARTED", "TOOK", "STATUS", "OUTCOME"
        );
        for a in &self.attempts {
            let detail = a
                .error
                .clone()
                .or_else(|| a.response.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:>3}  {:<9}  {:<24}  {:>8}  {:<6}  {:<9}  {}",
                a.attempt,
                a.trigger,
                clock::format_ms(a.started_at),
                humanize_ms(a.duration_ms),
                a.http_status.map_or("-".to_owned(), |s| s.to_string()),
                a.outcome,
                truncate(&detail.replace('\n', " "), 28),
            );
        }
        if self.attempts.is_empty() {
            out.push_str("(no attempts yet)\n");
        }
        let _ = writeln!(
            out,
            "\nEvents:\n{:>10}  {:<10}  {:<10}  DEDUPE ID",
            "EVENT", "KIND", "STATUS"
        );
        for e in &self.events {
            let _ = writeln!(
                out,
                "{:>10}  {:<10}  {:<10}  {}",
                e.event_id,
                truncate(&e.kind, 10),
                e.status,
                truncate(&e.dedupe_key, 62)
            );
            if let Some(labels) = self.mapped_by.get(&e.event_id).filter(|l| !l.is_empty()) {
                let _ = writeln!(out, "{:>10}  mapped by {}", "", labels.join(" and "));
            }
        }
        out
    }
}

/// `ldbridge explain`: one event and where it went on each route.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub event: EventSummary,
    pub routes: Vec<RouteState>,
    /// The mappings that produced what it sends to LaunchDarkly, once batched.
    pub mapped_by: Vec<String>,
}

/// What `explain` found: the events `needle` names, and the refusals of
/// messages it names (a message refused at ingest has no event).
#[derive(Debug, Clone, Default)]
pub struct Explained {
    pub events: Vec<Explanation>,
    pub refusals: Vec<Refusal>,
}

/// The events `needle` names (event id, messageId or payload id) with
/// their routes, and the refusals recorded for that messageId or payload
/// id. Empty when nothing matches.
pub async fn explain(store: &Store, needle: &str) -> Result<Explained, StoreError> {
    let mut events = Vec::new();
    for event in delivery_log::find_events(store, needle).await? {
        let routes = delivery_log::event_routes(store, event.id).await?;
        let mut labels = Vec::new();
        for batch in routes.iter().filter_map(|state| state.batch.as_ref()) {
            if let Some(found) = mapped_by(store, batch).await?.remove(&event.id) {
                labels = found;
            }
        }
        events.push(Explanation {
            event,
            routes,
            mapped_by: labels,
        });
    }
    Ok(Explained {
        events,
        refusals: refusals::of_message(store, needle).await?,
    })
}

impl Explained {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.refusals.is_empty()
    }

    /// One array: each event's explanation, then each refusal as
    /// `{"refusal": …, "explanation": "refused at ingest at T: reason"}`.
    pub fn json(&self) -> Value {
        let events = self.events.iter().map(Explanation::json);
        let refused = self.refusals.iter().map(|refusal| {
            json!({"refusal": refusals::json(refusal), "explanation": refusals::sentence(refusal)})
        });
        Value::Array(events.chain(refused).collect())
    }

    pub fn text(&self) -> String {
        let mut texts: Vec<String> = self.events.iter().map(Explanation::text).collect();
        for refusal in &self.refusals {
            let id = refusal.refusal.message_id.as_deref().unwrap_or("-");
            texts.push(format!("Message {id}\n  {}\n", refusals::sentence(refusal)));
        }
        texts.join("\n")
    }
}

/// One sentence: what happened to the event on this route, and why.
pub fn route_sentence(state: &RouteState) -> String {
    let reason = state.reason.as_deref().unwrap_or("no reason recorded");
    let Some(batch) = &state.batch else {
        return match state.status {
            DeliveryStatus::Pending => {
                "pending: waiting for the next dispatch run to batch it".to_owned()
            }
            DeliveryStatus::Skipped => format!("skipped: {reason}"),
            DeliveryStatus::Failed => format!("failed, never sent: {reason}"),
            other => other.to_string(),
        };
    };
    let at = clock::format_ms(batch.updated_at);
    let error = batch.last_error.as_deref().unwrap_or("no error recorded");
    match (state.status, batch.status) {
        (DeliveryStatus::Delivered, _) => format!("delivered in batch {} at {at}", batch.id),
        (DeliveryStatus::Failed, _) => format!("failed in batch {} at {at}: {error}", batch.id),
        (_, BatchStatus::Sending) => format!("in batch {}, being sent now", batch.id),
        (_, BatchStatus::Retrying | BatchStatus::Pending) => format!(
            "in batch {}, still pending until {} (attempts so far: {}; last error: {error})",
            batch.id,
            batch
                .next_attempt_at
                .map_or("now".to_owned(), clock::format_ms),
            batch.attempts,
        ),
        (status, batch_status) => format!("{status} (batch {} is {batch_status})", batch.id),
    }
}

impl Explanation {
    pub fn json(&self) -> Value {
        let e = &self.event;
        json!({
            "event": {
                "id": e.id, "source": e.source, "protocol": e.protocol, "kind": e.kind,
                "dedupe_id": e.dedupe_key, "received_at": clock::format_ms(e.received_at),
            },
            "routes": self.routes.iter().map(|r| json!({
                "route": r.route,
                "status": r.status,
                "reason": r.reason,
                "batch_id": r.batch.as_ref().map(|b| b.id),
                "batch": r.batch.as_ref().map(batch_json),
                "explanation": route_sentence(r),
                "mapped_by": (r.route == Route::SegmentToLaunchDarkly.as_str() && !self.mapped_by.is_empty())
                    .then_some(&self.mapped_by),
            })).collect::<Vec<_>>(),
        })
    }

    pub fn text(&self) -> String {
        let e = &self.event;
        let mut out = format!(
            "Event {}  {} {} from source {}  received {}\n  dedupe id {}\n",
            e.id,
            e.protocol,
            e.kind,
            e.source,
            clock::format_ms(e.received_at),
            e.dedupe_key
        );
        for state in &self.routes {
            let _ = writeln!(out, "  {:<23}  {}", state.route, route_sentence(state));
            if state.route == Route::SegmentToLaunchDarkly.as_str() && !self.mapped_by.is_empty() {
                let _ = writeln!(
                    out,
                    "  {:<23}  mapped by {}",
                    "",
                    self.mapped_by.join(" and ")
                );
            }
        }
        if self.routes.is_empty() {
            out.push_str("  takes no route (its source had no destination when it arrived)\n");
        }
        out
    }
}

/// `ldbridge resend`: which batches, and how.
#[derive(Debug, Clone, Default)]
pub struct ResendRequest {
    /// Explicit batch ids; when empty, `filter` selects.
    pub ids: Vec<i64>,
    pub filter: BatchFilter,
    pub force: bool,
    pub dry_run: bool,
}

/// What a resend did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResendReport {
    pub matched: usize,
    pub requeued: Vec<i64>,
    pub refused: Vec<(i64, String)>,
    pub dry_run: bool,
}

/// Requeues the selected batches (see `store::maintenance::requeue`).
/// `matched == 0` means the ids or filter matched no batch.
pub async fn resend(
    store: &Store,
    request: &ResendRequest,
    now: i64,
) -> Result<ResendReport, StoreError> {
    let mut batches = Vec::new();
    if request.ids.is_empty() {
        batches = delivery_log::list_batches(store, &request.filter).await?;
    } else {
        for id in &request.ids {
            batches.extend(delivery_log::batch(store, *id).await?);
        }
    }
    let mut report = ResendReport {
        matched: batches.len(),
        dry_run: request.dry_run,
        ..ResendReport::default()
    };
    let mut chosen = Vec::new();
    for batch in &batches {
        match batch.status.resend_refusal(request.force) {
            None => chosen.push(batch.id),
            Some(reason) => report.refused.push((batch.id, reason.to_owned())),
        }
    }
    report.requeued = if request.dry_run {
        chosen
    } else {
        let from = BatchStatus::resendable(request.force);
        maintenance::requeue(store, &chosen, &from, now).await?
    };
    Ok(report)
}

impl ResendReport {
    pub fn json(&self) -> Value {
        json!({
            "matched": self.matched,
            "requeued": self.requeued,
            "refused": self.refused.iter().map(|(id, reason)| json!({"id": id, "reason": reason})).collect::<Vec<_>>(),
            "dry_run": self.dry_run,
        })
    }

    pub fn text(&self) -> String {
        let verb = if self.dry_run {
            "would requeue"
        } else {
            "requeued"
        };
        let mut out = format!(
            "{} batch(es) matched; {verb} {}",
            self.matched,
            self.requeued.len()
        );
        if !self.requeued.is_empty() {
            let ids: Vec<String> = self.requeued.iter().map(i64::to_string).collect();
            let _ = write!(out, ": {}", truncate(&ids.join(", "), 60));
        }
        out.push('\n');
        for (id, reason) in &self.refused {
            let _ = writeln!(out, "  batch {id} not requeued: {reason}");
        }
        out
    }
}

/// `ldbridge stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub deliveries: Vec<(String, DeliveryStatus, i64)>,
    pub batches: Vec<(String, BatchStatus, i64)>,
    /// Per route: age of the oldest undelivered event in ms (None: nothing waiting).
    pub oldest_undelivered_ms: Vec<(String, Option<i64>)>,
    pub attempts_last_hour: Vec<(String, String, i64)>,
    /// Recorded refusals in the last hour by (source, reason code).
    pub refusals_last_hour: Vec<(String, String, i64)>,
    /// With `--since`: what happened in that window (the overview's numbers).
    pub window: Option<window::Window>,
}

/// `ldbridge stats`: the kept counts, and with `window` (since, until in
/// ms) the flows of that window too.
pub async fn stats(
    store: &Store,
    now: i64,
    window: Option<(i64, i64)>,
) -> Result<Stats, StoreError> {
    let mut oldest = Vec::new();
    for route in Route::ALL {
        let at = delivery_log::oldest_undelivered(store, route.as_str()).await?;
        oldest.push((route.as_str().to_owned(), at.map(|at| now - at)));
    }
    Ok(Stats {
        deliveries: delivery_log::delivery_counts(store).await?,
        batches: delivery_log::batch_counts(store).await?,
        oldest_undelivered_ms: oldest,
        attempts_last_hour: delivery_log::attempts_since(store, now - 3_600_000).await?,
        refusals_last_hour: crate::store::refusals::counts_since(store, now - 3_600_000).await?,
        window: match window {
            Some((since, until)) => Some(window::window(store, since, until).await?),
            None => None,
        },
    })
}

fn counts_json<S: std::fmt::Display>(counts: &[(String, S, i64)]) -> Value {
    let mut by_route = serde_json::Map::new();
    for (route, status, count) in counts {
        let entry = by_route.entry(route.clone()).or_insert_with(|| json!({}));
        entry[status.to_string()] = json!(count);
    }
    Value::Object(by_route)
}

impl Stats {
    pub fn json(&self) -> Value {
        json!({
            "deliveries": counts_json(&self.deliveries),
            "batches": counts_json(&self.batches),
            "oldest_undelivered_age_seconds": self.oldest_undelivered_ms.iter()
                .map(|(route, ms)| (route.clone(), json!(ms.map(|ms| ms as f64 / 1000.0))))
                .collect::<serde_json::Map<_, _>>(),
            "attempts_last_hour": counts_json(&self.attempts_last_hour),
            "refusals_last_hour": counts_json(&self.refusals_last_hour),
            "window": self.window.as_ref().map(window::Window::json),
        })
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "{:<24}{:>10}{:>10}{:>11}{:>9}{:>9}  {:<14}\n",
            "ROUTE", "PENDING", "BATCHED", "DELIVERED", "FAILED", "SKIPPED", "OLDEST WAITING"
        );
        for (route, oldest) in &self.oldest_undelivered_ms {
            let count = |status: DeliveryStatus| {
                self.deliveries
                    .iter()
                    .filter(|(r, s, _)| r == route && *s == status)
                    .map(|(_, _, n)| *n)
                    .sum::<i64>()
            };
            let [pending, batched, delivered, failed, skipped] = DeliveryStatus::ALL.map(count);
            let _ = writeln!(
                out,
                "{route:<24}{pending:>10}{batched:>10}{delivered:>11}{failed:>9}{skipped:>9}  {:<14}",
                oldest.map_or("-".to_owned(), humanize_ms)
            );
        }
        out.push_str("\nAttempts in the last hour:\n");
        if self.attempts_last_hour.is_empty() {
            out.push_str("  none\n");
        }
        for (route, outcome, count) in &self.attempts_last_hour {
            let _ = writeln!(out, "  {route:<24}{outcome:<10}{count:>8}");
        }
        out.push_str("\nRefused at ingest in the last hour (ldbridge refusals):\n");
        if self.refusals_last_hour.is_empty() {
            out.push_str("  none\n");
        }
        for (source, reason, count) in &self.refusals_last_hour {
            let _ = writeln!(out, "  {source:<24}{reason:<24}{count:>8}");
        }
        if let Some(window) = &self.window {
            let (start, end, _) = crate::store::counts::span(window.since, window.until);
            let _ = writeln!(
                out,
                "\nFrom {} to {}:\n{:<24}{:>10}{:>9}{:>11}{:>9}{:>8}{:>8}",
                clock::format_ms(start),
                clock::format_ms(end),
                "ROUTE",
                "RECEIVED",
                "SKIPPED",
                "DELIVERED",
                "RETRIED",
                "FAILED",
                "RESENT"
            );
            for (route, f) in &window.routes {
                let _ = writeln!(
                    out,
                    "{:<24}{:>10}{:>9}{:>11}{:>9}{:>8}{:>8}",
                    route.as_str(),
                    f.received,
                    f.skipped,
                    f.delivered,
                    f.retried,
                    f.failed,
                    f.resent
                );
            }
        }
        out
    }
}

/// `ldbridge purge` / the retention job: purge, then tidy the file.
pub async fn purge(store: &Store, cutoff: i64) -> Result<Purged, StoreError> {
    // 200 events a transaction keeps each write lock to a few milliseconds.
    let mut purged = maintenance::purge(store, cutoff, 200).await?;
    purged.refusals = crate::store::refusals::purge(store, cutoff).await?;
    maintenance::tidy(store).await?;
    Ok(purged)
}

pub fn purged_json(purged: &Purged, cutoff: i64) -> Value {
    json!({
        "cutoff": clock::format_ms(cutoff),
        "events": purged.events,
        "batches": purged.batches,
        "attempts": purged.attempts,
        "refusals": purged.refusals,
        "max_lock_ms": purged.max_lock.as_secs_f64() * 1000.0,
        "purging_elsewhere": purged.elsewhere,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(humanize_ms(850), "850ms");
        assert_eq!(humanize_ms(4_200), "4.2s");
        assert_eq!(humanize_ms(192_000), "3m 12s");
        assert_eq!(humanize_ms(3_900_000), "1h 5m");
        assert_eq!(humanize_ms(90_000_000), "1d 1h");
        assert_eq!(humanize_ms(-5), "0ms");
    }

    #[test]
    fn route_sentences_say_what_happened() {
        use crate::domain::{BatchStatus as B, DeliveryStatus as D};
        let batch = |status: B| BatchSummary {
            id: 12,
            route: "segment-to-launchdarkly".into(),
            source: "web".into(),
            lane: String::new(),
            status,
            payload_id: "p".into(),
            event_count: 1,
            attempts: 3,
            created_at: 0,
            updated_at: 1_715_679_087_412,
            next_attempt_at: Some(1_715_679_100_000),
            last_error: Some("HTTP 503".into()),
            parent_id: None,
        };
        let state = |status: D, batch: Option<BatchSummary>, reason: Option<&str>| RouteState {
            route: "segment-to-launchdarkly".into(),
            status,
            reason: reason.map(str::to_owned),
            batch,
        };
        assert_eq!(
            route_sentence(&state(D::Delivered, Some(batch(B::Delivered)), None)),
            "delivered in batch 12 at 2024-05-14T09:31:27.412Z"
        );
        assert!(
            route_sentence(&state(D::Batched, Some(batch(B::Retrying)), None))
                .contains("still pending until 2024-05-14T09:31:40.000Z")
        );
        assert_eq!(
            route_sentence(&state(D::Skipped, None, Some("page calls…"))),
            "skipped: page calls…"
        );
        assert!(
            route_sentence(&state(D::Failed, Some(batch(B::Failed)), None)).ends_with("HTTP 503")
        );
    }
}
