//! TOML configuration: parsing, secret references, defaults and validation.
//!
//! Owns the `Config` tree (architecture.md §2 plus our extensions), the
//! `Secret` type, resolution of `env:` / `file:` / `cred:` secret references
//! and every rule that makes a config valid. Parsing happens in two steps: the
//! file is deserialized into private `raw` structs that keep secrets as
//! unresolved reference strings and durations as spanned strings; then
//! `Resolver` turns them into `Config`, so that every error can name the full
//! key (`segment_source "web-prod" write_key`) and a line where we have one.
//!
//! Does not own: where the file path comes from (CLI flag / `LDBRIDGE_CONFIG`),
//! what the values mean at run time (store, dispatch, ingest read them), or
//! logging; this module performs no I/O beyond reading the config file and
//! secret files.
//!
//! Secrets never reach an error message: toml's own error `Display` quotes
//! the offending source line, which may hold a literal secret, so parse errors
//! are rebuilt from the message, the span and the key name only.

use std::{
    collections::HashMap,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Largest accepted `server.max_request_bytes` (100 MB).
const MAX_REQUEST_BYTES_LIMIT: usize = 100_000_000;
/// Largest `dispatch.max_batch_events`: LaunchDarkly and Segment both choke on
/// bigger batches long before the byte limit matters.
const MAX_BATCH_EVENTS_LIMIT: usize = 2500;
/// `dispatch.max_batch_bytes` range; the upper bound is Segment's 500 KB
/// request limit.
const MAX_BATCH_BYTES_RANGE: (usize, usize) = (1000, 500_000);
const MAX_IN_FLIGHT_LIMIT: usize = 64;

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

/// `[store]`: the SQLite file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Database file (default `./ldbridge.db`).
    pub path: PathBuf,
    /// Delivered/skipped events older than this are purged.
    pub retain: Duration,
    /// Durability trade-off (extension).
    pub synchronous: Synchronous,
    /// SQLite busy timeout (extension).
    pub busy_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("./ldbridge.db"),
            retain: Duration::from_secs(7 * 24 * 3600),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
        }
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
}

impl Default for LaunchDarklyConfig {
    fn default() -> Self {
        LaunchDarklyConfig {
            events_url: "https://events.launchdarkly.com".to_owned(),
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
}

/// A LaunchDarkly environment to send to; exactly one field is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDarklyDestination {
    /// Send through the browser endpoint `/events/bulk/{id}`.
    pub client_side_id: Option<String>,
    /// Send through the server endpoint `/bulk` with this key.
    pub sdk_key: Option<Secret>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDestination {
    /// Write key used as the Basic-auth username on `/v1/batch`.
    pub write_key: Secret,
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
pub struct Secret(String);

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

/// Why a configuration was rejected. Every variant is a usage/config error
/// (exit code 2); the variants exist for messages, not for branching. No
/// message ever contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a wrong type or a bad duration; the text
    /// has the origin, line, column and key.
    #[error("{0}")]
    Parse(String),
    /// A value breaks a rule.
    #[error("{key}: {reason}")]
    Invalid {
        /// Full key, e.g. `dispatch.max_batch_events` or
        /// `segment_source "web" to_launchdarkly`.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A secret reference could not be resolved.
    #[error("{key}: {reason}")]
    Secret {
        /// Full key of the secret.
        key: String,
        /// What failed (names the variable, file or credential, never the
        /// value).
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

fn secret_error(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Secret {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Environment lookup used for `env:` secrets and `CREDENTIALS_DIRECTORY`;
/// injectable so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    // A non-UTF-8 value is reported as "not set"; secrets are ASCII anyway.
    std::env::var(name).ok()
}

impl Config {
    /// Reads, resolves and validates the file at `path`; `None` gives
    /// `Config::default()` (no file needed). Secrets resolve against the
    /// process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => {
                let config = Config::default();
                config.validate()?;
                Ok(config)
            }
            Some(path) => {
                let text = read_config_file(path)?;
                Config::from_toml(&text, &path.display().to_string())
            }
        }
    }

    /// Parses `text` (`origin` names it in messages), resolves secrets
    /// against the process environment and validates. Empty text gives the
    /// defaults.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, origin, &process_env)
    }

    /// Like [`Config::from_toml`], with `env:` variables and
    /// `CREDENTIALS_DIRECTORY` looked up through `env` instead of the process
    /// environment.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: EnvLookup<'_>,
    ) -> Result<Config, ConfigError> {
        let file = parse_raw(text, origin)?;
        let resolver = Resolver { text, origin, env };
        let config = resolver.config(file)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule of architecture.md §2 and our extensions; the error
    /// names the first offending key. Does not resolve anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_server(&self.server)?;
        validate_dispatch(&self.dispatch)?;
        validate_url("launchdarkly.events_url", &self.launchdarkly.events_url)?;
        validate_url("segment.api_url", &self.segment.api_url)?;
        validate_names(self)?;
        self.segment_sources
            .iter()
            .enumerate()
            .try_for_each(|(i, s)| validate_segment_source(i, s))?;
        self.launchdarkly_sources
            .iter()
            .enumerate()
            .try_for_each(|(i, s)| validate_launchdarkly_source(i, s))?;
        validate_unique_credentials(self)
    }

    /// The segment source whose write key is `write_key`; `None` if no source
    /// has it. Not constant-time.
    pub fn segment_source_by_key(&self, write_key: &str) -> Option<&SegmentSource> {
        self.segment_sources
            .iter()
            .find(|s| s.write_key.expose() == write_key)
    }

    /// The launchdarkly source whose `sdk_key` is `key`; `None` if none.
    pub fn launchdarkly_source_by_sdk_key(&self, key: &str) -> Option<&LaunchDarklySource> {
        self.launchdarkly_sources
            .iter()
            .find(|s| s.sdk_key.as_ref().is_some_and(|k| k.expose() == key))
    }

    /// The launchdarkly source whose `mobile_key` is `key`; `None` if none.
    pub fn launchdarkly_source_by_mobile_key(&self, key: &str) -> Option<&LaunchDarklySource> {
        self.launchdarkly_sources
            .iter()
            .find(|s| s.mobile_key.as_ref().is_some_and(|k| k.expose() == key))
    }

    /// The launchdarkly source whose `client_side_id` is `id`; `None` if none.
    pub fn launchdarkly_source_by_client_side_id(&self, id: &str) -> Option<&LaunchDarklySource> {
        self.launchdarkly_sources
            .iter()
            .find(|s| s.client_side_id.as_deref() == Some(id))
    }

    /// The source of either kind called `name`; `None` if there is none.
    pub fn source_by_name(&self, name: &str) -> Option<SourceRef<'_>> {
        let segment = self.segment_sources.iter().find(|s| s.name == name);
        let launchdarkly = || self.launchdarkly_sources.iter().find(|s| s.name == name);
        segment
            .map(SourceRef::Segment)
            .or_else(|| launchdarkly().map(SourceRef::LaunchDarkly))
    }
}

impl StoreConfig {
    /// Reads only `[store]` from the file at `path` (`None` → defaults), for
    /// CLI commands that just need the database. The whole file must still
    /// be valid TOML with known keys, but secrets are not resolved, so an
    /// operator's shell needs neither the daemon's environment nor its
    /// systemd credentials.
    pub fn load(path: Option<&Path>) -> Result<StoreConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(StoreConfig::default());
        };
        let text = read_config_file(path)?;
        let origin = path.display().to_string();
        let file = parse_raw(&text, &origin)?;
        let resolver = Resolver {
            text: &text,
            origin: &origin,
            env: &|_| None,
        };
        resolver.store(file.store)
    }
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse_raw(text: &str, origin: &str) -> Result<raw::File, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // Not `e.to_string()`: its snippet quotes the source line.
        let at = e
            .span()
            .map(|span| location(text, span.start, None))
            .unwrap_or_default();
        ConfigError::Parse(format!("{origin}{at}: {}", redact_strings(e.message())))
    })
}

/// Drops the value from serde's `invalid type: string "…", expected …`, in
/// case a secret was pasted into a non-secret field.
fn redact_strings(message: &str) -> String {
    let Some(start) = message.find("string \"") else {
        return message.to_owned();
    };
    let value_start = start + "string ".len();
    match message[value_start..].rfind("\", expected") {
        Some(end) => format!(
            "{}{}",
            &message[..value_start - 1],
            &message[value_start + end + 1..]
        ),
        None => message[..start + "string".len()].to_owned(),
    }
}

/// `": line L, column C (key)"` for byte `offset` of `text`. `key` is the
/// known key; without one, the key is guessed from the text before `=` on
/// that line and the nearest table header, keeping only bare-key characters
/// so a value can never leak into the message.
fn location(text: &str, offset: usize, key: Option<&str>) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let key = match key {
        Some(key) => Some(key.to_owned()),
        None => guess_key(text, line_start),
    };
    match key {
        Some(key) => format!(": line {line_no}, column {column} ({key})"),
        None => format!(": line {line_no}, column {column}"),
    }
}

fn guess_key(text: &str, line_start: usize) -> Option<String> {
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some(header) = table_header(line) {
        return Some(header.to_owned());
    }
    let header = text[..line_start].lines().rev().find_map(table_header);
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| is_bare_key(k));
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (Some(h), None) => Some(h.to_owned()),
        (None, Some(k)) => Some(k.to_owned()),
        (None, None) => None,
    }
}

fn table_header(line: &str) -> Option<&str> {
    // Headers often carry a trailing comment (the architecture example does).
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.strip_suffix("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?
        .trim();
    is_bare_key(inner).then_some(inner)
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Turns the raw file into `Config`: parses durations, resolves secrets and
/// normalizes URLs, naming the key in every error.
struct Resolver<'a> {
    text: &'a str,
    origin: &'a str,
    env: EnvLookup<'a>,
}

impl Resolver<'_> {
    fn config(&self, file: raw::File) -> Result<Config, ConfigError> {
        let segment_sources = file
            .segment_source
            .into_iter()
            .enumerate()
            .map(|(i, s)| self.segment_source(i, s))
            .collect::<Result<_, _>>()?;
        let launchdarkly_sources = file
            .launchdarkly_source
            .into_iter()
            .enumerate()
            .map(|(i, s)| self.launchdarkly_source(i, s))
            .collect::<Result<_, _>>()?;
        Ok(Config {
            server: self.server(file.server)?,
            store: self.store(file.store)?,
            dispatch: self.dispatch(file.dispatch)?,
            launchdarkly: LaunchDarklyConfig {
                events_url: strip_trailing_slash(file.launchdarkly.events_url),
            },
            segment: SegmentConfig {
                api_url: strip_trailing_slash(file.segment.api_url),
            },
            segment_sources,
            launchdarkly_sources,
        })
    }

    fn server(&self, raw: raw::Server) -> Result<ServerConfig, ConfigError> {
        let d = ServerConfig::default();
        Ok(ServerConfig {
            listen: raw.listen.unwrap_or(d.listen),
            admin_listen: raw.admin_listen,
            admin_token: self.optional_secret(raw.admin_token, "server.admin_token")?,
            max_request_bytes: raw.max_request_bytes.unwrap_or(d.max_request_bytes),
            shutdown_timeout: self.duration_or(
                raw.shutdown_timeout,
                "server.shutdown_timeout",
                d.shutdown_timeout,
            )?,
            log_filter: match raw.log_filter {
                Some(filter) => match tracing_subscriber::EnvFilter::try_new(&filter) {
                    Ok(_) => Some(filter),
                    Err(error) => {
                        return Err(invalid(
                            "server.log_filter",
                            format!("{filter:?} is not a log filter: {error}"),
                        ))
                    }
                },
                None => None,
            },
        })
    }

    fn store(&self, raw: raw::Store) -> Result<StoreConfig, ConfigError> {
        let d = StoreConfig::default();
        Ok(StoreConfig {
            path: raw.path.unwrap_or(d.path),
            retain: self.duration_or(raw.retain, "store.retain", d.retain)?,
            synchronous: raw.synchronous.unwrap_or(d.synchronous),
            busy_timeout: self.duration_or(
                raw.busy_timeout,
                "store.busy_timeout",
                d.busy_timeout,
            )?,
        })
    }

    fn dispatch(&self, raw: raw::Dispatch) -> Result<DispatchConfig, ConfigError> {
        let d = DispatchConfig::default();
        let retry_schedule = match raw.retry_schedule {
            None => d.retry_schedule,
            Some(steps) => steps
                .iter()
                .enumerate()
                .map(|(i, s)| self.duration(s, &format!("dispatch.retry_schedule[{i}]")))
                .collect::<Result<_, _>>()?,
        };
        Ok(DispatchConfig {
            schedule: raw.schedule.unwrap_or(d.schedule),
            max_batch_events: raw.max_batch_events.unwrap_or(d.max_batch_events),
            max_batch_bytes: raw.max_batch_bytes.unwrap_or(d.max_batch_bytes),
            request_timeout: self.duration_or(
                raw.request_timeout,
                "dispatch.request_timeout",
                d.request_timeout,
            )?,
            retry_schedule,
            give_up_after: self.duration_or(
                raw.give_up_after,
                "dispatch.give_up_after",
                d.give_up_after,
            )?,
            max_in_flight: raw.max_in_flight.unwrap_or(d.max_in_flight),
            writer_queue: raw.writer_queue.unwrap_or(d.writer_queue),
        })
    }

    fn segment_source(
        &self,
        index: usize,
        raw: raw::SegmentSource,
    ) -> Result<SegmentSource, ConfigError> {
        let label = source_label("segment_source", index, &raw.name);
        let to_launchdarkly = match raw.to_launchdarkly {
            None => None,
            Some(dest) => Some(LaunchDarklyDestination {
                client_side_id: dest.client_side_id,
                sdk_key: self
                    .optional_secret(dest.sdk_key, &format!("{label} to_launchdarkly.sdk_key"))?,
            }),
        };
        Ok(SegmentSource {
            write_key: self.secret(&raw.write_key, &format!("{label} write_key"))?,
            webhook_secret: self
                .optional_secret(raw.webhook_secret, &format!("{label} webhook_secret"))?,
            name: raw.name,
            to_launchdarkly,
            relay_to_segment: raw.relay_to_segment,
        })
    }

    fn launchdarkly_source(
        &self,
        index: usize,
        raw: raw::LaunchDarklySource,
    ) -> Result<LaunchDarklySource, ConfigError> {
        let label = source_label("launchdarkly_source", index, &raw.name);
        let to_segment = match raw.to_segment {
            None => None,
            Some(dest) => Some(SegmentDestination {
                write_key: self
                    .secret(&dest.write_key, &format!("{label} to_segment.write_key"))?,
            }),
        };
        Ok(LaunchDarklySource {
            sdk_key: self.optional_secret(raw.sdk_key, &format!("{label} sdk_key"))?,
            mobile_key: self.optional_secret(raw.mobile_key, &format!("{label} mobile_key"))?,
            name: raw.name,
            client_side_id: raw.client_side_id,
            project_id: raw.project_id,
            to_segment,
            relay_to_launchdarkly: raw.relay_to_launchdarkly,
            copy_custom_data: raw.copy_custom_data,
        })
    }

    fn duration_or(
        &self,
        raw: Option<toml::Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        raw.map_or(Ok(default), |s| self.duration(&s, key))
    }

    fn duration(&self, raw: &toml::Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(raw.get_ref()).map_err(|e| {
            let at = location(self.text, raw.span().start, Some(key));
            ConfigError::Parse(format!(
                "{}{at}: invalid duration {:?} (write e.g. \"250ms\", \"5s\", \"2m\", \"24h\", \"7d\"): {e}",
                self.origin,
                raw.get_ref()
            ))
        })
    }

    fn optional_secret(
        &self,
        raw: Option<String>,
        key: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        raw.map(|r| self.secret(&r, key)).transpose()
    }

    /// Resolves one secret reference; see [`resolve_secret`].
    fn secret(&self, reference: &str, key: &str) -> Result<Secret, ConfigError> {
        resolve_secret(reference, key, self.env)
    }
}

/// Resolves `env:NAME`, `file:/path` (trimmed), `cred:NAME` (trimmed, from
/// `$CREDENTIALS_DIRECTORY`) or a literal. An empty result is an error.
fn resolve_secret(reference: &str, key: &str, env: EnvLookup<'_>) -> Result<Secret, ConfigError> {
    let value = if let Some(name) = reference.strip_prefix("env:") {
        secret_from_env(name, key, env)?
    } else if let Some(path) = reference.strip_prefix("file:") {
        secret_from_file(Path::new(path), key, &format!("file {path}"))?
    } else if let Some(name) = reference.strip_prefix("cred:") {
        secret_from_credential(name, key, env)?
    } else {
        reference.to_owned()
    };
    if value.is_empty() {
        return Err(secret_error(key, "secret is empty"));
    }
    Ok(Secret(value))
}

fn secret_from_env(name: &str, key: &str, env: EnvLookup<'_>) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(secret_error(key, "`env:` needs a variable name"));
    }
    match env(name) {
        None => Err(secret_error(
            key,
            format!("environment variable {name} is not set"),
        )),
        Some(v) if v.is_empty() => Err(secret_error(
            key,
            format!("environment variable {name} is empty"),
        )),
        Some(v) => Ok(v),
    }
}

fn secret_from_file(path: &Path, key: &str, what: &str) -> Result<String, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(secret_error(key, format!("{what} is empty"))),
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) => Err(secret_error(key, format!("cannot read {what}: {e}"))),
    }
}

fn secret_from_credential(
    name: &str,
    key: &str,
    env: EnvLookup<'_>,
) -> Result<String, ConfigError> {
    // systemd credential names are plain file names; refusing separators
    // keeps `cred:` from reading outside the credentials directory.
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(secret_error(
            key,
            format!("`cred:{name}` is not a valid credential name"),
        ));
    }
    let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) else {
        return Err(secret_error(
            key,
            format!(
                "`cred:{name}` needs $CREDENTIALS_DIRECTORY (set by systemd LoadCredential=), which is not set"
            ),
        ));
    };
    let path = Path::new(&dir).join(name);
    secret_from_file(
        &path,
        key,
        &format!("credential {name} ({})", path.display()),
    )
}

fn strip_trailing_slash(mut url: String) -> String {
    if url.ends_with('/') {
        url.pop();
    }
    url
}

/// `segment_source "web-prod"` when the name is usable, else
/// `segment_source[0]`.
fn source_label(kind: &str, index: usize, name: &str) -> String {
    if is_valid_name(name) {
        format!("{kind} \"{name}\"")
    } else {
        format!("{kind}[{index}]")
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn validate_server(server: &ServerConfig) -> Result<(), ConfigError> {
    if !(1..=MAX_REQUEST_BYTES_LIMIT).contains(&server.max_request_bytes) {
        return Err(invalid(
            "server.max_request_bytes",
            format!(
                "{} is out of range 1..={MAX_REQUEST_BYTES_LIMIT}",
                server.max_request_bytes
            ),
        ));
    }
    match server.admin_listen {
        Some(addr) if !addr.ip().is_loopback() && server.admin_token.is_none() => Err(invalid(
            "server.admin_token",
            format!("required because server.admin_listen ({addr}) is not a loopback address"),
        )),
        _ => Ok(()),
    }
}

fn validate_dispatch(d: &DispatchConfig) -> Result<(), ConfigError> {
    check_range(
        "dispatch.max_batch_events",
        d.max_batch_events,
        1,
        MAX_BATCH_EVENTS_LIMIT,
    )?;
    let (lo, hi) = MAX_BATCH_BYTES_RANGE;
    check_range("dispatch.max_batch_bytes", d.max_batch_bytes, lo, hi)?;
    check_range(
        "dispatch.max_in_flight",
        d.max_in_flight,
        1,
        MAX_IN_FLIGHT_LIMIT,
    )?;
    check_range("dispatch.writer_queue", d.writer_queue, 1, usize::MAX)?;
    check_positive("dispatch.request_timeout", d.request_timeout)?;
    check_positive("dispatch.give_up_after", d.give_up_after)?;
    if d.retry_schedule.is_empty() {
        return Err(invalid(
            "dispatch.retry_schedule",
            "must list at least one delay",
        ));
    }
    for (i, step) in d.retry_schedule.iter().enumerate() {
        check_positive(&format!("dispatch.retry_schedule[{i}]"), *step)?;
    }
    validate_schedule(&d.schedule)
}

/// Parses the schedule exactly as tokio-cron-scheduler 0.15 does in
/// `Job::new_async` (croner, seconds required, day-of-month AND
/// day-of-week), so whatever passes here the scheduler accepts. That parser
/// also takes an optional seventh (year) field.
fn validate_schedule(schedule: &str) -> Result<(), ConfigError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .map(drop)
        .map_err(|e| {
            invalid(
                "dispatch.schedule",
                format!(
                    "{schedule:?} is not a cron expression with seconds (e.g. \"*/1 * * * * *\"): {e}"
                ),
            )
        })
}

fn check_range(key: &str, value: usize, lo: usize, hi: usize) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    let reason = if hi == usize::MAX {
        format!("{value} is too small (minimum {lo})")
    } else {
        format!("{value} is out of range {lo}..={hi}")
    };
    Err(invalid(key, reason))
}

fn check_positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(())
}

fn validate_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => Ok(()),
        _ => Err(invalid(
            key,
            format!("{url:?} is not an http:// or https:// URL"),
        )),
    }
}

/// Names are non-empty, made of `[A-Za-z0-9._-]` and unique across both
/// source lists (the database and CLI identify a source by name alone).
fn validate_names(config: &Config) -> Result<(), ConfigError> {
    let segment = config
        .segment_sources
        .iter()
        .enumerate()
        .map(|(i, s)| ("segment_source", i, s.name.as_str()));
    let launchdarkly = config
        .launchdarkly_sources
        .iter()
        .enumerate()
        .map(|(i, s)| ("launchdarkly_source", i, s.name.as_str()));
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (kind, i, name) in segment.chain(launchdarkly) {
        let key = format!("{kind}[{i}].name");
        if !is_valid_name(name) {
            return Err(invalid(
                key,
                format!("{name:?} must be non-empty and use only A-Z a-z 0-9 . _ -"),
            ));
        }
        if let Some(first) = seen.insert(name, format!("{kind}[{i}]")) {
            return Err(invalid(key, format!("{name:?} is already used by {first}")));
        }
    }
    Ok(())
}

fn validate_segment_source(index: usize, source: &SegmentSource) -> Result<(), ConfigError> {
    let label = source_label("segment_source", index, &source.name);
    let Some(dest) = &source.to_launchdarkly else {
        return Ok(());
    };
    match (&dest.client_side_id, &dest.sdk_key) {
        (Some(id), None) => {
            validate_client_side_id(&format!("{label} to_launchdarkly.client_side_id"), id)
        }
        (None, Some(_)) => Ok(()),
        _ => Err(invalid(
            format!("{label} to_launchdarkly"),
            "set exactly one of client_side_id or sdk_key",
        )),
    }
}

fn validate_launchdarkly_source(
    index: usize,
    source: &LaunchDarklySource,
) -> Result<(), ConfigError> {
    let label = source_label("launchdarkly_source", index, &source.name);
    if source.sdk_key.is_none() && source.mobile_key.is_none() && source.client_side_id.is_none() {
        return Err(invalid(
            label,
            "set at least one of sdk_key, mobile_key or client_side_id",
        ));
    }
    if let Some(id) = &source.client_side_id {
        validate_client_side_id(&format!("{label} client_side_id"), id)?;
    }
    match &source.project_id {
        Some(p) if p.trim().is_empty() => {
            Err(invalid(format!("{label} project_id"), "must not be empty"))
        }
        _ => Ok(()),
    }
}

/// A client-side id goes into URL paths (`/events/bulk/{id}`), so it must be
/// one non-empty path segment. Its characters are not checked further: the
/// architecture example writes ids with a placeholder `…`.
fn validate_client_side_id(key: &str, id: &str) -> Result<(), ConfigError> {
    if !id.is_empty() && !id.contains(|c: char| c == '/' || c.is_whitespace()) {
        return Ok(());
    }
    Err(invalid(
        key,
        format!("{id:?} must be non-empty, without '/' or spaces"),
    ))
}

/// Ingest finds a source by credential, so a credential naming two sources
/// would be ambiguous. Messages name the sources, never the value.
fn validate_unique_credentials(config: &Config) -> Result<(), ConfigError> {
    let segment_keys = config.segment_sources.iter().enumerate().map(|(i, s)| {
        (
            source_label("segment_source", i, &s.name),
            Some(s.write_key.expose()),
        )
    });
    check_unique("write_key", segment_keys)?;
    let ld = |field: &'static str, get: fn(&LaunchDarklySource) -> Option<&str>| {
        let items = config
            .launchdarkly_sources
            .iter()
            .enumerate()
            .map(move |(i, s)| (source_label("launchdarkly_source", i, &s.name), get(s)));
        check_unique(field, items)
    };
    ld("sdk_key", |s| s.sdk_key.as_ref().map(Secret::expose))?;
    ld("mobile_key", |s| s.mobile_key.as_ref().map(Secret::expose))?;
    ld("client_side_id", |s| s.client_side_id.as_deref())
}

fn check_unique<'a>(
    field: &str,
    items: impl Iterator<Item = (String, Option<&'a str>)>,
) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (label, value) in items {
        let Some(value) = value else { continue };
        if let Some(first) = seen.get(value) {
            return Err(invalid(
                format!("{label} {field}"),
                format!("same {field} as {first}; each source needs its own"),
            ));
        }
        seen.insert(value, label);
    }
    Ok(())
}

/// The file as written: secrets are unresolved reference strings, durations
/// are spanned strings, absent keys are `None` (defaults live in the public
/// types' `Default` impls only).
mod raw {
    use std::{net::SocketAddr, path::PathBuf};

    use serde::Deserialize;
    use toml::Spanned;

    use super::{LaunchDarklyConfig, SegmentConfig, Synchronous};

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct File {
        pub server: Server,
        pub store: Store,
        pub dispatch: Dispatch,
        pub launchdarkly: LaunchDarklyConfig,
        pub segment: SegmentConfig,
        pub segment_source: Vec<SegmentSource>,
        pub launchdarkly_source: Vec<LaunchDarklySource>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Server {
        pub listen: Option<SocketAddr>,
        pub admin_listen: Option<SocketAddr>,
        pub admin_token: Option<String>,
        pub max_request_bytes: Option<usize>,
        pub shutdown_timeout: Option<Spanned<String>>,
        pub log_filter: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Store {
        pub path: Option<PathBuf>,
        pub retain: Option<Spanned<String>>,
        pub synchronous: Option<Synchronous>,
        pub busy_timeout: Option<Spanned<String>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Dispatch {
        pub schedule: Option<String>,
        pub max_batch_events: Option<usize>,
        pub max_batch_bytes: Option<usize>,
        pub request_timeout: Option<Spanned<String>>,
        pub retry_schedule: Option<Vec<Spanned<String>>>,
        pub give_up_after: Option<Spanned<String>>,
        pub max_in_flight: Option<usize>,
        pub writer_queue: Option<usize>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct SegmentSource {
        pub name: String,
        pub write_key: String,
        pub webhook_secret: Option<String>,
        pub to_launchdarkly: Option<LaunchDarklyDestination>,
        #[serde(default)]
        pub relay_to_segment: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct LaunchDarklyDestination {
        pub client_side_id: Option<String>,
        pub sdk_key: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct LaunchDarklySource {
        pub name: String,
        pub sdk_key: Option<String>,
        pub mobile_key: Option<String>,
        pub client_side_id: Option<String>,
        pub project_id: Option<String>,
        pub to_segment: Option<SegmentDestination>,
        #[serde(default)]
        pub relay_to_launchdarkly: bool,
        #[serde(default)]
        pub copy_custom_data: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct SegmentDestination {
        pub write_key: String,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ORIGIN: &str = "test.toml";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, ORIGIN, &no_env)
    }

    fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_toml_with_env(text, ORIGIN, &|name| vars.get(name).cloned())
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_error(text: &str, expected: &[&str]) {
        let message = error(text);
        for part in expected {
            assert!(
                message.contains(part),
                "error {message:?} should contain {part:?}"
            );
        }
    }

    const WEB: &str = "[[segment_source]]\nname = \"web\"\nwrite_key = \"wk-web\"\n";

    const ARCHITECTURE_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8088"          # ingest: Segment- and LaunchDarkly-compatible endpoints
admin_listen = "127.0.0.1:8089"    # admin API, /metrics, /healthz, /readyz; omit to disable
admin_token = "file:/etc/ldbridge/admin-token"   # bearer token for the admin API; required unless admin_listen is loopback
max_request_bytes = 512000

[store]
path = "/var/lib/ldbridge/ldbridge.db"
retain = "7d"                      # delivered/skipped events and their attempts are purged after this

[dispatch]
schedule = "*/1 * * * * *"         # tokio-cron-scheduler expression (with seconds)
max_batch_events = 500
max_batch_bytes = 480000
request_timeout = "15s"
retry_schedule = ["5s", "30s", "2m", "10m", "30m", "1h", "2h", "4h", "8h"]
give_up_after = "24h"              # a batch older than this that still fails becomes `failed`

[launchdarkly]
events_url = "https://events.launchdarkly.com"

[segment]
api_url = "https://api.segment.io"

[[segment_source]]                  # events arriving with this write key ...
name = "web-prod"
write_key = "env:SEGMENT_WRITE_KEY_WEB"
webhook_secret = "cred:segment-webhook"          # optional: verify X-Signature on /segment/webhook
to_launchdarkly = { client_side_id = "5d4b…" }   # ... become LD custom events here (or sdk_key = "…")
relay_to_segment = false                          # ... and optionally pass through to Segment unchanged

[[launchdarkly_source]]             # events from SDKs using any of these credentials ...
name = "prod"
sdk_key = "env:LD_SDK_KEY"
mobile_key = "env:LD_MOBILE_KEY"
client_side_id = "5d4b…"
project_id = "5744c…"                              # written into properties.project
                                                   # (client_side_id is written into properties.environment)
to_segment = { write_key = "env:SEGMENT_WRITE_KEY_LD" }   # ... become Segment track/page calls here
relay_to_launchdarkly = true                       # ... and still reach LaunchDarkly unchanged
"#;

    #[test]
    fn empty_text_gives_the_defaults() {
        let config = parse("").expect("empty config is valid");
        assert_eq!(config, Config::default());
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8088");
        assert_eq!(config.server.admin_listen, None);
        assert_eq!(config.server.max_request_bytes, 512_000);
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.store.path, PathBuf::from("./ldbridge.db"));
        assert_eq!(config.store.retain, Duration::from_secs(7 * 86_400));
        assert_eq!(config.store.synchronous, Synchronous::Full);
        assert_eq!(config.store.busy_timeout, Duration::from_secs(5));
        assert_eq!(config.dispatch.schedule, "*/1 * * * * *");
        assert_eq!(config.dispatch.max_batch_events, 500);
        assert_eq!(config.dispatch.max_batch_bytes, 480_000);
        assert_eq!(config.dispatch.request_timeout, Duration::from_secs(15));
        assert_eq!(config.dispatch.retry_schedule.len(), 9);
        assert_eq!(config.dispatch.retry_schedule[2], Duration::from_secs(120));
        assert_eq!(
            config.dispatch.retry_schedule[8],
            Duration::from_secs(8 * 3600)
        );
        assert_eq!(config.dispatch.give_up_after, Duration::from_secs(86_400));
        assert_eq!(config.dispatch.max_in_flight, 4);
        assert_eq!(config.dispatch.writer_queue, 1024);
        assert_eq!(
            config.launchdarkly.events_url,
            "https://events.launchdarkly.com"
        );
        assert_eq!(config.segment.api_url, "https://api.segment.io");
        assert!(config.segment_sources.is_empty());
        assert!(config.launchdarkly_sources.is_empty());
    }

    #[test]
    fn empty_sections_give_the_defaults() {
        let text = "[server]\n[store]\n[dispatch]\n[launchdarkly]\n[segment]\n";
        assert_eq!(parse(text).expect("valid"), Config::default());
    }

    #[test]
    fn load_without_a_file_gives_the_defaults() {
        assert_eq!(Config::load(None).expect("valid"), Config::default());
        assert_eq!(
            StoreConfig::load(None).expect("valid"),
            StoreConfig::default()
        );
    }

    #[test]
    fn load_reads_the_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ldbridge.toml");
        std::fs::write(&path, "[store]\npath = \"/tmp/x.db\"\n").expect("write");
        let config = Config::load(Some(&path)).expect("valid");
        assert_eq!(config.store.path, PathBuf::from("/tmp/x.db"));

        std::fs::write(&path, "[store]\npth = 1\n").expect("write");
        let message = Config::load(Some(&path))
            .expect_err("unknown key")
            .to_string();
        assert!(message.contains("ldbridge.toml: line 2"), "{message}");

        let missing = dir.path().join("missing.toml");
        let err = Config::load(Some(&missing)).expect_err("no file");
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(err.to_string().contains("missing.toml"));
    }

    #[test]
    fn the_architecture_example_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("admin-token");
        std::fs::write(&token, "  admin-secret\n").expect("write");
        std::fs::write(dir.path().join("segment-webhook"), "hook-secret\n").expect("write");
        let text = ARCHITECTURE_EXAMPLE.replace(
            "/etc/ldbridge/admin-token",
            token.to_str().expect("utf-8 path"),
        );
        let creds = dir.path().to_str().expect("utf-8 path");
        let config = parse_with(
            &text,
            &[
                ("SEGMENT_WRITE_KEY_WEB", "wk-web"),
                ("LD_SDK_KEY", "sdk-123"),
                ("LD_MOBILE_KEY", "mob-123"),
                ("SEGMENT_WRITE_KEY_LD", "wk-ld"),
                ("CREDENTIALS_DIRECTORY", creds),
            ],
        )
        .expect("the documented example is valid");

        assert_eq!(
            config.server.admin_listen,
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8089)))
        );
        assert_eq!(config.server.admin_token, Some(Secret::new("admin-secret")));
        assert_eq!(
            config.store.path,
            PathBuf::from("/var/lib/ldbridge/ldbridge.db")
        );
        assert_eq!(config.dispatch, DispatchConfig::default());

        let web = &config.segment_sources[0];
        assert_eq!(web.name, "web-prod");
        assert_eq!(web.write_key.expose(), "wk-web");
        assert_eq!(web.webhook_secret, Some(Secret::new("hook-secret")));
        let dest = web.to_launchdarkly.as_ref().expect("to_launchdarkly");
        assert_eq!(dest.client_side_id.as_deref(), Some("5d4b…"));
        assert_eq!(dest.sdk_key, None);
        assert!(!web.relay_to_segment);

        let prod = &config.launchdarkly_sources[0];
        assert_eq!(prod.name, "prod");
        assert_eq!(prod.sdk_key, Some(Secret::new("sdk-123")));
        assert_eq!(prod.mobile_key, Some(Secret::new("mob-123")));
        assert_eq!(prod.project_id.as_deref(), Some("5744c…"));
        let to_segment = prod.to_segment.as_ref().expect("to_segment");
        assert_eq!(to_segment.write_key.expose(), "wk-ld");
        assert!(prod.relay_to_launchdarkly);
        assert!(!prod.copy_custom_data);
    }

    #[test]
    fn extension_keys_parse() {
        let text = r#"
[server]
shutdown_timeout = "250ms"
[store]
synchronous = "normal"
busy_timeout = "1m"
[dispatch]
max_in_flight = 64
writer_queue = 1
[[launchdarkly_source]]
name = "ld"
client_side_id = "abc"
copy_custom_data = true
"#;
        let config = parse(text).expect("valid");
        assert_eq!(config.server.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(config.store.synchronous, Synchronous::Normal);
        assert_eq!(config.store.synchronous.as_pragma(), "NORMAL");
        assert_eq!(config.store.busy_timeout, Duration::from_secs(60));
        assert_eq!(config.dispatch.max_in_flight, 64);
        assert_eq!(config.dispatch.writer_queue, 1);
        assert!(config.launchdarkly_sources[0].copy_custom_data);
    }

    #[test]
    fn literal_and_env_secrets_resolve() {
        let text = "[[segment_source]]\nname = \"a\"\nwrite_key = \"env:WK\"\n\
                    webhook_secret = \"plain-literal\"\n";
        let config = parse_with(text, &[("WK", "from-env")]).expect("valid");
        assert_eq!(config.segment_sources[0].write_key.expose(), "from-env");
        let hook = config.segment_sources[0]
            .webhook_secret
            .as_ref()
            .expect("set");
        assert_eq!(hook.expose(), "plain-literal");
    }

    #[test]
    fn a_missing_or_empty_env_secret_names_the_key_and_variable() {
        let text = "[[segment_source]]\nname = \"web-prod\"\nwrite_key = \"env:WK\"\n";
        let err = parse(text).expect_err("unset");
        assert!(matches!(err, ConfigError::Secret { .. }));
        let message = err.to_string();
        assert!(
            message.contains("segment_source \"web-prod\" write_key"),
            "{message}"
        );
        assert!(message.contains("WK is not set"), "{message}");

        let message = parse_with(text, &[("WK", "")])
            .expect_err("empty")
            .to_string();
        assert!(message.contains("WK is empty"), "{message}");
    }

    #[test]
    fn file_secrets_are_trimmed_and_errors_name_key_and_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "\n tok-123 \n").expect("write");
        let text = format!(
            "[server]\nadmin_token = \"file:{}\"\n",
            path.to_str().expect("utf-8")
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.server.admin_token, Some(Secret::new("tok-123")));

        std::fs::write(&path, " \n").expect("write");
        let message = error(&text);
        assert!(message.contains("server.admin_token"), "{message}");
        assert!(message.contains("is empty"), "{message}");

        let missing = dir.path().join("nope");
        let text = format!("[server]\nadmin_token = \"file:{}\"\n", missing.display());
        let message = error(&text);
        assert!(
            message.starts_with("server.admin_token: cannot read file"),
            "{message}"
        );
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn cred_secrets_read_the_credentials_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ld-sdk"), "sdk-from-cred\n").expect("write");
        let creds = dir.path().to_str().expect("utf-8");
        let text = "[[launchdarkly_source]]\nname = \"ld\"\nsdk_key = \"cred:ld-sdk\"\n";
        let config = parse_with(text, &[("CREDENTIALS_DIRECTORY", creds)]).expect("valid");
        let key = config.launchdarkly_sources[0]
            .sdk_key
            .as_ref()
            .expect("set");
        assert_eq!(key.expose(), "sdk-from-cred");

        let message = error(text);
        assert!(
            message.contains("launchdarkly_source \"ld\" sdk_key"),
            "{message}"
        );
        assert!(message.contains("CREDENTIALS_DIRECTORY"), "{message}");

        let other = text.replace("ld-sdk", "other");
        let message = parse_with(&other, &[("CREDENTIALS_DIRECTORY", creds)])
            .expect_err("missing credential")
            .to_string();
        assert!(
            message.contains("launchdarkly_source \"ld\" sdk_key"),
            "{message}"
        );
        assert!(message.contains("credential other"), "{message}");

        let escape = text.replace("ld-sdk", "../ld-sdk");
        let message = parse_with(&escape, &[("CREDENTIALS_DIRECTORY", creds)])
            .expect_err("path in name")
            .to_string();
        assert!(message.contains("not a valid credential name"), "{message}");
    }

    #[test]
    fn an_empty_literal_secret_is_rejected() {
        assert_error(
            "[[segment_source]]\nname = \"a\"\nwrite_key = \"\"\n",
            &["segment_source \"a\" write_key", "empty"],
        );
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let message = error("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n");
        assert!(
            message.starts_with("test.toml: line 3, column 1 (server.lisen)"),
            "{message}"
        );
        assert!(message.contains("unknown field `lisen`"), "{message}");

        assert_error("[sever]\n", &["line 1", "unknown field `sever`"]);
        assert_error(
            "[[segment_source]]   # web\nname = \"a\"\nwrite_key = \"k\"\nrelay = true\n",
            &["line 4", "(segment_source.relay)", "unknown field `relay`"],
        );
        assert_error(
            "[[segment_source]]\nname = \"a\"\nwrite_key = \"k\"\n\
             to_launchdarkly = { client_id = \"x\" }\n",
            &[
                "line 4",
                "segment_source.to_launchdarkly",
                "unknown field `client_id`",
            ],
        );
    }

    #[test]
    fn type_and_syntax_errors_name_line_and_key() {
        assert_error(
            "[dispatch]\nmax_batch_events = \"many\"\n",
            &[
                "test.toml: line 2",
                "dispatch.max_batch_events",
                "expected usize",
            ],
        );
        assert_error(
            "[server]\nlisten = \"localhost\"\n",
            &["line 2", "server.listen", "socket address"],
        );
        assert_error(
            "[store]\nsynchronous = \"FULL\"\n",
            &["line 2", "store.synchronous"],
        );
        assert_error(
            "[[launchdarkly_source]]\nsdk_key = \"k\"\n",
            &["line 1", "launchdarkly_source", "missing field `name`"],
        );
    }

    #[test]
    fn a_bad_duration_names_the_key_and_line() {
        let message = error("[dispatch]\nrequest_timeout = \"15x\"\n");
        assert!(
            message.starts_with("test.toml: line 2, column 19 (dispatch.request_timeout)"),
            "{message}"
        );
        assert!(message.contains("invalid duration \"15x\""), "{message}");

        assert_error(
            "[dispatch]\nretry_schedule = [\"5s\", \"soon\"]\n",
            &["line 2", "dispatch.retry_schedule[1]", "\"soon\""],
        );
        assert_error(
            "[store]\nretain = \"7\"\n",
            &["store.retain", "time unit needed"],
        );
        assert_error("[store]\nbusy_timeout = \"\"\n", &["store.busy_timeout"]);
        assert_error(
            "[server]\nshutdown_timeout = \"x\"\n",
            &["server.shutdown_timeout"],
        );
        assert_error(
            "[dispatch]\ngive_up_after = \"1 dy\"\n",
            &["dispatch.give_up_after"],
        );
    }

    #[test]
    fn numeric_limits_are_enforced() {
        let cases: &[(&str, &str)] = &[
            (
                "[server]\nmax_request_bytes = 0",
                "server.max_request_bytes",
            ),
            (
                "[server]\nmax_request_bytes = 100000001",
                "server.max_request_bytes",
            ),
            (
                "[dispatch]\nmax_batch_events = 0",
                "dispatch.max_batch_events",
            ),
            (
                "[dispatch]\nmax_batch_events = 2501",
                "dispatch.max_batch_events",
            ),
            (
                "[dispatch]\nmax_batch_bytes = 999",
                "dispatch.max_batch_bytes",
            ),
            (
                "[dispatch]\nmax_batch_bytes = 500001",
                "dispatch.max_batch_bytes",
            ),
            ("[dispatch]\nmax_in_flight = 0", "dispatch.max_in_flight"),
            ("[dispatch]\nmax_in_flight = 65", "dispatch.max_in_flight"),
            ("[dispatch]\nwriter_queue = 0", "dispatch.writer_queue"),
            (
                "[dispatch]\nrequest_timeout = \"0s\"",
                "dispatch.request_timeout",
            ),
            (
                "[dispatch]\ngive_up_after = \"0s\"",
                "dispatch.give_up_after",
            ),
            ("[dispatch]\nretry_schedule = []", "dispatch.retry_schedule"),
            (
                "[dispatch]\nretry_schedule = [\"5s\", \"0ms\"]",
                "dispatch.retry_schedule[1]",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
                "{text}: {err}"
            );
        }
        let edges =
            "[server]\nmax_request_bytes = 100000000\n[dispatch]\nmax_batch_events = 2500\n\
                     max_batch_bytes = 1000\nmax_in_flight = 1\n";
        parse(edges).expect("limits are inclusive");
        parse("[dispatch]\nmax_batch_events = 1\nmax_batch_bytes = 500000\n")
            .expect("limits are inclusive");
    }

    #[test]
    fn the_schedule_must_be_a_cron_expression_with_seconds() {
        assert_error(
            "[dispatch]\nschedule = \"*/5 * * * *\"\n",
            &[
                "dispatch.schedule",
                "\"*/5 * * * *\"",
                "Pattern must have 6 or 7 fields",
            ],
        );
        assert_error(
            "[dispatch]\nschedule = \"every minute\"\n",
            &["dispatch.schedule"],
        );
        assert_error(
            "[dispatch]\nschedule = \"0 61 * * * *\"\n",
            &["dispatch.schedule"],
        );
        parse("[dispatch]\nschedule = \"0 */5 * * * Mon-Fri\"\n").expect("valid");
    }

    #[test]
    fn urls_need_a_scheme_and_lose_one_trailing_slash() {
        assert_error(
            "[launchdarkly]\nevents_url = \"ftp://x\"\n",
            &["launchdarkly.events_url", "http:// or https://"],
        );
        assert_error(
            "[segment]\napi_url = \"api.segment.io\"\n",
            &["segment.api_url"],
        );
        assert_error("[segment]\napi_url = \"https://\"\n", &["segment.api_url"]);
        let config = parse(
            "[launchdarkly]\nevents_url = \"http://127.0.0.1:9000/\"\n\
             [segment]\napi_url = \"https://proxy.example/segment/\"\n",
        )
        .expect("valid");
        assert_eq!(config.launchdarkly.events_url, "http://127.0.0.1:9000");
        assert_eq!(config.segment.api_url, "https://proxy.example/segment");
    }

    #[test]
    fn source_names_must_be_tokens() {
        assert_error(
            "[[segment_source]]\nname = \"\"\nwrite_key = \"k\"\n",
            &["segment_source[0].name", "non-empty"],
        );
        assert_error(
            &format!("{WEB}[[segment_source]]\nname = \"web prod\"\nwrite_key = \"k2\"\n"),
            &["segment_source[1].name", "\"web prod\""],
        );
        parse("[[segment_source]]\nname = \"Web_prod-2.eu\"\nwrite_key = \"k\"\n")
            .expect("valid name");
    }

    #[test]
    fn source_names_are_unique_across_both_lists() {
        assert_error(
            &format!("{WEB}[[segment_source]]\nname = \"web\"\nwrite_key = \"k2\"\n"),
            &[
                "segment_source[1].name",
                "already used by segment_source[0]",
            ],
        );
        assert_error(
            &format!("{WEB}[[launchdarkly_source]]\nname = \"web\"\nsdk_key = \"s\"\n"),
            &[
                "launchdarkly_source[0].name",
                "already used by segment_source[0]",
            ],
        );
    }

    #[test]
    fn credentials_are_unique_per_source_kind() {
        assert_error(
            &format!("{WEB}[[segment_source]]\nname = \"web2\"\nwrite_key = \"wk-web\"\n"),
            &[
                "segment_source \"web2\" write_key",
                "segment_source \"web\"",
            ],
        );
        let ld =
            |name: &str| format!("[[launchdarkly_source]]\nname = \"{name}\"\nsdk_key = \"s\"\n");
        assert_error(
            &format!("{}{}", ld("a"), ld("b")),
            &[
                "launchdarkly_source \"b\" sdk_key",
                "launchdarkly_source \"a\"",
            ],
        );
        let cs = |name: &str| {
            format!("[[launchdarkly_source]]\nname = \"{name}\"\nclient_side_id = \"c1\"\n")
        };
        assert_error(
            &format!("{}{}", cs("a"), cs("b")),
            &["launchdarkly_source \"b\" client_side_id"],
        );
    }

    #[test]
    fn to_launchdarkly_needs_exactly_one_credential() {
        let source = |dest: &str| format!("{WEB}to_launchdarkly = {dest}\n");
        assert_error(
            &source("{ client_side_id = \"c\", sdk_key = \"s\" }"),
            &["segment_source \"web\" to_launchdarkly", "exactly one"],
        );
        assert_error(
            &source("{}"),
            &["segment_source \"web\" to_launchdarkly", "exactly one"],
        );
        assert_error(
            &source("{ client_side_id = \"a/b\" }"),
            &["to_launchdarkly.client_side_id"],
        );
        let config = parse(&source("{ sdk_key = \"s\" }")).expect("valid");
        let dest = config.segment_sources[0]
            .to_launchdarkly
            .as_ref()
            .expect("set");
        assert_eq!(dest.sdk_key, Some(Secret::new("s")));
    }

    #[test]
    fn a_launchdarkly_source_needs_a_credential() {
        assert_error(
            "[[launchdarkly_source]]\nname = \"ld\"\nproject_id = \"p\"\n",
            &[
                "launchdarkly_source \"ld\"",
                "at least one of sdk_key, mobile_key or client_side_id",
            ],
        );
        parse("[[launchdarkly_source]]\nname = \"ld\"\nmobile_key = \"m\"\n").expect("valid");
    }

    #[test]
    fn a_public_admin_listener_needs_a_token() {
        assert_error(
            "[server]\nadmin_listen = \"0.0.0.0:8089\"\n",
            &["server.admin_token", "not a loopback address"],
        );
        parse("[server]\nadmin_listen = \"0.0.0.0:8089\"\nadmin_token = \"t\"\n").expect("valid");
        parse("[server]\nadmin_listen = \"127.0.0.1:8089\"\n").expect("loopback needs no token");
        parse("[server]\nadmin_listen = \"[::1]:8089\"\n").expect("loopback needs no token");
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_display() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "hunter2");

        let config = parse(&format!("{WEB}webhook_secret = \"hunter2\"\n")).expect("valid");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("wk-web"),
            "{debug}"
        );
    }

    #[test]
    fn secrets_never_appear_in_error_messages() {
        let secret = "sekrit-value-123";
        let source = format!("[[segment_source]]\nname = \"web\"\nwrite_key = \"{secret}\"\n");
        let texts = [
            // Syntax error on the secret's own line: toml's snippet would show it.
            format!("[[segment_source]]\nname = \"web\"\nwrite_key = \"{secret}\" oops\n"),
            format!("[[segment_source]]\nname = \"web\"\nwrite_key = \"{secret}\nrelay = 1\n"),
            format!("{source}bogus = 1\n"),
            // A secret pasted into a non-secret field shows up in serde's
            // "invalid type: string ..." message unless redacted.
            format!("{source}relay_to_segment = \"{secret}\"\n"),
            format!("{source}[[segment_source]]\nname = \"b\"\nwrite_key = \"{secret}\"\n"),
            format!(
                "{source}to_launchdarkly = {{ sdk_key = \"{secret}\", client_side_id = \"c\" }}\n"
            ),
            format!("[server]\nadmin_listen = \"0.0.0.0:1\"\n{source}"),
            format!(
                "[[launchdarkly_source]]\nname = \"a\"\nsdk_key = \"{secret}\"\n\
                     [[launchdarkly_source]]\nname = \"b\"\nsdk_key = \"{secret}\"\n"
            ),
            format!("{source}webhook_secret = \"\"\n"),
        ];
        for text in &texts {
            let message = error(text);
            assert!(!message.contains(secret), "{message}");
            let debug = format!("{:?}", parse(text).expect_err("invalid"));
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn sources_are_found_by_name_and_credential() {
        let text = format!(
            "{WEB}[[launchdarkly_source]]\nname = \"ld\"\nsdk_key = \"s\"\nmobile_key = \"m\"\n\
             client_side_id = \"c\"\n"
        );
        let config = parse(&text).expect("valid");
        assert_eq!(
            config
                .segment_source_by_key("wk-web")
                .map(|s| s.name.as_str()),
            Some("web")
        );
        assert!(config.segment_source_by_key("nope").is_none());
        assert!(matches!(
            config.source_by_name("web"),
            Some(SourceRef::Segment(_))
        ));
        let ld = config.source_by_name("ld").expect("found");
        assert!(matches!(ld, SourceRef::LaunchDarkly(_)));
        assert_eq!(ld.name(), "ld");
        assert!(config.source_by_name("missing").is_none());
        assert!(config.launchdarkly_source_by_sdk_key("s").is_some());
        assert!(config.launchdarkly_source_by_mobile_key("m").is_some());
        assert!(config.launchdarkly_source_by_mobile_key("s").is_none());
        assert!(config.launchdarkly_source_by_client_side_id("c").is_some());
    }

    #[test]
    fn store_config_loads_without_resolving_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ldbridge.toml");
        let text = "[store]\npath = \"/data/l.db\"\nretain = \"3d\"\n\
                    [[segment_source]]\nname = \"web\"\nwrite_key = \"cred:absent\"\n";
        std::fs::write(&path, text).expect("write");
        let store = StoreConfig::load(Some(&path)).expect("valid");
        assert_eq!(store.path, PathBuf::from("/data/l.db"));
        assert_eq!(store.retain, Duration::from_secs(3 * 86_400));
        assert!(
            Config::load(Some(&path)).is_err(),
            "full load resolves secrets"
        );

        std::fs::write(&path, "[store]\nretain = \"3 parsecs\"\n").expect("write");
        assert!(StoreConfig::load(Some(&path)).is_err());
    }
}

/// The running daemon's current config, shared by ingest and dispatch.
/// Readers take a cheap `Arc` snapshot; a reload swaps the whole value, so a
/// request never sees half of an old config and half of a new one.
#[derive(Debug, Clone)]
pub struct ConfigHandle(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Config>>>);

impl ConfigHandle {
    pub fn new(config: Config) -> ConfigHandle {
        ConfigHandle(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(config),
        )))
    }

    /// The current config. A poisoned lock (a panic while swapping) still
    /// yields the last complete value.
    pub fn get(&self) -> std::sync::Arc<Config> {
        match self.0.read() {
            Ok(guard) => std::sync::Arc::clone(&guard),
            Err(poisoned) => std::sync::Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the config for every later reader.
    pub fn replace(&self, config: Config) {
        let fresh = std::sync::Arc::new(config);
        match self.0.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }
}
