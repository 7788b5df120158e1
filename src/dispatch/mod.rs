//! The dispatcher: turns stored deliveries into HTTP requests.
//!
//! [`Dispatcher::run_once`] is the whole job for one route at one moment:
//! batch what is pending (mapping each event; what a route cannot carry is
//! `skipped` with the reason), claim what is due for a retry, send up to
//! `max_in_flight` requests at once, and record every attempt. The cron job
//! ([`schedule`]), the tests and `ldbridge demo` all call the same function.
//! Runs of one route never overlap; routes never wait for each other.

pub mod batching;
pub mod prepare;
pub mod profile;
pub mod schedule;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::Mutex, task::JoinSet};

use self::{prepare::Prepared, profile::Profile};
use crate::{
    clock::{self, Clock},
    config::{Config, ConfigHandle},
    deliver::{HttpClient, Reply},
    domain::DeliveryStatus,
    domain::Route,
    metrics::Metrics,
    retry::{self, Action},
    store::{
        batches::{self, AttemptRecord, ClaimedBatch, Outcome, Resolution, Settled},
        Store, StoreError,
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

/// An attempt that ended and is not recorded yet: recorded with the next
/// run's new batches (one write turn for both), or when the drain ends.
type Ended = (ClaimedBatch, AttemptRecord, Resolution);

/// A batch with what it sends, ready for an attempt.
struct Job {
    batch: ClaimedBatch,
    event_ids: Vec<i64>,
    /// The prepared (serialised) event of each id, same order.
    elements: Vec<String>,
    /// Request metadata shared by the batch's events (one lane).
    meta: Option<String>,
}

/// Owns the per-route run guards and everything a run needs.
#[derive(Debug)]
pub struct Dispatcher {
    store: Store,
    http: HttpClient,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    guards: [Mutex<()>; 4],
    stopping: AtomicBool,
    /// Delivery's only clock: runs, sends, `Retry-After`, outcomes.
    clock: Clock,
    /// When the dispatcher was created and when the scheduler last ticked
    /// (Unix ms): readiness checks that ticks keep coming.
    started_at: i64,
    last_tick: AtomicI64,
    /// Stored mapping profiles read so far, by id (ids are never reused).
    profiles: std::sync::Mutex<HashMap<i64, Arc<Profile>>>,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        config: ConfigHandle,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store,
            http: HttpClient::new().with_clock(clock.clone()),
            config,
            metrics,
            guards: Default::default(),
            stopping: AtomicBool::new(false),
            clock,
            started_at: clock::now_ms(),
            last_tick: AtomicI64::new(0),
            profiles: Default::default(),
        })
    }

    fn guard(&self, route: Route) -> &Mutex<()> {
        let index = Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        &self.guards[index]
    }

    /// Milliseconds since the last scheduler tick (since start before the
    /// first one).
    pub fn since_last_tick(&self, now: i64) -> i64 {
        let last = self.last_tick.load(Ordering::SeqCst);
        now - if last == 0 { self.started_at } else { last }
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
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
        self.last_tick.store(clock::now_ms(), Ordering::SeqCst);
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

    /// Runs until idle. Each run's attempts are recorded in the same
    /// transaction as the next run's new batches: under heavy ingest every
    /// write transaction first waits for a group commit, and a run then
    /// costs one wait instead of two or three.
    async fn drain_locked(&self, route: Route) -> Result<RunOutcome, StoreError> {
        let mut total = RunOutcome {
            idle: true,
            ..RunOutcome::default()
        };
        let mut ended = Vec::new();
        while !self.stopping.load(Ordering::SeqCst) {
            let (outcome, left) = self.run(route, self.clock.now_ms(), ended).await?;
            ended = left;
            if outcome.idle {
                break;
            }
            total.idle = false;
            total.add(&outcome);
        }
        self.record(ended).await?;
        Ok(total)
    }

    /// One run of `route` at `now`: batch pending events, claim due batches,
    /// send them (at most `max_in_flight` at once) and record each attempt.
    /// An idle run (nothing pending, nothing due) does no writes.
    #[tracing::instrument(skip_all, fields(route = %route))]
    pub async fn run_once(&self, route: Route, now: i64) -> Result<RunOutcome, StoreError> {
        let (outcome, ended) = self.run(route, now, Vec::new()).await?;
        self.record(ended).await?;
        Ok(outcome)
    }

    /// Records attempts that ended, in one transaction.
    async fn record(&self, ended: Vec<Ended>) -> Result<(), StoreError> {
        let outcomes = outcomes(&ended);
        batches::record_attempts(&self.store, &outcomes, self.clock.now_ms()).await
    }

    /// A run, recording `ended` (the previous run's attempts) with the
    /// batches it forms. Returns its outcome and its own attempts, not yet
    /// recorded.
    async fn run(
        &self,
        route: Route,
        now: i64,
        ended: Vec<Ended>,
    ) -> Result<(RunOutcome, Vec<Ended>), StoreError> {
        if !batches::has_work(&self.store, route, now).await? {
            let idle = RunOutcome {
                idle: true,
                ..RunOutcome::default()
            };
            return Ok((idle, ended));
        }
        let config = self.config.get();
        let mut outcome = RunOutcome::default();
        // Every batch this run sends is claimed until then: if its outcome
        // is never recorded (a failed commit, a dropped task), a later run
        // takes it again, with the same payload id.
        let claimed_until = now + config.dispatch.claim_timeout().as_millis() as i64;
        let mut jobs = self
            .form_batches(&config, route, now, claimed_until, ended, &mut outcome)
            .await?;
        let limit = config.dispatch.max_in_flight * 2;
        let claimed = batches::claim_due(&self.store, route, now, claimed_until, limit).await?;
        if !claimed.expired.is_empty() {
            tracing::warn!(
                route = %route, batches = ?claimed.expired,
                "Claims expired with no outcome recorded; sending those batches again."
            );
            self.metrics
                .claims_expired(route.as_str(), claimed.expired.len() as u64);
        }
        for batch in claimed.batches {
            jobs.push(self.reload(&config, batch).await?);
        }
        if jobs.is_empty() && outcome.events_skipped == 0 {
            // Nothing formed, settled or claimed (another writer took it
            // between the look and the claim): idle, so `drain` stops.
            outcome.idle = true;
            return Ok((outcome, Vec::new()));
        }
        let ended = self.send_all(&config, jobs, &mut outcome).await;
        Ok((outcome, ended))
    }

    /// Prepares pending events and stores them as new batches (already
    /// `sending`), settling what will never be sent, in one transaction
    /// with the attempts in `ended`. Returns the jobs for the new batches.
    ///
    /// Long on purpose: prepare, settle, plan and store read as one step of
    /// a run; the dispatcher's rework (issue 16) reshapes it.
    async fn form_batches(
        &self,
        config: &Config,
        route: Route,
        now: i64,
        claimed_until: i64,
        ended: Vec<Ended>,
        outcome: &mut RunOutcome,
    ) -> Result<Vec<Job>, StoreError> {
        let limit = config.dispatch.max_batch_events * config.dispatch.max_in_flight;
        let pending = batches::pending_events(&self.store, route, limit).await?;
        let mut settled = Settled::default();
        // Each source's profile, from the config of this run.
        let mut profiles: HashMap<&str, (Profile, Option<String>)> = HashMap::new();
        // (event, lane, alone, json) of everything to send.
        let mut sendable = Vec::new();
        for event in &pending {
            let (profile, _) = profiles.entry(event.source.as_str()).or_insert_with(|| {
                let profile = Profile::of(config, route, &event.source);
                let definition = (profile != Profile::Unchanged).then(|| profile.definition());
                (profile, definition)
            });
            match prepare::prepare(config, route, event, profile) {
                Prepared::Send { lane, alone, json } => sendable.push((event, lane, alone, json)),
                Prepared::Skip(reason) => settled.skipped.push(settled_event(event, reason)),
                Prepared::Fail(reason) => settled.failed.push(settled_event(event, reason)),
            }
        }
        let items: Vec<((&str, &str), usize, bool)> = sendable
            .iter()
            .map(|(event, lane, alone, json)| {
                ((event.source.as_str(), lane.as_str()), json.len(), *alone)
            })
            .collect();
        let (max_events, max_bytes) = prepare::limits(config, route);
        let groups = batching::plan(&items, max_events, max_bytes);
        let plans: Vec<batches::BatchPlan> = groups
            .iter()
            .map(|group| {
                let source = &sendable[group[0]].0.source;
                batches::BatchPlan {
                    source: source.clone(),
                    lane: sendable[group[0]].1.clone(),
                    event_ids: group.iter().map(|&i| sendable[i].0.event_id).collect(),
                    profile: profiles
                        .get(source.as_str())
                        .and_then(|(_, definition)| definition.clone()),
                }
            })
            .collect();
        let change = batches::NewBatches {
            route,
            taken: &pending,
            plans: &plans,
            settled: &settled,
            now,
            claimed_until,
        };
        let batches = match batches::create_batches(&self.store, &change, &outcomes(&ended)).await {
            Ok(batches) => batches,
            // Another node (PostgreSQL) took some of these events first;
            // `ended` is recorded. The next run takes what is left.
            Err(StoreError::Raced) => {
                tracing::debug!(route = %route, "Another node formed batches from these events first.");
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        outcome.events_skipped += settled.skipped.len() + settled.failed.len();
        self.metrics.deliveries(
            route.as_str(),
            DeliveryStatus::Skipped,
            settled.skipped.len() as u64,
        );
        self.metrics.deliveries(
            route.as_str(),
            DeliveryStatus::Failed,
            settled.failed.len() as u64,
        );
        outcome.batches_formed += batches.len();
        // Each prepared event is in exactly one group: moved, not copied.
        let mut jsons: Vec<String> = sendable
            .iter_mut()
            .map(|(_, _, _, json)| std::mem::take(json))
            .collect();
        Ok(batches
            .into_iter()
            .zip(groups)
            .map(|(batch, group)| Job {
                batch,
                event_ids: group.iter().map(|&i| sendable[i].0.event_id).collect(),
                elements: group
                    .iter()
                    .map(|&i| std::mem::take(&mut jsons[i]))
                    .collect(),
                meta: sendable[group[0]].0.meta.clone(),
            })
            .collect())
    }

    /// Prepares a stored batch again from its events, with the profile it
    /// was formed with. Preparation is deterministic, so a retry or a
    /// resend sends the same bytes as the first attempt.
    async fn reload(&self, config: &Config, batch: ClaimedBatch) -> Result<Job, StoreError> {
        let events = batches::batch_events(&self.store, batch.id).await?;
        let meta = events.first().and_then(|event| event.meta.clone());
        let profile = self.batch_profile(config, &batch).await?;
        let mut event_ids = Vec::with_capacity(events.len());
        let mut elements = Vec::with_capacity(events.len());
        for event in &events {
            if let Prepared::Send { json, .. } =
                prepare::prepare_again(batch.route, event, &profile)
            {
                event_ids.push(event.event_id);
                elements.push(json);
            }
        }
        Ok(Job {
            batch,
            event_ids,
            elements,
            meta,
        })
    }

    /// The profile `batch` was formed with (read once per profile); the
    /// current config's for a batch formed before profiles were stored.
    async fn batch_profile(
        &self,
        config: &Config,
        batch: &ClaimedBatch,
    ) -> Result<Arc<Profile>, StoreError> {
        let Some(id) = batch.profile else {
            return Ok(Arc::new(Profile::of(config, batch.route, &batch.source)));
        };
        if let Some(profile) = self.profiles.lock().expect("not poisoned").get(&id) {
            return Ok(Arc::clone(profile));
        }
        let definition = batches::profile_definition(&self.store, id).await?;
        let profile = match definition.map(|text| Profile::from_definition(batch.route, &text)) {
            Some(Ok(profile)) => profile,
            unreadable => {
                let problem = match unreadable {
                    Some(Err(error)) => error,
                    _ => "missing".to_owned(),
                };
                tracing::warn!(
                    batch_id = batch.id, route = %batch.route, profile = id, %problem,
                    "The batch's stored mapping profile cannot be read; mapping with the current config."
                );
                return Ok(Arc::new(Profile::of(config, batch.route, &batch.source)));
            }
        };
        let profile = Arc::new(profile);
        self.profiles
            .lock()
            .expect("not poisoned")
            .insert(id, Arc::clone(&profile));
        Ok(profile)
    }

    /// Sends `jobs`, at most `max_in_flight` at once; returns every
    /// attempt's outcome, for the caller to record.
    async fn send_all(
        &self,
        config: &Arc<Config>,
        jobs: Vec<Job>,
        outcome: &mut RunOutcome,
    ) -> Vec<Ended> {
        let mut ended = Vec::with_capacity(jobs.len());
        let max_in_flight = config.dispatch.max_in_flight.max(1);
        let mut in_flight = JoinSet::new();
        let mut queue = jobs.into_iter();
        loop {
            while in_flight.len() < max_in_flight {
                let Some(job) = queue.next() else { break };
                let (http, config) = (self.http.clone(), Arc::clone(config));
                let span = attempt_span(&job.batch);
                let sent_at = self.clock.now_ms();
                in_flight.spawn(tracing::Instrument::instrument(
                    async move {
                        // Built at send time: Segment's sentAt is now.
                        let request = prepare::request(
                            &config,
                            &job.batch,
                            job.meta.as_deref(),
                            &job.elements,
                            sent_at,
                        );
                        let reply = match request {
                            Ok(request) => {
                                Ok(http.send(&request, config.dispatch.request_timeout).await)
                            }
                            Err(reason) => Err(reason),
                        };
                        (job, reply)
                    },
                    span,
                ));
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            if let Ok((job, reply)) = joined {
                let (attempt, resolution) = self.settle(config, &job, reply, outcome);
                ended.push((job.batch, attempt, resolution));
            }
        }
        ended
    }

    /// Classifies one attempt and decides the batch's next state: counted,
    /// logged and measured here, recorded by the caller.
    ///
    /// Long on purpose: classify, resolve, count and log one attempt in the
    /// order a reader follows an outcome.
    fn settle(
        &self,
        config: &Config,
        job: &Job,
        reply: Result<Reply, prepare::NotSent>,
        outcome: &mut RunOutcome,
    ) -> (AttemptRecord, Resolution) {
        let _span = attempt_span(&job.batch).entered();
        let now = self.clock.now_ms();
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
            Err(not_sent) => {
                let reason = not_sent.to_string();
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
        let (route, events) = (job.batch.route.as_str(), job.event_ids.len() as u64);
        let seconds = attempt.duration_ms as f64 / 1000.0;
        let settled = match &resolution {
            Resolution::Delivered => Some(DeliveryStatus::Delivered),
            Resolution::Failed { .. } => Some(DeliveryStatus::Failed),
            Resolution::Retrying { .. } | Resolution::Split { .. } => None,
        };
        self.metrics
            .attempt(route, resolution.status(), seconds, events);
        if let Some(outcome) = settled {
            self.metrics.deliveries(route, outcome, events);
        }
        (attempt, resolution)
    }
}

fn settled_event(event: &batches::StoredEvent, reason: String) -> batches::SettledEvent {
    batches::SettledEvent {
        event_id: event.event_id,
        source: event.source.clone(),
        reason,
    }
}

/// The store's view of attempts that ended.
fn outcomes(ended: &[Ended]) -> Vec<Outcome<'_>> {
    ended
        .iter()
        .map(|(batch, attempt, resolution)| Outcome {
            batch,
            attempt,
            resolution,
        })
        .collect()
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

/// The span of one batch's attempt: everything logged while sending and
/// recording it carries the batch id and route.
fn attempt_span(batch: &ClaimedBatch) -> tracing::Span {
    tracing::info_span!("attempt", batch_id = batch.id, route = %batch.route, source = %batch.source)
}

/// One line per batch outcome (never per event at INFO).
fn log_outcome(job: &Job, attempt: &AttemptRecord, resolution: &Resolution) {
    let batch = &job.batch;
    let events = job.event_ids.len();
    let status = attempt
        .http_status
        .map_or("-".to_owned(), |code| code.to_string());
    match resolution {
        Resolution::Delivered => tracing::info!(
            batch_id = batch.id, route = %batch.route, source = %batch.source, events, %status,
            duration_ms = attempt.duration_ms, "Batch delivered."
        ),
        Resolution::Retrying {
            reason,
            next_attempt_at,
        } => tracing::warn!(
            batch_id = batch.id, route = %batch.route, source = %batch.source, events, %status,
            %reason, next_attempt_at = %clock::format_ms(*next_attempt_at), "Batch delivery failed; retry scheduled."
        ),
        Resolution::Failed { reason } => tracing::warn!(
            batch_id = batch.id, route = %batch.route, source = %batch.source, events, %status,
            %reason, "Batch failed; `ldbridge resend` can requeue it."
        ),
        Resolution::Split { reason, .. } => tracing::info!(
            batch_id = batch.id, route = %batch.route, source = %batch.source, events, %status,
            %reason, "Batch split in two."
        ),
    }
}
