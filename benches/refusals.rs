//! What refusing costs valid ingest: `cargo bench --bench refusals`.
//!
//! Runs the release daemon (dispatch never fires) and prints, as a table:
//!
//! 1. Segment `/v1/batch` ×100 at 32 connections, all valid, against the
//!    same with 1 % invalid messages (one per batch has no `event`, so it is
//!    refused alone and recorded in the refusal log), alternating rounds;
//!    the medians and their ratio (target: within 5 %).
//! 2. Valid batches on 16 connections alone, then the same while 16 more
//!    connections flood all-invalid batches (100 refusals per request) as
//!    fast as they are answered; the valid rate's ratio (target: ≥ 80 %),
//!    and the refusal log's size against its cap afterwards.
//!
//! BENCH_REFUSAL_REQUESTS [1500] batches per connection group and round;
//! BENCH_REFUSAL_ROUNDS [3].

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/fixture/mod.rs"]
mod fixture;
#[allow(dead_code)] // only the Segment message is used here
#[path = "throughput/fixtures.rs"]
mod fixtures;
#[allow(dead_code)] // only the closed loop and `send` are used here
#[path = "throughput/load.rs"]
mod load;

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::Daemon;
use load::{Body, Kind, LoadResult, Target};
use serde_json::{json, Value};

/// Bodies of `requests` batches of 100 messages numbered from `first`,
/// where the messages at `broken` positions have no `event` (refused).
fn batches(first: usize, requests: usize, broken: &[usize]) -> Vec<Body> {
    (0..requests)
        .map(|r| {
            let n = first + r * 100;
            let items: Vec<Value> = (0..100)
                .map(|i| {
                    let mut message = fixtures::message(n + i);
                    if broken.contains(&i) {
                        message.as_object_mut().unwrap().remove("event");
                    }
                    message
                })
                .collect();
            let envelope = json!({"batch": items, "sentAt": "2024-05-14T09:31:28.000Z"});
            Body {
                kind: Kind::SegmentBatch,
                bytes: Bytes::from(envelope.to_string()),
                events: 100 - broken.len(),
            }
        })
        .collect()
}

fn row(name: &str, value: String) {
    println!("| {name:<64} | {value:>16} |");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Messages (valid or not) a run took per second.
fn messages_per_second(result: &LoadResult) -> f64 {
    (result.requests - result.errors) as f64 * 100.0 / result.elapsed.as_secs_f64()
}

/// Rows in the refusal log and the cap's setting, read by the CLI.
fn refusal_rows(config: &Path) -> usize {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ldbridge"))
        .arg("--config")
        .arg(config)
        .args(["refusals", "--json", "--limit", "100000000"])
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    rows.as_array().map_or(0, Vec::len)
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let requests = env("BENCH_REFUSAL_REQUESTS", 1500);
    let rounds = env("BENCH_REFUSAL_ROUNDS", 3);
    let dir = tempfile::tempdir().unwrap();
    let max_rows = 20_000;
    let config = fixtures::config(
        dir.path(),
        "0 0 0 1 1 * 2099",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
    )
    .set("store", "refusal_log_max_rows", &max_rows.to_string())
    .write();
    let daemon = Daemon::start(&config);
    let target = Target::new(&daemon.addr);
    let mut next = 0;
    let mut take = |count: usize| {
        let first = next;
        next += count * 100;
        first
    };
    // Warm up: the first requests pay for connections and page growth.
    load::closed(&target, batches(take(200), 200, &[]), 32).await;

    println!("ldbridge refusal benchmark ({requests} batches x100 per run, {rounds} rounds)\n");
    println!("| {:<64} | {:>16} |", "measure", "value");
    println!("|---|---:|");
    let (mut valid, mut one_percent) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternating which goes first: the database grows as they run.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for broken in order {
            let broken: &[usize] = if broken { &[37] } else { &[] };
            let bodies = batches(take(requests), requests, broken);
            let result = load::closed(&target, bodies, 32).await;
            assert_eq!(result.errors, 0, "a batch was not acknowledged");
            let rate = messages_per_second(&result);
            if broken.is_empty() {
                valid.push(rate);
            } else {
                one_percent.push(rate);
            }
        }
    }
    let (valid, one_percent) = (median(valid), median(one_percent));
    row(
        "all valid, 32 conn (messages/s, median)",
        format!("{valid:.0}"),
    );
    row(
        "1 % invalid, 32 conn (messages/s, median)",
        format!("{one_percent:.0}"),
    );
    row(
        "1 % invalid ÷ all valid",
        format!("{:.3}", one_percent / valid),
    );

    let (mut alone, mut flooded, mut flood_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let result = load::closed(&target, batches(take(requests), requests, &[]), 16).await;
        alone.push(result.rate());
        let garbage: Vec<usize> = (0..100).collect();
        let good = batches(take(requests), requests, &[]);
        // 16 connections send all-invalid batches, each as soon as the last
        // is answered, until the valid run is done.
        let flood = std::sync::Arc::new(batches(take(64), 64, &garbage));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flooders: Vec<_> = (0..16)
            .map(|_| {
                let (target, flood, stop) = (target.clone(), flood.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut sent = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        target.send(&flood[sent % flood.len()]).await;
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        let started = Instant::now();
        let result = load::closed(&target, good, 16).await;
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for flooder in flooders {
            sent += flooder.await.unwrap();
        }
        flooded.push(result.rate());
        flood_rates.push(sent as f64 * 100.0 / started.elapsed().as_secs_f64());
    }
    let (alone, flooded) = (median(alone), median(flooded));
    row(
        "valid alone, 16 conn (events/s, median)",
        format!("{alone:.0}"),
    );
    row(
        "valid beside a 16-conn flood of invalid batches (events/s)",
        format!("{flooded:.0}"),
    );
    row(
        "valid beside the flood ÷ alone",
        format!("{:.3}", flooded / alone),
    );
    row(
        "flood: invalid messages refused per second (median)",
        format!("{:.0}", median(flood_rates)),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    row(
        "refusal log rows after the flood (cap)",
        format!("{} ({max_rows})", refusal_rows(&config)),
    );
    row(
        "daemon peak RSS (MB)",
        format!("{:.1}", daemon.peak_rss_mb()),
    );
    daemon.stop();
}
