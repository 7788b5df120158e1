//! The dispatcher: turns stored deliveries into HTTP requests.
//!
//! [`Dispatcher::run_once`] is the whole job for one route at one moment:
//! batch what is pending (mapping each event; what a route cannot carry is
//! `skipped` with the reason), claim what is due for a retry, send up to
//! `max_in_flight` requests at once, and record every attempt. The cron job
//! ([`schedule`]), the tests and `ldbridge demo` all call the same function.
//! Runs of one route never overlap; routes never wait for each other.

pub mod batching;
pub mod schedule;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use serde_json::Value;
use tokio::{sync::Mutex, task::JoinSet};

use crate::{
    clock,
    config::{Config, ConfigHandle},
    deliver::{launchdarkly, HttpClient, Outbound, Reply},
    map::{self, Mapped},
    retry::{self, Action},
    store::{
        dispatch::{self as queries, AttemptRecord, ClaimedBatch, Resolution},
        Route, Store, StoreError,
    },
};

/// What one run did. `idle` runs wrote nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutcome {
    pub idle: bool,
    pub batches_formed: usize,
    pub events_skipped: usize,
    pub attempts: usize,
    pub delivered: usize,
    pub retrying: usize,
    pub failed: usize,
    pub split: usize,
}

impl RunOutcome {
    fn add(&mut self, other: &RunOutcome) {
        self.batches_formed += other.batches_formed;
        self.events_skipped += other.events_skipped;
        self.attempts += other.attempts;
        self.delivered += other.delivered;
        self.retrying += other.retrying;
        self.failed += other.failed;
        self.split += other.split;
    }
}

/// A batch with its request body, ready to send.
struct Job {
    batch: ClaimedBatch,
    event_ids: Vec<i64>,
    /// The request, or why it cannot be built (source no longer configured).
    request: Result<Outbound, String>,
}

/// Owns the per-route run guards and everything a run needs.
#[derive(Debug)]
pub struct Dispatcher {
    store: Store,
    http: HttpClient,
    config: ConfigHandle,
    guards: [Mutex<()>; 4],
    stopping: AtomicBool,
}

impl Dispatcher {
    pub fn new(store: Store, config: ConfigHandle) -> Arc<Dispatcher> {
        let timeout = config.get().dispatch.request_timeout;
        Arc::new(Dispatcher {
            store,
            http: HttpClient::new(timeout),
            config,
            guards: Default::default(),
            stopping: AtomicBool::new(false),
        })
    }

    fn guard(&self, route: Route) -> &Mutex<()> {
        let index = Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        &self.guards[index]
    }

    /// Asks running drains to stop after their current run.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits until no run is in progress, at most `deadline`. Returns false
    /// if a run was still going (its batches stay `sending` and are due
    /// again at the next start-up).
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let all = async {
            for route in Route::ALL {
                let _held = self.guard(route).lock().await;
            }
        };
        tokio::time::timeout(deadline, all).await.is_ok()
    }

    /// One tick: for every route not already running, drain it in the
    /// background. Returns at once.
    pub fn tick(self: &Arc<Self>) {
        for route in Route::ALL {
            let dispatcher = Arc::clone(self);
            tokio::spawn(async move {
                let Ok(_running) = dispatcher.guard(route).try_lock() else {
                    return; // the previous run of this route is still going
                };
                if let Err(error) = dispatcher.drain_locked(route).await {
                    tracing::warn!(%error, route = %route, "Dispatch run failed; will retry next tick.");
                }
            });
        }
    }

    /// Runs `route` until nothing is due (or shutdown is requested), waiting
    /// for a run already in progress first. Returns the summed outcome.
    pub async fn drain(&self, route: Route) -> Result<RunOutcome, StoreError> {
        let _running = self.guard(route).lock().await;
        self.drain_locked(route).await
    }

    async fn drain_locked(&self, route: Route) -> Result<RunOutcome, StoreError> {
        let mut total = RunOutcome {
            idle: true,
            ..RunOutcome::default()
        };
        while !self.stopping.load(Ordering::SeqCst) {
            let outcome = self.run_once(route, clock::now_ms()).await?;
            if outcome.idle {
                break;
            }
            total.idle = false;
            total.add(&outcome);
        }
        Ok(total)
    }

    /// One run of `route` at `now`: batch pending events, claim due batches,
    /// send them (at most `max_in_flight` at once) and record each attempt.
    /// An idle run (nothing pending, nothing due) does no writes.
    #[tracing::instrument(skip_all, fields(route = %route))]
    pub async fn run_once(&self, route: Route, now: i64) -> Result<RunOutcome, StoreError> {
        if !queries::has_work(&self.store, route, now).await? {
            return Ok(RunOutcome {
                idle: true,
                ..RunOutcome::default()
            });
        }
        let config = self.config.get();
        let mut outcome = RunOutcome::default();
        let mut jobs = self.form_batches(&config, route, now, &mut outcome).await?;
        let limit = config.dispatch.max_in_flight * 2;
        for batch in queries::claim_due(&self.store, route, now, limit).await? {
            jobs.push(self.reload(&config, batch, now).await?);
        }
        self.send_all(&config, jobs, &mut outcome).await?;
        Ok(outcome)
    }

    /// Maps pending events and stores them as new batches (already
    /// `sending`). Returns the jobs for the new batches.
    async fn form_batches(
        &self,
        config: &Config,
        route: Route,
        now: i64,
        outcome: &mut RunOutcome,
    ) -> Result<Vec<Job>, StoreError> {
        let limit = config.dispatch.max_batch_events * config.dispatch.max_in_flight;
        let pending = queries::pending_events(&self.store, route, limit).await?;
        let mut skipped = Vec::new();
        let mut mapped: Vec<(i64, &str, String)> = Vec::new();
        for event in &pending {
            match map_event(config, route, &event.source, &event.body, now) {
                Mapped::Send(value) => {
                    mapped.push((event.event_id, &event.source, value.to_string()))
                }
                Mapped::Skip(reason) => skipped.push((event.event_id, reason)),
            }
        }
        let sizes: Vec<(&str, usize)> = mapped
            .iter()
            .map(|(_, source, json)| (*source, json.len()))
            .collect();
        let groups = batching::plan(
            &sizes,
            config.dispatch.max_batch_events,
            config.dispatch.max_batch_bytes,
        );
        let plans: Vec<queries::BatchPlan> = groups
            .iter()
            .map(|group| queries::BatchPlan {
                source: mapped[group[0]].1.to_owned(),
                event_ids: group.iter().map(|&i| mapped[i].0).collect(),
            })
            .collect();
        let batches = queries::create_batches(&self.store, route, &plans, &skipped, now).await?;
        outcome.events_skipped += skipped.len();
        outcome.batches_formed += batches.len();
        Ok(batches
            .into_iter()
            .zip(groups)
            .map(|(batch, group)| {
                let body = batching::json_array(group.iter().map(|&i| mapped[i].2.as_str()));
                let event_ids = group.iter().map(|&i| mapped[i].0).collect();
                let request = build_request(config, &batch, Bytes::from(body));
                Job {
                    batch,
                    event_ids,
                    request,
                }
            })
            .collect())
    }

    /// Rebuilds the request of a stored batch from its events. Mapping is
    /// deterministic, so a retry sends the same body as the first attempt.
    async fn reload(
        &self,
        config: &Config,
        batch: ClaimedBatch,
        now: i64,
    ) -> Result<Job, StoreError> {
        let events = queries::batch_events(&self.store, batch.id).await?;
        let mut event_ids = Vec::with_capacity(events.len());
        let mut elements = Vec::with_capacity(events.len());
        for event in &events {
            if let Mapped::Send(value) =
                map_event(config, batch.route, &batch.source, &event.body, now)
            {
                event_ids.push(event.event_id);
                elements.push(value.to_string());
            }
        }
        let body = batching::json_array(elements.iter().map(String::as_str));
        let request = build_request(config, &batch, Bytes::from(body));
        Ok(Job {
            batch,
            event_ids,
            request,
        })
    }

    async fn send_all(
        &self,
        config: &Config,
        jobs: Vec<Job>,
        outcome: &mut RunOutcome,
    ) -> Result<(), StoreError> {
        let max_in_flight = config.dispatch.max_in_flight.max(1);
        let mut in_flight = JoinSet::new();
        let mut queue = jobs.into_iter();
        loop {
            while in_flight.len() < max_in_flight {
                let Some(job) = queue.next() else { break };
                let http = self.http.clone();
                in_flight.spawn(async move {
                    let reply = match &job.request {
                        Ok(request) => Ok(http.send(request).await),
                        Err(reason) => Err(reason.clone()),
                    };
                    (job, reply)
                });
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            let Ok((job, reply)) = joined else { continue };
            self.record(config, &job, reply, outcome).await?;
        }
        Ok(())
    }

    /// Classifies one attempt, decides the batch's next state, records both.
    async fn record(
        &self,
        config: &Config,
        job: &Job,
        reply: Result<Reply, String>,
        outcome: &mut RunOutcome,
    ) -> Result<(), StoreError> {
        let now = clock::now_ms();
        let (attempt, action) = match reply {
            Ok(reply) => {
                let action = retry::classify(&reply.answer, job.event_ids.len());
                let attempt = AttemptRecord {
                    started_at: reply.started_at,
                    duration_ms: reply.duration.as_millis() as i64,
                    http_status: reply.http_status(),
                    error: reply.error(),
                    response: reply.excerpt,
                };
                (attempt, action)
            }
            // Not sent at all (the source lost its destination): retry, so a
            // fixed config (SIGHUP / restart) picks the batch up again.
            Err(reason) => {
                let attempt = AttemptRecord {
                    started_at: now,
                    duration_ms: 0,
                    http_status: None,
                    error: Some(reason.clone()),
                    response: None,
                };
                (
                    attempt,
                    Action::Retry {
                        reason,
                        retry_after: None,
                    },
                )
            }
        };
        let resolution = resolve(config, job, action, now);
        outcome.attempts += 1;
        match &resolution {
            Resolution::Delivered => outcome.delivered += 1,
            Resolution::Retrying { .. } => outcome.retrying += 1,
            Resolution::Failed { .. } => outcome.failed += 1,
            Resolution::Split { .. } => outcome.split += 1,
        }
        log_outcome(job, &attempt, &resolution);
        queries::record_attempt(&self.store, &job.batch, &attempt, &resolution, now).await?;
        Ok(())
    }
}

/// Turns the retry policy's action into the batch's next state.
fn resolve(config: &Config, job: &Job, action: Action, now: i64) -> Resolution {
    let dispatch = &config.dispatch;
    match action {
        Action::Delivered => Resolution::Delivered,
        Action::Fail { reason } => Resolution::Failed { reason },
        Action::Split { reason } => {
            let middle = job.event_ids.len() / 2;
            let (left, right) = job.event_ids.split_at(middle);
            Resolution::Split {
                reason,
                parts: vec![left.to_vec(), right.to_vec()],
            }
        }
        Action::Retry {
            reason,
            retry_after,
        } => {
            if retry::gives_up(job.batch.created_at, now, dispatch.give_up_after) {
                let after = humantime::format_duration(dispatch.give_up_after);
                Resolution::Failed {
                    reason: format!("gave up after {after}: {reason}"),
                }
            } else {
                let attempts = (job.batch.attempts + 1).clamp(1, i64::from(u32::MAX)) as u32;
                let next_attempt_at = retry::next_attempt_at(
                    attempts,
                    now,
                    retry_after,
                    &dispatch.retry_schedule,
                    fastrand::f64(),
                );
                Resolution::Retrying {
                    next_attempt_at,
                    reason,
                }
            }
        }
    }
}

/// One line per batch outcome (never per event at INFO).
fn log_outcome(job: &Job, attempt: &AttemptRecord, resolution: &Resolution) {
    let batch = &job.batch;
    let events = job.event_ids.len();
    let status = attempt.http_status;
    match resolution {
        Resolution::Delivered => tracing::info!(
            batch_id = batch.id, route = %batch.route, source = %batch.source, events, ?status,
            duration_ms = attempt.duration_ms, "Batch delivered."
        ),
        Resolution::Retrying {
            reason,
            next_attempt_at,
        } => tracing::warn!(
            batch_id = batch.id, route = %batch.route, source = %batch.source, events, ?status,
            %reason, next_attempt_at = %clock::format_ms(*next_attempt_at), "Batch delivery failed; retry scheduled."
        ),
        Resolution::Failed { reason } => tracing::warn!(
            batch_id = batch.id, route = %batch.route, source = %batch.source, events, ?status,
            %reason, "Batch failed; `ldbridge resend` can requeue it."
        ),
        Resolution::Split { reason, .. } => tracing::info!(
            batch_id = batch.id, route = %batch.route, source = %batch.source, events, ?status,
            %reason, "Batch split in two."
        ),
    }
}

/// Maps one stored event for `route`. Events whose JSON no longer parses
/// (never expected: ingest stored it) are skipped with the reason.
fn map_event(config: &Config, route: Route, source: &str, body: &str, now: i64) -> Mapped {
    let value: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(error) => return Mapped::Skip(format!("stored event is not valid JSON: {error}")),
    };
    match route {
        Route::SegmentToLaunchDarkly => map::segment_to_ld::map(&value, now),
        _ => {
            let _ = (config, source);
            Mapped::Skip(format!("route {route} is not available in this version"))
        }
    }
}

/// Builds the HTTP request of a batch from the current config. Fails (and
/// the batch retries) when its source or destination is no longer configured.
fn build_request(config: &Config, batch: &ClaimedBatch, body: Bytes) -> Result<Outbound, String> {
    match batch.route {
        Route::SegmentToLaunchDarkly => {
            let source = config
                .segment_sources
                .iter()
                .find(|source| source.name == batch.source)
                .ok_or_else(|| {
                    format!("segment source `{}` is no longer configured", batch.source)
                })?;
            let destination = source.to_launchdarkly.as_ref().ok_or_else(|| {
                format!(
                    "segment source `{}` has no to_launchdarkly destination",
                    batch.source
                )
            })?;
            let credential = match (&destination.client_side_id, &destination.sdk_key) {
                (Some(id), _) => launchdarkly::Credential::ClientSideId(id),
                (None, Some(key)) => launchdarkly::Credential::SdkKey(key.expose()),
                (None, None) => {
                    return Err(format!(
                        "segment source `{}` has no LaunchDarkly credential",
                        batch.source
                    ))
                }
            };
            launchdarkly::bulk_request(
                &config.launchdarkly.events_url,
                credential,
                "4",
                &batch.payload_id,
                body,
            )
        }
        route => Err(format!("route {route} is not available in this version")),
    }
}
