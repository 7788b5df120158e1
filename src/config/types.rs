//! The configuration tree: every section and source as the daemon reads
//! it, with the defaults of a config that has no file, and `Secret`.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;

use crate::domain::Route;

/// The whole configuration, with every secret resolved and every rule checked
/// when it comes from [`Config::load`] or [`Config::from_toml`].
///
/// `Config::default()` is the "no file at all" configuration; tests and
/// `ldbridge demo` build on it and should call [`Config::validate`] after
/// changing fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[dispatch]`
    pub dispatch: DispatchConfig,
    /// `[launchdarkly]`
    pub launchdarkly: LaunchDarklyConfig,
    /// `[segment]`
    pub segment: SegmentConfig,
    /// `[[segment_source]]`; names are unique across both source lists.
    pub segment_sources: Vec<SegmentSource>,
    /// `[[launchdarkly_source]]`; names are unique across both source lists.
    pub launchdarkly_sources: Vec<LaunchDarklySource>,
}

/// `[server]`: listeners and request limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Ingest listener (`listen`, default `127.0.0.1:8088`).
    pub listen: SocketAddr,
    /// Admin API listener; `None` disables the admin API.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for the admin API; always set when `admin_listen` is not
    /// a loopback address.
    pub admin_token: Option<Secret>,
    /// Largest accepted request body, after decompression (1..=100 MB).
    pub max_request_bytes: usize,
    /// How long graceful shutdown waits for in-flight work (extension).
    pub shutdown_timeout: Duration,
    /// Log filter (tracing `EnvFilter` syntax), applied at start and on
    /// SIGHUP unless `LDBRIDGE_LOG` is set (extension).
    pub log_filter: Option<String>,
    /// How long a client may take to send a request's headers, and how long
    /// a keep-alive connection may sit idle between requests (extension).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its headers
    /// are in; slower clients get 408 (extension).
    pub body_timeout: Duration,
    /// Open connections per listener; connections beyond it are answered
    /// 503 and closed at once (extension).
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8088)),
            admin_listen: None,
            admin_token: None,
            max_request_bytes: 512_000,
            shutdown_timeout: Duration::from_secs(10),
            log_filter: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// SQLite `synchronous` pragma (`store.synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// `FULL`: an acknowledged event survives power loss (default).
    #[default]
    Full,
    /// `NORMAL`: faster commits; the last transactions may be lost on power
    /// loss (not on a process crash).
    Normal,
}

impl Synchronous {
    /// The value to put in `PRAGMA synchronous = …`.
    pub fn as_pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// `[store]`: the SQLite file, or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Database file (default `./ldbridge.db`); unused when `url` is set.
    pub path: PathBuf,
    /// A PostgreSQL database (`postgres://…`, or a secret reference to
    /// one) instead of the SQLite file (extension).
    pub url: Option<Secret>,
    /// This node's name among several on one PostgreSQL database: its
    /// claims carry it (default: the host name) (extension).
    pub node: String,
    /// Delivered/skipped events older than this are purged.
    pub retain: Duration,
    /// Durability trade-off (extension).
    pub synchronous: Synchronous,
    /// SQLite busy timeout (extension).
    pub busy_timeout: Duration,
    /// Ingest stops taking new events (503) when the database file would
    /// grow past this many bytes; delivery, which needs a little room for its
    /// bookkeeping, is not capped. `None`: no cap (extension).
    pub max_database_bytes: Option<u64>,
    /// The refusal log keeps at most this many rows, the newest; 0 keeps
    /// none (extension).
    pub refusal_log_max_rows: u64,
    /// Refusals recorded per second at most (a burst of as many is
    /// allowed); the rest are only counted (extension).
    pub refusal_log_per_second: u32,
    /// Ingest refuses (503, "disk full") while the database's file system
    /// has less than this free, leaving delivery and retention room
    /// (extension).
    pub min_free_bytes: u64,
    /// Size of the reserve file beside the database, deleted to give
    /// delivery room when free space falls below half of `min_free_bytes`,
    /// written back when there is room; 0 keeps none (extension).
    pub reserve_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("./ldbridge.db"),
            url: None,
            node: default_node(),
            retain: Duration::from_secs(7 * 24 * 3600),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_database_bytes: None,
            refusal_log_max_rows: 100_000,
            refusal_log_per_second: 100,
            min_free_bytes: 64 << 20,
            reserve_bytes: 32 << 20,
        }
    }
}

/// The host name, as this node's default name (`store.node`).
pub fn default_node() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl StoreConfig {
    /// Where the database is: the PostgreSQL URL when `url` is set, the
    /// SQLite file otherwise.
    pub fn location(&self) -> crate::store::Location {
        match &self.url {
            Some(url) => crate::store::Location::Postgres(url.expose().to_owned()),
            None => crate::store::Location::Sqlite(self.path.clone()),
        }
    }

    /// Whether the store is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.url.is_some()
    }
}

/// `[dispatch]`: scheduling, batching and retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchConfig {
    /// tokio-cron-scheduler expression with a seconds field; checked with the
    /// same parser settings the scheduler uses.
    pub schedule: String,
    /// Events per batch (1..=2500).
    pub max_batch_events: usize,
    /// Bytes per mapped batch (1000..=500000).
    pub max_batch_bytes: usize,
    /// Timeout of one outbound HTTP request (> 0).
    pub request_timeout: Duration,
    /// Delay before retry n+1 is `retry_schedule[min(n, len-1)]`; non-empty,
    /// every step > 0.
    pub retry_schedule: Vec<Duration>,
    /// A batch still failing after this age becomes `failed` (> 0).
    pub give_up_after: Duration,
    /// Concurrent HTTP requests per route (1..=64, extension).
    pub max_in_flight: usize,
    /// Ingest requests waiting for the writer before ingest answers 503
    /// (≥ 1, extension).
    pub writer_queue: usize,
    /// How long a batch stays claimed (`sending`) before a later run takes
    /// it again, whatever became of the attempt; `None`: three request
    /// timeouts (a run sends at most three waves of `max_in_flight`
    /// requests) plus 30 s (extension).
    pub claim_timeout: Option<Duration>,
}

impl DispatchConfig {
    /// How long a claim lasts (see `claim_timeout`).
    pub fn claim_timeout(&self) -> Duration {
        self.claim_timeout
            .unwrap_or(self.request_timeout * 3 + Duration::from_secs(30))
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        let retry_schedule = [5, 30, 120, 600, 1800, 3600, 7200, 14_400, 28_800]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        DispatchConfig {
            schedule: "*/1 * * * * *".to_owned(),
            max_batch_events: 500,
            max_batch_bytes: 480_000,
            request_timeout: Duration::from_secs(15),
            retry_schedule,
            give_up_after: Duration::from_secs(24 * 3600),
            max_in_flight: 4,
            writer_queue: 1024,
            claim_timeout: None,
        }
    }
}

/// `[launchdarkly]`: where LaunchDarkly-bound batches go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchDarklyConfig {
    /// Events API base URL, `http(s)://…`, without a trailing slash when
    /// loaded from a file.
    pub events_url: String,
    /// Client-side SDK host, where `check-config --online` tests client-side
    /// ids (`HEAD /sdk/goals/{id}`, as Segment's destination does) and
    /// mobile keys.
    pub clientsdk_url: String,
    /// Server-side SDK host, where `check-config --online` tests SDK keys.
    pub sdk_url: String,
}

impl Default for LaunchDarklyConfig {
    fn default() -> Self {
        LaunchDarklyConfig {
            events_url: "https://events.launchdarkly.com".to_owned(),
            clientsdk_url: "https://clientsdk.launchdarkly.com".to_owned(),
            sdk_url: "https://sdk.launchdarkly.com".to_owned(),
        }
    }
}

/// `[segment]`: where Segment-bound batches go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    /// Tracking API base URL, `http(s)://…`, without a trailing slash when
    /// loaded from a file.
    pub api_url: String,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            api_url: "https://api.segment.io".to_owned(),
        }
    }
}

/// `[[segment_source]]`: events arriving with `write_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSource {
    /// Identifies the source everywhere (logs, database, CLI).
    pub name: String,
    /// Unique across segment sources; ingest authenticates with it.
    pub write_key: Secret,
    /// When set, `/segment/webhook` requires a valid `X-Signature`.
    pub webhook_secret: Option<Secret>,
    /// Enables the `segment-to-launchdarkly` route.
    pub to_launchdarkly: Option<LaunchDarklyDestination>,
    /// Enables the `segment-relay` route (same write key, unchanged).
    pub relay_to_segment: bool,
    /// `[[segment_source.mapping]]`, or Segment's default mappings when
    /// none is configured.
    pub mappings: crate::map::mapping::Mappings,
}

/// A LaunchDarkly environment to send to; exactly one field is set.
impl SegmentSource {
    /// The routes its events take: mapped to LaunchDarkly, relayed to
    /// Segment, or both (ingest asks; it knows no destinations itself).
    pub fn routes(&self) -> Vec<Route> {
        let mut routes = Vec::new();
        if self.to_launchdarkly.is_some() {
            routes.push(Route::SegmentToLaunchDarkly);
        }
        if self.relay_to_segment {
            routes.push(Route::SegmentRelay);
        }
        routes
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDarklyDestination {
    /// Send through the browser endpoint `/events/bulk/{id}`.
    pub client_side_id: Option<String>,
    /// Send through the server endpoint `/bulk` with this key.
    pub sdk_key: Option<Secret>,
    /// This source's own events host (another LaunchDarkly instance, a
    /// Relay Proxy); `None`: `launchdarkly.events_url`.
    pub events_url: Option<String>,
}

/// `[[launchdarkly_source]]`: events from SDKs using any of its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDarklySource {
    /// Identifies the source everywhere (logs, database, CLI).
    pub name: String,
    /// Server-side SDK key; unique across launchdarkly sources.
    pub sdk_key: Option<Secret>,
    /// Mobile key; unique across launchdarkly sources.
    pub mobile_key: Option<Secret>,
    /// Browser client-side id; unique across launchdarkly sources. Written
    /// into Segment `properties.environment`.
    pub client_side_id: Option<String>,
    /// Written into Segment `properties.project`.
    pub project_id: Option<String>,
    /// Enables the `launchdarkly-to-segment` route.
    pub to_segment: Option<SegmentDestination>,
    /// Enables the `launchdarkly-relay` route (same credentials, unchanged).
    pub relay_to_launchdarkly: bool,
    /// Copy LaunchDarkly context custom attributes into Segment traits
    /// (extension, default false).
    pub copy_custom_data: bool,
}

/// A Segment source to send to.
impl LaunchDarklySource {
    /// The routes its events take: mapped to Segment, relayed to
    /// LaunchDarkly, or both.
    pub fn routes(&self) -> Vec<Route> {
        let mut routes = Vec::new();
        if self.to_segment.is_some() {
            routes.push(Route::LaunchDarklyToSegment);
        }
        if self.relay_to_launchdarkly {
            routes.push(Route::LaunchDarklyRelay);
        }
        routes
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDestination {
    /// Write key used as the Basic-auth username on `/v1/batch`.
    pub write_key: Secret,
    /// Which events are exported (`None`: all that map); the others are
    /// skipped with "no mapping matches".
    pub trigger: Option<crate::map::trigger::Trigger>,
    /// This source's own tracking API host; `None`: `segment.api_url`.
    pub api_url: Option<String>,
    /// The context kind whose key becomes Segment's `userId` (default
    /// `user`).
    pub user_id_context_kind: Option<String>,
}

/// A configured source of either kind, as found by [`Config::source_by_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRef<'a> {
    /// A `[[segment_source]]`.
    Segment(&'a SegmentSource),
    /// A `[[launchdarkly_source]]`.
    LaunchDarkly(&'a LaunchDarklySource),
}

impl SourceRef<'_> {
    /// The source's unique name.
    pub fn name(&self) -> &str {
        match self {
            SourceRef::Segment(s) => &s.name,
            SourceRef::LaunchDarkly(s) => &s.name,
        }
    }
}

/// A resolved secret value. `Debug` prints `Secret(***)` and `Display` prints
/// `***`, so a secret can sit in any struct that gets logged; only
/// [`Secret::expose`] gives the value. Equality is not constant-time.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(pub(super) String);

impl Secret {
    /// Wraps an already resolved value (no `env:`/`file:`/`cred:` handling).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value, for putting on the wire and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
