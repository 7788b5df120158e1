//! Filters as operators write them (`--status failed --since 2h`, or the
//! admin API's query parameters), checked and turned into the store's
//! filters. One place, so the CLI and the API accept the same words.
//!
//! Errors are the text a user sees; callers choose the exit code or status.

use crate::{
    clock,
    domain::{BatchStatus, Route},
    store::{delivery_log::BatchFilter, refusals::RefusalFilter},
};

/// A batch filter: `route` and `status` checked, `since`/`until` parsed
/// (see [`parse_time`]) against `now`.
pub fn batch_filter(
    status: Option<&str>,
    route: Option<&str>,
    source: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    limit: usize,
    now: i64,
) -> Result<BatchFilter, String> {
    if let Some(route) = route {
        route.parse::<Route>()?;
    }
    Ok(BatchFilter {
        status: status.map(str::parse::<BatchStatus>).transpose()?,
        route: route.map(str::to_owned),
        source: source.map(str::to_owned),
        since: since.map(|t| parse_time(t, now)).transpose()?,
        until: until.map(|t| parse_time(t, now)).transpose()?,
        before_id: None,
        limit: limit.max(1),
    })
}

/// A refusal log filter (`source` "unknown" means no known source).
pub fn refusal_filter(
    since: Option<&str>,
    source: Option<&str>,
    reason: Option<&str>,
    limit: usize,
    now: i64,
) -> Result<RefusalFilter, String> {
    Ok(RefusalFilter {
        since: since.map(|t| parse_time(t, now)).transpose()?,
        source: source.map(str::to_owned),
        code: reason.map(str::to_owned),
        message_id: None,
        limit: limit.max(1),
    })
}

/// `T` of `--since`/`--until`: RFC 3339, or a duration ago (`2h`, `15m`,
/// `7d`) from `now`.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    if let Some(at) = clock::parse_ms(text) {
        return Ok(at);
    }
    humantime::parse_duration(text)
        .map(|ago| now - ago.as_millis() as i64)
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a duration such as 2h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_a_duration_ago() {
        assert_eq!(parse_time("2h", 10_000_000), Ok(10_000_000 - 7_200_000));
        assert_eq!(
            parse_time("2024-05-14T09:31:27.412Z", 0),
            Ok(1_715_679_087_412)
        );
        assert!(parse_time("yesterday", 0)
            .unwrap_err()
            .contains("yesterday"));
    }

    #[test]
    fn unknown_routes_and_statuses_are_named() {
        let error = batch_filter(Some("lost"), None, None, None, None, 5, 0).unwrap_err();
        assert!(error.contains("unknown status `lost`"), "{error}");
        assert!(batch_filter(None, Some("nowhere"), None, None, None, 5, 0).is_err());
        let filter =
            batch_filter(Some("failed"), None, None, Some("1h"), None, 0, 3_600_000).unwrap();
        assert_eq!((filter.since, filter.limit), (Some(0), 1));
    }
}
