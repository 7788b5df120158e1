//! ldbridge's integration tests: one binary, real HTTP on loopback, a real
//! SQLite file per test (or, with `LDBRIDGE_TEST_POSTGRES`, a PostgreSQL
//! database per test), recording stand-in receivers.
//!
//! - `helpers`: spawn_app, posting, waiting, fixture loading
//! - `browser`: analytics.js and LaunchDarkly's browser SDK in a real Chromium
//! - `segment_ingest`: every way a Segment library posts, and every refusal
//! - `claims`: a batch whose outcome was never recorded is sent again once its
//!   claim expires, without a restart
//! - `copy`: `ldbridge store copy` from SQLite to PostgreSQL and back
//! - `crash`: 20 random SIGKILLs under load; every acknowledged event arrives
//! - `delivery`: retries, splits, failures and the attempt log
//! - `disk`: the database full (size cap) or read-only; ingest 503s and recovers;
//!   the WAL is given back after a burst
//! - `faults`: the receiver fault matrix, and memory through failures
//! - `hostile`: malformed, huge and nested bodies, slow clients, idle floods
//! - `launchdarkly`: LaunchDarkly SDK traffic, mapped to Segment and relayed unchanged
//! - `migration`: a database from an earlier schema upgrades with nothing lost
//! - `nodes`: two daemons on one PostgreSQL, one SIGKILLed again and again
//! - `webhook`: Segment webhooks and the segment-relay route
//! - `operator`: log/show/explain/resend/stats/purge, the admin API, /metrics
//! - `overview`: the Delivery Overview pages: login, cross-site and rebinding
//!   refusals, the page's numbers equal to `stats --since`
//! - `properties`: proptest of both parsers and all mappers
//! - `room`: a real full file system (tmpfs): delivery goes on, ingest resumes
//! - `real_clients`: what real clients send: lenient timestamps, lone surrogates,
//!   integrations, CORS on every answer, /v1/m, the relay's SDK headers
//! - `refusals`: per-message acceptance and the refusal log
//! - `process`: the real binary: SIGKILL and restart, SIGTERM, CLI, demo
//! - `systemd`: sd_notify, SIGHUP reload, SIGTERM under load
//! - `tls`: delivery over HTTPS

mod browser;
mod claims;
mod copy;
mod crash;
mod delivery;
mod disk;
mod faults;
#[path = "../fixture/mod.rs"]
mod fixture;
mod helpers;
mod hostile;
mod launchdarkly;
mod mappings;
mod migration;
mod nodes;
mod operator;
mod overview;
mod process;
mod properties;
mod real_clients;
mod refusals;
mod room;
mod segment_ingest;
mod systemd;
mod tls;
mod webhook;
