//! Ingest parsing alone, in process: `cargo bench --bench parse`.
//!
//! The throughput benchmark's bodies (`throughput/fixtures.rs`) go through
//! the same `parse` functions the server calls (authentication, validation,
//! normalisation, the stored bodies), with no HTTP, no SQLite and no other
//! load on the cores, so the figure is CPU per event and moves far less
//! from run to run than the daemon's. Uses the daemon's allocator.
//! BENCH_PARSE_REQUESTS [400] requests of 100 events (single messages: as many events) per kind and round, 7 rounds; the
//! median round is printed.

#[path = "../tests/fixture/mod.rs"]
mod fixture;
#[path = "throughput/fixtures.rs"]
mod fixtures;
#[allow(dead_code)] // the HTTP load generator; only its body kinds are used here
#[path = "throughput/load.rs"]
mod load;

use std::{path::Path, time::Instant};

use base64::Engine;
use hyper::{
    header::{self, HeaderValue},
    HeaderMap,
};
use ldbridge::ingest::{launchdarkly, segment};
use load::Kind;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 7;
const RECEIVED_AT: i64 = 1_715_679_087_412;

fn main() {
    let requests = std::env::var("BENCH_PARSE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let config = fixtures::config(
        Path::new("/nonexistent"),
        "0 0 0 1 1 * 2099",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
    )
    .config();

    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", fixtures::WRITE_KEY));
    let mut segment_headers = HeaderMap::new();
    segment_headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
    );
    let mut ld_headers = HeaderMap::new();
    ld_headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static(fixtures::SDK_KEY),
    );
    ld_headers.insert("x-launchdarkly-event-schema", HeaderValue::from_static("4"));
    ld_headers.insert(
        "x-launchdarkly-payload-id",
        HeaderValue::from_static("5b2d3c4e-9f1a-4b7c-8d2e-000000000001"),
    );
    let ld_bulk = launchdarkly::parse_path("/bulk").expect("a LaunchDarkly path");

    println!("ldbridge ingest parse benchmark (in process, one thread)\n");
    println!("| body | events per round | CPU per event, median of {ROUNDS} rounds (µs) |");
    println!("|---|---:|---:|");
    for (name, kind) in [
        ("Segment /v1/batch x100", Kind::SegmentBatch),
        ("Segment /v1/track", Kind::SegmentTrack),
        ("LaunchDarkly /bulk x100", Kind::LaunchDarklyBulk),
    ] {
        // Single messages: as many events as the batched kinds send.
        let count = if kind == Kind::SegmentTrack {
            requests * 100
        } else {
            requests
        };
        let (bodies, _) = fixtures::bodies(kind, 0, count);
        let mut rounds: Vec<f64> = (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                let mut events = 0;
                for body in &bodies {
                    let parsed = match kind {
                        Kind::SegmentBatch => segment::parse(
                            segment::SegmentPath::Batch,
                            &segment_headers,
                            &body.bytes,
                            &config,
                            RECEIVED_AT,
                        ),
                        Kind::SegmentTrack => segment::parse(
                            segment::SegmentPath::Single("track"),
                            &segment_headers,
                            &body.bytes,
                            &config,
                            RECEIVED_AT,
                        ),
                        Kind::LaunchDarklyBulk => launchdarkly::parse(
                            &ld_bulk,
                            &ld_headers,
                            &body.bytes,
                            &config,
                            RECEIVED_AT,
                        ),
                    };
                    events += parsed
                        .expect("the bench bodies are valid")
                        .batch
                        .events
                        .len();
                }
                started.elapsed().as_secs_f64() * 1e6 / events as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        let events: usize = bodies.iter().map(|body| body.events).sum();
        println!("| {name} | {events} | {:.2} |", rounds[ROUNDS / 2]);
    }
}
