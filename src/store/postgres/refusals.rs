//! The refusal log's queries on PostgreSQL (see `store::refusals`).

use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::PgStore;
use crate::domain::accepted::NewRefusal;
use crate::store::refusals::{Refusal, RefusalFilter};

/// Records `refusals` and drops all but the newest `keep` rows; returns how
/// many were dropped.
pub(in crate::store) async fn insert(
    conn: &mut PgConnection,
    refusals: &[&NewRefusal],
    keep: u64,
) -> Result<u64, sqlx::Error> {
    if refusals.is_empty() {
        return Ok(0);
    }
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO refusals (at, source, path, item, status, code, reason, message_id, excerpt) ",
    );
    insert.push_values(refusals, |mut row, refusal| {
        row.push_bind(refusal.at)
            .push_bind(&refusal.source)
            .push_bind(&refusal.path)
            .push_bind(refusal.item)
            .push_bind(i64::from(refusal.status))
            .push_bind(&refusal.code)
            .push_bind(&refusal.reason)
            .push_bind(&refusal.message_id)
            .push_bind(&refusal.excerpt);
    });
    insert.build().execute(&mut *conn).await?;
    let dropped =
        sqlx::query("DELETE FROM refusals WHERE id <= (SELECT MAX(id) FROM refusals) - $1")
            .bind(keep.min(i64::MAX as u64) as i64)
            .execute(&mut *conn)
            .await?;
    Ok(dropped.rows_affected())
}

pub async fn list(pg: &PgStore, filter: &RefusalFilter) -> Result<Vec<Refusal>, sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new(
        "SELECT id, at, source, path, item, status, code, reason, message_id, excerpt \
         FROM refusals WHERE true",
    );
    if let Some(since) = filter.since {
        sql.push(" AND at >= ").push_bind(since);
    }
    match filter.source.as_deref() {
        Some("unknown") => {
            sql.push(" AND source IS NULL");
        }
        Some(source) => {
            sql.push(" AND source = ").push_bind(source);
        }
        None => {}
    }
    if let Some(code) = &filter.code {
        sql.push(" AND code = ").push_bind(code);
    }
    if let Some(message_id) = &filter.message_id {
        sql.push(" AND message_id = ").push_bind(message_id);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(filter.limit.max(1) as i64);
    let rows = sql.build().fetch_all(pg.pool()).await?;
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

pub async fn counts_since(
    pg: &PgStore,
    since: i64,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(source, 'unknown'), code, COUNT(*) FROM refusals WHERE at >= $1 \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(since)
    .fetch_all(pg.pool())
    .await
}

pub async fn purge(pg: &PgStore, cutoff: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM refusals WHERE at < $1")
        .bind(cutoff)
        .execute(pg.pool())
        .await?;
    Ok(done.rows_affected())
}
