//! The operator surface's writes on PostgreSQL (see `store::maintenance`):
//! requeue, retention (one node at a time), readiness heartbeat.

use std::time::Duration;

use sqlx::Connection;

use super::PgStore;
use crate::domain::{BatchStatus, DeliveryStatus, Route};
use crate::store::counts::{Flow, Tally};
use crate::store::maintenance::{HeartbeatError, Purged};

/// The advisory lock a node holds while it purges (`ldbridge` retention).
pub const RETENTION_LOCK: i64 = 0x6c64_6272_7265_7400;

pub async fn requeue(
    pg: &PgStore,
    batch_ids: &[i64],
    from: &[BatchStatus],
    now: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let from: Vec<&str> = from.iter().map(|status| status.as_str()).collect();
    let mut tx = pg.pool().begin().await?;
    let mut done = Vec::new();
    let mut tally = Tally::default();
    for id in batch_ids {
        let updated: Option<(String, String)> = sqlx::query_as(
            "UPDATE batches SET status = 'retrying', next_attempt_at = $2, next_trigger = 'manual', \
                    retry_since = $2, updated_at = $2, claimed_by = NULL \
             WHERE id = $1 AND status = ANY($3) RETURNING route, source",
        )
        .bind(id)
        .bind(now)
        .bind(&from)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((route, source)) = updated else {
            continue;
        };
        let before = super::counts::batch_statuses(&mut tx, *id).await?;
        sqlx::query("UPDATE deliveries SET status = 'batched', reason = NULL WHERE batch_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if let Ok(route) = route.parse::<Route>() {
            for (status, n) in before {
                tally.moved(route, status, DeliveryStatus::Batched, n);
                tally.flow(now, Some(route), &source, Flow::Resent, "", n);
            }
        }
        done.push(*id);
    }
    super::counts::write(&mut tx, tally).await?;
    tx.commit().await?;
    Ok(done)
}

/// As `store::maintenance::purge`, while holding the retention lock; when
/// another node holds it, purges nothing (that node is purging).
pub async fn purge(pg: &PgStore, cutoff: i64, chunk: usize) -> Result<Purged, sqlx::Error> {
    // A connection of its own holds the session lock: closed at the end, or
    // by the server when this node dies, the lock goes with it.
    let mut lock = pg.connection().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(RETENTION_LOCK)
        .fetch_one(&mut lock)
        .await?;
    if !locked {
        tracing::debug!("Another node is purging; this node skips this round.");
        super::close(lock).await;
        return Ok(Purged {
            elsewhere: true,
            ..Purged::default()
        });
    }
    let purged = purge_locked(pg, cutoff, chunk).await;
    super::close(lock).await;
    purged
}

async fn purge_locked(pg: &PgStore, cutoff: i64, chunk: usize) -> Result<Purged, sqlx::Error> {
    let mut purged = Purged::default();
    let mut after = i64::MIN;
    let bound = received_before(pg, cutoff).await?;
    loop {
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, request FROM events e WHERE id > $2 AND id <= $4 AND received_at < $1 \
               AND NOT EXISTS \
               (SELECT 1 FROM deliveries d WHERE d.event_id = e.id \
                  AND d.status NOT IN ('delivered', 'skipped')) \
             ORDER BY id LIMIT $3",
        )
        .bind(cutoff)
        .bind(after)
        .bind(chunk as i64)
        .bind(bound)
        .fetch_all(pg.pool())
        .await?;
        let Some(&(last, _)) = rows.last() else {
            break;
        };
        after = last;
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let mut requests: Vec<i64> = rows.iter().filter_map(|(_, request)| *request).collect();
        requests.sort_unstable();
        requests.dedup();
        let started = std::time::Instant::now();
        let mut tx = pg.pool().begin().await?;
        let deleted: Vec<(i64, DeliveryStatus)> = sqlx::query_as(
            "DELETE FROM deliveries WHERE event_id = ANY($1) AND event_id NOT IN \
               (SELECT event_id FROM deliveries WHERE event_id = ANY($1) \
                  AND status NOT IN ('delivered', 'skipped')) \
             RETURNING route, status",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut tally = Tally::default();
        for (code, status) in deleted {
            if let Some(route) = Route::from_code(code) {
                tally.total(route, status, -1);
            }
        }
        super::counts::write(&mut tx, tally).await?;
        let deleted = sqlx::query(
            "DELETE FROM events WHERE id = ANY($1) \
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM requests WHERE id = ANY($1) \
               AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request = requests.id)",
        )
        .bind(&requests)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        purged.max_lock = purged.max_lock.max(started.elapsed());
        purged.events += deleted.rows_affected();
    }
    after = i64::MIN;
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM batches b WHERE status IN ('delivered', 'split') AND updated_at < $1 \
               AND id > $2 \
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.batch_id = b.id) \
               AND NOT EXISTS (SELECT 1 FROM batches c WHERE c.parent_id = b.id) \
             ORDER BY id LIMIT $3",
        )
        .bind(cutoff)
        .bind(after)
        .bind(chunk as i64)
        .fetch_all(pg.pool())
        .await?;
        let Some(last) = ids.last() else { break };
        after = *last;
        let started = std::time::Instant::now();
        let mut tx = pg.pool().begin().await?;
        // Re-checked in the transaction, its rows locked: a resent batch is
        // `retrying` now.
        let still: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM batches b WHERE id = ANY($1) AND status IN ('delivered', 'split') \
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.batch_id = b.id) FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let attempts = sqlx::query("DELETE FROM attempts WHERE batch_id = ANY($1)")
            .bind(&still)
            .execute(&mut *tx)
            .await?;
        let batches = sqlx::query("DELETE FROM batches WHERE id = ANY($1)")
            .bind(&still)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        purged.max_lock = purged.max_lock.max(started.elapsed());
        purged.attempts += attempts.rows_affected();
        purged.batches += batches.rows_affected();
    }
    let mut tx = pg.pool().begin().await?;
    if purged.batches > 0 {
        sqlx::query(
            "DELETE FROM profiles WHERE NOT EXISTS \
               (SELECT 1 FROM batches b WHERE b.profile = profiles.id)",
        )
        .execute(&mut *tx)
        .await?;
    }
    super::counts::forget_before(&mut tx, cutoff).await?;
    tx.commit().await?;
    Ok(purged)
}

/// The highest event id received before `cutoff` (`i64::MIN` when none),
/// found by binary search over ids, as on SQLite: events are stored about
/// in the order received, and an index on `received_at` would cost every
/// ingested event one more index entry for an hourly query.
pub(in crate::store) async fn received_before(
    pg: &PgStore,
    cutoff: i64,
) -> Result<i64, sqlx::Error> {
    let at_or_after = |id: i64| {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT id, received_at FROM events WHERE id >= $1 ORDER BY id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(pg.pool())
    };
    let (mut low, mut high) = match at_or_after(i64::MIN).await? {
        Some((first, received)) if received < cutoff => {
            let last: i64 = sqlx::query_scalar("SELECT MAX(id) FROM events")
                .fetch_one(pg.pool())
                .await?;
            (first, last.saturating_add(1))
        }
        _ => return Ok(i64::MIN),
    };
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        match at_or_after(middle).await? {
            Some((id, received)) if id < high && received < cutoff => low = id,
            _ => high = middle,
        }
    }
    Ok(low)
}

/// Nothing to do: PostgreSQL's autovacuum analyses and reclaims.
pub async fn tidy(_pg: &PgStore) -> Result<(), sqlx::Error> {
    Ok(())
}

/// Writes this node's heartbeat row within `deadline`.
pub async fn heartbeat(pg: &PgStore, now: i64, deadline: Duration) -> Result<(), HeartbeatError> {
    let node = crate::store::keys::hash(pg.node());
    let write = async {
        let mut conn = pg.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO heartbeat (id, at) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET at = $2",
        )
        .bind(node)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    };
    match tokio::time::timeout(deadline, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(HeartbeatError::NotWritable(error)),
        Err(_) => Err(HeartbeatError::TooSlow(deadline)),
    }
}
