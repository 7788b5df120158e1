//! The PostgreSQL backend: the same queries as the SQLite modules beside
//! it, one file per module (`batches`, `counts`, `delivery_log`,
//! `maintenance`, `refusals`, `writer`), for a database several nodes
//! share.
//!
//! What differs from SQLite, and why:
//!
//! * Several nodes write at once. A batch is claimed with `FOR UPDATE SKIP
//!   LOCKED` and carries its claim's expiry and node (`claimed_by`); a
//!   node's restart recovers only its own claims, and a dead node's expire.
//! * Forming batches locks the pending events it took (`SKIP LOCKED`); when
//!   another node took some first, nothing is written ([`StoreError::Raced`]).
//! * Dedupe is one unique index, `(dedupe_key, source)`: every event keeps
//!   its key, and `INSERT … ON CONFLICT DO NOTHING` holds across nodes.
//! * Retention takes an advisory lock, so one node purges at a time.
//! * Every connection runs with `synchronous_commit = on`: an
//!   acknowledgement means the commit is on the server's disk.

pub mod batches;
pub mod counts;
pub mod delivery_log;
pub mod maintenance;
pub mod refusals;
pub mod writer;

use std::{str::FromStr, sync::Arc};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;

use super::{StoreError, StoreOptions};

/// An open PostgreSQL store: its pool, how to open the writer's own
/// connection, and the name of this node.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
    node: Arc<str>,
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid URL>".to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    // A password in the query (`?password=`) goes too.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl PgStore {
    /// Connects to `url` and applies every pending migration (nodes
    /// starting together take turns: sqlx holds an advisory lock while it
    /// migrates).
    pub async fn open(url: &str, options: &StoreOptions) -> Result<PgStore, StoreError> {
        // sqlx's parse errors may quote the URL: replaced by one that does not.
        let connect = PgConnectOptions::from_str(url)
            .map_err(|_| {
                sqlx::Error::Configuration(
                    format!("store.url is not a valid PostgreSQL URL: {}", redact(url)).into(),
                )
            })?
            .options([("synchronous_commit", "on")])
            .application_name("ldbridge");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(options.busy_timeout.max(std::time::Duration::from_secs(5)))
            .connect_with(connect.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore {
            pool,
            options: connect,
            node: Arc::from(options.node.as_str()),
        })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// This node's name (`store.node`).
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// A connection of its own, outside the pool (the ingest writer's;
    /// retention's advisory lock).
    pub(crate) async fn connection(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.options).await
    }
}

/// Closes `conn`, ignoring a failure (the server ends the session anyway).
pub(crate) async fn close(conn: PgConnection) {
    let _ = conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_url_is_named_without_its_password() {
        assert_eq!(
            redact("postgres://ld:s3cret@db.internal:5432/ldbridge?sslmode=require"),
            "postgres://ld:***@db.internal:5432/ldbridge?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/ldbridge?user=ld&password=s3cret"),
            "postgres://db/ldbridge?user=ld&password=***"
        );
        assert_eq!(
            redact("postgres://ld@localhost/x?host=/run/pg"),
            "postgres://ld@localhost/x?host=/run/pg"
        );
        assert_eq!(redact("not a url"), "<invalid URL>");
    }
}
