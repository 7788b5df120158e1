//! The dedupe key file: which event holds each key an event brings itself
//! (a Segment messageId, a LaunchDarkly diagnostic id), beside the database
//! as `<database>-dedupe`.
//!
//! Why a file of its own: real clients' messageIds are random, so each new
//! key lands on a random page of whatever index holds them. In the
//! database's 8 KB pages that was one 8 KB page written to the WAL per event
//! (and again at the checkpoint), 112 of the 129 pages a 100-event commit
//! wrote (BENCHMARKS.md). This file has 512-byte pages and holds only a
//! 64-bit hash of each key and its event's id, so the same random page
//! costs 512 bytes.
//!
//! It is derived from `events`, never the other way round:
//!
//! * A key is a duplicate only when the event its entry names is stored
//!   with that same key and source ([`writer`](super::writer) checks), so a
//!   hash collision, or an entry left behind by a commit that never reached
//!   the database, can only let an event in twice, never drop one.
//! * Its commits are written with `synchronous=NORMAL`: the database's own
//!   fsync is what acknowledges. A row holding the id of the highest event
//!   whose key is in the file (the watermark) is written with every commit;
//!   on opening, keys of events above it are added again ([`catch_up`]).
//!   Deleting the file is safe: it is rebuilt from `events`.

use std::path::{Path, PathBuf};

use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;

use super::id_list;

/// The entry whose `event_id` is the watermark (no key hashes to it).
const WATERMARK: i64 = i64::MIN;
/// Events read per transaction while keys are added again.
const CATCH_UP_CHUNK: i64 = 50_000;

/// The dedupe key file of the database at `database`.
pub(crate) fn path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-dedupe");
    PathBuf::from(name)
}

/// The entry hash of `key`: SipHash-1-3 with fixed keys, so it is the same
/// in every process and release. Never [`WATERMARK`].
pub(crate) fn hash(key: &str) -> i64 {
    let hash = siphasher::sip::SipHasher13::new_with_keys(0x6c64_6272_6964_6765, 0x6465_6475_7065)
        .hash(key.as_bytes()) as i64;
    hash.max(WATERMARK + 1)
}

/// Attaches the file to `conn` as `keys`, creating it (512-byte pages, WAL)
/// when it does not exist yet.
pub(crate) async fn attach(
    conn: &mut SqliteConnection,
    database: &Path,
) -> Result<(), sqlx::Error> {
    sqlx::query("ATTACH DATABASE ?1 AS keys")
        .bind(path(database).to_string_lossy().into_owned())
        .execute(&mut *conn)
        .await?;
    // `page_size` takes effect only on a new, empty file; the others are
    // this connection's settings for the file. The bundled SQLite is built
    // with SQLITE_ENABLE_MEMORY_MANAGEMENT: every connection's page caches
    // share one budget, counted in pages whatever their size. The default
    // cache (2,000 KiB: ~2,900 pages of 512 bytes) would let the database's
    // 8 KB pages stay cached 16 times over (heaptrack: 42 MB of cached
    // pages at the ingest bench's peak against 13 MB before the file).
    // Lookups miss the cache either way (random keys) and read from the
    // OS's; a 16 MB cache for the writer measured no faster.
    for pragma in [
        "PRAGMA keys.page_size = 512",
        "PRAGMA keys.journal_mode = WAL",
        "PRAGMA keys.synchronous = NORMAL",
        "PRAGMA keys.cache_size = 64",
        "CREATE TABLE IF NOT EXISTS keys.dedupe (h INTEGER PRIMARY KEY, event_id INTEGER NOT NULL)",
    ] {
        sqlx::query(pragma).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Adds the keys of events stored above the watermark: those of a commit
/// that reached the database but not this file (a crash between the two),
/// or all of them for a new file. A watermark above every event (a
/// database restored from an older backup) empties the file first.
pub(crate) async fn catch_up(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    let mut added = 0;
    loop {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let (covered, last): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT event_id FROM keys.dedupe WHERE h = ?1), \
                    (SELECT COALESCE(MAX(id), 0) FROM events)",
        )
        .bind(WATERMARK)
        .fetch_one(&mut *tx)
        .await?;
        let covered = match covered {
            Some(covered) if covered <= last => covered,
            Some(_) => {
                sqlx::query("DELETE FROM keys.dedupe")
                    .execute(&mut *tx)
                    .await?;
                0
            }
            None => 0,
        };
        if covered == last {
            tx.commit().await?;
            return Ok(added);
        }
        let upto = last.min(covered.saturating_add(CATCH_UP_CHUNK));
        let keys: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, dedupe_key FROM events WHERE id > ?1 AND id <= ?2 AND dedupe_key IS NOT NULL",
        )
        .bind(covered)
        .bind(upto)
        .fetch_all(&mut *tx)
        .await?;
        let mut entries: Vec<(i64, i64)> = keys.iter().map(|(id, key)| (hash(key), *id)).collect();
        // In hash order: neighbouring entries share pages.
        entries.sort_unstable();
        record(&mut tx, &entries, upto).await?;
        tx.commit().await?;
        added += entries.len() as u64;
    }
}

/// Records `entries` (hash, event id) and moves the watermark to `covered`,
/// in one statement. An entry replaces one with the same hash.
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    entries: &[(i64, i64)],
    covered: i64,
) -> Result<(), sqlx::Error> {
    use std::fmt::Write;
    let mut list = String::with_capacity((entries.len() + 1) * 44 + 2);
    list.push('[');
    for (h, id) in entries {
        let _ = write!(list, "[{h},{id}],");
    }
    let _ = write!(list, "[{WATERMARK},{covered}]]");
    sqlx::query(
        "INSERT OR REPLACE INTO keys.dedupe (h, event_id) \
         SELECT value ->> 0, value ->> 1 FROM json_each(?1)",
    )
    .bind(list)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Which of `keys` (source, key) are stored: the events whose entries have
/// the keys' hashes, as (source, key) pairs, to be compared with them.
pub(crate) async fn stored(
    conn: &mut SqliteConnection,
    hashes: &[i64],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    // CROSS JOIN keeps the hash list as the outer loop: one lookup each.
    sqlx::query_as(
        "SELECT e.source, e.dedupe_key FROM json_each(?1) j \
         CROSS JOIN keys.dedupe k ON k.h = j.value \
         CROSS JOIN events e ON e.id = k.event_id \
         WHERE e.dedupe_key IS NOT NULL",
    )
    .bind(id_list(hashes))
    .fetch_all(&mut *conn)
    .await
}

/// Removes the entries of `keys` whose events are gone (retention).
pub(crate) async fn forget(conn: &mut SqliteConnection, keys: &[&str]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let hashes: Vec<i64> = keys.iter().map(|key| hash(key)).collect();
    sqlx::query(
        "DELETE FROM keys.dedupe WHERE h IN (SELECT value FROM json_each(?1)) \
           AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.id = keys.dedupe.event_id)",
    )
    .bind(id_list(&hashes))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        accepted::{IngestBatch, NewEvent},
        Protocol, Route,
    };
    use crate::store::{writer::Writer, Store};

    fn track(keys: &[&str]) -> IngestBatch {
        IngestBatch {
            source: "web".to_owned(),
            protocol: Protocol::Segment,
            received_at: 1_000,
            meta: None,
            payload_id: None,
            routes: vec![Route::SegmentToLaunchDarkly],
            events: keys
                .iter()
                .map(|key| NewEvent {
                    dedupe_key: (*key).to_owned(),
                    kind: "track".to_owned(),
                    body: "{}".to_owned(),
                })
                .collect(),
            refusals: Vec::new(),
        }
    }

    /// (stored, duplicates) of each batch, submitted in turn by a writer
    /// started on `store` and stopped after.
    async fn submit(store: &Store, batches: Vec<IngestBatch>) -> Vec<(usize, usize)> {
        let (writer, task) = Writer::start(store, 16, |_| {}).await.unwrap();
        let mut counts = Vec::new();
        for batch in batches {
            let committed = writer.submit(batch).await.unwrap();
            counts.push((committed.stored, committed.duplicates));
        }
        drop(writer);
        task.await.unwrap();
        counts
    }

    async fn entries(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM keys.dedupe WHERE h != ?1")
            .bind(WATERMARK)
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_deleted_or_lagging_key_file_is_rebuilt_and_retries_stay_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store = Store::open(&db, &Default::default()).await.unwrap();
        let first = submit(&store, vec![track(&["a", "b"]), track(&["c"])]).await;
        assert_eq!(first, [(2, 0), (1, 0)]);
        assert_eq!(entries(&store).await, 3);
        // A crash after the database committed and before this file did:
        // the last commit's entry and watermark are missing.
        sqlx::query("DELETE FROM keys.dedupe WHERE h = ?1")
            .bind(hash("c"))
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE keys.dedupe SET event_id = 2 WHERE h = ?1")
            .bind(WATERMARK)
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
        let store = Store::open(&db, &Default::default()).await.unwrap();
        assert_eq!(entries(&store).await, 3);
        assert_eq!(submit(&store, vec![track(&["c", "d"])]).await, [(1, 1)]);
        store.close().await;

        // The file deleted: rebuilt from the events when the store opens.
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path(&db).into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
        let store = Store::open(&db, &Default::default()).await.unwrap();
        assert_eq!(entries(&store).await, 4);
        let again = submit(&store, vec![track(&["a", "b", "c", "d", "e"])]).await;
        assert_eq!(again, [(1, 4)]);
        store.close().await;
    }

    #[tokio::test]
    async fn an_entry_naming_another_event_never_makes_a_new_key_a_duplicate() {
        // A hash collision, or the entry of a commit that never reached the
        // database, whose event id now belongs to another event.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), &Default::default())
            .await
            .unwrap();
        assert_eq!(submit(&store, vec![track(&["old"])]).await, [(1, 0)]);
        sqlx::query("INSERT INTO keys.dedupe (h, event_id) VALUES (?1, 1)")
            .bind(hash("new"))
            .execute(store.pool())
            .await
            .unwrap();
        let counts = submit(&store, vec![track(&["new"]), track(&["new", "old"])]).await;
        assert_eq!(counts, [(1, 0), (0, 2)]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_key_file_ahead_of_the_database_is_emptied_and_rebuilt() {
        // The database restored from an older backup: the file names events
        // the database no longer has, and ids it will give to other events.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store = Store::open(&db, &Default::default()).await.unwrap();
        assert_eq!(
            submit(&store, vec![track(&["a", "b", "c"])]).await,
            [(3, 0)]
        );
        for sql in [
            "DELETE FROM deliveries WHERE event_id > 1",
            "DELETE FROM events WHERE id > 1",
        ] {
            sqlx::query(sql).execute(store.pool()).await.unwrap();
        }
        store.close().await;
        let store = Store::open(&db, &Default::default()).await.unwrap();
        assert_eq!(entries(&store).await, 1);
        let counts = submit(&store, vec![track(&["a", "b", "c"])]).await;
        assert_eq!(counts, [(2, 1)]);
        store.close().await;
    }

    #[test]
    fn hashes_are_stable_across_releases() {
        // Stored in the file: a change would make every stored key unknown.
        assert_eq!(
            hash("ac2d5fc4-0a64-4c5d-9b1f-2b6c6f1e0c11"),
            1_840_197_385_533_528_178
        );
        assert_ne!(hash("a"), hash("b"));
    }
}
