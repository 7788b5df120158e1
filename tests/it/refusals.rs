//! Per-message acceptance and the refusal log: a batch with bad messages
//! keeps its good ones; every refusal is on record (CLI, explain, admin
//! API, stats, metrics), bounded, and never holds a key.

use std::time::Duration;

use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use ldbridge::domain::DeliveryStatus;
use ldbridge::domain::Route;
use serde_json::{json, Value};

use crate::helpers::{basic, spawn_app, spawn_app_with, Dress, TestApp, WAIT, WRITE_KEY};

/// A good track call with messageId `m-<n>`.
fn track(n: usize) -> Value {
    json!({"type": "track", "userId": format!("u{n}"), "event": "Viewed", "messageId": format!("m-{n}")})
}

/// The refusal log as `ldbridge refusals --json` prints it, polled until
/// `done` holds (whole-request refusals are written with the next commit).
async fn refusals_until(
    app: &TestApp,
    args: &[&str],
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut all = vec!["refusals", "--json", "--limit", "1000"];
        all.extend_from_slice(args);
        let run = app.cli(&all);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let rows = run.json().as_array().cloned().unwrap_or_default();
        if done(&rows) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusal log never got there: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Multi-threaded: `app.cli` blocks its thread while the in-process daemon
// may still be committing a refusal recorded after its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_with_broken_messages_keeps_every_good_one_and_records_each_bad_one() {
    let app = spawn_app().await;
    let mut batch: Vec<Value> = (0..100).map(track).collect();
    // Six messages, each broken a different way.
    let broken: [(usize, Value, &str); 6] = [
        (
            3,
            json!({"type": "track", "userId": "u", "messageId": "m-3"}),
            "missing_event",
        ),
        (
            17,
            json!({"type": "shout", "userId": "u", "messageId": "m-17"}),
            "invalid_type",
        ),
        (
            29,
            json!({"type": "track", "event": "E", "messageId": "m-29"}),
            "missing_user_id",
        ),
        (
            41,
            json!({"type": "track", "userId": "u", "event": "E", "messageId": "m-41", "timestamp": "last tuesday"}),
            "invalid_timestamp",
        ),
        (
            58,
            json!({"type": "track", "userId": "u", "event": "E", "messageId": "m-58",
                   "properties": {"pad": "x".repeat(33_000)}}),
            "message_too_large",
        ),
        (77, json!(["not", "an", "object"]), "not_an_object"),
    ];
    for (index, message, _) in &broken {
        batch[*index] = message.clone();
    }
    let body = json!({"batch": batch, "writeKey": WRITE_KEY}).to_string();
    let reply = app.post("/v1/batch", body.as_bytes(), Dress::BodyKey).await;
    assert_eq!(reply.http_status(), Some(200), "{:?}", reply.excerpt);
    assert_eq!(app.events_stored().await, 94);

    // Every valid one is delivered to LaunchDarkly.
    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == 94
    })
    .await;
    let sent: Vec<String> = app
        .received_events()
        .iter()
        .map(|event| event["contextKeys"]["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 94);
    for (index, _, _) in &broken {
        assert!(
            !sent.contains(&format!("u{index}")),
            "broken message {index} was sent"
        );
    }

    // Each broken one is on record with its index and reason, at once
    // (recorded in the commit that acknowledged the rest).
    let rows = refusals_until(&app, &[], |rows| rows.len() == broken.len()).await;
    for (index, _, code) in &broken {
        let row = rows
            .iter()
            .find(|row| row["index"] == json!(index))
            .unwrap_or_else(|| panic!("no refusal for index {index}: {rows:?}"));
        assert_eq!(row["reason"], *code, "{row}");
        assert_eq!(row["source"], "web");
        assert_eq!(row["path"], "/v1/batch");
        assert_eq!(row["status"], 200);
        assert!(
            row["message"]
                .as_str()
                .unwrap()
                .contains(&format!("batch[{index}]")),
            "{row}"
        );
        assert!(row["excerpt"].as_str().unwrap().len() <= 1024);
    }
    assert_eq!(
        rows.iter().find(|row| row["index"] == 3).unwrap()["message_id"],
        "m-3"
    );
    let only = refusals_until(&app, &["--reason", "missing_event"], |rows| rows.len() == 1).await;
    assert_eq!(only[0]["index"], 3);

    // explain by messageId says refused, when and why.
    let run = app.cli(&["explain", "m-3"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("refused at ingest at "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("track calls need a non-empty event name"),
        "{}",
        run.stdout
    );
    let run = app.cli(&["explain", "m-41", "--json"]);
    assert_eq!(run.json()[0]["refusal"]["reason"], "invalid_timestamp");
    // A good message of the same batch explains as delivered.
    let run = app.cli(&["explain", "m-4"]);
    assert!(run.stdout.contains("delivered in batch"), "{}", run.stdout);

    // The admin API, stats and metrics say the same.
    let (status, api) = app
        .admin_json("GET", "/api/refusals?reason=invalid_type")
        .await;
    assert_eq!(status, 200);
    assert_eq!(api[0]["index"], 17);
    let stats = app.cli(&["stats", "--json"]).json();
    assert_eq!(stats["refusals_last_hour"]["web"]["message_too_large"], 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ldbridge_ingest_refused_total{source="web",reason="missing_event"} 1"#),
        "{metrics}"
    );
}

// Multi-threaded: `app.cli` blocks its thread while the in-process daemon
// may still be committing a refusal recorded after its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_requests_refused_are_recorded_without_the_key_and_with_unknown_source() {
    let app = spawn_app().await;
    // An unknown key: 401, recorded under no source, the key nowhere.
    let secret = "sk-this-key-is-not-configured-0000";
    let body = json!({"batch": [track(1)], "writeKey": secret}).to_string();
    let reply = app.post("/v1/batch", body.as_bytes(), Dress::BodyKey).await;
    assert_eq!(reply.http_status(), Some(401));
    // A single message refused: 400, recorded with its messageId.
    let bad = json!({"userId": "u", "messageId": "single-1", "writeKey": WRITE_KEY}).to_string();
    let reply = app.post("/v1/track", bad.as_bytes(), Dress::BodyKey).await;
    assert_eq!(reply.http_status(), Some(400));
    // Malformed JSON with a Basic key.
    let headers = vec![
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (
            AUTHORIZATION,
            HeaderValue::from_str(&basic(WRITE_KEY)).unwrap(),
        ),
    ];
    let reply = app.post_raw("/v1/batch", r#"{"batch": [ {"#, headers).await;
    assert_eq!(reply.http_status(), Some(400));

    let rows = refusals_until(&app, &[], |rows| rows.len() == 3).await;
    let unknown = refusals_until(&app, &["--source", "unknown"], |rows| rows.len() == 1).await;
    assert_eq!(unknown[0]["reason"], "invalid_write_key");
    assert_eq!(unknown[0]["status"], 401);
    assert!(unknown[0]["source"].is_null());
    let single = rows
        .iter()
        .find(|row| row["message_id"] == "single-1")
        .unwrap();
    assert_eq!(single["reason"], "missing_event");
    assert_eq!(single["source"], "web");
    assert!(single["index"].is_null());
    let malformed = rows
        .iter()
        .find(|row| row["reason"] == "invalid_json")
        .unwrap();
    assert_eq!(malformed["excerpt"], r#"{"batch": [ {"#);
    let table = app.cli(&["refusals"]).stdout;
    assert!(table.contains("unknown key"), "{table}");

    // No key, configured or not, is in the database.
    let bytes = app.database_bytes().await;
    for file in [&bytes] {
        for key in [secret, WRITE_KEY] {
            assert!(
                !file
                    .windows(key.len())
                    .any(|window| window == key.as_bytes()),
                "a write key reached the database"
            );
        }
    }
    let all = serde_json::to_string(&rows).unwrap();
    assert!(all.contains("[redacted]"), "{all}");
}

// Multi-threaded: `app.cli` blocks its thread while the in-process daemon
// may still be committing a refusal recorded after its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_stays_within_the_caps_and_good_ingest_goes_on() {
    let app = spawn_app_with(|config| {
        config.store.refusal_log_per_second = 20;
        config.store.refusal_log_max_rows = 50;
    })
    .await;
    let garbage: Vec<Value> = (0..100)
        .map(|n| json!({"type": "track", "userId": format!("g{n}")}))
        .collect();
    let body = json!({"batch": garbage, "writeKey": WRITE_KEY}).to_string();
    for round in 0..10 {
        let sent = std::time::Instant::now();
        let reply = app.post("/v1/batch", body.as_bytes(), Dress::BodyKey).await;
        assert_eq!(reply.http_status(), Some(200));
        // Nothing but refusals, over the log's rate: answered no sooner
        // than 100 ms, which slows a flooding client's loop.
        assert!(sent.elapsed() >= Duration::from_millis(100));
        app.post_tracks(&[&format!("good-{round}")]).await;
    }
    assert_eq!(app.events_stored().await, 10);
    let rows = app.cli(&["refusals", "--json", "--limit", "100000"]).json();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 50, "{} rows", rows.len());
    let metrics = app.metrics().await;
    // 1,000 refused, all counted; most left out of the log by its rate.
    assert!(
        metrics
            .contains(r#"ldbridge_ingest_refused_total{source="web",reason="missing_event"} 1000"#),
        "{metrics}"
    );
    let unrecorded: f64 = metrics
        .lines()
        .find(|line| line.starts_with(r#"ldbridge_refusal_log_unrecorded_total{cause="rate"}"#))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap();
    assert!(unrecorded >= 900.0, "{metrics}");
}

// Multi-threaded: `app.cli` blocks its thread while the in-process daemon
// may still be committing a refusal recorded after its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_refusals() {
    let app = spawn_app().await;
    let bad = json!({"userId": "u", "writeKey": WRITE_KEY}).to_string();
    app.post("/v1/track", bad.as_bytes(), Dress::BodyKey).await;
    refusals_until(&app, &[], |rows| rows.len() == 1).await;
    // Nothing is older than a day yet.
    let run = app.cli(&["purge", "--older-than", "1d", "--json"]);
    assert_eq!(run.json()["refusals"], 0);
    let run = app.cli(&["purge", "--older-than", "0s", "--json"]);
    assert_eq!(run.json()["refusals"], 1);
    assert!(app
        .cli(&["refusals", "--json"])
        .json()
        .as_array()
        .unwrap()
        .is_empty());
}
