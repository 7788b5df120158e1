//! Every rule that makes a config valid; each error names the key.

use std::{collections::HashMap, time::Duration};

use super::*;

pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(super) fn validate_server(server: &ServerConfig) -> Result<(), ConfigError> {
    if !(1..=MAX_REQUEST_BYTES_LIMIT).contains(&server.max_request_bytes) {
        return Err(invalid(
            "server.max_request_bytes",
            format!(
                "{} is out of range 1..={MAX_REQUEST_BYTES_LIMIT}",
                server.max_request_bytes
            ),
        ));
    }
    check_positive("server.header_timeout", server.header_timeout)?;
    check_positive("server.body_timeout", server.body_timeout)?;
    check_range(
        "server.max_connections",
        server.max_connections,
        1,
        MAX_CONNECTIONS_LIMIT,
    )?;
    match server.admin_listen {
        Some(addr) if !addr.ip().is_loopback() && server.admin_token.is_none() => Err(invalid(
            "server.admin_token",
            format!("required because server.admin_listen ({addr}) is not a loopback address"),
        )),
        _ => Ok(()),
    }
}

pub(super) fn validate_store(store: &StoreConfig) -> Result<(), ConfigError> {
    match store.max_database_bytes {
        Some(bytes) if bytes < MIN_DATABASE_BYTES => Err(invalid(
            "store.max_database_bytes",
            format!("{bytes} is too small (minimum {MIN_DATABASE_BYTES})"),
        )),
        _ => Ok(()),
    }
}

pub(super) fn validate_dispatch(d: &DispatchConfig) -> Result<(), ConfigError> {
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
    if d.claim_timeout() <= d.request_timeout {
        return Err(invalid(
            "dispatch.claim_timeout",
            "must be longer than dispatch.request_timeout (a claim must outlive its request)",
        ));
    }
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
pub(super) fn validate_schedule(schedule: &str) -> Result<(), ConfigError> {
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

pub(super) fn check_range(
    key: &str,
    value: usize,
    lo: usize,
    hi: usize,
) -> Result<(), ConfigError> {
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

pub(super) fn check_positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(())
}

pub(super) fn validate_url(key: &str, url: &str) -> Result<(), ConfigError> {
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
pub(super) fn validate_names(config: &Config) -> Result<(), ConfigError> {
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

pub(super) fn validate_segment_source(
    index: usize,
    source: &SegmentSource,
) -> Result<(), ConfigError> {
    let label = source_label("segment_source", index, &source.name);
    let Some(dest) = &source.to_launchdarkly else {
        return Ok(());
    };
    if let Some(url) = &dest.events_url {
        validate_url(&format!("{label} to_launchdarkly.events_url"), url)?;
    }
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

pub(super) fn validate_launchdarkly_source(
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
    if let Some(url) = source
        .to_segment
        .as_ref()
        .and_then(|to| to.api_url.as_ref())
    {
        validate_url(&format!("{label} to_segment.api_url"), url)?;
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
pub(super) fn validate_client_side_id(key: &str, id: &str) -> Result<(), ConfigError> {
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
pub(super) fn validate_unique_credentials(config: &Config) -> Result<(), ConfigError> {
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

pub(super) fn check_unique<'a>(
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
