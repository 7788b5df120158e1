//! Queries of the operator surface: the delivery log.
//!
//! Read-only and short: each is one statement, so the CLI can run while the
//! daemon writes (WAL readers never block the writer).

use sqlx::{AssertSqlSafe, FromRow, Row};

use super::{Store, StoreError};
use crate::domain::{BatchStatus, DeliveryStatus, Route};

/// The columns a [`BatchSummary`] is read from, in one place for every
/// batch query.
macro_rules! batch_columns {
    () => {
        "id, route, source, lane, status, payload_id, event_count, attempts, created_at, updated_at, \
         next_attempt_at, last_error, parent_id"
    };
}

/// One batch as the delivery log shows it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BatchSummary {
    pub id: i64,
    pub route: String,
    pub source: String,
    /// Destination lane within the route (relay only; empty otherwise).
    pub lane: String,
    pub status: BatchStatus,
    pub payload_id: String,
    pub event_count: i64,
    pub attempts: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub parent_id: Option<i64>,
}

/// Which batches `list_batches` returns. `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct BatchFilter {
    pub status: Option<BatchStatus>,
    pub route: Option<String>,
    pub source: Option<String>,
    /// Created at or after (Unix ms).
    pub since: Option<i64>,
    /// Created before (Unix ms).
    pub until: Option<i64>,
    /// Only batches with an id below this one (keyset pagination).
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// Batches matching `filter`, newest first, at most `filter.limit`. Empty
/// when nothing matches.
pub async fn list_batches(
    store: &Store,
    filter: &BatchFilter,
) -> Result<Vec<BatchSummary>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::delivery_log::list_batches(filter));
    // Only fixed fragments go into the SQL text; every value is bound.
    let mut sql = String::from(concat!(
        "SELECT ",
        batch_columns!(),
        " FROM batches WHERE 1 = 1"
    ));
    let conditions = [
        (filter.status.is_some(), " AND status = ?1"),
        (filter.route.is_some(), " AND route = ?2"),
        (filter.source.is_some(), " AND source = ?3"),
        (filter.since.is_some(), " AND created_at >= ?4"),
        (filter.until.is_some(), " AND created_at < ?5"),
        (filter.before_id.is_some(), " AND id < ?6"),
    ];
    for (present, fragment) in conditions {
        if present {
            sql.push_str(fragment);
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?7");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(filter.status)
        .bind(&filter.route)
        .bind(&filter.source)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.before_id)
        .bind(filter.limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(BatchSummary::from_row)
        .collect::<Result<_, _>>()?)
}

/// Deliveries by route and status, for `stats`, `/metrics` and tests:
/// the counts kept with every change (`store::counts`), a few rows
/// whatever the history.
pub async fn delivery_counts(
    store: &Store,
) -> Result<Vec<(String, DeliveryStatus, i64)>, StoreError> {
    super::counts::totals(store).await
}

/// The kept counts and the same counted over every delivery (a scan), read
/// in one transaction (one snapshot, whatever is being written): they must
/// always be equal. For tests.
pub async fn delivery_counts_checked(
    store: &Store,
) -> Result<(CountsByStatus, CountsByStatus), StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::delivery_log::delivery_counts_checked()
    );
    let mut tx = pool.begin().await?;
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

/// (route, status, count) rows.
pub type CountsByStatus = Vec<(String, DeliveryStatus, i64)>;

/// Number of stored events.
pub async fn event_count(store: &Store) -> Result<i64, StoreError> {
    let pool = sqlite_or!(store, super::postgres::delivery_log::event_count());
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await?)
}

/// One stored attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSummary {
    pub batch_id: i64,
    pub attempt: i64,
    pub trigger: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub response: Option<String>,
    pub outcome: String,
}

/// Every attempt of a batch, in order. Empty for an unknown batch.
pub async fn batch_attempts(
    store: &Store,
    batch_id: i64,
) -> Result<Vec<AttemptSummary>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::delivery_log::batch_attempts(batch_id)
    );
    let rows = sqlx::query(
        "SELECT batch_id, attempt, triggered_by, started_at, duration_ms, http_status, error, response, outcome \
         FROM attempts WHERE batch_id = ?1 ORDER BY attempt",
    )
    .bind(batch_id)
    .fetch_all(pool)
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

/// One batch by id; `None` when there is no such batch.
pub async fn batch(store: &Store, id: i64) -> Result<Option<BatchSummary>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::delivery_log::batch(id));
    let row = sqlx::query(concat!(
        "SELECT ",
        batch_columns!(),
        " FROM batches WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(BatchSummary::from_row).transpose()?)
}

/// The halves a split batch was replaced by. Empty for other batches.
pub async fn children(store: &Store, id: i64) -> Result<Vec<i64>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::delivery_log::children(id));
    Ok(
        sqlx::query_scalar("SELECT id FROM batches WHERE parent_id = ?1 ORDER BY id")
            .bind(id)
            .fetch_all(pool)
            .await?,
    )
}

/// One event of a batch, as `show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMember {
    pub event_id: i64,
    pub route: String,
    pub dedupe_key: String,
    pub kind: String,
    pub status: DeliveryStatus,
}

/// The events a batch carries, in order. Empty for an unknown batch or a
/// split one (its events moved to the halves).
pub async fn batch_members(store: &Store, batch_id: i64) -> Result<Vec<BatchMember>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::delivery_log::batch_members(batch_id)
    );
    let rows = sqlx::query(concat!(
        "SELECT e.id, r.name, ",
        event_key!(),
        ", e.kind, d.status FROM deliveries d JOIN events e ON e.id = d.event_id \
         JOIN routes r ON r.id = d.route",
        event_request!(),
        "WHERE d.batch_id = ?1 ORDER BY e.id"
    ))
    .bind(batch_id)
    .fetch_all(pool)
    .await?;
    let member = |row: &sqlx::sqlite::SqliteRow| -> Result<_, sqlx::Error> {
        Ok(BatchMember {
            event_id: row.try_get(0)?,
            route: row.try_get(1)?,
            dedupe_key: row.try_get(2)?,
            kind: row.try_get(3)?,
            status: row.try_get(4)?,
        })
    };
    Ok(rows.iter().map(member).collect::<Result<_, _>>()?)
}

/// A stored event, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub id: i64,
    pub source: String,
    pub protocol: String,
    pub dedupe_key: String,
    pub kind: String,
    pub received_at: i64,
}

/// Events matching `needle`: an event id, a Segment messageId, or a
/// LaunchDarkly payload id (all events of that payload). At most 1,000;
/// empty when nothing matches.
pub async fn find_events(store: &Store, needle: &str) -> Result<Vec<EventSummary>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::delivery_log::find_events(needle));
    let id: Option<i64> = needle.parse().ok();
    // "<payload id>:<index>": one event of a payload.
    let (payload, index) = match needle.rsplit_once(':') {
        Some((payload, index)) => (Some(payload), index.parse::<i64>().ok()),
        None => (None, None),
    };
    // Each arm is one index lookup: the event id; an event's own key (a
    // Segment messageId: its hash in the dedupe key file); a LaunchDarkly
    // key stored as text (those stored before migration 0004, whose payload
    // is the prefix range `needle:` … `needle;`); a payload's events (its
    // request's id range); one event of a payload.
    let rows = sqlx::query(concat!(
        "SELECT e.id, e.source, e.protocol, ",
        event_key!(),
        ", e.kind, e.received_at FROM events e",
        event_request!(),
        "WHERE e.id IN ( \
            SELECT id FROM events WHERE id = ?1 \
            UNION SELECT x.id FROM keys.dedupe k JOIN events x ON x.id = k.event_id \
                  WHERE k.h = ?5 AND x.dedupe_key = ?2 \
            UNION SELECT id FROM events WHERE protocol = 'launchdarkly' \
                  AND dedupe_key >= ?2 || ':' AND dedupe_key < ?2 || ';' \
            UNION SELECT p.id FROM requests r JOIN events p ON p.id >= r.first_event \
                  AND p.id < r.first_event + r.event_count AND p.request = r.id WHERE r.payload_id = ?2 \
            UNION SELECT p.id FROM requests r JOIN events p ON p.id = r.first_event + ?4 \
                  AND p.request = r.id WHERE r.payload_id = ?3) \
         ORDER BY e.id LIMIT 1000"
    ))
    .bind(id)
    .bind(needle)
    .bind(payload)
    .bind(index)
    .bind(super::keys::hash(needle))
    .fetch_all(pool)
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

/// Where an event stands on one route, with its batch if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub route: String,
    pub status: DeliveryStatus,
    pub reason: Option<String>,
    pub batch: Option<BatchSummary>,
}

/// The event's delivery on every route it takes, by route name. Empty when
/// it takes none.
pub async fn event_routes(store: &Store, event_id: i64) -> Result<Vec<RouteState>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::delivery_log::event_routes(event_id));
    let rows = sqlx::query(
        "SELECT r.name AS d_route, d.status AS d_status, d.reason, b.id, b.route, b.source, b.lane, b.status, \
                b.payload_id, b.event_count, b.attempts, b.created_at, b.updated_at, b.next_attempt_at, \
                b.last_error, b.parent_id \
         FROM deliveries d JOIN routes r ON r.id = d.route LEFT JOIN batches b ON b.id = d.batch_id \
         WHERE d.event_id = ?1 ORDER BY r.name",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let state = |row: &sqlx::sqlite::SqliteRow| -> Result<_, sqlx::Error> {
        let batch = row
            .try_get::<Option<i64>, _>("id")?
            .map(|_| BatchSummary::from_row(row));
        Ok(RouteState {
            route: row.try_get("d_route")?,
            status: row.try_get("d_status")?,
            reason: row.try_get("reason")?,
            batch: batch.transpose()?,
        })
    };
    Ok(rows.iter().map(state).collect::<Result<_, _>>()?)
}

/// Open deliveries (not yet settled) by route and status: pending, batched
/// and failed, from the kept counts.
pub async fn open_deliveries(
    store: &Store,
) -> Result<Vec<(String, DeliveryStatus, i64)>, StoreError> {
    let mut counts = super::counts::totals(store).await?;
    counts.retain(|(_, status, _)| {
        matches!(
            status,
            DeliveryStatus::Pending | DeliveryStatus::Batched | DeliveryStatus::Failed
        )
    });
    counts.sort_by_key(|(route, status, _)| (route.clone(), status.as_str()));
    Ok(counts)
}

/// When the oldest event not yet delivered (pending, or in an open batch)
/// on `route` was received; `None` when nothing is waiting. Two indexed
/// lookups: the lowest pending event id, and the open batches' events.
pub async fn oldest_undelivered(store: &Store, route: &str) -> Result<Option<i64>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::delivery_log::oldest_undelivered(route)
    );
    let pending: Option<i64> = sqlx::query_scalar(
        "SELECT e.received_at FROM events e \
         WHERE e.id = (SELECT MIN(event_id) FROM deliveries \
                       WHERE route = (SELECT id FROM routes WHERE name = ?1) AND status = 'pending')",
    )
    .bind(route)
    .fetch_optional(pool)
    .await?;
    let batched: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(e.received_at) FROM batches b JOIN deliveries d ON d.batch_id = b.id \
         JOIN events e ON e.id = d.event_id \
         WHERE b.route = ?1 AND b.status IN ('pending', 'sending', 'retrying')",
    )
    .bind(route)
    .fetch_one(pool)
    .await?;
    Ok([pending, batched].into_iter().flatten().min())
}

/// Batches by route and status.
pub async fn batch_counts(store: &Store) -> Result<Vec<(String, BatchStatus, i64)>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::delivery_log::batch_counts());
    Ok(sqlx::query_as(
        "SELECT route, status, COUNT(*) FROM batches GROUP BY route, status ORDER BY route, status",
    )
    .fetch_all(pool)
    .await?)
}

/// Attempts started at or after `since`, by route and outcome.
pub async fn attempts_since(
    store: &Store,
    since: i64,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::delivery_log::attempts_since(since));
    let rows = sqlx::query(
        "SELECT b.route, a.outcome, COUNT(*) FROM attempts a JOIN batches b ON b.id = a.batch_id \
         WHERE a.started_at >= ?1 GROUP BY b.route, a.outcome ORDER BY b.route, a.outcome",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// A delivery settled without a batch (skipped, or failed unsent).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SettledDelivery {
    pub event_id: i64,
    pub received_at: i64,
    pub kind: String,
    pub dedupe_key: String,
    pub reason: Option<String>,
}

/// `route`'s deliveries in `status` among the events received from
/// `since` to `until` (ms), newest first, at most `limit`. Events are
/// stored in the order they arrive, so the window is an id range, found
/// by bisection; no scan outside it.
pub async fn settled_in(
    store: &Store,
    route: Route,
    status: DeliveryStatus,
    since: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<SettledDelivery>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::delivery_log::settled_in(route, status, since, until, limit)
    );
    let after = super::maintenance::received_before(store, since).await?;
    let through = super::maintenance::received_before(store, until.saturating_add(1)).await?;
    let rows = sqlx::query(concat!(
        "SELECT d.event_id, e.received_at, e.kind, ",
        event_key!(),
        " AS dedupe_key, d.reason FROM deliveries d JOIN events e ON e.id = d.event_id",
        event_request!(),
        "WHERE d.event_id > ?1 AND d.event_id <= ?2 AND d.route = ?3 AND d.status = ?4 \
         AND e.received_at >= ?5 AND e.received_at <= ?6 ORDER BY d.event_id DESC LIMIT ?7"
    ))
    .bind(after)
    .bind(through)
    .bind(route.code())
    .bind(status)
    .bind(since)
    .bind(until)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(SettledDelivery::from_row)
        .collect::<Result<_, _>>()?)
}
