//! `spawn_app` and friends: an in-process daemon on port 0 with a fresh
//! database, pointed at a recording LaunchDarkly stand-in, with retry
//! delays in milliseconds.

use std::{io::Write, path::PathBuf, time::Duration};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use ldbridge::{
    clock::Clock,
    config::Config,
    daemon::{self, App},
    deliver::{HttpClient, Outbound, Reply},
    domain::{DeliveryStatus, Route},
    receiver::Receiver,
    store::delivery_log,
};
use serde_json::Value;

use crate::fixture::Fixture;

pub const WRITE_KEY: &str = ldbridge::demo::WRITE_KEY;
pub const CLIENT_SIDE_ID: &str = ldbridge::demo::CLIENT_SIDE_ID;
pub const WAIT: Duration = Duration::from_secs(20);
pub const ADMIN_TOKEN: &str = "test-admin-token-7f3e";
/// How far [`TestApp::dispatch_until`] moves a manual clock each round.
pub const CLOCK_STEP: Duration = Duration::from_millis(50);

pub struct TestApp {
    pub app: App,
    /// What delivery reads the time from.
    pub clock: Clock,
    pub base: String,
    pub launchdarkly: Receiver,
    pub segment: Receiver,
    pub client: HttpClient,
    pub database: PathBuf,
    /// The `[store]` section naming this app's database, as an operator's
    /// config would: its SQLite file, or its PostgreSQL URL.
    pub store_section: String,
    _dir: tempfile::TempDir,
}

/// The test config: the fixture (tests/fixture/ldbridge.toml: millisecond
/// retries, a schedule that never fires on its own, so tests drive dispatch
/// with `drain`; the Segment source's relay off unless a test turns it on,
/// so counts stay per route), with the admin API on a port of its own.
pub fn test_config(dir: &std::path::Path, launchdarkly_url: &str, segment_url: &str) -> Config {
    Fixture::new(dir, launchdarkly_url, segment_url)
        .set("server", "admin_listen", r#""127.0.0.1:0""#)
        .set("server", "admin_token", &format!("{ADMIN_TOKEN:?}"))
        .set("dispatch", "request_timeout", r#""5s""#)
        .config()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at(Clock::system(), adjust).await
}

/// An app whose delivery reads `clock`. With a manual clock,
/// [`TestApp::dispatch_until`] moves it [`CLOCK_STEP`] a round instead of
/// sleeping, so retry delays cost no real time.
pub async fn spawn_app_at(clock: Clock, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let launchdarkly = Receiver::start().await.unwrap();
    let segment = Receiver::start().await.unwrap();
    segment.set_default(ldbridge::receiver::Reply::status(200).body(r#"{"success":true}"#));
    let mut config = test_config(dir.path(), &launchdarkly.url(), &segment.url());
    adjust(&mut config);
    config.validate().unwrap();
    let database = config.store.path.clone();
    let store_section = store_section(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = daemon::start_with_clock(config, listener, clock.clone())
        .await
        .unwrap();
    TestApp {
        base: format!("http://{}", app.ingest_addr),
        app,
        clock,
        launchdarkly,
        segment,
        client: HttpClient::new(),
        database,
        store_section,
        _dir: dir,
    }
}

impl TestApp {
    /// The app's temporary directory (its config, and its SQLite file).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Everything the database holds, as bytes to search: the SQLite file
    /// and its WAL, or every PostgreSQL table's rows as text.
    pub async fn database_bytes(&self) -> Vec<u8> {
        if crate::fixture::postgres::enabled() {
            let rows = query_strings(
                self.dir(),
                "SELECT t::text FROM events t UNION ALL SELECT t::text FROM requests t \
                 UNION ALL SELECT t::text FROM batches t UNION ALL SELECT t::text FROM attempts t \
                 UNION ALL SELECT t::text FROM refusals t UNION ALL SELECT t::text FROM profiles t",
            )
            .await;
            return rows.join("\n").into_bytes();
        }
        let mut bytes = std::fs::read(&self.database).unwrap();
        bytes.extend(std::fs::read(self.database.with_extension("db-wal")).unwrap_or_default());
        bytes
    }

    /// Runs `sql` (no parameters; SQL both backends speak) on the database.
    pub async fn execute(&self, sql: &str) {
        use sqlx::Connection;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match crate::fixture::postgres::location(self.dir()) {
            ldbridge::store::Location::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                let _ = conn.close().await;
            }
            ldbridge::store::Location::Sqlite(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                let _ = conn.close().await;
            }
        }
    }
}

/// The `[store]` section of a config naming `config`'s database.
pub fn store_section(config: &Config) -> String {
    match &config.store.url {
        Some(url) => format!("[store]\nurl = {:?}\n", url.expose()),
        None => format!("[store]\npath = \"{}\"\n", config.store.path.display()),
    }
}

/// Whether the suite runs on PostgreSQL (`LDBRIDGE_TEST_POSTGRES`); tests of
/// the SQLite file itself say so and skip.
pub fn on_postgres(test: &str) -> bool {
    let on = crate::fixture::postgres::enabled();
    if on {
        eprintln!("SKIPPED on PostgreSQL: {test} tests the SQLite file itself");
    }
    on
}

/// How a request is dressed, the ways real libraries send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dress {
    /// `Authorization: Basic base64(key:)`, application/json.
    Basic,
    /// No auth header (the key is in the body), application/json.
    BodyKey,
    /// Body key, `Content-Type: text/plain` (analytics.js).
    TextPlain,
    /// Body key, gzip-compressed (analytics-python gzip=True, mobile).
    Gzip,
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

impl TestApp {
    /// Posts one Segment batch of track calls named `names` (messageId
    /// `msg-<name>`), body key, and expects it acknowledged.
    pub async fn post_tracks(&self, names: &[&str]) {
        let batch: Vec<Value> = names
            .iter()
            .map(|name| serde_json::json!({"type": "track", "userId": "u1", "event": name, "messageId": format!("msg-{name}")}))
            .collect();
        let body = serde_json::json!({"batch": batch, "writeKey": WRITE_KEY}).to_string();
        let reply = self
            .post("/v1/batch", body.as_bytes(), Dress::BodyKey)
            .await;
        assert_eq!(reply.http_status(), Some(200), "{:?}", reply.excerpt);
    }

    /// Posts `body` to `path`, dressed as `dress`.
    pub async fn post(&self, path: &str, body: &[u8], dress: Dress) -> Reply {
        let mut headers = vec![(
            CONTENT_TYPE,
            HeaderValue::from_static(if dress == Dress::TextPlain {
                "text/plain"
            } else {
                "application/json"
            }),
        )];
        let mut bytes = Bytes::copy_from_slice(body);
        match dress {
            Dress::Basic => headers.push((
                AUTHORIZATION,
                HeaderValue::from_str(&basic(WRITE_KEY)).unwrap(),
            )),
            Dress::Gzip => {
                bytes = Bytes::from(gzip(body));
                headers.push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
            }
            Dress::BodyKey | Dress::TextPlain => {}
        }
        self.post_raw(path, bytes, headers).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<Bytes>,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Reply {
        let request = Outbound {
            url: format!("{}{path}", self.base),
            headers,
            body: body.into(),
        };
        self.client.send(&request, Duration::from_secs(10)).await
    }

    /// Runs the dispatcher (every route, one after the other) until `done`
    /// holds for the delivery counts, or fails the test at WAIT.
    pub async fn dispatch_until(&self, done: impl Fn(&Counts) -> bool) -> Counts {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            for route in Route::ALL {
                self.app.dispatcher.drain(route).await.unwrap();
            }
            let counts = self.counts().await;
            if done(&counts) {
                return counts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached; deliveries: {counts:?}"
            );
            if self.clock.is_manual() {
                self.clock.advance(CLOCK_STEP);
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Deliveries by route and status, as `stats` shows them (the kept
    /// counts); every call also checks them against a scan of every
    /// delivery, so each test that looks at counts proves them right.
    pub async fn counts(&self) -> Counts {
        let (kept, scanned) = delivery_log::delivery_counts_checked(&self.app.store)
            .await
            .unwrap();
        assert_eq!(kept, scanned, "the kept counts drifted from the rows");
        Counts(kept)
    }

    pub async fn events_stored(&self) -> i64 {
        delivery_log::event_count(&self.app.store).await.unwrap()
    }

    pub async fn batches(&self) -> Vec<delivery_log::BatchSummary> {
        let filter = delivery_log::BatchFilter {
            limit: 1000,
            ..Default::default()
        };
        delivery_log::list_batches(&self.app.store, &filter)
            .await
            .unwrap()
    }

    /// Every LaunchDarkly event the stand-in was sent, in arrival order.
    pub fn received_events(&self) -> Vec<Value> {
        self.launchdarkly
            .requests()
            .iter()
            .flat_map(|request| request.json().as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// Delivery counts by (route, status).
#[derive(Debug, Clone)]
pub struct Counts(pub Vec<(String, DeliveryStatus, i64)>);

impl Counts {
    /// Deliveries of `route` in `status`.
    pub fn on(&self, route: Route, status: DeliveryStatus) -> i64 {
        self.0
            .iter()
            .filter(|(r, s, _)| r == route.as_str() && *s == status)
            .map(|(_, _, n)| *n)
            .sum()
    }

    /// Deliveries in `status`, all routes together.
    pub fn get(&self, status: DeliveryStatus) -> i64 {
        self.0
            .iter()
            .filter(|(_, s, _)| *s == status)
            .map(|(_, _, n)| *n)
            .sum()
    }

    /// Nothing waiting: no delivery pending or batched.
    pub fn settled(&self) -> bool {
        self.get(DeliveryStatus::Pending) == 0 && self.get(DeliveryStatus::Batched) == 0
    }
}

pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `ldbridge` binary in `dir` with a config holding only
/// `store_section` (see [`store_section`]).
pub fn cli_in(dir: &std::path::Path, store_section: &str, args: &[&str]) -> CliRun {
    let config = dir.join("cli.toml");
    std::fs::write(&config, store_section).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ldbridge"))
        .current_dir(dir)
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .unwrap();
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl CliRun {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", self.stdout, self.stderr))
    }
}

impl TestApp {
    /// Runs the real `ldbridge` binary against this app's database (a
    /// config file naming only the store, as an operator's shell would).
    pub fn cli(&self, args: &[&str]) -> CliRun {
        cli_in(self.dir(), &self.store_section, args)
    }

    /// Calls the admin API; `token` None sends no Authorization header.
    /// Returns status and body text.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        use http_body_util::BodyExt;
        let addr = self.app.admin_addr.expect("admin listener");
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(http_body_util::Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.admin("GET", "/metrics", Some(ADMIN_TOKEN), "").await.1
    }

    pub async fn admin_json(&self, method: &str, path: &str) -> (u16, Value) {
        let (status, text) = self.admin(method, path, Some(ADMIN_TOKEN), "").await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Polls `holds` every 10 ms until it is true; fails the test, naming
/// `what`, if it is still false after [`WAIT`]. Every wait in the suite has
/// this deadline: on a busy machine things are late, never forever.
pub async fn wait_until<F, Fut>(what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !holds().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still waiting after {WAIT:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Says why a test that needs a real part (root, a file system feature)
/// cannot run here, and passes; with `LDBRIDGE_REQUIRE_ROOT=1` (set by
/// .ci/run, which runs as root) it fails instead, so CI always runs it.
pub fn skip(why: &str) {
    if std::env::var("LDBRIDGE_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("required here (LDBRIDGE_REQUIRE_ROOT=1), but {why}");
    }
    eprintln!("SKIPPED: {why} (LDBRIDGE_REQUIRE_ROOT=1 makes this a failure)");
}

/// Makes `receiver` answer `status` to every request carrying an event
/// whose `key` is `key` (a poison event), and 202 to the others.
pub fn refuse_event(receiver: &Receiver, key: &'static str, status: u16) {
    receiver.respond_with(move |request| {
        let poisoned = request
            .json()
            .as_array()
            .is_some_and(|events| events.iter().any(|event| event["key"] == key));
        Some(ldbridge::receiver::Reply::status(if poisoned {
            status
        } else {
            202
        }))
    });
}

/// `PRAGMA integrity_check` of the database at `path`: "ok" when sound.
pub async fn integrity_check(path: &std::path::Path) -> String {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.join("; ")
}

/// The store of the fixture in `dir` (its SQLite file, or its PostgreSQL
/// database), opened as the CLI would.
pub async fn open_store(dir: &std::path::Path) -> ldbridge::store::Store {
    let location = crate::fixture::postgres::location(dir);
    ldbridge::store::Store::open_at(&location, &Default::default())
        .await
        .unwrap()
}

/// The strings `sql` (one text column, SQL both backends speak) selects
/// from the database of the fixture in `dir`.
pub async fn query_strings(dir: &std::path::Path, sql: &str) -> Vec<String> {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match crate::fixture::postgres::location(dir) {
        ldbridge::store::Location::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let rows = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
            let _ = conn.close().await;
            rows
        }
        ldbridge::store::Location::Sqlite(path) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            let rows = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
            let _ = conn.close().await;
            rows
        }
    }
}
