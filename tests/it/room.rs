//! A full disk is a normal state: on a small real file system (a tmpfs the
//! test mounts; it needs root, as CI has), ingest fills it until it answers
//! 503 "disk full", delivery goes on while it stays full, and once room is
//! back ingest resumes, all without a restart; every acknowledged event is
//! delivered exactly once per route.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ldbridge::domain::DeliveryStatus;
use ldbridge::domain::Route;
use serde_json::{json, Value};

use crate::helpers::{integrity_check, spawn_app_with, Dress, TestApp, WAIT, WRITE_KEY};

/// A tmpfs of `megabytes` mounted on a temporary directory, unmounted when
/// dropped.
struct TmpFs {
    dir: tempfile::TempDir,
}

impl TmpFs {
    fn mount(megabytes: u64) -> Result<TmpFs, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map_err(|error| format!("mount: {error}"))?;
        if !status.success() {
            return Err(format!("mounting a tmpfs failed ({status}): needs root"));
        }
        Ok(TmpFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Posts one batch of 100 ~600-byte tracks named `<prefix>-<n>`; returns
/// the status and the answer's `code`.
async fn post_batch(app: &TestApp, prefix: &str) -> (u16, String) {
    let batch: Vec<Value> = (0..100)
        .map(|n| {
            let name = format!("{prefix}-{n}");
            json!({"type": "track", "userId": "u1", "event": name, "messageId": name,
                   "properties": {"pad": "p".repeat(500)}})
        })
        .collect();
    let body = json!({"batch": batch, "writeKey": WRITE_KEY}).to_string();
    let reply = app.post("/v1/batch", body.as_bytes(), Dress::BodyKey).await;
    let answer: Value =
        serde_json::from_str(reply.excerpt.as_deref().unwrap_or_default()).unwrap_or(Value::Null);
    (
        reply.http_status().unwrap_or(0),
        answer["code"].as_str().unwrap_or_default().to_owned(),
    )
}

/// How many times each name arrived, by route.
fn arrivals(app: &TestApp) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut to_launchdarkly = HashMap::new();
    for event in app.received_events() {
        *to_launchdarkly
            .entry(event["key"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut relayed = HashMap::new();
    for request in app.segment.requests() {
        for message in request.json()["batch"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            *relayed
                .entry(message["messageId"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    (to_launchdarkly, relayed)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_full_file_system_delivery_goes_on_and_ingest_resumes_when_room_is_back() {
    if crate::helpers::on_postgres(
        "on_a_full_file_system_delivery_goes_on_and_ingest_resumes_when_room_is_back",
    ) {
        return;
    }
    let fs = match TmpFs::mount(64) {
        Ok(fs) => fs,
        Err(why) => return crate::helpers::skip(&why),
    };
    // Room the test gives back later.
    let filler: PathBuf = fs.path().join("filler");
    std::fs::write(&filler, vec![1u8; 12 << 20]).unwrap();
    let database = fs.path().join("ldbridge.db");
    let app = spawn_app_with(|config| {
        config.store.path = database.clone();
        config.store.min_free_bytes = 8 << 20;
        config.store.reserve_bytes = 4 << 20;
        config.segment_sources[0].relay_to_segment = true;
    })
    .await;
    assert!(fs.path().join("ldbridge.db.reserve").exists());

    // Fill it through ingest until it refuses.
    let mut acknowledged = Vec::new();
    for round in 0.. {
        let prefix = format!("fill{round}");
        match post_batch(&app, &prefix).await {
            (200, _) => acknowledged.push(prefix),
            (503, code) => {
                assert_eq!(code, "disk_full");
                break;
            }
            (other, code) => panic!("answered {other} {code} while filling"),
        }
        assert!(round < 5_000, "the disk never filled");
    }
    let stored = acknowledged.len() as i64 * 100;
    assert_eq!(
        app.events_stored().await,
        stored,
        "a refused batch stored nothing"
    );
    let started = std::time::Instant::now();
    let (status, text) = app.admin("GET", "/readyz", None, "").await;
    assert_eq!(status, 503);
    assert!(text.contains("disk full"), "{text}");
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "ldbridge_ingest_refused_for_room"), 1.0);
    assert!(metric(&metrics, "ldbridge_store_free_bytes") < (8 << 20) as f64);

    // Delivery goes on while the disk stays full: every stored event, both routes.
    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == stored
            && counts.on(Route::SegmentRelay, DeliveryStatus::Delivered) == stored
    })
    .await;
    assert_eq!(post_batch(&app, "still-full").await.0, 503);
    eprintln!(
        "room: {stored} events filled the file system; all delivered on both routes in {:?} while full",
        started.elapsed()
    );

    // Room comes back: ingest resumes in the same process.
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    for round in 0.. {
        let prefix = format!("after{round}");
        match post_batch(&app, &prefix).await.0 {
            200 => {
                acknowledged.push(prefix);
                break;
            }
            503 => assert!(
                tokio::time::Instant::now() < deadline,
                "ingest never resumed"
            ),
            other => panic!("answered {other} while room came back"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = acknowledged.len() as i64 * 100;
    app.dispatch_until(|counts| {
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered) == stored
            && counts.on(Route::SegmentRelay, DeliveryStatus::Delivered) == stored
    })
    .await;
    let (to_launchdarkly, relayed) = arrivals(&app);
    for prefix in &acknowledged {
        for n in 0..100 {
            let name = format!("{prefix}-{n}");
            assert_eq!(
                to_launchdarkly.get(&name),
                Some(&1),
                "{name} to LaunchDarkly"
            );
            assert_eq!(relayed.get(&name), Some(&1), "{name} relayed");
        }
    }
    assert_eq!(to_launchdarkly.len() as i64, stored);
    let (status, text) = app.admin("GET", "/readyz", None, "").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(integrity_check(&database).await, "ok");
}
