//! Delivery to LaunchDarkly: retries keep the payload id, Retry-After is
//! honoured, failures are final and recorded, bad events are isolated.

use std::time::Duration;

use ldbridge::{
    clock::Clock,
    domain::{BatchStatus, DeliveryStatus, Route},
    receiver::Reply,
    store::delivery_log,
};
use serde_json::{json, Value};

use crate::helpers::{fixture, spawn_app, spawn_app_at, spawn_app_with, Dress, TestApp};

async fn attempts(app: &TestApp, batch_id: i64) -> Vec<delivery_log::AttemptSummary> {
    delivery_log::batch_attempts(&app.app.store, batch_id)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_500_is_retried_and_delivered_with_the_same_payload_id() {
    let app = spawn_app().await;
    app.launchdarkly
        .push(Reply::status(500).body("upstream trouble"));
    assert_eq!(
        app.post(
            "/v1/track",
            fixture("segment-track.in.json").as_bytes(),
            Dress::Basic
        )
        .await
        .http_status(),
        Some(200)
    );
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 1)
        .await;
    let requests = app.launchdarkly.requests();
    assert_eq!(requests.len(), 2);
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.header("x-launchdarkly-payload-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], ids[1], "a retry must carry the batch's payload id");
    assert_eq!(
        requests[0].body, requests[1].body,
        "a retry sends the same events"
    );
    let batch = &app.batches().await[0];
    assert_eq!((batch.status.as_str(), batch.attempts), ("delivered", 2));
    assert_eq!(batch.payload_id, ids[0]);
    let log = attempts(&app, batch.id).await;
    assert_eq!(
        log.iter().map(|a| a.http_status).collect::<Vec<_>>(),
        vec![Some(500), Some(202)]
    );
    assert_eq!(
        log.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(),
        vec!["retrying", "delivered"]
    );
    assert_eq!(log[0].response.as_deref(), Some("upstream trouble"));
    assert!(log.iter().all(|a| a.trigger == "scheduled"));
}

#[tokio::test]
async fn a_429_with_retry_after_waits_at_least_that_long() {
    // Delivery's clock is moved by hand: the second attempt waits for it.
    let start = ldbridge::clock::now_ms();
    let app = spawn_app_at(Clock::manual(start), |config| {
        config.dispatch.retry_schedule = vec![Duration::from_millis(10), Duration::from_secs(5)];
    })
    .await;
    app.launchdarkly
        .push(Reply::status(429).header("retry-after", "1"));
    app.post_tracks(&["a"]).await;
    let route = Route::SegmentToLaunchDarkly;
    app.app.dispatcher.drain(route).await.unwrap();
    assert_eq!(app.launchdarkly.requests().len(), 1);
    // 999 ms on: not yet.
    app.clock.advance(Duration::from_millis(999));
    app.app.dispatcher.drain(route).await.unwrap();
    assert_eq!(
        app.launchdarkly.requests().len(),
        1,
        "retried before Retry-After: 1"
    );
    // 1,200 ms on (the most the 20 % jitter stretches it): sent.
    app.clock.advance(Duration::from_millis(201));
    app.app.dispatcher.drain(route).await.unwrap();
    assert_eq!(app.launchdarkly.requests().len(), 2);
    assert_eq!(app.counts().await.get(DeliveryStatus::Delivered), 1);
}

#[tokio::test]
async fn a_401_fails_the_batch_without_retrying() {
    let app = spawn_app_at(Clock::manual(ldbridge::clock::now_ms()), |_| {}).await;
    app.launchdarkly
        .set_default(Reply::status(401).body("invalid key"));
    app.post_tracks(&["a", "b"]).await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Failed) == 2)
        .await;
    // Well past the 10 ms retry step: still one request.
    app.clock.advance(Duration::from_secs(60));
    app.app
        .dispatcher
        .drain(Route::SegmentToLaunchDarkly)
        .await
        .unwrap();
    assert_eq!(app.launchdarkly.requests().len(), 1);
    let batch = &app.batches().await[0];
    assert_eq!(batch.status, BatchStatus::Failed);
    assert!(
        batch.last_error.as_deref().unwrap().contains("401"),
        "{:?}",
        batch.last_error
    );
}

#[tokio::test]
async fn a_400_on_a_batch_of_three_isolates_the_poison_event_and_delivers_the_others() {
    let app = spawn_app().await;
    crate::helpers::refuse_event(&app.launchdarkly, "poison", 400);
    app.post_tracks(&["good-1", "poison", "good-2"]).await;
    let counts = app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(
        (
            counts.get(DeliveryStatus::Delivered),
            counts.get(DeliveryStatus::Failed)
        ),
        (2, 1)
    );
    let delivered: Vec<Value> = app
        .launchdarkly
        .requests()
        .iter()
        .map(|r| r.json().as_array().cloned().unwrap())
        // What the receiver accepted: requests without the poison event.
        .filter(|events| events.iter().all(|event| event["key"] != "poison"))
        .flatten()
        .map(|event| event["key"].clone())
        .collect();
    assert_eq!(delivered, vec![json!("good-1"), json!("good-2")]);
    let batches = app.batches().await;
    let failed: Vec<_> = batches
        .iter()
        .filter(|b| b.status == BatchStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event_count, 1);
    assert!(batches
        .iter()
        .any(|b| b.status == BatchStatus::Split && b.event_count == 3));
}

#[tokio::test]
async fn a_413_splits_the_batch_until_each_part_fits() {
    let app = spawn_app().await;
    app.launchdarkly.respond_with(|request| {
        Some(Reply::status(
            if request.json().as_array().unwrap().len() > 2 {
                413
            } else {
                202
            },
        ))
    });
    app.post_tracks(&["a", "b", "c", "d", "e"]).await;
    let counts = app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(counts.get(DeliveryStatus::Delivered), 5);
    let keys: std::collections::BTreeSet<String> = app
        .launchdarkly
        .requests()
        .iter()
        .filter(|r| r.json().as_array().unwrap().len() <= 2)
        .flat_map(|r| r.json().as_array().cloned().unwrap())
        .map(|event| event["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys.len(),
        5,
        "every event delivered exactly in some accepted part"
    );
}

#[tokio::test]
async fn a_batch_still_failing_after_give_up_after_becomes_failed() {
    let app =
        spawn_app_with(|config| config.dispatch.give_up_after = Duration::from_millis(200)).await;
    app.launchdarkly.set_default(Reply::status(503));
    app.post_tracks(&["a"]).await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Failed) == 1)
        .await;
    let batch = &app.batches().await[0];
    assert!(batch.attempts >= 2);
    assert!(
        batch
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("gave up after"),
        "{:?}",
        batch.last_error
    );
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_the_batch_is_retried() {
    let app =
        spawn_app_with(|config| config.dispatch.request_timeout = Duration::from_millis(300)).await;
    app.launchdarkly
        .push(Reply::status(202).delay(Duration::from_secs(30)));
    app.post_tracks(&["a"]).await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 1)
        .await;
    let log = attempts(&app, app.batches().await[0].id).await;
    assert_eq!(log[0].http_status, None);
    assert_eq!(log[0].error.as_deref(), Some("timed out"));
    assert_eq!(log[1].http_status, Some(202));
}

#[tokio::test]
async fn batches_respect_max_batch_events_and_every_event_is_sent_once() {
    let app = spawn_app_with(|config| config.dispatch.max_batch_events = 2).await;
    app.post_tracks(&["a", "b", "c", "d", "e"]).await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 5)
        .await;
    let sizes: Vec<usize> = app
        .launchdarkly
        .requests()
        .iter()
        .map(|r| r.json().as_array().unwrap().len())
        .collect();
    assert!(sizes.iter().all(|n| *n <= 2), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 5);
}

#[tokio::test]
async fn an_idle_tick_writes_nothing() {
    if crate::helpers::on_postgres("an_idle_tick_writes_nothing") {
        return;
    }
    let app = spawn_app().await;
    let before = std::fs::metadata(app.database.with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    let outcome = app
        .app
        .dispatcher
        .run_once(
            ldbridge::domain::Route::SegmentToLaunchDarkly,
            ldbridge::clock::now_ms(),
        )
        .await
        .unwrap();
    assert!(outcome.idle);
    let after = std::fs::metadata(app.database.with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(before, after);
}

#[tokio::test]
async fn attempts_that_end_together_are_each_recorded_with_their_own_outcome() {
    // One event per batch, all eight sent at once: their attempts end
    // together and are recorded in one transaction, each with its own
    // answer, status and deliveries.
    let app = spawn_app_with(|config| {
        config.dispatch.max_batch_events = 1;
        config.dispatch.max_in_flight = 8;
    })
    .await;
    // What the stand-in answers a batch, by its event's name, and what
    // the batch becomes.
    let planned = |request: &ldbridge::receiver::Recorded| {
        let key = request.json()[0]["key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let plan = match key.split('-').next() {
            Some("retry") => (500, BatchStatus::Retrying),
            Some("refuse") => (400, BatchStatus::Failed),
            _ => (202, BatchStatus::Delivered),
        };
        (key, plan)
    };
    app.launchdarkly.respond_with(move |request| {
        let (_, (code, _)) = planned(request);
        Some(Reply::status(code))
    });
    let names = [
        "ok-1", "retry-1", "refuse-1", "ok-2", "retry-2", "ok-3", "refuse-2", "ok-4",
    ];
    app.post_tracks(&names).await;
    let outcome = app
        .app
        .dispatcher
        .run_once(Route::SegmentToLaunchDarkly, ldbridge::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(
        (
            outcome.attempts,
            outcome.delivered,
            outcome.retrying,
            outcome.failed
        ),
        (8, 4, 2, 2)
    );
    let batches = app.batches().await;
    assert_eq!(batches.len(), 8);
    for batch in &batches {
        let log = attempts(&app, batch.id).await;
        assert_eq!(log.len(), 1, "batch {} has one attempt", batch.id);
        let sent = app
            .launchdarkly
            .requests()
            .into_iter()
            .find(|r| r.header("x-launchdarkly-payload-id") == Some(batch.payload_id.as_str()))
            .expect("every batch was sent");
        let (key, (code, status)) = planned(&sent);
        let expected = (status, Some(i64::from(code)));
        assert_eq!((batch.status, log[0].http_status), expected, "{key}");
        assert_eq!(log[0].outcome, expected.0.to_string(), "{key}");
    }
    let counts = app.counts().await;
    assert_eq!(counts.get(DeliveryStatus::Delivered), 4);
    assert_eq!(counts.get(DeliveryStatus::Failed), 2);
}

#[tokio::test]
async fn a_drain_of_many_runs_leaves_every_attempt_recorded() {
    // Two batches of one event per run: four runs for seven events. Each
    // run's attempts are recorded with the next run's batches, the last
    // run's when the drain ends; none may be left `sending`.
    let app = spawn_app_with(|config| {
        config.dispatch.max_batch_events = 1;
        config.dispatch.max_in_flight = 2;
    })
    .await;
    app.post_tracks(&["e1", "e2", "e3", "e4", "e5", "e6", "e7"])
        .await;
    let outcome = app
        .app
        .dispatcher
        .drain(Route::SegmentToLaunchDarkly)
        .await
        .unwrap();
    assert_eq!((outcome.batches_formed, outcome.delivered), (7, 7));
    let batches = app.batches().await;
    assert_eq!(batches.len(), 7);
    for batch in &batches {
        assert_eq!(
            (batch.status, batch.attempts),
            (BatchStatus::Delivered, 1),
            "batch {}",
            batch.id
        );
        assert_eq!(attempts(&app, batch.id).await.len(), 1);
    }
    assert_eq!(app.counts().await.get(DeliveryStatus::Delivered), 7);
    assert_eq!(app.launchdarkly.element_count(), 7);
}
