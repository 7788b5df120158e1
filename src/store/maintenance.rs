//! Writes of the operator surface: requeueing batches (`resend`), the
//! retention purge, and the readiness heartbeat.
//!
//! Each is a short transaction or a series of them, so ingest's group
//! commits never wait long behind an operator.

use std::time::Duration;

use super::{
    counts::{self, Flow, Tally},
    id_list, keys, Store, StoreError,
};
use crate::domain::{BatchStatus, DeliveryStatus, Route};

/// Requeues `batch_ids` in one transaction: each becomes `retrying`, due
/// `now`, with a `manual` trigger for its next attempt, a fresh
/// `give_up_after` window, and its events back to `batched`. The batch keeps
/// its id and payload id, so nothing is copied and dedupe ids stay the same.
/// Only batches whose status is still one of `from` when the transaction
/// writes are touched (the caller decides which may be resent; a batch a
/// dispatcher run took meanwhile is left alone). Returns the ids requeued.
pub async fn requeue(
    store: &Store,
    batch_ids: &[i64],
    from: &[BatchStatus],
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    let pool = sqlite_or!(
        store,
        super::postgres::maintenance::requeue(batch_ids, from, now)
    );
    let from = serde_json::to_string(&from.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .expect("a list of strings serializes");
    let _turn = store.write_turn().await;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut done = Vec::new();
    let mut tally = Tally::default();
    for id in batch_ids {
        let updated: Option<(String, String)> = sqlx::query_as(
            "UPDATE batches SET status = 'retrying', next_attempt_at = ?2, next_trigger = 'manual', \
                    retry_since = ?2, updated_at = ?2 \
             WHERE id = ?1 AND status IN (SELECT value FROM json_each(?3)) RETURNING route, source",
        )
        .bind(id)
        .bind(now)
        .bind(&from)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((route, source)) = updated else {
            continue;
        };
        let before = counts::batch_statuses(&mut tx, *id).await?;
        sqlx::query("UPDATE deliveries SET status = 'batched', reason = NULL WHERE batch_id = ?1")
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
    tally.write(&mut tx).await?;
    tx.commit().await?;
    Ok(done)
}

/// Pause between purge transactions: the ingest writer polls for the lock
/// every millisecond, so it gets in between.
const YIELD: Duration = Duration::from_millis(5);

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub batches: u64,
    pub attempts: u64,
    /// Refusal log rows (purged by `ops::purge`, after the rest).
    pub refusals: u64,
    /// The longest time one purge transaction held the write lock.
    pub max_lock: Duration,
    /// Another node was purging (PostgreSQL): this one purged nothing.
    pub elsewhere: bool,
}

/// Deletes every event received before `cutoff` whose every delivery is
/// `delivered` or `skipped` (or that has none), then batches last changed
/// before `cutoff` that are `delivered` or `split` and carry no event any
/// more, with their attempts. Failed and open data is never touched.
///
/// Candidates are found with plain reads (no lock); each write transaction
/// then re-checks and deletes at most `chunk` of them, so ingest never waits
/// long behind it, and a batch resent in the meantime is left alone.
///
/// Kept whole: the candidate scan and the chunked deletes share one cursor
/// and one running total.
pub async fn purge(store: &Store, cutoff: i64, chunk: usize) -> Result<Purged, StoreError> {
    let pool = sqlite_or!(store, super::postgres::maintenance::purge(cutoff, chunk));
    let mut purged = Purged::default();
    let mut after = i64::MIN;
    let bound = received_before(store, cutoff).await?;
    loop {
        let rows: Vec<(i64, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT id, request, dedupe_key FROM events e WHERE id > ?2 AND id <= ?4 AND received_at < ?1 AND NOT EXISTS \
               (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status NOT IN ('delivered', 'skipped')) \
             ORDER BY id LIMIT ?3",
        )
        .bind(cutoff)
        .bind(after)
        .bind(chunk as i64)
        .bind(bound)
        .fetch_all(pool)
        .await?;
        let Some(&(last, _, _)) = rows.last() else {
            break;
        };
        after = last;
        let ids: Vec<i64> = rows.iter().map(|(id, _, _)| *id).collect();
        let mut requests: Vec<i64> = rows.iter().filter_map(|(_, request, _)| *request).collect();
        let own_keys: Vec<&str> = rows
            .iter()
            .filter_map(|(_, _, key)| key.as_deref())
            .collect();
        requests.dedup();
        let turn = store.write_turn().await;
        let started = std::time::Instant::now();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let list = id_list(&ids);
        let settled = "SELECT value FROM json_each(?1) j WHERE NOT EXISTS \
            (SELECT 1 FROM deliveries d WHERE d.event_id = j.value AND d.status NOT IN ('delivered', 'skipped'))";
        let deleted: Vec<(i64, DeliveryStatus)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM deliveries WHERE event_id IN ({settled}) RETURNING route, status"
        )))
        .bind(&list)
        .fetch_all(&mut *tx)
        .await?;
        let mut tally = Tally::default();
        for (code, status) in deleted {
            if let Some(route) = Route::from_code(code) {
                tally.total(route, status, -1);
            }
        }
        tally.write(&mut tx).await?;
        // Deliveries of still-open events survive the first delete, so the
        // second only takes events with no delivery left.
        let deleted = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1)) \
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        )
        .bind(&list)
        .execute(&mut *tx)
        .await?;
        // A request's row goes with its last event.
        sqlx::query(
            "DELETE FROM requests WHERE id IN (SELECT value FROM json_each(?1)) AND NOT EXISTS \
               (SELECT 1 FROM events e WHERE e.id >= requests.first_event \
                  AND e.id < requests.first_event + requests.event_count AND e.request = requests.id)",
        )
        .bind(id_list(&requests))
        .execute(&mut *tx)
        .await?;
        keys::forget(&mut tx, &own_keys).await?;
        tx.commit().await?;
        drop(turn);
        purged.max_lock = purged.max_lock.max(started.elapsed());
        // Leave ingest's writer a window before the next chunk takes the lock.
        tokio::time::sleep(YIELD).await;
        purged.events += deleted.rows_affected();
    }
    after = i64::MIN;
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM batches b WHERE status IN ('delivered', 'split') AND updated_at < ?1 AND id > ?2 \
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.batch_id = b.id) \
               AND NOT EXISTS (SELECT 1 FROM batches c WHERE c.parent_id = b.id) \
             ORDER BY id LIMIT ?3",
        )
        .bind(cutoff)
        .bind(after)
        .bind(chunk as i64)
        .fetch_all(pool)
        .await?;
        let Some(last) = ids.last() else { break };
        after = *last;
        let turn = store.write_turn().await;
        let started = std::time::Instant::now();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        // Re-checked under the lock: a resent batch is `retrying` now.
        // CROSS JOIN keeps the id list as the outer loop; otherwise SQLite
        // walks every delivered batch through the status index.
        let still = "SELECT value FROM json_each(?1) j CROSS JOIN batches b ON b.id = j.value \
            WHERE b.status IN ('delivered', 'split') AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.batch_id = b.id)";
        let attempts = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM attempts WHERE batch_id IN ({still})"
        )))
        .bind(id_list(&ids))
        .execute(&mut *tx)
        .await?;
        let batches = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM batches WHERE id IN ({still})"
        )))
        .bind(id_list(&ids))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        drop(turn);
        purged.max_lock = purged.max_lock.max(started.elapsed());
        // Leave ingest's writer a window before the next chunk takes the lock.
        tokio::time::sleep(YIELD).await;
        purged.attempts += attempts.rows_affected();
        purged.batches += batches.rows_affected();
    }
    let _turn = store.write_turn().await;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if purged.batches > 0 {
        // A profile goes with the last batch formed with it.
        sqlx::query(
            "DELETE FROM profiles WHERE NOT EXISTS (SELECT 1 FROM batches b WHERE b.profile = profiles.id)",
        )
        .execute(&mut *tx)
        .await?;
    }
    counts::forget_before(&mut tx, cutoff).await?;
    tx.commit().await?;
    Ok(purged)
}

/// The highest event id received before `cutoff`, found by bisecting ids
/// (events are stored in the order they arrive, so `received_at` grows
/// with the id); `i64::MIN` when there is none. A clock stepped back only
/// makes it stop early: the purge still checks every event's own time.
pub(crate) async fn received_before(store: &Store, cutoff: i64) -> Result<i64, StoreError> {
    let pool = sqlite_or!(store, super::postgres::maintenance::received_before(cutoff));
    let at_or_after = |id: i64| {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT id, received_at FROM events WHERE id >= ?1 ORDER BY id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(pool)
    };
    let (mut low, mut high) = match at_or_after(i64::MIN).await? {
        Some((first, received)) if received < cutoff => {
            let last: i64 = sqlx::query_scalar("SELECT MAX(id) FROM events")
                .fetch_one(pool)
                .await?;
            (first, last.saturating_add(1))
        }
        _ => return Ok(i64::MIN),
    };
    // `low` was received before the cutoff; no id from `high` on was.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        match at_or_after(middle).await? {
            Some((id, received)) if id < high && received < cutoff => low = id,
            _ => high = middle,
        }
    }
    Ok(low)
}

/// After a purge: lets SQLite refresh its statistics and returns free pages
/// to the file system (on databases created with incremental auto-vacuum;
/// elsewhere freed pages are reused, so the file still stops growing).
pub async fn tidy(store: &Store) -> Result<(), StoreError> {
    let pool = sqlite_or!(store, super::postgres::maintenance::tidy());
    // Bounded ANALYZE: unbounded, it reads whole million-row tables while
    // holding the write lock.
    sqlx::query("PRAGMA analysis_limit = 400")
        .execute(pool)
        .await?;
    sqlx::query("PRAGMA optimize").execute(pool).await?;
    // Free pages go back a few at a time, each step its own short write.
    for _ in 0..200 {
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(pool)
            .await?;
        if free == 0 {
            break;
        }
        sqlx::query("PRAGMA incremental_vacuum(64)")
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Why the database did not take the heartbeat write.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// A full disk, a read-only file, a lock held past `busy_timeout`.
    #[error("database not writable: {0}")]
    NotWritable(#[from] sqlx::Error),
    #[error("database write did not finish within {0:?}")]
    TooSlow(Duration),
}

/// Proves the database takes writes: writes the heartbeat row within
/// `deadline`.
pub async fn heartbeat(store: &Store, now: i64, deadline: Duration) -> Result<(), HeartbeatError> {
    let pool = sqlite_or!(
        store,
        super::postgres::maintenance::heartbeat(now, deadline)
    );
    let write = sqlx::query(
        "INSERT INTO heartbeat (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = ?1",
    )
    .bind(now)
    .execute(pool);
    match tokio::time::timeout(deadline, write).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(HeartbeatError::NotWritable(error)),
        Err(_) => Err(HeartbeatError::TooSlow(deadline)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{
            accepted::{IngestBatch, NewEvent},
            Protocol,
        },
        store::writer::Writer,
    };

    /// Stores one event per receive time, in this order (ids ascending),
    /// with no route: nothing keeps them but retention.
    async fn store_received_at(store: &Store, times: &[i64]) {
        let (writer, task) = Writer::start(store, 16, |_| {}).await.unwrap();
        for (n, at) in times.iter().enumerate() {
            let batch = IngestBatch {
                source: "web".to_owned(),
                protocol: Protocol::Segment,
                received_at: *at,
                meta: None,
                payload_id: None,
                routes: Vec::new(),
                events: vec![NewEvent {
                    dedupe_key: format!("m-{n}"),
                    kind: "track".to_owned(),
                    body: "{}".to_owned(),
                }],
                refusals: Vec::new(),
            };
            writer.submit(batch).await.unwrap();
        }
        drop(writer);
        task.await.unwrap();
    }

    async fn times_left(store: &Store) -> Vec<i64> {
        sqlx::query_scalar("SELECT received_at FROM events ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn retention_never_takes_a_young_event_even_after_the_clock_stepped_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), &Default::default())
            .await
            .unwrap();
        // Arrival order; the clock stepped back after 5,000.
        let times = [1000, 1500, 5000, 2000, 2500, 6000, 7000];
        store_received_at(&store, &times).await;

        let purged = purge(&store, 3000, 2).await.unwrap();
        let left = times_left(&store).await;
        assert!(left.iter().all(|at| !matches!(at, 1000 | 1500)), "{left:?}");
        for young in [5000, 6000, 7000] {
            assert!(left.contains(&young), "{young} purged: {left:?}");
        }
        assert_eq!(purged.events as usize, times.len() - left.len());

        // A later cutoff takes whatever is older, stepped back or not.
        purge(&store, 6500, 2).await.unwrap();
        assert_eq!(times_left(&store).await, [7000]);
        store.close().await;
    }

    #[tokio::test]
    async fn the_bisection_finds_the_last_event_received_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), &Default::default())
            .await
            .unwrap();
        assert_eq!(received_before(&store, 10).await.unwrap(), i64::MIN);
        let times: Vec<i64> = (0..100).map(|n| 1000 + n * 10).collect();
        store_received_at(&store, &times).await;
        // Ids are 1..=100; event n+1 was received at 1000 + 10n.
        for (cutoff, last) in [
            (1000, i64::MIN),
            (1001, 1),
            (1500, 50),
            (1501, 51),
            (9999, 100),
        ] {
            assert_eq!(
                received_before(&store, cutoff).await.unwrap(),
                last,
                "cutoff {cutoff}"
            );
        }
        // Gaps in the ids (deleted events) do not matter.
        sqlx::query("DELETE FROM events WHERE id BETWEEN 20 AND 70")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(received_before(&store, 1500).await.unwrap(), 19);
        assert_eq!(received_before(&store, 1801).await.unwrap(), 81);
        store.close().await;
    }
}
