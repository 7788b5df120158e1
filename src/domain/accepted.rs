//! What ingest hands the store: the events of one accepted request, and
//! the refusals to record beside them. Plain data; ingest builds it, the
//! writer commits it in one transaction.

use super::{Protocol, Route};

/// One event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Segment `messageId`, or LaunchDarkly `"<payload id>:<index>"`.
    pub dedupe_key: String,
    /// Segment message type or LaunchDarkly event kind.
    pub kind: String,
    /// The event JSON as it will be stored.
    pub body: String,
}

/// The events of one inbound request: all from one source, all taking the
/// same routes.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub source: String,
    pub protocol: Protocol,
    pub received_at: i64,
    /// Protocol extras shared by every event of the request (JSON), if any.
    pub meta: Option<String>,
    /// A LaunchDarkly payload id: the request is stored once per (payload
    /// id, source), as a whole, and its events' dedupe keys are derived
    /// from it (`<payload id>:<index>`); their own keys are not stored.
    /// `None`: each event is deduplicated by its own `dedupe_key`.
    pub payload_id: Option<String>,
    /// One `pending` delivery per route is created for every new event.
    pub routes: Vec<Route>,
    pub events: Vec<NewEvent>,
    /// Refusals to record in the same transaction: the request's messages
    /// that were refused while the rest were accepted.
    pub refusals: Vec<NewRefusal>,
}

impl IngestBatch {
    /// A request with nothing to store but refusals to record.
    pub fn refusals_only(refusals: Vec<NewRefusal>) -> IngestBatch {
        IngestBatch {
            source: String::new(),
            protocol: Protocol::Segment,
            received_at: 0,
            meta: None,
            payload_id: None,
            routes: Vec::new(),
            events: Vec::new(),
            refusals,
        }
    }
}

/// One refused message or request, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefusal {
    /// When it was refused (Unix ms).
    pub at: i64,
    /// The configured source; `None` when the key was unknown or missing.
    pub source: Option<String>,
    pub path: String,
    /// Index in the request's array; `None` for the whole request.
    pub item: Option<i64>,
    /// The HTTP status the request was answered with (200 when only this
    /// message of it was refused).
    pub status: u16,
    pub code: String,
    pub reason: String,
    /// Segment `messageId` or LaunchDarkly payload id, when there was one.
    pub message_id: Option<String>,
    /// The first 1 KB of the message (or body), redacted.
    pub excerpt: String,
}
