//! Counts kept with the changes they count (migration 0009): `totals`,
//! deliveries by route and current status, and `flows`, what happened per
//! minute, route and source. The overview, `stats` and `/metrics` read
//! these few rows instead of scanning events and deliveries.
//!
//! A transaction that changes statuses gathers its changes in a [`Tally`]
//! and writes it before it commits ([`Tally::write`]: two statements,
//! whatever the number of rows changed), so the counts are exactly as
//! committed as the rows. Reading them is [`totals`] and [`flows`].

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::{sqlite::SqliteConnection, AssertSqlSafe};

use super::{Store, StoreError};
use crate::domain::{DeliveryStatus, Route};

/// A minute, as `flows` keys it: Unix ms / 60,000.
pub fn minute(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// What a flow counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flow {
    /// Deliveries created: an event taking a route.
    Received,
    /// Settled as skipped (reason: why).
    Skipped,
    /// Settled as failed, sent or not (reason: why).
    Failed,
    Delivered,
    /// Events of an attempt that ended retrying.
    Retried,
    /// Events put back in the queue by a resend.
    Resent,
    /// Refused at ingest (route 0; reason: the refusal's code).
    Refused,
    /// The oldest undelivered event's age in ms, the most sampled in the
    /// minute (source and reason empty); minutes with nothing waiting have
    /// no row.
    OldestAge,
}

impl Flow {
    pub const ALL: [Flow; 8] = [
        Flow::Received,
        Flow::Skipped,
        Flow::Failed,
        Flow::Delivered,
        Flow::Retried,
        Flow::Resent,
        Flow::Refused,
        Flow::OldestAge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Received => "received",
            Flow::Skipped => "skipped",
            Flow::Failed => "failed",
            Flow::Delivered => "delivered",
            Flow::Retried => "retried",
            Flow::Resent => "resent",
            Flow::Refused => "refused",
            Flow::OldestAge => "oldest_age_ms",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Flow> {
        Flow::ALL.into_iter().find(|flow| flow.as_str() == text)
    }
}

/// Reasons longer than this are cut: a reason is a key of `flows`.
const MAX_REASON_CHARS: usize = 200;

/// The count changes of one transaction.
/// A flow row: `(minute, route, source, flow, reason, n)`.
pub(crate) type FlowRow = (i64, i64, String, Flow, String, i64);

#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// (minute, route code or 0, source, flow, reason) → n.
    flows: BTreeMap<(i64, i64, String, Flow, String), i64>,
    /// (route code, status) → change.
    totals: BTreeMap<(i64, DeliveryStatus), i64>,
}

impl Tally {
    /// `n` events of `source` had `flow` on `route` (`None`: ingest) at `at` (ms).
    pub fn flow(
        &mut self,
        at: i64,
        route: Option<Route>,
        source: &str,
        flow: Flow,
        reason: &str,
        n: i64,
    ) {
        if n == 0 {
            return;
        }
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let key = (
            minute(at),
            route.map_or(0, Route::code),
            source.to_owned(),
            flow,
            reason,
        );
        *self.flows.entry(key).or_default() += n;
    }

    /// `n` deliveries of `route` entered `status` (negative: left it).
    /// `pending` is not kept (it is counted from its index when asked).
    pub fn total(&mut self, route: Route, status: DeliveryStatus, n: i64) {
        if n != 0 && status != DeliveryStatus::Pending {
            *self.totals.entry((route.code(), status)).or_default() += n;
        }
    }

    /// `n` deliveries of `route` went from `from` to `to`.
    pub fn moved(&mut self, route: Route, from: DeliveryStatus, to: DeliveryStatus, n: i64) {
        if from != to {
            self.total(route, from, -n);
            self.total(route, to, n);
        }
    }

    /// The kept changes as rows: totals `(route, status, n)` and flows
    /// `(minute, route, source, flow, reason, n)`, in key order.
    pub(crate) fn into_rows(self) -> (Vec<(i64, DeliveryStatus, i64)>, Vec<FlowRow>) {
        let totals = self
            .totals
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((route, status), n)| (route, status, n))
            .collect();
        let flows = self
            .flows
            .into_iter()
            .map(|((minute, route, source, flow, reason), n)| {
                (minute, route, source, flow, reason, n)
            })
            .collect();
        (totals, flows)
    }

    /// Writes the changes on `conn`'s open transaction.
    pub async fn write(self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        let totals: Vec<Value> = self
            .totals
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((route, status), n)| json!([route, status.as_str(), n]))
            .collect();
        if !totals.is_empty() {
            sqlx::query(
                "INSERT INTO totals (route, status, n) \
                 SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1) WHERE true \
                 ON CONFLICT (route, status) DO UPDATE SET n = n + excluded.n",
            )
            .bind(Value::Array(totals).to_string())
            .execute(&mut *conn)
            .await?;
        }
        let flows: Vec<Value> = self
            .flows
            .into_iter()
            .map(|((minute, route, source, flow, reason), n)| {
                json!([minute, route, source, flow.as_str(), reason, n])
            })
            .collect();
        if !flows.is_empty() {
            let rows = Value::Array(flows).to_string();
            for sql in [
                "INSERT INTO flows (minute, route, source, what, reason, n) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
                 FROM json_each(?1) WHERE true \
                 ON CONFLICT (minute, route, source, what, reason) DO UPDATE SET n = n + excluded.n",
                "INSERT INTO flows_hourly (hour, route, source, what, reason, n) \
                 SELECT (value ->> 0) / 60, value ->> 1, value ->> 2, value ->> 3, value ->> 4, SUM(value ->> 5) \
                 FROM json_each(?1) WHERE true GROUP BY 1, 2, 3, 4, 5 \
                 ON CONFLICT (hour, route, source, what, reason) DO UPDATE SET n = n + excluded.n",
            ] {
                sqlx::query(sql).bind(&rows).execute(&mut *conn).await?;
            }
        }
        Ok(())
    }
}

/// How many deliveries of `batch_id` are in each status (before a change
/// that moves them all).
pub(crate) async fn batch_statuses(
    conn: &mut SqliteConnection,
    batch_id: i64,
) -> Result<Vec<(DeliveryStatus, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, COUNT(*) FROM deliveries WHERE batch_id = ?1 GROUP BY status")
        .bind(batch_id)
        .fetch_all(&mut *conn)
        .await
}

/// Deliveries by route and current status, routes and statuses in name
/// order; none counted are left out. `pending` comes from its partial
/// index (as many entries as events wait for their first batch).
pub async fn totals(store: &Store) -> Result<Vec<(String, DeliveryStatus, i64)>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::counts::totals());
    let mut conn = pool.acquire().await?;
    Ok(totals_on(&mut conn).await?)
}

/// [`totals`] on `conn` (inside a caller's read transaction, to compare
/// with the rows at one moment).
pub(crate) async fn totals_on(
    conn: &mut SqliteConnection,
) -> Result<Vec<(String, DeliveryStatus, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, status, n FROM ( \
           SELECT r.name, t.status, t.n FROM totals t JOIN routes r ON r.id = t.route WHERE t.n <> 0 \
           UNION ALL \
           SELECT r.name, 'pending', COUNT(*) FROM deliveries d JOIN routes r ON r.id = d.route \
           WHERE d.status = 'pending' GROUP BY d.route) \
         ORDER BY name, status",
    )
    .fetch_all(&mut *conn)
    .await
}

/// One `flows` row, summed over the minutes asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCount {
    /// The route's name; `None` for ingest (refusals).
    pub route: Option<String>,
    pub source: String,
    pub flow: Flow,
    pub reason: String,
    pub n: i64,
}

/// Windows longer than this are counted in whole hours.
pub(crate) const HOURLY_PAST_MS: i64 = 6 * 3_600_000;

/// The whole buckets a window from `since` to `until` (ms) covers: its
/// start and end (ms, end exclusive) and the bucket length — minutes, or
/// hours for windows longer than six hours.
pub fn span(since: i64, until: i64) -> (i64, i64, i64) {
    let bucket = if until - since > HOURLY_PAST_MS {
        3_600_000
    } else {
        60_000
    };
    (
        since.div_euclid(bucket) * bucket,
        (until.div_euclid(bucket) + 1) * bucket,
        bucket,
    )
}

/// The table and key column of a bucket length.
pub(crate) fn table(bucket: i64) -> (&'static str, &'static str) {
    if bucket == 60_000 {
        ("flows", "minute")
    } else {
        ("flows_hourly", "hour")
    }
}

/// Flows in the whole buckets of the window from `since` to `until` (ms;
/// see [`span`]), summed per route, source, flow and reason.
pub async fn flows(store: &Store, since: i64, until: i64) -> Result<Vec<FlowCount>, StoreError> {
    let pool = sqlite_or!(store, super::postgres::counts::flows(since, until));
    let (start, end, bucket) = span(since, until);
    let (table, key) = table(bucket);
    let rows: Vec<(Option<String>, String, String, String, i64)> =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT r.name, f.source, f.what, f.reason, SUM(f.n) FROM {table} f \
         LEFT JOIN routes r ON r.id = f.route \
         WHERE f.{key} >= ?1 AND f.{key} < ?2 AND f.what <> 'oldest_age_ms' \
         GROUP BY f.route, f.source, f.what, f.reason ORDER BY r.name, f.source, f.what, f.reason"
        )))
        .bind(start / bucket)
        .bind(end / bucket)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(route, source, what, reason, n)| {
            Some(FlowCount {
                route,
                source,
                flow: Flow::parse(&what)?,
                reason,
                n,
            })
        })
        .collect())
}

/// Per bucket of the window (see [`span`]): each route's `flow` count (the
/// most, for [`Flow::OldestAge`]), as (bucket start in ms, route name, n),
/// in one read for every flow asked; buckets with none left out.
pub async fn per_bucket(
    store: &Store,
    flows: &[Flow],
    since: i64,
    until: i64,
) -> Result<Vec<(i64, String, Flow, i64)>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::counts::per_bucket(flows, since, until)
    );
    let (start, end, bucket) = span(since, until);
    let (table, key) = table(bucket);
    let names: Vec<&str> = flows.iter().map(|flow| flow.as_str()).collect();
    let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT f.{key}, r.name, f.what, \
                CASE f.what WHEN 'oldest_age_ms' THEN MAX(f.n) ELSE SUM(f.n) END \
         FROM {table} f JOIN routes r ON r.id = f.route \
         WHERE f.{key} >= ?1 AND f.{key} < ?2 AND f.what IN (SELECT value FROM json_each(?3)) \
         GROUP BY f.{key}, f.route, f.what ORDER BY f.{key}"
    )))
    .bind(start / bucket)
    .bind(end / bucket)
    .bind(serde_json::to_string(&names).expect("names serialise"))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(at, route, what, n)| Some((at * bucket, route, Flow::parse(&what)?, n)))
        .collect())
}

/// Records each route's oldest undelivered event's age (ms) at `at`,
/// keeping the most of the minute. Routes with nothing waiting are left
/// out, so an idle daemon writes nothing.
pub async fn record_oldest(
    store: &Store,
    at: i64,
    ages: &[(Route, i64)],
) -> Result<(), StoreError> {
    let pool = sqlite_or!(store, super::postgres::counts::record_oldest(at, ages));
    if ages.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = ages
        .iter()
        .map(|(route, age)| json!([minute(at), route.code(), age]))
        .collect();
    let rows = Value::Array(rows).to_string();
    let _turn = store.write_turn().await;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for sql in [
        "INSERT INTO flows (minute, route, source, what, reason, n) \
         SELECT value ->> 0, value ->> 1, '', 'oldest_age_ms', '', value ->> 2 FROM json_each(?1) WHERE true \
         ON CONFLICT (minute, route, source, what, reason) DO UPDATE SET n = max(n, excluded.n)",
        "INSERT INTO flows_hourly (hour, route, source, what, reason, n) \
         SELECT (value ->> 0) / 60, value ->> 1, '', 'oldest_age_ms', '', value ->> 2 FROM json_each(?1) WHERE true \
         ON CONFLICT (hour, route, source, what, reason) DO UPDATE SET n = max(n, excluded.n)",
    ] {
        sqlx::query(sql).bind(&rows).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes the minutes before `cutoff` (ms). Returns the rows deleted.
pub(crate) async fn forget_before(
    conn: &mut SqliteConnection,
    cutoff: i64,
) -> Result<u64, sqlx::Error> {
    let minutes = sqlx::query("DELETE FROM flows WHERE minute < ?1")
        .bind(minute(cutoff))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    // An hour partly younger than the cutoff stays whole.
    sqlx::query("DELETE FROM flows_hourly WHERE hour < ?1")
        .bind(cutoff.div_euclid(3_600_000))
        .execute(&mut *conn)
        .await?;
    Ok(minutes)
}
