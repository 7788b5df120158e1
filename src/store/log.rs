//! Queries of the operator surface: the delivery log.
//!
//! Read-only and short: each is one statement, so the CLI can run while the
//! daemon writes (WAL readers never block the writer).

use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};

/// One batch as the delivery log shows it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    pub id: i64,
    pub route: String,
    pub source: String,
    pub status: String,
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
    pub status: Option<String>,
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
    // Only fixed fragments go into the SQL text; every value is bound.
    let mut sql = String::from(
        "SELECT id, route, source, status, payload_id, event_count, attempts, created_at, updated_at, \
                next_attempt_at, last_error, parent_id FROM batches WHERE 1 = 1",
    );
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
        .bind(&filter.status)
        .bind(&filter.route)
        .bind(&filter.source)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.before_id)
        .bind(filter.limit as i64)
        .fetch_all(store.pool())
        .await?;
    Ok(rows.into_iter().map(|row| summary(&row)).collect())
}

fn summary(row: &sqlx::sqlite::SqliteRow) -> BatchSummary {
    BatchSummary {
        id: row.get("id"),
        route: row.get("route"),
        source: row.get("source"),
        status: row.get("status"),
        payload_id: row.get("payload_id"),
        event_count: row.get("event_count"),
        attempts: row.get("attempts"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        next_attempt_at: row.get("next_attempt_at"),
        last_error: row.get("last_error"),
        parent_id: row.get("parent_id"),
    }
}

/// Counts of deliveries by route and status, for tests and `stats`.
pub async fn delivery_counts(store: &Store) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = sqlx::query("SELECT route, status, COUNT(*) FROM deliveries GROUP BY route, status ORDER BY route, status")
        .fetch_all(store.pool())
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// Number of stored events.
pub async fn event_count(store: &Store) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(store.pool())
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
    let rows = sqlx::query(
        "SELECT batch_id, attempt, triggered_by, started_at, duration_ms, http_status, error, response, outcome \
         FROM attempts WHERE batch_id = ?1 ORDER BY attempt",
    )
    .bind(batch_id)
    .fetch_all(store.pool())
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
