//! ldbridge's throughput benchmark: `cargo bench --bench throughput`.
//!
//! Runs the real release binary as its own process (so its peak RSS is the
//! daemon's alone) and drives it from here with a hyper keep-alive load
//! generator (`throughput/load.rs`). Prints one table; BENCHMARKS.md records
//! the figures. Phases:
//! 1. ceiling: the same event rows committed by the store's writer in ONE
//!    transaction (same pragmas, no HTTP); then the writer alone, in
//!    process, fed by 32 tasks with requests of 100 events and of 1 (group
//!    commit as ingest uses it, without HTTP and JSON);
//! 2. durable ingest of Segment `/v1/batch` (100 events a request),
//!    LaunchDarkly `/bulk` (100 events) and single `/v1/track` requests at
//!    each connection count (closed loop), then single requests at a fixed
//!    arrival rate (open loop);
//! 3. dispatch per route, alone, of a seeded database to a loopback receiver
//!    that answers at once, and to one that answers after 50 ms;
//! 4. end to end: mixed ingest at a fixed rate while both routes deliver,
//!    then the same rate on `segment-relay` alone, with ascending and then
//!    with random (real clients') messageIds, sampling the age of the
//!    oldest undelivered event, with the bytes written to disk and the CPU
//!    per delivered event;
//! 5. saturation: ingest as fast as 32 connections are answered while all
//!    four routes deliver: per route, the rate delivered meanwhile, the
//!    oldest undelivered event's age, the drain after.
//!
//! Sizes come from the environment (defaults in brackets):
//! BENCH_BATCH_REQUESTS [2000] batched requests per endpoint and connection
//! count, BENCH_SINGLE_REQUESTS [40000], BENCH_CONNECTIONS [1,32,256] (a
//! single connection sends 1/20 of the requests), BENCH_OPEN_RATE [5000]
//! and BENCH_OPEN_SECONDS [10] for the open loop, BENCH_DISPATCH_EVENTS
//! [200000] per route, BENCH_E2E_RATE [30000] events/s and BENCH_E2E_SECONDS
//! [30], BENCH_SATURATION_REQUESTS [12000]. BENCH_PHASES
//! [ingest,dispatch,e2e,saturation] picks phases (the ceiling always runs);
//! BENCH_KEEP_SEED=/path/prefix keeps the seeded databases; BENCH_DEBUG
//! prints the open loop's slowest requests and when they were due;
//! BENCH_BINARY=/path runs that ldbridge binary instead of this build's;
//! BENCH_MESSAGE_IDS=random sends analytics.js-like random messageIds in
//! every phase (the end-to-end phase runs them once in any case);
//! BENCH_MAPPINGS=5 gives the Segment source five mappings with triggers
//! (`throughput/fixtures.rs`) instead of the default mapping.

#[path = "../tests/fixture/mod.rs"]
mod fixture;
#[path = "throughput/fixtures.rs"]
mod fixtures;
#[path = "throughput/load.rs"]
mod load;

mod common;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{Daemon, DATABASE_FILES};
use ldbridge::{
    clock,
    domain::accepted::{IngestBatch, NewEvent},
    domain::{Protocol, Route},
    receiver::{Receiver, Reply},
    store::{delivery_log::oldest_undelivered, writer::Writer, Store, StoreOptions},
};
use load::{Body, Kind, LoadResult, Target};

const NEVER: &str = "0 0 0 1 1 * 2099";
const EVERY_SECOND: &str = "*/1 * * * * *";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run sizes, from the environment.
struct Sizes {
    batch_requests: usize,
    single_requests: usize,
    connections: Vec<usize>,
    open_rate: usize,
    open_seconds: usize,
    dispatch_events: usize,
    e2e_rate: usize,
    e2e_seconds: usize,
    saturation_requests: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        let connections = std::env::var("BENCH_CONNECTIONS")
            .ok()
            .map(|text| {
                text.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_else(|| vec![1, 32, 256]);
        Sizes {
            batch_requests: env_usize("BENCH_BATCH_REQUESTS", 2000),
            single_requests: env_usize("BENCH_SINGLE_REQUESTS", 40_000),
            connections,
            open_rate: env_usize("BENCH_OPEN_RATE", 5000),
            open_seconds: env_usize("BENCH_OPEN_SECONDS", 10),
            dispatch_events: env_usize("BENCH_DISPATCH_EVENTS", 200_000),
            e2e_rate: env_usize("BENCH_E2E_RATE", 30_000),
            e2e_seconds: env_usize("BENCH_E2E_SECONDS", 30),
            saturation_requests: env_usize("BENCH_SATURATION_REQUESTS", 12_000),
        }
    }
}

/// Writes the bench config into `dir` and starts the daemon on it.
fn start_daemon(dir: &Path, schedule: &str, events_url: &str, segment_url: &str) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    Daemon::start(&fixtures::config(dir, schedule, events_url, segment_url).write())
}

/// Stops `daemon`, keeping its peak RSS in `peak`.
fn stop(daemon: Daemon, peak: &mut f64) {
    *peak = peak.max(daemon.peak_rss_mb());
    daemon.stop();
}

/// Receivers for both destinations, answering after `delay`.
async fn receivers(delay: Duration) -> (Receiver, Receiver) {
    let launchdarkly = Receiver::start().await.unwrap();
    let segment = Receiver::start().await.unwrap();
    launchdarkly.stop_recording();
    segment.stop_recording();
    launchdarkly.set_default(Reply::status(202).delay(delay));
    segment.set_default(Reply::status(200).body(r#"{"success":true}"#).delay(delay));
    (launchdarkly, segment)
}

/// What Segment ingest hands the writer for one request of `events`.
fn segment_request(events: Vec<NewEvent>) -> IngestBatch {
    IngestBatch {
        source: "web".to_owned(),
        protocol: Protocol::Segment,
        received_at: 0,
        meta: None,
        payload_id: None,
        routes: vec![Route::SegmentToLaunchDarkly],
        events,
        refusals: Vec::new(),
    }
}

async fn ceiling(dir: &Path, events: usize) -> f64 {
    let store = Store::open(&dir.join("ceiling.db"), &StoreOptions::default())
        .await
        .unwrap();
    let (writer, _task) = Writer::start(&store, 16, |_| {}).await.unwrap();
    let rows: Vec<NewEvent> = (0..events)
        .map(|n| {
            let body = fixtures::message(n);
            NewEvent {
                dedupe_key: body["messageId"].as_str().unwrap().to_owned(),
                kind: "track".to_owned(),
                body: body.to_string(),
            }
        })
        .collect();
    let started = Instant::now();
    writer.submit(segment_request(rows)).await.unwrap();
    let rate = events as f64 / started.elapsed().as_secs_f64();
    drop(writer);
    store.close().await;
    rate
}

/// The writer alone, in this process: `connections` tasks each submitting
/// requests of `per_request` Segment events, one after another, as the
/// HTTP handlers do (no HTTP, no JSON). Returns events/s and this
/// process's CPU µs per event (the writer task, its SQLite thread and the
/// submitters).
async fn writer_alone(
    dir: &Path,
    events: usize,
    per_request: usize,
    connections: usize,
) -> (f64, f64) {
    let store = Store::open(
        &dir.join(format!("writer-{per_request}.db")),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let (writer, _task) = Writer::start(&store, 4096, |_| {}).await.unwrap();
    let body = fixtures::message(0).to_string();
    let requests: Vec<IngestBatch> = (0..events / per_request)
        .map(|r| {
            segment_request(
                (r * per_request..(r + 1) * per_request)
                    .map(|n| NewEvent {
                        dedupe_key: format!("writer-{n:012}-6c9e0f5e-2b1a-4c3d-8e7f-9a0b1c2d3e4f"),
                        kind: "track".to_owned(),
                        body: body.clone(),
                    })
                    .collect(),
            )
        })
        .collect();
    let stored = requests.len() * per_request;
    let queue = Arc::new(std::sync::Mutex::new(requests));
    let (cpu, started) = (common::cpu_seconds(std::process::id()), Instant::now());
    let submitters: Vec<_> = (0..connections)
        .map(|_| {
            let (writer, queue) = (writer.clone(), Arc::clone(&queue));
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap().pop();
                    let Some(request) = next else { break };
                    writer.submit(request).await.unwrap();
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.await.unwrap();
    }
    let (seconds, cpu) = (
        started.elapsed().as_secs_f64(),
        common::cpu_seconds(std::process::id()) - cpu,
    );
    drop(writer);
    store.close().await;
    (stored as f64 / seconds, cpu * 1e6 / stored as f64)
}

/// The database's size on disk (file, dedupe key file and their WALs).
fn db_bytes(dir: &Path) -> u64 {
    DATABASE_FILES
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn row(name: &str, value: String) {
    println!("| {name:<62} | {value:>24} |");
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Reports one load run: rate, latency, refusals.
fn report(name: &str, unit: &str, result: &LoadResult) {
    let rate = if unit == "requests" {
        result.requests.saturating_sub(result.errors) as f64 / result.elapsed.as_secs_f64()
    } else {
        result.rate()
    };
    row(&format!("{name} ({unit}/s)"), format!("{rate:.0}"));
    row(
        &format!("{name} ack p50 / p99 / max (ms)"),
        format!(
            "{:.1} / {:.1} / {:.1}",
            ms(result.percentile(0.5)),
            ms(result.percentile(0.99)),
            ms(result.percentile(1.0))
        ),
    );
    if result.errors > 0 {
        row(
            &format!("{name} refused"),
            format!("{} of {}", result.errors, result.requests),
        );
    }
}

/// Bytes on disk per stored event, and that over the raw JSON per event.
fn report_size(name: &str, dir: &Path, events: usize, raw: usize) {
    let per_event = db_bytes(dir) as f64 / events.max(1) as f64;
    let raw = raw as f64 / events.max(1) as f64;
    row(
        &format!("{name}: DB bytes per event / raw JSON / ratio"),
        format!("{per_event:.0} / {raw:.0} / {:.2}", per_event / raw),
    );
}

/// Phase 2: the open loop on a quiet daemon, every ingest endpoint at every
/// connection count, the open loop again (the WAL now has a checkpoint
/// backlog), and the database size per event.
async fn ingest(dir: &Path, sizes: &Sizes, ceiling: f64, peak: &mut f64) {
    let (launchdarkly, segment) = receivers(Duration::ZERO).await;
    let daemon = start_daemon(dir, NEVER, &launchdarkly.url(), &segment.url());
    let target = Target::new(&daemon.addr);
    let mut next = 0;
    let (mut stored_total, mut raw_total) = open_loop(&target, sizes, "quiet", &mut next).await;
    for &connections in &sizes.connections {
        // One connection waits for an fsync per request: a smaller run.
        let scale = if connections == 1 { 20 } else { 1 };
        for (kind, name, requests) in [
            (
                Kind::SegmentBatch,
                "Segment /v1/batch x100",
                sizes.batch_requests,
            ),
            (
                Kind::LaunchDarklyBulk,
                "LaunchDarkly /bulk x100",
                sizes.batch_requests,
            ),
            (
                Kind::SegmentTrack,
                "Segment /v1/track",
                sizes.single_requests,
            ),
        ] {
            let requests = (requests / scale).max(connections);
            let (bodies, bytes) = fixtures::bodies(kind, next, requests);
            next += requests * 100;
            let cpu = daemon.cpu_seconds();
            let result = load::closed(&target, bodies, connections).await;
            let cpu = daemon.cpu_seconds() - cpu;
            let name = format!("{name}, {connections} conn");
            row(
                &format!("{name}: daemon CPU per event (µs)"),
                format!("{:.1}", cpu * 1e6 / result.events.max(1) as f64),
            );
            if kind == Kind::SegmentTrack {
                report(&name, "requests", &result);
            } else {
                report(&name, "events", &result);
                row(
                    &format!("{name}: ingest ÷ ceiling"),
                    format!("{:.2}", result.rate() / ceiling),
                );
            }
            stored_total += result.events;
            raw_total += bytes;
        }
    }
    let wal = std::fs::metadata(dir.join("ldbridge.db-wal")).map_or(0, |m| m.len());
    row(
        "WAL size after the bursts (MB)",
        format!("{:.0}", wal as f64 / 1e6),
    );
    let (stored, raw) = open_loop(&target, sizes, "after the bursts", &mut next).await;
    (stored_total, raw_total) = (stored_total + stored, raw_total + raw);
    row(
        "daemon peak RSS, ingest phase (MB)",
        format!("{:.1}", daemon.peak_rss_mb()),
    );
    stop(daemon, peak);
    report_size("mixed ingest, undelivered", dir, stored_total, raw_total);
}

/// Single `/v1/track` requests at a fixed arrival rate; `when` names the
/// daemon's state. Returns the events stored and their raw JSON bytes.
async fn open_loop(target: &Target, sizes: &Sizes, when: &str, next: &mut usize) -> (usize, usize) {
    let requests = sizes.open_rate * sizes.open_seconds;
    let (bodies, bytes) = fixtures::bodies(Kind::SegmentTrack, *next, requests);
    *next += requests * 100;
    // Earlier phases leave the kernel writing back hundreds of MB of dirty
    // pages, which stalls the daemon's fsyncs for tens of ms; start with
    // them on disk so the figure is the daemon's own.
    let _ = std::process::Command::new("sync").status();
    // Warm-up, not counted: the first requests after a pause stall once for
    // up to ~80 ms (seen at the start of every open loop without it).
    let (warm_bodies, warm_raw) = fixtures::bodies(Kind::SegmentTrack, *next, 1000);
    *next += 1000 * 100;
    let warm = load::closed(target, warm_bodies, 16).await;
    let result = load::open(target, bodies, sizes.open_rate as f64).await;
    let name = format!(
        "Segment /v1/track open loop, {} req/s offered, {when}",
        sizes.open_rate
    );
    report(&name, "requests", &result);
    (result.events + warm.events, bytes + warm_raw)
}

/// Ingests `events` events of `kind` into a fresh database in `dir` and
/// stops; reports its size per event. Returns the events stored and their
/// raw JSON bytes.
async fn seed(dir: &Path, kind: Kind, events: usize, peak: &mut f64) -> (usize, usize) {
    let (launchdarkly, segment) = receivers(Duration::ZERO).await;
    let daemon = start_daemon(dir, NEVER, &launchdarkly.url(), &segment.url());
    let (bodies, raw) = fixtures::bodies(kind, 0, events.div_ceil(100));
    let result = load::closed(&Target::new(&daemon.addr), bodies, 32).await;
    stop(daemon, peak);
    let name = match kind {
        Kind::LaunchDarklyBulk => "LaunchDarkly events",
        _ => "Segment events",
    };
    report_size(&format!("{name}, undelivered"), dir, result.events, raw);
    (result.events, raw)
}

/// Waits until `receiver` has `expected` events; returns events/s from the
/// first event to the last.
async fn delivered_rate(receiver: &Receiver, expected: usize) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(900);
    while receiver.element_count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let first = Instant::now();
    while receiver.element_count() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    receiver.element_count() as f64 / first.elapsed().as_secs_f64()
}

/// Phase 3: each route alone, from a copy of its seeded database, to an
/// instant and to a 50 ms receiver.
async fn dispatch(root: &Path, sizes: &Sizes, peak: &mut f64) {
    for (kind, route) in [
        (Kind::SegmentBatch, Route::SegmentToLaunchDarkly),
        (Kind::LaunchDarklyBulk, Route::LaunchDarklyToSegment),
    ] {
        let seeded = root.join(format!("seed-{route}"));
        let (events, raw) = seed(&seeded, kind, sizes.dispatch_events, peak).await;
        if let Ok(keep) = std::env::var("BENCH_KEEP_SEED") {
            // For looking inside (sqlite3 `dbstat`): where do the bytes go?
            let _ = std::fs::copy(seeded.join("ldbridge.db"), format!("{keep}-{route}.db"));
        }
        for delay in [Duration::ZERO, Duration::from_millis(50)] {
            let dir = root.join(format!("dispatch-{route}-{}", delay.as_millis()));
            std::fs::create_dir_all(&dir).unwrap();
            for file in DATABASE_FILES {
                let _ = std::fs::copy(seeded.join(file), dir.join(file));
            }
            let (launchdarkly, segment) = receivers(delay).await;
            let daemon = start_daemon(&dir, EVERY_SECOND, &launchdarkly.url(), &segment.url());
            let receiver = match route {
                Route::SegmentToLaunchDarkly => &launchdarkly,
                _ => &segment,
            };
            let rate = delivered_rate(receiver, events).await;
            row(
                &format!(
                    "dispatch {route}, receiver +{} ms (events/s)",
                    delay.as_millis()
                ),
                format!("{rate:.0}"),
            );
            stop(daemon, peak);
            if delay.is_zero() {
                // Delivered: the batch ids and attempts are in, the
                // pending index entries gone.
                report_size(&format!("{route} events, delivered"), &dir, events, raw);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_dir_all(&seeded);
    }
}

/// `requests` bodies of 100 events, Segment batches and LaunchDarkly bulks
/// alternating.
fn alternating_bodies(requests: usize) -> Vec<Body> {
    let (segment, _) = fixtures::bodies(Kind::SegmentBatch, 0, requests.div_ceil(2));
    let (launchdarkly, _) = fixtures::bodies(Kind::LaunchDarklyBulk, 0, requests / 2);
    let mut bodies: Vec<Body> = Vec::with_capacity(requests);
    let mut launchdarkly = launchdarkly.into_iter();
    for body in segment {
        bodies.push(body);
        bodies.extend(launchdarkly.next());
    }
    bodies
}

/// The median and the largest of ages in ms, as `"p50 / max"` seconds.
fn p50_max_seconds(mut ages: Vec<i64>) -> String {
    ages.sort_unstable();
    let seconds = |ms: Option<&i64>| ms.copied().unwrap_or(0) as f64 / 1e3;
    format!(
        "{:.2} / {:.2}",
        seconds(ages.get(ages.len() / 2)),
        seconds(ages.last())
    )
}

/// One sample of the end-to-end run.
struct Sample {
    at: Duration,
    delivered: usize,
    /// Age of the oldest undelivered event over the routes sampled (ms).
    oldest_ms: i64,
}

/// Samples delivery progress and the oldest undelivered event on `routes`
/// every 250 ms until `done`.
async fn sample(
    store: Store,
    receivers: Arc<(Receiver, Receiver)>,
    routes: &'static [Route],
    started: Instant,
    done: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = clock::now_ms();
        let mut oldest_ms = 0;
        for route in routes {
            if let Ok(Some(at)) = oldest_undelivered(&store, route.as_str()).await {
                oldest_ms = oldest_ms.max(now - at);
            }
        }
        samples.push(Sample {
            at: started.elapsed(),
            delivered: receivers.0.element_count() + receivers.1.element_count(),
            oldest_ms,
        });
    }
    samples
}

/// What the fixed-rate end-to-end phase offers, and on which routes.
#[derive(Clone, Copy)]
enum Flow {
    /// Segment batches and LaunchDarkly bulks alternating; each event
    /// takes its mapped route (segment-to-launchdarkly, launchdarkly-to-segment).
    Mix,
    /// Segment batches only, relayed to Segment and nothing else: the
    /// whole rate on one route.
    SegmentRelayAlone,
    /// The same with messageIds as real clients send them (random): each
    /// lands on its own page of the dedupe index.
    SegmentRelayRandomIds,
}

impl Flow {
    fn routes(self) -> &'static [Route] {
        match self {
            Flow::Mix => &[Route::SegmentToLaunchDarkly, Route::LaunchDarklyToSegment],
            Flow::SegmentRelayAlone | Flow::SegmentRelayRandomIds => &[Route::SegmentRelay],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Flow::Mix => "both mapped routes",
            Flow::SegmentRelayAlone => "segment-relay alone",
            Flow::SegmentRelayRandomIds => "segment-relay, random messageIds",
        }
    }

    fn bodies(self, requests: usize) -> Vec<Body> {
        match self {
            Flow::Mix => alternating_bodies(requests),
            Flow::SegmentRelayAlone => fixtures::bodies(Kind::SegmentBatch, 0, requests).0,
            Flow::SegmentRelayRandomIds => {
                let ids = fixtures::MessageIds::Random;
                fixtures::bodies_with(Kind::SegmentBatch, 0, requests, ids).0
            }
        }
    }

    fn config(self, dir: &Path, launchdarkly_url: &str, segment_url: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let fixture = fixtures::config(dir, EVERY_SECOND, launchdarkly_url, segment_url);
        match self {
            Flow::Mix => fixture,
            Flow::SegmentRelayAlone | Flow::SegmentRelayRandomIds => fixture
                .unset("segment_source", "to_launchdarkly")
                .set("segment_source", "relay_to_segment", "true")
                .without_launchdarkly_source(),
        }
        .write()
    }
}

/// Phase 4: requests of 100 events at a fixed event rate while the daemon
/// delivers every second: the oldest undelivered event's age, the rate
/// delivered in the steady state, and the bytes the daemon wrote to disk
/// (WAL, checkpoints) per event delivered.
///
/// Long on purpose: load, drain, then one row per figure, in the order the
/// table reads.
async fn end_to_end(dir: &Path, sizes: &Sizes, flow: Flow, peak: &mut f64) {
    let pair = Arc::new(receivers(Duration::ZERO).await);
    let daemon = Daemon::start(&flow.config(dir, &pair.0.url(), &pair.1.url()));
    let store = Store::open(&dir.join("ldbridge.db"), &StoreOptions::default())
        .await
        .unwrap();
    let requests = sizes.e2e_rate * sizes.e2e_seconds / 100;
    let bodies = flow.bodies(requests);
    let (written_before, cpu_before) = (daemon.written_bytes(), daemon.cpu_seconds());
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(
        store.clone(),
        pair.clone(),
        flow.routes(),
        started,
        done.clone(),
    ));
    let target = Target::new(&daemon.addr);
    let result = load::open(&target, bodies, sizes.e2e_rate as f64 / 100.0).await;
    let load_ended = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let delivered = || pair.0.element_count() + pair.1.element_count();
    while delivered() < result.events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = started.elapsed() - load_ended;
    let written = daemon.written_bytes() - written_before;
    let cpu = daemon.cpu_seconds() - cpu_before;
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    // Steady state: from the end of the first fifth to the end of the load.
    let warm = load_ended / 5;
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= warm && s.at <= load_ended)
        .collect();
    let delivered_rate = match (steady.first(), steady.last()) {
        (Some(a), Some(b)) if b.at > a.at => {
            (b.delivered - a.delivered) as f64 / (b.at - a.at).as_secs_f64()
        }
        _ => 0.0,
    };
    let ages: Vec<i64> = steady.iter().map(|s| s.oldest_ms).collect();
    let name = format!("e2e {}, {} events/s", flow.name(), sizes.e2e_rate);
    let per_delivered = |total: f64| total / delivered().max(1) as f64;
    report(&format!("{name}: ingest"), "events", &result);
    row(
        &format!("{name}: delivered, steady (events/s)"),
        format!("{delivered_rate:.0}"),
    );
    row(
        &format!("{name}: oldest undelivered p50 / max (s)"),
        p50_max_seconds(ages),
    );
    row(
        &format!("{name}: all delivered after load stopped (s)"),
        format!("{:.2}", drained.as_secs_f64()),
    );
    row(
        &format!("{name}: delivered / acknowledged"),
        format!("{} / {}", delivered(), result.events),
    );
    row(
        &format!("{name}: bytes written per delivered event"),
        format!("{:.0}", per_delivered(written as f64)),
    );
    row(
        &format!("{name}: daemon CPU per delivered event (µs)"),
        format!("{:.1}", per_delivered(cpu * 1e6)),
    );
    store.close().await;
    stop(daemon, peak);
}

/// Events each route's stand-in received, counted per route as they come:
/// LaunchDarkly tells segment-to-launchdarkly (`/events/bulk/{id}`) from
/// the relay (`/bulk`) by path; Segment tells launchdarkly-to-segment (its
/// messages name ldbridge as `context.library`) from the Segment relay.
fn count_per_route(pair: &(Receiver, Receiver)) -> Arc<[AtomicUsize; 4]> {
    let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    let tally = Arc::clone(&counts);
    pair.0.respond_with(move |request| {
        let events = request.json().as_array().map_or(0, Vec::len);
        let route = if request.path.starts_with("/events/bulk/") {
            Route::SegmentToLaunchDarkly
        } else {
            Route::LaunchDarklyRelay
        };
        tally[route_index(route)].fetch_add(events, Ordering::Relaxed);
        None
    });
    let tally = Arc::clone(&counts);
    pair.1.respond_with(move |request| {
        let body = request.json();
        let batch = body["batch"].as_array().map_or(&[][..], Vec::as_slice);
        let ours = batch
            .first()
            .is_some_and(|message| message["context"]["library"]["name"] == "ldbridge");
        let route = if ours {
            Route::LaunchDarklyToSegment
        } else {
            Route::SegmentRelay
        };
        tally[route_index(route)].fetch_add(batch.len(), Ordering::Relaxed);
        None
    });
    counts
}

/// Phase 5: ingest as fast as 32 connections are answered (Segment batches
/// and LaunchDarkly bulks alternating) while all four routes deliver to
/// instant stand-ins every second. Per route: events delivered per second
/// during the load and the oldest undelivered event's age (sampled every
/// 250 ms); then how long the backlog takes to drain once the load stops.
/// A burst, a backfill through `/v1/import` or clients catching up after
/// an outage load ldbridge like this.
async fn saturation(dir: &Path, sizes: &Sizes, peak: &mut f64) {
    let pair = Arc::new(receivers(Duration::ZERO).await);
    let counts = count_per_route(&pair);
    std::fs::create_dir_all(dir).unwrap();
    let config = fixtures::config(dir, EVERY_SECOND, &pair.0.url(), &pair.1.url())
        .set("segment_source", "relay_to_segment", "true")
        .set("launchdarkly_source", "relay_to_launchdarkly", "true")
        .write();
    let daemon = Daemon::start(&config);
    let store = Store::open(&dir.join("ldbridge.db"), &StoreOptions::default())
        .await
        .unwrap();
    let requests = sizes.saturation_requests;
    let bodies = alternating_bodies(requests);
    let delivered = || Route::ALL.map(|route| counts[route_index(route)].load(Ordering::Relaxed));
    let ages: Arc<std::sync::Mutex<Vec<[i64; 4]>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (store, ages, done) = (store.clone(), Arc::clone(&ages), Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = clock::now_ms();
                let mut row = [0i64; 4];
                for (n, route) in Route::ALL.into_iter().enumerate() {
                    if let Ok(Some(at)) = oldest_undelivered(&store, route.as_str()).await {
                        row[n] = now - at;
                    }
                }
                ages.lock().unwrap().push(row);
            }
        })
    };
    let target = Target::new(&daemon.addr);
    let before = delivered();
    let written_before = daemon.written_bytes();
    let result = load::closed(&target, bodies, 32).await;
    let during = delivered();
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let load_ended = Instant::now();
    let deadline = load_ended + Duration::from_secs(600);
    let mut waiting = true;
    while waiting && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiting = false;
        for route in Route::ALL {
            if let Ok(Some(_)) = oldest_undelivered(&store, route.as_str()).await {
                waiting = true;
            }
        }
    }
    let drained = load_ended.elapsed();
    let written = daemon.written_bytes() - written_before;
    let name = "saturation, 32 conn";
    report(&format!("{name}: ingest"), "events", &result);
    let ages = ages.lock().unwrap().clone();
    for (n, route) in Route::ALL.into_iter().enumerate() {
        let rate = (during[n] - before[n]) as f64 / result.elapsed.as_secs_f64();
        row(
            &format!("{name}: {route} delivered during the load (events/s)"),
            format!("{rate:.0}"),
        );
        row(
            &format!("{name}: {route} oldest undelivered p50 / max (s)"),
            p50_max_seconds(ages.iter().map(|row| row[n]).collect()),
        );
    }
    row(
        &format!("{name}: every route drained after the load (s)"),
        if waiting {
            "not within 600 s".to_owned()
        } else {
            format!("{:.1}", drained.as_secs_f64())
        },
    );
    let copies: usize = Route::ALL
        .iter()
        .map(|route| counts[route_index(*route)].load(Ordering::Relaxed))
        .sum::<usize>()
        - before.iter().sum::<usize>();
    row(
        &format!("{name}: bytes written per delivered copy"),
        format!("{:.0}", written as f64 / copies.max(1) as f64),
    );
    store.close().await;
    stop(daemon, peak);
}

fn route_index(route: Route) -> usize {
    Route::ALL.iter().position(|r| *r == route).unwrap()
}

#[tokio::main]
async fn main() {
    let sizes = Sizes::from_env();
    let root: PathBuf = tempfile::tempdir().unwrap().keep();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("ldbridge throughput benchmark ({cores} cores)\n");
    println!("| {:<62} | {:>24} |", "measure", "figure");
    println!("|{}|{}|", "-".repeat(64), "-".repeat(26));
    let mut peak = 0.0_f64;

    let ceiling = ceiling(&root, sizes.batch_requests * 100).await;
    row(
        "ceiling: raw insert, one transaction (events/s)",
        format!("{ceiling:.0}"),
    );
    for (per_request, events) in [
        (100, sizes.batch_requests * 100),
        (1, sizes.single_requests),
    ] {
        let (rate, cpu) = writer_alone(&root, events, per_request, 32).await;
        row(
            &format!("writer alone, 32 tasks x {per_request}-event requests (events/s)"),
            format!("{rate:.0}"),
        );
        row(
            &format!("writer alone, {per_request}-event requests: CPU per event (µs)"),
            format!("{cpu:.1}"),
        );
    }
    let phases =
        std::env::var("BENCH_PHASES").unwrap_or_else(|_| "ingest,dispatch,e2e,saturation".into());
    if phases.contains("ingest") {
        ingest(&root.join("ingest"), &sizes, ceiling, &mut peak).await;
        let _ = std::fs::remove_dir_all(root.join("ingest"));
    }
    if phases.contains("dispatch") {
        dispatch(&root, &sizes, &mut peak).await;
    }
    if phases.contains("e2e") {
        for flow in [
            Flow::Mix,
            Flow::SegmentRelayAlone,
            Flow::SegmentRelayRandomIds,
        ] {
            end_to_end(&root.join("e2e"), &sizes, flow, &mut peak).await;
            let _ = std::fs::remove_dir_all(root.join("e2e"));
        }
    }
    if phases.contains("saturation") {
        saturation(&root.join("saturation"), &sizes, &mut peak).await;
    }
    row("daemon peak RSS, whole run (MB)", format!("{peak:.1}"));
    let _ = std::fs::remove_dir_all(&root);
}
