//! The types every layer shares: the routes an event can take, the
//! protocols it arrives by, what a LaunchDarkly request carried, and the
//! statuses of batches and deliveries (stored as the strings of
//! architecture.md §4). A leaf: it imports nothing of ldbridge.

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
        Route::ALL
            .into_iter()
            .find(|route| route.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Route::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown route `{text}` (expected one of {})",
                    names.join(", ")
                )
            })
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl FromStr for BatchStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        BatchStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = BatchStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status `{text}` (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one event stands on one route, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
