//! Two nodes on one PostgreSQL database, behind a round-robin "load
//! balancer" (each post goes to the next node): one node is SIGKILLed and
//! restarted again and again under mixed load, then killed for good.
//!
//! Afterwards every acknowledged event has reached every route, each copy
//! with its original dedupe id; every LaunchDarkly batch sent twice was
//! sent again only after a kill released its claim (never while a claim
//! held); and the survivor took the dead node's claimed batches once their
//! claims expired, with their payload ids.
//!
//! Needs a PostgreSQL (`LDBRIDGE_TEST_POSTGRES`, started by `.ci/run`);
//! without one it skips, and `LDBRIDGE_REQUIRE_POSTGRES=1` makes that a
//! failure.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use ldbridge::receiver::{Receiver, Reply};

use crate::{
    crash::{check_route, generate, received, Acked},
    fixture::{postgres, Fixture},
    process::{Daemon, EVERY_SECOND},
};

const KILLS: usize = 12;
const CONNECTIONS: usize = 4;
/// Long enough that no claim expires under load while its node lives.
const CLAIM: &str = "8s";

/// Says why the test cannot run without a PostgreSQL; fails instead under
/// `LDBRIDGE_REQUIRE_POSTGRES=1` (set by .ci/run).
pub fn skip_without_postgres(test: &str) -> bool {
    if postgres::enabled() {
        return false;
    }
    let why = format!("{test} needs a PostgreSQL: set LDBRIDGE_TEST_POSTGRES (tests/pg/start.sh)");
    if std::env::var("LDBRIDGE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("required here (LDBRIDGE_REQUIRE_POSTGRES=1), but {why}");
    }
    eprintln!("SKIPPED: {why} (LDBRIDGE_REQUIRE_POSTGRES=1 makes this a failure)");
    true
}

/// The config of node `node` in `dir`, on the database of `shared`'s
/// fixture.
fn node_config(
    dir: &Path,
    shared: &Path,
    node: &str,
    launchdarkly: &Receiver,
    segment: &Receiver,
) -> std::path::PathBuf {
    let url = postgres::database_for(shared).expect("on PostgreSQL");
    Fixture::new(dir, &launchdarkly.url(), &segment.url())
        .set("store", "url", &format!("{url:?}"))
        .set("store", "node", &format!("{node:?}"))
        .set("dispatch", "schedule", &format!("{EVERY_SECOND:?}"))
        .set("dispatch", "max_batch_events", "50")
        .set("dispatch", "claim_timeout", &format!("{CLAIM:?}"))
        .write()
}

/// How many batches `node` holds claimed (`sending`).
async fn claims_of(dir: &Path, node: &str) -> usize {
    crate::helpers::query_strings(
        dir,
        &format!("SELECT CAST(id AS TEXT) FROM batches WHERE status = 'sending' AND claimed_by = '{node}'"),
    )
    .await
    .len()
}

/// Arrival times of each LaunchDarkly batch (by payload id) at `receiver`.
fn arrivals(receiver: &Receiver) -> BTreeMap<String, Vec<Instant>> {
    let mut seen: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for request in receiver.requests() {
        if let Some(id) = request.headers.get("x-launchdarkly-payload-id") {
            let id = id.to_str().unwrap_or_default().to_owned();
            seen.entry(id).or_default().push(request.at);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_postgresql_lose_nothing_and_never_send_a_claimed_batch_twice() {
    if skip_without_postgres("two_nodes_on_one_postgresql") {
        return;
    }
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let launchdarkly = Receiver::start().await.unwrap();
    let segment = Receiver::start().await.unwrap();
    // Slow answers keep requests in flight, so kills land mid-request.
    launchdarkly.set_default(Reply::status(202).delay(Duration::from_millis(150)));
    segment.set_default(Reply::status(200).delay(Duration::from_millis(150)));
    let config_a = node_config(
        dir_a.path(),
        dir_a.path(),
        "node-a",
        &launchdarkly,
        &segment,
    );
    let config_b = node_config(
        dir_b.path(),
        dir_a.path(),
        "node-b",
        &launchdarkly,
        &segment,
    );
    let mut a = Daemon::start(&config_a);
    let b = Daemon::start(&config_b);

    let addresses = Arc::new(Mutex::new(vec![a.addr, b.addr]));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let generators: Vec<_> = (0..CONNECTIONS)
        .map(|connection| {
            tokio::spawn(generate(
                connection,
                Arc::clone(&addresses),
                Arc::clone(&acked),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("two nodes: CRASH_SEED={seed}");
    let mut kill_times = fastrand::Rng::with_seed(seed);
    let mut kills = Vec::new();
    let mut logs = String::new();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(kill_times.u64(200..1500))).await;
        logs.push_str(&a.logs());
        a.kill();
        kills.push(Instant::now());
        let config = config_a.clone();
        a = tokio::task::spawn_blocking(move || Daemon::start(&config))
            .await
            .unwrap();
        *addresses.lock().unwrap() = vec![a.addr, b.addr];
    }
    // The last kill is for good, while node A holds claims: node B alone
    // goes on, and takes A's claimed batches once their claims expire.
    let deadline = Instant::now() + Duration::from_secs(20);
    while claims_of(dir_a.path(), "node-a").await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    *addresses.lock().unwrap() = vec![b.addr];
    logs.push_str(&a.logs());
    a.kill();
    kills.push(Instant::now());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut refused = 0;
    for generator in generators {
        refused += generator.await.unwrap();
    }

    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let ld_keys: BTreeSet<String> = acked.launchdarkly.keys().cloned().collect();
    let ld_ids: BTreeSet<String> = acked.launchdarkly.values().cloned().collect();
    let all_arrived = || {
        let keys = |seen: Vec<(String, String)>| {
            seen.into_iter().map(|(id, _)| id).collect::<BTreeSet<_>>()
        };
        acked
            .segment
            .is_subset(&keys(received(&launchdarkly, "/events/bulk/", "key", None)))
            && ld_keys.is_subset(&keys(received(&launchdarkly, "/bulk", "key", None)))
            && ld_ids.is_subset(&keys(received(&segment, "/v1/batch", "messageId", None)))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !all_arrived() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node A's last claims expire and node B sends those batches again.
    while claims_of(dir_a.path(), "node-a").await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        claims_of(dir_a.path(), "node-a").await,
        0,
        "node A's claims were never taken over"
    );
    logs.push_str(&b.logs());

    let payload = Some("x-launchdarkly-payload-id");
    let (to_ld, dup_ld) = check_route(
        "segment-to-launchdarkly",
        &acked.segment,
        &received(&launchdarkly, "/events/bulk/", "key", payload),
    );
    let (relayed, dup_relay) = check_route(
        "launchdarkly-relay",
        &ld_keys,
        &received(&launchdarkly, "/bulk", "key", payload),
    );
    let (to_segment, dup_segment) = check_route(
        "launchdarkly-to-segment",
        &ld_ids,
        &received(&segment, "/v1/batch", "messageId", None),
    );
    // A batch sent again was released by a kill of the node holding it: a
    // kill falls between the two sends (a request the dying node had
    // written may be read just after the kill: 50 ms of slack).
    let mut resent = 0;
    for (payload_id, times) in arrivals(&launchdarkly) {
        for pair in times.windows(2) {
            resent += 1;
            let released = kills
                .iter()
                .any(|kill| *kill + Duration::from_millis(50) > pair[0] && *kill < pair[1]);
            assert!(
                released,
                "batch {payload_id} was sent twice with no kill between: two nodes held it"
            );
        }
    }
    let expired = logs
        .matches("Claims expired with no outcome recorded")
        .count();
    eprintln!(
        "two nodes: {} SIGKILLs of node A, {refused} requests refused or cut off (retried), \
         {resent} batches sent again after a kill, {expired} expired claims taken over\n\
         segment-to-launchdarkly: acknowledged {}, delivered {to_ld}, duplicates {dup_ld}\n\
         launchdarkly-relay:      acknowledged {}, delivered {relayed}, duplicates {dup_relay}\n\
         launchdarkly-to-segment: acknowledged {}, delivered {to_segment}, duplicates {dup_segment}",
        kills.len(),
        acked.segment.len(),
        ld_keys.len(),
        ld_ids.len(),
    );
    assert!(
        !acked.segment.is_empty() && !ld_keys.is_empty(),
        "nothing was acknowledged"
    );
    assert!(
        expired > 0,
        "node B took over no expired claim; the test did not exercise what it claims"
    );
    // The kept counts are exact after all of it.
    let store = crate::helpers::open_store(dir_a.path()).await;
    let (kept, scanned) = ldbridge::store::delivery_log::delivery_counts_checked(&store)
        .await
        .unwrap();
    assert_eq!(kept, scanned);
    store.close().await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_on_one_node_at_a_time() {
    if skip_without_postgres("retention_runs_on_one_node_at_a_time") {
        return;
    }
    use sqlx::Connection;
    let app = crate::helpers::spawn_app().await;
    app.post_tracks(&["old-1", "old-2"]).await;
    app.dispatch_until(|counts| counts.settled()).await;
    let ten_days = 10 * 86_400_000_i64;
    app.execute(&format!(
        "UPDATE events SET received_at = received_at - {ten_days}; \
         UPDATE batches SET created_at = created_at - {ten_days}, updated_at = updated_at - {ten_days}"
    ))
    .await;
    // Another node is purging: it holds the retention lock.
    let url = postgres::database_for(app.dir()).unwrap();
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    let lock = ldbridge::store::postgres::maintenance::RETENTION_LOCK;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock)
        .execute(&mut other)
        .await
        .unwrap();
    let held = app.cli(&["purge", "--older-than", "7d", "--json"]);
    assert_eq!(held.code, 0, "{}", held.stderr);
    assert_eq!(held.json()["purging_elsewhere"], true);
    assert_eq!(held.json()["events"], 0);
    assert_eq!(app.events_stored().await, 2);
    let text = app.cli(&["purge", "--older-than", "7d"]).stdout;
    assert!(text.contains("Another node is purging"), "{text}");
    // Its purge is over: this node's goes ahead.
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock)
        .execute(&mut other)
        .await
        .unwrap();
    let purged = app.cli(&["purge", "--older-than", "7d", "--json"]).json();
    assert_eq!(
        (
            purged["events"].as_u64(),
            purged["purging_elsewhere"].as_bool()
        ),
        (Some(2), Some(false))
    );
    assert_eq!(app.events_stored().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_forming_batches_from_events_another_node_took_writes_nothing() {
    if skip_without_postgres("a_node_forming_batches_from_events_another_node_took") {
        return;
    }
    use ldbridge::domain::Route;
    use ldbridge::store::{batches, StoreError};
    let app = crate::helpers::spawn_app().await;
    app.post_tracks(&["r-1", "r-2"]).await;
    // Node B reads the pending events…
    let url = postgres::database_for(app.dir()).unwrap();
    let options = ldbridge::store::StoreOptions {
        node: "node-b".to_owned(),
        ..Default::default()
    };
    let b = ldbridge::store::Store::open_at(&ldbridge::store::Location::Postgres(url), &options)
        .await
        .unwrap();
    let route = Route::SegmentToLaunchDarkly;
    let taken = batches::pending_events(&b, route, 100).await.unwrap();
    assert_eq!(taken.len(), 2);
    // …node A forms and sends their batch first…
    app.dispatch_until(|counts| counts.settled()).await;
    let batches_before = app.cli(&["log", "--json"]).json();
    // …and node B's batch from the same events is refused, writing nothing.
    let now = ldbridge::clock::now_ms();
    let plan = batches::BatchPlan {
        source: taken[0].source.clone(),
        lane: String::new(),
        event_ids: taken.iter().map(|event| event.event_id).collect(),
        profile: None,
    };
    let change = batches::NewBatches {
        route,
        taken: &taken,
        plans: std::slice::from_ref(&plan),
        settled: &batches::Settled::default(),
        now,
        claimed_until: now + 60_000,
    };
    let formed = batches::create_batches(&b, &change, &[]).await;
    assert!(matches!(formed, Err(StoreError::Raced)), "{formed:?}");
    assert_eq!(app.cli(&["log", "--json"]).json(), batches_before);
    assert_eq!(app.launchdarkly.requests().len(), 1);
    b.close().await;
}
