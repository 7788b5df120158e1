//! The single ingest writer: group commit.
//!
//! Ingest handlers never write themselves. They hand an [`IngestBatch`] to
//! [`Writer::submit`], which queues it on a bounded channel and waits for the
//! commit. One task drains whatever is queued into one transaction, commits
//! (one fsync for many requests) and answers each request only then. A full
//! queue is refused at once ([`WriteError::Busy`]) rather than growing memory.
//! A failed commit fails every request in it; nothing is acknowledged.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use sqlx::{sqlite::SqliteConnection, AssertSqlSafe, Connection};
use tokio::sync::{mpsc, oneshot};

use super::{
    counts::{Flow, Tally},
    keys, Store, StoreError,
};
use crate::domain::{
    accepted::{IngestBatch, NewRefusal},
    Route,
};

/// Upper bound of events drained into one transaction; keeps each commit's
/// latency (and the write lock hold time) small under heavy load.
const MAX_EVENTS_PER_COMMIT: usize = 20_000;
/// Rows per multi-row INSERT statement (the largest of the power-of-two shapes).
const MAX_ROWS_PER_STATEMENT: usize = 64;

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

pub(super) struct Job {
    pub(super) batch: IngestBatch,
    pub(super) reply: oneshot::Sender<Result<Committed, WriteError>>,
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
    /// Refusal log rows dropped as the oldest past its row cap.
    pub refusals_evicted: u64,
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
        let conn = open_conn(store).await?;
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
        if batch.events.is_empty() && batch.refusals.is_empty() {
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
    /// Queues `refusals` for the refusal log without waiting: they are
    /// written with the next commit. Returns false, recording nothing, when
    /// the queue is full (a flood of bad requests never delays good ones).
    pub fn record(&self, refusals: Vec<NewRefusal>) -> bool {
        if refusals.is_empty() {
            return true;
        }
        let (reply, _) = oneshot::channel();
        let job = Job {
            batch: IngestBatch::refusals_only(refusals),
            reply,
        };
        self.queue.try_send(job).is_ok()
    }

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
        let batch = IngestBatch::refusals_only(Vec::new());
        self.queue
            .send(Job { batch, reply })
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?.map(drop)
    }
}

/// Opens the writer's own connection.
/// The writer's own connection, to either backend.
enum Conn {
    Sqlite(SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Conn {
    async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            Conn::Sqlite(conn) => conn.close().await,
            Conn::Postgres(conn) => conn.close().await,
        }
    }
}

async fn open_conn(store: &Store) -> Result<Conn, StoreError> {
    Ok(match store.db() {
        super::Db::Sqlite(_) => Conn::Sqlite(connect(store).await?),
        super::Db::Postgres(pg) => Conn::Postgres(pg.connection().await?),
    })
}

async fn connect(store: &Store) -> Result<SqliteConnection, StoreError> {
    // Like every connection, it never checkpoints inside a commit
    // (`wal_autocheckpoint = 0`): that would delay acknowledgements by the
    // time it takes to copy and fsync the WAL.
    let mut conn = store.dedicated_connection().await?;
    // After a failed commit, the dedupe key file may lack the keys of one
    // that reached the database.
    keys::catch_up(&mut conn).await?;
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

/// The writer loop, kept whole so its states read in one place: drain the
/// queue into a group, commit, answer each request, report, back off.
async fn run(
    store: Store,
    conn: Conn,
    mut jobs: mpsc::Receiver<Job>,
    on_commit: impl Fn(CommitStats),
    health: Arc<Health>,
) {
    let budget = store.busy_timeout();
    // `None` after a failed commit: the connection is replaced before the
    // next one, since a commit that fails in I/O (a read-only file, a full
    // disk) can leave it stuck inside its transaction.
    let mut conn = Some(conn);
    // The id the next commit's first event takes, once a commit on this
    // connection has told it; `None` makes the commit read it.
    let mut next_id: Option<i64> = None;
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
            None => open_conn(&store).await.map_err(|error| error.to_string()),
        };
        let result = match open {
            Ok(mut open) => {
                let turn = store.write_turn().await;
                let refusal_rows = store.refusal_log_rows();
                let result = match &mut open {
                    Conn::Sqlite(conn) => {
                        commit(conn, &mut group, budget, refusal_rows, next_id).await
                    }
                    Conn::Postgres(conn) => {
                        super::postgres::writer::commit(conn, &mut group, refusal_rows).await
                    }
                };
                drop(turn);
                match &result {
                    Ok(done) => {
                        next_id = Some(done.next_id);
                        conn = Some(open);
                    }
                    Err(_) => {
                        next_id = None;
                        let _ = open.close().await;
                    }
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
            refusals_evicted: result.as_ref().map_or(0, |done| done.refusals_evicted),
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
            Ok(done) => {
                for (job, committed) in group.into_iter().zip(done.counts) {
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

/// What one commit did.
pub(super) struct Done {
    /// What it did with each request of the group, in order.
    pub(super) counts: Vec<Committed>,
    /// Old refusal log rows dropped to stay within the row cap.
    pub(super) refusals_evicted: u64,
    /// The id the next commit's first event takes.
    pub(super) next_id: i64,
}

/// Commits the group's events and refusals in one transaction. Its first
/// event takes id `next_id` (read from the table when `None`).
///
/// Kept whole: one transaction's statements in order (ids, events,
/// deliveries, refusals, the log's trim); split, its boundary would hide.
async fn commit(
    conn: &mut SqliteConnection,
    group: &mut [Job],
    budget: std::time::Duration,
    refusal_rows: u64,
    next_id: Option<i64>,
) -> Result<Done, sqlx::Error> {
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
    // Every row gets its id from here: the write lock is ours and ids are
    // above the highest (no AUTOINCREMENT), so job k's events are the ids
    // `plans[k].first ..` (one per event), whether or not one of them turns
    // out a duplicate (its id is then left unused). So the rows of every
    // request in the group go into the same few multi-row statements (one
    // per 64 rows, not one per request: each statement is a round trip to
    // sqlx's SQLite thread, two thread wake-ups), no `RETURNING id` is sent
    // back, and the delivery rows of consecutive requests taking the same
    // routes come from one `INSERT … SELECT` over their id range.
    //
    // Only this writer inserts events, so the highest id is read once per
    // connection, not once per commit (a round trip). Were a row inserted
    // behind its back, the id would collide with the primary key, the
    // commit fail (503: nothing acknowledged), the connection be replaced
    // and the id read again.
    let first: i64 = match next_id {
        Some(id) => id,
        None => {
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM events")
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let mut next = first;
    let mut plans = Vec::with_capacity(group.len());
    for job in group.iter() {
        let (rows, request) = match insert_request(&mut tx, &job.batch, next).await? {
            Request::Seen => (0, None),
            Request::Stored(request) => (job.batch.events.len(), request),
        };
        plans.push(Plan {
            first: next,
            rows,
            request,
        });
        next += rows as i64;
    }
    let check = check_keys(&mut tx, group, &plans).await?;
    insert_events(&mut tx, group, &plans, &check.duplicate).await?;
    if next > first {
        keys::record(&mut tx, &check.entries, next - 1).await?;
    }
    let stored = check.stored;
    for (plan, stored) in plans.iter().zip(&stored) {
        if let (Some(request), 0) = (plan.request, stored) {
            // Every event was a duplicate: the row would name none.
            sqlx::query("DELETE FROM requests WHERE id = ?1")
                .bind(request)
                .execute(&mut *tx)
                .await?;
        }
    }
    // One delivery statement per route for each run of consecutive jobs
    // taking the same routes.
    let mut from = 0;
    for end in 1..=group.len() {
        let routes = &group[from].batch.routes;
        if end < group.len() && group[end].batch.routes == *routes {
            continue;
        }
        let ids = plans[from].first..plans[end - 1].ids().end;
        if !ids.is_empty() {
            insert_deliveries(&mut tx, ids, routes).await?;
        }
        from = end;
    }
    let refusals: Vec<&NewRefusal> = group.iter().flat_map(|job| &job.batch.refusals).collect();
    let evicted = super::refusals::insert(&mut tx, &refusals, refusal_rows).await?;
    tally(group).write(&mut tx).await?;
    tx.commit().await?;
    let counts = group
        .iter()
        .zip(stored)
        .map(|(job, stored)| Committed {
            stored,
            duplicates: job.batch.events.len() - stored,
        })
        .collect();
    Ok(Done {
        counts,
        refusals_evicted: evicted,
        next_id: next,
    })
}

/// What a commit adds to the counts: each refusal recorded. (New events
/// are `pending`, counted from that index, and counted `received` by the
/// dispatcher run that first takes them: see `store::counts`.)
pub(super) fn tally(group: &[Job]) -> Tally {
    let mut tally = Tally::default();
    for refusal in group.iter().flat_map(|job| &job.batch.refusals) {
        let source = refusal.source.as_deref().unwrap_or_default();
        tally.flow(refusal.at, None, source, Flow::Refused, &refusal.code, 1);
    }
    tally
}

/// Where one request's events go in a commit.
struct Plan {
    /// The id of its first event.
    first: i64,
    /// How many rows it inserts (0 when its payload was stored before).
    rows: usize,
    /// Its `requests` row, if it has one.
    request: Option<i64>,
}

impl Plan {
    /// The ids its rows take (or leave unused, for duplicates).
    fn ids(&self) -> std::ops::Range<i64> {
        self.first..self.first + self.rows as i64
    }
}

/// Splits `n` rows into statements: 64-row chunks, then one statement for
/// the rest. A group of single-message requests (fewer than 64 rows) is
/// one statement, one round trip to sqlx's SQLite thread; 64 SQL strings
/// per table can exist, each prepared once on the writer's connection.
fn chunk_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    while n >= MAX_ROWS_PER_STATEMENT {
        sizes.push(MAX_ROWS_PER_STATEMENT);
        n -= MAX_ROWS_PER_STATEMENT;
    }
    if n > 0 {
        sizes.push(n);
    }
    sizes
}

/// The multi-row statement for `rows` rows (1 to 64), built once per shape.
fn cached_sql(
    cache: &'static [OnceLock<Arc<str>>; MAX_ROWS_PER_STATEMENT],
    rows: usize,
    build: fn(usize) -> String,
) -> Arc<str> {
    cache[rows - 1].get_or_init(|| build(rows).into()).clone()
}

fn events_sql(rows: usize) -> String {
    let values = vec!["(?,?,?,?,?,?,?,?)"; rows].join(",");
    format!(
        "INSERT INTO events (id, source, protocol, dedupe_key, request, kind, received_at, body) \
         VALUES {values}"
    )
}

/// The group's keys checked against those stored and against each other.
struct KeyCheck {
    /// For each event of the requests that insert rows, in order: whether
    /// its own key is stored already (or came earlier in the group).
    duplicate: Vec<bool>,
    /// The dedupe key file entries (hash, event id) of the others that have
    /// their own key.
    entries: Vec<(i64, i64)>,
    /// How many rows each request stores.
    stored: Vec<usize>,
}

/// Finds which of the group's events bring a key (Segment messageId,
/// LaunchDarkly diagnostic id) already stored for their source, earlier or
/// in this group: one lookup in the dedupe key file for the whole group.
/// Events of a payload (LaunchDarkly) have derived keys, checked with the
/// payload id instead.
async fn check_keys(
    conn: &mut SqliteConnection,
    group: &[Job],
    plans: &[Plan],
) -> Result<KeyCheck, sqlx::Error> {
    let mut duplicate = Vec::new();
    // (index into `duplicate`, source, key, hash, event id) of each first
    // occurrence in the group.
    let mut candidates = Vec::new();
    let mut in_group = HashSet::new();
    for (job, plan) in group.iter().zip(plans) {
        let batch = &job.batch;
        if plan.rows == 0 {
            continue;
        }
        if batch.payload_id.is_some() {
            duplicate.resize(duplicate.len() + plan.rows, false);
            continue;
        }
        for (event, id) in batch.events.iter().zip(plan.ids()) {
            let key = event.dedupe_key.as_str();
            let first = in_group.insert((batch.source.as_str(), key));
            if first {
                candidates.push((
                    duplicate.len(),
                    batch.source.as_str(),
                    key,
                    keys::hash(key),
                    id,
                ));
            }
            duplicate.push(!first);
        }
    }
    let hashes: Vec<i64> = candidates.iter().map(|candidate| candidate.3).collect();
    let found = keys::stored(conn, &hashes).await?;
    let found: HashSet<(&str, &str)> = found
        .iter()
        .map(|(source, key)| (source.as_str(), key.as_str()))
        .collect();
    let mut entries = Vec::with_capacity(candidates.len());
    for (index, source, key, hash, id) in candidates {
        if found.contains(&(source, key)) {
            duplicate[index] = true;
        } else {
            entries.push((hash, id));
        }
    }
    let mut from = 0;
    let stored = plans
        .iter()
        .map(|plan| {
            let rows = &duplicate[from..from + plan.rows];
            from += plan.rows;
            rows.iter().filter(|duplicate| !**duplicate).count()
        })
        .collect();
    Ok(KeyCheck {
        duplicate,
        entries,
        stored,
    })
}

/// Where a request's shared row stands.
enum Request {
    /// Its payload was stored before: every event is a duplicate.
    Seen,
    /// Its `requests` row (`None`: it needs none).
    Stored(Option<i64>),
}

/// Stores the shared row of `batch` (payload id, metadata), if it has
/// one, for events that will get ids from `first` on. A payload id
/// already stored for the source, in this form or as the text keys of
/// events stored before migration 0004, makes the whole request a duplicate.
async fn insert_request(
    conn: &mut SqliteConnection,
    batch: &IngestBatch,
    first: i64,
) -> Result<Request, sqlx::Error> {
    if batch.meta.is_none() && batch.payload_id.is_none() {
        return Ok(Request::Stored(None));
    }
    if let Some(payload_id) = &batch.payload_id {
        let seen: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM requests WHERE payload_id = ?1 AND source = ?2) \
                 OR EXISTS (SELECT 1 FROM events WHERE protocol = 'launchdarkly' \
                     AND dedupe_key = ?1 || ':0' AND source = ?2)",
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
    .bind(first)
    .bind(batch.events.len() as i64)
    .execute(&mut *conn)
    .await?;
    Ok(Request::Stored(Some(done.last_insert_rowid())))
}

static EVENTS_SQL: [OnceLock<Arc<str>>; MAX_ROWS_PER_STATEMENT] =
    [const { OnceLock::new() }; MAX_ROWS_PER_STATEMENT];

/// Inserts the events of the group's jobs where `plans` place them, except
/// those `duplicate` marks (their ids are left unused). The events' strings
/// are moved into the statements (nothing is copied): after this call the
/// jobs hold empty strings.
async fn insert_events(
    conn: &mut SqliteConnection,
    group: &mut [Job],
    plans: &[Plan],
    duplicate: &[bool],
) -> Result<(), sqlx::Error> {
    // Collected first (the strings are moved, not copied): an iterator of
    // closures held across the awaits below would make this future not `Send`.
    let mut events = Vec::with_capacity(duplicate.len());
    let mut duplicate = duplicate.iter();
    for (job, plan) in group.iter_mut().zip(plans) {
        let batch = &mut job.batch;
        if plan.rows == 0 {
            continue;
        }
        // Shared by a request's rows: bound as `Arc<str>`, which sqlx keeps
        // without copying.
        let source: Arc<str> = Arc::from(batch.source.as_str());
        let protocol: Arc<str> = Arc::from(batch.protocol.as_str());
        // Keys derived from the payload id are not stored.
        let own_keys = batch.payload_id.is_none();
        for (event, id) in batch.events.iter_mut().zip(plan.ids()) {
            if duplicate.next() == Some(&true) {
                continue;
            }
            events.push(Row {
                id,
                source: Arc::clone(&source),
                protocol: Arc::clone(&protocol),
                dedupe_key: own_keys.then(|| std::mem::take(&mut event.dedupe_key)),
                request: plan.request,
                kind: std::mem::take(&mut event.kind),
                received_at: batch.received_at,
                body: std::mem::take(&mut event.body),
            });
        }
    }
    let rows = events.len();
    let mut events = events.into_iter();
    for size in chunk_sizes(rows) {
        let sql = cached_sql(&EVENTS_SQL, size, events_sql);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in events.by_ref().take(size) {
            query = query
                .bind(row.id)
                .bind(row.source)
                .bind(row.protocol)
                .bind(row.dedupe_key)
                .bind(row.request)
                .bind(row.kind)
                .bind(row.received_at)
                .bind(row.body);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One `events` row's values.
struct Row {
    id: i64,
    source: Arc<str>,
    protocol: Arc<str>,
    dedupe_key: Option<String>,
    request: Option<i64>,
    kind: String,
    received_at: i64,
    body: String,
}

/// One `pending` delivery per route for every event with an id in `ids`:
/// one statement for every route, rows in key order (event, route), so
/// they append to the table instead of a second route's rows going in
/// between the first's.
async fn insert_deliveries(
    conn: &mut SqliteConnection,
    ids: std::ops::Range<i64>,
    routes: &[Route],
) -> Result<(), sqlx::Error> {
    let mut codes: Vec<i64> = routes.iter().map(|route| route.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    let query = match codes.as_slice() {
        [] => return Ok(()),
        // One route (most sources): no join, which costs per row.
        [code] => sqlx::query(
            "INSERT INTO deliveries (event_id, route, status) \
             SELECT id, ?3, 'pending' FROM events WHERE id >= ?1 AND id < ?2 ORDER BY id",
        )
        .bind(ids.start)
        .bind(ids.end)
        .bind(*code),
        codes => sqlx::query(
            "INSERT INTO deliveries (event_id, route, status) \
             SELECT e.id, r.value, 'pending' FROM events e, json_each(?3) r \
             WHERE e.id >= ?1 AND e.id < ?2 ORDER BY e.id, r.value",
        )
        .bind(ids.start)
        .bind(ids.end)
        .bind(format!("{codes:?}")),
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{accepted::NewEvent, Protocol};

    fn job(
        protocol: Protocol,
        payload_id: Option<&str>,
        keys: &[&str],
        routes: &[Route],
    ) -> (Job, oneshot::Receiver<Result<Committed, WriteError>>) {
        let (reply, answer) = oneshot::channel();
        let batch = IngestBatch {
            source: "s".to_owned(),
            protocol,
            received_at: 1_000,
            meta: payload_id.map(|_| r#"{"schema":4}"#.to_owned()),
            payload_id: payload_id.map(str::to_owned),
            routes: routes.to_vec(),
            events: keys
                .iter()
                .map(|key| NewEvent {
                    dedupe_key: (*key).to_owned(),
                    kind: "track".to_owned(),
                    body: format!(r#"{{"key":"{key}"}}"#),
                })
                .collect(),
            refusals: Vec::new(),
        };
        (Job { batch, reply }, answer)
    }

    /// (body, route code) of every delivery, in event order.
    async fn deliveries(conn: &mut SqliteConnection) -> Vec<(String, i64)> {
        sqlx::query_as(
            "SELECT e.body, d.route FROM deliveries d JOIN events e ON e.id = d.event_id \
             ORDER BY e.id, d.route",
        )
        .fetch_all(conn)
        .await
        .unwrap()
    }

    /// Commits `job` alone, as a group of one.
    async fn commit_one(
        conn: &mut SqliteConnection,
        mut job: Job,
        next_id: Option<i64>,
    ) -> Result<Done, sqlx::Error> {
        let budget = std::time::Duration::from_secs(1);
        commit(conn, std::slice::from_mut(&mut job), budget, 10, next_id).await
    }

    #[tokio::test]
    async fn one_commit_of_many_requests_counts_each_requests_duplicates_and_routes_its_own_events()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), &Default::default())
            .await
            .unwrap();
        let mut conn = connect(&store).await.unwrap();
        let budget = store.busy_timeout();
        let (to_ld, relay, to_segment) = (
            Route::SegmentToLaunchDarkly,
            Route::SegmentRelay,
            Route::LaunchDarklyToSegment,
        );
        let (earlier, _) = job(Protocol::Segment, None, &["old"], &[to_ld]);
        let done = commit_one(&mut conn, earlier, None).await.unwrap();

        let mut group: Vec<Job> = [
            job(Protocol::Segment, None, &["a1", "a2"], &[to_ld]),
            // a2 again, within the same commit.
            job(Protocol::Segment, None, &["a2", "b1"], &[to_ld]),
            // Stored by the earlier commit.
            job(Protocol::Segment, None, &["old"], &[to_ld, relay]),
            job(Protocol::Segment, None, &["c1", "c2"], &[to_ld, relay]),
            job(
                Protocol::LaunchDarkly,
                Some("p1"),
                &["p1:0", "p1:1"],
                &[to_segment],
            ),
            // The same payload again: the whole request is a duplicate.
            job(
                Protocol::LaunchDarkly,
                Some("p1"),
                &["p1:0", "p1:1"],
                &[to_segment],
            ),
            job(Protocol::Segment, None, &["d1"], &[to_ld]),
        ]
        .into_iter()
        .map(|(job, _)| job)
        .collect();
        // The id the earlier commit handed on, as the writer's loop does.
        let done = commit(&mut conn, &mut group, budget, 10, Some(done.next_id))
            .await
            .unwrap();
        let counts: Vec<(usize, usize)> = done
            .counts
            .iter()
            .map(|c| (c.stored, c.duplicates))
            .collect();
        assert_eq!(
            counts,
            [(2, 0), (1, 1), (0, 1), (2, 0), (2, 0), (0, 2), (1, 0)]
        );

        let body = |key: &str| format!(r#"{{"key":"{key}"}}"#);
        let expected: Vec<(String, i64)> = [
            ("old", to_ld),
            ("a1", to_ld),
            ("a2", to_ld),
            ("b1", to_ld),
            ("c1", to_ld),
            ("c1", relay),
            ("c2", to_ld),
            ("c2", relay),
            ("p1:0", to_segment),
            ("p1:1", to_segment),
            ("d1", to_ld),
        ]
        .iter()
        .map(|(key, route)| (body(key), route.code()))
        .collect();
        let mut got = deliveries(&mut conn).await;
        got.sort_by_key(|(_, route)| *route);
        let mut expected = expected;
        expected.sort_by_key(|(_, route)| *route);
        assert_eq!(got, expected);

        // The payload's events are its request's first_event onwards, as
        // derived keys need.
        let (first, count): (i64, i64) =
            sqlx::query_as("SELECT first_event, event_count FROM requests WHERE payload_id = 'p1'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM events WHERE id >= ?1 AND id < ?1 + ?2 ORDER BY id",
        )
        .bind(first)
        .bind(count)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(bodies, [body("p1:0"), body("p1:1")]);
        conn.close().await.unwrap();
        store.close().await;
    }

    #[tokio::test]
    async fn an_event_id_taken_behind_the_writers_back_fails_the_commit_and_the_next_reads_it_again(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), &Default::default())
            .await
            .unwrap();
        let mut conn = connect(&store).await.unwrap();
        let route = [Route::SegmentToLaunchDarkly];
        let (first, _) = job(Protocol::Segment, None, &["a"], &route);
        let done = commit_one(&mut conn, first, None).await.unwrap();
        // Another connection stores the id the writer would use next.
        sqlx::query(
            "INSERT INTO events (id, source, protocol, kind, received_at, body) \
             VALUES (?1, 's', 'segment', 'track', 0, '{}')",
        )
        .bind(done.next_id)
        .execute(store.pool())
        .await
        .unwrap();
        let (second, _) = job(Protocol::Segment, None, &["b"], &route);
        let failed = commit_one(&mut conn, second, Some(done.next_id)).await;
        assert!(failed.is_err(), "a colliding id must fail the commit");
        // As the writer's loop does after a failure: a new connection, the
        // id read again. Nothing of the failed commit was kept.
        conn.close().await.unwrap();
        let mut conn = connect(&store).await.unwrap();
        let (retried, _) = job(Protocol::Segment, None, &["b"], &route);
        let done = commit_one(&mut conn, retried, None).await.unwrap();
        assert_eq!(done.counts[0].stored, 1);
        let keys: Vec<Option<String>> =
            sqlx::query_scalar("SELECT dedupe_key FROM events ORDER BY id")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(keys, [Some("a".to_owned()), None, Some("b".to_owned())]);
        conn.close().await.unwrap();
        store.close().await;
    }

    #[test]
    fn chunk_sizes_cover_every_row_in_as_few_statements_as_64_rows_allow() {
        assert_eq!(chunk_sizes(0), Vec::<usize>::new());
        assert_eq!(chunk_sizes(1), vec![1]);
        assert_eq!(chunk_sizes(31), vec![31]);
        assert_eq!(chunk_sizes(100), vec![64, 36]);
        assert_eq!(chunk_sizes(128), vec![64, 64]);
        for n in 0..300 {
            let sizes = chunk_sizes(n);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert_eq!(sizes.len(), n.div_ceil(64));
            assert!(sizes.iter().all(|s| (1..=64).contains(s)));
        }
    }
}
