//! ldbridge's throughput benchmark: `cargo bench --bench throughput`.
//!
//! Runs the real release binary as its own process (so its peak RSS is the
//! daemon's alone) and drives it from here with a hyper keep-alive load
//! generator. Prints one table; BENCHMARKS.md records the figures.
//!
//! Phases:
//! 1. ceiling: the same event rows committed by the store's writer in ONE
//!    transaction (same pragmas, no HTTP);
//! 2. durable ingest of Segment `/v1/batch` (100 events a request) and of
//!    single `/v1/track` requests, from N concurrent connections;
//! 3. dispatch: the stored events delivered to a loopback receiver that
//!    answers 202 at once.
//!
//! Sizes come from the environment: BENCH_BATCH_REQUESTS (default 2000 =
//! 200k events), BENCH_SINGLE_REQUESTS (default 40000), BENCH_CONNECTIONS
//! (default 32).

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Request};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
mod common;

use common::Daemon;
use ldbridge::{
    receiver::Receiver,
    store::{
        writer::{IngestBatch, NewEvent, Writer},
        Protocol, Route, Store, StoreOptions,
    },
};
use serde_json::{json, Value};

const WRITE_KEY: &str = "bench-write-key";
const SDK_KEY: &str = "sdk-bench-0000";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A realistic Segment track message (~560 bytes, like analytics-node's).
fn message(n: usize) -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "userId": format!("user-{}", n % 5000),
        "anonymousId": "3f1a8c2e-7b4d-4e9a-9c51-2d6e8f0a1b37",
        "messageId": format!("bench-{n:012}-6c9e0f5e-2b1a-4c3d-8e7f-9a0b1c2d3e4f"),
        "timestamp": "2024-05-14T09:31:27.412Z",
        "properties": {"orderId": format!("ord_{n}"), "revenue": 84.5, "currency": "USD",
                       "products": [{"sku": "SKU-1187", "quantity": 2, "price": 42.25}]},
        "context": {"ip": "203.0.113.24", "library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
        "integrations": {},
        "_metadata": {"nodeVersion": "v20.12.2", "jsRuntime": "node"}
    })
}

/// A realistic server-SDK custom event (~330 bytes, inline context).
fn ld_event(n: usize) -> Value {
    json!({
        "kind": "custom",
        "creationDate": 1_715_679_101_456_i64 + n as i64,
        "key": "order-completed",
        "context": {"kind": "user", "key": format!("user-{}", n % 5000), "name": "Ada Lovelace", "plan": "enterprise"},
        "data": {"orderId": format!("ord_{n}"), "currency": "USD"},
        "metricValue": 84.5
    })
}

fn config_text(dir: &Path, schedule: &str, events_url: &str, segment_url: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[dispatch]
schedule = "{schedule}"
max_in_flight = 8
writer_queue = 4096
[launchdarkly]
events_url = "{events_url}"
[segment]
api_url = "{segment_url}"
[[segment_source]]
name = "bench"
write_key = "{WRITE_KEY}"
to_launchdarkly = {{ client_side_id = "6488674dc2ea1d6673731ba2" }}
[[launchdarkly_source]]
name = "bench-ld"
sdk_key = "{SDK_KEY}"
client_side_id = "6488674dc2ea1d6673731ba2"
project_id = "5744c96707c9900708000004"
to_segment = {{ write_key = "bench-destination-key" }}
"#,
        db = dir.join("ldbridge.db").display()
    )
}

/// Writes the bench config and starts the daemon on it.
fn start_daemon(dir: &Path, schedule: &str, events_url: &str, segment_url: &str) -> Daemon {
    let config = dir.join("bench.toml");
    std::fs::write(&config, config_text(dir, schedule, events_url, segment_url)).unwrap();
    Daemon::start(&config)
}

struct LoadResult {
    requests: usize,
    events: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: usize,
}

impl LoadResult {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Sends `bodies` (pre-serialised) to `url` over `connections` keep-alive
/// connections, as fast as acknowledgements come back.
async fn load(
    url: &str,
    bodies: Vec<(Bytes, usize)>,
    connections: usize,
    launchdarkly: bool,
) -> LoadResult {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let auth = if launchdarkly {
        SDK_KEY.to_owned()
    } else {
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{WRITE_KEY}:"),
        );
        format!("Basic {encoded}")
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, bodies, next, url, auth) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            url.to_owned(),
            auth.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut events) = (0, 0);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, count)) = bodies.get(index) else {
                    break;
                };
                let mut request = Request::post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::AUTHORIZATION, &auth);
                if launchdarkly {
                    request = request.header("x-launchdarkly-event-schema", "4").header(
                        "x-launchdarkly-payload-id",
                        format!("bench-payload-{index}"),
                    );
                }
                let request = request.body(Full::new(body.clone())).unwrap();
                let sent = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        latencies.push(sent.elapsed());
                        if status.is_success() {
                            events += count
                        } else {
                            if errors == 0 {
                                eprintln!("refused: {status} {}", String::from_utf8_lossy(&body));
                            }
                            errors += 1
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors, events)
        }));
    }
    let mut result = LoadResult {
        requests: bodies.len(),
        events: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        errors: 0,
    };
    for task in tasks {
        let (latencies, errors, events) = task.await.unwrap();
        result.latencies.extend(latencies);
        result.errors += errors;
        result.events += events;
    }
    result.elapsed = started.elapsed();
    result
}

async fn ceiling(dir: &Path, events: usize) -> f64 {
    let store = Store::open(&dir.join("ceiling.db"), &StoreOptions::default())
        .await
        .unwrap();
    let (writer, _task) = Writer::start(&store, 16, |_| {}).await.unwrap();
    let rows: Vec<NewEvent> = (0..events)
        .map(|n| {
            let body = message(n);
            NewEvent {
                dedupe_key: body["messageId"].as_str().unwrap().to_owned(),
                kind: "track".to_owned(),
                body: body.to_string(),
            }
        })
        .collect();
    let batch = IngestBatch {
        source: "bench".to_owned(),
        protocol: Protocol::Segment,
        received_at: 0,
        meta: None,
        routes: vec![Route::SegmentToLaunchDarkly],
        events: rows,
    };
    let started = Instant::now();
    writer.submit(batch).await.unwrap();
    events as f64 / started.elapsed().as_secs_f64()
}

fn db_bytes(dir: &Path) -> u64 {
    ["ldbridge.db", "ldbridge.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn row(name: &str, value: String) {
    println!("| {name:<58} | {value:>22} |");
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Reports one load run; returns events/s.
fn report(name: &str, unit: &str, result: &LoadResult) -> f64 {
    let rate = result.events as f64 / result.elapsed.as_secs_f64();
    row(&format!("{name} ({unit}/s)"), format!("{rate:.0}"));
    row(
        &format!("{name} ack latency p50 / p99 (ms)"),
        format!(
            "{:.1} / {:.1}",
            ms(result.percentile(0.5)),
            ms(result.percentile(0.99))
        ),
    );
    row(
        &format!("{name} refused requests"),
        format!("{} of {}", result.errors, result.requests),
    );
    rate
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

#[tokio::main]
async fn main() {
    let batch_requests = env_usize("BENCH_BATCH_REQUESTS", 2000);
    let single_requests = env_usize("BENCH_SINGLE_REQUESTS", 40_000);
    let connections = env_usize("BENCH_CONNECTIONS", 32);
    let dir: PathBuf = tempfile::tempdir().unwrap().keep();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("ldbridge throughput benchmark ({cores} cores, {connections} connections)\n");
    println!("| {:<58} | {:>22} |", "measure", "figure");
    println!("|{}|{}|", "-".repeat(60), "-".repeat(24));

    let ceiling = ceiling(&dir, batch_requests * 100).await;
    row(
        "ceiling: raw insert, one transaction (events/s)",
        format!("{ceiling:.0}"),
    );

    let launchdarkly = Receiver::start().await.unwrap();
    let segment = Receiver::start().await.unwrap();
    launchdarkly.stop_recording();
    segment.stop_recording();
    segment.set_default(ldbridge::receiver::Reply::status(200).body(r#"{"success":true}"#));
    let never = "0 0 0 1 1 * 2099";
    let daemon = start_daemon(&dir, never, &launchdarkly.url(), &segment.url());

    let mut raw_json = 0;
    let batches: Vec<(Bytes, usize)> = (0..batch_requests)
        .map(|r| {
            let items: Vec<Value> = (0..100).map(|i| message(r * 100 + i)).collect();
            raw_json += items.iter().map(|m| m.to_string().len()).sum::<usize>();
            (
                Bytes::from(
                    json!({"batch": items, "sentAt": "2024-05-14T09:31:28.000Z"}).to_string(),
                ),
                100,
            )
        })
        .collect();
    let batch = load(
        &format!("http://{}/v1/batch", daemon.addr),
        batches,
        connections,
        false,
    )
    .await;
    let batch_rate = report("Segment /v1/batch x100", "events", &batch);
    row(
        "Segment batch ingest ÷ ceiling",
        format!("{:.2}", batch_rate / ceiling),
    );

    let singles: Vec<(Bytes, usize)> = (0..single_requests)
        .map(|n| {
            let mut m = message(10_000_000 + n);
            m.as_object_mut().unwrap().remove("type");
            (Bytes::from(m.to_string()), 1)
        })
        .collect();
    let single = load(
        &format!("http://{}/v1/track", daemon.addr),
        singles,
        connections,
        false,
    )
    .await;
    report("Segment /v1/track single", "requests", &single);

    let payloads: Vec<(Bytes, usize)> = (0..batch_requests)
        .map(|r| {
            let events: Vec<Value> = (0..100).map(|i| ld_event(r * 100 + i)).collect();
            (Bytes::from(Value::Array(events).to_string()), 100)
        })
        .collect();
    let ld = load(
        &format!("http://{}/bulk", daemon.addr),
        payloads,
        connections,
        true,
    )
    .await;
    report("LaunchDarkly /bulk x100", "events", &ld);

    let segment_events = batch.events + single.events;
    row(
        "daemon peak RSS after ingest (MB)",
        format!("{:.1}", daemon.peak_rss_mb()),
    );
    row(
        "database bytes per stored event (undelivered)",
        format!(
            "{:.0}",
            db_bytes(&dir) as f64 / (segment_events + ld.events) as f64
        ),
    );
    row(
        "raw JSON bytes per Segment event (as sent)",
        format!("{:.0}", raw_json as f64 / (batch_requests * 100) as f64),
    );
    daemon.stop();

    // Dispatch: the same database, now with a schedule, to instant receivers.
    // Both routes run at once, sharing the cores.
    let daemon = start_daemon(&dir, "*/1 * * * * *", &launchdarkly.url(), &segment.url());
    let (to_ld, to_segment) = tokio::join!(
        delivered_rate(&launchdarkly, segment_events),
        delivered_rate(&segment, ld.events)
    );
    row(
        "dispatch segment-to-launchdarkly, concurrent (events/s)",
        format!("{to_ld:.0}"),
    );
    row(
        "dispatch launchdarkly-to-segment, concurrent (events/s)",
        format!("{to_segment:.0}"),
    );
    row(
        "events delivered / stored",
        format!(
            "{} / {}",
            launchdarkly.element_count() + segment.element_count(),
            segment_events + ld.events
        ),
    );
    row(
        "daemon peak RSS overall (MB)",
        format!("{:.1}", daemon.peak_rss_mb()),
    );
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
