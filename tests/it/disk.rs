//! Database trouble: the database at its size cap (`store.max_database_bytes`,
//! SQLite's `max_page_count`) and the database files made read-only
//! (`chattr +i`, which holds even for root and for open descriptors). Ingest
//! answers 503 with Retry-After and acknowledges nothing, `/readyz` turns
//! not-ready, and ingest resumes without a restart once room returns; nothing
//! acknowledged is lost or corrupted.

use std::{path::Path, process::Command};

use ldbridge::domain::DeliveryStatus;
use ldbridge::domain::Route;
use serde_json::{json, Value};

use crate::helpers::{integrity_check, spawn_app_with, TestApp, WRITE_KEY};

/// Posts a batch of `count` ~600-byte tracks named `<prefix>-<n>`; returns
/// the HTTP status and the Retry-After header.
async fn post_batch(app: &TestApp, prefix: &str, count: usize) -> (u16, Option<String>) {
    use http_body_util::BodyExt;
    let batch: Vec<Value> = (0..count)
        .map(|n| {
            json!({"type": "track", "userId": "u1", "event": format!("{prefix}-{n}"),
                   "messageId": format!("{prefix}-{n}"), "properties": {"pad": "p".repeat(500)}})
        })
        .collect();
    let body = json!({"batch": batch, "writeKey": WRITE_KEY}).to_string();
    let request = hyper::Request::post(format!("{}/v1/batch", app.base))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let _ = response.into_body().collect().await;
    (status, retry_after)
}

async fn readyz(app: &TestApp) -> (u16, String) {
    app.admin("GET", "/readyz", None, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_database_refuses_ingest_keeps_delivering_and_resumes_once_purged() {
    if crate::helpers::on_postgres(
        "a_full_database_refuses_ingest_keeps_delivering_and_resumes_once_purged",
    ) {
        return;
    }
    let app = spawn_app_with(|config| {
        config.store.max_database_bytes = Some(1_500_000);
        config.server.max_request_bytes = 64_000;
    })
    .await;
    // Fill it: 40-event batches until one is refused.
    let mut acknowledged = 0;
    let mut round = 0;
    loop {
        match post_batch(&app, &format!("fill{round}"), 40).await {
            (200, _) => acknowledged += 40,
            (503, retry_after) => {
                assert_eq!(retry_after.as_deref(), Some("5"));
                break;
            }
            (other, _) => panic!("answered {other} while filling"),
        }
        round += 1;
        assert!(round < 1000, "the cap never bit");
    }
    assert!(acknowledged > 0);
    let stored = app.events_stored().await;
    assert_eq!(stored, acknowledged, "a refused batch stored nothing");
    let (status, text) = readyz(&app).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("full") || text.contains("commits are failing"),
        "{text}"
    );

    // Delivery of what is stored carries on while ingest is refused.
    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == stored
    })
    .await;
    assert_eq!(app.received_events().len() as i64, stored);

    // Room returns (retention purges what was delivered): ingest resumes
    // in the same process.
    let purged = app.cli(&["purge", "--older-than", "1ms"]);
    assert_eq!(purged.code, 0, "{}", purged.stderr);
    assert_eq!(post_batch(&app, "after", 40).await.0, 200);
    let (status, text) = readyz(&app).await;
    assert_eq!(status, 200, "{text}");
    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == 40
    })
    .await;
    assert_eq!(app.received_events().len() as i64, stored + 40);
    assert_eq!(integrity_check(&app.database).await, "ok");
}

/// `path` with `suffix` appended to its file name (SQLite's `-wal`).
pub fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Sets or clears the immutable attribute; false if the filesystem has none.
pub fn immutable(path: &Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .status()
        .is_ok_and(|status| status.success())
}

/// Files made immutable, made writable again when dropped (even when the
/// test fails: an immutable file would outlive its temporary directory).
pub struct ReadOnly(pub Vec<std::path::PathBuf>);

impl ReadOnly {
    pub fn release(&mut self) {
        for file in self.0.drain(..) {
            immutable(&file, false);
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        self.release();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_commit_failing_in_io_left_the_writer_stuck_until_restart() {
    if crate::helpers::on_postgres(
        "regression_a_commit_failing_in_io_left_the_writer_stuck_until_restart",
    ) {
        return;
    }
    // Found by this test: with the files read-only, the commit itself failed
    // and left the writer's connection inside its transaction, so every
    // later commit failed too ("begin_with at non-zero transaction depth")
    // until the daemon restarted. The writer now replaces its connection
    // after a failed commit.
    read_only_database_refuses_ingest_and_recovers_without_a_restart().await;
}

async fn read_only_database_refuses_ingest_and_recovers_without_a_restart() {
    let app = spawn_app_with(|_| {}).await;
    assert_eq!(post_batch(&app, "before", 10).await.0, 200);
    let files = vec![app.database.clone(), beside(&app.database, "-wal")];
    let mut read_only = ReadOnly(files.clone());
    if !files.iter().all(|file| immutable(file, true)) {
        crate::helpers::skip("chattr +i is not supported here (needs root and ext4/xfs)");
        return;
    }
    let (status, retry_after) = post_batch(&app, "during", 10).await;
    let (ready, text) = readyz(&app).await;
    // Dispatch cannot record anything now; it must not lose anything either.
    let _ = app.app.dispatcher.drain(Route::SegmentToLaunchDarkly).await;
    read_only.release();
    assert_eq!((status, retry_after.as_deref()), (503, Some("5")));
    assert_eq!(ready, 503, "{text}");

    // Writable again: ingest and readiness come back by themselves.
    let (status, _) = post_batch(&app, "after", 10).await;
    let (ready, text) = readyz(&app).await;
    assert_eq!((status, ready), (200, 200), "{text}");
    assert_eq!(app.events_stored().await, 20);
    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == 20
    })
    .await;
    let keys: std::collections::BTreeSet<_> = app
        .received_events()
        .iter()
        .map(|event| event["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 20);
    assert!(keys
        .iter()
        .all(|key| key.starts_with("before-") || key.starts_with("after-")));
    assert_eq!(integrity_check(&app.database).await, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wal_grown_by_a_burst_is_truncated_once_ingest_is_idle() {
    if crate::helpers::on_postgres("a_wal_grown_by_a_burst_is_truncated_once_ingest_is_idle") {
        return;
    }
    use sqlx::Connection;
    let app = spawn_app_with(|_| {}).await;
    let wal = beside(&app.database, "-wal");
    let wal_bytes = || std::fs::metadata(&wal).map_or(0, |meta| meta.len());
    // A reader holding an old snapshot keeps checkpoints from catching up,
    // as a long burst does: the WAL grows past 64 MB.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&app.database);
    let mut reader = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    let pad = "w".repeat(8_000);
    let mut round = 0;
    while wal_bytes() < 70 * 1024 * 1024 {
        let batch: Vec<Value> = (0..50)
            .map(|n| {
                json!({"type": "track", "userId": "u1", "event": format!("wal-{round}-{n}"),
                            "messageId": format!("wal-{round}-{n}"), "properties": {"pad": pad}})
            })
            .collect();
        let body = json!({"batch": batch, "writeKey": WRITE_KEY}).to_string();
        let reply = app
            .post("/v1/batch", body.as_bytes(), crate::helpers::Dress::Basic)
            .await;
        assert_eq!(reply.http_status(), Some(200));
        round += 1;
        assert!(round < 1000, "the WAL never grew");
    }
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    drop(reader);
    // Quiet now: within a few seconds the daemon gives the space back.
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    while wal_bytes() > 64 * 1024 * 1024 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the WAL stayed at {} bytes",
            wal_bytes()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.events_stored().await, round * 50);
    assert_eq!(integrity_check(&app.database).await, "ok");
}
