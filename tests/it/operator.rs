//! The operator surface: the CLI (log, show, explain, resend, stats,
//! purge) against the live database, the admin API, and /metrics.

use std::{collections::BTreeSet, time::Duration};

use ldbridge::domain::DeliveryStatus;
use ldbridge::{domain::Route, receiver::Reply};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Dress, TestApp, ADMIN_TOKEN, WRITE_KEY};

#[tokio::test]
async fn a_failed_batch_can_be_found_explained_and_resent_with_the_same_dedupe_ids() {
    let app =
        spawn_app_with(|config| config.dispatch.give_up_after = Duration::from_millis(150)).await;
    app.launchdarkly
        .set_default(Reply::status(500).body("LaunchDarkly is down"));
    app.post_tracks(&["alpha", "beta"]).await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Failed) == 2)
        .await;

    let log = app.cli(&["log", "--status", "failed", "--json"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    let failed = log.json();
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let id = failed[0]["id"].as_i64().unwrap();
    assert_eq!(failed[0]["status"], "failed");

    let show = app.cli(&["show", &id.to_string(), "--json"]).json();
    let attempts = show["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2);
    assert!(attempts
        .iter()
        .all(|a| a["http_status"] == 500 && a["trigger"] == "scheduled"));
    assert_eq!(attempts[0]["response"], "LaunchDarkly is down");
    assert_eq!(show["events"].as_array().unwrap().len(), 2);
    assert_eq!(show["events"][0]["dedupe_id"], "msg-alpha");
    let text = app.cli(&["show", &id.to_string()]).stdout;
    assert!(
        text.contains("LaunchDarkly is down")
            && text.lines().all(|line| line.chars().count() <= 100),
        "{text}"
    );

    let explain = app.cli(&["explain", "msg-beta", "--json"]).json();
    let route = &explain[0]["routes"][0];
    assert_eq!(route["status"], "failed");
    assert_eq!(route["batch_id"], id);
    let sentence = route["explanation"].as_str().unwrap();
    assert!(
        sentence.contains("gave up after") && sentence.contains("HTTP 500"),
        "{sentence}"
    );

    // Resend: the receiver is back; the same batch goes again.
    app.launchdarkly.set_default(Reply::status(202));
    let dry = app.cli(&["resend", &id.to_string(), "--dry-run"]);
    assert_eq!(dry.code, 0);
    assert!(dry.stdout.contains("would requeue 1"), "{}", dry.stdout);
    assert_eq!(
        app.cli(&["log", "--status", "failed", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A bare resend selects nothing: it must be told which (issue 14).
    let bare = app.cli(&["resend"]);
    assert_eq!(bare.code, 2, "{}", bare.stdout);
    assert!(bare.stderr.contains("--status failed"), "{}", bare.stderr);
    let resend = app.cli(&["resend", "--all-failed"]);
    assert_eq!(resend.code, 0, "{}", resend.stderr);
    assert!(resend.stdout.contains("requeued 1"), "{}", resend.stdout);
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 2)
        .await;

    let requests = app.launchdarkly.requests();
    let last = requests.last().unwrap();
    assert_eq!(
        last.header("x-launchdarkly-payload-id"),
        requests[0].header("x-launchdarkly-payload-id")
    );
    assert_eq!(last.body, requests[0].body, "the same events, not a copy");
    let show = app.cli(&["show", &id.to_string(), "--json"]).json();
    let last_attempt = show["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last_attempt["trigger"].as_str(),
            last_attempt["outcome"].as_str()
        ),
        (Some("manual"), Some("delivered"))
    );
    assert_eq!(app.events_stored().await, 2, "no second copy of an event");

    // A delivered batch needs --force; a filter that matches nothing exits 3.
    let refused = app.cli(&["resend", &id.to_string()]);
    assert!(
        refused.stdout.contains("already delivered"),
        "{}",
        refused.stdout
    );
    assert_eq!(app.cli(&["resend", &id.to_string(), "--force"]).code, 0);
    assert_eq!(
        app.cli(&["resend", "--status", "failed", "--route", "segment-relay"])
            .code,
        3
    );
    assert_eq!(app.cli(&["show", "999999"]).code, 3);
    assert_eq!(app.cli(&["explain", "no-such-message"]).code, 3);
}

/// Seeds `count` batches straight into the database: routes, sources and
/// statuses cycle, creation times one second apart from `base`.
async fn seed_batches(app: &TestApp, count: i64, base: i64) {
    let rows: Vec<String> = (0..count)
        .map(|n| {
            format!(
                "('{}', '{}', '{}', 'p-{n}', 1, {at}, {at})",
                Route::ALL[(n % 4) as usize].as_str(),
                ["a", "b", "c"][(n % 3) as usize],
                ["delivered", "failed", "retrying", "pending", "split"][(n % 5) as usize],
                at = base + n * 1000,
            )
        })
        .collect();
    app.execute(&format!(
        "INSERT INTO batches (route, source, status, payload_id, event_count, created_at, updated_at) \
         VALUES {}",
        rows.join(", ")
    ))
    .await;
}

#[tokio::test]
async fn log_filters_select_exactly_the_right_batches_on_thousands_of_batches() {
    let app = spawn_app().await;
    let base = 1_700_000_000_000;
    seed_batches(&app, 3000, base).await;
    let ids = |args: &[&str]| -> BTreeSet<i64> {
        let mut all = vec!["log", "--json", "--limit", "10000"];
        all.extend_from_slice(args);
        let run = app.cli(&all);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_i64().unwrap())
            .collect()
    };
    // Batch n has id n + 1.
    let expect = |keep: &dyn Fn(i64) -> bool| -> BTreeSet<i64> {
        (0..3000).filter(|n| keep(*n)).map(|n| n + 1).collect()
    };
    assert_eq!(ids(&["--route", "segment-relay"]), expect(&|n| n % 4 == 3));
    assert_eq!(ids(&["--source", "b"]), expect(&|n| n % 3 == 1));
    assert_eq!(
        ids(&["--status", "failed", "--route", "launchdarkly-to-segment"]),
        expect(&|n| n % 5 == 1 && n % 4 == 1)
    );
    let since = ldbridge::clock::format_ms(base + 1000 * 1000);
    let until = ldbridge::clock::format_ms(base + 1500 * 1000);
    assert_eq!(
        ids(&["--since", &since, "--until", &until]),
        expect(&|n| (1000..1500).contains(&n))
    );
    assert_eq!(
        ids(&["--since", &since, "--until", &until, "--source", "c", "--status", "retrying"]),
        expect(&|n| (1000..1500).contains(&n) && n % 3 == 2 && n % 5 == 2)
    );
    // Default limit 50, newest first, and keyset paging with --before.
    let page = app.cli(&["log", "--json"]).json();
    let first: Vec<i64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(first, (2951..=3000).rev().collect::<Vec<_>>());
    let next = app
        .cli(&["log", "--json", "--before", "2951", "--limit", "3"])
        .json();
    assert_eq!(
        next.as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![2950, 2949, 2948]
    );
    // The table fits 100 columns.
    assert!(app
        .cli(&["log"])
        .stdout
        .lines()
        .all(|line| line.chars().count() <= 100));
}

#[tokio::test]
async fn retention_purges_delivered_and_skipped_data_and_keeps_failed_and_pending() {
    let app = spawn_app().await;
    crate::helpers::refuse_event(&app.launchdarkly, "fail-me", 401);
    app.post_tracks(&["ok-1", "ok-2"]).await;
    let page = json!({"type": "page", "userId": "u", "name": "Home", "writeKey": WRITE_KEY});
    app.post("/v1/page", page.to_string().as_bytes(), Dress::BodyKey)
        .await;
    app.dispatch_until(|counts| counts.settled()).await;
    app.post_tracks(&["fail-me"]).await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Failed) == 1)
        .await;
    app.post_tracks(&["still-pending"]).await;

    // Everything is now "ten days old".
    let ten_days = 10 * 86_400_000_i64;
    app.execute(&format!(
        "UPDATE events SET received_at = received_at - {ten_days}; \
         UPDATE batches SET created_at = created_at - {ten_days}, updated_at = updated_at - {ten_days}; \
         UPDATE attempts SET started_at = started_at - {ten_days}"
    ))
    .await;
    let purge = app.cli(&["purge", "--older-than", "7d", "--json"]);
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    let purged = purge.json();
    assert_eq!(
        (purged["events"].as_u64(), purged["batches"].as_u64()),
        (Some(3), Some(1))
    );
    let left: BTreeSet<String> =
        crate::helpers::query_strings(app.dir(), "SELECT dedupe_key FROM events")
            .await
            .into_iter()
            .collect();
    assert_eq!(
        left,
        ["msg-fail-me", "msg-still-pending"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
    let statuses = crate::helpers::query_strings(app.dir(), "SELECT status FROM batches").await;
    assert_eq!(statuses, vec!["failed"]);
    let orphans = crate::helpers::query_strings(
        app.dir(),
        "SELECT CAST(batch_id AS TEXT) FROM attempts WHERE batch_id NOT IN (SELECT id FROM batches)",
    )
    .await;
    assert_eq!(orphans, Vec::<String>::new());
    // Nothing younger than the cutoff goes.
    assert_eq!(
        app.cli(&["purge", "--older-than", "30d", "--json"]).json()["events"],
        0
    );
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_returns_the_same_json_as_the_cli() {
    let app =
        spawn_app_with(|config| config.dispatch.give_up_after = Duration::from_millis(100)).await;
    app.launchdarkly.set_default(Reply::status(403));
    app.post_tracks(&["one"]).await;
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Failed) == 1)
        .await;

    for token in [None, Some("wrong-token"), Some("")] {
        let (status, _) = app.admin("GET", "/api/batches", token, "").await;
        assert_eq!(status, 401, "{token:?}");
    }
    assert_eq!(app.admin("GET", "/metrics", None, "").await.0, 401);
    assert_eq!(
        app.admin("GET", "/healthz", None, "").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(app.admin("GET", "/readyz", None, "").await.0, 200);

    let (status, batches) = app.admin_json("GET", "/api/batches?status=failed").await;
    assert_eq!(status, 200);
    assert_eq!(
        batches,
        app.cli(&["log", "--status", "failed", "--json"]).json()
    );
    let id = batches[0]["id"].as_i64().unwrap();
    assert_eq!(
        app.admin_json("GET", &format!("/api/batches/{id}")).await.1,
        app.cli(&["show", &id.to_string(), "--json"]).json()
    );
    assert_eq!(
        app.admin_json("GET", "/api/events/msg-one").await.1,
        app.cli(&["explain", "msg-one", "--json"]).json()
    );
    let (_, stats) = app.admin_json("GET", "/api/stats").await;
    let cli_stats = app.cli(&["stats", "--json"]).json();
    assert_eq!(stats["deliveries"], cli_stats["deliveries"]);
    assert_eq!(stats["batches"], cli_stats["batches"]);
    assert_eq!(stats["deliveries"]["segment-to-launchdarkly"]["failed"], 1);
    assert_eq!(app.admin_json("GET", "/api/batches/424242").await.0, 404);

    app.launchdarkly.set_default(Reply::status(202));
    let (status, report) = app
        .admin_json("POST", &format!("/api/batches/{id}/resend"))
        .await;
    assert_eq!((status, report["requeued"].clone()), (200, json!([id])));
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 1)
        .await;
    let (status, _) = app
        .admin(
            "POST",
            "/api/resend",
            Some(ADMIN_TOKEN),
            r#"{"status": "failed"}"#,
        )
        .await;
    assert_eq!(status, 404, "nothing failed any more");
    let (status, _) = app
        .admin("POST", "/api/resend", Some(ADMIN_TOKEN), r#"{"bogus": 1}"#)
        .await;
    assert_eq!(status, 400);
}

/// Every sample line of the exposition: `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line: {line}"));
            (
                series.to_owned(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value: {line}")),
            )
        })
        .collect()
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(name, _)| name == series)
        .map_or(0.0, |(_, v)| *v)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_by_the_traffic_sent() {
    let app = spawn_app().await;
    let scrape = || async {
        let (status, text) = app.admin("GET", "/metrics", Some(ADMIN_TOKEN), "").await;
        assert_eq!(status, 200);
        assert!(text.trim_end().ends_with("# EOF"));
        samples(&text)
    };
    let before = scrape().await;
    app.post_tracks(&["m1", "m2", "m3"]).await;
    app.post_tracks(&["m4", "m5"]).await;
    let bad =
        json!({"batch": [{"type": "track", "userId": "u", "event": "x"}], "writeKey": "nope"});
    assert_eq!(
        app.post("/v1/batch", bad.to_string().as_bytes(), Dress::BodyKey)
            .await
            .http_status(),
        Some(401)
    );
    let waiting = scrape().await;
    assert_eq!(
        sample(
            &waiting,
            r#"ldbridge_queue_depth{route="segment-to-launchdarkly",status="pending"}"#
        ),
        5.0
    );
    assert!(
        sample(
            &waiting,
            r#"ldbridge_oldest_undelivered_age_seconds{route="segment-to-launchdarkly"}"#
        ) >= 0.0
    );
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 5)
        .await;
    let after = scrape().await;
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved(r#"ldbridge_ingest_requests_total{protocol="segment",source="web",status="200"}"#),
        2.0
    );
    assert_eq!(
        moved(
            r#"ldbridge_ingest_requests_total{protocol="segment",source="unknown",status="401"}"#
        ),
        1.0
    );
    assert_eq!(
        moved(r#"ldbridge_ingest_events_total{protocol="segment",source="web"}"#),
        5.0
    );
    assert_eq!(
        moved(r#"ldbridge_deliveries_total{route="segment-to-launchdarkly",outcome="delivered"}"#),
        5.0
    );
    assert_eq!(
        moved(r#"ldbridge_attempts_total{route="segment-to-launchdarkly",outcome="delivered"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"ldbridge_batch_events_sum{route="segment-to-launchdarkly"}"#),
        5.0
    );
    assert!(moved("ldbridge_writer_commit_events_sum") >= 5.0);
    assert_eq!(
        sample(
            &after,
            &format!(
                "ldbridge_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            r#"ldbridge_queue_depth{route="segment-to-launchdarkly",status="pending"}"#
        ),
        0.0
    );
}

/// The flows of every minute, summed: (route or "ingest", what, reason) → n.
async fn flow_sums(app: &TestApp) -> std::collections::BTreeMap<(String, String, String), i64> {
    let flows = ldbridge::store::counts::flows(&app.app.store, 0, i64::MAX / 2)
        .await
        .unwrap();
    let mut sums = std::collections::BTreeMap::new();
    for flow in flows {
        let route = flow.route.unwrap_or_else(|| "ingest".to_owned());
        *sums
            .entry((route, flow.flow.as_str().to_owned(), flow.reason))
            .or_insert(0) += flow.n;
    }
    sums
}

#[tokio::test]
async fn the_kept_counts_follow_every_step_received_refused_skipped_retried_failed_resent_delivered_purged(
) {
    let app = spawn_app().await;
    let route = Route::SegmentToLaunchDarkly.as_str().to_owned();
    let key = |what: &str, reason: &str| (route.clone(), what.to_owned(), reason.to_owned());
    // Two tracks, a page (skipped), and a track without a name (refused).
    let body = json!({"writeKey": WRITE_KEY, "batch": [
        {"type": "track", "event": "one", "userId": "u", "messageId": "k-1"},
        {"type": "track", "event": "two", "userId": "u", "messageId": "k-2"},
        {"type": "page", "name": "Home", "userId": "u", "messageId": "k-3"},
        {"type": "track", "userId": "u", "messageId": "k-4"},
    ]});
    let reply = app
        .post("/v1/batch", body.to_string().as_bytes(), Dress::BodyKey)
        .await;
    assert_eq!(reply.http_status(), Some(200));
    // First attempt 500 (retried), second 401 (failed).
    app.launchdarkly.push(Reply::status(500));
    app.launchdarkly.push(Reply::status(401));
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Failed) == 2)
        .await;
    let sums = flow_sums(&app).await;
    assert_eq!(sums.get(&key("received", "")), Some(&3));
    assert_eq!(sums.get(&key("retried", "")), Some(&2));
    let failed: i64 = sums
        .iter()
        .filter(|((r, what, _), _)| *r == route && what == "failed")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 2);
    let skipped: Vec<_> = sums
        .iter()
        .filter(|((r, what, _), _)| *r == route && what == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0]
        .0
         .2
        .starts_with("page calls have no LaunchDarkly equivalent"));
    assert_eq!(*skipped[0].1, 1);
    let refused: i64 = sums
        .iter()
        .filter(|((r, what, _), _)| r == "ingest" && what == "refused")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, 1);

    // A resend, then delivered.
    let resend = app.cli(&["resend", "--all-failed", "--yes"]);
    assert_eq!(resend.code, 0, "{}", resend.stderr);
    app.dispatch_until(|counts| counts.get(DeliveryStatus::Delivered) == 2)
        .await;
    let sums = flow_sums(&app).await;
    assert_eq!(sums.get(&key("resent", "")), Some(&2));
    assert_eq!(sums.get(&key("delivered", "")), Some(&2));
    // `counts()` checks the kept totals against the rows at every step,
    // and after a purge too.
    let counts = app.counts().await;
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered),
        2
    );
    let purge = app.cli(&["purge", "--older-than", "0s"]);
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    let counts = app.counts().await;
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Delivered),
        0
    );
    assert_eq!(
        counts.on(Route::SegmentToLaunchDarkly, DeliveryStatus::Skipped),
        0
    );
    // Retention forgets the minutes before its cutoff (the current one is
    // younger than `--older-than 0s`, and its hour stays whole): a cutoff
    // two hours ahead takes all.
    assert!(!flow_sums(&app).await.is_empty());
    let ahead = ldbridge::clock::now_ms() + 2 * 3_600_000;
    ldbridge::ops::purge(&app.app.store, ahead).await.unwrap();
    assert!(
        flow_sums(&app).await.is_empty(),
        "{:?}",
        flow_sums(&app).await
    );
    app.counts().await;
}
