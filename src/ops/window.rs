//! What happened on each route in a time window, from the per-minute
//! counts kept with every change (`store::counts`): the Delivery
//! Overview's pipeline and `ldbridge stats --since`, one implementation so
//! the page and the CLI show the same numbers.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{
    clock,
    domain::Route,
    store::{
        counts::{self, Flow},
        Store, StoreError,
    },
};

/// One route's flows in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFlows {
    pub received: i64,
    pub skipped: i64,
    pub failed: i64,
    pub delivered: i64,
    pub retried: i64,
    pub resent: i64,
    /// Skipped events by reason, most first.
    pub skipped_by_reason: Vec<(String, i64)>,
    /// Failed events by reason, most first.
    pub failed_by_reason: Vec<(String, i64)>,
}

/// A window's counts: the whole buckets (minutes; hours past six hours,
/// see `store::counts::span`) from `since`'s to `until`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub since: i64,
    pub until: i64,
    /// Every route, in `Route::ALL` order, counted or not.
    pub routes: Vec<(Route, RouteFlows)>,
    /// Refused at ingest: (source, or "" for an unknown key; reason code; n), most first.
    pub refused: Vec<(String, String, i64)>,
}

/// The counts of the minutes from `since` to `until` (ms).
pub async fn window(store: &Store, since: i64, until: i64) -> Result<Window, StoreError> {
    let mut routes: BTreeMap<String, RouteFlows> = BTreeMap::new();
    let mut refused: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in counts::flows(store, since, until).await? {
        let Some(route) = row.route else {
            if row.flow == Flow::Refused {
                *refused.entry((row.source, row.reason)).or_default() += row.n;
            }
            continue;
        };
        let flows = routes.entry(route).or_default();
        let (total, reasons) = match row.flow {
            Flow::Received => (&mut flows.received, None),
            Flow::Skipped => (&mut flows.skipped, Some(&mut flows.skipped_by_reason)),
            Flow::Failed => (&mut flows.failed, Some(&mut flows.failed_by_reason)),
            Flow::Delivered => (&mut flows.delivered, None),
            Flow::Retried => (&mut flows.retried, None),
            Flow::Resent => (&mut flows.resent, None),
            Flow::Refused | Flow::OldestAge => continue,
        };
        *total += row.n;
        if let Some(reasons) = reasons {
            match reasons.iter_mut().find(|(reason, _)| *reason == row.reason) {
                Some((_, n)) => *n += row.n,
                None => reasons.push((row.reason, row.n)),
            }
        }
    }
    let routes = Route::ALL
        .into_iter()
        .map(|route| {
            let mut flows = routes.remove(route.as_str()).unwrap_or_default();
            flows
                .skipped_by_reason
                .sort_by_key(|r| std::cmp::Reverse(r.1));
            flows
                .failed_by_reason
                .sort_by_key(|r| std::cmp::Reverse(r.1));
            (route, flows)
        })
        .collect();
    let mut refused: Vec<(String, String, i64)> = refused
        .into_iter()
        .map(|((source, code), n)| (source, code, n))
        .collect();
    refused.sort_by_key(|r| std::cmp::Reverse(r.2));
    Ok(Window {
        since,
        until,
        routes,
        refused,
    })
}

impl Window {
    /// Whether nothing at all happened in the window.
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty()
            && self
                .routes
                .iter()
                .all(|(_, flows)| *flows == RouteFlows::default())
    }

    /// `stats --since`'s `window` document (and `GET /api/stats?since=`).
    pub fn json(&self) -> Value {
        let reasons = |list: &[(String, i64)]| -> Value {
            list.iter()
                .map(|(reason, n)| json!({"reason": reason, "events": n}))
                .collect()
        };
        let routes: serde_json::Map<String, Value> = self
            .routes
            .iter()
            .map(|(route, f)| {
                (
                    route.as_str().to_owned(),
                    json!({
                        "received": f.received, "skipped": f.skipped, "failed": f.failed,
                        "delivered": f.delivered, "retried": f.retried, "resent": f.resent,
                        "skipped_by_reason": reasons(&f.skipped_by_reason),
                        "failed_by_reason": reasons(&f.failed_by_reason),
                    }),
                )
            })
            .collect();
        let (start, end, _) = counts::span(self.since, self.until);
        json!({
            "since": clock::format_ms(start),
            "until": clock::format_ms(end),
            "routes": routes,
            "refused": self.refused.iter().map(|(source, code, n)| json!({
                "source": if source.is_empty() { None } else { Some(source) },
                "reason": code, "requests_or_messages": n,
            })).collect::<Vec<_>>(),
        })
    }
}
