//! Payload mapping between Segment messages and LaunchDarkly events: pure
//! functions from one stored message to what a route sends for it.
//!
//! Owns the per-direction mapping rules (`spec/mapping.md`) and the
//! [`Mapped`] outcome they share. Does not own batching, size limits,
//! envelopes, headers or delivery (see `dispatch` and `deliver`), and does no
//! I/O: the current time is passed in.

pub mod ld_to_segment;
pub mod mapping;
pub mod segment_relay;
pub mod segment_to_ld;
pub mod trigger;

/// Why a route cannot carry an event: the reason operators read in
/// `ldbridge explain`, which becomes [`Mapped::Skip`]. Mapping fails in no
/// other way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmappable(pub String);

impl From<String> for Unmappable {
    fn from(reason: String) -> Self {
        Unmappable(reason)
    }
}

impl From<Unmappable> for Mapped {
    fn from(Unmappable(reason): Unmappable) -> Self {
        Mapped::Skip(reason)
    }
}

/// What a route does with one stored event.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Send this JSON object to the destination.
    Send(serde_json::Value),
    /// The route cannot carry this event; the reason is shown to operators by `ldbridge explain`.
    Skip(String),
}
