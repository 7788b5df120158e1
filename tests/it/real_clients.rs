//! What real clients send that a strict reading of the protocols refused,
//! each a regression test of issue 12: zone-less and date-only timestamps,
//! lone surrogates, alias without previousId, numeric ids, the
//! `integrations` object, analytics.js's `/v1/m`, CORS on every answer,
//! and the SDK's identifying headers on the relay.

use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use ldbridge::domain::DeliveryStatus;
use ldbridge::domain::Route;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Dress, TestApp, WRITE_KEY};

async fn accepted(app: &TestApp, path: &str, message: Value) {
    let mut message = message;
    message["writeKey"] = json!(WRITE_KEY);
    let reply = app
        .post(path, message.to_string().as_bytes(), Dress::TextPlain)
        .await;
    assert_eq!(
        reply.http_status(),
        Some(200),
        "{path}: {:?}",
        reply.excerpt
    );
}

#[tokio::test]
async fn what_segment_takes_leniently_is_stored_and_delivered() {
    let app = spawn_app().await;
    // ISO-8601 without a zone is UTC; a bare date is its midnight.
    accepted(
        &app,
        "/v1/t",
        json!({"userId": "u1", "event": "NoZone", "timestamp": "2024-05-14T09:31:27.412"}),
    )
    .await;
    accepted(
        &app,
        "/v1/t",
        json!({"userId": "u2", "event": "DateOnly", "timestamp": "2024-05-14"}),
    )
    .await;
    // A truncated emoji: a lone surrogate escape, stored and sent as U+FFFD.
    let body = format!(
        r#"{{"userId":"u3","event":"ok \ud83d","properties":{{"note":"x\udc00y"}},"writeKey":"{WRITE_KEY}"}}"#
    );
    let reply = app.post("/v1/t", body.as_bytes(), Dress::TextPlain).await;
    assert_eq!(reply.http_status(), Some(200), "{:?}", reply.excerpt);
    // Alias without previousId: the anonymousId is the previous key.
    accepted(
        &app,
        "/v1/a",
        json!({"userId": "known", "anonymousId": "anon-7"}),
    )
    .await;
    // Numeric ids, written as JavaScript's String() writes them.
    accepted(&app, "/v1/t", json!({"userId": 1e21, "event": "Big"})).await;

    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == 5
    })
    .await;
    let events = app.received_events();
    let by_key = |key: &str| {
        events
            .iter()
            .find(|event| event["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {events:?}"))
            .clone()
    };
    assert_eq!(by_key("NoZone")["creationDate"], 1_715_679_087_412_i64);
    assert_eq!(by_key("DateOnly")["creationDate"], 1_715_644_800_000_i64);
    let emoji = by_key("ok \u{FFFD}");
    assert_eq!(emoji["data"]["note"], "x\u{FFFD}y");
    let alias = events
        .iter()
        .find(|event| event["kind"] == "alias")
        .unwrap();
    assert_eq!(alias["key"], "known");
    assert_eq!(alias["previousKey"], "anon-7");
    assert_eq!(by_key("Big")["contextKeys"]["user"], "1e+21");
}

#[tokio::test]
async fn integrations_turning_launchdarkly_off_skip_it_and_the_relay_forwards_them() {
    let app = spawn_app_with(|config| config.segment_sources[0].relay_to_segment = true).await;
    let batch = json!({"writeKey": WRITE_KEY, "batch": [
        {"type": "track", "userId": "u", "event": "AllOff", "integrations": {"All": false}},
        {"type": "track", "userId": "u", "event": "LdOff", "integrations": {"LaunchDarkly": false}},
        {"type": "track", "userId": "u", "event": "BackOn", "integrations": {"All": false, "LaunchDarkly (Actions)": true}},
        {"type": "track", "userId": "u", "event": "Default"},
    ]});
    let reply = app
        .post("/v1/b", batch.to_string().as_bytes(), Dress::TextPlain)
        .await;
    assert_eq!(reply.http_status(), Some(200));
    let counts = app
        .dispatch_until(|counts| {
            counts.settled() && counts.on(Route::SegmentRelay, DeliveryStatus::Delivered) == 4
        })
        .await;
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Skipped),
        2
    );
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered),
        2
    );
    let sent: Vec<Value> = app
        .received_events()
        .iter()
        .map(|event| event["key"].clone())
        .collect();
    assert_eq!(sent, [json!("BackOn"), json!("Default")]);
    // Segment applies the object itself: the relay forwards it as it came.
    let relayed = app.segment.requests()[0].json();
    assert_eq!(relayed["batch"][0]["integrations"], json!({"All": false}));
    // explain gives the reason.
    let found = app
        .cli(&["explain", "--json", &skipped_message_id(&app)])
        .json();
    let routes = found[0]["routes"].as_array().unwrap();
    let to_ld = routes
        .iter()
        .find(|route| route["route"] == "segment-to-launchdarkly")
        .unwrap();
    assert!(
        to_ld["reason"].as_str().unwrap().contains("integrations"),
        "{to_ld}"
    );
}

/// The messageId of a message skipped on segment-to-launchdarkly.
fn skipped_message_id(app: &TestApp) -> String {
    let relayed = app.segment.requests()[0].json();
    relayed["batch"][0]["messageId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Sends `request` (to the ingest listener); returns status, headers, body.
async fn call(
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> (u16, hyper::HeaderMap, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn post(
    app: &TestApp,
    path: &str,
    origin: &str,
    body: &str,
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    hyper::Request::post(format!("{}{path}", app.base))
        .header("origin", origin)
        .header(CONTENT_TYPE, "text/plain")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap()
}

#[tokio::test]
async fn every_answer_carries_cors_for_the_calling_origin_refusals_and_telemetry_included() {
    let app = spawn_app_with(|config| config.server.max_request_bytes = 10_000).await;
    let origin = "http://127.0.0.1:5173";
    let huge = json!({"batch": [], "pad": "x".repeat(20_000)}).to_string();
    let good = json!({"userId": "u", "event": "E", "writeKey": WRITE_KEY}).to_string();
    let bad = json!({"userId": "u", "writeKey": WRITE_KEY}).to_string();
    let unknown = json!({"userId": "u", "event": "E", "writeKey": "nope"}).to_string();
    for (path, body, status) in [
        ("/v1/t", good.as_str(), 200),
        ("/v1/t", bad.as_str(), 400),
        ("/v1/t", unknown.as_str(), 401),
        ("/v1/b", huge.as_str(), 413),
        ("/v1/m", r#"{"series":[]}"#, 200),
    ] {
        let (got, headers, text) = call(post(&app, path, origin, body)).await;
        assert_eq!(got, status, "{path}: {text}");
        assert_eq!(headers["access-control-allow-origin"], origin, "{path}");
        assert_eq!(
            headers["access-control-allow-credentials"], "true",
            "{path}"
        );
        assert_eq!(
            headers["access-control-expose-headers"],
            "Date, Retry-After"
        );
        assert!(headers.get_all("vary").iter().any(|vary| vary == "Origin"));
        assert!(headers.contains_key("date"));
    }
    // The telemetry post is answered and counted, not stored.
    assert_eq!(app.events_stored().await, 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("ldbridge_analytics_telemetry_total 1"),
        "{metrics}"
    );

    // The preflight of an analytics.js retry, as Chromium sends it.
    let preflight = hyper::Request::options(format!("{}/v1/b", app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-retry-count",
        )
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, headers, _) = call(preflight).await;
    assert_eq!(status, 204);
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type,x-retry-count"
    );
    assert_eq!(headers["access-control-allow-origin"], origin);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    // The LaunchDarkly browser SDK's preflight.
    let preflight = hyper::Request::options(format!("{}/events/bulk/{}", app.base, crate::helpers::CLIENT_SIDE_ID))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-launchdarkly-event-schema,x-launchdarkly-payload-id,x-launchdarkly-user-agent",
        )
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, headers, _) = call(preflight).await;
    assert_eq!(status, 204);
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("x-launchdarkly-user-agent"));
}

#[tokio::test]
async fn the_relay_keeps_each_sdks_identifying_headers_and_never_mixes_them() {
    let app = spawn_app().await;
    for (n, (agent, wrapper)) in [
        ("GoClient/7.4.0", "openfeature-go/0.2.0"),
        ("NodeJSClient/9.1.0", ""),
    ]
    .iter()
    .enumerate()
    {
        let mut headers = vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                HeaderName::from_static("x-launchdarkly-event-schema"),
                HeaderValue::from_static("4"),
            ),
            (
                HeaderName::from_static("x-launchdarkly-payload-id"),
                HeaderValue::from_str(&format!("0000000{n}-1111-2222-3333-444444444444")).unwrap(),
            ),
            (
                AUTHORIZATION,
                HeaderValue::from_static(ldbridge::demo::SDK_KEY),
            ),
            (USER_AGENT, HeaderValue::from_static(agent)),
            (
                HeaderName::from_static("x-launchdarkly-tags"),
                HeaderValue::from_static("application-id/shop"),
            ),
        ];
        if !wrapper.is_empty() {
            headers.push((
                HeaderName::from_static("x-launchdarkly-wrapper"),
                HeaderValue::from_static(wrapper),
            ));
        }
        let body = json!([{"kind": "custom", "key": format!("k{n}"), "creationDate": 1, "contextKeys": {"user": "u"}}]);
        let reply = app.post_raw("/bulk", body.to_string(), headers).await;
        assert_eq!(reply.http_status(), Some(202));
    }
    app.dispatch_until(|counts| {
        counts.on(Route::LaunchDarklyRelay, DeliveryStatus::Delivered) == 2
    })
    .await;
    let relayed: Vec<_> = app
        .launchdarkly
        .requests()
        .into_iter()
        .filter(|request| request.path == "/bulk")
        .collect();
    // Two SDKs: two requests, each with its own headers.
    assert_eq!(relayed.len(), 2);
    for request in &relayed {
        let key = request.json()[0]["key"].clone();
        let (agent, wrapper) = if key == "k0" {
            ("GoClient/7.4.0", Some("openfeature-go/0.2.0"))
        } else {
            ("NodeJSClient/9.1.0", None)
        };
        assert_eq!(request.header("user-agent"), Some(agent));
        assert_eq!(request.header("x-launchdarkly-wrapper"), wrapper);
        assert_eq!(
            request.header("x-launchdarkly-tags"),
            Some("application-id/shop")
        );
    }
}
