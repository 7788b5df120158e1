//! ldbridge's integration tests: one binary, real HTTP on loopback, a real
//! SQLite file per test, recording stand-in receivers.

mod delivery; // retries, splits, failures and the attempt log
mod helpers; // spawn_app, posting, waiting, fixture loading
mod process;
mod segment_ingest; // every way a Segment library posts, and every refusal // the real binary: SIGKILL and restart, SIGTERM, CLI
