//! ldbridge: a single-binary daemon that carries analytics events between
//! Segment and LaunchDarkly, durably, in both directions.
//!
//! # Layout
//!
//! ```text
//! main.rs        thin: parse CLI, init tracing, run, map error → exit code
//! cli.rs         clap commands; one small fn each; table/JSON printing
//! config/        TOML → Config, secret references, validate()
//! daemon.rs      serve: open store, start ingest + scheduler, shutdown order
//! server.rs      the HTTP accept loop every listener shares
//! ingest/        hyper service: segment.rs (parse, auth, validate → NewEvent), body.rs
//! store/         the only SQL: open (WAL, pragmas), migrations, writer (group commit), queries
//! dispatch/      scheduler wiring, run_once(route, now) → RunOutcome, batching
//! map/           pure: segment_to_ld.rs
//! deliver/       outbound HTTP: launchdarkly.rs (request build), send
//! retry.rs       pure: classify(answer) → action, next_attempt_at(n, now, retry_after)
//! reload.rs      the reload handshake: the daemon's status file, `ldbridge reload`
//! receiver.rs    loopback stand-in for Segment/LaunchDarkly (demo, tests, benchmarks)
//! demo.rs        `ldbridge demo`
//! clock.rs       Unix-ms time, RFC 3339 in and out
//! space.rs       free space on the store's file system: the ingest watermark, the reserve file
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
