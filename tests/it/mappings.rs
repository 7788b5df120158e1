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

    // show and explain name the mappings that produced each event, with
    // their hashes.
    let labels: Vec<String> = mappings_labels(&specs);
    let explained = app.cli(&["explain", "m-1", "--json"]).json();
    assert_eq!(
        explained[0]["routes"][0]["mapped_by"],
        serde_json::json!(labels)
    );
    let explained = app.cli(&["explain", "m-5"]);
    assert!(
        explained
            .stdout
            .contains(&format!("mapped by {}\n", labels[0])),
        "{}",
        explained.stdout
    );
    let batch = explained_batch(&app.cli(&["explain", "m-1", "--json"]).json());
    let shown = app.cli(&["show", &batch.to_string(), "--json"]).json();
    let by: Vec<Value> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["mapped_by"].clone())
        .collect();
    assert_eq!(
        by,
        [serde_json::json!(labels), serde_json::json!([labels[0]])]
    );
    let shown = app.cli(&["show", &batch.to_string()]);
    assert!(
        shown
            .stdout
            .contains(&format!("mapped by {} and {}", labels[0], labels[1])),
        "{}",
        shown.stdout
    );
}

fn mappings_labels(specs: &[MappingSpec]) -> Vec<String> {
    Mappings::from_specs(specs)
        .unwrap()
        .iter()
        .map(|mapping| mapping.label())
        .collect()
}

fn explained_batch(explained: &Value) -> i64 {
    explained[0]["routes"][0]["batch_id"].as_i64().unwrap()
}

/// A config with one Segment source (relayed too) whose one mapping
/// renames "Order Completed", and one LaunchDarkly source exporting custom
/// events only.
fn preview_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("map.toml");
    std::fs::write(
        &path,
        format!(
            "[[segment_source]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n\
             to_launchdarkly = {{ client_side_id = \"{CLIENT_SIDE_ID}\" }}\nrelay_to_segment = true\n\
             [[segment_source.mapping]]\naction = \"custom\"\n\
             trigger = 'type = \"track\" and event = \"Order Completed\"'\n\
             event_name = \"purchase\"\nmetric_value = [\"$.properties.total\", \"$.properties.value\"]\n\
             [[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-secret-4471\"\n\
             to_segment = {{ write_key = \"ld-write-key-9931\", trigger = 'kind = \"custom\"' }}\n\
             relay_to_launchdarkly = true\n"
        ),
    )
    .unwrap();
    path
}

fn run_map(config: &std::path::Path, args: &[&str], stdin: &str) -> CliRun {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ldbridge"))
        .arg("--config")
        .arg(config)
        .arg("map")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn ldbridge_map_prints_the_bytes_the_daemon_sends_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = preview_config(dir.path());
    let call = serde_json::json!({
        "type": "track", "event": "Order Completed", "userId": "u-7", "anonymousId": "a-7",
        "messageId": "map-preview-1", "timestamp": "2024-05-14T09:32:11.250Z",
        "properties": {"total": "19.90", "plan": "pro"},
    });
    let call_file = dir.path().join("call.json");
    std::fs::write(&call_file, call.to_string()).unwrap();
    let shown = run_map(
        &config_path,
        &["--source", "web", "--json", call_file.to_str().unwrap()],
        "",
    );
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        !shown.stdout.contains(WRITE_KEY) && !shown.stderr.contains(WRITE_KEY),
        "a secret was printed: {}",
        shown.stdout
    );
    let preview = shown.json();
    let to_ld = &preview["routes"][0];
    assert_eq!(to_ld["route"], "segment-to-launchdarkly");
    assert!(to_ld["events"][0]["mapped_by"][0]
        .as_str()
        .unwrap()
        .starts_with("mapping 1 (custom, #"));
    let relay = &preview["routes"][1];
    assert_eq!(relay["request"]["body"]["writeKey"], "***");

    // The daemon, with the same mapping, sends the same body for the same call.
    let text = std::fs::read_to_string(&config_path).unwrap();
    let mappings = ldbridge::config::Config::from_toml(&text, "map.toml")
        .unwrap()
        .segment_sources[0]
        .mappings
        .clone();
    let app = spawn_app_with(|config| config.segment_sources[0].mappings = mappings).await;
    let body = serde_json::json!({"batch": [call], "writeKey": WRITE_KEY}).to_string();
    let reply = app.post("/v1/batch", body.as_bytes(), Dress::BodyKey).await;
    assert_eq!(reply.http_status(), Some(200));
    app.dispatch_until(|counts| counts.settled()).await;
    let sent = app.launchdarkly.requests()[0].json();
    assert_eq!(to_ld["request"]["body"], sent);
    assert!(to_ld["request"]["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/events/bulk/{CLIENT_SIDE_ID}")));

    // A call no mapping takes: nothing sent, and the triggers said.
    let page = run_map(
        &config_path,
        &["--source", "web", "-"],
        r#"{"type": "page", "name": "Home", "userId": "u-7"}"#,
    );
    assert_eq!(page.code, 0, "{}", page.stderr);
    let (to_ld, relay) = page
        .stdout
        .split_once("== segment-relay")
        .expect("both routes are shown");
    assert!(
        to_ld.contains("skipped: no mapping matches (mapping 1 (custom, #"),
        "{to_ld}"
    );
    assert!(to_ld.contains("nothing would be sent"), "{to_ld}");
    assert!(relay.contains("POST "), "{relay}");

    // A LaunchDarkly payload: the trigger exports the custom event only;
    // the relay sends both.
    let payload = r#"[{"kind": "custom", "key": "purchase", "creationDate": 1, "contextKeys": {"user": "u-7"}},
                      {"kind": "feature", "key": "f", "creationDate": 1, "context": {"kind": "user", "key": "u-7"}, "value": true}]"#;
    let shown = run_map(&config_path, &["--source", "prod", "--json"], payload);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        !shown.stdout.contains("sdk-secret-4471") && !shown.stdout.contains("ld-write-key-9931")
    );
    let preview = shown.json();
    let export = &preview["routes"][0];
    assert_eq!(
        export["request"]["body"]["batch"].as_array().unwrap().len(),
        1
    );
    assert!(export["events"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("to_segment.trigger"));
    let relayed = &preview["routes"][1];
    assert_eq!(relayed["request"]["body"].as_array().unwrap().len(), 2);

    // Mistakes: an unknown source, a batch instead of a call.
    let unknown = run_map(&config_path, &["--source", "nope"], "{}");
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no source named \"nope\""),
        "{}",
        unknown.stderr
    );
    let batch = run_map(&config_path, &["--source", "web"], r#"{"batch": []}"#);
    assert_eq!(batch.code, 2);
    assert!(
        batch.stderr.contains("one Segment call"),
        "{}",
        batch.stderr
    );
}
