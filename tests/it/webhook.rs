//! Segment's Webhooks destinations pushing into ldbridge, and the
//! segment-relay route back out to Segment.

use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use ldbridge::domain::DeliveryStatus;
use ldbridge::{demo::WRITE_KEY, domain::Route};
use serde_json::{json, Value};

use crate::helpers::{basic, fixture, fixture_json, spawn_app, spawn_app_with, Dress, TestApp};

/// The fixtures' signature: HMAC-SHA1 of the (first) event with the secret.
const SIGNATURE: &str = "51adeaab1160ba1891e74f6c7aa8f9af7e7c9c80";

async fn push(app: &TestApp, body: &str, signature: Option<&str>) -> ldbridge::deliver::Reply {
    let mut headers = vec![
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (
            AUTHORIZATION,
            HeaderValue::from_str(&basic(WRITE_KEY)).unwrap(),
        ),
    ];
    if let Some(signature) = signature {
        headers.push((
            HeaderName::from_static("x-signature"),
            HeaderValue::from_str(signature).unwrap(),
        ));
    }
    app.post_raw("/segment/webhook", body.to_owned(), headers)
        .await
}

#[tokio::test]
async fn signed_single_and_batch_webhooks_feed_launchdarkly_without_a_second_skew_correction() {
    for name in ["segment-webhook-track", "segment-webhook-actions-batch"] {
        let app = spawn_app().await;
        let reply = push(&app, &fixture(&format!("{name}.in.json")), Some(SIGNATURE)).await;
        assert_eq!(
            reply.http_status(),
            Some(200),
            "{name}: {:?}",
            reply.excerpt
        );
        app.dispatch_until(|counts| counts.settled()).await;
        // creationDate is the fixture's already-corrected timestamp, exactly.
        assert_eq!(
            Value::Array(app.received_events()),
            fixture_json(&format!("{name}.to-ld.json")),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_bad_or_missing_signature_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = fixture("segment-webhook-track.in.json");
    let wrong = "0000000000000000000000000000000000000000";
    for signature in [Some(wrong), Some("not-hex"), None] {
        let reply = push(&app, &body, signature).await;
        assert_eq!(reply.http_status(), Some(401), "{signature:?}");
        assert!(reply.excerpt.unwrap().contains("X-Signature"));
    }
    // A body changed after signing no longer matches.
    let tampered = body.replace("Signed Up", "Signed Off");
    assert_eq!(
        push(&app, &tampered, Some(SIGNATURE)).await.http_status(),
        Some(401)
    );
    assert_eq!(app.events_stored().await, 0);
}

#[tokio::test]
async fn webhooks_without_a_secret_need_no_signature_and_delete_requests_are_accepted_but_not_sent()
{
    let app = spawn_app_with(|config| config.segment_sources[0].webhook_secret = None).await;
    assert_eq!(
        push(&app, &fixture("segment-webhook-track.in.json"), None)
            .await
            .http_status(),
        Some(200)
    );
    let delete = json!({"type": "delete", "userId": "u_9001", "messageId": "del-1", "timestamp": "2024-05-14T09:40:11.000Z"});
    assert_eq!(
        push(&app, &delete.to_string(), None).await.http_status(),
        Some(200)
    );
    let counts = app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(
        (
            counts.get(DeliveryStatus::Delivered),
            counts.get(DeliveryStatus::Skipped)
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn segment_relay_sends_messages_with_their_own_message_ids_and_timestamps() {
    let app = spawn_app_with(|config| config.segment_sources[0].relay_to_segment = true).await;
    let reply = app
        .post(
            "/v1/track",
            fixture("segment-track.in.json").as_bytes(),
            Dress::Basic,
        )
        .await;
    assert_eq!(reply.http_status(), Some(200));
    let counts = app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(counts.on(Route::SegmentRelay, DeliveryStatus::Delivered), 1);
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered),
        1
    );
    let requests = app.segment.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/batch");
    assert_eq!(
        requests[0].header("authorization"),
        Some(basic(WRITE_KEY).as_str())
    );
    let sent = &requests[0].json()["batch"][0];
    let original = fixture_json("segment-track.in.json");
    for field in [
        "messageId",
        "timestamp",
        "event",
        "userId",
        "anonymousId",
        "properties",
        "context",
        "type",
    ] {
        assert_eq!(sent[field], original[field], "{field}");
    }
    assert!(sent.get("receivedAt").is_none());
}

#[tokio::test]
async fn a_retried_segment_relay_batch_carries_the_same_message_ids_with_a_new_sent_at() {
    let app = spawn_app_with(|config| {
        config.segment_sources[0].relay_to_segment = true;
        config.segment_sources[0].to_launchdarkly = None;
        config.dispatch.retry_schedule = vec![std::time::Duration::from_millis(20)];
    })
    .await;
    app.segment.push(ldbridge::receiver::Reply::status(502));
    app.post(
        "/v1/batch",
        fixture("segment-batch.in.json").as_bytes(),
        Dress::BodyKey,
    )
    .await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 6)
        .await;
    let requests = app.segment.requests();
    assert_eq!(requests.len(), 2);
    let ids = |n: usize| -> Vec<Value> {
        requests[n].json()["batch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["messageId"].clone())
            .collect()
    };
    assert_eq!(ids(0), ids(1));
    assert_ne!(
        requests[0].json()["sentAt"],
        requests[1].json()["sentAt"],
        "sentAt is set at each send"
    );
}
