//! Configured mappings end to end: a mapping changed by a reload applies to
//! batches formed after it, while a batch formed before sends the same
//! bytes on every retry and every resend.

use ldbridge::{
    domain::{DeliveryStatus, Route},
    map::mapping::{MappingSpec, Mappings},
    receiver::Reply,
};
use serde_json::Value;

use crate::helpers::*;

fn custom_named(name: &str) -> Mappings {
    Mappings::from_specs(&[MappingSpec {
        action: "custom".to_owned(),
        event_name: Some(name.into()),
        ..MappingSpec::default()
    }])
    .unwrap()
}

#[tokio::test]
async fn a_mapping_changed_by_a_reload_applies_to_new_batches_and_a_retry_or_resend_sends_the_old_bytes(
) {
    let app =
        spawn_app_with(|config| config.segment_sources[0].mappings = custom_named("purchase"))
            .await;
    app.launchdarkly
        .push(Reply::status(500).body("upstream trouble"));
    app.post_tracks(&["Order Completed"]).await;
    // The first attempt fails: the batch is retrying.
    app.app
        .dispatcher
        .drain(Route::SegmentToLaunchDarkly)
        .await
        .unwrap();
    assert_eq!(app.launchdarkly.requests().len(), 1);

    // A reload renames the event, and a new call comes in.
    let mut config = (*app.app.config.get()).clone();
    config.segment_sources[0].mappings = custom_named("checkout");
    app.app.config.replace(config);
    app.post_tracks(&["Later"]).await;
    app.dispatch_until(|counts| counts.settled()).await;

    let requests = app.launchdarkly.requests();
    let first = requests[0].body.clone();
    let keys = |body: &[u8]| -> Vec<String> {
        let events: Value = serde_json::from_slice(body).unwrap();
        events
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&first), ["purchase"]);
    let retry = requests[1..]
        .iter()
        .find(|request| {
            request.header("x-launchdarkly-payload-id")
                == requests[0].header("x-launchdarkly-payload-id")
        })
        .expect("the batch was retried");
    assert_eq!(
        retry.body, first,
        "the retry sent other bytes than the first attempt"
    );
    let new: Vec<Vec<String>> = requests[1..]
        .iter()
        .filter(|request| {
            request.header("x-launchdarkly-payload-id")
                != requests[0].header("x-launchdarkly-payload-id")
        })
        .map(|request| keys(&request.body))
        .collect();
    assert_eq!(new, [["checkout"]], "the batch formed after the reload");

    // A resend of the delivered first batch, still under the new config.
    let first_batch = app
        .batches()
        .await
        .into_iter()
        .filter(|batch| batch.route == Route::SegmentToLaunchDarkly.as_str())
        .min_by_key(|batch| batch.id)
        .unwrap();
    let resend = app.cli(&["resend", &first_batch.id.to_string(), "--force"]);
    assert_eq!(resend.code, 0, "{}", resend.stderr);
    let before = app.launchdarkly.requests().len();
    app.dispatch_until(|counts| counts.settled()).await;
    let requests = app.launchdarkly.requests();
    assert_eq!(requests.len(), before + 1);
    assert_eq!(requests[before].body, first, "the resend sent other bytes");
    assert_eq!(
        app.counts()
            .await
            .on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered),
        2
    );
}

#[tokio::test]
async fn two_mappings_taking_one_call_send_two_events_and_a_call_none_takes_is_skipped_naming_the_triggers(
) {
    let specs: Vec<MappingSpec> =
        serde_json::from_str(&fixture("segment-mappings.mappings.json")).unwrap();
    let mappings = Mappings::from_specs(&specs).unwrap();
    let app = spawn_app_with(|config| config.segment_sources[0].mappings = mappings).await;
    let mut body = fixture_json("segment-mappings.in.json");
    body["writeKey"] = Value::from(WRITE_KEY);
    let reply = app
        .post("/v1/batch", body.to_string().as_bytes(), Dress::BodyKey)
        .await;
    assert_eq!(reply.http_status(), Some(200));
    app.dispatch_until(|counts| counts.settled()).await;

    // The stored timestamps are corrected for skew against the receive
    // time, so compare the events without creationDate.
    let strip = |mut event: Value| {
        event.as_object_mut().unwrap().remove("creationDate");
        event
    };
    let sent: Vec<Value> = app.received_events().into_iter().map(strip).collect();
    let expected: Vec<Value> = fixture_json("segment-mappings.to-ld.json")
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(strip)
        .collect();
    assert_eq!(sent, expected);
    let counts = app.counts().await;
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered),
        2
    );
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Skipped),
        3
    );

    let explained = app.cli(&["explain", "m-3", "--json"]).json();
    let reason = explained[0]["routes"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.starts_with("no mapping matches (mapping 1 (custom, #"),
        "{reason}"
    );
    let explained = app.cli(&["explain", "m-2", "--json"]).json();
    let reason = explained[0]["routes"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("the required field user_key ($.context.groupId) has no value"),
        "{reason}"
    );
}
