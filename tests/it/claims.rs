//! No batch is orphaned in a running process: a batch in `sending` is
//! claimed until `dispatch.claim_timeout`, and a claim whose outcome was
//! never recorded (the commit failed, the database was locked, the run
//! died) is taken again by a later run, with the same payload id, without
//! a restart.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use ldbridge::domain::DeliveryStatus;
use ldbridge::{domain::Route, receiver::Reply};
use serde_json::{json, Value};

use crate::{
    disk::{beside, immutable, ReadOnly},
    helpers::{spawn_app_with, Dress, TestApp, WAIT, WRITE_KEY},
};

/// Claims that expire in a second (requests time out in half that).
async fn spawn_app_with_short_claims(
    adjust: impl FnOnce(&mut ldbridge::config::Config),
) -> TestApp {
    spawn_app_with(|config| {
        config.dispatch.request_timeout = Duration::from_millis(500);
        config.dispatch.claim_timeout = Some(Duration::from_secs(1));
        adjust(config);
    })
    .await
}

/// The payload ids of the requests `app`'s LaunchDarkly stand-in got.
fn payload_ids(app: &TestApp) -> Vec<String> {
    app.launchdarkly
        .requests()
        .iter()
        .map(|request| {
            request
                .header("x-launchdarkly-payload-id")
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_outcome_could_not_be_committed_is_sent_again_once_its_claim_expires() {
    // On PostgreSQL, tests/it/nodes.rs kills the node between the attempt
    // and its record instead.
    if crate::helpers::on_postgres(
        "a_batch_whose_outcome_could_not_be_committed_is_sent_again_once_its_claim_expires",
    ) {
        return;
    }
    let app = spawn_app_with_short_claims(|_| {}).await;
    app.post_tracks(&["first", "second"]).await;
    let files = vec![app.database.clone(), beside(&app.database, "-wal")];
    if !files
        .iter()
        .all(|file| immutable(file, true) && immutable(file, false))
    {
        crate::helpers::skip("chattr +i is not supported here (needs root and ext4/xfs)");
        return;
    }
    // The receiver makes the database read-only as the batch arrives, then
    // accepts it: the attempt is made and answered, its outcome cannot be
    // committed.
    let read_only = Arc::new(Mutex::new(ReadOnly(Vec::new())));
    let armed = Arc::new(AtomicBool::new(true));
    {
        let (read_only, armed, files) = (read_only.clone(), armed.clone(), files.clone());
        app.launchdarkly.respond_with(move |_| {
            if armed.swap(false, Ordering::SeqCst) {
                for file in &files {
                    assert!(immutable(file, true));
                }
                read_only.lock().unwrap().0 = files.clone();
            }
            Some(Reply::status(202))
        });
    }
    let failed = app.app.dispatcher.drain(Route::SegmentToLaunchDarkly).await;
    read_only.lock().unwrap().release();
    assert!(
        failed.is_err(),
        "recording on a read-only database succeeded?"
    );
    assert_eq!(app.launchdarkly.requests().len(), 1);

    // The same process sends it again once the claim expires.
    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == 2
    })
    .await;
    let ids = payload_ids(&app);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], ids[1], "the batch kept its payload id");
    let requests = app.launchdarkly.requests();
    assert_eq!(requests[0].body, requests[1].body, "the same events again");
    assert!(app
        .metrics()
        .await
        .contains(r#"ldbridge_claims_expired_total{route="segment-to-launchdarkly"} 1"#));
    assert_eq!(crate::helpers::integrity_check(&app.database).await, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_outcome_met_a_locked_database_is_sent_again_once_its_claim_expires() {
    if crate::helpers::on_postgres(
        "a_batch_whose_outcome_met_a_locked_database_is_sent_again_once_its_claim_expires",
    ) {
        return;
    }
    use sqlx::Connection;
    let app = spawn_app_with_short_claims(|config| {
        config.store.busy_timeout = Duration::from_millis(300);
    })
    .await;
    app.post_tracks(&["locked-out"]).await;
    // The receiver holds its answer until the test has locked the database.
    let (arrived, arrival) = std::sync::mpsc::channel::<()>();
    let (locked, lock_taken) = std::sync::mpsc::channel::<()>();
    let lock_taken = Mutex::new(lock_taken);
    let first = AtomicBool::new(true);
    app.launchdarkly.respond_with(move |_| {
        if first.swap(false, Ordering::SeqCst) {
            arrived.send(()).unwrap();
            lock_taken.lock().unwrap().recv_timeout(WAIT).unwrap();
        }
        Some(Reply::status(202))
    });
    let dispatcher = app.app.dispatcher.clone();
    let run = tokio::spawn(async move { dispatcher.drain(Route::SegmentToLaunchDarkly).await });
    tokio::task::spawn_blocking(move || arrival.recv_timeout(WAIT).unwrap())
        .await
        .unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&app.database);
    let mut holder = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    locked.send(()).unwrap();
    let failed = tokio::time::timeout(WAIT, run).await.unwrap().unwrap();
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    assert!(failed.is_err(), "recording past a held lock succeeded?");

    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == 1
    })
    .await;
    let ids = payload_ids(&app);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], ids[1], "the batch kept its payload id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saturating_ingest_during_an_outage_is_all_delivered_when_the_destination_is_back() {
    let app = Arc::new(
        spawn_app_with_short_claims(|config| {
            // Dispatcher writes give up quickly against the busy writer, as
            // they did in the field ("database is locked").
            config.store.busy_timeout = Duration::from_millis(50);
            config.dispatch.max_batch_events = 100;
        })
        .await,
    );
    app.launchdarkly.set_default(Reply::status(503));
    let done = Arc::new(AtomicBool::new(false));
    // The scheduler's part: every route, over and over, errors and all.
    let dispatching = {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move {
            let mut failed_runs = 0;
            while !done.load(Ordering::SeqCst) {
                for route in Route::ALL {
                    if app.app.dispatcher.drain(route).await.is_err() {
                        failed_runs += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed_runs
        })
    };
    // Eight connections of 100-event batches, as fast as they are answered.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|connection| {
            let (app, acknowledged) = (app.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut names = Vec::new();
                for round in 0..25 {
                    let batch: Vec<Value> = (0..100)
                        .map(|n| {
                            let name = format!("c{connection}-r{round}-{n}");
                            json!({"type": "track", "userId": "u", "event": name, "messageId": name})
                        })
                        .collect();
                    let body = json!({"batch": batch, "writeKey": WRITE_KEY}).to_string();
                    let reply = app.post("/v1/batch", body.as_bytes(), Dress::BodyKey).await;
                    if reply.http_status() == Some(200) {
                        acknowledged.fetch_add(100, Ordering::SeqCst);
                        names.extend((0..100).map(|n| format!("c{connection}-r{round}-{n}")));
                    }
                }
                names
            })
        })
        .collect();
    let mut sent = Vec::new();
    for sender in senders {
        sent.extend(sender.await.unwrap());
    }
    // The destination is back.
    app.launchdarkly.set_default(Reply::status(202));
    let acknowledged = acknowledged.load(Ordering::SeqCst) as i64;
    assert!(acknowledged > 0);
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let counts = app.counts().await;
        if counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == acknowledged {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all delivered: {counts:?} of {acknowledged}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::SeqCst);
    let failed_runs = dispatching.await.unwrap();
    eprintln!(
        "{acknowledged} events acknowledged; {failed_runs} dispatcher runs failed on the way"
    );
    let delivered: std::collections::HashSet<String> = app
        .received_events()
        .iter()
        .map(|event| event["key"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<&String> = sent
        .iter()
        .filter(|name| !delivered.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged, never delivered: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}
