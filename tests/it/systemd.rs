//! ldbridge under systemd's protocols, with the real binary: sd_notify
//! (READY, WATCHDOG, STOPPING), SIGHUP reloads, and SIGTERM under load.

use std::{
    collections::BTreeSet,
    os::unix::net::UnixDatagram,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::header::{HeaderValue, AUTHORIZATION};
use ldbridge::deliver::{HttpClient, Outbound};
use serde_json::json;

use crate::{
    fixture::Fixture,
    helpers::{basic, WAIT},
    process::{Daemon, EVERY_SECOND},
};

/// The fixture with one Segment source whose write key is `key` (written
/// into the file, so a reload changes it), delivering nowhere.
fn fixture_with_key(dir: &Path, key: &str) -> Fixture {
    Fixture::new(dir, "http://127.0.0.1:9", "http://127.0.0.1:9")
        .without_launchdarkly_source()
        .set("dispatch", "schedule", &format!("{EVERY_SECOND:?}"))
        .set("segment_source", "write_key", &format!("{key:?}"))
}

fn config_with_key(dir: &Path, key: &str) -> std::path::PathBuf {
    fixture_with_key(dir, key).write()
}

/// Posts one track call with `key`; returns the HTTP status (0 if none).
async fn post(client: &HttpClient, daemon: &Daemon, key: &str, message_id: &str) -> u16 {
    let body = json!({"userId": "u", "event": "E", "messageId": message_id});
    let request = Outbound {
        url: format!("http://{}/v1/track", daemon.addr),
        headers: vec![(AUTHORIZATION, HeaderValue::from_str(&basic(key)).unwrap())],
        body: body.to_string().into(),
    };
    client
        .send(&request, Duration::from_secs(10))
        .await
        .http_status()
        .unwrap_or(0)
}

async fn stored_message_ids(dir: &Path) -> BTreeSet<String> {
    crate::helpers::query_strings(dir, "SELECT dedupe_key FROM events")
        .await
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sd_notify_ready_comes_after_the_port_listens_then_watchdog_then_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let config = config_with_key(dir.path(), "k");
    let notify = socket_path.to_str().unwrap();
    // A 400 ms watchdog: ldbridge pets it every 200 ms.
    let mut daemon = Daemon::start_with(
        &config,
        &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "400000")],
    );
    let mut buffer = [0u8; 4096];
    let receive = |buffer: &mut [u8]| -> String {
        loop {
            // Other tests' child processes exiting interrupt the wait.
            match socket.recv(buffer) {
                Ok(n) => return String::from_utf8_lossy(&buffer[..n]).into_owned(),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => panic!("no notification before the deadline: {error}"),
            }
        }
    };
    // Start-up first extends systemd's start timeout (a long migration must
    // not be killed halfway), then says READY.
    let first = receive(&mut buffer);
    assert!(first.starts_with("EXTEND_TIMEOUT_USEC="), "{first}");
    let mut ready = receive(&mut buffer);
    while ready.starts_with("EXTEND_TIMEOUT_USEC=") {
        ready = receive(&mut buffer);
    }
    assert!(ready.starts_with("READY=1"), "{ready}");
    // READY means the ingest port already accepts connections.
    std::net::TcpStream::connect(daemon.addr).expect("ingest port accepts after READY=1");
    let mut watchdogs = 0;
    while watchdogs < 2 {
        let message = receive(&mut buffer);
        if message.contains("WATCHDOG=1") {
            assert!(message.contains("STATUS=Serving;"), "{message}");
            watchdogs += 1;
        }
    }
    daemon.signal("TERM");
    loop {
        let message = receive(&mut buffer);
        if message.contains("STOPPING=1") {
            break;
        }
    }
    let status = daemon.wait();
    assert!(status.success(), "{status:?}: {}", daemon.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_source_keys_without_losing_events_and_keeps_the_old_config_when_the_new_one_is_bad(
) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key(dir.path(), "key-one");
    let daemon = Daemon::start(&config);
    let client = HttpClient::new();
    let mut acknowledged = BTreeSet::new();
    assert_eq!(
        post(&client, &daemon, "key-one", "before-reload").await,
        200
    );
    acknowledged.insert("before-reload".to_owned());

    config_with_key(dir.path(), "key-two");
    daemon.signal("HUP");
    // The reload is asynchronous: poll until the new key is taken.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("after-reload-{n}");
        match post(&client, &daemon, "key-two", &id).await {
            200 => {
                acknowledged.insert(id);
                break;
            }
            401 => assert!(
                tokio::time::Instant::now() < deadline,
                "reload never applied: {}",
                daemon.logs()
            ),
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(post(&client, &daemon, "key-one", "old-key").await, 401);

    // A broken file: logged, and the running config keeps serving.
    std::fs::write(&config, "[server\nlisten = ").unwrap();
    daemon.signal("HUP");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !daemon.logs().contains("Config reload failed") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload error logged: {}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        post(&client, &daemon, "key-two", "after-bad-reload").await,
        200
    );
    acknowledged.insert("after-bad-reload".to_owned());
    daemon.kill();
    assert_eq!(
        stored_message_ids(dir.path()).await,
        acknowledged,
        "every acknowledged event, nothing refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_steady_ingest_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key(dir.path(), "k");
    let mut daemon = Daemon::start(&config);
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let addr = daemon.addr;
    let mut senders = Vec::new();
    for connection in 0..4 {
        let acknowledged = Arc::clone(&acknowledged);
        senders.push(tokio::spawn(async move {
            let client = HttpClient::new();
            let fake = Daemon::address_only(addr);
            for n in 0.. {
                let id = format!("c{connection}-{n}");
                match post(&client, &fake, "k", &id).await {
                    200 => {
                        acknowledged.lock().unwrap().insert(id);
                    }
                    // Refused or connection closed: the daemon is stopping.
                    _ => break,
                }
            }
        }));
    }
    // Let ingest run, then stop it mid-stream.
    crate::helpers::wait_until("200 acknowledged events before SIGTERM", || async {
        acknowledged.lock().unwrap().len() >= 200
    })
    .await;
    daemon.signal("TERM");
    for sender in senders {
        sender.await.unwrap();
    }
    let status = daemon.wait();
    assert!(status.success(), "{status:?}: {}", daemon.logs());
    let acknowledged = acknowledged.lock().unwrap().clone();
    let stored = stored_message_ids(dir.path()).await;
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

/// Regression: the SIGHUP handler used to be installed only after start-up
/// logged "ready", so a reload right then killed the daemon.
#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_right_after_the_ready_line_reloads_instead_of_killing_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key(dir.path(), "k");
    let mut daemon = Daemon::start(&config);
    daemon.signal("HUP");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !daemon.logs().contains("Config reloaded.") {
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "SIGHUP killed the daemon"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload: {}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(post(&HttpClient::new(), &daemon, "k", "alive").await, 200);
    daemon.kill();
}

/// Runs `ldbridge --config <config> reload`; returns its exit code and output.
fn reload_command(config: &Path) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ldbridge"))
        .current_dir(config.parent().expect("a config file in a directory"))
        .arg("--config")
        .arg(config)
        .arg("reload")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn ldbridge_reload_returns_once_the_new_config_serves_and_fails_when_it_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key(dir.path(), "key-one");
    let daemon = Daemon::start(&config);
    let client = HttpClient::new();
    // What `systemctl reload` runs (ExecReload=): when it returns, the new
    // key is taken, with no polling (issue 14: a script raced the reload).
    config_with_key(dir.path(), "key-two");
    let (code, text) = reload_command(&config);
    assert_eq!(code, 0, "{text}\n{}", daemon.logs());
    assert!(text.contains("segment_source changed: web"), "{text}");
    assert_eq!(post(&client, &daemon, "key-two", "right-after").await, 200);
    assert_eq!(post(&client, &daemon, "key-one", "old-key").await, 401);

    // A file the daemon rejects: exit 1, the reason, and the running config
    // serves on.
    fixture_with_key(dir.path(), "key-two")
        .set("dispatch", "max_in_flight", "0")
        .write();
    let (code, text) = reload_command(&config);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("rejected") && text.contains("max_in_flight"),
        "{text}"
    );
    assert_eq!(post(&client, &daemon, "key-two", "after-bad").await, 200);
    // A bad trigger: the daemon rejects the file, naming the trigger's
    // key, line and column, and the running config serves on.
    Fixture::new(dir.path(), "http://127.0.0.1:9", "http://127.0.0.1:9")
        .set("dispatch", "schedule", &format!("{EVERY_SECOND:?}"))
        .set("segment_source", "write_key", "\"key-two\"")
        .set("launchdarkly_source", "sdk_key", "\"sdk-literal-1\"")
        .unset("launchdarkly_source", "mobile_key")
        .set(
            "launchdarkly_source",
            "to_segment",
            r#"{ write_key = "wk-literal-1", trigger = 'kind = "custom" and' }"#,
        )
        .write();
    let (code, text) = reload_command(&config);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("rejected")
            && text.contains("to_segment.trigger")
            && text.contains("column")
            && text.contains("expected a condition"),
        "{text}"
    );
    assert_eq!(
        post(&client, &daemon, "key-two", "after-bad-trigger").await,
        200
    );
    // A file that does not even parse: the command says so (exit 2) and
    // signals nothing.
    std::fs::write(&config, "[server\nlisten = ").unwrap();
    let (code, text) = reload_command(&config);
    assert_eq!(code, 2, "{text}");
    assert_eq!(post(&client, &daemon, "key-two", "after-broken").await, 200);
    daemon.kill();
}
