//! Prometheus metrics: the metric definitions, the recording helpers the
//! other modules call, and the OpenMetrics text encoding that `GET /metrics`
//! answers with.
//!
//! Not here: the HTTP endpoint (the admin API serves [`Metrics::encode`] with
//! [`Metrics::CONTENT_TYPE`]) and reading the database. The scrape-time gauges
//! (queue depth, oldest undelivered age) are pushed in by the endpoint, which
//! asks `store` and then calls [`Metrics::clear_scrape_gauges`] and the
//! setters right before encoding.
//!
//! # Series lifetime
//!
//! Counters and histograms keep every label set they have seen until the
//! process exits, so label values must stay bounded: route and source names
//! from the config, HTTP status codes and the fixed outcome words. Never pass
//! event data. The scrape-time gauges are rebuilt on each scrape: a route or
//! status with no rows disappears instead of reporting its last value forever.
//!
//! prometheus-client leaves out a family with no series (no HELP/TYPE lines
//! either), so the per-route families appear only after their first
//! recording. Series whose absence would hide a problem are created at zero
//! in [`Metrics::new`].

use std::sync::atomic::AtomicU64;

use crate::domain::{BatchStatus, DeliveryStatus};

use prometheus_client::{
    encoding::{text, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Upper bounds of `ldbridge_attempt_duration_seconds`: a healthy
/// LaunchDarkly or Segment call takes tens of milliseconds, a slow one
/// seconds, and the top bucket sits at a typical client timeout.
const ATTEMPT_SECONDS_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of `ldbridge_batch_events`, up to the largest batch sizes the
/// destinations accept.
const BATCH_EVENTS_BUCKETS: [f64; 9] = [1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0];
/// Upper bounds of `ldbridge_writer_commit_duration_seconds`: a SQLite WAL
/// commit takes well under a millisecond unless the disk or a lock stalls it.
const COMMIT_SECONDS_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Upper bounds of `ldbridge_writer_commit_events`.
const COMMIT_EVENTS_BUCKETS: [f64; 6] = [1.0, 10.0, 100.0, 1000.0, 5000.0, 20000.0];
/// Upper bounds of `ldbridge_writer_commit_requests`: how many ingest
/// requests group commit folds into one transaction.
const COMMIT_REQUESTS_BUCKETS: [f64; 8] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    protocol: String,
    source: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    protocol: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    source: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOutcomeLabels {
    route: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A family of histograms sharing one bucket layout. The constructor is a
/// `fn` pointer so the field type can be named; a closure capturing nothing
/// coerces to it.
type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// All of ldbridge's metrics, registered once. Cheap to share
/// (`Arc<Metrics>`); every method takes `&self`.
///
/// Recording never fails and never blocks on I/O: each call is an atomic
/// update, plus a short lock the first time a label set is seen.
#[derive(Debug)]
pub struct Metrics {
    /// Holds clones of the fields below; a family clone shares its series.
    registry: Registry,
    ingest_requests: Family<IngestLabels, Counter>,
    ingest_events: Family<SourceLabels, Counter>,
    deliveries: Family<RouteOutcomeLabels, Counter>,
    attempts: Family<RouteOutcomeLabels, Counter>,
    attempt_duration: HistogramFamily,
    batch_events: HistogramFamily,
    queue_depth: Family<QueueLabels, Gauge>,
    oldest_undelivered_age: Family<RouteLabels, Gauge<f64, AtomicU64>>,
    commit_duration: Histogram,
    commit_events: Histogram,
    commit_requests: Histogram,
    commits: Family<ResultLabels, Counter>,
    ingest_refused: Family<RefusedLabels, Counter>,
    refusals_unrecorded: Family<CauseLabels, Counter>,
    telemetry: Counter,
    admin_bad_tokens: Counter,
    claims_expired: Family<RouteLabels, Counter>,
    store_free: Gauge,
    store_reserve: Gauge,
    ingest_refused_for_room: Gauge,
}

impl Metrics {
    /// The `Content-Type` to send with [`Metrics::encode`]'s text.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Registers every metric, including `ldbridge_build_info`.
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::with_prefix("ldbridge"),
            ingest_requests: Family::default(),
            ingest_events: Family::default(),
            deliveries: Family::default(),
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(|| {
                Histogram::new(ATTEMPT_SECONDS_BUCKETS)
            }),
            batch_events: Family::new_with_constructor(|| Histogram::new(BATCH_EVENTS_BUCKETS)),
            queue_depth: Family::default(),
            oldest_undelivered_age: Family::default(),
            commit_duration: Histogram::new(COMMIT_SECONDS_BUCKETS),
            commit_events: Histogram::new(COMMIT_EVENTS_BUCKETS),
            commit_requests: Histogram::new(COMMIT_REQUESTS_BUCKETS),
            commits: Family::default(),
            ingest_refused: Family::default(),
            refusals_unrecorded: Family::default(),
            telemetry: Counter::default(),
            admin_bad_tokens: Counter::default(),
            claims_expired: Family::default(),
            store_free: Gauge::default(),
            store_reserve: Gauge::default(),
            ingest_refused_for_room: Gauge::default(),
        };
        metrics.register_all()
    }

    /// Registers the fields in `self.registry`. The encoder appends the `.`
    /// to each help text, the `_total` to counters and the unit to the name.
    ///
    /// Long on purpose: one statement per family, in the order `/metrics`
    /// lists them; a catalogue reads best whole.
    fn register_all(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "ingest_requests",
            "Ingest HTTP requests answered, by protocol (segment or launchdarkly), \
             source (configured source name; \"unknown\" when authentication failed) \
             and HTTP status code",
            self.ingest_requests.clone(),
        );
        r.register(
            "ingest_events",
            "Events accepted by ingest requests, by protocol and source",
            self.ingest_events.clone(),
        );
        r.register(
            "deliveries",
            "Events whose delivery on a route settled, by outcome: delivered, \
             failed (permanently rejected or given up; resend puts them back) \
             or skipped (not sent on this route)",
            self.deliveries.clone(),
        );
        r.register(
            "attempts",
            "Outbound HTTP attempts, one per batch sent, by route and outcome: \
             delivered (2xx), retrying (retryable error, retried later), \
             failed (permanent error or gave up) or split (413, or 400 on a \
             multi-event batch; the batch was split in two)",
            self.attempts.clone(),
        );
        r.register_with_unit(
            "attempt_duration",
            "Time one outbound HTTP attempt took, from sending to the answer \
             or the error, by route",
            Unit::Seconds,
            self.attempt_duration.clone(),
        );
        r.register(
            "batch_events",
            "Events per batch in outbound HTTP attempts, by route",
            self.batch_events.clone(),
        );
        r.register(
            "queue_depth",
            "Deliveries in the database by route and status (pending, batched, \
             failed, ...), read at scrape time; a route and status with no \
             deliveries has no series",
            self.queue_depth.clone(),
        );
        r.register_with_unit(
            "oldest_undelivered_age",
            "Age of the oldest event still waiting for delivery on the route, \
             read at scrape time; 0 when nothing is waiting",
            Unit::Seconds,
            self.oldest_undelivered_age.clone(),
        );
        r.register_with_unit(
            "writer_commit_duration",
            "Time one ingest writer transaction took (group commit of one or \
             more requests), committed or not",
            Unit::Seconds,
            self.commit_duration.clone(),
        );
        r.register(
            "writer_commit_events",
            "Events written per ingest writer transaction",
            self.commit_events.clone(),
        );
        r.register(
            "writer_commit_requests",
            "Ingest requests folded into one writer transaction by group commit",
            self.commit_requests.clone(),
        );
        r.register(
            "writer_commits",
            "Ingest writer transactions by result: ok (committed) or error \
             (rolled back; its requests were not acknowledged)",
            self.commits.clone(),
        );
        r.register(
            "ingest_refused",
            "Messages and requests refused at ingest (what Segment calls failed \
             on ingest), by source (\"unknown\" when the key was not known) and \
             reason code; `ldbridge refusals` shows the recorded ones",
            self.ingest_refused.clone(),
        );
        r.register(
            "refusal_log_unrecorded",
            "Refusals counted but not written to the refusal log, by cause: \
             rate (over store.refusal_log_per_second), busy (the writer's \
             queue was full) or disk_full (room is kept for delivery); \
             evicted: recorded, then dropped as the oldest past \
             store.refusal_log_max_rows",
            self.refusals_unrecorded.clone(),
        );
        r.register(
            "analytics_telemetry",
            "analytics.js telemetry posts to /v1/m, answered 200 and not stored",
            self.telemetry.clone(),
        );
        r.register(
            "admin_bad_tokens",
            "Admin API requests and Delivery Overview logins with a wrong or \
             missing token, each answered after a pause",
            self.admin_bad_tokens.clone(),
        );
        r.register(
            "claims_expired",
            "Batches whose claim expired with no outcome recorded (a failed \
             commit, a locked database, a task that died) and were taken again \
             by a later dispatcher run, with the same payload id, by route",
            self.claims_expired.clone(),
        );
        r.register_with_unit(
            "store_free",
            "Free space on the database's file system at the last look (every \
             50 ms); ingest is refused below store.min_free_bytes",
            Unit::Bytes,
            self.store_free.clone(),
        );
        r.register_with_unit(
            "store_reserve",
            "Size of the reserve file beside the database: store.reserve_bytes \
             while it is held, 0 once released to give delivery room (or when \
             none is kept)",
            Unit::Bytes,
            self.store_reserve.clone(),
        );
        r.register(
            "ingest_refused_for_room",
            "1 while ingest answers 503 because the database's file system has \
             less than store.min_free_bytes free, else 0",
            self.ingest_refused_for_room.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register(
            "build_info",
            "Build information: always 1; the version label is the running \
             ldbridge version",
            build_info,
        );
        // Both results exist from the start so that an alert on
        // increase(...{result="error"}) sees the very first failure; a series
        // born at 1 has no earlier sample to increase from.
        for result in ["ok", "error"] {
            let _ = self.commits.get_or_create(&ResultLabels { result });
        }
        for cause in ["rate", "busy", "evicted", "disk_full"] {
            let _ = self
                .refusals_unrecorded
                .get_or_create(&CauseLabels { cause });
        }
        self
    }

    /// One ingest request answered: `source` = configured source name, or
    /// "unknown" when auth failed; `protocol` "segment" | "launchdarkly";
    /// `status` = HTTP status code; `events` = events accepted (0 when
    /// refused).
    pub fn ingest_request(&self, protocol: &str, source: &str, status: u16, events: u64) {
        self.ingest_requests
            .get_or_create(&IngestLabels {
                protocol: protocol.to_owned(),
                source: source.to_owned(),
                status,
            })
            .inc();
        // Also touched with 0 so that a source's series exists before its
        // first accepted event, for the same reason as the commit results.
        self.ingest_events
            .get_or_create(&SourceLabels {
                protocol: protocol.to_owned(),
                source: source.to_owned(),
            })
            .inc_by(events);
    }

    /// `count` messages or requests refused at ingest: `source` =
    /// configured source name, or "unknown"; `reason` = the refusal's code.
    pub fn ingest_refused(&self, source: &str, reason: &'static str, count: u64) {
        self.ingest_refused
            .get_or_create(&RefusedLabels {
                source: source.to_owned(),
                reason,
            })
            .inc_by(count);
    }

    /// Refusals left out of the refusal log: `cause` is "rate", "busy" or
    /// "evicted".
    pub fn refusals_unrecorded(&self, cause: &'static str, count: u64) {
        self.refusals_unrecorded
            .get_or_create(&CauseLabels { cause })
            .inc_by(count);
    }

    /// The store's file system: free bytes, the reserve file's size, and
    /// whether ingest is refused for lack of room.
    pub fn set_room(&self, free: u64, reserve: u64, refused: bool) {
        self.store_free.set(free.min(i64::MAX as u64) as i64);
        self.store_reserve.set(reserve.min(i64::MAX as u64) as i64);
        self.ingest_refused_for_room.set(i64::from(refused));
    }

    /// `count` batches of `route` taken again after their claim expired.
    pub fn claims_expired(&self, route: &str, count: u64) {
        self.claims_expired
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .inc_by(count);
    }

    /// One admin request or page login with a wrong or missing token.
    pub fn admin_bad_token(&self) {
        self.admin_bad_tokens.inc();
    }

    /// One analytics.js telemetry post (`/v1/m`), answered and dropped.
    pub fn telemetry(&self) {
        self.telemetry.inc();
    }

    /// Deliveries settled on a route: `outcome` is delivered, failed or
    /// skipped; `events` is how many events settled that way.
    pub fn deliveries(&self, route: &str, outcome: DeliveryStatus, events: u64) {
        self.deliveries
            .get_or_create(&route_outcome(route, outcome.as_str()))
            .inc_by(events);
    }

    /// One HTTP attempt finished: `outcome` is the batch's status after it
    /// (delivered, retrying, failed or split); `seconds` = attempt duration;
    /// `batch_events` = events in the batch.
    pub fn attempt(&self, route: &str, outcome: BatchStatus, seconds: f64, batch_events: u64) {
        self.attempts
            .get_or_create(&route_outcome(route, outcome.as_str()))
            .inc();
        let route = RouteLabels {
            route: route.to_owned(),
        };
        self.attempt_duration.get_or_create(&route).observe(seconds);
        // Precision loss above 2^53 events cannot happen for a batch.
        self.batch_events
            .get_or_create(&route)
            .observe(batch_events as f64);
    }

    /// One writer transaction: its duration and the number of events and
    /// ingest requests in it; `ok` = committed. A rolled-back transaction is
    /// still observed in the histograms: its time was spent all the same.
    pub fn commit(&self, seconds: f64, events: u64, requests: u64, ok: bool) {
        self.commit_duration.observe(seconds);
        self.commit_events.observe(events as f64);
        self.commit_requests.observe(requests as f64);
        let result = if ok { "ok" } else { "error" };
        self.commits.get_or_create(&ResultLabels { result }).inc();
    }

    /// Sets the number of deliveries on `route` in `status` (pending,
    /// batched, failed, ...), as read from the database at scrape time.
    pub fn set_queue_depth(&self, route: &str, status: DeliveryStatus, count: i64) {
        self.queue_depth
            .get_or_create(&QueueLabels {
                route: route.to_owned(),
                status: status.as_str().to_owned(),
            })
            .set(count);
    }

    /// Sets the age of the oldest undelivered event on `route`; the caller
    /// passes 0 when nothing is waiting, so a configured route keeps its
    /// series.
    pub fn set_oldest_undelivered_age(&self, route: &str, seconds: f64) {
        self.oldest_undelivered_age
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .set(seconds);
    }

    /// Removes every queue-depth and oldest-age series, so that after the
    /// following setters only what the database reported this time is
    /// exposed. A route or status not set again disappears from the output
    /// (it does not read 0): absent means zero, and a route removed from the
    /// config does not linger. With nothing set again, the two families
    /// vanish entirely, HELP/TYPE lines included.
    ///
    /// Call this, the setters and [`Metrics::encode`] as one step per
    /// scrape, serialised by the caller: a concurrent scrape that encodes in
    /// between sees some of these series missing for that one scrape.
    pub fn clear_scrape_gauges(&self) {
        self.queue_depth.clear();
        self.oldest_undelivered_age.clear();
    }

    /// The OpenMetrics text exposition of every metric, ending in `# EOF`.
    ///
    /// Encoding into a `String` cannot fail with the metric types registered
    /// here. Were it to fail anyway, the partial text is returned without
    /// its `# EOF`, so Prometheus rejects the scrape (`up` drops to 0)
    /// instead of silently storing an incomplete one.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "Metrics encoding failed; the scrape will be rejected.");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn route_outcome(route: &str, outcome: &str) -> RouteOutcomeLabels {
    RouteOutcomeLabels {
        route: route.to_owned(),
        outcome: outcome.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family the module promises, with its OpenMetrics type. Counter
    /// families are named without `_total` in HELP/TYPE; only samples carry it.
    const FAMILIES: [(&str, &str); 21] = [
        ("ldbridge_ingest_requests", "counter"),
        ("ldbridge_ingest_events", "counter"),
        ("ldbridge_deliveries", "counter"),
        ("ldbridge_attempts", "counter"),
        ("ldbridge_attempt_duration_seconds", "histogram"),
        ("ldbridge_batch_events", "histogram"),
        ("ldbridge_queue_depth", "gauge"),
        ("ldbridge_oldest_undelivered_age_seconds", "gauge"),
        ("ldbridge_writer_commit_duration_seconds", "histogram"),
        ("ldbridge_writer_commit_events", "histogram"),
        ("ldbridge_writer_commit_requests", "histogram"),
        ("ldbridge_writer_commits", "counter"),
        ("ldbridge_build_info", "gauge"),
        ("ldbridge_ingest_refused", "counter"),
        ("ldbridge_refusal_log_unrecorded", "counter"),
        ("ldbridge_analytics_telemetry", "counter"),
        ("ldbridge_admin_bad_tokens", "counter"),
        ("ldbridge_claims_expired", "counter"),
        ("ldbridge_store_free_bytes", "gauge"),
        ("ldbridge_store_reserve_bytes", "gauge"),
        ("ldbridge_ingest_refused_for_room", "gauge"),
    ];

    fn recorded() -> Metrics {
        let m = Metrics::new();
        for _ in 0..3 {
            m.ingest_request("segment", "web", 200, 5);
        }
        m.ingest_request("segment", "unknown", 401, 0);
        m.ingest_refused("web", "missing_event", 1);
        m.ingest_refused("unknown", "invalid_write_key", 1);
        m.refusals_unrecorded("rate", 4);
        m.telemetry();
        m.admin_bad_token();
        m.claims_expired("ld-main", 2);
        m.deliveries("ld-main", DeliveryStatus::Delivered, 15);
        m.attempt("ld-main", BatchStatus::Delivered, 0.2, 10);
        m.attempt("ld-main", BatchStatus::Retrying, 3.0, 5);
        m.commit(0.002, 15, 3, true);
        m.set_queue_depth("ld-main", DeliveryStatus::Pending, 4);
        m.set_oldest_undelivered_age("ld-main", 12.5);
        m
    }

    fn assert_lines(text: &str, expected: &[&str]) {
        let lines: Vec<&str> = text.lines().collect();
        for want in expected {
            assert!(lines.contains(want), "missing line {want:?} in:\n{text}");
        }
    }

    #[test]
    fn recorded_pattern_is_exposed_as_exact_samples() {
        let text = recorded().encode();
        let build = format!(
            "ldbridge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert_lines(
            &text,
            &[
                r#"ldbridge_ingest_requests_total{protocol="segment",source="web",status="200"} 3"#,
                r#"ldbridge_ingest_requests_total{protocol="segment",source="unknown",status="401"} 1"#,
                r#"ldbridge_ingest_events_total{protocol="segment",source="web"} 15"#,
                r#"ldbridge_ingest_events_total{protocol="segment",source="unknown"} 0"#,
                r#"ldbridge_ingest_refused_total{source="web",reason="missing_event"} 1"#,
                r#"ldbridge_ingest_refused_total{source="unknown",reason="invalid_write_key"} 1"#,
                r#"ldbridge_refusal_log_unrecorded_total{cause="rate"} 4"#,
                r#"ldbridge_refusal_log_unrecorded_total{cause="busy"} 0"#,
                r#"ldbridge_analytics_telemetry_total 1"#,
                r#"ldbridge_claims_expired_total{route="ld-main"} 2"#,
                r#"ldbridge_deliveries_total{route="ld-main",outcome="delivered"} 15"#,
                r#"ldbridge_attempts_total{route="ld-main",outcome="delivered"} 1"#,
                r#"ldbridge_attempts_total{route="ld-main",outcome="retrying"} 1"#,
                r#"ldbridge_attempt_duration_seconds_count{route="ld-main"} 2"#,
                r#"ldbridge_attempt_duration_seconds_sum{route="ld-main"} 3.2"#,
                r#"ldbridge_attempt_duration_seconds_bucket{le="0.1",route="ld-main"} 0"#,
                r#"ldbridge_attempt_duration_seconds_bucket{le="0.25",route="ld-main"} 1"#,
                r#"ldbridge_attempt_duration_seconds_bucket{le="5.0",route="ld-main"} 2"#,
                r#"ldbridge_batch_events_bucket{le="5.0",route="ld-main"} 1"#,
                r#"ldbridge_batch_events_bucket{le="10.0",route="ld-main"} 2"#,
                r#"ldbridge_queue_depth{route="ld-main",status="pending"} 4"#,
                r#"ldbridge_oldest_undelivered_age_seconds{route="ld-main"} 12.5"#,
                "ldbridge_writer_commit_duration_seconds_count 1",
                r#"ldbridge_writer_commit_events_bucket{le="100.0"} 1"#,
                r#"ldbridge_writer_commit_requests_sum 3.0"#,
                r#"ldbridge_writer_commits_total{result="ok"} 1"#,
                r#"ldbridge_writer_commits_total{result="error"} 0"#,
                &build,
            ],
        );
        assert!(text.ends_with("# EOF\n"), "no EOF at the end:\n{text}");
    }

    #[test]
    fn every_family_has_help_type_and_histograms_have_inf_and_count() {
        let text = recorded().encode();
        for (name, kind) in FAMILIES {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
            assert_lines(&text, &[&format!("# TYPE {name} {kind}")]);
            if kind == "histogram" {
                let has = |suffix: &str| {
                    text.lines()
                        .any(|l| l.starts_with(&format!("{name}{suffix}")))
                };
                assert!(has("_count"), "no _count for {name}");
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(&format!("{name}_bucket"))
                            && l.contains(r#"le="+Inf""#)),
                    "no +Inf bucket for {name}"
                );
            }
        }
        // A metric recorded under a name not listed above would have slipped
        // past this test; every TYPE line must be one of FAMILIES.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(types, FAMILIES.len());
    }

    #[test]
    fn cleared_scrape_gauges_drop_series_not_set_again() {
        let m = recorded();
        m.set_queue_depth("ld-main", DeliveryStatus::Failed, 2);
        m.set_queue_depth("seg-out", DeliveryStatus::Pending, 1);
        m.set_oldest_undelivered_age("seg-out", 60.0);

        m.clear_scrape_gauges();
        m.set_queue_depth("ld-main", DeliveryStatus::Pending, 3);
        m.set_oldest_undelivered_age("ld-main", 0.0);
        let text = m.encode();

        assert_lines(
            &text,
            &[
                r#"ldbridge_queue_depth{route="ld-main",status="pending"} 3"#,
                r#"ldbridge_oldest_undelivered_age_seconds{route="ld-main"} 0.0"#,
            ],
        );
        assert!(!text.contains(r#"status="failed""#), "{text}");
        assert!(!text.contains(r#"route="seg-out""#), "{text}");
    }

    #[test]
    fn cleared_scrape_gauges_with_nothing_set_leave_no_family() {
        let m = recorded();
        m.clear_scrape_gauges();
        let text = m.encode();
        assert!(!text.contains("ldbridge_queue_depth"), "{text}");
        assert!(!text.contains("ldbridge_oldest_undelivered_age"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn fresh_metrics_expose_build_info_and_writer_series() {
        let text = Metrics::new().encode();
        assert_lines(
            &text,
            &[
                r#"ldbridge_writer_commits_total{result="error"} 0"#,
                "ldbridge_writer_commit_duration_seconds_count 0",
                r#"ldbridge_writer_commit_events_bucket{le="+Inf"} 0"#,
            ],
        );
        assert!(text.contains("ldbridge_build_info{version="));
        assert!(text.ends_with("# EOF\n"));
    }

    /// Checks without a parser that each sample line is `name value` or
    /// `name{k="v",...} value`: a valid metric name, well-formed label
    /// pairs, and a number.
    #[test]
    fn every_sample_line_is_name_labels_value() {
        let m = recorded();
        m.commit(0.5, 0, 1, false);
        let text = m.encode();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                    assert!(inner.ends_with('"'), "unterminated label in {line:?}");
                    (name, Some(inner))
                }
                None => (series, None),
            };
            assert!(name.starts_with("ldbridge_"), "bad name in {line:?}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad name in {line:?}"
            );
            // Test label values hold no `",`, so splitting on it is exact.
            for pair in labels.into_iter().flat_map(|l| l.split("\",")) {
                let (key, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
                assert!(
                    !value.trim_end_matches('"').contains('"'),
                    "bad label in {line:?}"
                );
            }
        }
    }

    #[test]
    fn metrics_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }
}
