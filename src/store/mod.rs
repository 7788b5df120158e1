//! The only module that speaks SQL.
//!
//! Two backends behind one interface: the SQLite file (the default) and a
//! PostgreSQL database (`store.url`), which several nodes can share. The
//! functions of `batches`, `counts`, `delivery_log`, `maintenance`,
//! `refusals` and `writer` are the interface; each holds SQLite's SQL and
//! hands a PostgreSQL store to the function of the same name in
//! [`postgres`], which holds PostgreSQL's. Callers never know which one
//! they talk to.
//!
//! For SQLite it owns the file: opening it with the durability pragmas (WAL,
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

/// The SQLite pool of `$store`, or, on PostgreSQL, returns the result of
/// `$call` with the [`postgres::PgStore`] put before its arguments.
macro_rules! sqlite_or {
    ($store:expr, $($call:ident)::+ ( $($arg:expr),* $(,)? )) => {
        match $store.db() {
            $crate::store::Db::Sqlite(pool) => pool,
            $crate::store::Db::Postgres(pg) => {
                return $($call)::+(pg, $($arg),*).await.map_err(Into::into)
            }
        }
    };
}

pub mod batches;
pub mod copy;
pub mod counts;
pub mod delivery_log;
mod keys;
pub mod maintenance;
pub mod postgres;
pub mod refusals;
mod status;
pub mod writer;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

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
    /// This node's name, on PostgreSQL: the claims it takes carry it.
    pub node: String,
}

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The SQLite file at this path.
    Sqlite(PathBuf),
    /// The PostgreSQL database at this URL (it may hold a password: never
    /// logged; see [`Location::describe`]).
    Postgres(String),
}

impl Location {
    /// How to name it in logs and errors: the path, or the URL without its
    /// user's password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => postgres::redact(url),
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            synchronous_full: true,
            busy_timeout: Duration::from_secs(5),
            ingest_cap_bytes: None,
            refusal_log_rows: 100_000,
            node: "local".to_owned(),
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
    /// Another node took the events a batch was being formed from (only
    /// on PostgreSQL, where several nodes form batches): nothing was
    /// written; the next run forms batches from what is left.
    #[error("another node formed batches from these events first")]
    Raced,
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

/// An open database. For SQLite: a pool for reads and short writes
/// (dispatcher, CLI, admin) plus the path, so the ingest writer can open
/// its own connection. For PostgreSQL: [`postgres::PgStore`].
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
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

#[derive(Clone, Debug)]
enum Backend {
    Sqlite {
        pool: SqlitePool,
        options: SqliteConnectOptions,
    },
    Postgres(postgres::PgStore),
}

/// Which backend a store is, for the functions that hold both SQLs.
pub(crate) enum Db<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a postgres::PgStore),
}

impl Store {
    /// Opens the database at `location`: [`Store::open`] for a file, or
    /// a PostgreSQL database, migrated.
    pub async fn open_at(location: &Location, options: &StoreOptions) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => Store::open(path, options).await,
            Location::Postgres(url) => Ok(Store {
                backend: Backend::Postgres(postgres::PgStore::open(url, options).await?),
                busy_timeout: options.busy_timeout,
                ingest_cap_bytes: None,
                refusal_log_rows: options.refusal_log_rows,
                write_turn: Arc::default(),
            }),
        }
    }

    pub(crate) fn db(&self) -> Db<'_> {
        match &self.backend {
            Backend::Sqlite { pool, .. } => Db::Sqlite(pool),
            Backend::Postgres(pg) => Db::Postgres(pg),
        }
    }

    /// Whether this is a PostgreSQL store.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

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
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let added = keys::catch_up(&mut *pool.acquire().await?).await?;
        if added > 0 {
            tracing::info!(
                added,
                "Dedupe keys of stored events added to the dedupe key file."
            );
        }
        Ok(Store {
            backend: Backend::Sqlite {
                pool,
                options: connect,
            },
            busy_timeout: options.busy_timeout,
            ingest_cap_bytes: options.ingest_cap_bytes,
            refusal_log_rows: options.refusal_log_rows,
            write_turn: Arc::default(),
        })
    }

    /// Waits for this process's turn to write (see `write_turn`); the turn
    /// is held until the guard drops, after the commit.
    /// On PostgreSQL there is no turn to wait for (`None`): its row locks
    /// order writers.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite { .. } => Some(self.write_turn.lock().await),
            Backend::Postgres(_) => None,
        }
    }

    /// The SQLite pool, for tests that look inside the file.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        match &self.backend {
            Backend::Sqlite { pool, .. } => pool,
            Backend::Postgres(_) => panic!("a SQLite test was given a PostgreSQL store"),
        }
    }

    /// A dedicated connection, used by the single ingest writer so that its
    /// group commits never queue behind the pool.
    pub(crate) async fn dedicated_connection(&self) -> Result<SqliteConnection, StoreError> {
        let options = self.sqlite_options()?;
        let mut conn = SqliteConnection::connect_with(options).await?;
        keys::attach(&mut conn, options.get_filename()).await?;
        Ok(conn)
    }

    fn sqlite_options(&self) -> Result<&SqliteConnectOptions, StoreError> {
        match &self.backend {
            Backend::Sqlite { options, .. } => Ok(options),
            Backend::Postgres(_) => Err(StoreError::Sqlx(sqlx::Error::Configuration(
                "a SQLite connection was asked of a PostgreSQL store".into(),
            ))),
        }
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
        let Db::Sqlite(pool) = self.db() else {
            return Ok(None);
        };
        let (pages, free, page_size): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT page_count FROM pragma_page_count), \
                    (SELECT freelist_count FROM pragma_freelist_count), \
                    (SELECT page_size FROM pragma_page_size)",
        )
        .fetch_one(pool)
        .await?;
        let used = (pages - free).max(0) as u64 * page_size.max(0) as u64;
        Ok(Some(cap.saturating_sub(used)))
    }

    /// Copies what the WAL holds into the database file without blocking
    /// readers or the writer (PASSIVE). The daemon calls it every second,
    /// since the ingest writer never checkpoints on its own.
    /// Nothing to do on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let Db::Sqlite(pool) = self.db() else {
            return Ok(());
        };
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The WAL file's size in bytes (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        let Ok(options) = self.sqlite_options() else {
            return 0;
        };
        let mut wal = options.get_filename().as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |meta| meta.len())
    }

    /// Checkpoints everything and truncates the WAL to zero bytes. Waits for
    /// (and briefly blocks) writers: call it when ingest is idle.
    pub async fn truncate_wal(&self) -> Result<(), StoreError> {
        let Db::Sqlite(pool) = self.db() else {
            return Ok(());
        };
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { pool, .. } => pool.close().await,
            Backend::Postgres(pg) => pg.pool().close().await,
        }
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
