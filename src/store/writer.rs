//! The single ingest writer: group commit.
//!
//! Ingest handlers never write themselves. They hand an [`IngestBatch`] to
//! [`Writer::submit`], which queues it on a bounded channel and waits for the
//! commit. One task drains whatever is queued into one transaction, commits
//! (one fsync for many requests) and answers each request only then. A full
//! queue is refused at once ([`WriteError::Busy`]) rather than growing memory.
//! A failed commit fails every request in it; nothing is acknowledged.

use std::sync::{Arc, OnceLock};

use sqlx::{sqlite::SqliteConnection, AssertSqlSafe, Connection};
use tokio::sync::{mpsc, oneshot};

use super::{Protocol, Route, Store, StoreError};

/// Upper bound of events drained into one transaction; keeps each commit's
/// latency (and the write lock hold time) small under heavy load.
const MAX_EVENTS_PER_COMMIT: usize = 20_000;
/// Rows per multi-row INSERT statement (the largest of the power-of-two shapes).
const MAX_ROWS_PER_STATEMENT: usize = 64;

/// One event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Segment `messageId`, or LaunchDarkly `"<payload id>:<index>"`.
    pub dedupe_key: String,
    /// Segment message type or LaunchDarkly event kind.
    pub kind: String,
    /// The event JSON as it will be stored.
    pub body: String,
}

/// The events of one inbound request: all from one source, all taking the
/// same routes.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub source: String,
    pub protocol: Protocol,
    pub received_at: i64,
    /// Protocol extras shared by every event of the request (JSON), if any.
    pub meta: Option<String>,
    /// A LaunchDarkly payload id: the request is stored once per (payload
    /// id, source), as a whole, and its events' dedupe keys are derived
    /// from it ("<payload id>:<index>"); their own keys are not stored.
    /// `None`: each event is deduplicated by its own `dedupe_key`.
    pub payload_id: Option<String>,
    /// One `pending` delivery per route is created for every new event.
    pub routes: Vec<Route>,
    pub events: Vec<NewEvent>,
}

/// What a commit did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Events newly stored.
    pub stored: usize,
    /// Events already stored earlier (same source and dedupe key), acknowledged
    /// but not stored again.
    pub duplicates: usize,
}

/// Why a request was not committed. Both mean: answer 503 with Retry-After.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the ingest queue is full")]
    Busy,
    #[error("the ingest writer has stopped")]
    Closed,
    #[error("commit failed: {0}")]
    Commit(String),
}

struct Job {
    batch: IngestBatch,
    reply: oneshot::Sender<Result<Committed, WriteError>>,
}

/// Handle to the writer task. Cloning is cheap; the task ends once every
/// handle is dropped and the queue is drained.
#[derive(Clone, Debug)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    health: Arc<Health>,
}

/// What the writer task reports about itself.
#[derive(Debug, Default)]
struct Health {
    /// The last commit's failure (when, in ms, and why), cleared by the next
    /// commit that succeeds.
    failure: std::sync::Mutex<Option<(i64, String)>>,
    /// When (Unix ms) the last commit of events ended.
    last_commit: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("source", &self.batch.source)
            .finish()
    }
}

/// Commit statistics, reported by the writer after each transaction.
#[derive(Debug, Clone, Copy)]
pub struct CommitStats {
    pub requests: usize,
    pub events: usize,
    pub duration: std::time::Duration,
    pub ok: bool,
}

impl Writer {
    /// Starts the writer on its own connection. `queue_len` bounds the number
    /// of requests waiting for a commit. `on_commit` is called after every
    /// transaction (metrics, liveness).
    pub async fn start(
        store: &Store,
        queue_len: usize,
        on_commit: impl Fn(CommitStats) + Send + 'static,
    ) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
        let conn = connect(store).await?;
        let (queue, jobs) = mpsc::channel(queue_len.max(1));
        let health = Arc::<Health>::default();
        let task = tokio::spawn(run(
            store.clone(),
            conn,
            jobs,
            on_commit,
            Arc::clone(&health),
        ));
        Ok((Writer { queue, health }, task))
    }

    /// Queues `batch` and waits until it is committed. Returns how many
    /// events were new; fails without waiting when the queue is full.
    pub async fn submit(&self, batch: IngestBatch) -> Result<Committed, WriteError> {
        if batch.events.is_empty() {
            return Ok(Committed {
                stored: 0,
                duplicates: 0,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job { batch, reply })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => WriteError::Busy,
                mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
            })?;
        answer.await.map_err(|_| WriteError::Closed)?
    }
}

impl Writer {
    /// When and why the last commit failed, unless one has succeeded since.
    pub fn last_failure(&self) -> Option<(i64, String)> {
        self.health
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// When (Unix ms) ingest last committed events; 0 if never.
    pub fn last_commit_ms(&self) -> i64 {
        self.health
            .last_commit
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Proves the writer is alive and committing: an empty transaction
    /// through its queue (waiting for room, unlike `submit`).
    pub async fn ping(&self) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        let batch = IngestBatch {
            source: String::new(),
            protocol: Protocol::Segment,
            received_at: 0,
            meta: None,
            payload_id: None,
            routes: Vec::new(),
            events: Vec::new(),
        };
        self.queue
            .send(Job { batch, reply })
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?.map(drop)
    }
}

/// Opens the writer's own connection.
async fn connect(store: &Store) -> Result<SqliteConnection, StoreError> {
    // Like every connection, it never checkpoints inside a commit
    // (`wal_autocheckpoint = 0`): that would delay acknowledgements by the
    // time it takes to copy and fsync the WAL.
    let mut conn = store.dedicated_connection().await?;
    // SQLite's busy handler backs off to 100 ms sleeps and can miss the
    // short gaps another writer (retention, the CLI) leaves between its
    // transactions; the writer polls every millisecond itself instead
    // (`begin`), up to the configured busy timeout.
    sqlx::query("PRAGMA busy_timeout = 2")
        .execute(&mut conn)
        .await?;
    if let Some(cap) = store.ingest_cap_bytes() {
        // SQLite refuses to grow the file past this (SQLITE_FULL): the
        // commit fails, nothing is acknowledged, and the answer is 503.
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut conn)
            .await?;
        let pages = cap / page_size.max(512) as u64;
        sqlx::query(AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))
            .execute(&mut conn)
            .await?;
    }
    Ok(conn)
}

async fn run(
    store: Store,
    conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    on_commit: impl Fn(CommitStats),
    health: Arc<Health>,
) {
    let budget = store.busy_timeout();
    // `None` after a failed commit: the connection is replaced before the
    // next one, since a commit that fails in I/O (a read-only file, a full
    // disk) can leave it stuck inside its transaction.
    let mut conn = Some(conn);
    while let Some(first) = jobs.recv().await {
        let mut events = first.batch.events.len();
        let mut group = vec![first];
        while events < MAX_EVENTS_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => {
                    events += job.batch.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let open = match conn.take() {
            Some(open) => Ok(open),
            None => connect(&store).await.map_err(|error| error.to_string()),
        };
        let result = match open {
            Ok(mut open) => {
                let result = commit(&mut open, &mut group, budget).await;
                if result.is_ok() {
                    conn = Some(open);
                } else {
                    let _ = open.close().await;
                }
                result.map_err(|error| error.to_string())
            }
            Err(error) => Err(error),
        };
        on_commit(CommitStats {
            requests: group.len(),
            events,
            duration: started.elapsed(),
            ok: result.is_ok(),
        });
        let now = crate::clock::now_ms();
        if events > 0 {
            // Liveness pings (empty commits) do not count as ingest.
            health
                .last_commit
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        *health
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = match &result {
            Ok(_) => None,
            Err(error) => Some((now, error.clone())),
        };
        match result {
            Ok(counts) => {
                for (job, committed) in group.into_iter().zip(counts) {
                    let _ = job.reply.send(Ok(committed));
                }
            }
            Err(error) => {
                tracing::warn!(%error, requests = group.len(), "Ingest commit failed; requests refused.");
                for job in group {
                    let _ = job.reply.send(Err(WriteError::Commit(error.clone())));
                }
            }
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// Whether `error` is SQLITE_BUSY (any extended form): another connection
/// holds the write lock.
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == 5),
        _ => false,
    }
}

async fn commit(
    conn: &mut SqliteConnection,
    group: &mut [Job],
    budget: std::time::Duration,
) -> Result<Vec<Committed>, sqlx::Error> {
    // IMMEDIATE takes the write lock up front, so a wait for another writer
    // happens here, not mid-transaction; polled every millisecond.
    let deadline = std::time::Instant::now() + budget;
    let mut tx = loop {
        match conn.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => break tx,
            Err(error) if is_busy(&error) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(error) => return Err(error),
        }
    };
    // Rows get ids above the highest one (no AUTOINCREMENT, and the write
    // lock is ours), so each job's new rows are the ids in (before, last]:
    // no `RETURNING id` (one row sent back across the sqlx worker channel
    // per event) and no delivery row bound one by one. Consecutive jobs
    // taking the same routes share one delivery statement per route.
    let mut before: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    let mut open: Option<(i64, &[Route])> = None; // (range start, routes)
    let mut counts = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        let events = job.batch.events.len();
        let (stored, last) = match insert_request(&mut tx, &job.batch, before).await? {
            Request::Seen => (0, before),
            Request::Stored(request) => {
                let done = insert_events(&mut tx, &mut job.batch, request).await?;
                if let (Some(request), 0) = (request, done.0) {
                    // Every event was a duplicate: the row would name none.
                    sqlx::query("DELETE FROM requests WHERE id = ?1")
                        .bind(request)
                        .execute(&mut *tx)
                        .await?;
                }
                done
            }
        };
        counts.push(Committed {
            stored,
            duplicates: events - stored,
        });
        if stored == 0 {
            continue;
        }
        match open {
            Some((_, routes)) if routes == job.batch.routes.as_slice() => {}
            Some((from, routes)) => {
                insert_deliveries(&mut tx, from, before, routes).await?;
                open = Some((before, &job.batch.routes));
            }
            None => open = Some((before, &job.batch.routes)),
        }
        before = last;
    }
    if let Some((from, routes)) = open {
        insert_deliveries(&mut tx, from, before, routes).await?;
    }
    tx.commit().await?;
    Ok(counts)
}

/// Splits `n` rows into statement shapes: 64-row chunks, then the binary
/// digits of the remainder, so only seven SQL strings per table ever exist.
fn chunk_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    while n >= MAX_ROWS_PER_STATEMENT {
        sizes.push(MAX_ROWS_PER_STATEMENT);
        n -= MAX_ROWS_PER_STATEMENT;
    }
    let mut bit = MAX_ROWS_PER_STATEMENT / 2;
    while bit > 0 {
        if n & bit != 0 {
            sizes.push(bit);
        }
        bit /= 2;
    }
    sizes
}

/// The multi-row statement for `rows` rows, built once per shape.
fn cached_sql(
    cache: &'static [OnceLock<Arc<str>>; 7],
    rows: usize,
    build: fn(usize) -> String,
) -> Arc<str> {
    let slot = rows.trailing_zeros() as usize;
    cache[slot].get_or_init(|| build(rows).into()).clone()
}

fn events_sql(rows: usize) -> String {
    let values = vec!["(?,?,?,?,?,?,?)"; rows].join(",");
    format!(
        "INSERT INTO events (source, protocol, dedupe_key, request, kind, received_at, body) \
         VALUES {values} ON CONFLICT (dedupe_key, source) WHERE dedupe_key IS NOT NULL DO NOTHING"
    )
}

/// Where a request's shared row stands.
enum Request {
    /// Its payload was stored before: every event is a duplicate.
    Seen,
    /// Its `requests` row (`None`: it needs none).
    Stored(Option<i64>),
}

/// Stores the shared row of `batch` (payload id, metadata), if it has
/// one, for events that will get ids from `before + 1`. A payload id
/// already stored for the source, in this form or as the text keys of
/// events stored before migration 0004, makes the whole request a duplicate.
async fn insert_request(
    conn: &mut SqliteConnection,
    batch: &IngestBatch,
    before: i64,
) -> Result<Request, sqlx::Error> {
    if batch.meta.is_none() && batch.payload_id.is_none() {
        return Ok(Request::Stored(None));
    }
    if let Some(payload_id) = &batch.payload_id {
        let seen: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM requests WHERE payload_id = ?1 AND source = ?2) \
                 OR EXISTS (SELECT 1 FROM events WHERE dedupe_key = ?1 || ':0' AND source = ?2)",
        )
        .bind(payload_id)
        .bind(&batch.source)
        .fetch_one(&mut *conn)
        .await?;
        if seen {
            return Ok(Request::Seen);
        }
    }
    let done = sqlx::query(
        "INSERT INTO requests (source, payload_id, meta, first_event, event_count) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(&batch.source)
    .bind(&batch.payload_id)
    .bind(&batch.meta)
    .bind(before + 1)
    .bind(batch.events.len() as i64)
    .execute(&mut *conn)
    .await?;
    Ok(Request::Stored(Some(done.last_insert_rowid())))
}

static EVENTS_SQL: [OnceLock<Arc<str>>; 7] = [const { OnceLock::new() }; 7];

/// Inserts the events of `batch`, skipping those already stored; returns
/// how many were new and the id of the last one. The events' strings are moved into the statement
/// (nothing is copied): after this call `batch.events` holds empty strings.
async fn insert_events(
    conn: &mut SqliteConnection,
    batch: &mut IngestBatch,
    request: Option<i64>,
) -> Result<(usize, i64), sqlx::Error> {
    // Shared by every row: bound as `Arc<str>`, which sqlx keeps without copying.
    let source: Arc<str> = Arc::from(batch.source.as_str());
    let protocol: Arc<str> = Arc::from(batch.protocol.as_str());
    // Keys derived from the payload id are not stored.
    let own_keys = batch.payload_id.is_none();
    let (mut stored, mut last) = (0, 0);
    let mut rest = &mut batch.events[..];
    for rows in chunk_sizes(rest.len()) {
        let (chunk, tail) = rest.split_at_mut(rows);
        rest = tail;
        let sql = cached_sql(&EVENTS_SQL, rows, events_sql);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for event in chunk {
            query = query
                .bind(Arc::clone(&source))
                .bind(Arc::clone(&protocol))
                .bind(own_keys.then(|| std::mem::take(&mut event.dedupe_key)))
                .bind(request)
                .bind(std::mem::take(&mut event.kind))
                .bind(batch.received_at)
                .bind(std::mem::take(&mut event.body));
        }
        let done = query.execute(&mut *conn).await?;
        if done.rows_affected() > 0 {
            stored += done.rows_affected() as usize;
            last = done.last_insert_rowid();
        }
    }
    Ok((stored, last))
}

/// One `pending` delivery per route for every event with an id in
/// (`after`, `last`].
async fn insert_deliveries(
    conn: &mut SqliteConnection,
    after: i64,
    last: i64,
    routes: &[Route],
) -> Result<(), sqlx::Error> {
    for route in routes {
        sqlx::query(
            "INSERT INTO deliveries (event_id, route, status) \
             SELECT id, ?3, 'pending' FROM events WHERE id > ?1 AND id <= ?2 ORDER BY id",
        )
        .bind(after)
        .bind(last)
        .bind(route.code())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::chunk_sizes;

    #[test]
    fn chunk_sizes_cover_every_row_with_few_shapes() {
        assert_eq!(chunk_sizes(0), Vec::<usize>::new());
        assert_eq!(chunk_sizes(1), vec![1]);
        assert_eq!(chunk_sizes(100), vec![64, 32, 4]);
        assert_eq!(chunk_sizes(128), vec![64, 64]);
        for n in 0..300 {
            let sizes = chunk_sizes(n);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= 64));
        }
    }
}
