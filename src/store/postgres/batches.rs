//! The dispatcher's queries on PostgreSQL (see `store::batches`), for
//! several nodes at once: a batch is claimed by one node at a time
//! (`FOR UPDATE SKIP LOCKED`), until its claim expires.

use sqlx::{postgres::PgRow, Connection, PgConnection, Row};
use uuid::Uuid;

use super::PgStore;
use crate::domain::{BatchStatus, DeliveryStatus, Route};
use crate::store::batches::{
    Claimed, ClaimedBatch, NewBatches, Outcome, Resolution, SettledEvent, StoredEvent,
};
use crate::store::counts::{Flow, Tally};
use crate::store::StoreError;

/// Makes this node's claims (batches it left `sending`) due now; other
/// nodes' claims are theirs until they expire.
pub async fn recover_sending(pg: &PgStore, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE batches SET status = 'retrying', next_attempt_at = $1, updated_at = $1 \
         WHERE status = 'sending' AND claimed_by = $2",
    )
    .bind(now)
    .bind(pg.node())
    .execute(pg.pool())
    .await?;
    Ok(done.rows_affected())
}

pub async fn has_work(pg: &PgStore, route: Route, now: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE route = $3 AND status = 'pending') \
             OR EXISTS (SELECT 1 FROM batches WHERE route = $1 \
                        AND status IN ('pending', 'retrying', 'sending') AND next_attempt_at <= $2)",
    )
    .bind(route.as_str())
    .bind(now)
    .bind(route.code())
    .fetch_one(pg.pool())
    .await
}

const EVENT_COLUMNS: &str = "e.id, e.source, e.dedupe_key, e.kind, e.received_at, q.meta, e.body";

pub async fn pending_events(
    pg: &PgStore,
    route: Route,
    limit: usize,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
         LEFT JOIN requests q ON q.id = e.request \
         WHERE d.route = $1 AND d.status = 'pending' ORDER BY d.event_id LIMIT $2"
    )))
    .bind(route.code())
    .bind(limit as i64)
    .fetch_all(pg.pool())
    .await?;
    Ok(rows.iter().map(stored_event).collect())
}

fn stored_event(row: &PgRow) -> StoredEvent {
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

/// As `store::batches::create_batches`. First locks the pending deliveries
/// the run took (every statement on a list of events drives by the list,
/// one primary-key lookup each: filtering the route's pending index by the
/// list read all of it, 100 µs per event with 100,000 pending); when another node holds or took some of them, records only
/// `ended` and answers [`StoreError::Raced`].
pub async fn create_batches(
    pg: &PgStore,
    change: &NewBatches<'_>,
    ended: &[Outcome<'_>],
) -> Result<Vec<ClaimedBatch>, StoreError> {
    let NewBatches {
        route,
        taken,
        plans,
        settled,
        now,
        claimed_until,
    } = *change;
    if plans.is_empty() && settled.skipped.is_empty() && settled.failed.is_empty() {
        record_attempts(pg, ended, now).await?;
        return Ok(Vec::new());
    }
    let mut conn = pg.pool().acquire().await?;
    let mut tx = conn.begin().await?;
    let taken_ids: Vec<i64> = taken.iter().map(|event| event.event_id).collect();
    let locked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM UNNEST($2::int8[]) AS t (id) \
           JOIN deliveries d ON d.event_id = t.id AND d.route = $1 \
           WHERE d.status = 'pending' FOR UPDATE OF d SKIP LOCKED) AS l",
    )
    .bind(route.code())
    .bind(&taken_ids)
    .fetch_one(&mut *tx)
    .await?;
    if locked != taken_ids.len() as i64 {
        tx.rollback().await?;
        drop(conn);
        record_attempts(pg, ended, now).await?;
        return Err(StoreError::Raced);
    }
    let mut tally = crate::store::batches::received(route, taken);
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
        let batch = insert_batch(&mut tx, pg.node(), &target, now).await?;
        let batched = sqlx::query(
            "UPDATE deliveries d SET status = 'batched', batch_id = $3, reason = NULL \
             FROM UNNEST($1::int8[]) AS t (id) \
             WHERE d.event_id = t.id AND d.route = $2 AND d.status = 'pending'",
        )
        .bind(&plan.event_ids)
        .bind(route.code())
        .bind(batch.id)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        tally.moved(
            route,
            DeliveryStatus::Pending,
            DeliveryStatus::Batched,
            batched,
        );
        created.push(batch);
    }
    counts_write(&mut tx, tally).await?;
    tx.commit().await?;
    Ok(created)
}

async fn counts_write(conn: &mut PgConnection, tally: Tally) -> Result<(), sqlx::Error> {
    super::counts::write(conn, tally).await
}

async fn profile_id(conn: &mut PgConnection, definition: &str) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO profiles (definition) VALUES ($1) ON CONFLICT (definition) DO NOTHING",
    )
    .bind(definition)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar("SELECT id FROM profiles WHERE definition = $1")
        .bind(definition)
        .fetch_one(&mut *conn)
        .await
}

pub async fn profile_definition(pg: &PgStore, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT definition FROM profiles WHERE id = $1")
        .bind(id)
        .fetch_optional(pg.pool())
        .await
}

pub async fn batch_profile_definition(
    pg: &PgStore,
    batch_id: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT p.definition FROM batches b JOIN profiles p ON p.id = b.profile WHERE b.id = $1",
    )
    .bind(batch_id)
    .fetch_optional(pg.pool())
    .await
}

async fn settle(
    conn: &mut PgConnection,
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
            "UPDATE deliveries d SET status = $4, reason = $3 FROM UNNEST($1::int8[]) AS t (id) \
             WHERE d.event_id = t.id AND d.route = $2 AND d.status = 'pending'",
        )
        .bind(&event_ids)
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

struct NewBatch<'a> {
    route: Route,
    source: &'a str,
    lane: &'a str,
    event_count: usize,
    status: BatchStatus,
    parent_id: Option<i64>,
    profile: Option<i64>,
    created_at: i64,
    next_attempt_at: i64,
}

async fn insert_batch(
    conn: &mut PgConnection,
    node: &str,
    batch: &NewBatch<'_>,
    now: i64,
) -> Result<ClaimedBatch, sqlx::Error> {
    let payload_id = Uuid::new_v4().to_string();
    let claimed_by = (batch.status == BatchStatus::Sending).then_some(node);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO batches (route, source, lane, status, payload_id, event_count, created_at, \
                              updated_at, next_attempt_at, parent_id, profile, claimed_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $9, $11, $12) RETURNING id",
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
    .bind(claimed_by)
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

/// Claims up to `limit` due batches of `route` for this node: rows another
/// node has locked are skipped, and a live claim (`sending` with its expiry
/// ahead) is never due.
pub async fn claim_due(
    pg: &PgStore,
    route: Route,
    now: i64,
    claimed_until: i64,
    limit: usize,
) -> Result<Claimed, sqlx::Error> {
    let rows = sqlx::query(
        "WITH due AS ( \
           SELECT id, status FROM batches WHERE route = $1 \
             AND status IN ('pending', 'retrying', 'sending') AND next_attempt_at <= $2 \
           ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE batches b SET status = 'sending', updated_at = $2, next_attempt_at = $4, claimed_by = $5 \
         FROM due WHERE b.id = due.id \
         RETURNING b.id, b.source, b.lane, b.payload_id, COALESCE(b.retry_since, b.created_at), \
                   b.attempts, b.next_trigger, b.profile, due.status = 'sending'",
    )
    .bind(route.as_str())
    .bind(now)
    .bind(limit as i64)
    .bind(claimed_until)
    .bind(pg.node())
    .fetch_all(pg.pool())
    .await?;
    let mut claimed = Claimed::default();
    for row in rows {
        if row.get::<bool, _>(8) {
            claimed.expired.push(row.get(0));
        }
        claimed.batches.push(ClaimedBatch {
            id: row.get(0),
            route,
            source: row.get(1),
            lane: row.get(2),
            payload_id: row.get(3),
            created_at: row.get(4),
            attempts: row.get(5),
            trigger: row.get(6),
            profile: row.get(7),
        });
    }
    claimed.batches.sort_by_key(|batch| batch.id);
    claimed.expired.sort_unstable();
    Ok(claimed)
}

pub async fn batch_events(pg: &PgStore, batch_id: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
         LEFT JOIN requests q ON q.id = e.request WHERE d.batch_id = $1 ORDER BY e.id"
    )))
    .bind(batch_id)
    .fetch_all(pg.pool())
    .await?;
    Ok(rows.iter().map(stored_event).collect())
}

pub async fn record_attempts(
    pg: &PgStore,
    outcomes: &[Outcome<'_>],
    now: i64,
) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut tx = pg.pool().begin().await?;
    let mut tally = Tally::default();
    for outcome in outcomes {
        record_one(&mut tx, outcome, now, &mut tally).await?;
    }
    counts_write(&mut tx, tally).await?;
    tx.commit().await
}

/// Records one attempt and applies its resolution (as SQLite's
/// `record_one`), inside the caller's transaction.
async fn record_one(
    conn: &mut PgConnection,
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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
    let (route, source) = (Some(batch.route), batch.source.as_str());
    match resolution {
        Resolution::Delivered => {
            set_batch(conn, batch.id, BatchStatus::Delivered, None, None, now).await?;
            let n = set_deliveries(conn, batch, DeliveryStatus::Delivered, None, tally).await?;
            tally.flow(now, route, source, Flow::Delivered, "", n);
        }
        Resolution::Retrying {
            next_attempt_at,
            reason,
        } => {
            let next = Some(*next_attempt_at);
            set_batch(
                conn,
                batch.id,
                BatchStatus::Retrying,
                next,
                Some(reason),
                now,
            )
            .await?;
            let events: i64 = super::counts::batch_statuses(conn, batch.id)
                .await?
                .iter()
                .map(|(_, n)| n)
                .sum();
            tally.flow(now, route, source, Flow::Retried, "", events);
        }
        Resolution::Failed { reason } => {
            set_batch(conn, batch.id, BatchStatus::Failed, None, Some(reason), now).await?;
            let n =
                set_deliveries(conn, batch, DeliveryStatus::Failed, Some(reason), tally).await?;
            tally.flow(now, route, source, Flow::Failed, reason, n);
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
                let child = insert_batch(conn, "", &half, now).await?;
                sqlx::query(
                    "UPDATE deliveries SET batch_id = $3 WHERE batch_id = $1 AND event_id = ANY($2)",
                )
                .bind(batch.id)
                .bind(part)
                .bind(child.id)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

async fn set_batch(
    conn: &mut PgConnection,
    batch_id: i64,
    status: BatchStatus,
    next_attempt_at: Option<i64>,
    error: Option<&String>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE batches SET status = $2, next_attempt_at = $3, last_error = $4, updated_at = $5, \
                attempts = attempts + 1, next_trigger = 'scheduled', claimed_by = NULL WHERE id = $1",
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

async fn set_deliveries(
    conn: &mut PgConnection,
    batch: &ClaimedBatch,
    status: DeliveryStatus,
    reason: Option<&String>,
    tally: &mut Tally,
) -> Result<i64, sqlx::Error> {
    let before = super::counts::batch_statuses(conn, batch.id).await?;
    sqlx::query("UPDATE deliveries SET status = $2, reason = $3 WHERE batch_id = $1")
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
