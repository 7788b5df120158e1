//! The only module that speaks SQL.
//!
//! Owns the SQLite file: opening it with the durability pragmas (WAL,
//! `synchronous=FULL` by default), applying `migrations/`, the group-commit
//! writer that ingest goes through ([`writer`]), and one function per query
//! for the dispatcher ([`batches`]) and the operator surface
//! ([`delivery_log`], [`maintenance`], [`refusals`]).
//! It makes no HTTP calls and decides no policy: callers pass in what to
//! write, including times.

/// An event's dedupe key in SQL, for a query joining `events e` with
/// [`event_request!`]: its own key, or one derived from its request's
/// payload id and its position ("<payload id>:<index>").
macro_rules! event_key {
    () => {
        "COALESCE(e.dedupe_key, q.payload_id || ':' || (e.id - q.first_event))"
    };
}

/// Joins an event `e` with its request `q` (payload id, metadata), if any.
macro_rules! event_request {
    () => {
        " LEFT JOIN requests q ON q.id = e.request "
    };
}

pub mod batches;
pub mod counts;
pub mod delivery_log;
mod keys;
pub mod maintenance;
pub mod refusals;
mod status;
pub mod writer;

use std::{path::Path, sync::Arc, time::Duration};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Connection;

use crate::domain::Route;

/// How the database file is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `true` (the default) makes every commit survive power loss;
    /// `false` (`synchronous=NORMAL`) only survives a process crash.
    pub synchronous_full: bool,
    /// How long a statement waits for another writer (CLI, dispatcher).
    pub busy_timeout: Duration,
    /// How large the ingest writer may grow the file (`None`: no cap). Other
    /// connections are not capped, so delivery bookkeeping continues when
    /// ingest is full.
    pub ingest_cap_bytes: Option<u64>,
    /// Rows the refusal log keeps (the newest).
    pub refusal_log_rows: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            synchronous_full: true,
            busy_timeout: Duration::from_secs(5),
            ingest_cap_bytes: None,
            refusal_log_rows: 100_000,
        }
    }
}

/// Errors from the store. Callers branch only on "it failed"; the cause
/// chain goes to the logs, never to HTTP clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn connect_options(path: &Path, options: &StoreOptions) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if options.synchronous_full {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .busy_timeout(options.busy_timeout)
        // Takes effect on new databases (set before the first table):
        // retention's `incremental_vacuum` can then shrink the file.
        .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental)
        // Also new databases only: with 4 KB pages a ~750-byte event row left
        // ~90 bytes of every page's tail unused; 8 KB pages cut the file by
        // ~7 % per event (measured, BENCHMARKS.md). Existing files keep theirs.
        .page_size(8192)
        .foreign_keys(true)
        // Multi-row inserts come in a handful of shapes per table; keep them all.
        .statement_cache_capacity(256)
        .pragma("temp_store", "memory")
        // No connection checkpoints inside its own commit: under ingest the
        // WAL holds hundreds of MB, and a dispatcher commit that crossed the
        // 1000-page mark copied all of it first. The daemon checkpoints in
        // the background (`Store::checkpoint`); closing the last connection
        // checkpoints too (the CLI).
        .pragma("wal_autocheckpoint", "0")
    // No `journal_size_limit`: SQLite would cut the WAL back inside the
    // commit that restarts it, and truncating a few hundred MB took
    // 120-360 ms, stalling every acknowledgement in that commit
    // (BENCHMARKS.md). The daemon truncates it while ingest is idle
    // instead (`Store::truncate_wal`).
}

/// An open database: a pool for reads and short writes (dispatcher, CLI,
/// admin) plus the path, so the ingest writer can open its own connection.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    options: SqliteConnectOptions,
    busy_timeout: Duration,
    ingest_cap_bytes: Option<u64>,
    refusal_log_rows: u64,
    /// Whose turn it is to write, in this process: every write transaction
    /// (the ingest writer's group commits, the dispatcher's, retention's,
    /// resend's) takes it before `BEGIN IMMEDIATE` and keeps it to the
    /// commit. Waiters are served first come, first served, so a dispatcher
    /// run waits for at most one group commit, never for a lock that the
    /// ingest writer, polling every millisecond, keeps winning (delivery
    /// starved while ingest was saturated). SQLite's own lock still orders
    /// this process against others (the CLI).
    write_turn: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens (creating if missing) the database at `path` and applies every
    /// pending migration. Fails if the file cannot be opened or migrated.
    pub async fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let connect = connect_options(path, options);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            // A COMMIT that fails in I/O (read-only file, full disk) leaves
            // sqlx counting the connection as inside a transaction (its
            // ROLLBACK then fails: SQLite already rolled back), and every
            // later BEGIN on it fails. Such a connection is closed, not
            // reused. The ping first runs any rollback a dropped transaction
            // queued.
            .after_release(|conn, _| {
                Box::pin(async move {
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            // Every connection sees the dedupe key file as `keys`.
            .after_connect({
                let database = path.to_owned();
                move |conn, _| {
                    let database = database.clone();
                    Box::pin(async move { keys::attach(conn, &database).await })
                }
            })
            .connect_with(connect.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let added = keys::catch_up(&mut *pool.acquire().await?).await?;
        if added > 0 {
            tracing::info!(
                added,
                "Dedupe keys of stored events added to the dedupe key file."
            );
        }
        Ok(Store {
            pool,
            options: connect,
            busy_timeout: options.busy_timeout,
            ingest_cap_bytes: options.ingest_cap_bytes,
            refusal_log_rows: options.refusal_log_rows,
            write_turn: Arc::default(),
        })
    }

    /// Waits for this process's turn to write (see `write_turn`); the turn
    /// is held until the guard drops, after the commit.
    pub(crate) async fn write_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_turn.lock().await
    }

    /// A dedicated connection, used by the single ingest writer so that its
    /// group commits never queue behind the pool.
    pub(crate) async fn dedicated_connection(&self) -> Result<SqliteConnection, StoreError> {
        let mut conn = SqliteConnection::connect_with(&self.options).await?;
        keys::attach(&mut conn, self.options.get_filename()).await?;
        Ok(conn)
    }

    /// How long a write may wait for another writer's lock.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Rows the refusal log keeps (`store.refusal_log_max_rows`).
    pub(crate) fn refusal_log_rows(&self) -> u64 {
        self.refusal_log_rows
    }

    /// The ingest writer's size cap (`store.max_database_bytes`).
    pub(crate) fn ingest_cap_bytes(&self) -> Option<u64> {
        self.ingest_cap_bytes
    }

    /// Bytes ingest may still add under `store.max_database_bytes`, counting
    /// free pages as room; `None` when there is no cap.
    pub async fn ingest_room(&self) -> Result<Option<u64>, StoreError> {
        let Some(cap) = self.ingest_cap_bytes else {
            return Ok(None);
        };
        let (pages, free, page_size): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT page_count FROM pragma_page_count), \
                    (SELECT freelist_count FROM pragma_freelist_count), \
                    (SELECT page_size FROM pragma_page_size)",
        )
        .fetch_one(&self.pool)
        .await?;
        let used = (pages - free).max(0) as u64 * page_size.max(0) as u64;
        Ok(Some(cap.saturating_sub(used)))
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Copies what the WAL holds into the database file without blocking
    /// readers or the writer (PASSIVE). The daemon calls it every second,
    /// since the ingest writer never checkpoints on its own.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The WAL file's size in bytes (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        let mut wal = self.options.get_filename().as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |meta| meta.len())
    }

    /// Checkpoints everything and truncates the WAL to zero bytes. Waits for
    /// (and briefly blocks) writers: call it when ingest is idle.
    pub async fn truncate_wal(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `[1,2,3]`: a list of ids as one bindable JSON value.
pub(crate) fn id_list(ids: &[i64]) -> String {
    let mut text = String::with_capacity(ids.len() * 8 + 2);
    text.push('[');
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push_str(&id.to_string());
    }
    text.push(']');
    text
}
