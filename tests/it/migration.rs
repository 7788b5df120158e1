//! Upgrading a database written before migration 0004 (compact rows): every
//! stored event reads back as it was, keeps its dedupe key and its delivery
//! states, and a payload stored before the upgrade is still recognised when
//! an SDK retries it afterwards.

use ldbridge::domain::{
    accepted::{IngestBatch, NewEvent},
    DeliveryStatus,
};
use ldbridge::domain::{Protocol, Route};
use ldbridge::store::{batches, delivery_log, maintenance, writer::Writer, Store};
use sqlx::Connection;

const LD_META: &str = r#"{"endpoint":"server","schema":"4"}"#;

/// A database at schema 3 holding Segment and LaunchDarkly events in every
/// delivery state, written with the SQL of that schema.
async fn schema_3_database(path: &std::path::Path) {
    let migrations = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join("sqlite");
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.as_str() < "0004" {
            std::fs::copy(entry.path(), migrations.path().join(&name)).unwrap();
        }
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(migrations.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    for sql in [
        "INSERT INTO batches (id, route, source, status, payload_id, event_count, created_at, updated_at) \
         VALUES (1, 'segment-to-launchdarkly', 'web', 'delivered', 'p-1', 1, 1000, 1000)",
        "INSERT INTO events (id, source, protocol, dedupe_key, kind, received_at, meta, body) VALUES \
         (1, 'web', 'segment', 'msg-a', 'track', 1000, NULL, '{\"type\":\"track\",\"event\":\"A\",\"messageId\":\"msg-a\"}'), \
         (2, 'web', 'segment', 'msg-b', 'track', 1001, NULL, '{\"type\":\"track\",\"event\":\"B\",\"messageId\":\"msg-b\"}'), \
         (3, 'sdk', 'launchdarkly', 'pay-1:0', 'custom', 1002, '{\"endpoint\":\"server\",\"schema\":\"4\"}', '{\"kind\":\"custom\",\"key\":\"k0\"}'), \
         (4, 'sdk', 'launchdarkly', 'pay-1:1', 'custom', 1002, '{\"endpoint\":\"server\",\"schema\":\"4\"}', '{\"kind\":\"custom\",\"key\":\"k1\"}')",
        "INSERT INTO deliveries (event_id, route, status, batch_id, reason) VALUES \
         (1, 'segment-to-launchdarkly', 'delivered', 1, NULL), \
         (2, 'segment-to-launchdarkly', 'pending', NULL, NULL), \
         (3, 'launchdarkly-relay', 'pending', NULL, NULL), \
         (3, 'launchdarkly-to-segment', 'skipped', NULL, 'not mapped'), \
         (4, 'launchdarkly-relay', 'pending', NULL, NULL), \
         (4, 'launchdarkly-to-segment', 'pending', NULL, NULL)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
}

async fn connect(path: &std::path::Path) -> sqlx::SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap()
}

fn ld_batch(payload_id: &str, keys: &[&str]) -> IngestBatch {
    IngestBatch {
        source: "sdk".to_owned(),
        protocol: Protocol::LaunchDarkly,
        received_at: 5000,
        meta: Some(LD_META.to_owned()),
        payload_id: Some(payload_id.to_owned()),
        routes: vec![Route::LaunchDarklyRelay],
        events: keys
            .iter()
            .enumerate()
            .map(|(index, key)| NewEvent {
                dedupe_key: format!("{payload_id}:{index}"),
                kind: "custom".to_owned(),
                body: format!(r#"{{"kind":"custom","key":"{key}"}}"#),
            })
            .collect(),
        refusals: Vec::new(),
    }
}

fn segment_batch(message_ids: &[&str]) -> IngestBatch {
    IngestBatch {
        source: "web".to_owned(),
        protocol: Protocol::Segment,
        received_at: 5000,
        meta: None,
        payload_id: None,
        routes: vec![Route::SegmentToLaunchDarkly],
        events: message_ids
            .iter()
            .map(|id| NewEvent {
                dedupe_key: (*id).to_owned(),
                kind: "track".to_owned(),
                body: r#"{"event":"C"}"#.to_owned(),
            })
            .collect(),
        refusals: Vec::new(),
    }
}

#[tokio::test]
async fn a_database_from_before_compact_rows_upgrades_with_every_event_readable_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ldbridge.db");
    schema_3_database(&path).await;
    let store = Store::open(&path, &Default::default()).await.unwrap();

    // Delivery states survive, under their route names.
    let counts = delivery_log::delivery_counts(&store).await.unwrap();
    let expected = [
        ("launchdarkly-relay", "pending", 2),
        ("launchdarkly-to-segment", "pending", 1),
        ("launchdarkly-to-segment", "skipped", 1),
        ("segment-to-launchdarkly", "delivered", 1),
        ("segment-to-launchdarkly", "pending", 1),
    ];
    let expected: Vec<(String, DeliveryStatus, i64)> = expected
        .iter()
        .map(|(route, status, n)| (route.to_string(), status.parse().unwrap(), *n))
        .collect();
    assert_eq!(counts, expected);

    // Pending events read back with their keys, metadata and bodies.
    let pending = batches::pending_events(&store, Route::LaunchDarklyRelay, 10)
        .await
        .unwrap();
    let read: Vec<(i64, &str, Option<&str>, &str)> = pending
        .iter()
        .map(|e| {
            (
                e.event_id,
                e.dedupe_key.as_str(),
                e.meta.as_deref(),
                e.body.as_str(),
            )
        })
        .collect();
    assert_eq!(
        read,
        [
            (
                3,
                "pay-1:0",
                Some(LD_META),
                r#"{"kind":"custom","key":"k0"}"#
            ),
            (
                4,
                "pay-1:1",
                Some(LD_META),
                r#"{"kind":"custom","key":"k1"}"#
            ),
        ]
    );
    let segment = batches::pending_events(&store, Route::SegmentToLaunchDarkly, 10)
        .await
        .unwrap();
    assert_eq!(segment.len(), 1);
    assert_eq!(
        (segment[0].dedupe_key.as_str(), segment[0].meta.as_deref()),
        ("msg-b", None)
    );

    // `explain` finds old events by messageId and by payload id.
    let keys = |events: Vec<delivery_log::EventSummary>| -> Vec<String> {
        events.into_iter().map(|e| e.dedupe_key).collect()
    };
    assert_eq!(
        keys(delivery_log::find_events(&store, "msg-a").await.unwrap()),
        ["msg-a"]
    );
    assert_eq!(
        keys(delivery_log::find_events(&store, "pay-1").await.unwrap()),
        ["pay-1:0", "pay-1:1"]
    );

    // An SDK retrying the old payload after the upgrade: a duplicate. A new
    // payload is stored, and its keys are derived the same way.
    let (writer, task) = Writer::start(&store, 16, |_| {}).await.unwrap();
    let retried = writer
        .submit(ld_batch("pay-1", &["k0", "k1"]))
        .await
        .unwrap();
    assert_eq!((retried.stored, retried.duplicates), (0, 2));
    let new = writer
        .submit(ld_batch("pay-2", &["n0", "n1", "n2"]))
        .await
        .unwrap();
    assert_eq!((new.stored, new.duplicates), (3, 0));
    let again = writer
        .submit(ld_batch("pay-2", &["n0", "n1", "n2"]))
        .await
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 3));
    // A Segment client retrying a message stored before the upgrade.
    let retried = writer
        .submit(segment_batch(&["msg-a", "msg-c"]))
        .await
        .unwrap();
    assert_eq!((retried.stored, retried.duplicates), (1, 1));
    drop(writer);
    task.await.unwrap();
    assert_eq!(
        keys(delivery_log::find_events(&store, "pay-2").await.unwrap()),
        ["pay-2:0", "pay-2:1", "pay-2:2"]
    );
    let one = delivery_log::find_events(&store, "pay-2:1").await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].dedupe_key, "pay-2:1");
    let pending = batches::pending_events(&store, Route::LaunchDarklyRelay, 10)
        .await
        .unwrap();
    let keys_and_meta: Vec<(&str, Option<&str>)> = pending
        .iter()
        .map(|e| (e.dedupe_key.as_str(), e.meta.as_deref()))
        .collect();
    assert_eq!(
        keys_and_meta,
        [
            ("pay-1:0", Some(LD_META)),
            ("pay-1:1", Some(LD_META)),
            ("pay-2:0", Some(LD_META)),
            ("pay-2:1", Some(LD_META)),
            ("pay-2:2", Some(LD_META)),
        ]
    );

    // The counts migration 0009 backfilled, then kept through the new
    // events, equal the rows.
    let (kept, scanned) = delivery_log::delivery_counts_checked(&store).await.unwrap();
    assert_eq!(kept, scanned);

    // Once everything is settled and old, retention removes the events and
    // the requests rows that named them. (Settled here behind the store's
    // back, so the kept counts are not checked after.)
    let mut conn = connect(&path).await;
    sqlx::query("UPDATE deliveries SET status = 'delivered'")
        .execute(&mut conn)
        .await
        .unwrap();
    let purged = maintenance::purge(&store, i64::MAX, 2).await.unwrap();
    assert_eq!(purged.events, 8);
    let left: (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM requests)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(left, (0, 0));
    // The dedupe key file keeps only its watermark: no entry of a purged event.
    let mut keys = connect(&dir.path().join("ldbridge.db-dedupe")).await;
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dedupe")
        .fetch_one(&mut keys)
        .await
        .unwrap();
    assert_eq!(entries, 1);
    keys.close().await.unwrap();
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    conn.close().await.unwrap();
    store.close().await;
    assert_eq!(crate::helpers::integrity_check(&path).await, "ok");
}

#[tokio::test]
async fn every_route_code_names_its_route_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ldbridge.db");
    let _store = Store::open(&path, &Default::default()).await.unwrap();
    let mut conn = connect(&path).await;
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM routes ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let mut expected: Vec<(i64, String)> = Route::ALL
        .iter()
        .map(|route| (route.code(), route.as_str().to_owned()))
        .collect();
    expected.sort();
    assert_eq!(rows, expected);
}
