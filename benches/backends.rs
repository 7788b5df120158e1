//! SQLite and PostgreSQL side by side, in one run: `cargo bench --bench
//! backends`. The real release binary, driven over HTTP as in the
//! throughput bench (`throughput/load.rs`), on each backend in turn:
//!
//! 1. batched ingest (Segment `/v1/batch` and LaunchDarkly `/bulk`, 100
//!    events a request, 32 connections) and single-message ingest
//!    (`/v1/track`, 32 connections): events/s, and the CPU per event of
//!    the daemon and (PostgreSQL) of the database server;
//! 2. dispatch: the events just ingested, undelivered, drained by a
//!    restarted daemon (both mapped routes at once): events/s per route;
//! 3. end to end: Segment batches and LaunchDarkly bulks alternating at a
//!    fixed rate while both routes deliver; the rate delivered and the
//!    oldest undelivered event's age, sampled every 250 ms;
//! 4. on PostgreSQL only, 1 and 2 and 2 nodes: batched ingest and end to end
//!    with two daemons on one database, the load split between them.
//!
//! PostgreSQL: the server `LDBRIDGE_TEST_POSTGRES` names (its CPU is read
//! from `/proc` when it was started by `tests/pg/start.sh`), or one this
//! bench starts with `tests/pg/start.sh` and stops. BENCH_RUNS
//! [sqlite,postgres,postgres-2] picks the runs. Sizes (defaults in
//! brackets): BENCH_BATCH_REQUESTS [2000] per endpoint, BENCH_SINGLE_REQUESTS
//! [20000], BENCH_E2E_RATE [20000] events/s, BENCH_E2E_SECONDS [20].

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
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::Daemon;
use ldbridge::{
    clock,
    domain::Route,
    receiver::{Receiver, Reply},
    store::{delivery_log::oldest_undelivered, Location, Store},
};
use load::{Body, Kind, LoadResult, Target};

const NEVER: &str = "0 0 0 1 1 * 2099";
const EVERY_SECOND: &str = "*/1 * * * * *";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Which database a run uses.
#[derive(Clone)]
enum Backend {
    Sqlite,
    /// The server's URL, and its data directory when this machine can read
    /// its processes' CPU.
    Postgres {
        server: String,
        data: Option<PathBuf>,
    },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres { .. } => "PostgreSQL",
        }
    }

    /// The bench config for a daemon in `dir` on the database named by
    /// `shared` (a directory: the SQLite file in it, or its PostgreSQL
    /// database).
    fn config(
        &self,
        dir: &Path,
        shared: &Path,
        schedule: &str,
        pair: &(Receiver, Receiver),
        node: &str,
    ) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let fixture = fixtures::config(dir, schedule, &pair.0.url(), &pair.1.url());
        match self {
            // With LDBRIDGE_TEST_POSTGRES set the fixture names a
            // PostgreSQL database: the file instead.
            Backend::Sqlite => fixture.unset("store", "url").set(
                "store",
                "path",
                &format!("{:?}", shared.join("ldbridge.db").display().to_string()),
            ),
            Backend::Postgres { server, .. } => {
                let url = fixture::postgres::database_on(server, shared);
                fixture
                    .unset("store", "path")
                    .set("store", "url", &format!("{url:?}"))
                    .set("store", "node", &format!("{node:?}"))
            }
        }
        .write()
    }

    fn location(&self, shared: &Path) -> Location {
        match self {
            Backend::Sqlite => Location::Sqlite(shared.join("ldbridge.db")),
            Backend::Postgres { server, .. } => {
                Location::Postgres(fixture::postgres::database_on(server, shared))
            }
        }
    }

    /// CPU seconds the database server has used so far (its postmaster,
    /// the backends it reaped, the live ones); 0 for SQLite or unknown.
    fn server_cpu(&self) -> f64 {
        let Backend::Postgres {
            data: Some(data), ..
        } = self
        else {
            return 0.0;
        };
        let Some(pid) = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .next()
                    .and_then(|line| line.trim().parse::<u32>().ok())
            })
        else {
            return 0.0;
        };
        let reaped = {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<f64> = rest
                .split_whitespace()
                .map(|field| field.parse().unwrap_or(0.0))
                .collect();
            // cutime and cstime: the 14th and 15th fields after the name.
            (fields.get(13).unwrap_or(&0.0) + fields.get(14).unwrap_or(&0.0)) / 100.0
        };
        let live: f64 = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|child| {
                let stat =
                    std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                *child == pid || rest.split_whitespace().nth(1) == Some(&pid.to_string())
            })
            .map(common::cpu_seconds)
            .sum();
        reaped + live
    }
}

/// Starts `nodes` daemons (`n0`, `n1`, …) on the database of `shared`.
fn start_nodes(
    backend: &Backend,
    shared: &Path,
    nodes: usize,
    schedule: &str,
    pair: &(Receiver, Receiver),
) -> Vec<Daemon> {
    (0..nodes)
        .map(|n| {
            let dir = shared.join(format!("n{n}"));
            Daemon::start(&backend.config(&dir, shared, schedule, pair, &format!("n{n}")))
        })
        .collect()
}

/// Receivers for both destinations, answering at once, counting only.
async fn receivers() -> (Receiver, Receiver) {
    let launchdarkly = Receiver::start().await.unwrap();
    let segment = Receiver::start().await.unwrap();
    launchdarkly.stop_recording();
    segment.stop_recording();
    launchdarkly.set_default(Reply::status(202));
    segment.set_default(Reply::status(200).body(r#"{"success":true}"#));
    (launchdarkly, segment)
}

fn row(name: &str, value: String) {
    println!("| {name} | {value} |");
}

fn cpu_row(name: &str, daemon: f64, server: f64, events: usize) {
    let per = |cpu: f64| cpu * 1e6 / events.max(1) as f64;
    row(
        &format!("{name}: CPU per event, daemon / PostgreSQL (µs)"),
        format!("{:.1} / {:.1}", per(daemon), per(server)),
    );
}

/// Runs `bodies` split over `targets` (one closed loop each, 32
/// connections in all); returns the events acknowledged and the elapsed
/// time.
async fn closed_split(targets: &[Target], bodies: Vec<Body>) -> LoadResult {
    let per = bodies.len().div_ceil(targets.len());
    let mut bodies = bodies.into_iter();
    let mut runs = Vec::new();
    for target in targets {
        let part: Vec<Body> = bodies.by_ref().take(per).collect();
        let target = target.clone();
        let connections = 32 / targets.len();
        runs.push(tokio::spawn(async move {
            load::closed(&target, part, connections).await
        }));
    }
    let mut total = LoadResult::default();
    for run in runs {
        let part = run.await.unwrap();
        total.requests += part.requests;
        total.events += part.events;
        total.errors += part.errors;
        total.elapsed = total.elapsed.max(part.elapsed);
        total.latencies.extend(part.latencies);
    }
    total
}

/// Phases 1 and 2 on `backend` with `nodes` daemons.
async fn ingest_and_dispatch(backend: &Backend, root: &Path, nodes: usize) {
    let label = format!("{}, {nodes} node(s)", backend.name());
    let shared = root.join(format!("{}-{nodes}", backend.name()));
    let pair = receivers().await;
    let daemons: Vec<Daemon> = start_nodes(backend, &shared, nodes, NEVER, &pair);
    let targets: Vec<Target> = daemons.iter().map(|d| Target::new(&d.addr)).collect();
    let batch = env_usize("BENCH_BATCH_REQUESTS", 2000);
    let single = env_usize("BENCH_SINGLE_REQUESTS", 20_000);
    let mut next = 0;
    let mut ingested = [0usize; 2];
    for (kind, name, requests) in [
        (Kind::SegmentBatch, "Segment /v1/batch x100", batch),
        (Kind::LaunchDarklyBulk, "LaunchDarkly /bulk x100", batch),
        (Kind::SegmentTrack, "Segment /v1/track", single),
    ] {
        if nodes > 1 && kind == Kind::SegmentTrack {
            continue;
        }
        let (bodies, _) = fixtures::bodies(kind, next, requests);
        next += requests * 100;
        let daemon_cpu: f64 = daemons.iter().map(Daemon::cpu_seconds).sum();
        let server_cpu = backend.server_cpu();
        let result = closed_split(&targets, bodies).await;
        let daemon_cpu = daemons.iter().map(Daemon::cpu_seconds).sum::<f64>() - daemon_cpu;
        let server_cpu = backend.server_cpu() - server_cpu;
        let unit = if kind == Kind::SegmentTrack {
            "requests"
        } else {
            "events"
        };
        row(
            &format!("{label}: ingest {name}, 32 conn ({unit}/s)"),
            format!(
                "{:.0} (p99 {:.1} ms, {} errors)",
                result.rate(),
                result.percentile(0.99).as_secs_f64() * 1e3,
                result.errors
            ),
        );
        cpu_row(
            &format!("{label}: ingest {name}"),
            daemon_cpu,
            server_cpu,
            result.events,
        );
        match kind {
            Kind::LaunchDarklyBulk => ingested[1] += result.events,
            _ => ingested[0] += result.events,
        }
    }
    for daemon in daemons {
        daemon.stop();
    }
    // Dispatch: the same database, the schedule on.
    let daemons: Vec<Daemon> = start_nodes(backend, &shared, nodes, EVERY_SECOND, &pair);
    let daemon_cpu: f64 = daemons.iter().map(Daemon::cpu_seconds).sum();
    let server_cpu = backend.server_cpu();
    let rates = futures_rates(&pair, ingested).await;
    let daemon_cpu = daemons.iter().map(Daemon::cpu_seconds).sum::<f64>() - daemon_cpu;
    let server_cpu = backend.server_cpu() - server_cpu;
    row(
        &format!("{label}: dispatch segment-to-launchdarkly / launchdarkly-to-segment, both at once (events/s)"),
        format!("{:.0} / {:.0}", rates[0], rates[1]),
    );
    cpu_row(
        &format!("{label}: dispatch"),
        daemon_cpu,
        server_cpu,
        ingested[0] + ingested[1],
    );
    for daemon in daemons {
        daemon.stop();
    }
}

/// Waits for each receiver to get its expected count; each one's rate from
/// its first event to its last.
async fn futures_rates(pair: &(Receiver, Receiver), expected: [usize; 2]) -> [f64; 2] {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = [None, None];
    let mut last = [None, None];
    loop {
        for (n, receiver) in [&pair.0, &pair.1].into_iter().enumerate() {
            let count = receiver.element_count();
            if count > 0 && first[n].is_none() {
                first[n] = Some(Instant::now());
            }
            if count >= expected[n] && last[n].is_none() {
                last[n] = Some(Instant::now());
            }
        }
        if last.iter().all(Option::is_some) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = |n: usize, count: usize| match (first[n], last[n]) {
        (Some(a), Some(b)) if b > a => count as f64 / (b - a).as_secs_f64(),
        _ => 0.0,
    };
    [
        rate(0, pair.0.element_count()),
        rate(1, pair.1.element_count()),
    ]
}

/// Phase 3 on `backend` with `nodes` daemons.
async fn end_to_end(backend: &Backend, root: &Path, nodes: usize) {
    let label = format!("{}, {nodes} node(s)", backend.name());
    let shared = root.join(format!("{}-e2e-{nodes}", backend.name()));
    let pair = Arc::new(receivers().await);
    let daemons: Vec<Daemon> = start_nodes(backend, &shared, nodes, EVERY_SECOND, &pair);
    let store = Store::open_at(&backend.location(&shared), &Default::default())
        .await
        .unwrap();
    let rate = env_usize("BENCH_E2E_RATE", 20_000);
    let seconds = env_usize("BENCH_E2E_SECONDS", 20);
    let requests = rate * seconds / 100;
    let (segment, _) = fixtures::bodies(Kind::SegmentBatch, 0, requests.div_ceil(2));
    let (launchdarkly, _) = fixtures::bodies(Kind::LaunchDarklyBulk, 0, requests / 2);
    let mut bodies: Vec<Body> = Vec::with_capacity(requests);
    for (s, l) in segment.into_iter().zip(launchdarkly) {
        bodies.push(s);
        bodies.push(l);
    }
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = {
        let (store, pair, done) = (store.clone(), Arc::clone(&pair), Arc::clone(&done));
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = clock::now_ms();
                let mut oldest = 0;
                for route in [Route::SegmentToLaunchDarkly, Route::LaunchDarklyToSegment] {
                    if let Ok(Some(at)) = oldest_undelivered(&store, route.as_str()).await {
                        oldest = oldest.max(now - at);
                    }
                }
                samples.push((
                    started.elapsed(),
                    pair.0.element_count() + pair.1.element_count(),
                    oldest,
                ));
            }
            samples
        })
    };
    let daemon_cpu: f64 = daemons.iter().map(Daemon::cpu_seconds).sum();
    let server_cpu = backend.server_cpu();
    // Open loops, one per node, at an equal share of the rate.
    let per = bodies.len().div_ceil(nodes);
    let mut split = bodies.into_iter();
    let mut runs = Vec::new();
    for daemon in &daemons {
        let part: Vec<Body> = split.by_ref().take(per).collect();
        let target = Target::new(&daemon.addr);
        let share = rate as f64 / 100.0 / nodes as f64;
        runs.push(tokio::spawn(async move {
            load::open(&target, part, share).await
        }));
    }
    let mut acknowledged = 0;
    for run in runs {
        acknowledged += run.await.unwrap().events;
    }
    let load_ended = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let delivered = || pair.0.element_count() + pair.1.element_count();
    while delivered() < acknowledged && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = started.elapsed() - load_ended;
    let daemon_cpu = daemons.iter().map(Daemon::cpu_seconds).sum::<f64>() - daemon_cpu;
    let server_cpu = backend.server_cpu() - server_cpu;
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    let steady: Vec<_> = samples
        .iter()
        .filter(|(at, _, _)| *at >= load_ended / 5 && *at <= load_ended)
        .collect();
    let delivered_rate = match (steady.first(), steady.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 / (b.0 - a.0).as_secs_f64(),
        _ => 0.0,
    };
    let mut ages: Vec<i64> = steady.iter().map(|(_, _, age)| *age).collect();
    ages.sort_unstable();
    let seconds = |ms: Option<&i64>| ms.copied().unwrap_or(0) as f64 / 1e3;
    let name = format!("{label}: e2e both mapped routes, {rate} events/s offered");
    row(
        &format!("{name}: delivered, steady (events/s)"),
        format!("{delivered_rate:.0}"),
    );
    row(
        &format!("{name}: oldest undelivered p50 / max (s)"),
        format!(
            "{:.2} / {:.2}",
            seconds(ages.get(ages.len() / 2)),
            seconds(ages.last())
        ),
    );
    row(
        &format!("{name}: delivered / acknowledged, drained after (s)"),
        format!(
            "{} / {acknowledged}, {:.2}",
            delivered(),
            drained.as_secs_f64()
        ),
    );
    cpu_row(&name, daemon_cpu, server_cpu, delivered());
    store.close().await;
    for daemon in daemons {
        daemon.stop();
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let (server, started) = match std::env::var("LDBRIDGE_TEST_POSTGRES") {
        Ok(url) => (url, false),
        Err(_) => {
            let out = std::process::Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pg/start.sh"))
                .output()
                .expect("bash");
            assert!(
                out.status.success(),
                "tests/pg/start.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            let url = line
                .trim()
                .trim_start_matches("export LDBRIDGE_TEST_POSTGRES=")
                .trim_matches('\'')
                .to_owned();
            (url, true)
        }
    };
    let data = server
        .split("host=")
        .nth(1)
        .map(|dir| PathBuf::from(dir.split('&').next().unwrap_or(dir)).join("data"))
        .filter(|data| data.join("postmaster.pid").exists());
    let root = tempfile::tempdir().unwrap();
    let postgres = Backend::Postgres { server, data };
    // BENCH_RUNS [sqlite,postgres,postgres-2] picks the runs.
    let runs = std::env::var("BENCH_RUNS").unwrap_or_else(|_| "sqlite,postgres,postgres-2".into());
    let runs: Vec<&str> = runs.split(',').collect();
    println!("| figure | value |\n|---|---|");
    for (run, backend, nodes) in [
        ("sqlite", Backend::Sqlite, 1),
        ("postgres", postgres.clone(), 1),
        ("postgres-2", postgres, 2),
    ] {
        if runs.contains(&run) {
            ingest_and_dispatch(&backend, root.path(), nodes).await;
            end_to_end(&backend, root.path(), nodes).await;
        }
    }
    if started {
        let _ = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pg/stop.sh"))
            .status();
    }
}
