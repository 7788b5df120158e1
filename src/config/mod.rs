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
//!
//! # Layout
//!
//! - `mod.rs`: the public API (`Config::load`, lookups, `ConfigHandle`) and errors
//! - `types.rs`: the `Config` tree, its defaults, `Secret`
//! - `parse.rs`, `raw.rs`: TOML → raw structs, error locations without secrets
//! - `resolve.rs`: raw → `Config`, secret references (`env:`, `file:`, `cred:`)
//! - `validate.rs`: every rule that makes a config valid

use std::path::{Path, PathBuf};

pub mod diff;
mod parse;
mod raw;
mod resolve;
#[cfg(test)]
mod tests;
mod types;
mod validate;

use parse::*;
use resolve::*;
pub use types::*;
use validate::*;

/// Largest accepted `server.max_request_bytes` (100 MB).
const MAX_REQUEST_BYTES_LIMIT: usize = 100_000_000;
/// Largest `dispatch.max_batch_events`: LaunchDarkly and Segment both choke on
/// bigger batches long before the byte limit matters.
const MAX_BATCH_EVENTS_LIMIT: usize = 2500;
/// `dispatch.max_batch_bytes` range; the upper bound is Segment's 500 KB
/// request limit.
const MAX_BATCH_BYTES_RANGE: (usize, usize) = (1000, 500_000);
const MAX_IN_FLIGHT_LIMIT: usize = 64;
/// Largest `server.max_connections`.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// Smallest `store.max_database_bytes` (1 MB): the schema alone takes pages.
const MIN_DATABASE_BYTES: u64 = 1_000_000;

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
        validate_store(&self.store)?;
        validate_url("launchdarkly.events_url", &self.launchdarkly.events_url)?;
        validate_url(
            "launchdarkly.clientsdk_url",
            &self.launchdarkly.clientsdk_url,
        )?;
        validate_url("launchdarkly.sdk_url", &self.launchdarkly.sdk_url)?;
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
    /// be valid TOML with known keys, but the sources' secrets are not
    /// resolved, so an operator's shell needs neither the daemon's
    /// environment nor its systemd credentials. `store.url`, the one
    /// secret the commands need, resolves against this process's
    /// environment (`env:`, `file:`; `cred:` under `systemd-run`).
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
            env: &process_env,
        };
        resolver.store(file.store)
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
