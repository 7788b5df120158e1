//! Operator-surface benchmark: `cargo bench --bench operator`.
//!
//! Seeds a database with BENCH_EVENTS (default 1,000,000) stored Segment
//! events in batches of 100 (1 % of batches failed), then times the real
//! binary's `log --status failed --limit 50` and `explain` (wall clock per
//! process, best and median of 7 runs: includes process start and opening
//! the database), and finally runs the retention purge on a live daemon while
//! a load generator posts single `/v1/track` requests, reporting the worst
//! acknowledgement latency during the purge next to the baseline.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

mod common;
#[path = "../tests/fixture/mod.rs"]
mod fixture;

use bytes::Bytes;
use common::Daemon;
use fixture::Fixture;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use ldbridge::{
    domain::accepted::{IngestBatch, NewEvent},
    domain::{Protocol, Route},
    store::{writer::Writer, Store, StoreOptions},
};
use serde_json::{json, Value};

fn body(n: usize) -> String {
    json!({"type": "track", "event": "Order Completed", "userId": format!("user-{}", n % 5000),
           "messageId": format!("bench-{n:09}"), "timestamp": "2024-05-14T09:31:27.412Z",
           "receivedAt": "2024-05-14T09:31:27.500Z", "properties": {"revenue": 84.5, "orderId": format!("ord_{n}")},
           "context": {"library": {"name": "analytics-node", "version": "3.1.0"}}})
    .to_string()
}

async fn seed(path: &Path, events: usize) {
    let store = Store::open(path, &StoreOptions::default()).await.unwrap();
    let (writer, _task) = Writer::start(&store, 64, |_| {}).await.unwrap();
    let old = ldbridge::clock::now_ms() - 30 * 86_400_000;
    for start in (0..events).step_by(10_000) {
        let rows = (start..(start + 10_000).min(events))
            .map(|n| NewEvent {
                dedupe_key: format!("bench-{n:09}"),
                kind: "track".into(),
                body: body(n),
            })
            .collect();
        let batch = IngestBatch {
            source: "web".into(),
            protocol: Protocol::Segment,
            received_at: old + start as i64,
            meta: None,
            payload_id: None,
            routes: vec![Route::SegmentToLaunchDarkly],
            events: rows,
            refusals: Vec::new(),
        };
        writer.submit(batch).await.unwrap();
    }
    drop(writer);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for sql in [
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
         INSERT INTO batches (id, route, source, status, payload_id, event_count, created_at, updated_at) \
         SELECT i, 'segment-to-launchdarkly', 'bench', CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'delivered' END, \
                'p-' || i, 100, ?2 + i, ?2 + i FROM n",
        "UPDATE deliveries SET batch_id = (event_id - 1) / 100 + 1, \
                status = CASE WHEN ((event_id - 1) / 100 + 1) % 100 = 0 THEN 'failed' ELSE 'delivered' END",
        "INSERT INTO attempts (batch_id, attempt, triggered_by, started_at, duration_ms, http_status, outcome) \
         SELECT id, 1, 'scheduled', created_at, 12, CASE status WHEN 'failed' THEN 401 ELSE 202 END, status FROM batches",
    ] {
        sqlx::query(sql).bind((events / 100) as i64).bind(old).execute(&pool).await.unwrap();
    }
    // The rows were settled behind the store's back: count them again, and
    // give the last 14 days busy minutes (every minute 700 delivered, 10
    // retried, 7 failed, 5 skipped), as a daemon under load would have.
    for sql in [
        "DELETE FROM totals",
        "INSERT INTO totals (route, status, n) SELECT route, status, COUNT(*) FROM deliveries GROUP BY route, status",
        "WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i < 20160) \
         INSERT INTO flows (minute, route, source, what, reason, n) \
         SELECT (?1 / 60000) - i, 1, 'web', w.what, w.reason, w.n FROM m, \
           (SELECT 'received' AS what, '' AS reason, 722 AS n UNION ALL SELECT 'delivered', '', 700 \
            UNION ALL SELECT 'retried', '', 10 UNION ALL SELECT 'failed', 'HTTP 401: destination rejected the credential', 7 \
            UNION ALL SELECT 'skipped', 'page calls have no LaunchDarkly equivalent', 5) w",
        "INSERT INTO flows_hourly (hour, route, source, what, reason, n) \
         SELECT minute / 60, route, source, what, reason, SUM(n) FROM flows GROUP BY 1, 2, 3, 4, 5 \
         ON CONFLICT (hour, route, source, what, reason) DO UPDATE SET n = excluded.n",
    ] {
        sqlx::query(sql).bind(ldbridge::clock::now_ms()).execute(&pool).await.unwrap();
    }
    pool.close().await;
    store.close().await;
}

/// Best and median wall time of `runs` runs of the CLI.
fn time_cli(config: &Path, args: &[&str], runs: usize) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let status = Command::new(env!("CARGO_BIN_EXE_ldbridge"))
                .arg("--config")
                .arg(config)
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "{args:?} failed");
            started.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[runs / 2])
}

fn row(name: &str, value: String) {
    println!("| {name:<62} | {value:>18} |");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ldbridge.db");
    let seeding = Instant::now();
    seed(&db, events).await;
    println!(
        "Seeded {events} events in {:.1}s\n",
        seeding.elapsed().as_secs_f64()
    );
    println!("| {:<62} | {:>18} |", "measure", "figure");
    println!("|{}|{}|", "-".repeat(64), "-".repeat(20));
    let nowhere = "http://127.0.0.1:9";
    let config = Fixture::new(dir.path(), nowhere, nowhere).write();
    row(
        "database size (MB)",
        format!(
            "{:.0}",
            std::fs::metadata(&db).map_or(0, |m| m.len()) as f64 / 1e6
        ),
    );
    let message_id = format!("bench-{:09}", events / 2 + 123);
    let event_id = (events * 7 / 9).to_string();
    let batch_id = (events / 200).to_string();
    for (name, args) in [
        (
            "log --status failed --limit 50",
            vec!["log", "--status", "failed", "--limit", "50"],
        ),
        (
            "log --status failed --limit 50 --json",
            vec!["log", "--status", "failed", "--limit", "50", "--json"],
        ),
        ("explain <messageId>", vec!["explain", message_id.as_str()]),
        ("explain <event id>", vec!["explain", event_id.as_str()]),
        ("show <batch id>", vec!["show", batch_id.as_str()]),
        ("stats (full counts)", vec!["stats"]),
    ] {
        let (best, median) = time_cli(&config, &args, 7);
        row(
            &format!("{name} best / median (ms)"),
            format!("{:.1} / {:.1}", ms(best), ms(median)),
        );
    }

    // The Delivery Overview's pages on a live daemon (tokenless loopback
    // admin listener): wall time per request, best and median of 7.
    let admin_config = Fixture::new(dir.path(), nowhere, nowhere)
        .set("server", "admin_listen", r#""127.0.0.1:0""#)
        .write();
    let daemon = Daemon::start(&admin_config);
    let admin = daemon.admin.clone().expect("the admin listener");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let failed_batch = (events / 100 / 100 * 100).max(100).to_string();
    for (name, path) in [
        ("page: overview, 10 min", "/ui/?window=10m".to_owned()),
        ("page: overview, 1 h", "/ui/?window=1h".to_owned()),
        ("page: overview, 24 h", "/ui/?window=24h".to_owned()),
        ("page: overview, 7 days", "/ui/?window=7d".to_owned()),
        ("page: overview, 14 days", "/ui/?window=14d".to_owned()),
        ("page: batches", "/ui/batches".to_owned()),
        (
            "page: batches, failed",
            "/ui/batches?status=failed".to_owned(),
        ),
        (
            "page: one batch (100 events as sent)",
            format!("/ui/batches/{failed_batch}"),
        ),
        (
            "page: explain <messageId>",
            format!("/ui/explain?q={message_id}"),
        ),
        ("page: refusals", "/ui/refusals".to_owned()),
        (
            "page: skipped events, 24 h",
            "/ui/events?route=segment-to-launchdarkly&status=skipped&window=24h".to_owned(),
        ),
        ("api: stats --since 14d", "/api/stats?since=14d".to_owned()),
        ("metrics", "/metrics".to_owned()),
    ] {
        let mut times = Vec::new();
        for _ in 0..7 {
            let request = Request::get(format!("http://{admin}{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let started = Instant::now();
            let response = client.request(request).await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let _ = response.into_body().collect().await.unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        row(
            &format!("{name} best / median (ms)"),
            format!("{:.1} / {:.1}", ms(times[0]), ms(times[3])),
        );
    }
    let (best, median) = time_cli(&config, &["stats", "--since", "14d"], 7);
    row(
        "stats --since 14d (CLI) best / median (ms)",
        format!("{:.1} / {:.1}", ms(best), ms(median)),
    );
    daemon.stop();

    // Retention on a live daemon under ingest load.
    let daemon = Daemon::start(&config);
    let addr = daemon.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let purging = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, purging) = (stop.clone(), purging.clone());
        tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let (mut base, mut during) = (Vec::new(), Vec::new());
            let epoch = Instant::now();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let message = json!({"userId": "u", "event": "Load", "messageId": format!("load-{n}"), "writeKey": ldbridge::demo::WRITE_KEY});
                let request = Request::post(format!("http://{addr}/v1/track"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(message.to_string())))
                    .unwrap();
                let sent = Instant::now();
                let response = client.request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let _ = response.into_body().collect().await;
                let took = sent.elapsed();
                if took > Duration::from_millis(100) {
                    let phase = if purging.load(Ordering::SeqCst) {
                        "during purge"
                    } else {
                        "outside purge"
                    };
                    eprintln!("slow request: {took:?} at {:?} ({phase})", sent - epoch);
                }
                if purging.load(Ordering::SeqCst) {
                    during.push(took)
                } else {
                    base.push(took)
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (base, during)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    purging.store(true, Ordering::SeqCst);
    let started = Instant::now();
    eprintln!("purge starts");
    let output = Command::new(env!("CARGO_BIN_EXE_ldbridge"))
        .arg("--config")
        .arg(&config)
        .args(["purge", "--older-than", "7d", "--json"])
        .output()
        .unwrap();
    let purge_time = started.elapsed();
    purging.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut base, mut during) = load.await.unwrap();
    base.sort();
    during.sort();
    let purged: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    row("purge: events removed", purged["events"].to_string());
    row(
        "purge: longest write-lock hold of one chunk (ms)",
        format!("{:.1}", purged["max_lock_ms"].as_f64().unwrap_or(0.0)),
    );
    row(
        "purge: duration (s)",
        format!("{:.1}", purge_time.as_secs_f64()),
    );
    row(
        "purge: events/s",
        format!(
            "{:.0}",
            purged["events"].as_f64().unwrap_or(0.0) / purge_time.as_secs_f64()
        ),
    );
    let pct = |v: &[Duration], p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    row(
        "ingest ack latency, baseline p50 / p99 / max (ms)",
        format!(
            "{:.1} / {:.1} / {:.1}",
            ms(pct(&base, 0.5)),
            ms(pct(&base, 0.99)),
            ms(*base.last().unwrap_or(&Duration::ZERO))
        ),
    );
    row(
        "ingest ack latency, during purge p50 / p99 / max (ms)",
        format!(
            "{:.1} / {:.1} / {:.1}",
            ms(pct(&during, 0.5)),
            ms(pct(&during, 0.99)),
            ms(*during.last().unwrap_or(&Duration::ZERO))
        ),
    );
    row("requests during purge", during.len().to_string());
    daemon.stop();
}
