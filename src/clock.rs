//! Time as ldbridge stores and shows it: Unix milliseconds (`i64`) inside,
//! RFC 3339 UTC with millisecond precision outside.
//!
//! Owns parsing of the timestamps that Segment libraries send (any RFC 3339
//! offset form, 0–9 fractional digits) and formatting for the CLI and for
//! outbound payloads. It does not own durations (see `config`).

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use time::{
    format_description::well_known::{Iso8601, Rfc3339},
    Date, OffsetDateTime, PrimitiveDateTime, UtcOffset,
};

/// The current wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Where delivery reads the time: when a run starts, when a request is
/// sent (Segment's `sentAt`, the attempt's start), when a `Retry-After` date
/// is read and an outcome recorded. The system clock in the daemon; a test
/// holds a manual one and moves it, so waiting for a retry is a step of the
/// clock, not a sleep.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The wall clock ([`now_ms`]).
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `start_ms` until it is moved.
    pub fn manual(start_ms: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(at) => at.load(Ordering::SeqCst),
            None => now_ms(),
        }
    }

    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Moves a manual clock forward by `by`; the system clock moves itself.
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(at) = &self.manual {
            at.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }
}

/// Parses an RFC 3339 / ISO-8601 timestamp (`Z`, `+00:00` or another
/// offset; 0–9 fractional digits) into Unix milliseconds, truncating
/// sub-millisecond digits. As Segment does, a date-time without a zone
/// (`2024-05-14T09:31:27.412`) and a bare date (`2024-05-14`, midnight) are
/// UTC. Returns `None` for anything else.
pub fn parse_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(text, &Iso8601::DEFAULT))
        .or_else(|_| PrimitiveDateTime::parse(text, &Iso8601::DEFAULT).map(|at| at.assume_utc()))
        .or_else(|_| Date::parse(text, &Iso8601::DEFAULT).map(|day| day.midnight().assume_utc()))
        .ok()?;
    Some((parsed.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Formats Unix milliseconds as `2024-05-14T09:31:27.412Z` (UTC, always
/// three fractional digits, as Segment emits). Out-of-range values clamp to
/// the Unix epoch rather than panic.
pub fn format_ms(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_offset_form_libraries_send() {
        assert_eq!(parse_ms("2022-03-30T17:24:58Z"), Some(1_648_661_098_000));
        assert_eq!(
            parse_ms("2024-05-14T09:31:27.412+00:00"),
            Some(1_715_679_087_412)
        );
        assert_eq!(
            parse_ms("2024-05-14T09:31:27.412345678Z"),
            Some(1_715_679_087_412)
        );
        assert_eq!(
            parse_ms("2024-05-14T11:31:27.412+02:00"),
            Some(1_715_679_087_412)
        );
        assert_eq!(parse_ms("yesterday"), None);
        assert_eq!(parse_ms("2024-05-14T09:31:27.412Z extra"), None);
        assert_eq!(parse_ms("1715679087412"), None);
        assert_eq!(parse_ms(""), None);
    }

    #[test]
    fn a_time_without_a_zone_and_a_bare_date_are_utc_as_segment_takes_them() {
        assert_eq!(parse_ms("2024-05-14T09:31:27.412"), Some(1_715_679_087_412));
        assert_eq!(parse_ms("2024-05-14T09:31:27"), Some(1_715_679_087_000));
        assert_eq!(parse_ms("2024-05-14"), Some(1_715_644_800_000));
        // Offsets without a colon are ISO-8601 too.
        assert_eq!(
            parse_ms("2024-05-14T11:31:27.412+0200"),
            Some(1_715_679_087_412)
        );
        assert_eq!(parse_ms("2024-13-14"), None);
        assert_eq!(parse_ms("14/05/2024"), None);
    }

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(format_ms(1_715_679_087_412), "2024-05-14T09:31:27.412Z");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_ms(&format_ms(1_715_679_300_500)),
            Some(1_715_679_300_500)
        );
    }
}
