//! The receiver fault matrix: for every way LaunchDarkly's events service
//! can answer badly, the outcome architecture.md §4 gives, shown in the
//! attempt log, while the other route (LaunchDarkly → Segment) keeps
//! delivering; and the daemon's memory stays flat through hours' worth of
//! failures.

use std::time::Duration;

use ldbridge::domain::{BatchStatus, DeliveryStatus};
use ldbridge::{
    clock::{self, Clock},
    domain::Route,
    receiver::{Fault, Receiver, Reply},
    store::delivery_log,
};
use serde_json::json;

use crate::{
    helpers::{spawn_app_at, spawn_app_with, Dress, TestApp, WAIT},
    launchdarkly::{post_ld, server},
    process::{Daemon, EVERY_SECOND},
};

/// How long a send may take in these tests: "hang" and "1 byte/s" outlast it.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);

/// What the batch's first attempt must have produced.
enum Expect {
    /// Retried (with the same payload id) and then delivered; the attempt log
    /// shows `status` or an error containing `error`, and the retry came at
    /// least `min_wait` later.
    Retried {
        status: Option<u16>,
        error: Option<&'static str>,
        min_wait: Duration,
    },
    /// Marked failed after one attempt, with a reason containing `reason`.
    Failed { status: u16, reason: &'static str },
}

/// Delivery reads a manual clock here: a retry delay is waited for by
/// moving it, and the attempt log's times are the clock's.
async fn app() -> TestApp {
    spawn_app_at(Clock::manual(clock::now_ms()), |config| {
        config.dispatch.request_timeout = REQUEST_TIMEOUT;
        // A long last step, so Retry-After hints of a second are honoured
        // rather than clamped to the schedule's largest step.
        config.dispatch.retry_schedule = vec![Duration::from_millis(10), Duration::from_secs(3)];
    })
    .await
}

/// Makes the LaunchDarkly stand-in answer the first `segment-to-launchdarkly`
/// request with `fault` and every later one 202; relayed LaunchDarkly traffic
/// (`/bulk`) always gets 202.
fn fail_first(receiver: &Receiver, fault: Reply) {
    let used = std::sync::atomic::AtomicBool::new(false);
    receiver.respond_with(move |request| {
        let ours = request.path.starts_with("/events/bulk/");
        (ours && !used.swap(true, std::sync::atomic::Ordering::SeqCst)).then(|| fault.clone())
    });
}

/// Posts one Segment track and one LaunchDarkly custom event.
async fn post_both(app: &TestApp) {
    let track = json!({"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-1"});
    let reply = app
        .post("/v1/track", track.to_string().as_bytes(), Dress::Basic)
        .await;
    assert_eq!(reply.http_status(), Some(200));
    let custom = json!([{"kind": "custom", "key": "checkout", "creationDate": 1_700_000_000_000u64,
        "context": {"kind": "user", "key": "u1"}}]);
    let reply = post_ld(app, &server(), Some("p-1"), &custom.to_string()).await;
    assert_eq!(reply.http_status(), Some(202));
}

async fn run(fault: Reply, expect: Expect) {
    run_on(app().await, fault, expect).await;
}

async fn run_on(app: TestApp, fault: Reply, expect: Expect) {
    fail_first(&app.launchdarkly, fault);
    post_both(&app).await;
    let counts = app.dispatch_until(|counts| counts.settled()).await;

    // The other routes delivered regardless.
    assert_eq!(
        counts.on(Route::LaunchDarklyToSegment, DeliveryStatus::Delivered),
        1
    );
    assert_eq!(
        counts.on(Route::LaunchDarklyRelay, DeliveryStatus::Delivered),
        1
    );
    assert_eq!(app.segment.requests().len(), 1);

    let batch = app
        .batches()
        .await
        .into_iter()
        .find(|batch| batch.route == Route::SegmentToLaunchDarkly.as_str())
        .unwrap();
    let log = delivery_log::batch_attempts(&app.app.store, batch.id)
        .await
        .unwrap();
    let sent: Vec<_> = app
        .launchdarkly
        .requests()
        .into_iter()
        .filter(|request| request.path.starts_with("/events/bulk/"))
        .collect();
    match expect {
        Expect::Retried {
            status,
            error,
            min_wait,
        } => {
            assert_eq!(
                counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered),
                1
            );
            assert_eq!(batch.status, BatchStatus::Delivered);
            assert_eq!(log.len(), 2, "{log:?}");
            assert_eq!(log[0].outcome, "retrying");
            assert_eq!(log[0].http_status, status.map(i64::from), "{log:?}");
            if let Some(error) = error {
                let logged = log[0].error.as_deref().unwrap_or_default();
                assert!(logged.contains(error), "attempt error {logged:?}");
            }
            assert_eq!(
                (log[1].outcome.as_str(), log[1].http_status),
                ("delivered", Some(202))
            );
            // The manual clock stands still during an attempt: the retry's
            // start is its delay after the failed attempt.
            let waited = log[1].started_at - log[0].started_at;
            assert!(
                waited >= min_wait.as_millis() as i64,
                "retried {waited} ms after the failed attempt; wanted at least {min_wait:?}"
            );
            assert_eq!(sent.len(), 2);
            assert_eq!(
                sent[0].header("x-launchdarkly-payload-id"),
                sent[1].header("x-launchdarkly-payload-id"),
                "a retry keeps the payload id"
            );
            assert_eq!(sent[0].body, sent[1].body);
        }
        Expect::Failed { status, reason } => {
            assert_eq!(
                counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Failed),
                1
            );
            assert_eq!(batch.status, BatchStatus::Failed);
            assert_eq!(log.len(), 1, "{log:?}");
            assert_eq!(log[0].outcome, "failed");
            assert_eq!(log[0].http_status, Some(i64::from(status)));
            let why = batch.last_error.unwrap_or_default();
            assert!(why.contains(reason), "batch failed with {why:?}");
            assert_eq!(sent.len(), 1, "a failed batch is not retried on its own");
        }
    }
}

fn retried(status: u16) -> Expect {
    Expect::Retried {
        status: Some(status),
        error: None,
        min_wait: Duration::ZERO,
    }
}

fn failed(status: u16, reason: &'static str) -> Expect {
    Expect::Failed { status, reason }
}

#[tokio::test]
async fn a_500_is_retried() {
    run(Reply::status(500), retried(500)).await;
}

#[tokio::test]
async fn a_502_is_retried() {
    run(Reply::status(502), retried(502)).await;
}

#[tokio::test]
async fn a_503_is_retried() {
    run(Reply::status(503), retried(503)).await;
}

#[tokio::test]
async fn a_408_is_retried() {
    run(Reply::status(408), retried(408)).await;
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_on_the_schedule() {
    run(Reply::status(429), retried(429)).await;
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_waits_that_long() {
    let expect = Expect::Retried {
        status: Some(429),
        error: None,
        min_wait: Duration::from_millis(1000),
    };
    run(Reply::status(429).header("retry-after", "1"), expect).await;
}

#[tokio::test]
async fn a_503_with_retry_after_as_an_http_date_waits_until_then() {
    // HTTP dates have whole seconds: 3 s ahead on the delivery clock is
    // more than 2 s of waiting.
    let app = app().await;
    let at = std::time::UNIX_EPOCH + Duration::from_millis(app.clock.now_ms() as u64 + 3000);
    let date = httpdate(at);
    let expect = Expect::Retried {
        status: Some(503),
        error: None,
        min_wait: Duration::from_millis(2000),
    };
    run_on(app, Reply::status(503).header("retry-after", &date), expect).await;
}

#[tokio::test]
async fn a_receiver_that_hangs_past_the_timeout_is_retried() {
    let expect = Expect::Retried {
        status: None,
        error: Some("timed out"),
        min_wait: Duration::ZERO,
    };
    run(Reply::status(202).delay(Duration::from_secs(5)), expect).await;
}

#[tokio::test]
async fn a_receiver_that_cuts_the_connection_mid_response_is_retried() {
    let expect = Expect::Retried {
        status: None,
        error: Some("response body"),
        min_wait: Duration::ZERO,
    };
    let reply = Reply::status(202)
        .body(r#"{"accepted":true,"padding":"................"}"#)
        .fault(Fault::CutOff);
    run(reply, expect).await;
}

#[tokio::test]
async fn a_receiver_answering_one_byte_a_second_times_out_and_is_retried() {
    let expect = Expect::Retried {
        status: None,
        error: Some("timed out"),
        min_wait: Duration::ZERO,
    };
    let reply = Reply::status(202)
        .body(r#"{"accepted":true}"#)
        .fault(Fault::Trickle(Duration::from_secs(1)));
    run(reply, expect).await;
}

#[tokio::test]
async fn a_413_on_a_single_event_fails_it() {
    run(Reply::status(413), failed(413, "too large")).await;
}

#[tokio::test]
async fn a_400_on_a_single_event_fails_it() {
    run(Reply::status(400), failed(400, "rejected the event")).await;
}

#[tokio::test]
async fn a_401_fails_the_batch_naming_the_credential() {
    run(Reply::status(401), failed(401, "credential")).await;
}

#[tokio::test]
async fn a_403_fails_the_batch_naming_the_credential() {
    run(Reply::status(403), failed(403, "credential")).await;
}

#[tokio::test]
async fn a_404_fails_the_batch() {
    run(Reply::status(404), failed(404, "HTTP 404")).await;
}

#[tokio::test]
async fn a_flapping_receiver_gets_every_batch_delivered_once_with_stable_payload_ids() {
    let app = spawn_app_with(|config| {
        config.dispatch.request_timeout = REQUEST_TIMEOUT;
        config.dispatch.max_batch_events = 1;
    })
    .await;
    // Every other answer (on average) is a failure of some kind.
    app.launchdarkly.respond_with(|request| {
        if !request.path.starts_with("/events/bulk/") {
            return None;
        }
        let reply = match fastrand::u8(0..8) {
            0 => Reply::status(500),
            1 => Reply::status(503).header("retry-after", "0"),
            2 => Reply::status(429),
            3 => Reply::status(202).fault(Fault::CutOff),
            _ => Reply::status(202),
        };
        Some(reply)
    });
    let names: Vec<String> = (0..30).map(|n| format!("flap-{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    app.post_tracks(&names).await;
    let counts = app.dispatch_until(|counts| counts.settled()).await;
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered),
        30
    );

    // Every event arrived in a 202'd request; each event's requests all
    // carried one payload id.
    let mut payload_of = std::collections::HashMap::new();
    let mut delivered = std::collections::HashSet::new();
    let mut failures = 0;
    for batch in app.batches().await {
        for attempt in delivery_log::batch_attempts(&app.app.store, batch.id)
            .await
            .unwrap()
        {
            failures += usize::from(attempt.outcome == "retrying");
        }
    }
    for request in app.launchdarkly.requests() {
        let id = request
            .header("x-launchdarkly-payload-id")
            .unwrap()
            .to_owned();
        for event in request.json().as_array().unwrap() {
            let key = event["key"].as_str().unwrap().to_owned();
            let first = payload_of.entry(key.clone()).or_insert_with(|| id.clone());
            assert_eq!(*first, id, "{key} was sent under two payload ids");
            delivered.insert(key);
        }
    }
    assert_eq!(delivered.len(), 30);
    assert!(
        failures > 0,
        "the receiver never failed; the test proves nothing"
    );
}

/// The `Retry-After` HTTP-date form of `at` (IMF-fixdate).
fn httpdate(at: std::time::SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.format(&format).unwrap()
}

/// VmRSS of a process, in kB.
pub fn rss_kb(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_flat_while_every_attempt_fails_in_a_different_way() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await.unwrap();
    receiver.stop_recording();
    receiver.respond_with(|_| {
        Some(match fastrand::u8(0..5) {
            0 => Reply::status(500).body(&"x".repeat(4000)),
            1 => Reply::status(429).header("retry-after", "0"),
            2 => Reply::status(202).fault(Fault::CutOff),
            3 => Reply::status(202).delay(Duration::from_secs(5)),
            _ => Reply::status(502),
        })
    });
    // Small batches and a short timeout: many failed attempts per second.
    let config = crate::fixture::Fixture::new(dir.path(), &receiver.url(), &receiver.url())
        .set("dispatch", "schedule", &format!("{EVERY_SECOND:?}"))
        .set("dispatch", "request_timeout", r#""200ms""#)
        .set("dispatch", "max_batch_events", "10")
        .set("dispatch", "max_in_flight", "8")
        .write();
    let daemon = Daemon::start(&config);
    for round in 0..10 {
        crate::process::post_events(daemon.addr, &format!("m{round}"), 100).await;
    }
    let pid = daemon.pid();
    // Warm up: the first rounds of failures size the pools and caches.
    wait_for(|| receiver.request_count() >= 300).await;
    let warm = rss_kb(&pid);
    wait_for(|| receiver.request_count() >= 1500).await;
    let later = rss_kb(&pid);
    eprintln!("daemon RSS after 300 failed attempts: {warm} kB; after 1,500: {later} kB");
    assert!(
        later < warm + 10_000,
        "RSS grew from {warm} kB to {later} kB over 1,200 failed attempts"
    );
    daemon.kill();
}

async fn wait_for(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
