//! The file as written: secrets are unresolved reference strings, durations
//! are spanned strings, absent keys are `None` (defaults live in the public
//! types' `Default` impls only).

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
    pub header_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub max_connections: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Store {
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    pub node: Option<String>,
    pub retain: Option<Spanned<String>>,
    pub synchronous: Option<Synchronous>,
    pub busy_timeout: Option<Spanned<String>>,
    pub max_database_bytes: Option<u64>,
    pub refusal_log_max_rows: Option<u64>,
    pub refusal_log_per_second: Option<u32>,
    pub min_free_bytes: Option<u64>,
    pub reserve_bytes: Option<u64>,
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
    pub claim_timeout: Option<Spanned<String>>,
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
    /// `[[segment_source.mapping]]`
    #[serde(default)]
    pub mapping: Vec<Mapping>,
}

/// One `[[segment_source.mapping]]`: every value spanned, so a mistake
/// points at its key's line and column.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mapping {
    pub action: Spanned<String>,
    pub trigger: Option<Spanned<String>>,
    pub enabled: Option<Spanned<bool>>,
    pub event_name: Option<Spanned<toml::Value>>,
    pub context_kind: Option<Spanned<toml::Value>>,
    pub user_key: Option<Spanned<toml::Value>>,
    pub additional_context_keys: Option<Spanned<toml::Value>>,
    pub metric_value: Option<Spanned<toml::Value>>,
    pub event_properties: Option<Spanned<toml::Value>>,
    pub previous_key: Option<Spanned<toml::Value>>,
    pub timestamp: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LaunchDarklyDestination {
    pub client_side_id: Option<String>,
    pub sdk_key: Option<String>,
    pub events_url: Option<String>,
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
    pub trigger: Option<Spanned<String>>,
    pub api_url: Option<String>,
    pub user_id_context_kind: Option<String>,
    pub copy_custom_data: Option<bool>,
}
