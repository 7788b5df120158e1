//! Hostile clients: a corpus of malformed bodies against both ingest
//! parsers, oversized and deeply nested bodies, slow-loris headers and
//! bodies, and a flood of idle connections. Each gets a clear 4xx or a closed
//! connection; the daemon stays up and stores nothing half-done.

use std::time::Duration;

use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    helpers::{basic, spawn_app_with, Dress, WAIT, WRITE_KEY},
    launchdarkly::{post_ld, server},
    process::Daemon,
};

/// The Segment and LaunchDarkly bodies no library should send, each with the
/// endpoint it is thrown at.
fn corpus() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let track = |userid: serde_json::Value| {
        json!({"type": "track", "userId": userid, "event": "E", "writeKey": WRITE_KEY})
            .to_string()
            .into_bytes()
    };
    let nested = |depth: usize| {
        let mut text = "[".repeat(depth);
        text.push_str(&"]".repeat(depth));
        text
    };
    let mut cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "truncated JSON",
            "/v1/track",
            br#"{"type":"track","userId":"u","ev"#.to_vec(),
        ),
        (
            "truncated batch",
            "/v1/batch",
            br#"{"batch":[{"type":"track""#.to_vec(),
        ),
        (
            "invalid UTF-8",
            "/v1/track",
            b"{\"type\":\"track\",\"userId\":\"\xff\xfe\",\"event\":\"E\"}".to_vec(),
        ),
        ("NUL bytes", "/v1/track", b"{\"type\":\"track\"\0}".to_vec()),
        ("empty body", "/v1/batch", Vec::new()),
        ("just whitespace", "/v1/batch", b"   \n ".to_vec()),
        ("JSON null", "/v1/batch", b"null".to_vec()),
        ("a bare string", "/v1/track", b"\"track\"".to_vec()),
        (
            "huge number",
            "/v1/track",
            br#"{"type":"track","userId":"u","event":"E","timestamp":1e999}"#.to_vec(),
        ),
        (
            "NaN-like timestamp",
            "/v1/track",
            br#"{"type":"track","userId":"u","event":"E","timestamp":"NaN"}"#.to_vec(),
        ),
        (
            "NaN literal",
            "/v1/track",
            br#"{"type":"track","userId":"u","event":"E","properties":{"v":NaN}}"#.to_vec(),
        ),
        ("boolean userId", "/v1/track", track(json!(true))),
        ("array userId", "/v1/track", track(json!(["u"]))),
        (
            "object batch items",
            "/v1/batch",
            json!({"batch": {"0": {}}, "writeKey": WRITE_KEY})
                .to_string()
                .into_bytes(),
        ),
        (
            "deeply nested Segment body",
            "/v1/batch",
            nested(100_000).into_bytes(),
        ),
        (
            "deeply nested LaunchDarkly body",
            "/bulk",
            nested(100_000).into_bytes(),
        ),
        (
            "LaunchDarkly object, not array",
            "/bulk",
            br#"{"kind":"custom"}"#.to_vec(),
        ),
        (
            "LaunchDarkly truncated",
            "/bulk",
            br#"[{"kind":"custom","key":"#.to_vec(),
        ),
        (
            "LaunchDarkly invalid UTF-8",
            "/bulk",
            b"[{\"kind\":\"\xc3\x28\"}]".to_vec(),
        ),
        (
            "LaunchDarkly array of numbers",
            "/bulk",
            b"[1,2,3]".to_vec(),
        ),
        (
            "LaunchDarkly huge number",
            "/bulk",
            br#"[{"kind":"custom","key":"k","creationDate":1e400}]"#.to_vec(),
        ),
    ];
    // Nested just past serde_json's limit inside an otherwise valid message.
    let mut deep = String::from(r#"{"type":"track","userId":"u","event":"E","properties":{"p":"#);
    deep.push_str(&nested(200));
    deep.push_str("}}");
    cases.push(("properties nested 200 deep", "/v1/track", deep.into_bytes()));
    cases
}

#[tokio::test]
async fn every_hostile_body_gets_a_clear_4xx_and_stores_nothing() {
    let app = spawn_app_with(|_| {}).await;
    for (name, path, body) in corpus() {
        let key = if path == "/bulk" {
            HeaderValue::from_static(ldbridge::demo::SDK_KEY)
        } else {
            HeaderValue::from_str(&basic(WRITE_KEY)).unwrap()
        };
        let headers = vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (AUTHORIZATION, key),
        ];
        let reply = app.post_raw(path, body, headers).await;
        let status = reply
            .http_status()
            .unwrap_or_else(|| panic!("{name}: {reply:?}"));
        assert!((400..500).contains(&status), "{name}: answered {status}");
        let text = reply.excerpt.unwrap_or_default();
        assert!(!text.is_empty(), "{name}: a refusal says why");
        assert_eq!(app.events_stored().await, 0, "{name} stored something");
    }
    // A batch whose every message is bad is taken message by message, as
    // Segment's API does: 200, each refused alone, nothing stored.
    let nulls = json!({"batch": [null, null], "writeKey": WRITE_KEY}).to_string();
    let reply = app
        .post("/v1/batch", nulls.as_bytes(), Dress::BodyKey)
        .await;
    assert_eq!(reply.http_status(), Some(200));
    let answer: serde_json::Value =
        serde_json::from_str(&reply.excerpt.unwrap_or_default()).unwrap();
    assert_eq!(answer["refused"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.events_stored().await, 0);
    // Still serving, and a good request right after is stored.
    app.post_tracks(&["after-the-storm"]).await;
    assert_eq!(app.events_stored().await, 1);
}

#[tokio::test]
async fn ten_megabyte_bodies_are_refused_413_on_both_protocols() {
    let app = spawn_app_with(|_| {}).await;
    let padding = "x".repeat(10 * 1024 * 1024);
    let segment = json!({"batch": [{"type": "track", "userId": "u", "event": "E",
        "properties": {"pad": padding}}], "writeKey": WRITE_KEY})
    .to_string();
    let reply = app
        .post("/v1/batch", segment.as_bytes(), Dress::Basic)
        .await;
    assert_eq!(reply.http_status(), Some(413));
    let launchdarkly = json!([{"kind": "custom", "key": "k", "data": padding}]).to_string();
    let reply = post_ld(&app, &server(), Some("big"), &launchdarkly).await;
    assert_eq!(reply.http_status(), Some(413));
    assert_eq!(app.events_stored().await, 0);
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    match read {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        Err(_) => panic!("the server kept a slow client's connection open"),
    }
}

#[tokio::test]
async fn a_slow_loris_sending_headers_a_byte_at_a_time_is_cut_off() {
    let app =
        spawn_app_with(|config| config.server.header_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(app.app.ingest_addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let headers = b"POST /v1/track HTTP/1.1\r\nHost: ldbridge\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for byte in headers {
        if stream.write_all(&[*byte]).await.is_err() {
            break; // closed on us: that is the point
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = read_until_closed(&mut stream).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off only after {:?}",
        started.elapsed()
    );
    assert_eq!(app.events_stored().await, 0);
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408_and_nothing_is_stored() {
    let app =
        spawn_app_with(|config| config.server.body_timeout = Duration::from_millis(500)).await;
    let body = json!({"type": "track", "userId": "u", "event": "E"}).to_string();
    let mut stream = TcpStream::connect(app.app.ingest_addr).await.unwrap();
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nHost: ldbridge\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        basic(WRITE_KEY),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Most of the body, then nothing: the rest never comes.
    stream
        .write_all(&body.as_bytes()[..body.len() - 3])
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_timeout"), "{answer}");
    assert_eq!(app.events_stored().await, 0);
}

/// Open file descriptors of a process.
fn open_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_idle_connections_are_bounded_and_the_daemon_keeps_serving() {
    const IDLE: usize = 10_000;
    const LIMIT: usize = 256;
    // This process holds the client ends, beside the other tests of this
    // binary running at the same time (their in-process daemons accept
    // connections too: the browser test's page opens many), so it leaves
    // them thousands of descriptors. Where the hard limit is lower, as many
    // as that allows.
    let limit = rlimit::increase_nofile_limit(IDLE as u64 + 8192).unwrap_or(1024) as usize;
    let target = IDLE.min(limit.saturating_sub(4096));
    if target < IDLE {
        eprintln!("open-files hard limit {limit}: opening {target} idle connections, not {IDLE}");
    }
    let dir = tempfile::tempdir().unwrap();
    let receiver = ldbridge::receiver::Receiver::start().await.unwrap();
    let config = crate::fixture::Fixture::new(dir.path(), &receiver.url(), &receiver.url())
        .set("server", "max_connections", &LIMIT.to_string())
        .set("server", "header_timeout", r#""2s""#)
        .write();
    let daemon = Daemon::start(&config);
    let pid = daemon.pid();
    let before = crate::faults::rss_kb(&pid);

    let mut idle = Vec::with_capacity(target);
    for _ in 0..target {
        match TcpStream::connect(daemon.addr).await {
            Ok(stream) => idle.push(stream),
            // The listen backlog is full while the daemon sheds: fine.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    assert!(
        idle.len() > target / 2,
        "only {} connects succeeded",
        idle.len()
    );
    let fds = open_fds(&pid);
    let rss = crate::faults::rss_kb(&pid);
    eprintln!(
        "{} idle connections opened: daemon holds {fds} descriptors, RSS {before} → {rss} kB",
        idle.len()
    );
    assert!(
        fds <= LIMIT + 64,
        "{fds} descriptors open with max_connections = {LIMIT}"
    );
    assert!(rss < before + 50_000, "RSS grew from {before} to {rss} kB");

    // Over the limit, connections are told 503 and closed; the ones inside
    // it are closed once idle for header_timeout.
    let last = idle.last_mut().unwrap();
    let answer = read_until_closed(last).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    let first = idle.first_mut().unwrap();
    assert_eq!(
        read_until_closed(first).await,
        "",
        "an idle connection is closed without a word"
    );
    drop(idle);

    // Serving again: an ordinary request is acknowledged.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let client = ldbridge::deliver::HttpClient::new();
        let request = ldbridge::deliver::Outbound {
            url: format!("http://{}/v1/track", daemon.addr),
            headers: vec![(
                AUTHORIZATION,
                HeaderValue::from_str(&basic(WRITE_KEY)).unwrap(),
            )],
            body: json!({"type": "track", "userId": "u", "event": "E"})
                .to_string()
                .into(),
        };
        if client
            .send(&request, Duration::from_secs(5))
            .await
            .http_status()
            == Some(200)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon never served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.kill();
}

/// Regression: hyper's HTTP/1-or-2 detection waits for the first bytes with
/// no deadline, so a client that connected and never spoke held a
/// connection slot forever; now it is closed after `header_timeout`.
#[tokio::test]
async fn regression_a_connection_that_never_sends_a_byte_is_closed_after_header_timeout() {
    let app =
        spawn_app_with(|config| config.server.header_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(app.app.ingest_addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");
    // Half an HTTP/2 preface, then silence: closed too.
    let mut partial = TcpStream::connect(app.app.ingest_addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert_eq!(read_until_closed(&mut partial).await, "");
    // A keep-alive connection left idle after a request is closed as well.
    let mut idle = TcpStream::connect(app.app.ingest_addr).await.unwrap();
    idle.write_all(b"OPTIONS /v1/track HTTP/1.1\r\nHost: ldbridge\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
}

/// Regression: a connection opened but still silent when the daemon stopped
/// (a browser's preconnect) held shutdown until `server.shutdown_timeout`,
/// though it had no request to finish, and outlived the accept loop.
#[tokio::test]
async fn regression_a_connection_still_silent_at_shutdown_neither_holds_it_nor_is_answered() {
    let test = spawn_app_with(|config| {
        config.server.header_timeout = Duration::from_secs(600);
        config.server.shutdown_timeout = Duration::from_secs(600);
    })
    .await;
    let mut silent = TcpStream::connect(test.app.ingest_addr).await.unwrap();
    // One accept loop takes connections in order: once a later one is
    // answered, the silent one was accepted and is waiting for its bytes.
    let mut later = TcpStream::connect(test.app.ingest_addr).await.unwrap();
    later
        .write_all(b"OPTIONS /v1/track HTTP/1.1\r\nHost: ldbridge\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut later)
        .await
        .starts_with("HTTP/1.1 204"));
    tokio::time::timeout(WAIT, test.app.shutdown())
        .await
        .expect("shutdown waited on a connection that never sent a byte")
        .unwrap();
    let request = format!(
        "POST /v1/track HTTP/1.1\r\nHost: ldbridge\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
        basic(WRITE_KEY)
    );
    let _ = silent.write_all(request.as_bytes()).await;
    assert_eq!(
        read_until_closed(&mut silent).await,
        "",
        "a stopped daemon answered"
    );
}

/// Regression: a LaunchDarkly event with a number JSON cannot hold (`1e400`)
/// was acknowledged, stored verbatim, and then failed on the way to Segment
/// ("stored event is not valid JSON"); it is now refused at ingest.
#[tokio::test]
async fn regression_launchdarkly_numbers_out_of_range_are_refused_at_ingest_not_failed_later() {
    let app = spawn_app_with(|_| {}).await;
    let body = r#"[{"kind":"custom","key":"k","creationDate":1700000000000,"metricValue":1e400,
        "context":{"kind":"user","key":"u"}}]"#;
    let reply = post_ld(&app, &server(), Some("p-range"), body).await;
    assert_eq!(reply.http_status(), Some(400));
    let text = reply.excerpt.unwrap_or_default();
    assert!(
        text.contains("[0]") && text.contains("number out of range"),
        "{text}"
    );
    assert_eq!(app.events_stored().await, 0);
}
