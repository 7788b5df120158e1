//! LaunchDarkly SDK traffic in: mapped to Segment as the fixtures say, and
//! relayed to LaunchDarkly unchanged; auth, dedupe and refusals.

use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};
use ldbridge::domain::DeliveryStatus;
use ldbridge::{
    demo::{CLIENT_SIDE_ID, DESTINATION_WRITE_KEY, MOBILE_KEY, SDK_KEY},
    domain::Route,
    receiver::{Recorded, Reply},
};
use serde_json::{json, Value};

use crate::helpers::{basic, fixture, fixture_json, spawn_app, spawn_app_with, TestApp};

/// How an SDK posts: path, credential header, schema header.
pub struct Sdk {
    path: String,
    authorization: Option<String>,
    schema: &'static str,
}

pub fn server() -> Sdk {
    Sdk {
        path: "/bulk".to_owned(),
        authorization: Some(SDK_KEY.to_owned()),
        schema: "4",
    }
}

fn browser() -> Sdk {
    Sdk {
        path: format!("/events/bulk/{CLIENT_SIDE_ID}"),
        authorization: None,
        schema: "4",
    }
}

pub async fn post_ld(
    app: &TestApp,
    sdk: &Sdk,
    payload_id: Option<&str>,
    body: &str,
) -> ldbridge::deliver::Reply {
    let mut headers = vec![
        (
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            HeaderName::from_static("x-launchdarkly-event-schema"),
            HeaderValue::from_static(sdk.schema),
        ),
    ];
    if let Some(id) = payload_id {
        headers.push((
            HeaderName::from_static("x-launchdarkly-payload-id"),
            HeaderValue::from_str(id).unwrap(),
        ));
    }
    if let Some(key) = &sdk.authorization {
        headers.push((AUTHORIZATION, HeaderValue::from_str(key).unwrap()));
    }
    app.post_raw(&sdk.path, body.to_owned(), headers).await
}

/// The Segment messages the stand-in received, without the bridge's
/// `context.library` extra, in arrival order.
fn segment_messages(requests: &[Recorded]) -> Vec<Value> {
    requests
        .iter()
        .flat_map(|request| {
            request.json()["batch"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|mut message| {
            message.as_object_mut().unwrap().remove("context");
            message
        })
        .collect()
}

#[tokio::test]
async fn sdk_payloads_arrive_at_segment_mapped_as_the_fixtures_say_and_at_launchdarkly_unchanged() {
    let cases = [
        (
            "ld-server-bulk",
            server(),
            "c0a8012e-5b7d-4f3e-9a61-2e4d8b7c9f10",
            "/bulk",
        ),
        (
            "ld-client-js-bulk",
            browser(),
            "5b2e8f14-0c3d-4a7e-b96f-d1e2f3a4b5c6",
            "/events/bulk/6488674dc2ea1d6673731ba2",
        ),
        (
            "ld-client-js-legacy",
            browser(),
            "f3d2c1b0-a9e8-4d7c-8b6a-5f4e3d2c1b0a",
            "/events/bulk/6488674dc2ea1d6673731ba2",
        ),
        (
            "ld-schema3-legacy",
            Sdk {
                schema: "3",
                ..server()
            },
            "7e6d5c4b-3a29-4817-b6f5-e4d3c2b1a098",
            "/bulk",
        ),
    ];
    for (name, sdk, payload_id, relay_path) in cases {
        let app = spawn_app().await;
        let input = fixture(&format!("{name}.in.json"));
        let reply = post_ld(&app, &sdk, Some(payload_id), &input).await;
        assert_eq!(
            reply.http_status(),
            Some(202),
            "{name}: {:?}",
            reply.excerpt
        );
        assert_eq!(reply.excerpt, None, "202 has an empty body");
        app.dispatch_until(|counts| counts.settled()).await;

        let expected = fixture_json(&format!("{name}.to-segment.json"));
        let requests = app.segment.requests();
        assert_eq!(
            Value::Array(segment_messages(&requests)),
            expected["batch"],
            "{name}"
        );
        for request in &requests {
            assert_eq!(request.path, "/v1/batch");
            assert_eq!(
                request.header("authorization"),
                Some(basic(DESTINATION_WRITE_KEY).as_str())
            );
            assert_eq!(request.json()["writeKey"], DESTINATION_WRITE_KEY);
            assert!(
                ldbridge::clock::parse_ms(request.json()["sentAt"].as_str().unwrap()).is_some()
            );
        }

        let relayed = app.launchdarkly.requests();
        assert_eq!(relayed.len(), 1, "{name}: one payload in, one relayed");
        assert_eq!(relayed[0].path, relay_path);
        assert_eq!(
            relayed[0].json(),
            fixture_json(&format!("{name}.in.json")),
            "{name}: relayed unchanged"
        );
        assert_eq!(
            relayed[0].header("x-launchdarkly-event-schema"),
            Some(sdk.schema)
        );
        assert_eq!(
            relayed[0].header("authorization"),
            sdk.authorization.as_deref()
        );
        assert!(relayed[0].header("x-launchdarkly-payload-id").is_some());
    }
}

#[tokio::test]
async fn mobile_keys_with_or_without_api_key_prefix_are_relayed_to_the_mobile_path() {
    let app = spawn_app().await;
    for (n, key) in [MOBILE_KEY.to_owned(), format!("api_key {MOBILE_KEY}")]
        .into_iter()
        .enumerate()
    {
        let sdk = Sdk {
            path: "/mobile/events/bulk".to_owned(),
            authorization: Some(key),
            schema: "4",
        };
        let body = json!([{"kind": "custom", "key": format!("m{n}"), "creationDate": 1, "contextKeys": {"user": "u"}}]);
        assert_eq!(
            post_ld(&app, &sdk, Some(&format!("p{n}")), &body.to_string())
                .await
                .http_status(),
            Some(202)
        );
    }
    app.dispatch_until(|counts| counts.settled()).await;
    let relayed = app.launchdarkly.requests();
    assert_eq!(relayed.len(), 1, "same credential and schema share a batch");
    assert_eq!(relayed[0].path, "/mobile");
    assert_eq!(relayed[0].header("authorization"), Some(MOBILE_KEY));
    assert_eq!(relayed[0].json().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn events_of_different_schemas_or_credentials_never_share_a_relay_batch() {
    let app = spawn_app().await;
    let event = |key: &str| {
        json!([{"kind": "custom", "key": key, "creationDate": 1, "contextKeys": {"user": "u"}}])
            .to_string()
    };
    post_ld(&app, &server(), Some("a"), &event("server-4")).await;
    post_ld(
        &app,
        &Sdk {
            schema: "3",
            ..server()
        },
        Some("b"),
        &event("server-3"),
    )
    .await;
    post_ld(&app, &browser(), Some("c"), &event("browser-4")).await;
    app.dispatch_until(|counts| counts.settled()).await;
    let mut seen: Vec<(String, String, Option<String>, usize)> = app
        .launchdarkly
        .requests()
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.header("x-launchdarkly-event-schema").unwrap().to_owned(),
                r.header("authorization").map(str::to_owned),
                r.json().as_array().unwrap().len(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "/bulk".to_owned(),
                "3".to_owned(),
                Some(SDK_KEY.to_owned()),
                1
            ),
            (
                "/bulk".to_owned(),
                "4".to_owned(),
                Some(SDK_KEY.to_owned()),
                1
            ),
            (
                format!("/events/bulk/{CLIENT_SIDE_ID}"),
                "4".to_owned(),
                None,
                1
            ),
        ]
    );
}

#[tokio::test]
async fn diagnostics_are_relayed_to_the_diagnostic_path_verbatim_and_skipped_for_segment() {
    let app = spawn_app().await;
    let body = fixture("ld-diagnostic-init.in.json");
    let sdk = Sdk {
        path: "/diagnostic".to_owned(),
        ..server()
    };
    assert_eq!(
        post_ld(&app, &sdk, None, &body).await.http_status(),
        Some(202)
    );
    // The SDK retries the same diagnostic: stored once.
    assert_eq!(
        post_ld(&app, &sdk, None, &body).await.http_status(),
        Some(202)
    );
    let counts = app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(
        counts.on(Route::LaunchDarklyToSegment, DeliveryStatus::Skipped),
        1
    );
    let relayed = app.launchdarkly.requests();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].path, "/diagnostic");
    // Byte for byte, but for whitespace after the JSON value.
    assert_eq!(relayed[0].body, body.trim_end().as_bytes());
    assert_eq!(relayed[0].header("x-launchdarkly-payload-id"), None);
    assert!(app.segment.requests().is_empty());
}

#[tokio::test]
async fn a_repeated_payload_id_is_acknowledged_and_stored_once() {
    let app = spawn_app().await;
    let body = fixture("ld-server-bulk.in.json");
    for _ in 0..3 {
        assert_eq!(
            post_ld(&app, &server(), Some("same-payload"), &body)
                .await
                .http_status(),
            Some(202)
        );
    }
    assert_eq!(app.events_stored().await, 7);
    app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(app.launchdarkly.requests().len(), 1);
    assert_eq!(segment_messages(&app.segment.requests()).len(), 4);
}

#[tokio::test]
async fn wrong_credentials_and_bad_payloads_are_refused_and_nothing_is_stored() {
    let app = spawn_app_with(|config| config.server.max_request_bytes = 10_000).await;
    let good = fixture("ld-server-bulk.in.json");
    let cases: Vec<(Sdk, String, u16, &str)> = vec![
        (
            Sdk {
                authorization: Some("sdk-wrong".to_owned()),
                ..server()
            },
            good.clone(),
            401,
            "unknown SDK key",
        ),
        (
            Sdk {
                authorization: None,
                ..server()
            },
            good.clone(),
            401,
            "no SDK key",
        ),
        (
            Sdk {
                path: "/events/bulk/000000000000000000000000".to_owned(),
                ..browser()
            },
            good.clone(),
            401,
            "unknown client-side id",
        ),
        (
            Sdk {
                path: "/mobile".to_owned(),
                authorization: Some(SDK_KEY.to_owned()),
                schema: "4",
            },
            good.clone(),
            401,
            "unknown mobile key",
        ),
        (server(), "[{\"kind\":".to_owned(), 400, "not valid JSON"),
        (
            server(),
            "{\"kind\":\"custom\"}".to_owned(),
            400,
            "JSON array",
        ),
        (
            server(),
            "[{\"kind\":\"custom\"},{\"key\":\"x\"}]".to_owned(),
            400,
            "[1].kind",
        ),
        (
            server(),
            "[{\"kind\":\"custom\"},7]".to_owned(),
            400,
            "[1]: must be a JSON object",
        ),
        (server(), "   ".to_owned(), 400, "may not be empty"),
        (
            server(),
            format!(
                "[{}]",
                vec!["{\"kind\":\"custom\",\"key\":\"k\"}"; 400].join(",")
            ),
            413,
            "max_request_bytes",
        ),
    ];
    for (sdk, body, status, needle) in &cases {
        let reply = post_ld(&app, sdk, Some("p"), body).await;
        let text = reply.excerpt.clone().unwrap_or_default();
        assert_eq!(reply.http_status(), Some(*status), "{needle}: {text}");
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    assert_eq!(app.events_stored().await, 0);
}

#[tokio::test]
async fn a_retried_segment_batch_carries_the_same_message_ids_and_a_retried_relay_the_same_payload_id(
) {
    let app = spawn_app().await;
    app.segment.push(Reply::status(500));
    app.launchdarkly.push(Reply::status(503));
    post_ld(
        &app,
        &server(),
        Some("retry-me"),
        &fixture("ld-server-bulk.in.json"),
    )
    .await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 4 + 7)
        .await;

    let segment = app.segment.requests();
    assert_eq!(segment.len(), 2);
    let ids = |request: &Recorded| -> Vec<Value> {
        request.json()["batch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["messageId"].clone())
            .collect()
    };
    assert_eq!(ids(&segment[0]), ids(&segment[1]));
    assert_eq!(ids(&segment[0]).len(), 4);

    let relayed = app.launchdarkly.requests();
    assert_eq!(relayed.len(), 2);
    assert_eq!(
        relayed[0].header("x-launchdarkly-payload-id"),
        relayed[1].header("x-launchdarkly-payload-id")
    );
    assert_eq!(relayed[0].body, relayed[1].body);
}

#[tokio::test]
async fn one_route_down_does_not_hold_back_the_other() {
    let app = spawn_app_with(|config| {
        config.dispatch.request_timeout = std::time::Duration::from_secs(30)
    })
    .await;
    // Segment hangs on every request; LaunchDarkly answers at once.
    app.segment
        .set_default(Reply::status(200).delay(std::time::Duration::from_secs(60)));
    post_ld(
        &app,
        &server(),
        Some("hol-1"),
        &fixture("ld-server-bulk.in.json"),
    )
    .await;
    // The real path: a tick drains each route in its own task.
    app.app.dispatcher.tick();
    let relayed = app
        .launchdarkly
        .wait_until(crate::helpers::WAIT, |requests| !requests.is_empty())
        .await;
    // The Segment request may start a moment later; it then hangs.
    app.segment
        .wait_until(crate::helpers::WAIT, |requests| !requests.is_empty())
        .await;
    assert_eq!(relayed.len(), 1);
    assert_eq!(
        app.segment.requests().len(),
        1,
        "the Segment request is still hanging"
    );
    // A second payload while Segment still hangs is relayed too.
    post_ld(
        &app,
        &server(),
        Some("hol-2"),
        &fixture("ld-server-bulk.in.json"),
    )
    .await;
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    while app.launchdarkly.requests().len() < 2 && tokio::time::Instant::now() < deadline {
        app.app.dispatcher.tick();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.launchdarkly.requests().len(), 2);
    // The receiver has the request before the daemon records its outcome
    // (this counted too early, and failed under load: issue 14).
    crate::helpers::wait_until("both relayed payloads recorded delivered", || async {
        app.counts()
            .await
            .on(Route::LaunchDarklyRelay, DeliveryStatus::Delivered)
            == 14
    })
    .await;
}

#[tokio::test]
async fn custom_data_is_copied_only_when_the_source_asks_and_oversized_messages_fail_unsent() {
    let app = spawn_app_with(|config| {
        config.launchdarkly_sources[0].copy_custom_data = true;
        config.launchdarkly_sources[0].relay_to_launchdarkly = false;
    })
    .await;
    let body = json!([
        {"kind": "custom", "key": "small", "creationDate": 1, "contextKeys": {"user": "u"}, "data": {"plan": "pro"}},
        {"kind": "custom", "key": "huge", "creationDate": 1, "contextKeys": {"user": "u"}, "data": {"pad": "x".repeat(40_000)}}
    ]);
    assert_eq!(
        post_ld(&app, &server(), Some("data"), &body.to_string())
            .await
            .http_status(),
        Some(202)
    );
    let counts = app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(
        (
            counts.get(DeliveryStatus::Delivered),
            counts.get(DeliveryStatus::Failed)
        ),
        (1, 1)
    );
    let messages = segment_messages(&app.segment.requests());
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["properties"]["data"], json!({"plan": "pro"}));
    let store = &app.app.store;
    let failed = ldbridge::store::delivery_log::delivery_counts(store)
        .await
        .unwrap();
    assert!(failed
        .iter()
        .any(|(route, status, _)| route == "launchdarkly-to-segment"
            && *status == DeliveryStatus::Failed));
}

#[tokio::test]
async fn to_segment_trigger_exports_only_the_kinds_and_flags_it_names_and_the_relay_still_sends_all(
) {
    let app = spawn_app_with(|config| {
        let to_segment = config.launchdarkly_sources[0].to_segment.as_mut().unwrap();
        to_segment.trigger = Some(
            r#"kind = "custom" or (kind = "feature" and key in ["new-checkout", "pricing-v2"])"#
                .parse()
                .unwrap(),
        );
    })
    .await;
    let context = json!({"kind": "user", "key": "u1"});
    let event = |kind: &str, key: &str| {
        json!({"kind": kind, "key": key, "creationDate": 1_700_000_000_000u64, "context": context,
               "value": true, "variation": 1, "version": 3})
    };
    let body = json!([
        event("feature", "new-checkout"),
        event("feature", "old-banner"),
        event("custom", "purchase"),
        event("feature", "pricing-v2"),
    ]);
    let reply = post_ld(&app, &server(), Some("filtered"), &body.to_string()).await;
    assert_eq!(reply.http_status(), Some(202));
    let counts = app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(
        counts.on(Route::LaunchDarklyToSegment, DeliveryStatus::Skipped),
        1
    );
    let exported: Vec<(String, String)> = segment_messages(&app.segment.requests())
        .iter()
        .map(|message| {
            let flag = message["properties"]["key"].as_str().unwrap_or_default();
            let name = message["event"].as_str().unwrap_or_default();
            (name.to_owned(), flag.to_owned())
        })
        .collect();
    let expected = [
        ("feature", "new-checkout"),
        ("custom", "purchase"),
        ("feature", "pricing-v2"),
    ]
    .map(|(name, key)| (name.to_owned(), key.to_owned()));
    assert_eq!(exported, expected);
    // The relay is not filtered: LaunchDarkly gets all four.
    let relayed: Value = app.launchdarkly.requests()[0].json();
    assert_eq!(relayed.as_array().unwrap().len(), 4);
    // explain says why the flag's evaluation was not exported.
    let found = app.cli(&["explain", "--json", "filtered:1"]).json();
    let to_segment = found[0]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|route| route["route"] == "launchdarkly-to-segment")
        .unwrap()
        .clone();
    assert_eq!(to_segment["status"], "skipped");
    assert!(
        to_segment["reason"]
            .as_str()
            .unwrap()
            .starts_with("no mapping matches (to_segment.trigger: "),
        "{to_segment}"
    );
}

#[tokio::test]
async fn a_trigger_added_by_a_reload_applies_to_new_batches_and_a_retrying_batch_keeps_its_events()
{
    let app = spawn_app().await;
    app.segment
        .push(Reply::status(500).body("upstream trouble"));
    let context = json!({"kind": "user", "key": "u1"});
    let body = |flag: &str| {
        json!([
            {"kind": "feature", "key": flag, "creationDate": 1_700_000_000_000u64,
             "context": context, "value": true, "variation": 1, "version": 3},
            {"kind": "custom", "key": "purchase", "creationDate": 1_700_000_000_000u64,
             "context": context},
        ])
        .to_string()
    };
    let reply = post_ld(&app, &server(), Some("before"), &body("old-banner")).await;
    assert_eq!(reply.http_status(), Some(202));
    // The first attempt fails: the batch (both events) is retrying.
    app.app
        .dispatcher
        .drain(Route::LaunchDarklyToSegment)
        .await
        .unwrap();
    assert_eq!(app.segment.requests().len(), 1);
    // A reload: only custom events are exported from now on.
    let mut config = (*app.app.config.get()).clone();
    config.launchdarkly_sources[0]
        .to_segment
        .as_mut()
        .unwrap()
        .trigger = Some(r#"kind = "custom""#.parse().unwrap());
    app.app.config.replace(config);
    let reply = post_ld(&app, &server(), Some("after"), &body("new-banner")).await;
    assert_eq!(reply.http_status(), Some(202));
    app.dispatch_until(|counts| counts.settled()).await;

    let requests = app.segment.requests();
    let first = &requests[0];
    let later: Vec<_> = requests[1..].iter().collect();
    // The retry sends the messages the first attempt sent (the envelope's
    // `sentAt` is the send time): both events.
    assert!(
        later
            .iter()
            .any(|request| request.json()["batch"] == first.json()["batch"]),
        "no retry sent the batch as formed"
    );
    let exported: Vec<String> = segment_messages(&later.into_iter().cloned().collect::<Vec<_>>())
        .iter()
        .map(|message| {
            message["properties"]["key"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let mut exported = exported;
    exported.sort();
    // Retry: old-banner and purchase; the new batch: purchase only.
    assert_eq!(exported, ["old-banner", "purchase", "purchase"]);
    let counts = app.counts().await;
    assert_eq!(
        counts.on(Route::LaunchDarklyToSegment, DeliveryStatus::Skipped),
        1
    );
}

#[tokio::test]
async fn a_source_with_its_own_hosts_sends_there_and_the_others_keep_the_global_ones() {
    let own_launchdarkly = ldbridge::receiver::Receiver::start().await.unwrap();
    let own_segment = ldbridge::receiver::Receiver::start().await.unwrap();
    let (ld_url, segment_url) = (own_launchdarkly.url(), own_segment.url());
    let app = spawn_app_with(move |config| {
        config.segment_sources[0]
            .to_launchdarkly
            .as_mut()
            .unwrap()
            .events_url = Some(ld_url);
        config.launchdarkly_sources[0]
            .to_segment
            .as_mut()
            .unwrap()
            .api_url = Some(segment_url);
    })
    .await;
    let track = fixture("segment-track.in.json");
    assert_eq!(
        app.post("/v1/track", track.as_bytes(), crate::helpers::Dress::Basic)
            .await
            .http_status(),
        Some(200)
    );
    let bulk = fixture("ld-server-bulk.in.json");
    assert_eq!(
        post_ld(&app, &server(), Some("hosts"), &bulk)
            .await
            .http_status(),
        Some(202)
    );
    app.dispatch_until(|counts| counts.settled()).await;
    // Mapped Segment → LaunchDarkly: the source's own events host.
    let own_ld: Vec<String> = own_launchdarkly
        .requests()
        .iter()
        .map(|request| request.path.clone())
        .collect();
    assert_eq!(own_ld.len(), 1, "{own_ld:?}");
    assert!(own_ld[0].starts_with("/events/bulk/"), "{own_ld:?}");
    // LaunchDarkly → Segment: the source's own tracking API.
    assert_eq!(own_segment.requests().len(), 1);
    assert_eq!(own_segment.requests()[0].path, "/v1/batch");
    // The relay has no host of its own: the global events_url.
    let global_ld: Vec<String> = app
        .launchdarkly
        .requests()
        .iter()
        .map(|request| request.path.clone())
        .collect();
    assert_eq!(global_ld, ["/bulk"]);
    assert!(app.segment.requests().is_empty());
}
