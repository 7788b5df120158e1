//! The real binary as a process: killed with SIGKILL and restarted, stopped
//! with SIGTERM, and its CLI's exit codes.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use ldbridge::receiver::{Receiver, Reply};
use serde_json::{json, Value};

use crate::{
    fixture::{self, Fixture},
    helpers::{basic, WAIT, WRITE_KEY},
};

pub const NEVER: &str = "0 0 0 1 1 * 2099";
pub const EVERY_SECOND: &str = "*/1 * * * * *";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ldbridge")
}

/// Writes a config file; the write key travels as `env:` like in production.
pub fn write_config(dir: &Path, receiver: &Receiver, schedule: &str) -> PathBuf {
    Fixture::new(dir, &receiver.url(), &receiver.url())
        .set("dispatch", "schedule", &format!("{schedule:?}"))
        .write()
}

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Reads stderr until the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `ldbridge serve` and waits for its ready line (which names
    /// the port it bound).
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_with(config, &[])
    }

    /// Starts with extra environment variables (NOTIFY_SOCKET, …).
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(binary())
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .arg("serve")
            // On PostgreSQL the reload status file is kept in the working
            // directory: the config's, as for a SQLite file beside it.
            .current_dir(config.parent().expect("a config file in a directory"))
            .env("LDBRIDGE_LOG", "info")
            .envs(fixture::ENV)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready, addr) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    if entry["message"] == "ldbridge is ready." {
                        let _ = ready.send(
                            entry["listen"]
                                .as_str()
                                .unwrap()
                                .parse::<SocketAddr>()
                                .unwrap(),
                        );
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = addr
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("daemon did not become ready: {:?}", logs.lock().unwrap()));
        Daemon {
            child,
            addr,
            logs,
            reader: Some(reader),
        }
    }

    /// A handle for posting only (no process): the address of a daemon
    /// another task owns.
    pub fn address_only(addr: SocketAddr) -> Daemon {
        Daemon {
            child: Command::new("true").spawn().unwrap(),
            addr,
            logs: Arc::default(),
            reader: None,
        }
    }

    /// Waits for the process to exit and for its last log lines.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// Sends `signal` (`TERM`, `HUP`, …) to the daemon.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

/// A test that fails part-way must not leave its daemon running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

/// Posts a batch of uniquely named track events; returns their names once
/// acknowledged.
pub async fn post_events(addr: SocketAddr, prefix: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|n| format!("{prefix}-{n}")).collect();
    let batch: Vec<Value> = names
        .iter()
        .map(|name| json!({"type": "track", "userId": "u1", "event": name, "messageId": name}))
        .collect();
    let request = ldbridge::deliver::Outbound {
        url: format!("http://{addr}/v1/batch"),
        headers: vec![(
            hyper::header::AUTHORIZATION,
            hyper::header::HeaderValue::from_str(&basic(WRITE_KEY)).unwrap(),
        )],
        body: json!({ "batch": batch }).to_string().into(),
    };
    let reply = ldbridge::deliver::HttpClient::new()
        .send(&request, Duration::from_secs(10))
        .await;
    assert_eq!(reply.http_status(), Some(200), "{:?}", reply.excerpt);
    names
}

fn keys_received(receiver: &Receiver) -> std::collections::BTreeSet<String> {
    receiver
        .requests()
        .iter()
        .flat_map(|request| request.json().as_array().cloned().unwrap_or_default())
        .map(|event| event["key"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_events_survive_sigkill_before_delivery_and_are_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await.unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), &receiver, NEVER));
    let mut acknowledged = Vec::new();
    for round in 0..5 {
        acknowledged.extend(post_events(daemon.addr, &format!("r{round}"), 20).await);
    }
    daemon.kill();
    assert!(
        receiver.requests().is_empty(),
        "nothing may be sent before the restart"
    );

    let daemon = Daemon::start(&write_config(dir.path(), &receiver, EVERY_SECOND));
    let expected: std::collections::BTreeSet<String> = acknowledged.into_iter().collect();
    receiver
        .wait_until(WAIT, |_| keys_received(&receiver) == expected)
        .await;
    assert_eq!(keys_received(&receiver), expected);

    // The delivery log, through the CLI, while the daemon runs.
    let output = Command::new(binary())
        .args(["--config"])
        .arg(dir.path().join("ldbridge.toml"))
        .args(["log", "--status", "delivered", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let batches: Value = serde_json::from_slice(&output.stdout).unwrap();
    let events: i64 = batches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["event_count"].as_i64().unwrap())
        .sum();
    assert_eq!(events, 100);
    for batch in batches.as_array().unwrap() {
        assert_eq!(batch["route"], "segment-to-launchdarkly");
        assert_eq!(batch["status"], "delivered");
        assert!(batch["created_at"].as_str().unwrap().ends_with('Z'));
    }
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_interrupted_mid_request_is_sent_again_after_restart_with_the_same_payload_id() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await.unwrap();
    receiver.push(Reply::status(202).delay(Duration::from_secs(60)));
    let config = write_config(dir.path(), &receiver, EVERY_SECOND);
    let daemon = Daemon::start(&config);
    post_events(daemon.addr, "inflight", 3).await;
    receiver
        .wait_until(WAIT, |requests| !requests.is_empty())
        .await;
    daemon.kill(); // mid-request: the batch is `sending`

    let daemon = Daemon::start(&config);
    let requests = receiver
        .wait_until(WAIT, |requests| requests.len() >= 2)
        .await;
    assert!(requests.len() >= 2, "not resent: {}", daemon.logs());
    let first = requests[0].header("x-launchdarkly-payload-id").unwrap();
    assert_eq!(requests[1].header("x-launchdarkly-payload-id"), Some(first));
    assert_eq!(requests[0].body, requests[1].body);
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_with_exit_status_zero_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await.unwrap();
    let config = write_config(dir.path(), &receiver, NEVER);
    let mut daemon = Daemon::start(&config);
    let acknowledged = post_events(daemon.addr, "term", 10).await;
    daemon.signal("TERM");
    let exit = daemon.wait();
    assert!(exit.success(), "exit {exit:?}: {}", daemon.logs());
    assert!(daemon.logs().contains("Stopped."));
    // Everything acknowledged is in the database after exit.
    let store = crate::helpers::open_store(dir.path()).await;
    assert_eq!(
        ldbridge::store::delivery_log::event_count(&store)
            .await
            .unwrap(),
        acknowledged.len() as i64
    );
}

fn check_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap()
}

#[test]
fn check_config_names_the_bad_key_exits_2_and_never_prints_a_secret() {
    let unknown = check_config("[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n");
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("lisen") && stderr.contains("line 3"),
        "{stderr}"
    );

    let secret = "super-secret-write-key-123";
    let bad_value = check_config(&format!(
        "[[segment_source]]\nname = \"web\"\nwrite_key = \"{secret}\"\n[dispatch]\nmax_batch_events = 0\n"
    ));
    assert_eq!(bad_value.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad_value.stderr);
    assert!(stderr.contains("max_batch_events"), "{stderr}");
    assert!(!stderr.contains(secret));

    let missing_env =
        check_config("[[segment_source]]\nname = \"web\"\nwrite_key = \"env:IT_DOES_NOT_EXIST\"\n");
    assert_eq!(missing_env.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing_env.stderr).contains("IT_DOES_NOT_EXIST"));

    let good = check_config("[[segment_source]]\nname = \"web\"\nwrite_key = \"k\"\n");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(!String::from_utf8_lossy(&good.stderr).contains("warning"));

    // Valid but useless: said, as `serve` says it.
    let empty = check_config("[server]\nlisten = \"127.0.0.1:0\"\n");
    assert!(empty.status.success());
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(stderr.contains("no sources configured"), "{stderr}");

    // A mistyped secret scheme is an error, not a literal key.
    let typo = check_config("[[segment_source]]\nname = \"web\"\nwrite_key = \"envv:WK\"\n");
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("unknown secret scheme `envv:`"));
}

#[test]
fn an_operator_command_without_read_access_says_permission_denied_not_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("ldbridge.db"), b"").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("ldbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n",
            state.join("ldbridge.db").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // As another user (root reads everything): nobody, via setpriv.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary())
        .arg("--config")
        .arg(&config)
        .arg("stats")
        .output();
    let usable = output
        .ok()
        .filter(|output| !String::from_utf8_lossy(&output.stderr).contains("setpriv:"));
    let Some(output) = usable else {
        crate::helpers::skip("running a command as another user needs root and setpriv");
        return;
    };
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains("sudo"), "{stderr}");
}

#[test]
fn log_without_a_database_is_a_runtime_error_and_a_bad_filter_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = \"{}\"\n",
            dir.path().join("none.db").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(binary())
            .arg("--config")
            .arg(&path)
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(run(&["log"]).status.code(), Some(1));
    assert_eq!(run(&["log", "--status", "lost"]).status.code(), Some(2));
    assert_eq!(
        run(&["log", "--since", "last tuesday"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn a_postgresql_password_never_reaches_output_or_errors() {
    // A server that is not there: a unix socket directory with no socket.
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://ld:s3cret-pw@localhost/ldbridge?host={}",
        dir.path().display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("[store]\nurl = {url:?}\n")).unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(binary())
            .arg("--config")
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    };
    let (code, text) = run(&["check-config"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("postgres://ld:***@localhost/ldbridge"),
        "{text}"
    );
    for args in [
        &["log"][..],
        &["serve"],
        &["store", "copy", "--to", "/nonexistent/x.db"],
    ] {
        let (code, text) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {text}");
        assert!(text.contains("ld:***@localhost"), "{args:?}: {text}");
        assert!(!text.contains("s3cret-pw"), "{args:?}: {text}");
    }
}

#[test]
fn the_demo_runs_end_to_end_and_shows_delivered_batches_and_payloads() {
    let output = Command::new(binary()).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("POST /v1/batch") && stdout.contains("→ 200"),
        "{stdout}"
    );
    assert!(stdout.contains("delivered"), "{stdout}");
    // The first event of each destination path (which request came first
    // on a shared path depends on the routes' timing).
    assert!(stdout.contains("{\"kind\":\""), "{stdout}");
    assert!(stdout.contains("{\"type\":\""), "{stdout}");
    assert!(
        stdout.contains("/events/bulk/6488674dc2ea1d6673731ba2"),
        "{stdout}"
    );
    // One custom mapping, shown with `ldbridge map`: two events for one call.
    assert!(
        stdout.contains("segment-to-launchdarkly: sent, by mapping 1 (custom, #")
            && stdout.contains("\"key\":\"purchase\""),
        "{stdout}"
    );
    // A summary that fits a screen (it printed 1,264 lines: issue 14)…
    assert!(stdout.lines().count() <= 60, "{stdout}");
    // …and the operator loop: retrying, failed, resent, delivered, one payload id.
    assert!(
        stdout.contains("attempts #1 503 → retrying, #2 401 → failed"),
        "{stdout}"
    );
    assert!(stdout.contains("$ ldbridge resend"), "{stdout}");
    assert!(
        stdout.contains("delivered; 3 attempts, payload id") && stdout.contains("each time"),
        "{stdout}"
    );
    assert!(!stdout.contains("differed"), "{stdout}");
    // --verbose: every payload, as before.
    let verbose = Command::new(binary())
        .args(["demo", "--verbose"])
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&verbose.stdout);
    assert!(verbose.contains("\"kind\": \"custom\""), "{verbose}");
    assert!(verbose.lines().count() > 200, "{verbose}");
}

// Multi-threaded: the stand-ins answer while the test waits on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_asks_launchdarkly_about_each_credential_and_says_which_cannot_be_tested(
) {
    use ldbridge::receiver::{Receiver, Reply};
    let clientsdk = Receiver::start().await.unwrap();
    let sdk = Receiver::start().await.unwrap();
    // The stand-ins know one client-side id, one SDK key, one mobile key.
    clientsdk.respond_with(|request| {
        let known = request.path == "/sdk/goals/known-client-id"
            || (request.path.starts_with("/msdk/evalx/contexts/")
                && request.header("authorization") == Some("mob-known-key"));
        Some(Reply::status(if known {
            200
        } else if request.path.starts_with("/sdk/goals/") {
            404
        } else {
            401
        }))
    });
    sdk.respond_with(|request| {
        let known = request.header("authorization") == Some("sdk-known-key");
        Some(Reply::status(if known { 200 } else { 401 }))
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("online.toml");
    let write = |sources: &str| {
        std::fs::write(
            &path,
            format!(
                "[launchdarkly]\nclientsdk_url = \"{}\"\nsdk_url = \"{}\"\n{sources}",
                clientsdk.url(),
                sdk.url()
            ),
        )
        .unwrap();
    };
    let run = |json: bool| {
        let mut command = Command::new(binary());
        command
            .arg("--config")
            .arg(&path)
            .args(["check-config", "--online"]);
        if json {
            command.arg("--json");
        }
        command.output().unwrap()
    };
    write(
        "[[segment_source]]\nname = \"web\"\nwrite_key = \"seg-write-key-1\"\n\
         to_launchdarkly = { client_side_id = \"known-client-id\" }\nrelay_to_segment = true\n\
         [[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-known-key\"\nmobile_key = \"mob-known-key\"\n\
         to_segment = { write_key = \"seg-write-key-2\" }\nrelay_to_launchdarkly = true\n",
    );
    let good = run(true);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&good.stdout),
        String::from_utf8_lossy(&good.stderr)
    );
    let answers: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    let verdicts: Vec<(String, String)> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_owned(),
                a["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |key: &str, verdict: &str| (key.to_owned(), verdict.to_owned());
    assert_eq!(
        verdicts,
        [
            expect(
                "segment_source \"web\" write_key (relay_to_segment)",
                "untestable"
            ),
            expect(
                "launchdarkly_source \"prod\" to_segment.write_key",
                "untestable"
            ),
            expect(
                "segment_source \"web\" to_launchdarkly.client_side_id",
                "accepted"
            ),
            expect("launchdarkly_source \"prod\" sdk_key", "accepted"),
            expect("launchdarkly_source \"prod\" mobile_key", "accepted"),
        ]
    );
    // Segment's destination's own request: HEAD, no credential header.
    let goals = clientsdk
        .requests()
        .into_iter()
        .find(|request| request.path.starts_with("/sdk/goals/"))
        .unwrap();
    assert_eq!(goals.method, "HEAD");
    assert_eq!(goals.header("authorization"), None);
    assert_eq!(sdk.requests()[0].path, "/sdk/latest-all");

    // Unknown credentials: rejected, exit 1, and no key printed.
    write(
        "[[segment_source]]\nname = \"web\"\nwrite_key = \"seg-write-key-1\"\n\
         to_launchdarkly = { client_side_id = \"wrong-client-id\" }\n\
         [[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-wrong-key\"\nrelay_to_launchdarkly = true\n",
    );
    let bad = run(false);
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(
        stdout.contains("REJECTED  segment_source \"web\" to_launchdarkly.client_side_id")
            && stdout.contains("answered 404"),
        "{stdout}"
    );
    assert!(
        stdout.contains("REJECTED  launchdarkly_source \"prod\" sdk_key"),
        "{stdout}"
    );
    let all = format!("{stdout}{}", String::from_utf8_lossy(&bad.stderr));
    assert!(
        !all.contains("sdk-wrong-key") && !all.contains("seg-write-key"),
        "{all}"
    );

    // A host that does not answer: unknown, exit 1.
    drop(sdk);
    let unreachable = run(false);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stdout)
        .contains("UNKNOWN   launchdarkly_source \"prod\" sdk_key: could not tell"));
}

// Multi-threaded: the requests below are made while the daemon's log
// reader runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_never_reaches_the_log_even_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await.unwrap();
    let token = "admin-token-never-logged-5521";
    let config = Fixture::new(dir.path(), &receiver.url(), &receiver.url())
        .set("server", "admin_listen", r#""127.0.0.1:0""#)
        .set("server", "admin_token", &format!("{token:?}"))
        .set("server", "log_filter", r#""debug""#)
        .write();
    let mut daemon = Daemon::start_with(&config, &[("LDBRIDGE_LOG", "debug")]);
    // The reader hands the ready line over before it keeps it: poll.
    let admin_address = |logs: String| {
        logs.lines().find_map(|line| {
            let entry: Value = serde_json::from_str(line).ok()?;
            (entry["message"] == "ldbridge is ready.")
                .then(|| entry["admin"].as_str().map(str::to_owned))?
        })
    };
    let deadline = std::time::Instant::now() + WAIT;
    let ready = loop {
        if let Some(address) = admin_address(daemon.logs()) {
            break address;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ready line naming the admin listener"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let admin = format!("http://{ready}");
    let client = reqwest_like::Client::new();
    // A login (the token in a form body), the API with it as a bearer
    // token, a wrong one, and pages with the session.
    let (status, cookie) = client.login(&admin, token).await;
    assert_eq!(status, 200);
    assert_eq!(
        client.get(&admin, "/api/stats", Some(token), None).await,
        200
    );
    assert_eq!(
        client
            .get(&admin, "/api/stats", Some("wrong-token"), None)
            .await,
        401
    );
    assert_eq!(client.get(&admin, "/ui/", None, Some(&cookie)).await, 200);
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let logs = daemon.logs();
    assert!(
        logs.contains("Admin request."),
        "admin requests are logged at debug: {logs}"
    );
    assert!(!logs.contains(token), "the token was logged:\n{logs}");
    let session = cookie.split_once('=').unwrap().1;
    assert!(!logs.contains(session), "the session id was logged");
}

/// The few requests the log test makes, with hyper.
mod reqwest_like {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    pub struct Client(
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
    );

    impl Client {
        pub fn new() -> Client {
            Client(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http(),
            )
        }

        /// Logs in; the status and the session cookie (`name=value`).
        pub async fn login(&self, admin: &str, token: &str) -> (u16, String) {
            let request = hyper::Request::post(format!("{admin}/ui/login"))
                .header("origin", admin)
                .header("x-ldbridge-request", "1")
                .body(Full::new(Bytes::from(format!("token={token}"))))
                .unwrap();
            let response = self.0.request(request).await.unwrap();
            let cookie = response
                .headers()
                .get("set-cookie")
                .map(|value| {
                    value
                        .to_str()
                        .unwrap()
                        .split(';')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .unwrap_or_default();
            (response.status().as_u16(), cookie)
        }

        pub async fn get(
            &self,
            admin: &str,
            path: &str,
            bearer: Option<&str>,
            cookie: Option<&str>,
        ) -> u16 {
            let mut request = hyper::Request::get(format!("{admin}{path}"));
            if let Some(token) = bearer {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let response = self
                .0
                .request(request.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            status
        }
    }
}
