//! `ldbridge check-config --online`: asks LaunchDarkly whether each
//! destination credential of the config is one it knows, where it offers a
//! way to ask, and says which credentials cannot be tested.
//!
//! A client-side id is tested as Segment's own LaunchDarkly destination
//! tests it (`HEAD {clientsdk_url}/sdk/goals/{id}`: 200 known, 404 not);
//! an SDK key with the server-side SDKs' flag request (`GET
//! {sdk_url}/sdk/latest-all`); a mobile key with the mobile SDKs' polling
//! request (`GET {clientsdk_url}/msdk/evalx/contexts/{context}`). Segment
//! accepts any write key, so none can be tested. Credentials are sent only
//! in headers and never printed.

use std::time::Duration;

use base64::Engine;
use hyper::{
    header::{HeaderValue, AUTHORIZATION, USER_AGENT},
    Method,
};
use serde_json::{json, Value};

use crate::{
    config::{Config, Secret},
    deliver::{HttpClient, Outbound},
    retry::Answer,
};

/// The context the mobile-key request evaluates for (nothing is stored by
/// an evaluation request).
const PROBE_CONTEXT: &str = r#"{"kind":"user","key":"ldbridge-check-config"}"#;

/// What was learnt about one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The service knows it.
    Accepted,
    /// The service says it does not know it.
    Rejected(String),
    /// No answer that says either way (unreachable, a 5xx, a timeout).
    Unknown(String),
    /// The service offers no way to test it.
    Untestable(&'static str),
}

/// One credential of the config: where it is, and the verdict.
#[derive(Debug, Clone)]
pub struct Check {
    /// The key, e.g. `segment_source "web" to_launchdarkly.client_side_id`.
    pub key: String,
    pub verdict: Verdict,
}

/// One request to make: how, where, with which credential header.
struct Probe<'a> {
    key: String,
    method: Method,
    url: String,
    authorization: Option<&'a Secret>,
    /// What the status of a known and of an unknown credential are.
    known: u16,
    unknown: &'static [u16],
}

/// Checks every destination credential of `config`, one request each,
/// within `timeout` per request.
pub async fn check(config: &Config, http: &HttpClient, timeout: Duration) -> Vec<Check> {
    let ld = &config.launchdarkly;
    let client_side = |key: String, id: &str| Probe {
        key,
        method: Method::HEAD,
        url: format!("{}/sdk/goals/{id}", ld.clientsdk_url),
        authorization: None,
        known: 200,
        unknown: &[404],
    };
    let sdk = |key: String, secret| Probe {
        key,
        method: Method::GET,
        url: format!("{}/sdk/latest-all", ld.sdk_url),
        authorization: Some(secret),
        known: 200,
        unknown: &[401, 403],
    };
    let mobile = |key: String, secret| Probe {
        key,
        method: Method::GET,
        url: format!(
            "{}/msdk/evalx/contexts/{}",
            ld.clientsdk_url,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(PROBE_CONTEXT)
        ),
        authorization: Some(secret),
        known: 200,
        unknown: &[401, 403],
    };
    let mut probes = Vec::new();
    let mut checks = Vec::new();
    let untestable = |key: String| Check {
        key,
        verdict: Verdict::Untestable("Segment accepts any write key, so it cannot be tested"),
    };
    for source in &config.segment_sources {
        let label = format!("segment_source {:?}", source.name);
        if let Some(dest) = &source.to_launchdarkly {
            if let Some(id) = &dest.client_side_id {
                probes.push(client_side(
                    format!("{label} to_launchdarkly.client_side_id"),
                    id,
                ));
            }
            if let Some(key) = &dest.sdk_key {
                probes.push(sdk(format!("{label} to_launchdarkly.sdk_key"), key));
            }
        }
        if source.relay_to_segment {
            checks.push(untestable(format!("{label} write_key (relay_to_segment)")));
        }
    }
    for source in &config.launchdarkly_sources {
        let label = format!("launchdarkly_source {:?}", source.name);
        if source.to_segment.is_some() {
            checks.push(untestable(format!("{label} to_segment.write_key")));
        }
        if source.relay_to_launchdarkly {
            if let Some(key) = &source.sdk_key {
                probes.push(sdk(format!("{label} sdk_key"), key));
            }
            if let Some(key) = &source.mobile_key {
                probes.push(mobile(format!("{label} mobile_key"), key));
            }
            if let Some(id) = &source.client_side_id {
                probes.push(client_side(format!("{label} client_side_id"), id));
            }
        }
    }
    for probe in probes {
        let verdict = ask(http, &probe, timeout).await;
        checks.push(Check {
            key: probe.key,
            verdict,
        });
    }
    checks
}

async fn ask(http: &HttpClient, probe: &Probe<'_>, timeout: Duration) -> Verdict {
    let mut headers = vec![(
        USER_AGENT,
        HeaderValue::from_static(crate::deliver::USER_AGENT),
    )];
    if let Some(secret) = probe.authorization {
        let Ok(mut value) = HeaderValue::from_str(secret.expose()) else {
            return Verdict::Rejected("it is not a valid header value".to_owned());
        };
        value.set_sensitive(true);
        headers.push((AUTHORIZATION, value));
    }
    let request = Outbound {
        url: probe.url.clone(),
        headers,
        body: Default::default(),
    };
    let reply = http.send_as(probe.method.clone(), &request, timeout).await;
    let asked = format!("{} {}", probe.method, host(&probe.url));
    match reply.answer {
        Answer::Status { code, .. } if code == probe.known => Verdict::Accepted,
        Answer::Status { code, .. } if probe.unknown.contains(&code) => Verdict::Rejected(format!(
            "{asked} answered {code}: LaunchDarkly does not know it"
        )),
        Answer::Status { code, .. } => Verdict::Unknown(format!("{asked} answered {code}")),
        _ => Verdict::Unknown(format!(
            "{asked}: {}",
            reply.error().unwrap_or_else(|| "no answer".to_owned())
        )),
    }
}

/// The scheme and host of `url` (the path may name a client-side id,
/// which is public, but a shorter line reads better).
fn host(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('/') {
        Some(end) => &url[..start + end],
        None => url,
    }
}

/// Whether every testable credential was accepted.
pub fn all_good(checks: &[Check]) -> bool {
    checks
        .iter()
        .all(|check| matches!(check.verdict, Verdict::Accepted | Verdict::Untestable(_)))
}

pub fn text(checks: &[Check]) -> String {
    if checks.is_empty() {
        return "no destination credential to test\n".to_owned();
    }
    checks
        .iter()
        .map(|check| {
            let (word, detail) = match &check.verdict {
                Verdict::Accepted => ("ok", "LaunchDarkly knows it".to_owned()),
                Verdict::Rejected(why) => ("REJECTED", why.clone()),
                Verdict::Unknown(why) => ("UNKNOWN", format!("could not tell: {why}")),
                Verdict::Untestable(why) => ("untested", (*why).to_owned()),
            };
            format!("{word:<9} {}: {detail}\n", check.key)
        })
        .collect()
}

pub fn json(checks: &[Check]) -> Value {
    Value::Array(
        checks
            .iter()
            .map(|check| {
                let (verdict, detail) = match &check.verdict {
                    Verdict::Accepted => ("accepted", None),
                    Verdict::Rejected(why) => ("rejected", Some(why.clone())),
                    Verdict::Unknown(why) => ("unknown", Some(why.clone())),
                    Verdict::Untestable(why) => ("untestable", Some((*why).to_owned())),
                };
                json!({"key": check.key, "verdict": verdict, "detail": detail})
            })
            .collect(),
    )
}
