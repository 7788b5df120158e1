//! ldbridge: a single-binary daemon that carries analytics events between
//! Segment and LaunchDarkly, durably, in both directions.
//!
//! # Layout
//!
//! Top to bottom: a module imports only modules below it (`domain`,
//! `clock`, `config` and `metrics` are leaves every layer may use).
//!
//! ```text
//! main.rs          thin: parse CLI, init logging, run, map error → exit code
//! cli.rs           clap commands; one small fn each; table/JSON printing
//! demo.rs          `ldbridge demo`: the daemon against stand-ins, sample traffic, the operator loop
//! daemon.rs        serve: open store, start ingest + admin + scheduler + room watch, reload, shutdown order
//! admin.rs         admin API, /metrics, /healthz, /readyz
//! server.rs        the HTTP accept loop every listener shares (timeouts, connection bound, drain)
//! ingest/          the ingest service: mod.rs (routing, answers), segment.rs + normalize.rs
//!                  (Segment requests, message by message), launchdarkly.rs (SDK payloads),
//!                  message.rs (one-level JSON), body.rs (limits, gzip), cors.rs,
//!                  surrogates.rs (lone \u escapes), refusal_log.rs (rows, rate, redaction)
//! dispatch/        run_once(route, now) → RunOutcome: batching.rs (plan), prepare.rs
//!                  (prepare events, pick a batch's destination), schedule.rs (cron, retention)
//! map/             pure: segment_to_ld.rs, ld_to_segment.rs, segment_relay.rs
//! deliver/         outbound HTTP: launchdarkly.rs, segment.rs (requests), mod.rs (client, send)
//! retry.rs         pure: classify(answer) → action, next_attempt_at(n, now, retry_after)
//! ops/             operator views (log, show, explain, resend, stats, purge), refusals.rs,
//!                  filters.rs (the words of --status/--since and the API's parameters)
//! store/           the only SQL (SQLite; PostgreSQL in store/postgres/): open, migrations, writer.rs (group commit), batches.rs
//!                  (the dispatcher's: batches, claims, attempts), delivery_log.rs (operator
//!                  queries), maintenance.rs (requeue, retention, heartbeat), refusals.rs,
//!                  status.rs (statuses as stored)
//! space.rs         room on the store's file system: the ingest watermark, the reserve file
//! reload.rs        the reload handshake: the daemon's status file, `ldbridge reload`
//! notify.rs        sd_notify
//! logging.rs       tracing setup, --log-format, the reloadable filter
//! receiver.rs      loopback stand-in for Segment/LaunchDarkly (demo, tests, benchmarks)
//! config/          TOML → Config, secret references, validate(), diff.rs (what a reload changes)
//! metrics.rs       the Prometheus registry and its recording helpers
//! clock.rs         Unix-ms time, RFC 3339 in and out, the Clock delivery reads (manual in tests)
//! domain/          shared types, a leaf: Route, Protocol, LdMeta, BatchStatus (and which may
//!                  be resent), DeliveryStatus; accepted.rs (what ingest hands the writer),
//!                  stored_message.rs (the stored form of a Segment message)
//! ```
//!
//! # Data flow
//!
//! HTTP request → `ingest` parses and validates → `store::writer` commits
//! the events and one `pending` delivery per route in one transaction (many
//! requests per transaction: group commit) → answer. Cron tick →
//! `dispatch::Dispatcher::run_once` batches pending deliveries → `map` →
//! `deliver` → `retry::classify` → `store` records the attempt and the new
//! statuses in one transaction.
//!
//! Boundaries: `map` and `retry` do no I/O and take `now` as an argument;
//! `deliver` never touches the database; `store` never makes HTTP calls or
//! decides policy; `ingest` knows no destinations; only `daemon` spawns
//! long-lived tasks (the receiver, a test and demo tool, starts its own).

#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod ingest;
pub mod logging;
pub mod map;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod receiver;
pub mod reload;
pub mod retry;
pub mod server;
pub mod space;
pub mod store;
pub mod ui;
