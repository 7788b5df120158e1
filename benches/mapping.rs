//! Mapping cost and `ldbridge map`'s answer time: `cargo bench --bench mapping`.
//!
//! 1. Preparing Segment events for `segment-to-launchdarkly` (the
//!    dispatcher's `prepare`: parse the stored body, evaluate triggers,
//!    map, serialise) in process, with the default mapping and with five
//!    mappings with triggers (`throughput/fixtures.rs` `FIVE_MAPPINGS`: one
//!    takes each call), alternating, 7 rounds; the median round is printed.
//! 2. `ldbridge map --source web` on one call, the release binary run 21
//!    times (a config file with the five mappings): median and slowest.
//!
//! BENCH_MAPPING_EVENTS [100000] events per round. The process-level
//! dispatch rate with five mappings is the throughput bench's dispatch
//! phase with `BENCH_MAPPINGS=5` (BENCHMARKS.md).

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
use ldbridge::{
    config::Config,
    dispatch::{
        prepare::{self, Prepared},
        profile::Profile,
    },
    domain::Route,
    ingest::segment,
    store::batches::StoredEvent,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 7;
const RECEIVED_AT: i64 = 1_715_679_087_412;

fn config(five: bool) -> Config {
    let fixture = fixtures::config(
        Path::new("/nonexistent"),
        "0 0 0 1 1 * 2099",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
    );
    let fixture = if five {
        fixture.set("segment_source", "mapping", fixtures::FIVE_MAPPINGS)
    } else {
        fixture
    };
    fixture.config()
}

/// `events` stored Segment events, as ingest stores them.
fn stored_events(config: &Config, events: usize) -> Vec<StoredEvent> {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", fixtures::WRITE_KEY));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
    );
    let (bodies, _) = fixtures::bodies(load::Kind::SegmentBatch, 0, events.div_ceil(100));
    let mut stored = Vec::with_capacity(events);
    for body in bodies {
        let parsed = segment::parse(
            segment::SegmentPath::Batch,
            &headers,
            &body.bytes,
            config,
            RECEIVED_AT,
        )
        .expect("the bench's bodies are valid");
        stored.extend(ldbridge::ops::preview::stored(parsed.batch));
    }
    stored.truncate(events);
    stored
}

/// Nanoseconds per event to prepare `events` with `config`'s profile.
fn prepare_round(config: &Config, events: &[StoredEvent]) -> f64 {
    let route = Route::SegmentToLaunchDarkly;
    let profile = Profile::of(config, route, "web");
    let started = Instant::now();
    let mut bytes = 0usize;
    for event in events {
        match prepare::prepare(config, route, event, &profile) {
            Prepared::Send { json, .. } => bytes += json.len(),
            other => panic!("the bench's events all map: {other:?}"),
        }
    }
    std::hint::black_box(bytes);
    started.elapsed().as_nanos() as f64 / events.len() as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let count: usize = std::env::var("BENCH_MAPPING_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (default, five) = (config(false), config(true));
    let events = stored_events(&default, count);
    let (mut with_default, mut with_five) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        with_default.push(prepare_round(&default, &events));
        with_five.push(prepare_round(&five, &events));
    }
    let (d, f) = (median(with_default), median(with_five));
    println!("| measure | value |\n|---|---|");
    println!("| prepare, default mapping (ns/event) | {d:.0} |");
    println!("| prepare, five mappings with triggers (ns/event) | {f:.0} |");
    println!("| five mappings / default (CPU per event) | {:.2} |", f / d);

    let dir = tempfile::tempdir().unwrap();
    let path = fixtures::config(
        dir.path(),
        "0 0 0 1 1 * 2099",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
    )
    .set("segment_source", "mapping", fixtures::FIVE_MAPPINGS)
    .write();
    let call = dir.path().join("call.json");
    std::fs::write(&call, fixtures::message(1).to_string()).unwrap();
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ldbridge"))
            .arg("--config")
            .arg(&path)
            .args(["map", "--source", "web"])
            .arg(&call)
            .envs(fixture::ENV)
            .output()
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let slowest = times.iter().copied().fold(0.0, f64::max);
    println!(
        "| `ldbridge map` on one call, wall time (ms, median / slowest of 21) | {:.1} / {slowest:.1} |",
        median(times)
    );
}
