//! The operator surface's reads on PostgreSQL (see `store::delivery_log`).

use sqlx::{FromRow, Postgres, QueryBuilder, Row};

use super::PgStore;
use crate::domain::{BatchStatus, DeliveryStatus, Route};
use crate::store::delivery_log::{
    AttemptSummary, BatchFilter, BatchMember, BatchSummary, CountsByStatus, EventSummary,
    RouteState, SettledDelivery,
};

const BATCH_COLUMNS: &str = "id, route, source, lane, status, payload_id, event_count, attempts, \
     created_at, updated_at, next_attempt_at, last_error, parent_id";

pub async fn list_batches(
    pg: &PgStore,
    filter: &BatchFilter,
) -> Result<Vec<BatchSummary>, sqlx::Error> {
    let mut sql =
        QueryBuilder::<Postgres>::new(format!("SELECT {BATCH_COLUMNS} FROM batches WHERE true"));
    if let Some(status) = filter.status {
        sql.push(" AND status = ").push_bind(status);
    }
    if let Some(route) = &filter.route {
        sql.push(" AND route = ").push_bind(route);
    }
    if let Some(source) = &filter.source {
        sql.push(" AND source = ").push_bind(source);
    }
    if let Some(since) = filter.since {
        sql.push(" AND created_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        sql.push(" AND created_at < ").push_bind(until);
    }
    if let Some(before) = filter.before_id {
        sql.push(" AND id < ").push_bind(before);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(filter.limit as i64);
    let rows = sql.build().fetch_all(pg.pool()).await?;
    rows.iter().map(BatchSummary::from_row).collect()
}

pub async fn delivery_counts_checked(
    pg: &PgStore,
) -> Result<(CountsByStatus, CountsByStatus), sqlx::Error> {
    let mut tx = pg.pool().begin().await?;
    // One snapshot for both reads.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let kept = super::counts::totals_on(&mut tx).await?;
    let scanned = sqlx::query_as(
        "SELECT r.name, d.status, COUNT(*) FROM deliveries d JOIN routes r ON r.id = d.route \
         GROUP BY r.name, d.status ORDER BY r.name, d.status",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((kept, scanned))
}

pub async fn event_count(pg: &PgStore) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pg.pool())
        .await
}

pub async fn batch_attempts(
    pg: &PgStore,
    batch_id: i64,
) -> Result<Vec<AttemptSummary>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT batch_id, attempt, triggered_by, started_at, duration_ms, http_status, error, \
                response, outcome \
         FROM attempts WHERE batch_id = $1 ORDER BY attempt",
    )
    .bind(batch_id)
    .fetch_all(pg.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| AttemptSummary {
            batch_id: row.get(0),
            attempt: row.get(1),
            trigger: row.get(2),
            started_at: row.get(3),
            duration_ms: row.get(4),
            http_status: row.get(5),
            error: row.get(6),
            response: row.get(7),
            outcome: row.get(8),
        })
        .collect())
}

pub async fn batch(pg: &PgStore, id: i64) -> Result<Option<BatchSummary>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pg.pool())
    .await?;
    row.as_ref().map(BatchSummary::from_row).transpose()
}

pub async fn children(pg: &PgStore, id: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM batches WHERE parent_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(pg.pool())
        .await
}

pub async fn batch_members(pg: &PgStore, batch_id: i64) -> Result<Vec<BatchMember>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT e.id, r.name, e.dedupe_key, e.kind, d.status FROM deliveries d \
         JOIN events e ON e.id = d.event_id JOIN routes r ON r.id = d.route \
         WHERE d.batch_id = $1 ORDER BY e.id",
    )
    .bind(batch_id)
    .fetch_all(pg.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(BatchMember {
                event_id: row.try_get(0)?,
                route: row.try_get(1)?,
                dedupe_key: row.try_get(2)?,
                kind: row.try_get(3)?,
                status: row.try_get(4)?,
            })
        })
        .collect()
}

/// Events by id, by their own key, or by a payload id (its events are the
/// keys `<payload id>:…`, one index range in "C" collation).
pub async fn find_events(pg: &PgStore, needle: &str) -> Result<Vec<EventSummary>, sqlx::Error> {
    let id: Option<i64> = needle.parse().ok();
    let rows = sqlx::query(
        "SELECT id, source, protocol, dedupe_key, kind, received_at FROM events WHERE id IN ( \
            SELECT id FROM events WHERE id = $1 \
            UNION SELECT id FROM events WHERE dedupe_key = $2 \
            UNION SELECT id FROM events WHERE protocol = 'launchdarkly' \
                  AND dedupe_key >= $2 || ':' AND dedupe_key < $2 || ';') \
         ORDER BY id LIMIT 1000",
    )
    .bind(id)
    .bind(needle)
    .fetch_all(pg.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| EventSummary {
            id: row.get(0),
            source: row.get(1),
            protocol: row.get(2),
            dedupe_key: row.get(3),
            kind: row.get(4),
            received_at: row.get(5),
        })
        .collect())
}

pub async fn event_routes(pg: &PgStore, event_id: i64) -> Result<Vec<RouteState>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.name AS d_route, d.status AS d_status, d.reason, b.id, b.route, b.source, b.lane, \
                b.status, b.payload_id, b.event_count, b.attempts, b.created_at, b.updated_at, \
                b.next_attempt_at, b.last_error, b.parent_id \
         FROM deliveries d JOIN routes r ON r.id = d.route LEFT JOIN batches b ON b.id = d.batch_id \
         WHERE d.event_id = $1 ORDER BY r.name",
    )
    .bind(event_id)
    .fetch_all(pg.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let batch = row
                .try_get::<Option<i64>, _>("id")?
                .map(|_| BatchSummary::from_row(row));
            Ok(RouteState {
                route: row.try_get("d_route")?,
                status: row.try_get("d_status")?,
                reason: row.try_get("reason")?,
                batch: batch.transpose()?,
            })
        })
        .collect()
}

pub async fn oldest_undelivered(pg: &PgStore, route: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT LEAST( \
           (SELECT e.received_at FROM events e WHERE e.id = (SELECT MIN(event_id) FROM deliveries \
              WHERE route = (SELECT id FROM routes WHERE name = $1) AND status = 'pending')), \
           (SELECT MIN(e.received_at) FROM batches b JOIN deliveries d ON d.batch_id = b.id \
              JOIN events e ON e.id = d.event_id \
              WHERE b.route = $1 AND b.status IN ('pending', 'sending', 'retrying')))",
    )
    .bind(route)
    .fetch_one(pg.pool())
    .await
}

pub async fn batch_counts(pg: &PgStore) -> Result<Vec<(String, BatchStatus, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT route, status, COUNT(*) FROM batches GROUP BY route, status ORDER BY route, status",
    )
    .fetch_all(pg.pool())
    .await
}

pub async fn attempts_since(
    pg: &PgStore,
    since: i64,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT b.route, a.outcome, COUNT(*) FROM attempts a JOIN batches b ON b.id = a.batch_id \
         WHERE a.started_at >= $1 GROUP BY b.route, a.outcome ORDER BY b.route, a.outcome",
    )
    .bind(since)
    .fetch_all(pg.pool())
    .await
}

pub async fn settled_in(
    pg: &PgStore,
    route: Route,
    status: DeliveryStatus,
    since: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<SettledDelivery>, sqlx::Error> {
    let after = super::maintenance::received_before(pg, since).await?;
    let through = super::maintenance::received_before(pg, until.saturating_add(1)).await?;
    let rows = sqlx::query(
        "SELECT d.event_id, e.received_at, e.kind, e.dedupe_key, d.reason \
         FROM events e JOIN deliveries d ON d.event_id = e.id \
         WHERE e.id > $6 AND e.id <= $7 AND e.received_at >= $3 AND e.received_at <= $4 \
           AND d.route = $1 AND d.status = $2 \
         ORDER BY d.event_id DESC LIMIT $5",
    )
    .bind(route.code())
    .bind(status)
    .bind(since)
    .bind(until)
    .bind(limit as i64)
    .bind(after)
    .bind(through)
    .fetch_all(pg.pool())
    .await?;
    rows.iter().map(SettledDelivery::from_row).collect()
}
