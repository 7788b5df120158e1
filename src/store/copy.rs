//! `ldbridge store copy`: moves a database from one backend to the other
//! (SQLite to PostgreSQL and back), every table with its ids, dedupe keys,
//! statuses and counts, in chunks of rows, each chunk one transaction.
//!
//! Safe to rerun: every row is upserted by its key, so a second run (after
//! an interrupted one, or after the source moved on) leaves the target
//! equal to the source. The source should not change while it copies
//! (stop the daemon): rows changed mid-copy are taken as they were read.
//!
//! The few differences between the backends' schemas are bridged here:
//! a LaunchDarkly event's dedupe key, derived from its request in SQLite,
//! is written out in PostgreSQL; a request's first event and span, which
//! SQLite relies on, are computed from its events when copying back.

use sqlx::{Postgres, QueryBuilder, Row, Sqlite};

use super::{Db, Store, StoreError};

/// Rows read per chunk (and written per transaction).
const CHUNK: i64 = 2_000;

/// A column's type as copied.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
}

/// One table: its columns (the key first), and how each backend selects
/// them when it is the source.
struct Table {
    name: &'static str,
    /// How many of the leading columns are the key (upserts conflict on it,
    /// chunks follow it).
    key: usize,
    columns: &'static [(&'static str, Kind)],
    /// `SELECT` expressions and `FROM` on SQLite, in `columns` order.
    sqlite: (&'static str, &'static str),
    /// The same on PostgreSQL.
    postgres: (&'static str, &'static str),
    /// Its `id` is a PostgreSQL serial whose sequence must move past the
    /// copied ids.
    serial: bool,
}

use Kind::{Int, Text};

/// Parents before children (foreign keys): requests, events and profiles
/// before batches, batches before deliveries and attempts.
const TABLES: &[Table] = &[
    Table {
        name: "requests",
        key: 1,
        columns: &[
            ("id", Int),
            ("source", Text),
            ("payload_id", Text),
            ("meta", Text),
            ("first_event", Int),
            ("event_count", Int),
        ],
        sqlite: (
            "t.id, t.source, t.payload_id, t.meta, t.first_event, t.event_count",
            "requests t",
        ),
        postgres: (
            "t.id, t.source, t.payload_id, t.meta, \
             COALESCE((SELECT MIN(e.id) FROM events e WHERE e.request = t.id), 0), \
             COALESCE((SELECT MAX(e.id) - MIN(e.id) + 1 FROM events e WHERE e.request = t.id), 0)",
            "requests t",
        ),
        serial: true,
    },
    Table {
        name: "events",
        key: 1,
        columns: &[
            ("id", Int),
            ("source", Text),
            ("protocol", Text),
            ("dedupe_key", Text),
            ("request", Int),
            ("kind", Text),
            ("received_at", Int),
            ("body", Text),
        ],
        sqlite: (
            "t.id, t.source, t.protocol, \
             COALESCE(t.dedupe_key, q.payload_id || ':' || (t.id - q.first_event)), \
             t.request, t.kind, t.received_at, t.body",
            "events t LEFT JOIN requests q ON q.id = t.request",
        ),
        postgres: (
            "t.id, t.source, t.protocol, t.dedupe_key, t.request, t.kind, t.received_at, t.body",
            "events t",
        ),
        serial: true,
    },
    Table {
        name: "profiles",
        key: 1,
        columns: &[("id", Int), ("definition", Text)],
        sqlite: ("t.id, t.definition", "profiles t"),
        postgres: ("t.id, t.definition", "profiles t"),
        serial: true,
    },
    Table {
        name: "batches",
        key: 1,
        columns: &[
            ("id", Int),
            ("route", Text),
            ("source", Text),
            ("status", Text),
            ("payload_id", Text),
            ("event_count", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("next_attempt_at", Int),
            ("attempts", Int),
            ("next_trigger", Text),
            ("last_error", Text),
            ("parent_id", Int),
            ("lane", Text),
            ("retry_since", Int),
            ("profile", Int),
        ],
        sqlite: (BATCH_COLUMNS, "batches t"),
        postgres: (BATCH_COLUMNS, "batches t"),
        serial: true,
    },
    Table {
        name: "deliveries",
        key: 2,
        columns: &[
            ("event_id", Int),
            ("route", Int),
            ("status", Text),
            ("batch_id", Int),
            ("reason", Text),
        ],
        sqlite: (
            "t.event_id, t.route, t.status, t.batch_id, t.reason",
            "deliveries t",
        ),
        postgres: (
            "t.event_id, t.route, t.status, t.batch_id, t.reason",
            "deliveries t",
        ),
        serial: false,
    },
    Table {
        name: "attempts",
        key: 1,
        columns: &[
            ("id", Int),
            ("batch_id", Int),
            ("attempt", Int),
            ("triggered_by", Text),
            ("started_at", Int),
            ("duration_ms", Int),
            ("http_status", Int),
            ("error", Text),
            ("response", Text),
            ("outcome", Text),
        ],
        sqlite: (ATTEMPT_COLUMNS, "attempts t"),
        postgres: (ATTEMPT_COLUMNS, "attempts t"),
        serial: true,
    },
    Table {
        name: "refusals",
        key: 1,
        columns: &[
            ("id", Int),
            ("at", Int),
            ("source", Text),
            ("path", Text),
            ("item", Int),
            ("status", Int),
            ("code", Text),
            ("reason", Text),
            ("message_id", Text),
            ("excerpt", Text),
        ],
        sqlite: (REFUSAL_COLUMNS, "refusals t"),
        postgres: (REFUSAL_COLUMNS, "refusals t"),
        serial: true,
    },
    Table {
        name: "totals",
        key: 2,
        columns: &[("route", Int), ("status", Text), ("n", Int)],
        sqlite: ("t.route, t.status, t.n", "totals t"),
        postgres: ("t.route, t.status, t.n", "totals t"),
        serial: false,
    },
    Table {
        name: "flows",
        key: 5,
        columns: &[
            ("minute", Int),
            ("route", Int),
            ("source", Text),
            ("what", Text),
            ("reason", Text),
            ("n", Int),
        ],
        sqlite: (FLOW_COLUMNS_MINUTE, "flows t"),
        postgres: (FLOW_COLUMNS_MINUTE, "flows t"),
        serial: false,
    },
    Table {
        name: "flows_hourly",
        key: 5,
        columns: &[
            ("hour", Int),
            ("route", Int),
            ("source", Text),
            ("what", Text),
            ("reason", Text),
            ("n", Int),
        ],
        sqlite: (FLOW_COLUMNS_HOUR, "flows_hourly t"),
        postgres: (FLOW_COLUMNS_HOUR, "flows_hourly t"),
        serial: false,
    },
];

const BATCH_COLUMNS: &str = "t.id, t.route, t.source, t.status, t.payload_id, t.event_count, \
     t.created_at, t.updated_at, t.next_attempt_at, t.attempts, t.next_trigger, t.last_error, \
     t.parent_id, t.lane, t.retry_since, t.profile";
const ATTEMPT_COLUMNS: &str = "t.id, t.batch_id, t.attempt, t.triggered_by, t.started_at, \
     t.duration_ms, t.http_status, t.error, t.response, t.outcome";
const REFUSAL_COLUMNS: &str =
    "t.id, t.at, t.source, t.path, t.item, t.status, t.code, t.reason, t.message_id, t.excerpt";
const FLOW_COLUMNS_MINUTE: &str = "t.minute, t.route, t.source, t.what, t.reason, t.n";
const FLOW_COLUMNS_HOUR: &str = "t.hour, t.route, t.source, t.what, t.reason, t.n";

/// One value as copied.
#[derive(Debug, Clone)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
}

/// Rows copied per table, in copy order.
pub type Copied = Vec<(&'static str, u64)>;

/// Copies every table of `from` into `to` (upserting by key); returns the
/// rows copied per table.
pub async fn copy(from: &Store, to: &Store) -> Result<Copied, StoreError> {
    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let mut after: Option<Vec<Cell>> = None;
        let mut rows = 0u64;
        loop {
            let chunk = read(from, table, after.as_deref()).await?;
            let Some(last) = chunk.last() else { break };
            after = Some(last[..table.key].to_vec());
            rows += chunk.len() as u64;
            write(to, table, &chunk).await?;
        }
        copied.push((table.name, rows));
    }
    if let Db::Postgres(pg) = to.db() {
        for table in TABLES.iter().filter(|table| table.serial) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{0}', 'id'), MAX(id)) FROM {0} HAVING MAX(id) IS NOT NULL",
                table.name
            )))
            .execute(pg.pool())
            .await?;
        }
    }
    Ok(copied)
}

/// The key columns of `table` after `t.`, for ordering and paging.
fn key_columns(table: &Table) -> Vec<String> {
    table.columns[..table.key]
        .iter()
        .map(|(name, _)| format!("t.{name}"))
        .collect()
}

/// The next chunk of `table` in key order, after the key `after`.
async fn read(
    store: &Store,
    table: &Table,
    after: Option<&[Cell]>,
) -> Result<Vec<Vec<Cell>>, StoreError> {
    let keys = key_columns(table).join(", ");
    match store.db() {
        Db::Sqlite(pool) => {
            let (select, from) = table.sqlite;
            let mut sql =
                QueryBuilder::<Sqlite>::new(format!("SELECT {select} FROM {from} WHERE "));
            push_after::<Sqlite>(&mut sql, &keys, after);
            sql.push(format!(" ORDER BY {keys} LIMIT {CHUNK}"));
            let rows = sql.build().fetch_all(pool).await?;
            rows.iter().map(|row| cells(table, row)).collect()
        }
        Db::Postgres(pg) => {
            let (select, from) = table.postgres;
            let mut sql =
                QueryBuilder::<Postgres>::new(format!("SELECT {select} FROM {from} WHERE "));
            push_after::<Postgres>(&mut sql, &keys, after);
            sql.push(format!(" ORDER BY {keys} LIMIT {CHUNK}"));
            let rows = sql.build().fetch_all(pg.pool()).await?;
            rows.iter().map(|row| cells(table, row)).collect()
        }
    }
}

/// `(keys) > (after…)`, or `true` for the first chunk.
fn push_after<DB>(sql: &mut QueryBuilder<DB>, keys: &str, after: Option<&[Cell]>)
where
    DB: sqlx::Database,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let Some(after) = after else {
        sql.push("true");
        return;
    };
    sql.push(format!("({keys}) > ("));
    let mut values = sql.separated(", ");
    for cell in after {
        match cell {
            Cell::Int(value) => values.push_bind(*value),
            Cell::Text(value) => values.push_bind(value.clone()),
        };
    }
    sql.push(")");
}

/// The values of one row read from `table`, on either backend.
fn cells<R>(table: &Table, row: &R) -> Result<Vec<Cell>, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut cells = Vec::with_capacity(table.columns.len());
    for (index, (_, kind)) in table.columns.iter().enumerate() {
        cells.push(match kind {
            Int => Cell::Int(row.try_get(index)?),
            Text => Cell::Text(row.try_get(index)?),
        });
    }
    Ok(cells)
}

/// Upserts `rows` into `table` in one transaction.
async fn write(store: &Store, table: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
    let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let head = format!("INSERT INTO {} ({}) ", table.name, names.join(", "));
    let updates: Vec<String> = names[table.key..]
        .iter()
        .map(|name| format!("{name} = excluded.{name}"))
        .collect();
    let tail = format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        names[..table.key].join(", "),
        updates.join(", ")
    );
    match store.db() {
        Db::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            // SQLite's bound on parameters per statement: rows in slices.
            for slice in rows.chunks(500 / table.columns.len()) {
                let mut sql = QueryBuilder::<Sqlite>::new(&head);
                push_rows::<Sqlite>(&mut sql, slice);
                sql.push(&tail);
                sql.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Db::Postgres(pg) => {
            let mut tx = pg.pool().begin().await?;
            for slice in rows.chunks(30_000 / table.columns.len()) {
                let mut sql = QueryBuilder::<Postgres>::new(&head);
                push_rows::<Postgres>(&mut sql, slice);
                sql.push(&tail);
                sql.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

fn push_rows<DB>(sql: &mut QueryBuilder<DB>, rows: &[Vec<Cell>])
where
    DB: sqlx::Database,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    sql.push_values(rows, |mut values, row| {
        for cell in row {
            match cell {
                Cell::Int(value) => values.push_bind(*value),
                Cell::Text(value) => values.push_bind(value.clone()),
            };
        }
    });
}
