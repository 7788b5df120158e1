//! `ldbridge store copy`: a SQLite database with delivered, failed and
//! skipped events, LaunchDarkly payloads and refusals is copied to
//! PostgreSQL and back. The CLI reads the same delivery log from each copy,
//! a second copy changes nothing, and dedupe keeps working on the copy: a
//! retried message is not stored again.
//!
//! Needs a PostgreSQL (`LDBRIDGE_TEST_POSTGRES`); skips visibly without one
//! unless `LDBRIDGE_REQUIRE_POSTGRES=1`.

use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};
use ldbridge::{demo::SDK_KEY, domain::DeliveryStatus, receiver::Reply};
use serde_json::Value;

use crate::{
    fixture::postgres,
    helpers::{cli_in, spawn_app_with, Dress},
    nodes::skip_without_postgres,
};

/// What the CLI says about a database: every batch (with its events and
/// attempts), how a payload's and a message's events went, the refusals,
/// and the counts.
fn delivery_log(dir: &std::path::Path, store: &str) -> Value {
    let run = |args: &[&str]| {
        let run = cli_in(dir, store, args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        run.json()
    };
    let batches = run(&["log", "--json", "--limit", "1000"]);
    let shown: Vec<Value> = batches
        .as_array()
        .unwrap()
        .iter()
        .map(|batch| run(&["show", &batch["id"].to_string(), "--json"]))
        .collect();
    serde_json::json!({
        "batches": batches,
        "shown": shown,
        "payload": run(&["explain", "copy-payload-1", "--json"]),
        "message": run(&["explain", "msg-kept", "--json"]),
        "refusals": run(&["refusals", "--json"]),
        "counts": run(&["stats", "--json"])["deliveries"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_copied_to_postgresql_and_back_reads_the_same_and_keeps_dedupe() {
    if skip_without_postgres("store copy") {
        return;
    }
    let source_dir = tempfile::tempdir().unwrap();
    let source_db = source_dir.path().join("source.db");
    let app = spawn_app_with(|config| {
        config.store.url = None;
        config.store.path = source_db.clone();
        config.dispatch.give_up_after = Duration::from_millis(100);
    })
    .await;
    // Delivered, then failed (LaunchDarkly answers 400 to a poison event).
    app.post_tracks(&["kept", "also-kept"]).await;
    app.dispatch_until(|counts| counts.settled()).await;
    crate::helpers::refuse_event(&app.launchdarkly, "poison", 400);
    app.post_tracks(&["poison"]).await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Failed) > 0)
        .await;
    app.launchdarkly.set_default(Reply::status(202));
    // A LaunchDarkly payload (its events' keys derive from the payload id),
    // a page call (skipped on the way to LaunchDarkly), and a refusal.
    let headers = vec![
        (AUTHORIZATION, HeaderValue::from_static(SDK_KEY)),
        (
            HeaderName::from_static("x-launchdarkly-payload-id"),
            HeaderValue::from_static("copy-payload-1"),
        ),
    ];
    let events = r#"[{"kind":"custom","key":"k1","creationDate":1700000000000,"context":{"kind":"user","key":"u1"}},
                     {"kind":"custom","key":"k2","creationDate":1700000000001,"context":{"kind":"user","key":"u2"}}]"#;
    assert_eq!(
        app.post_raw("/bulk", events, headers).await.http_status(),
        Some(202)
    );
    let page = format!(
        r#"{{"batch":[{{"type":"page","userId":"u1","messageId":"msg-page"}}],"writeKey":"{}"}}"#,
        crate::helpers::WRITE_KEY
    );
    assert_eq!(
        app.post("/v1/batch", page.as_bytes(), Dress::BodyKey)
            .await
            .http_status(),
        Some(200)
    );
    assert_eq!(
        app.post("/v1/batch", b"{not json", Dress::BodyKey)
            .await
            .http_status(),
        Some(400)
    );
    app.dispatch_until(|counts| counts.settled()).await;
    let stored = app.events_stored().await;

    let sqlite = format!("[store]\npath = \"{}\"\n", source_db.display());
    let before = delivery_log(source_dir.path(), &sqlite);

    // To PostgreSQL, twice: the second run changes nothing.
    let target_dir = tempfile::tempdir().unwrap();
    let url = postgres::database_for(target_dir.path()).unwrap();
    let postgresql = format!("[store]\nurl = {url:?}\n");
    let first = cli_in(
        source_dir.path(),
        &sqlite,
        &["store", "copy", "--to", &url, "--json"],
    );
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.json()["rows"]["events"], stored);
    assert_eq!(delivery_log(target_dir.path(), &postgresql), before);
    let again = cli_in(
        source_dir.path(),
        &sqlite,
        &["store", "copy", "--to", &url, "--json"],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.json()["rows"], first.json()["rows"]);
    assert_eq!(delivery_log(target_dir.path(), &postgresql), before);

    // And back, into a new SQLite file.
    let back_dir = tempfile::tempdir().unwrap();
    let back = back_dir.path().join("back.db");
    let to_back = back.display().to_string();
    let returned = cli_in(
        target_dir.path(),
        &postgresql,
        &["store", "copy", "--to", &to_back],
    );
    assert_eq!(returned.code, 0, "{}", returned.stderr);
    let back_store = format!("[store]\npath = \"{}\"\n", back.display());
    assert_eq!(delivery_log(back_dir.path(), &back_store), before);

    // A daemon on the PostgreSQL copy: a retried message and a retried
    // payload are duplicates, a new message is stored.
    drop(app);
    let copy = spawn_app_with(|config| {
        config.store.url = Some(ldbridge::config::Secret::new(url.clone()));
    })
    .await;
    copy.post_tracks(&["kept", "new-one"]).await;
    let headers = vec![
        (AUTHORIZATION, HeaderValue::from_static(SDK_KEY)),
        (
            HeaderName::from_static("x-launchdarkly-payload-id"),
            HeaderValue::from_static("copy-payload-1"),
        ),
    ];
    assert_eq!(
        copy.post_raw("/bulk", events, headers).await.http_status(),
        Some(202)
    );
    assert_eq!(copy.events_stored().await, stored + 1);
    // New rows take ids after the copied ones.
    copy.dispatch_until(|counts| counts.settled()).await;
    let explained = copy.cli(&["explain", "msg-new-one", "--json"]).json();
    assert!(
        explained[0]["event"]["id"].as_i64().unwrap() > stored,
        "{explained}"
    );
}
