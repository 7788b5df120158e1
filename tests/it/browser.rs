//! A real browser: Debian's Chromium, headless, loads a page from another
//! loopback origin running the real analytics.js (`@segment/analytics-next`)
//! and the real LaunchDarkly browser SDK (`@launchdarkly/js-client-sdk`),
//! pinned in tests/browser/package.json and bundled there by esbuild.
//! tests/browser/run.mjs drives it; this test runs ldbridge, stops and
//! restarts it when the script asks, and checks what was delivered.
//!
//! Needs node, Chromium (`CHROMIUM`, default /usr/bin/chromium) and
//! `npm ci` in tests/browser. Without them it skips and says why, unless
//! `LDBRIDGE_REQUIRE_BROWSER=1` (set by .ci/run), which makes that a failure.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use ldbridge::{daemon, domain::Route, receiver::Receiver};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    process::Command,
};

use crate::helpers::{test_config, CLIENT_SIDE_ID, WAIT, WRITE_KEY};

/// The browser test's folder, and Chromium; or why they cannot be had.
pub(crate) fn browser_parts() -> Result<(PathBuf, PathBuf), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.exists() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("tests/browser has no node_modules: run `npm ci` there".to_owned());
    }
    let built = std::process::Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(&dir)
        .status()
        .map_err(|error| format!("npm could not run: {error}"))?;
    if !built.success() {
        return Err(format!("`npm run build` in tests/browser failed: {built}"));
    }
    Ok((dir, chromium))
}

/// The script's next line, within WAIT; its `ERROR` lines fail the test.
pub(crate) async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    let line = tokio::time::timeout(WAIT * 3, lines.next_line())
        .await
        .expect("the browser script went quiet")
        .expect("reading the browser script")
        .expect("the browser script ended early");
    assert!(!line.starts_with("ERROR"), "browser script: {line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_js_and_the_launchdarkly_sdk_in_chromium_reach_both_destinations() {
    let (dir, chromium) = match browser_parts() {
        Ok(parts) => parts,
        Err(why) if std::env::var("LDBRIDGE_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("the browser test is required here: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED browser test: {why} (LDBRIDGE_REQUIRE_BROWSER=1 makes this a failure)"
            );
            return;
        }
    };
    let data = tempfile::tempdir().unwrap();
    let launchdarkly = Receiver::start().await.unwrap();
    let segment = Receiver::start().await.unwrap();
    segment.set_default(ldbridge::receiver::Reply::status(200).body(r#"{"success":true}"#));
    let config = test_config(data.path(), &launchdarkly.url(), &segment.url());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut app = daemon::start(config.clone(), listener).await.unwrap();

    let settings = json!({
        "ingest": format!("http://{address}"),
        "writeKey": WRITE_KEY,
        "clientSideId": CLIENT_SIDE_ID,
        "chromium": chromium,
    });
    let mut script = Command::new("node")
        .arg(dir.join("run.mjs"))
        .arg(settings.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = script.stdin.take().unwrap();
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await, "SENT");
    assert_eq!(next_line(&mut lines).await, "DOWN?");
    app.shutdown().await.unwrap();
    stdin.write_all(b"down\n").await.unwrap();
    assert_eq!(next_line(&mut lines).await, "UP?");
    let listener = TcpListener::bind(address).await.unwrap();
    app = daemon::start(config, listener).await.unwrap();
    stdin.write_all(b"up\n").await.unwrap();
    let result = next_line(&mut lines).await;
    let seen: Value = serde_json::from_str(result.strip_prefix("RESULT ").unwrap()).unwrap();
    let status = tokio::time::timeout(WAIT, script.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    // No CORS error, no 404 (analytics.js's /v1/m), no failure but lost
    // connections while ldbridge was down: refused, or reset where Chromium
    // reused a pooled connection to the stopped daemon.
    for message in seen["console"].as_array().unwrap() {
        let text = message.as_str().unwrap();
        for bad in ["CORS", "Access-Control", "404"] {
            assert!(!text.contains(bad), "browser console: {text}");
        }
    }
    let (down, up) = (seen["down"].as_u64().unwrap(), seen["up"].as_u64().unwrap());
    for failure in seen["failed"].as_array().unwrap() {
        let at = failure["at"].as_u64().unwrap();
        let error = failure["error"].as_str().unwrap_or_default();
        assert!(
            (down..=up).contains(&at) && error.starts_with("net::ERR_CONNECTION_"),
            "failed request: {failure}\n{seen:#}"
        );
    }
    let statuses: Vec<u64> = seen["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|response| response["status"].as_u64().unwrap())
        .collect();
    assert!(statuses.iter().all(|status| *status < 300), "{seen}");

    // Everything arrived and is delivered, mapped, on every route.
    let deadline = tokio::time::Instant::now() + WAIT;
    let wanted = ["Browser Checkout", "Beacon Left", "Sent While Down"];
    loop {
        for route in Route::ALL {
            app.dispatcher.drain(route).await.unwrap();
        }
        let custom: Vec<Value> = launchdarkly
            .requests()
            .iter()
            .filter(|request| request.header("x-launchdarkly-user-agent").is_none())
            .flat_map(|request| request.json().as_array().cloned().unwrap_or_default())
            .map(|event| event["key"].clone())
            .collect();
        let to_segment: Vec<Value> = segment
            .requests()
            .iter()
            .flat_map(|request| {
                request.json()["batch"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let relayed = launchdarkly.requests().iter().any(|request| {
            request
                .header("x-launchdarkly-user-agent")
                .is_some_and(|agent| agent.starts_with("JSClient/"))
        });
        // LaunchDarkly's Data Export names the track by the event's kind.
        let exported = |kind: &str, key: &str| {
            to_segment
                .iter()
                .find(|message| message["event"] == kind && message["properties"]["key"] == key)
                .cloned()
        };
        let purchase = exported("custom", "browser-purchase");
        let evaluation = exported("feature", "new-checkout");
        let segment_calls = wanted.iter().all(|name| custom.contains(&json!(name)));
        if let (true, Some(purchase), Some(evaluation), true) =
            (segment_calls, &purchase, &evaluation, relayed)
        {
            assert_eq!(purchase["userId"], "browser-user-1");
            assert_eq!(purchase["properties"]["metricValue"], 42.5);
            assert_eq!(evaluation["properties"]["value"], true);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything arrived: to LaunchDarkly {custom:?}, to Segment {to_segment:?}, relayed {relayed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await.unwrap();
}
