//! Raw structs → `Config`: defaults, durations, and secret references
//! (`env:NAME`, `file:/path`, `cred:NAME`) resolved with errors that name
//! the full key.

use std::{path::Path, time::Duration};

use super::*;
use crate::map::mapping::{MappingSpec, Mappings};

/// Turns the raw file into `Config`: parses durations, resolves secrets and
/// normalizes URLs, naming the key in every error.
pub(super) struct Resolver<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
    pub(super) env: EnvLookup<'a>,
}

impl Resolver<'_> {
    pub(super) fn config(&self, file: raw::File) -> Result<Config, ConfigError> {
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
                clientsdk_url: strip_trailing_slash(file.launchdarkly.clientsdk_url),
                sdk_url: strip_trailing_slash(file.launchdarkly.sdk_url),
            },
            segment: SegmentConfig {
                api_url: strip_trailing_slash(file.segment.api_url),
            },
            segment_sources,
            launchdarkly_sources,
        })
    }

    pub(super) fn server(&self, raw: raw::Server) -> Result<ServerConfig, ConfigError> {
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
            header_timeout: self.duration_or(
                raw.header_timeout,
                "server.header_timeout",
                d.header_timeout,
            )?,
            body_timeout: self.duration_or(
                raw.body_timeout,
                "server.body_timeout",
                d.body_timeout,
            )?,
            max_connections: raw.max_connections.unwrap_or(d.max_connections),
        })
    }

    pub(super) fn store(&self, raw: raw::Store) -> Result<StoreConfig, ConfigError> {
        let d = StoreConfig::default();
        let url = match raw.url {
            None => None,
            Some(_) if raw.path.is_some() => {
                return Err(ConfigError::Invalid {
                    key: "store.url".to_owned(),
                    reason: "give either store.path (SQLite) or store.url (PostgreSQL), not both"
                        .to_owned(),
                })
            }
            // A URL given as it is: `postgres:` is its scheme, not a secret
            // reference's.
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(Secret::new(url))
            }
            Some(reference) => Some(self.secret(&reference, "store.url")?),
        };
        if let Some(url) = &url {
            if !(url.expose().starts_with("postgres://")
                || url.expose().starts_with("postgresql://"))
            {
                return Err(ConfigError::Invalid {
                    key: "store.url".to_owned(),
                    reason: "must be a PostgreSQL URL (postgres://…)".to_owned(),
                });
            }
        }
        Ok(StoreConfig {
            path: raw.path.unwrap_or(d.path),
            url,
            node: raw.node.unwrap_or(d.node),
            retain: self.duration_or(raw.retain, "store.retain", d.retain)?,
            synchronous: raw.synchronous.unwrap_or(d.synchronous),
            busy_timeout: self.duration_or(
                raw.busy_timeout,
                "store.busy_timeout",
                d.busy_timeout,
            )?,
            max_database_bytes: raw.max_database_bytes,
            refusal_log_max_rows: raw.refusal_log_max_rows.unwrap_or(d.refusal_log_max_rows),
            refusal_log_per_second: raw
                .refusal_log_per_second
                .unwrap_or(d.refusal_log_per_second),
            min_free_bytes: raw.min_free_bytes.unwrap_or(d.min_free_bytes),
            reserve_bytes: raw.reserve_bytes.unwrap_or(d.reserve_bytes),
        })
    }

    pub(super) fn dispatch(&self, raw: raw::Dispatch) -> Result<DispatchConfig, ConfigError> {
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
            claim_timeout: raw
                .claim_timeout
                .map(|text| self.duration(&text, "dispatch.claim_timeout"))
                .transpose()?,
        })
    }

    pub(super) fn segment_source(
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
                events_url: dest.events_url.map(strip_trailing_slash),
            }),
        };
        let mappings = self.mappings(&raw.mapping, &label)?;
        Ok(SegmentSource {
            write_key: self.secret(&raw.write_key, &format!("{label} write_key"))?,
            webhook_secret: self
                .optional_secret(raw.webhook_secret, &format!("{label} webhook_secret"))?,
            name: raw.name,
            to_launchdarkly,
            relay_to_segment: raw.relay_to_segment,
            mappings,
        })
    }

    /// Reads a source's `[[segment_source.mapping]]` list; a mistake names
    /// the mapping and key, at the key's line and column (inside a
    /// trigger, at the mistake itself).
    fn mappings(&self, raw: &[raw::Mapping], label: &str) -> Result<Mappings, ConfigError> {
        let json = |value: &Option<toml::Spanned<toml::Value>>| {
            value.as_ref().map(|value| {
                serde_json::to_value(value.get_ref()).unwrap_or(serde_json::Value::Null)
            })
        };
        let specs: Vec<MappingSpec> = raw
            .iter()
            .map(|m| MappingSpec {
                action: m.action.get_ref().clone(),
                trigger: m.trigger.as_ref().map(|t| t.get_ref().clone()),
                enabled: m.enabled.as_ref().map(|e| *e.get_ref()),
                event_name: json(&m.event_name),
                context_kind: json(&m.context_kind),
                user_key: json(&m.user_key),
                additional_context_keys: json(&m.additional_context_keys),
                metric_value: json(&m.metric_value),
                event_properties: json(&m.event_properties),
                previous_key: json(&m.previous_key),
                timestamp: json(&m.timestamp),
            })
            .collect();
        Mappings::from_specs(&specs).map_err(|(i, error)| {
            let m = &raw[i];
            let key = format!("{label} mapping[{i}].{}", error.key);
            if let (Some(trigger), Some(offset)) = (&m.trigger, error.offset) {
                let at = self.inside_string(trigger.span().start, offset, &key);
                return ConfigError::Parse(format!("{}{at}: {}", self.origin, error.message));
            }
            let span = match error.key {
                "trigger" => m.trigger.as_ref().map(|v| v.span()),
                "enabled" => m.enabled.as_ref().map(|v| v.span()),
                "event_name" => m.event_name.as_ref().map(|v| v.span()),
                "context_kind" => m.context_kind.as_ref().map(|v| v.span()),
                "user_key" => m.user_key.as_ref().map(|v| v.span()),
                "additional_context_keys" => m.additional_context_keys.as_ref().map(|v| v.span()),
                "metric_value" => m.metric_value.as_ref().map(|v| v.span()),
                "event_properties" => m.event_properties.as_ref().map(|v| v.span()),
                "previous_key" => m.previous_key.as_ref().map(|v| v.span()),
                "timestamp" => m.timestamp.as_ref().map(|v| v.span()),
                _ => None,
            }
            .unwrap_or_else(|| m.action.span());
            let at = location(self.text, span.start, Some(&key));
            ConfigError::Parse(format!("{}{at}: {}", self.origin, error.message))
        })
    }

    pub(super) fn launchdarkly_source(
        &self,
        index: usize,
        raw: raw::LaunchDarklySource,
    ) -> Result<LaunchDarklySource, ConfigError> {
        let label = source_label("launchdarkly_source", index, &raw.name);
        // `to_segment.copy_custom_data` (the contract's place) wins over the
        // source-level key of earlier versions.
        let copy_custom_data = raw
            .to_segment
            .as_ref()
            .and_then(|dest| dest.copy_custom_data)
            .unwrap_or(raw.copy_custom_data);
        let to_segment = match raw.to_segment {
            None => None,
            Some(dest) => Some(SegmentDestination {
                write_key: self
                    .secret(&dest.write_key, &format!("{label} to_segment.write_key"))?,
                trigger: dest
                    .trigger
                    .map(|text| self.trigger(&text, &format!("{label} to_segment.trigger")))
                    .transpose()?,
                api_url: dest.api_url.map(strip_trailing_slash),
                user_id_context_kind: dest.user_id_context_kind,
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
            copy_custom_data,
        })
    }

    /// Parses a trigger; a mistake names the key and the line and column
    /// of the mistake itself, inside the string.
    pub(super) fn trigger(
        &self,
        raw: &toml::Spanned<String>,
        key: &str,
    ) -> Result<crate::map::trigger::Trigger, ConfigError> {
        raw.get_ref()
            .parse()
            .map_err(|error: crate::map::trigger::TriggerError| {
                let at = self.inside_string(raw.span().start, error.offset, key);
                ConfigError::Parse(format!("{}{at}: invalid trigger: {error}", self.origin))
            })
    }

    /// The location of byte `offset` inside the string value whose span
    /// starts at `start` (at its opening quote or quotes). Exact for literal
    /// strings (single quotes, the usual way to write a trigger) and for
    /// basic strings without escapes.
    fn inside_string(&self, start: usize, offset: usize, key: &str) -> String {
        let quotes = match self.text.get(start..start + 3) {
            // TOML drops a newline right after a multi-line opener.
            Some("'''" | r#"""""#) => match self.text.get(start + 3..) {
                Some(rest) if rest.starts_with("\r\n") => 5,
                Some(rest) if rest.starts_with('\n') => 4,
                _ => 3,
            },
            _ => 1,
        };
        location(self.text, start + quotes + offset, Some(key))
    }

    pub(super) fn duration_or(
        &self,
        raw: Option<toml::Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        raw.map_or(Ok(default), |s| self.duration(&s, key))
    }

    pub(super) fn duration(
        &self,
        raw: &toml::Spanned<String>,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        humantime::parse_duration(raw.get_ref()).map_err(|e| {
            let at = location(self.text, raw.span().start, Some(key));
            ConfigError::Parse(format!(
                "{}{at}: invalid duration {:?} (write e.g. \"250ms\", \"5s\", \"2m\", \"24h\", \"7d\"): {e}",
                self.origin,
                raw.get_ref()
            ))
        })
    }

    pub(super) fn optional_secret(
        &self,
        raw: Option<String>,
        key: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        raw.map(|r| self.secret(&r, key)).transpose()
    }

    /// Resolves one secret reference; see [`resolve_secret`].
    pub(super) fn secret(&self, reference: &str, key: &str) -> Result<Secret, ConfigError> {
        resolve_secret(reference, key, self.env)
    }
}

/// Resolves `env:NAME`, `file:/path` (trimmed), `cred:NAME` (trimmed, from
/// `$CREDENTIALS_DIRECTORY`), `literal:VALUE`, or a literal. An empty result
/// is an error, and so is a value that looks like `scheme:rest` with a
/// scheme not in that list (`envv:FOO`, `ENV:FOO`): a mistyped reference
/// must not become a literal key. A literal key containing a colon is
/// written `literal:…`.
pub(super) fn resolve_secret(
    reference: &str,
    key: &str,
    env: EnvLookup<'_>,
) -> Result<Secret, ConfigError> {
    let value = if let Some(name) = reference.strip_prefix("env:") {
        secret_from_env(name, key, env)?
    } else if let Some(path) = reference.strip_prefix("file:") {
        secret_from_file(Path::new(path), key, &format!("file {path}"))?
    } else if let Some(name) = reference.strip_prefix("cred:") {
        secret_from_credential(name, key, env)?
    } else if let Some(literal) = reference.strip_prefix("literal:") {
        literal.to_owned()
    } else if let Some(scheme) = unknown_scheme(reference) {
        return Err(secret_error(
            key,
            format!(
                "unknown secret scheme `{scheme}:` (known: env:, file:, cred:, literal:); \
                 to give a key that contains a colon literally, write literal:<key>"
            ),
        ));
    } else {
        reference.to_owned()
    };
    if value.is_empty() {
        return Err(secret_error(key, "secret is empty"));
    }
    Ok(Secret(value))
}

/// The scheme of a value shaped like `scheme:rest` (a letter, then
/// letters, digits, `-` or `_`, then a colon), if it has one.
fn unknown_scheme(reference: &str) -> Option<&str> {
    let (scheme, _) = reference.split_once(':')?;
    let mut chars = scheme.chars();
    let shaped = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    shaped.then_some(scheme)
}

pub(super) fn secret_from_env(
    name: &str,
    key: &str,
    env: EnvLookup<'_>,
) -> Result<String, ConfigError> {
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

pub(super) fn secret_from_file(path: &Path, key: &str, what: &str) -> Result<String, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(secret_error(key, format!("{what} is empty"))),
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) => Err(secret_error(key, format!("cannot read {what}: {e}"))),
    }
}

pub(super) fn secret_from_credential(
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

pub(super) fn strip_trailing_slash(mut url: String) -> String {
    if url.ends_with('/') {
        url.pop();
    }
    url
}

/// `segment_source "web-prod"` when the name is usable, else
/// `segment_source[0]`.
pub(super) fn source_label(kind: &str, index: usize, name: &str) -> String {
    if is_valid_name(name) {
        format!("{kind} \"{name}\"")
    } else {
        format!("{kind}[{index}]")
    }
}
