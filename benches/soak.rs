//! ldbridge's soak test: `cargo bench --bench soak` (10 minutes by default).
//!
//! Runs the real release binary as its own process and holds a steady,
//! open-loop load on it: SOAK_RATE events/s (default 5,000), half Segment
//! `/v1/batch`, half LaunchDarkly `/bulk`, 25 events a request, every event
//! uniquely named. The stand-in LaunchDarkly flaps: 20 s up (with 5 % of
//! answers 500 or cut off mid-response), then 10 s answering 503. Retention
//! runs every minute (`ldbridge purge --older-than 1m`, the hourly job's code)
//! so the database should hold steady.
//!
//! Every 10 s it prints the daemon's RSS, the database + WAL size, the
//! oldest undelivered event's age per route (from `/metrics`) and the
//! events acknowledged and delivered so far. At the end it stops the load,
//! waits for every acknowledged event to arrive, and prints the summary:
//! lost (must be 0), duplicates, memory and size ranges after warm-up.
//!
//! SOAK_SECONDS (default 600) and SOAK_RATE change the run.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/fixture/mod.rs"]
mod fixture;

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{Daemon, DATABASE_FILES};
use fixture::Fixture;
use http_body_util::{BodyExt, Full};
use hyper::{header, Request};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use ldbridge::{
    demo::SDK_KEY,
    receiver::{Fault, Receiver, Recorded, Reply},
};
use serde_json::{json, Value};

const WRITE_KEY: &str = ldbridge::demo::WRITE_KEY;
const EVENTS_PER_REQUEST: usize = 25;
const ADMIN_TOKEN: &str = "soak-admin-token";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The shared fixture (tests/fixture), with the admin API on `admin`, a
/// one-minute retention, dispatch every second, retries of seconds, and no
/// relay (each event takes one route).
fn config(dir: &Path, admin: u16, ld_url: &str, segment_url: &str) -> Fixture {
    Fixture::new(dir, ld_url, segment_url)
        .set("server", "admin_listen", &format!("\"127.0.0.1:{admin}\""))
        .set("server", "admin_token", &format!("{ADMIN_TOKEN:?}"))
        .set("store", "retain", r#""1m""#)
        .set("dispatch", "schedule", r#""*/1 * * * * *""#)
        .set("dispatch", "retry_schedule", r#"["1s", "2s", "5s", "10s"]"#)
        .set("launchdarkly_source", "relay_to_launchdarkly", "false")
}

/// The ids a receiver accepted (202/200), and how many times in all.
#[derive(Default)]
struct Arrivals {
    unique: HashSet<String>,
    total: usize,
}

/// Notes the ids in an accepted request: LaunchDarkly custom event keys, or
/// the `event` names of Segment tracks.
fn note(arrivals: &Mutex<Arrivals>, request: &Recorded, field: &str) {
    let body = request.json();
    let events = body
        .as_array()
        .or_else(|| body["batch"].as_array())
        .cloned()
        .unwrap_or_default();
    let mut arrivals = arrivals.lock().unwrap();
    for event in events {
        if let Some(id) = event[field].as_str() {
            arrivals.total += 1;
            arrivals.unique.insert(id.to_owned());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn db_mb(dir: &Path) -> f64 {
    DATABASE_FILES
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|meta| meta.len() as f64 / 1e6)
        .sum()
}

/// The oldest undelivered age per route, from `/metrics`.
async fn oldest_ages(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    admin: u16,
) -> Vec<(String, f64)> {
    let request = Request::get(format!("http://127.0.0.1:{admin}/metrics"))
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let Ok(response) = client.request(request).await else {
        return Vec::new();
    };
    let text = response
        .into_body()
        .collect()
        .await
        .map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with("ldbridge_oldest_undelivered_age_seconds{"))
        .filter_map(|line| {
            let route = line.split("route=\"").nth(1)?.split('"').next()?.to_owned();
            let age = line.rsplit(' ').next()?.parse().ok()?;
            Some((route, age))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let seconds = env_u64("SOAK_SECONDS", 600);
    let rate = env_u64("SOAK_RATE", 5000);
    let dir = tempfile::tempdir().unwrap();

    let launchdarkly = Receiver::start().await.unwrap();
    let segment = Receiver::start().await.unwrap();
    launchdarkly.stop_recording();
    segment.stop_recording();
    let at_ld = Arc::new(Mutex::new(Arrivals::default()));
    let at_segment = Arc::new(Mutex::new(Arrivals::default()));
    let started = Instant::now();
    {
        let arrivals = Arc::clone(&at_ld);
        launchdarkly.respond_with(move |request| {
            // 20 s up, 10 s down; while up, 5 % of answers go wrong.
            if started.elapsed().as_secs() % 30 >= 20 {
                return Some(Reply::status(503));
            }
            match fastrand::u8(0..40) {
                0 => return Some(Reply::status(500)),
                1 => return Some(Reply::status(202).fault(Fault::CutOff)),
                _ => {}
            }
            note(&arrivals, request, "key");
            Some(Reply::status(202))
        });
        let arrivals = Arc::clone(&at_segment);
        segment.respond_with(move |request| {
            note(&arrivals, request, "messageId");
            Some(Reply::status(200).body(r#"{"success":true}"#))
        });
    }

    let admin = free_port();
    let config = config(dir.path(), admin, &launchdarkly.url(), &segment.url()).write();
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.addr);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{WRITE_KEY}:")
        )
    );

    // Acknowledged ids: Segment event names, and LaunchDarkly (key, messageId).
    let acked_segment = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_ld = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));

    println!("soak: {seconds} s at {rate} events/s (half Segment, half LaunchDarkly), LaunchDarkly flapping 20 s up / 10 s down");
    println!(
        "{:>5} {:>8} {:>9} {:>10} {:>10} {:>26}",
        "t(s)", "RSS MB", "DB+WAL MB", "acked", "delivered", "oldest undelivered (s)"
    );
    let requests_per_tick = (rate as f64 / EVENTS_PER_REQUEST as f64 / 100.0).max(0.01);
    let mut owed = 0.0;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0usize;
    let mut next_sample = 10;
    let mut next_purge = 60;
    let mut samples: Vec<(u64, f64, f64, f64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        owed += requests_per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            n += 1;
            let (url, auth, body, segment_ids, ld_ids) = if n.is_multiple_of(2) {
                let names: Vec<String> = (0..EVENTS_PER_REQUEST)
                    .map(|i| format!("s-{n}-{i}"))
                    .collect();
                let batch: Vec<Value> = names
                    .iter()
                    .map(|name| json!({"type": "track", "userId": format!("user-{}", n % 1000), "event": name,
                        "messageId": name, "properties": {"plan": "pro", "amount": n % 97, "source": "soak"}}))
                    .collect();
                (
                    format!("{base}/v1/batch"),
                    basic.clone(),
                    json!({"batch": batch}).to_string(),
                    names,
                    Vec::new(),
                )
            } else {
                let payload = format!("soak-{n}");
                let events: Vec<(String, String)> = (0..EVENTS_PER_REQUEST)
                    .map(|i| {
                        (
                            format!("l-{n}-{i}"),
                            ldbridge::map::ld_to_segment::message_id(&format!("{payload}:{i}")),
                        )
                    })
                    .collect();
                let body: Vec<Value> = events
                    .iter()
                    .map(|(key, _)| json!({"kind": "custom", "key": key, "creationDate": 1_700_000_000_000u64,
                        "context": {"kind": "user", "key": format!("user-{}", n % 1000)}, "metricValue": 1}))
                    .collect();
                (
                    format!("{base}/bulk"),
                    SDK_KEY.to_owned(),
                    Value::Array(body).to_string(),
                    Vec::new(),
                    events,
                )
            };
            let permit = Arc::clone(&in_flight).acquire_owned().await.unwrap();
            let (client, acked_segment, acked_ld, refused) = (
                client.clone(),
                Arc::clone(&acked_segment),
                Arc::clone(&acked_ld),
                Arc::clone(&refused),
            );
            tokio::spawn(async move {
                let mut request = Request::post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::AUTHORIZATION, auth);
                if !ld_ids.is_empty() {
                    request = request
                        .header("x-launchdarkly-event-schema", "4")
                        .header("x-launchdarkly-payload-id", format!("soak-{n}"));
                }
                let request = request.body(Full::new(Bytes::from(body))).unwrap();
                let ok = match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        ok
                    }
                    Err(_) => false,
                };
                if ok {
                    acked_segment.lock().unwrap().extend(segment_ids);
                    acked_ld.lock().unwrap().extend(ld_ids);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
            });
        }
        let elapsed = started.elapsed().as_secs();
        if elapsed >= next_purge {
            next_purge += 60;
            // In the background: the load must not pause while it runs.
            let purge = tokio::process::Command::new(env!("CARGO_BIN_EXE_ldbridge"))
                .arg("--config")
                .arg(&config)
                .args(["purge", "--older-than", "1m"])
                .output();
            tokio::spawn(async move {
                let started = Instant::now();
                if let Ok(output) = purge.await {
                    let text = String::from_utf8_lossy(&output.stdout);
                    let first = text.lines().next().unwrap_or_default().to_owned();
                    println!(
                        "      retention: {first} ({:.1} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
        if elapsed >= next_sample {
            next_sample += 10;
            let ages = oldest_ages(&client, admin).await;
            let worst = ages.iter().map(|(_, age)| *age).fold(0.0, f64::max);
            let acked = acked_segment.lock().unwrap().len() + acked_ld.lock().unwrap().len();
            let delivered =
                at_ld.lock().unwrap().unique.len() + at_segment.lock().unwrap().unique.len();
            let (rss, db) = (daemon.rss_mb(), db_mb(dir.path()));
            samples.push((elapsed, rss, db, worst));
            let ages_text: Vec<String> = ages
                .iter()
                .filter(|(route, _)| !route.ends_with("relay"))
                .map(|(route, age)| format!("{route}={age:.0}"))
                .collect();
            println!(
                "{elapsed:>5} {rss:>8.1} {db:>9.1} {acked:>10} {delivered:>10}  {}",
                ages_text.join(" ")
            );
        }
    }

    // Drain: every acknowledged event must arrive.
    let _ = Arc::clone(&in_flight).acquire_many_owned(256).await;
    let acked_segment: HashSet<String> = acked_segment.lock().unwrap().iter().cloned().collect();
    let acked_ld: Vec<(String, String)> = acked_ld.lock().unwrap().clone();
    let drained = Instant::now();
    let lost = loop {
        let lost_to_ld = acked_segment
            .iter()
            .filter(|name| !at_ld.lock().unwrap().unique.contains(*name))
            .count();
        let lost_to_segment = acked_ld
            .iter()
            .filter(|(_, id)| !at_segment.lock().unwrap().unique.contains(id))
            .count();
        if lost_to_ld + lost_to_segment == 0 || drained.elapsed() > Duration::from_secs(120) {
            break (lost_to_ld, lost_to_segment);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let peak = daemon.peak_rss_mb();
    daemon.stop();

    // Warm-up: the first minute (or sixth of a short run) fills the
    // database up to what retention keeps.
    let warm_from = 60.min(seconds / 6);
    let warm: Vec<_> = samples.iter().filter(|(t, ..)| *t >= warm_from).collect();
    let range = |f: fn(&&(u64, f64, f64, f64)) -> f64| {
        let values: Vec<f64> = warm.iter().map(f).collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    };
    let (rss_lo, rss_hi) = range(|s| s.1);
    let (db_lo, db_hi) = range(|s| s.2);
    let (_, age_hi) = range(|s| s.3);
    let ld = at_ld.lock().unwrap();
    let sg = at_segment.lock().unwrap();
    println!("\nsoak summary ({seconds} s at {rate} events/s):");
    println!(
        "  segment-to-launchdarkly: acknowledged {}, delivered {}, lost {}, duplicates {}",
        acked_segment.len(),
        ld.unique.len(),
        lost.0,
        ld.total - ld.unique.len()
    );
    println!(
        "  launchdarkly-to-segment: acknowledged {}, delivered {}, lost {}, duplicates {}",
        acked_ld.len(),
        sg.unique.len(),
        lost.1,
        sg.total - sg.unique.len()
    );
    println!(
        "  requests refused or failed at the client: {}",
        refused.load(Ordering::Relaxed)
    );
    println!("  after {warm_from} s: RSS {rss_lo:.1}–{rss_hi:.1} MB (peak {peak:.1} MB), database + WAL {db_lo:.1}–{db_hi:.1} MB, oldest undelivered at most {age_hi:.0} s");
    println!(
        "  drained everything {:.1} s after the load stopped",
        drained.elapsed().as_secs_f64()
    );
    if lost != (0, 0) {
        eprintln!("LOST EVENTS");
        std::process::exit(1);
    }
}
