//! What the benchmark sends and the daemon configuration it runs with.

use std::path::Path;

use bytes::Bytes;
use serde_json::{json, Value};

use super::load::{Body, Kind};
use crate::fixture::Fixture;

pub const WRITE_KEY: &str = ldbridge::demo::WRITE_KEY;
pub const SDK_KEY: &str = ldbridge::demo::SDK_KEY;

/// A realistic Segment track message (~520 bytes, like analytics-node's).
/// `n` makes its messageId (and so its dedupe key) unique; the ids are
/// `BENCH_MESSAGE_IDS`'s kind.
#[allow(dead_code)] // the parse bench sends bodies only
pub fn message(n: usize) -> Value {
    message_with(n, MessageIds::from_env())
}

/// How messageIds look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageIds {
    /// `bench-000000000042-…`: each id lands at the end of the dedupe
    /// index, as in every figure of record.
    Ascending,
    /// Like analytics.js's (`ajs-next-` and 32 random hex digits, here
    /// derived from `n` so every run sends the same ones): real clients'
    /// ids, which land all over the index.
    Random,
}

impl MessageIds {
    /// `BENCH_MESSAGE_IDS=random`, or ascending.
    pub fn from_env() -> MessageIds {
        if std::env::var("BENCH_MESSAGE_IDS").is_ok_and(|ids| ids == "random") {
            MessageIds::Random
        } else {
            MessageIds::Ascending
        }
    }

    fn id(self, n: usize) -> String {
        match self {
            MessageIds::Random => {
                let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &n.to_le_bytes());
                format!("ajs-next-{}", id.simple())
            }
            MessageIds::Ascending => {
                format!("bench-{n:012}-6c9e0f5e-2b1a-4c3d-8e7f-9a0b1c2d3e4f")
            }
        }
    }
}

/// [`message`] with ids of a given kind.
pub fn message_with(n: usize, ids: MessageIds) -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "userId": format!("user-{}", n % 5000),
        "anonymousId": "3f1a8c2e-7b4d-4e9a-9c51-2d6e8f0a1b37",
        "messageId": ids.id(n),
        "timestamp": "2024-05-14T09:31:27.412Z",
        "properties": {"orderId": format!("ord_{n}"), "revenue": 84.5, "currency": "USD",
                       "products": [{"sku": "SKU-1187", "quantity": 2, "price": 42.25}]},
        "context": {"ip": "203.0.113.24", "library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
        "integrations": {},
        "_metadata": {"nodeVersion": "v20.12.2", "jsRuntime": "node"}
    })
}

/// A realistic server-SDK custom event (~250 bytes, inline context).
pub fn ld_event(n: usize) -> Value {
    json!({
        "kind": "custom",
        "creationDate": 1_715_679_101_456_i64 + n as i64,
        "key": "order-completed",
        "context": {"kind": "user", "key": format!("user-{}", n % 5000), "name": "Ada Lovelace", "plan": "enterprise"},
        "data": {"orderId": format!("ord_{n}"), "currency": "USD"},
        "metricValue": 84.5
    })
}

/// Bodies of `requests` requests of `kind` (100 events each for the batch
/// kinds), numbered from `first` so that every run sends new events. The
/// second value is the raw JSON size of their events.
pub fn bodies(kind: Kind, first: usize, requests: usize) -> (Vec<Body>, usize) {
    bodies_with(kind, first, requests, MessageIds::from_env())
}

/// [`bodies`] with Segment messageIds of a given kind.
pub fn bodies_with(
    kind: Kind,
    first: usize,
    requests: usize,
    ids: MessageIds,
) -> (Vec<Body>, usize) {
    let message = |n| message_with(n, ids);
    let mut raw = 0;
    let bodies = (0..requests)
        .map(|r| {
            let n = first + r * 100;
            let (bytes, events) = match kind {
                Kind::SegmentBatch => {
                    let items: Vec<Value> = (n..n + 100).map(message).collect();
                    raw += items.iter().map(|m| m.to_string().len()).sum::<usize>();
                    let envelope = json!({"batch": items, "sentAt": "2024-05-14T09:31:28.000Z"});
                    (envelope.to_string(), 100)
                }
                Kind::SegmentTrack => {
                    let mut m = message(n);
                    m.as_object_mut().unwrap().remove("type");
                    let text = m.to_string();
                    raw += text.len();
                    (text, 1)
                }
                Kind::LaunchDarklyBulk => {
                    let items: Vec<Value> = (n..n + 100).map(ld_event).collect();
                    raw += items.iter().map(|e| e.to_string().len()).sum::<usize>();
                    (Value::Array(items).to_string(), 100)
                }
            };
            Body {
                kind,
                bytes: Bytes::from(bytes),
                events,
            }
        })
        .collect();
    (bodies, raw)
}

/// Five mappings with triggers, as a team sending only what its
/// experiments measure might write them: four the bench's calls (track
/// "Order Completed") do not take, and one that takes each of them and
/// sends one event, as the default mapping does, with more fields to fill.
pub const FIVE_MAPPINGS: &str = r#"[
  { action = "custom", trigger = 'type = "track" and event = "Checkout Started"', event_name = "checkout" },
  { action = "custom", trigger = 'type = "track" and event in ["Signed Up", "Trial Started"]', context_kind = "organization", user_key = "$.context.groupId" },
  { action = "custom", trigger = 'type = "track" and contains(event, "Refund")', metric_value = ["$.properties.amount"] },
  { action = "custom", trigger = 'type = "track" and event = "Order Completed" and properties.revenue > 0', event_name = "purchase", additional_context_keys = { unauthenticatedUser = "$.anonymousId", organization = "$.context.groupId" }, metric_value = ["$.properties.total", "$.properties.revenue"], event_properties = "$.properties" },
  { action = "alias", trigger = 'type = "identify" or type = "alias"' },
]"#;

/// The daemon's config: the shared fixture (tests/fixture), one Segment
/// source mapped to LaunchDarkly, one LaunchDarkly source mapped to Segment,
/// both destinations at `…_url`, dispatch on `schedule`. No relay: each
/// event takes one route. `BENCH_MAPPINGS=5` gives the Segment source
/// [`FIVE_MAPPINGS`] instead of the default mapping.
pub fn config(dir: &Path, schedule: &str, events_url: &str, segment_url: &str) -> Fixture {
    let fixture = Fixture::new(dir, events_url, segment_url)
        .set("launchdarkly_source", "relay_to_launchdarkly", "false")
        .set("dispatch", "schedule", &format!("{schedule:?}"))
        .set("dispatch", "max_in_flight", "8")
        .set("dispatch", "writer_queue", "4096");
    if std::env::var("BENCH_MAPPINGS").is_ok_and(|n| n == "5") {
        fixture.set("segment_source", "mapping", FIVE_MAPPINGS)
    } else {
        fixture
    }
}
