//! The types every layer shares: the routes an event can take, the
//! protocols it arrives by, what a LaunchDarkly request carried, the
//! statuses of batches and deliveries (stored as the strings of
//! architecture.md §4) and which may be resent, what ingest hands the
//! writer ([`accepted`]) and the stored form of a Segment message
//! ([`stored_message`]). A leaf: it imports nothing of ldbridge outside it.

pub mod accepted;
pub mod stored_message;

use std::str::FromStr;

/// Routes an event can take (architecture.md §1). The string form is what is
/// shown and what batches store; deliveries store [`Route::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    SegmentToLaunchDarkly,
    LaunchDarklyToSegment,
    LaunchDarklyRelay,
    SegmentRelay,
}

impl Route {
    pub const ALL: [Route; 4] = [
        Route::SegmentToLaunchDarkly,
        Route::LaunchDarklyToSegment,
        Route::LaunchDarklyRelay,
        Route::SegmentRelay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::SegmentToLaunchDarkly => "segment-to-launchdarkly",
            Route::LaunchDarklyToSegment => "launchdarkly-to-segment",
            Route::LaunchDarklyRelay => "launchdarkly-relay",
            Route::SegmentRelay => "segment-relay",
        }
    }

    /// The small integer a delivery stores for the route (the `routes`
    /// table of migration 0004 names them).
    /// The route a `routes.id` names; `None` for any other number.
    pub fn from_code(code: i64) -> Option<Route> {
        Route::ALL.into_iter().find(|route| route.code() == code)
    }

    pub fn code(self) -> i64 {
        match self {
            Route::SegmentToLaunchDarkly => 1,
            Route::LaunchDarklyToSegment => 2,
            Route::LaunchDarklyRelay => 3,
            Route::SegmentRelay => 4,
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Route {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        one_of(text, &Route::ALL, Route::as_str, "route")
    }
}

/// The one of `all` whose name is `text`, or an error listing the names.
fn one_of<T: Copy>(
    text: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|item| name(*item) == text)
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|item| name(*item)).collect();
            format!(
                "unknown {what} `{text}` (expected one of {})",
                names.join(", ")
            )
        })
}

/// Which wire protocol an event arrived by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Segment,
    LaunchDarkly,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Segment => "segment",
            Protocol::LaunchDarkly => "launchdarkly",
        }
    }
}

/// Which LaunchDarkly SDK endpoint a request came in by, and so which
/// credential it used and where a relay sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdEndpoint {
    /// `/bulk`, `/diagnostic`: the SDK key.
    Server,
    /// `/mobile…`: the mobile key.
    Mobile,
    /// `/events/…/{clientSideId}`: no secret, the id in the path.
    Client,
}

/// What a LaunchDarkly request carried besides its events; stored with each
/// of its events as `events.meta`. Never holds a credential: the source's
/// configured key of `endpoint`'s kind is what the relay uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LdMeta {
    pub endpoint: LdEndpoint,
    /// A diagnostic post (one JSON object, sent to the diagnostic path).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub diagnostic: bool,
    /// `X-LaunchDarkly-Event-Schema` as received (absent means schema 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The client-side id of the path, for browser endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// `X-LaunchDarkly-Tags` as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// `User-Agent` as received (server and mobile SDKs name themselves
    /// here: `GoClient/7.4.0`), relayed so LaunchDarkly sees the SDK.
    #[serde(default, rename = "ua", skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `X-LaunchDarkly-User-Agent` (browser SDKs, which cannot set `User-Agent`).
    #[serde(default, rename = "ldua", skip_serializing_if = "Option::is_none")]
    pub sdk_user_agent: Option<String>,
    /// `X-LaunchDarkly-Wrapper` (`react-client-sdk/3.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapper: Option<String>,
}

/// A batch's status, as stored and shown (architecture.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// Formed, waiting for its first attempt (the halves of a split).
    Pending,
    /// Claimed by a dispatcher run until its `next_attempt_at`.
    Sending,
    Delivered,
    /// Failed an attempt; due again at its `next_attempt_at`.
    Retrying,
    /// Will not be tried again unless resent.
    Failed,
    /// Replaced by its two halves.
    Split,
}

impl BatchStatus {
    pub const ALL: [BatchStatus; 6] = [
        BatchStatus::Pending,
        BatchStatus::Sending,
        BatchStatus::Delivered,
        BatchStatus::Retrying,
        BatchStatus::Failed,
        BatchStatus::Split,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Pending => "pending",
            BatchStatus::Sending => "sending",
            BatchStatus::Delivered => "delivered",
            BatchStatus::Retrying => "retrying",
            BatchStatus::Failed => "failed",
            BatchStatus::Split => "split",
        }
    }
}

impl BatchStatus {
    /// Why a batch in this status may not be resent, or `None` when it may.
    /// Delivered batches need `force`; a batch in flight or split never is
    /// (its halves are).
    pub fn resend_refusal(self, force: bool) -> Option<&'static str> {
        match self {
            BatchStatus::Failed | BatchStatus::Retrying | BatchStatus::Pending => None,
            BatchStatus::Delivered if force => None,
            BatchStatus::Delivered => Some(
                "already delivered; to send it again, force it (`--force`, or `force=true` / \"force\": true over the admin API)",
            ),
            BatchStatus::Sending => Some("being sent right now"),
            BatchStatus::Split => Some("split into smaller batches; resend those"),
        }
    }

    /// The statuses [`BatchStatus::resend_refusal`] lets through.
    pub fn resendable(force: bool) -> Vec<BatchStatus> {
        BatchStatus::ALL
            .into_iter()
            .filter(|status| status.resend_refusal(force).is_none())
            .collect()
    }
}

impl FromStr for BatchStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        one_of(text, &BatchStatus::ALL, BatchStatus::as_str, "status")
    }
}

impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one event stands on one route, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Batched,
    Delivered,
    Failed,
    Skipped,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Batched,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Batched => "batched",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        one_of(
            text,
            &DeliveryStatus::ALL,
            DeliveryStatus::as_str,
            "delivery status",
        )
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_itself_and_an_unknown_one_lists_the_names() {
        for route in Route::ALL {
            assert_eq!(route.as_str().parse::<Route>(), Ok(route));
        }
        for status in BatchStatus::ALL {
            assert_eq!(status.as_str().parse::<BatchStatus>(), Ok(status));
        }
        for status in DeliveryStatus::ALL {
            assert_eq!(status.as_str().parse::<DeliveryStatus>(), Ok(status));
        }
        let error = "sent".parse::<BatchStatus>().unwrap_err();
        assert!(
            error.contains("`sent`") && error.contains("retrying, failed"),
            "{error}"
        );
    }

    #[test]
    fn failed_retrying_and_pending_batches_may_be_resent_delivered_ones_only_when_forced() {
        use BatchStatus::*;
        assert_eq!(BatchStatus::resendable(false), [Pending, Retrying, Failed]);
        assert_eq!(
            BatchStatus::resendable(true),
            [Pending, Delivered, Retrying, Failed]
        );
        assert!(Delivered.resend_refusal(false).unwrap().contains("--force"));
        assert!(Split.resend_refusal(true).unwrap().contains("split"));
    }
}
