//! The refusal log's queries: what ingest refused, and why.
//!
//! Rows are written by the ingest writer, inside its group commit
//! (`insert`), so a message refused within an accepted batch is on record
//! exactly when the rest of the batch is. The table keeps the newest
//! `store.refusal_log_max_rows` rows (older ones are dropped in the same
//! transaction) and retention purges rows older than `store.retain`.
//! What a row may hold (no key, no token) is ingest's to ensure.

use sqlx::{sqlite::SqliteConnection, AssertSqlSafe, Row};

use super::{Store, StoreError};
use crate::domain::accepted::NewRefusal;

/// A recorded refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: i64,
    pub refusal: NewRefusal,
}

/// Which refusals [`list`] returns. `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct RefusalFilter {
    /// At or after (Unix ms).
    pub since: Option<i64>,
    /// A source name, or "unknown" for refusals with no known source.
    pub source: Option<String>,
    pub code: Option<String>,
    pub message_id: Option<String>,
    pub limit: usize,
}

/// Writes `refusals` on the writer's open transaction, then drops the
/// oldest rows beyond `keep`. Returns how many were dropped.
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    refusals: &[&NewRefusal],
    keep: u64,
) -> Result<u64, sqlx::Error> {
    if refusals.is_empty() {
        return Ok(0);
    }
    for refusal in refusals {
        sqlx::query(
            "INSERT INTO refusals (at, source, path, item, status, code, reason, message_id, excerpt) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(refusal.at)
        .bind(&refusal.source)
        .bind(&refusal.path)
        .bind(refusal.item)
        .bind(i64::from(refusal.status))
        .bind(&refusal.code)
        .bind(&refusal.reason)
        .bind(&refusal.message_id)
        .bind(&refusal.excerpt)
        .execute(&mut *conn)
        .await?;
    }
    // Ids only grow (the newest row is never deleted), so the newest `keep`
    // rows are the ids above MAX(id) - keep.
    let dropped =
        sqlx::query("DELETE FROM refusals WHERE id <= (SELECT MAX(id) FROM refusals) - ?1")
            .bind(keep.min(i64::MAX as u64) as i64)
            .execute(&mut *conn)
            .await?;
    Ok(dropped.rows_affected())
}

/// Refusals matching `filter`, newest first, at most `filter.limit`.
pub async fn list(store: &Store, filter: &RefusalFilter) -> Result<Vec<Refusal>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::refusals::list(filter));
    // Only fixed fragments go into the SQL text; every value is bound.
    let mut sql = String::from(
        "SELECT id, at, source, path, item, status, code, reason, message_id, excerpt \
         FROM refusals WHERE 1 = 1",
    );
    let unknown = filter.source.as_deref() == Some("unknown");
    let conditions = [
        (filter.since.is_some(), " AND at >= ?1"),
        (filter.source.is_some() && !unknown, " AND source = ?2"),
        (unknown, " AND source IS NULL"),
        (filter.code.is_some(), " AND code = ?3"),
        (filter.message_id.is_some(), " AND message_id = ?4"),
    ];
    for (present, fragment) in conditions {
        if present {
            sql.push_str(fragment);
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?5");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(filter.since)
        .bind(&filter.source)
        .bind(&filter.code)
        .bind(&filter.message_id)
        .bind(filter.limit.max(1) as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|row| Refusal {
            id: row.get(0),
            refusal: NewRefusal {
                at: row.get(1),
                source: row.get(2),
                path: row.get(3),
                item: row.get(4),
                status: row.get::<i64, _>(5).clamp(0, 999) as u16,
                code: row.get(6),
                reason: row.get(7),
                message_id: row.get(8),
                excerpt: row.get(9),
            },
        })
        .collect())
}

/// Recorded refusals at or after `since` by (source, code); a refusal with
/// no known source counts under "unknown".
pub async fn counts_since(
    store: &Store,
    since: i64,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::refusals::counts_since(since));
    Ok(sqlx::query_as(
        "SELECT COALESCE(source, 'unknown'), code, COUNT(*) FROM refusals WHERE at >= ?1 \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// Deletes refusals recorded before `cutoff`; returns how many.
pub async fn purge(store: &Store, cutoff: i64) -> Result<u64, StoreError> {
    let pool = sqlite_or!(store, super::postgres::refusals::purge(cutoff));
    let done = sqlx::query("DELETE FROM refusals WHERE at < ?1")
        .bind(cutoff)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
