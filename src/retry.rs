//! Delivery retry policy (architecture.md §4): what one HTTP answer means
//! for a batch, when the next attempt is due, and when retrying stops.
//!
//! Owns status classification, backoff with `Retry-After` and jitter, the
//! give-up rule and `Retry-After` parsing. Does no I/O and reads no clock:
//! callers pass `now` and the jitter. Does not own the schedule's values
//! (`config`), sending or splitting batches (`deliver`, `dispatch`) or
//! recording attempts (`store`).

use std::time::Duration;

use time::{macros::format_description, PrimitiveDateTime};

/// What came back from one HTTP attempt, as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A response arrived; `retry_after` is the parsed `Retry-After` header, if any.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No response within `request_timeout`.
    Timeout,
    /// The request failed below HTTP: connection refused or reset, TLS, body read error.
    Transport(String),
}

/// What to do with the batch after one answer. Every reason is shown to operators.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The destination accepted the batch.
    Delivered,
    /// Try the same batch again later; `retry_after` is the destination's hint.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Split the batch in two and send the halves as new batches.
    Split { reason: String },
    /// Mark the batch `failed`; only a resend sends it again.
    Fail { reason: String },
}

/// Classifies one answer for a batch of `batch_len` events.
///
/// 2xx → [`Action::Delivered`]. 408, 429, 5xx, timeouts and transport
/// errors → [`Action::Retry`]. 413 and 400 → [`Action::Split`] when the batch
/// holds more than one event, otherwise [`Action::Fail`]. Every other status
/// (401/403, other 4xx, 1xx, 3xx, codes outside 100–599) → [`Action::Fail`].
pub fn classify(answer: &Answer, batch_len: usize) -> Action {
    let (code, retry_after) = match answer {
        Answer::Timeout => return retry("timed out after request_timeout", None),
        Answer::Transport(error) => return retry(&format!("connection error: {error}"), None),
        Answer::Status { code, retry_after } => (*code, *retry_after),
    };
    match code {
        200..=299 => Action::Delivered,
        408 => retry(
            "HTTP 408: destination timed out waiting for the request",
            retry_after,
        ),
        429 => retry("HTTP 429: destination is rate limiting", retry_after),
        500..=599 => retry(
            &format!("HTTP {code}: destination server error"),
            retry_after,
        ),
        413 if batch_len > 1 => split(format!(
            "HTTP 413: batch of {batch_len} events too large for the destination; splitting"
        )),
        413 => fail("HTTP 413: event too large for the destination".to_string()),
        400 if batch_len > 1 => split(format!(
            "HTTP 400 on a batch of {batch_len} events; splitting to isolate the rejected event"
        )),
        400 => fail("HTTP 400: destination rejected the event".to_string()),
        401 | 403 => fail(format!(
            "HTTP {code}: destination rejected the credential; check the route's key"
        )),
        401..=499 => fail(format!("HTTP {code}: destination rejected the request")),
        // 1xx and 3xx fail rather than retry: the client handles interim 1xx
        // itself and follows no redirects, so either means a misconfigured
        // destination URL or a broken server, and resending the same request
        // on a schedule cannot fix that. Failing shows it to operators, who
        // can resend once the URL is fixed.
        100..=199 | 300..=399 => fail(format!(
            "HTTP {code}: unexpected status (redirects are not followed; check the destination URL)"
        )),
        _ => fail(format!("HTTP {code}: invalid status code")),
    }
}

fn retry(reason: &str, retry_after: Option<Duration>) -> Action {
    Action::Retry {
        reason: reason.to_string(),
        retry_after,
    }
}

fn split(reason: String) -> Action {
    Action::Split { reason }
}

fn fail(reason: String) -> Action {
    Action::Fail { reason }
}

/// The Unix-ms time the next attempt is due, after `attempt` attempts (1
/// after the first failure) ending at `now_ms`.
///
/// The base delay is `schedule[attempt - 1]`, holding at the last step once
/// attempts outrun the schedule (attempt 0 counts as 1). A `retry_after` hint
/// raises the delay but never above the schedule's largest step, so a
/// destination cannot park a batch for hours. The delay is then stretched by
/// up to 20 % with `jitter` (expected in `[0, 1)`; values outside are clamped
/// and NaN counts as 0). An empty schedule counts as `[1s]`. Saturates
/// instead of overflowing.
pub fn next_attempt_at(
    attempt: u32,
    now_ms: i64,
    retry_after: Option<Duration>,
    schedule: &[Duration],
    jitter: f64,
) -> i64 {
    const FALLBACK: [Duration; 1] = [Duration::from_secs(1)];
    let schedule = if schedule.is_empty() {
        &FALLBACK[..]
    } else {
        schedule
    };
    let step = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    let mut delay = schedule[step.min(schedule.len() - 1)];
    if let Some(hint) = retry_after {
        let largest = schedule.iter().copied().max().unwrap_or(delay);
        delay = delay.max(hint.min(largest));
    }
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    // f64 holds whole milliseconds exactly up to 2^53 ms (~285,000 years), and
    // the `as` cast saturates beyond i64.
    let delay_ms = (delay.as_millis() as f64 * (1.0 + 0.2 * jitter)) as i64;
    now_ms.saturating_add(delay_ms)
}

/// Whether a batch first created at `created_ms` that just failed retryably
/// at `now_ms` must become `failed`: true once `give_up_after` has fully
/// elapsed (so a zero `give_up_after` means "never retry"). False when the
/// clock reads earlier than `created_ms`.
pub fn gives_up(created_ms: i64, now_ms: i64, give_up_after: Duration) -> bool {
    let limit_ms = i64::try_from(give_up_after.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(created_ms) >= limit_ms
}

/// Parses a `Retry-After` header value: delta-seconds (`"120"`) or an
/// IMF-fixdate HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`), taken relative
/// to `now_ms`; a date in the past gives [`Duration::ZERO`].
///
/// Returns `None` for anything else: negative or fractional numbers, the
/// obsolete RFC 850 and asctime date forms, and garbage. Delta-seconds too
/// large for `u64` saturate; a weekday that does not match the date is
/// ignored, since the other fields fix the instant.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // All digits, so the only possible parse error is overflow.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = PrimitiveDateTime::parse(value, format).ok()?.assume_utc();
    let date_ms = i64::try_from(date.unix_timestamp_nanos() / 1_000_000).ok()?;
    let wait_ms = u64::try_from(date_ms.saturating_sub(now_ms)).unwrap_or(0);
    Some(Duration::from_millis(wait_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_715_679_000_000;

    fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            retry_after: None,
        }
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn is_retry(action: &Action) -> bool {
        matches!(action, Action::Retry { .. })
    }

    fn is_fail(action: &Action) -> bool {
        matches!(action, Action::Fail { .. })
    }

    fn is_split(action: &Action) -> bool {
        matches!(action, Action::Split { .. })
    }

    #[test]
    fn success_statuses_are_delivered() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(classify(&status(code), 1), Action::Delivered, "{code}");
            assert_eq!(classify(&status(code), 5), Action::Delivered, "{code}");
        }
    }

    #[test]
    fn retryable_statuses_retry_and_keep_the_hint() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            for len in [1, 2, 500] {
                assert!(is_retry(&classify(&status(code), len)), "{code} x{len}");
            }
        }
        let hinted = Answer::Status {
            code: 429,
            retry_after: Some(secs(30)),
        };
        assert_eq!(
            classify(&hinted, 3),
            Action::Retry {
                reason: "HTTP 429: destination is rate limiting".to_string(),
                retry_after: Some(secs(30)),
            }
        );
        assert_eq!(
            classify(&status(503), 1),
            Action::Retry {
                reason: "HTTP 503: destination server error".to_string(),
                retry_after: None,
            }
        );
    }

    #[test]
    fn timeouts_and_transport_errors_retry_without_a_hint() {
        assert_eq!(
            classify(&Answer::Timeout, 2),
            Action::Retry {
                reason: "timed out after request_timeout".to_string(),
                retry_after: None,
            }
        );
        assert_eq!(
            classify(&Answer::Transport("connection refused".to_string()), 1),
            Action::Retry {
                reason: "connection error: connection refused".to_string(),
                retry_after: None,
            }
        );
    }

    #[test]
    fn too_large_splits_a_batch_and_fails_a_single_event() {
        assert!(is_split(&classify(&status(413), 2)));
        assert_eq!(
            classify(&status(413), 1),
            Action::Fail {
                reason: "HTTP 413: event too large for the destination".to_string()
            }
        );
        assert!(is_fail(&classify(&status(413), 0)));
    }

    #[test]
    fn bad_request_splits_a_batch_and_fails_a_single_event() {
        assert_eq!(
            classify(&status(400), 2),
            Action::Split {
                reason: "HTTP 400 on a batch of 2 events; splitting to isolate the rejected event"
                    .to_string()
            }
        );
        assert_eq!(
            classify(&status(400), 1),
            Action::Fail {
                reason: "HTTP 400: destination rejected the event".to_string()
            }
        );
    }

    #[test]
    fn credential_rejections_fail_naming_the_credential() {
        for code in [401, 403] {
            for len in [1, 2] {
                let Action::Fail { reason } = classify(&status(code), len) else {
                    panic!("{code} should fail");
                };
                assert!(reason.starts_with(&format!("HTTP {code}: ")), "{reason}");
                assert!(reason.contains("credential"), "{reason}");
            }
        }
    }

    #[test]
    fn other_client_errors_fail_with_the_status() {
        for code in [402, 404, 405, 409, 410, 422, 499] {
            for len in [1, 2] {
                assert_eq!(
                    classify(&status(code), len),
                    Action::Fail {
                        reason: format!("HTTP {code}: destination rejected the request")
                    }
                );
            }
        }
    }

    #[test]
    fn informational_redirect_and_invalid_statuses_fail() {
        for code in [100, 101, 199, 300, 301, 302, 304, 399] {
            let Action::Fail { reason } = classify(&status(code), 2) else {
                panic!("{code} should fail");
            };
            assert!(reason.contains("unexpected status"), "{reason}");
        }
        for code in [0, 99, 600, 999] {
            let Action::Fail { reason } = classify(&status(code), 1) else {
                panic!("{code} should fail");
            };
            assert!(reason.contains("invalid status"), "{reason}");
        }
    }

    #[test]
    fn delay_follows_the_schedule_and_holds_at_its_last_step() {
        let schedule = [secs(5), secs(60), secs(600)];
        assert_eq!(next_attempt_at(1, NOW, None, &schedule, 0.0), NOW + 5_000);
        assert_eq!(next_attempt_at(2, NOW, None, &schedule, 0.0), NOW + 60_000);
        assert_eq!(next_attempt_at(3, NOW, None, &schedule, 0.0), NOW + 600_000);
        assert_eq!(next_attempt_at(4, NOW, None, &schedule, 0.0), NOW + 600_000);
        assert_eq!(
            next_attempt_at(u32::MAX, NOW, None, &schedule, 0.0),
            NOW + 600_000
        );
        assert_eq!(next_attempt_at(0, NOW, None, &schedule, 0.0), NOW + 5_000);
    }

    #[test]
    fn empty_schedule_counts_as_one_second() {
        assert_eq!(next_attempt_at(1, NOW, None, &[], 0.0), NOW + 1_000);
        assert_eq!(next_attempt_at(9, NOW, None, &[], 0.0), NOW + 1_000);
        assert_eq!(
            next_attempt_at(1, NOW, Some(secs(30)), &[], 0.0),
            NOW + 1_000
        );
    }

    #[test]
    fn retry_after_raises_the_delay_up_to_the_largest_step() {
        let schedule = [secs(5), secs(60), secs(600)];
        assert_eq!(
            next_attempt_at(1, NOW, Some(secs(30)), &schedule, 0.0),
            NOW + 30_000
        );
        assert_eq!(
            next_attempt_at(1, NOW, Some(secs(3600)), &schedule, 0.0),
            NOW + 600_000
        );
        assert_eq!(
            next_attempt_at(2, NOW, Some(secs(1)), &schedule, 0.0),
            NOW + 60_000
        );
        assert_eq!(
            next_attempt_at(2, NOW, Some(Duration::ZERO), &schedule, 0.0),
            NOW + 60_000
        );
        assert_eq!(
            next_attempt_at(1, NOW, Some(Duration::MAX), &schedule, 0.0),
            NOW + 600_000
        );
        // The largest step, not the last, bounds the hint.
        let unsorted = [secs(100), secs(10)];
        assert_eq!(
            next_attempt_at(2, NOW, Some(secs(500)), &unsorted, 0.0),
            NOW + 100_000
        );
    }

    #[test]
    fn jitter_adds_up_to_a_fifth_of_the_delay() {
        let schedule = [secs(10)];
        assert_eq!(next_attempt_at(1, NOW, None, &schedule, 0.0), NOW + 10_000);
        assert_eq!(next_attempt_at(1, NOW, None, &schedule, 0.5), NOW + 11_000);
        assert_eq!(
            next_attempt_at(1, NOW, None, &schedule, 0.999),
            NOW + 11_998
        );
        assert_eq!(
            next_attempt_at(1, NOW, Some(secs(60)), &[secs(10), secs(60)], 0.999),
            NOW + 71_988
        );
        // Out-of-contract jitter is clamped rather than trusted.
        assert_eq!(next_attempt_at(1, NOW, None, &schedule, -3.0), NOW + 10_000);
        assert_eq!(next_attempt_at(1, NOW, None, &schedule, 7.0), NOW + 12_000);
        assert_eq!(
            next_attempt_at(1, NOW, None, &schedule, f64::NAN),
            NOW + 10_000
        );
    }

    #[test]
    fn huge_delays_saturate() {
        assert_eq!(
            next_attempt_at(1, NOW, None, &[Duration::MAX], 0.5),
            i64::MAX
        );
        assert_eq!(
            next_attempt_at(1, i64::MAX - 1, None, &[secs(1)], 0.0),
            i64::MAX
        );
    }

    #[test]
    fn gives_up_once_the_limit_has_fully_elapsed() {
        let limit = Duration::from_secs(3600);
        assert!(!gives_up(NOW, NOW, limit));
        assert!(!gives_up(NOW, NOW + 3_599_999, limit));
        assert!(gives_up(NOW, NOW + 3_600_000, limit));
        assert!(gives_up(NOW, NOW + 3_600_001, limit));
        assert!(!gives_up(NOW, NOW - 10, limit));
        assert!(gives_up(NOW, NOW, Duration::ZERO));
        assert!(!gives_up(NOW, i64::MAX, Duration::MAX));
        assert!(gives_up(i64::MIN, i64::MAX, limit));
    }

    #[test]
    fn retry_after_parses_delta_seconds() {
        assert_eq!(parse_retry_after("120", NOW), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", NOW), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", NOW),
            Some(secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_parses_http_dates_relative_to_now() {
        // 2024-05-14T09:30:00Z
        let now = 1_715_679_000_000;
        assert_eq!(
            parse_retry_after("Tue, 14 May 2024 09:32:00 GMT", now),
            Some(secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 May 2024 09:30:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Tue, 14 May 2024 09:30:01 GMT", now - 500),
            Some(Duration::from_millis(1_500))
        );
        // A wrong weekday is tolerated: the date fields alone fix the instant.
        assert_eq!(
            parse_retry_after("Mon, 14 May 2024 09:32:00 GMT", now),
            Some(secs(120))
        );
    }

    #[test]
    fn retry_after_rejects_everything_else() {
        for value in [
            "",
            "   ",
            "-5",
            "+5",
            "1.5",
            "soon",
            "Tue, 14 May 2024 09:32:00",
            "Tue, 14 May 2024 09:32:00 UTC",
            "2024-05-14T09:32:00Z",
            "Tuesday, 14-May-24 09:32:00 GMT",
            "Tue May 14 09:32:00 2024",
            "Tue, 32 May 2024 09:32:00 GMT",
            "Tue, 4 May 2024 09:32:00 GMT",
            "Tue, 14 may 2024 09:32:00 GMT",
        ] {
            assert_eq!(parse_retry_after(value, NOW), None, "{value:?}");
        }
    }
}
