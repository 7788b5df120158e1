//! Segment traffic in: every way a library posts, and every refusal.

use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use ldbridge::clock;
use ldbridge::domain::DeliveryStatus;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::helpers::{basic, fixture, fixture_json, gzip, spawn_app, Dress, TestApp};

async fn assert_accepted(app: &TestApp, path: &str, body: &str, dress: Dress) {
    let reply = app.post(path, body.as_bytes(), dress).await;
    assert_eq!(
        reply.http_status(),
        Some(200),
        "{path} {dress:?}: {:?}",
        reply.excerpt
    );
    assert_eq!(reply.excerpt.as_deref(), Some(r#"{"success":true}"#));
}

#[tokio::test]
async fn each_fixture_posted_as_its_library_does_arrives_mapped_as_the_fixture_says() {
    let cases = [
        ("/v1/track", "segment-track", Dress::Basic),
        ("/v1/identify", "segment-identify", Dress::Basic),
        ("/v1/alias", "segment-alias", Dress::Basic),
        ("/v1/p", "segment-page", Dress::TextPlain),
    ];
    for (path, name, dress) in cases {
        let app = spawn_app().await;
        assert_accepted(&app, path, &fixture(&format!("{name}.in.json")), dress).await;
        app.dispatch_until(|counts| counts.settled()).await;
        let expected = fixture_json(&format!("{name}.to-ld.json"));
        assert_eq!(Value::Array(app.received_events()), expected, "{name}");
        for request in app.launchdarkly.requests() {
            assert_eq!(
                request.path,
                format!("/events/bulk/{}", crate::helpers::CLIENT_SIDE_ID)
            );
            assert_eq!(request.header("x-launchdarkly-event-schema"), Some("4"));
            assert_eq!(request.header("content-type"), Some("application/json"));
            assert!(request
                .header("user-agent")
                .unwrap()
                .starts_with("ldbridge/"));
            assert!(request.header("x-launchdarkly-payload-id").is_some());
        }
    }
}

/// The batch fixture without its envelope `sentAt`, so no skew correction
/// applies and the fixture's creation dates hold exactly.
fn batch_without_sent_at() -> String {
    let mut batch = fixture_json("segment-batch.in.json");
    batch.as_object_mut().unwrap().remove("sentAt");
    batch.to_string()
}

#[tokio::test]
async fn a_batch_arrives_the_same_with_basic_auth_body_key_gzip_and_text_plain() {
    for dress in [Dress::Basic, Dress::BodyKey, Dress::Gzip, Dress::TextPlain] {
        for path in ["/v1/batch", "/v1/b", "/v1/import"] {
            let app = spawn_app().await;
            assert_accepted(&app, path, &batch_without_sent_at(), dress).await;
            let counts = app.dispatch_until(|counts| counts.settled()).await;
            assert_eq!(
                Value::Array(app.received_events()),
                fixture_json("segment-batch.to-ld.json"),
                "{path} {dress:?}"
            );
            // group and page have no LaunchDarkly equivalent.
            assert_eq!(
                (
                    counts.get(DeliveryStatus::Delivered),
                    counts.get(DeliveryStatus::Skipped)
                ),
                (4, 2)
            );
        }
    }
}

#[tokio::test]
async fn chunked_bodies_and_single_messages_without_type_are_accepted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let body = json!({"userId": "u1", "event": "Chunked", "messageId": "m-chunked"}).to_string();
    let mut request = format!(
        "POST /v1/track HTTP/1.1\r\nHost: ldbridge\r\nAuthorization: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        basic(crate::helpers::WRITE_KEY)
    );
    for chunk in body.as_bytes().chunks(7) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    request.push_str("0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(app.app.ingest_addr)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    app.dispatch_until(|counts| counts.settled()).await;
    let events = app.received_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["key"], "Chunked");
}

#[tokio::test]
async fn clock_skew_is_corrected_and_the_original_kept() {
    let app = spawn_app().await;
    let before = clock::now_ms();
    // sentAt is 2 s after the event's timestamp: timestamp = receivedAt − 2 s.
    assert_accepted(
        &app,
        "/v1/batch",
        &fixture("segment-batch-skew.in.json"),
        Dress::BodyKey,
    )
    .await;
    let after = clock::now_ms();
    app.dispatch_until(|counts| counts.settled()).await;
    let mut events = app.received_events();
    assert_eq!(events.len(), 1);
    let created = events[0]["creationDate"].as_i64().unwrap();
    assert!(
        (before - 2000..=after - 2000).contains(&created),
        "{created} not in [{before}, {after}] − 2 s"
    );
    // Apart from the corrected time, the output is the fixture's.
    let mut expected = fixture_json("segment-batch-skew.to-ld.json");
    expected[0]["creationDate"] = json!(created);
    events[0]["creationDate"] = json!(created);
    assert_eq!(Value::Array(events), expected);
}

#[tokio::test]
async fn a_repeated_message_id_is_acknowledged_stored_once_and_delivered_once() {
    let app = spawn_app().await;
    let body = fixture("segment-track.in.json");
    assert_accepted(&app, "/v1/track", &body, Dress::Basic).await;
    assert_accepted(&app, "/v1/track", &body, Dress::Basic).await;
    // The same message inside a batch, too.
    let batch = json!({"batch": [serde_json::from_str::<Value>(&body).unwrap()], "writeKey": crate::helpers::WRITE_KEY});
    assert_accepted(&app, "/v1/batch", &batch.to_string(), Dress::BodyKey).await;
    assert_eq!(app.events_stored().await, 1);
    app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(app.received_events().len(), 1);
}

/// Every refusal: the status code, a JSON error naming what is wrong, and
/// nothing stored.
#[tokio::test]
async fn bad_input_is_refused_with_its_status_and_nothing_is_stored() {
    let app = spawn_app_small_limit().await;
    let key = crate::helpers::WRITE_KEY;
    let track = |extra: Value| {
        let mut message = json!({"type": "track", "userId": "u1", "event": "E"});
        for (k, v) in extra.as_object().unwrap() {
            message[k] = v.clone();
        }
        message
    };
    let batch = |items: Vec<Value>| json!({"batch": items, "writeKey": key}).to_string();
    // A single-message endpoint's one message refused is the request refused
    // (in a batch, each is refused alone: tests/it/refusals.rs).
    let one = |mut message: Value| {
        message["writeKey"] = json!(key);
        message.to_string()
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/batch", "{not json".to_owned(), 400, "not valid JSON"),
        (
            "/v1/track",
            one(json!({"type": "track", "userId": "u"})),
            400,
            "event",
        ),
        (
            "/v1/track",
            one(json!({"type": "track", "event": "E"})),
            400,
            "userId",
        ),
        (
            "/v1/track",
            one(json!({"type": "shout", "userId": "u"})),
            400,
            "type",
        ),
        (
            "/v1/alias",
            one(json!({"type": "alias", "userId": "u"})),
            400,
            "previousId",
        ),
        (
            "/v1/group",
            one(json!({"type": "group", "userId": "u"})),
            400,
            "groupId",
        ),
        (
            "/v1/track",
            one(track(json!({"timestamp": "yesterday"}))),
            400,
            "timestamp",
        ),
        (
            "/v1/track",
            one(track(json!({"properties": [1, 2]}))),
            400,
            "properties",
        ),
        (
            "/v1/track",
            one(track(json!({"userId": {"id": 1}}))),
            400,
            "userId",
        ),
        (
            "/v1/track",
            one(track(json!({"messageId": "m".repeat(101)}))),
            400,
            "messageId",
        ),
        (
            "/v1/batch",
            json!({"batch": "nope", "writeKey": key}).to_string(),
            400,
            "batch",
        ),
        ("/v1/track", json!([1]).to_string(), 400, "JSON object"),
        (
            "/v1/track",
            json!({"type": "identify", "userId": "u", "writeKey": key}).to_string(),
            400,
            "type",
        ),
        (
            "/v1/batch",
            json!({"batch": [track(json!({}))], "writeKey": "wrong"}).to_string(),
            401,
            "unknown write key",
        ),
        (
            "/v1/batch",
            json!({"batch": [track(json!({}))]}).to_string(),
            401,
            "no write key",
        ),
        (
            "/v1/track",
            track(json!({"writeKey": key, "properties": {"pad": "x".repeat(33_000)}})).to_string(),
            413,
            "32768",
        ),
        (
            "/v1/batch",
            batch(vec![
                track(
                    json!({"properties": {"pad": "x".repeat(20_000)}})
                );
                4
            ]),
            413,
            "max_request_bytes",
        ),
    ];
    for (path, body, status, needle) in &cases {
        let reply = app.post(path, body.as_bytes(), Dress::BodyKey).await;
        let text = reply.excerpt.clone().unwrap_or_default();
        assert_eq!(
            reply.http_status(),
            Some(*status),
            "{path} {needle}: {text}"
        );
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["success"], false);
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{needle} not in {text}"
        );
        assert!(error["code"].is_string());
    }
    // A gzip bomb: 50 kB on the wire, 50 MB inflated.
    let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
    let headers = vec![
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (CONTENT_ENCODING, HeaderValue::from_static("gzip")),
        (AUTHORIZATION, HeaderValue::from_str(&basic(key)).unwrap()),
    ];
    assert_eq!(
        app.post_raw("/v1/batch", bomb, headers).await.http_status(),
        Some(413)
    );
    // An unknown Basic key is refused before the body is even read.
    let headers = vec![(
        AUTHORIZATION,
        HeaderValue::from_str(&basic("nope")).unwrap(),
    )];
    assert_eq!(
        app.post_raw("/v1/batch", batch(vec![track(json!({}))]), headers)
            .await
            .http_status(),
        Some(401)
    );
    // Unsupported encodings, methods and paths.
    let headers = vec![(CONTENT_ENCODING, HeaderValue::from_static("br"))];
    assert_eq!(
        app.post_raw("/v1/batch", "x", headers).await.http_status(),
        Some(415)
    );
    assert_eq!(
        app.post_raw("/v2/batch", "{}", vec![]).await.http_status(),
        Some(404)
    );
    assert_eq!(app.events_stored().await, 0);
    // ...while a good request on the same app is still accepted.
    assert_accepted(
        &app,
        "/v1/batch",
        &batch(vec![track(json!({}))]),
        Dress::BodyKey,
    )
    .await;
    assert_eq!(app.events_stored().await, 1);
}

async fn spawn_app_small_limit() -> TestApp {
    crate::helpers::spawn_app_with(|config| config.server.max_request_bytes = 64_000).await
}

#[tokio::test]
async fn cors_preflight_is_answered_for_browser_libraries() {
    let app = spawn_app().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let request = hyper::Request::options(format!("{}/v1/t", app.base))
        .header("origin", "https://www.example.com")
        .header(
            HeaderName::from_static("access-control-request-method"),
            "POST",
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 204);
    // The origin is echoed with credentials (sendBeacon, keepalive).
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://www.example.com"
    );
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
    assert!(response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Authorization"));
}

#[tokio::test]
async fn the_write_key_is_never_stored_in_the_database() {
    let app = spawn_app().await;
    assert_accepted(
        &app,
        "/v1/p",
        &fixture("segment-page.in.json"),
        Dress::TextPlain,
    )
    .await;
    assert_accepted(
        &app,
        "/v1/batch",
        &fixture("segment-batch.in.json"),
        Dress::BodyKey,
    )
    .await;
    app.dispatch_until(|counts| counts.settled()).await;
    let bytes = app.database_bytes().await;
    let key = crate::helpers::WRITE_KEY.as_bytes();
    assert!(app.events_stored().await > 0);
    assert!(
        !bytes.windows(key.len()).any(|window| window == key),
        "write key found in the database"
    );
}

/// A commit that fails (here: a trigger standing in for a full disk)
/// answers 503 with Retry-After, stores nothing, and the next request is
/// accepted again without a restart.
#[tokio::test]
async fn a_failed_commit_answers_503_with_retry_after_and_acknowledges_nothing() {
    if crate::helpers::on_postgres(
        "a_failed_commit_answers_503_with_retry_after_and_acknowledges_nothing",
    ) {
        return;
    }
    let app = spawn_app().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", app.database.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER fail_commit BEFORE INSERT ON events WHEN NEW.body LIKE '%Disk Full%' \
         BEGIN SELECT RAISE(ABORT, 'simulated I/O failure'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let message = json!({"type": "track", "userId": "u", "event": "Disk Full", "writeKey": crate::helpers::WRITE_KEY});
    let reply = app
        .post("/v1/track", message.to_string().as_bytes(), Dress::BodyKey)
        .await;
    assert_eq!(reply.http_status(), Some(503));
    assert_eq!(
        reply.answer,
        ldbridge::retry::Answer::Status {
            code: 503,
            retry_after: Some(std::time::Duration::from_secs(5))
        }
    );
    assert!(reply.excerpt.unwrap().contains("nothing was accepted"));
    assert_eq!(app.events_stored().await, 0);
    let fine = json!({"type": "track", "userId": "u", "event": "Fine", "writeKey": crate::helpers::WRITE_KEY});
    assert_accepted(&app, "/v1/track", &fine.to_string(), Dress::BodyKey).await;
    assert_eq!(app.events_stored().await, 1);
}

/// With the write lock held elsewhere, the writer waits; once its queue is
/// full, further requests are refused at once with 503 + Retry-After. When
/// the lock goes away, every request that was queued is committed and
/// acknowledged; none of the refused ones is stored.
#[tokio::test]
async fn a_full_writer_queue_answers_503_at_once_and_acknowledges_nothing() {
    if crate::helpers::on_postgres(
        "a_full_writer_queue_answers_503_at_once_and_acknowledges_nothing",
    ) {
        return;
    }
    let app = crate::helpers::spawn_app_with(|config| {
        config.dispatch.writer_queue = 1;
        config.store.busy_timeout = std::time::Duration::from_secs(30);
    })
    .await;
    let mut blocker =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", app.database.display()))
            .await
            .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let app = std::sync::Arc::new(app);
    let mut posts = Vec::new();
    for n in 0..4 {
        let app = std::sync::Arc::clone(&app);
        posts.push(tokio::spawn(async move {
            let message = json!({"type": "track", "userId": "u", "event": format!("E{n}"), "messageId": format!("q{n}"),
                                 "writeKey": crate::helpers::WRITE_KEY});
            app.post("/v1/track", message.to_string().as_bytes(), Dress::BodyKey).await
        }));
    }
    // At most one request is in the writer and one in its queue: the others
    // come back 503 while the lock is still held.
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    while refused < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "two of four requests were not refused while the lock was held"
        );
        let index = posts.iter().position(|p| p.is_finished());
        if let Some(index) = index {
            let reply = posts.remove(index).await.unwrap();
            assert_eq!(reply.http_status(), Some(503));
            assert!(matches!(
                reply.answer,
                ldbridge::retry::Answer::Status {
                    retry_after: Some(_),
                    ..
                }
            ));
            refused += 1;
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    // The rest were queued (one or two, depending on whether the writer had
    // taken the first before the others arrived) or also refused.
    let mut accepted = 0;
    for post in posts {
        let reply = post.await.unwrap();
        match reply.http_status() {
            Some(200) => accepted += 1,
            other => assert_eq!(other, Some(503), "{:?}", reply.excerpt),
        }
    }
    assert!(accepted >= 1);
    assert_eq!(
        app.events_stored().await,
        accepted,
        "stored must equal acknowledged"
    );
}
