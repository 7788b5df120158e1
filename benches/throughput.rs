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
    process::{Child, Command, Stdio},
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
use ldbridge::{
    receiver::Receiver,
    store::{
        writer::{IngestBatch, NewEvent, Writer},
        Protocol, Route, Store, StoreOptions,
    },
};
use serde_json::{json, Value};

const WRITE_KEY: &str = "bench-write-key";

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

fn config_text(dir: &Path, schedule: &str, events_url: &str) -> String {
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
[[segment_source]]
name = "bench"
write_key = "{WRITE_KEY}"
to_launchdarkly = {{ client_side_id = "6488674dc2ea1d6673731ba2" }}
"#,
        db = dir.join("ldbridge.db").display()
    )
}

struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    fn start(dir: &Path, schedule: &str, events_url: &str) -> Daemon {
        let config = dir.join("bench.toml");
        std::fs::write(&config, config_text(dir, schedule, events_url)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ldbridge"))
            .args(["--log-format", "json", "--config"])
            .arg(&config)
            .arg("serve")
            .env("LDBRIDGE_LOG", "warn,ldbridge::daemon=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    if entry["message"] == "ldbridge is ready." {
                        let _ = tx.send(entry["listen"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("daemon ready");
        Daemon { child, addr }
    }

    /// Peak resident memory so far (VmHWM), in MB.
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
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
async fn load(url: &str, bodies: Vec<(Bytes, usize)>, connections: usize) -> LoadResult {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{WRITE_KEY}:")
        )
    );
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
                let request = Request::post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::AUTHORIZATION, &auth)
                    .body(Full::new(body.clone()))
                    .unwrap();
                let sent = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status() == 200;
                        let _ = response.into_body().collect().await;
                        latencies.push(sent.elapsed());
                        if ok {
                            events += count
                        } else {
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

#[tokio::main]
async fn main() {
    let batch_requests = env_usize("BENCH_BATCH_REQUESTS", 2000);
    let single_requests = env_usize("BENCH_SINGLE_REQUESTS", 40_000);
    let connections = env_usize("BENCH_CONNECTIONS", 32);
    let dir: PathBuf = tempfile::tempdir().unwrap().keep();
    println!(
        "ldbridge throughput benchmark ({} cores, {connections} connections)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| {:<58} | {:>22} |", "measure", "figure");
    println!("|{}|{}|", "-".repeat(60), "-".repeat(24));

    let ceiling = ceiling(&dir, batch_requests * 100).await;
    row(
        "ceiling: raw insert, one transaction (events/s)",
        format!("{ceiling:.0}"),
    );

    let receiver = Receiver::start().await.unwrap();
    receiver.stop_recording();
    let daemon = Daemon::start(&dir, "0 0 0 1 1 * 2099", &receiver.url());
    let raw_json: usize;
    let batches: Vec<(Bytes, usize)> = {
        let mut total = 0;
        let bodies = (0..batch_requests)
            .map(|r| {
                let items: Vec<Value> = (0..100).map(|i| message(r * 100 + i)).collect();
                total += items.iter().map(|m| m.to_string().len()).sum::<usize>();
                (
                    Bytes::from(
                        json!({"batch": items, "sentAt": "2024-05-14T09:31:28.000Z"}).to_string(),
                    ),
                    100,
                )
            })
            .collect();
        raw_json = total;
        bodies
    };
    let batch = load(
        &format!("http://{}/v1/batch", daemon.addr),
        batches,
        connections,
    )
    .await;
    let batch_rate = batch.events as f64 / batch.elapsed.as_secs_f64();
    row(
        "ingest /v1/batch x100 (events/s)",
        format!("{batch_rate:.0}"),
    );
    row(
        "ingest /v1/batch x100 ack latency p50 / p99 (ms)",
        format!(
            "{:.1} / {:.1}",
            batch.percentile(0.5).as_secs_f64() * 1e3,
            batch.percentile(0.99).as_secs_f64() * 1e3
        ),
    );
    row("ingest ÷ ceiling", format!("{:.2}", batch_rate / ceiling));
    row(
        "refused requests (batch)",
        format!("{} of {}", batch.errors, batch.requests),
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
    )
    .await;
    row(
        "ingest /v1/track single (requests/s)",
        format!("{:.0}", single.events as f64 / single.elapsed.as_secs_f64()),
    );
    row(
        "ingest /v1/track ack latency p50 / p99 (ms)",
        format!(
            "{:.1} / {:.1}",
            single.percentile(0.5).as_secs_f64() * 1e3,
            single.percentile(0.99).as_secs_f64() * 1e3
        ),
    );
    row(
        "refused requests (single)",
        format!("{} of {}", single.errors, single.requests),
    );
    let stored = batch.events + single.events;
    let ingest_rss = daemon.peak_rss_mb();
    row(
        "daemon peak RSS after ingest (MB)",
        format!("{ingest_rss:.1}"),
    );
    row(
        "database bytes per stored event (undelivered)",
        format!("{:.0}", db_bytes(&dir) as f64 / stored as f64),
    );
    row(
        "raw JSON bytes per event (as sent)",
        format!("{:.0}", raw_json as f64 / (batch_requests * 100) as f64),
    );
    daemon.stop();

    // Dispatch: the same database, now with a schedule, to an instant receiver.
    let daemon = Daemon::start(&dir, "*/1 * * * * *", &receiver.url());
    let deadline = Instant::now() + Duration::from_secs(600);
    while receiver.element_count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let first = Instant::now();
    while receiver.element_count() < stored && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dispatch_rate = receiver.element_count() as f64 / first.elapsed().as_secs_f64();
    row(
        "dispatch to instant receiver (events/s)",
        format!("{dispatch_rate:.0}"),
    );
    row(
        "events delivered / stored",
        format!("{} / {stored}", receiver.element_count()),
    );
    row(
        "daemon peak RSS during dispatch (MB)",
        format!("{:.1}", daemon.peak_rss_mb()),
    );
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
