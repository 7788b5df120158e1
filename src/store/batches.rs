//! Queries of the dispatcher: finding due work, forming batches, claiming
//! them for sending, and recording each attempt's outcome.
//!
//! Every multi-step state change runs in one transaction, so a crash leaves
//! either the old state or the new one. A batch in `sending` is claimed
//! until its `next_attempt_at`: a claim that expires (its outcome was never
//! recorded) is taken again by [`claim_due`] like a due retry. Batches found
//! `sending` at start-up (the process died mid-request) are made due at once
//! by [`recover_sending`].

use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::{
    counts::{self, Flow, Tally},
    id_list, Route, Store, StoreError,
};
use crate::domain::{BatchStatus, DeliveryStatus};

/// A stored event as the dispatcher reads it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event_id: i64,
    pub source: String,
    pub dedupe_key: String,
    /// Segment message type or LaunchDarkly event kind.
    pub kind: String,
    /// When it was received (Unix ms).
    pub received_at: i64,
    /// Protocol extras of the request it came in (JSON), if any.
    pub meta: Option<String>,
    pub body: String,
}

/// A batch to create: events of one source and lane, in order.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub source: String,
    pub lane: String,
    pub event_ids: Vec<i64>,
    /// The definition of the mapping profile its events were mapped with
    /// (`dispatch::profile`); `None` for the relays.
    pub profile: Option<String>,
}

/// A batch claimed for sending.
#[derive(Debug, Clone)]
pub struct ClaimedBatch {
    pub id: i64,
    pub route: Route,
    pub source: String,
    pub lane: String,
    pub payload_id: String,
    /// Where `give_up_after` counts from: creation, or the last manual resend.
    pub created_at: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    pub trigger: String,
    /// Its mapping profile (`profiles.id`); `None` for the relays and for
    /// batches formed before profiles were stored.
    pub profile: Option<i64>,
}

/// One HTTP attempt, as recorded in `attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: i64,
    pub duration_ms: i64,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// The new state of a batch after an attempt.
#[derive(Debug, Clone)]
pub enum Resolution {
    Delivered,
    Retrying {
        next_attempt_at: i64,
        reason: String,
    },
    Failed {
        reason: String,
    },
    /// Replace the batch by one batch per part (each a list of event ids).
    Split {
        reason: String,
        parts: Vec<Vec<i64>>,
    },
}

impl Resolution {
    /// The batch's status once this is recorded; also the attempt's
    /// stored outcome.
    pub fn status(&self) -> BatchStatus {
        match self {
            Resolution::Delivered => BatchStatus::Delivered,
            Resolution::Retrying { .. } => BatchStatus::Retrying,
            Resolution::Failed { .. } => BatchStatus::Failed,
            Resolution::Split { .. } => BatchStatus::Split,
        }
    }
}

/// Makes batches left `sending` by a crash due now. Returns how many.
pub async fn recover_sending(store: &Store, now: i64) -> Result<u64, StoreError> {
    let pool = sqlite_or!(store, super::postgres::batches::recover_sending(now));
    let done = sqlx::query(
        "UPDATE batches SET status = 'retrying', next_attempt_at = ?1, updated_at = ?1 \
         WHERE status = 'sending'",
    )
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Whether `route` has anything to do at `now`: events to batch, batches
/// due, or claims expired. Reads only, so an idle tick writes nothing.
pub async fn has_work(store: &Store, route: Route, now: i64) -> Result<bool, StoreError> {
    let pool = sqlite_or!(store, super::postgres::batches::has_work(route, now));
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE route = ?3 AND status = 'pending') \
             OR EXISTS (SELECT 1 FROM batches WHERE route = ?1 \
                        AND status IN ('pending', 'retrying', 'sending') AND next_attempt_at <= ?2)",
    )
    .bind(route.as_str())
    .bind(now)
    .bind(route.code())
    .fetch_one(pool)
    .await?;
    Ok(row.get::<bool, _>(0))
}

/// Up to `limit` events waiting on `route`, oldest first. Empty when none.
pub async fn pending_events(
    store: &Store,
    route: Route,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::batches::pending_events(route, limit)
    );
    let rows = sqlx::query(concat!(
        "SELECT d.event_id, e.source, ",
        event_key!(),
        ", e.kind, e.received_at, q.meta, e.body FROM deliveries d JOIN events e ON e.id = d.event_id",
        event_request!(),
        "WHERE d.route = ?1 AND d.status = 'pending' ORDER BY d.event_id LIMIT ?2"
    ))
    .bind(route.code())
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(stored_event).collect())
}

fn stored_event(row: &sqlx::sqlite::SqliteRow) -> StoredEvent {
    StoredEvent {
        event_id: row.get(0),
        source: row.get(1),
        dedupe_key: row.get(2),
        kind: row.get(3),
        received_at: row.get(4),
        meta: row.get(5),
        body: row.get(6),
    }
}

/// Events that will never be sent on a route, with the reason.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// The route cannot carry them (`skipped`).
    pub skipped: Vec<SettledEvent>,
    /// They break the destination's rules (`failed`, e.g. over Segment's
    /// 32 KB per message).
    pub failed: Vec<SettledEvent>,
}

/// One event settled without being sent: which, whose, and why.
#[derive(Debug, Clone)]
pub struct SettledEvent {
    pub event_id: i64,
    pub source: String,
    pub reason: String,
}

/// Batches to create for one route, and events it will never send.
#[derive(Debug, Clone, Copy)]
pub struct NewBatches<'a> {
    pub route: Route,
    /// Every event the run took from `pending` (batched or settled now):
    /// each is counted `received`, in the minute it arrived.
    pub taken: &'a [StoredEvent],
    pub plans: &'a [BatchPlan],
    pub settled: &'a Settled,
    pub now: i64,
    /// The new batches are claimed until then.
    pub claimed_until: i64,
}

/// In one transaction: records `ended` attempts (as [`record_attempts`]),
/// settles the `settled` events with their reasons and creates one batch
/// per plan, already `sending` and claimed until `claimed_until` (its first
/// attempt follows at once). Returns the created batches in plan order.
/// Writes nothing, and waits for no turn, when there is nothing to write.
pub async fn create_batches(
    store: &Store,
    change: &NewBatches<'_>,
    ended: &[Outcome<'_>],
) -> Result<Vec<ClaimedBatch>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::batches::create_batches(change, ended)
    );
    let NewBatches {
        route,
        taken,
        plans,
        settled,
        now,
        claimed_until,
    } = *change;
    if plans.is_empty()
        && settled.skipped.is_empty()
        && settled.failed.is_empty()
        && ended.is_empty()
    {
        return Ok(Vec::new());
    }
    let _turn = store.write_turn().await;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut tally = received(route, taken);
    for outcome in ended {
        record_one(&mut tx, outcome, now, &mut tally).await?;
    }
    for (status, list) in [
        (DeliveryStatus::Skipped, &settled.skipped),
        (DeliveryStatus::Failed, &settled.failed),
    ] {
        settle(&mut tx, route, status, list, now, &mut tally).await?;
    }
    let mut created = Vec::with_capacity(plans.len());
    let mut profiles: Vec<(&str, i64)> = Vec::new();
    for plan in plans {
        let profile = match plan.profile.as_deref() {
            None => None,
            Some(definition) => match profiles.iter().find(|(known, _)| *known == definition) {
                Some((_, id)) => Some(*id),
                None => {
                    let id = profile_id(&mut tx, definition).await?;
                    profiles.push((definition, id));
                    Some(id)
                }
            },
        };
        let target = NewBatch {
            route,
            source: &plan.source,
            lane: &plan.lane,
            event_count: plan.event_ids.len(),
            status: BatchStatus::Sending,
            parent_id: None,
            created_at: now,
            next_attempt_at: claimed_until,
            profile,
        };
        let batch = insert_batch(&mut tx, &target, now).await?;
        let batched = assign_events(
            &mut tx,
            route,
            batch.id,
            &plan.event_ids,
            DeliveryStatus::Pending,
        )
        .await?;
        tally.moved(
            route,
            DeliveryStatus::Pending,
            DeliveryStatus::Batched,
            batched,
        );
        created.push(batch);
    }
    tally.write(&mut tx).await?;
    tx.commit().await?;
    Ok(created)
}

/// A tally counting the `taken` events `received` on `route`, in the
/// minute each arrived: one entry per minute and source, not per event (a
/// run takes thousands, from a handful of sources).
pub(crate) fn received(route: Route, taken: &[StoredEvent]) -> Tally {
    let mut received: std::collections::BTreeMap<(i64, &str), i64> = Default::default();
    for event in taken {
        *received
            .entry((counts::minute(event.received_at), event.source.as_str()))
            .or_default() += 1;
    }
    let mut tally = Tally::default();
    for ((minute, source), n) in received {
        tally.flow(minute * 60_000, Some(route), source, Flow::Received, "", n);
    }
    tally
}

/// The id of the profile `definition`, stored now if it is new.
async fn profile_id(conn: &mut SqliteConnection, definition: &str) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO profiles (definition) VALUES (?1) ON CONFLICT (definition) DO NOTHING",
    )
    .bind(definition)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar("SELECT id FROM profiles WHERE definition = ?1")
        .bind(definition)
        .fetch_one(&mut *conn)
        .await
}

/// The definition of profile `id`; `None` when there is none.
pub async fn profile_definition(store: &Store, id: i64) -> Result<Option<String>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::batches::profile_definition(id));
    Ok(
        sqlx::query_scalar("SELECT definition FROM profiles WHERE id = ?1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The definition of the mapping profile batch `batch_id` was formed
/// with; `None` when it has none (a relay's, one formed before profiles
/// were stored) or there is no such batch.
pub async fn batch_profile_definition(
    store: &Store,
    batch_id: i64,
) -> Result<Option<String>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::batches::batch_profile_definition(batch_id)
    );
    Ok(sqlx::query_scalar(
        "SELECT p.definition FROM batches b JOIN profiles p ON p.id = b.profile WHERE b.id = ?1",
    )
    .bind(batch_id)
    .fetch_optional(pool)
    .await?)
}

/// Marks pending deliveries of `route` as `status` with their reasons,
/// counted in `tally` at `now`. Reasons repeat (every page call has the
/// same one): one statement per reason and source.
async fn settle(
    conn: &mut SqliteConnection,
    route: Route,
    status: DeliveryStatus,
    list: &[SettledEvent],
    now: i64,
    tally: &mut Tally,
) -> Result<(), sqlx::Error> {
    let mut by_reason: std::collections::BTreeMap<(&str, &str), Vec<i64>> = Default::default();
    for event in list {
        by_reason
            .entry((event.reason.as_str(), event.source.as_str()))
            .or_default()
            .push(event.event_id);
    }
    let flow = match status {
        DeliveryStatus::Skipped => Flow::Skipped,
        _ => Flow::Failed,
    };
    for ((reason, source), event_ids) in by_reason {
        let settled = sqlx::query(
            "UPDATE deliveries SET status = ?4, reason = ?3 \
             WHERE route = ?2 AND status = 'pending' AND event_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(id_list(&event_ids))
        .bind(route.code())
        .bind(reason)
        .bind(status)
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
        tally.moved(route, DeliveryStatus::Pending, status, settled);
        tally.flow(now, Some(route), source, flow, reason, settled);
    }
    Ok(())
}

/// The row of a batch about to be inserted.
struct NewBatch<'a> {
    route: Route,
    source: &'a str,
    lane: &'a str,
    event_count: usize,
    status: BatchStatus,
    parent_id: Option<i64>,
    /// The mapping profile it was formed with (a split's halves keep it).
    profile: Option<i64>,
    /// The halves of a split keep their parent's age, so `give_up_after`
    /// counts from the first attempt at these events.
    created_at: i64,
    /// When it is due (pending) or its claim expires (sending).
    next_attempt_at: i64,
}

async fn insert_batch(
    conn: &mut SqliteConnection,
    batch: &NewBatch<'_>,
    now: i64,
) -> Result<ClaimedBatch, sqlx::Error> {
    let payload_id = Uuid::new_v4().to_string();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO batches (route, source, lane, status, payload_id, event_count, created_at, updated_at, \
                              next_attempt_at, parent_id, profile) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?10, ?9, ?11) RETURNING id",
    )
    .bind(batch.route.as_str())
    .bind(batch.source)
    .bind(batch.lane)
    .bind(batch.status)
    .bind(&payload_id)
    .bind(batch.event_count as i64)
    .bind(batch.created_at)
    .bind(now)
    .bind(batch.parent_id)
    .bind(batch.next_attempt_at)
    .bind(batch.profile)
    .fetch_one(&mut *conn)
    .await?;
    Ok(ClaimedBatch {
        id,
        route: batch.route,
        source: batch.source.to_owned(),
        lane: batch.lane.to_owned(),
        payload_id,
        created_at: batch.created_at,
        attempts: 0,
        trigger: "scheduled".to_owned(),
        profile: batch.profile,
    })
}

/// Points the deliveries of `event_ids` on `route` at `batch_id` (status
/// `batched`), but only those currently in `from_status` state. Returns
/// how many it moved.
async fn assign_events(
    conn: &mut SqliteConnection,
    route: Route,
    batch_id: i64,
    event_ids: &[i64],
    from_status: DeliveryStatus,
) -> Result<i64, sqlx::Error> {
    // One statement per batch: the ids travel as a JSON array.
    let moved = sqlx::query(
        "UPDATE deliveries SET status = 'batched', batch_id = ?3, reason = NULL \
         WHERE route = ?2 AND status = ?4 AND event_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(id_list(event_ids))
    .bind(route.code())
    .bind(batch_id)
    .bind(from_status)
    .execute(&mut *conn)
    .await?;
    Ok(moved.rows_affected() as i64)
}

/// Batches claimed by [`claim_due`], and which of them were taken from an
/// expired claim (their last attempt's outcome was never recorded).
#[derive(Debug, Default)]
pub struct Claimed {
    pub batches: Vec<ClaimedBatch>,
    pub expired: Vec<i64>,
}

/// Claims up to `limit` batches of `route` due at `now` (oldest due first),
/// pending and retrying ones and those whose claim has expired, by marking
/// them `sending`, claimed until `claimed_until`. Empty when none is due.
pub async fn claim_due(
    store: &Store,
    route: Route,
    now: i64,
    claimed_until: i64,
    limit: usize,
) -> Result<Claimed, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::batches::claim_due(route, now, claimed_until, limit)
    );
    let due =
        "SELECT id FROM batches WHERE route = ?1 AND status IN ('pending', 'retrying', 'sending') \
               AND next_attempt_at <= ?2 ORDER BY next_attempt_at LIMIT ?3";
    // Looked at first, outside the write turn: most runs find nothing due
    // (every batch they form is claimed already), and a transaction would
    // wait for its turn behind ingest for nothing.
    let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT EXISTS ({due})")))
        .bind(route.as_str())
        .bind(now)
        .bind(limit as i64)
        .fetch_one(pool)
        .await?;
    if !any {
        return Ok(Claimed::default());
    }
    let _turn = store.write_turn().await;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let expired: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM batches WHERE status = 'sending' AND id IN ({due}) ORDER BY id"
    )))
    .bind(route.as_str())
    .bind(now)
    .bind(limit as i64)
    .fetch_all(&mut *tx)
    .await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE batches SET status = 'sending', updated_at = ?2, next_attempt_at = ?4 \
         WHERE id IN ({due}) \
         RETURNING id, source, lane, payload_id, COALESCE(retry_since, created_at), attempts, next_trigger, \
                   profile"
    )))
    .bind(route.as_str())
    .bind(now)
    .bind(limit as i64)
    .bind(claimed_until)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut batches: Vec<ClaimedBatch> = rows
        .into_iter()
        .map(|row| ClaimedBatch {
            id: row.get(0),
            route,
            source: row.get(1),
            lane: row.get(2),
            payload_id: row.get(3),
            created_at: row.get(4),
            attempts: row.get(5),
            trigger: row.get(6),
            profile: row.get(7),
        })
        .collect();
    batches.sort_by_key(|batch| batch.id);
    Ok(Claimed { batches, expired })
}

/// The events of a batch in event order. Empty if the batch has none.
pub async fn batch_events(store: &Store, batch_id: i64) -> Result<Vec<StoredEvent>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::batches::batch_events(batch_id));
    let rows = sqlx::query(concat!(
        "SELECT e.id, e.source, ",
        event_key!(),
        ", e.kind, e.received_at, q.meta, e.body FROM deliveries d JOIN events e ON e.id = d.event_id",
        event_request!(),
        "WHERE d.batch_id = ?1 ORDER BY e.id"
    ))
    .bind(batch_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(stored_event).collect())
}

/// One attempt to record: the batch it was made for, what happened, and
/// the batch's next state.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub batch: &'a ClaimedBatch,
    pub attempt: &'a AttemptRecord,
    pub resolution: &'a Resolution,
}

/// Records attempts and applies each resolution to its batch and the
/// batch's deliveries, all in one transaction (the dispatcher records a
/// run's attempts together, most often with the next run's new batches:
/// [`create_batches`]).
pub async fn record_attempts(
    store: &Store,
    outcomes: &[Outcome<'_>],
    now: i64,
) -> Result<(), StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::batches::record_attempts(outcomes, now)
    );
    if outcomes.is_empty() {
        return Ok(());
    }
    let _turn = store.write_turn().await;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut tally = Tally::default();
    for outcome in outcomes {
        record_one(&mut tx, outcome, now, &mut tally).await?;
    }
    tally.write(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Records one attempt and applies its resolution, inside the caller's
/// transaction.
///
/// Kept whole: one attempt's statements in order, one arm per outcome.
async fn record_one(
    conn: &mut SqliteConnection,
    outcome: &Outcome<'_>,
    now: i64,
    tally: &mut Tally,
) -> Result<(), sqlx::Error> {
    let Outcome {
        batch,
        attempt,
        resolution,
    } = *outcome;
    sqlx::query(
        "INSERT INTO attempts (batch_id, attempt, triggered_by, started_at, duration_ms, http_status, \
                               error, response, outcome) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(batch.id)
    .bind(batch.attempts + 1)
    .bind(&batch.trigger)
    .bind(attempt.started_at)
    .bind(attempt.duration_ms)
    .bind(attempt.http_status.map(i64::from))
    .bind(&attempt.error)
    .bind(&attempt.response)
    .bind(resolution.status())
    .execute(&mut *conn)
    .await?;
    match resolution {
        Resolution::Delivered => {
            set_batch(conn, batch.id, BatchStatus::Delivered, None, None, now).await?;
            let settled =
                set_deliveries(conn, batch, DeliveryStatus::Delivered, None, tally).await?;
            tally.flow(
                now,
                Some(batch.route),
                &batch.source,
                Flow::Delivered,
                "",
                settled,
            );
        }
        Resolution::Retrying {
            next_attempt_at,
            reason,
        } => {
            set_batch(
                conn,
                batch.id,
                BatchStatus::Retrying,
                Some(*next_attempt_at),
                Some(reason),
                now,
            )
            .await?;
            let events: i64 = counts::batch_statuses(conn, batch.id)
                .await?
                .iter()
                .map(|(_, n)| n)
                .sum();
            tally.flow(
                now,
                Some(batch.route),
                &batch.source,
                Flow::Retried,
                "",
                events,
            );
        }
        Resolution::Failed { reason } => {
            set_batch(conn, batch.id, BatchStatus::Failed, None, Some(reason), now).await?;
            let settled =
                set_deliveries(conn, batch, DeliveryStatus::Failed, Some(reason), tally).await?;
            tally.flow(
                now,
                Some(batch.route),
                &batch.source,
                Flow::Failed,
                reason,
                settled,
            );
        }
        Resolution::Split { reason, parts } => {
            set_batch(conn, batch.id, BatchStatus::Split, None, Some(reason), now).await?;
            for part in parts {
                let half = NewBatch {
                    route: batch.route,
                    source: &batch.source,
                    lane: &batch.lane,
                    event_count: part.len(),
                    status: BatchStatus::Pending,
                    parent_id: Some(batch.id),
                    created_at: batch.created_at,
                    next_attempt_at: now,
                    profile: batch.profile,
                };
                let child = insert_batch(conn, &half, now).await?;
                move_events(conn, batch.id, child.id, part).await?;
            }
        }
    }
    Ok(())
}

async fn set_batch(
    conn: &mut SqliteConnection,
    batch_id: i64,
    status: BatchStatus,
    next_attempt_at: Option<i64>,
    error: Option<&String>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE batches SET status = ?2, next_attempt_at = ?3, last_error = ?4, updated_at = ?5, \
                attempts = attempts + 1, next_trigger = 'scheduled' WHERE id = ?1",
    )
    .bind(batch_id)
    .bind(status)
    .bind(next_attempt_at)
    .bind(error)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets every delivery of `batch` to `status`, its totals moved in
/// `tally`. Returns how many deliveries the batch has.
async fn set_deliveries(
    conn: &mut SqliteConnection,
    batch: &ClaimedBatch,
    status: DeliveryStatus,
    reason: Option<&String>,
    tally: &mut Tally,
) -> Result<i64, sqlx::Error> {
    let before = counts::batch_statuses(conn, batch.id).await?;
    sqlx::query("UPDATE deliveries SET status = ?2, reason = ?3 WHERE batch_id = ?1")
        .bind(batch.id)
        .bind(status)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    let mut events = 0;
    for (from, n) in before {
        tally.moved(batch.route, from, status, n);
        events += n;
    }
    Ok(events)
}

async fn move_events(
    conn: &mut SqliteConnection,
    from: i64,
    to: i64,
    event_ids: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET batch_id = ?3 \
         WHERE batch_id = ?1 AND event_id IN (SELECT value FROM json_each(?2))",
    )
    .bind(from)
    .bind(id_list(event_ids))
    .bind(to)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
