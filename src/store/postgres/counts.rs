//! The kept counts on PostgreSQL (see `store::counts`): written with the
//! changes they count, read by the overview, `stats` and `/metrics`.
//!
//! Counter rows are upserted in key order, so two nodes' transactions
//! touching the same rows take their locks in the same order.

use serde_json::{json, Value};
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::PgStore;
use crate::domain::{DeliveryStatus, Route};
use crate::store::counts::{minute, span, table, Flow, FlowCount, Tally};

/// Writes `tally` inside the caller's transaction.
pub(in crate::store) async fn write(
    conn: &mut PgConnection,
    tally: Tally,
) -> Result<(), sqlx::Error> {
    let (totals, flows) = tally.into_rows();
    if !totals.is_empty() {
        let rows: Vec<Value> = totals
            .iter()
            .map(|(route, status, n)| json!([route, status.as_str(), n]))
            .collect();
        sqlx::query(
            "INSERT INTO totals (route, status, n) \
             SELECT (v ->> 0)::int8, v ->> 1, (v ->> 2)::int8 FROM jsonb_array_elements($1::jsonb) v \
             ON CONFLICT (route, status) DO UPDATE SET n = totals.n + excluded.n",
        )
        .bind(Value::Array(rows).to_string())
        .execute(&mut *conn)
        .await?;
    }
    if !flows.is_empty() {
        let rows: Vec<Value> = flows
            .iter()
            .map(|(minute, route, source, flow, reason, n)| {
                json!([minute, route, source, flow.as_str(), reason, n])
            })
            .collect();
        let rows = Value::Array(rows).to_string();
        for sql in [
            "INSERT INTO flows (minute, route, source, what, reason, n) \
             SELECT (v ->> 0)::int8, (v ->> 1)::int8, v ->> 2, v ->> 3, v ->> 4, (v ->> 5)::int8 \
             FROM jsonb_array_elements($1::jsonb) v \
             ON CONFLICT (minute, route, source, what, reason) DO UPDATE SET n = flows.n + excluded.n",
            "INSERT INTO flows_hourly (hour, route, source, what, reason, n) \
             SELECT (v ->> 0)::int8 / 60, (v ->> 1)::int8, v ->> 2, v ->> 3, v ->> 4, SUM((v ->> 5)::int8) \
             FROM jsonb_array_elements($1::jsonb) v GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 \
             ON CONFLICT (hour, route, source, what, reason) DO UPDATE SET n = flows_hourly.n + excluded.n",
        ] {
            sqlx::query(sql).bind(&rows).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// How many deliveries of batch `batch_id` are in each status.
pub(in crate::store) async fn batch_statuses(
    conn: &mut PgConnection,
    batch_id: i64,
) -> Result<Vec<(DeliveryStatus, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, COUNT(*) FROM deliveries WHERE batch_id = $1 GROUP BY status")
        .bind(batch_id)
        .fetch_all(&mut *conn)
        .await
}

pub async fn totals(pg: &PgStore) -> Result<Vec<(String, DeliveryStatus, i64)>, sqlx::Error> {
    let mut conn = pg.pool().acquire().await?;
    totals_on(&mut conn).await
}

pub(in crate::store) async fn totals_on(
    conn: &mut PgConnection,
) -> Result<Vec<(String, DeliveryStatus, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, status, n FROM ( \
           SELECT r.name, t.status, t.n FROM totals t JOIN routes r ON r.id = t.route WHERE t.n <> 0 \
           UNION ALL \
           SELECT r.name, 'pending', COUNT(*) FROM deliveries d JOIN routes r ON r.id = d.route \
           WHERE d.status = 'pending' GROUP BY r.name) AS c \
         ORDER BY name, status",
    )
    .fetch_all(&mut *conn)
    .await
}

pub async fn flows(pg: &PgStore, since: i64, until: i64) -> Result<Vec<FlowCount>, sqlx::Error> {
    let (start, end, bucket) = span(since, until);
    let (table, key) = table(bucket);
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT r.name, f.source, f.what, f.reason, SUM(f.n)::int8 FROM {table} f \
         LEFT JOIN routes r ON r.id = f.route \
         WHERE f.{key} >= $1 AND f.{key} < $2 AND f.what <> 'oldest_age_ms' \
         GROUP BY f.route, r.name, f.source, f.what, f.reason \
         ORDER BY r.name, f.source, f.what, f.reason"
    )))
    .bind(start / bucket)
    .bind(end / bucket)
    .fetch_all(pg.pool())
    .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            Some(FlowCount {
                route: row.get(0),
                source: row.get(1),
                flow: Flow::parse(row.get(2))?,
                reason: row.get(3),
                n: row.get(4),
            })
        })
        .collect())
}

pub async fn per_bucket(
    pg: &PgStore,
    flows: &[Flow],
    since: i64,
    until: i64,
) -> Result<Vec<(i64, String, Flow, i64)>, sqlx::Error> {
    let (start, end, bucket) = span(since, until);
    let (table, key) = table(bucket);
    let names: Vec<&str> = flows.iter().map(|flow| flow.as_str()).collect();
    let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT f.{key}, r.name, f.what, \
                (CASE f.what WHEN 'oldest_age_ms' THEN MAX(f.n) ELSE SUM(f.n) END)::int8 \
         FROM {table} f JOIN routes r ON r.id = f.route \
         WHERE f.{key} >= $1 AND f.{key} < $2 AND f.what = ANY($3) \
         GROUP BY f.{key}, f.route, r.name, f.what ORDER BY f.{key}"
    )))
    .bind(start / bucket)
    .bind(end / bucket)
    .bind(&names)
    .fetch_all(pg.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(at, route, what, n)| Some((at * bucket, route, Flow::parse(&what)?, n)))
        .collect())
}

pub async fn record_oldest(
    pg: &PgStore,
    at: i64,
    ages: &[(Route, i64)],
) -> Result<(), sqlx::Error> {
    if ages.is_empty() {
        return Ok(());
    }
    let routes: Vec<i64> = ages.iter().map(|(route, _)| route.code()).collect();
    let values: Vec<i64> = ages.iter().map(|(_, age)| *age).collect();
    let mut tx = pg.pool().begin().await?;
    for sql in [
        "INSERT INTO flows (minute, route, source, what, reason, n) \
         SELECT $1, r, '', 'oldest_age_ms', '', a FROM UNNEST($2::int8[], $3::int8[]) AS t (r, a) \
         ON CONFLICT (minute, route, source, what, reason) DO UPDATE SET n = GREATEST(flows.n, excluded.n)",
        "INSERT INTO flows_hourly (hour, route, source, what, reason, n) \
         SELECT $1 / 60, r, '', 'oldest_age_ms', '', a FROM UNNEST($2::int8[], $3::int8[]) AS t (r, a) \
         ON CONFLICT (hour, route, source, what, reason) DO UPDATE SET n = GREATEST(flows_hourly.n, excluded.n)",
    ] {
        sqlx::query(sql)
            .bind(minute(at))
            .bind(&routes)
            .bind(&values)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Drops the flow counts older than `cutoff` (an hour partly younger stays).
pub(in crate::store) async fn forget_before(
    conn: &mut PgConnection,
    cutoff: i64,
) -> Result<u64, sqlx::Error> {
    let minutes = sqlx::query("DELETE FROM flows WHERE minute < $1")
        .bind(minute(cutoff))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM flows_hourly WHERE hour < $1")
        .bind(cutoff.div_euclid(3_600_000))
        .execute(&mut *conn)
        .await?;
    Ok(minutes)
}
