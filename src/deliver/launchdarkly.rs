//! Requests to LaunchDarkly's events service (launchdarkly.md §2, §3).
//!
//! Builds the analytics POST for a batch: the client-side route
//! `/events/bulk/{client_side_id}` (what Segment's LaunchDarkly destination
//! uses), or `/bulk` with the SDK key when one is configured instead. The
//! payload id is the batch's own, so every retry and resend of a batch
//! carries the same `X-LaunchDarkly-Payload-ID`.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};

use super::Outbound;

/// Where and how to post: one of the two LaunchDarkly credentials.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    ClientSideId(&'a str),
    SdkKey(&'a str),
}

/// Builds the bulk events request. `events_url` has no trailing slash;
/// `body` is the JSON array. Fails only if a credential is not a valid
/// header value (the message never contains it).
pub fn bulk_request(
    events_url: &str,
    credential: Credential<'_>,
    schema: &str,
    payload_id: &str,
    body: Bytes,
) -> Result<Outbound, String> {
    let events_url = events_url.trim_end_matches('/');
    let mut headers = vec![
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (USER_AGENT, HeaderValue::from_static(super::USER_AGENT)),
        (
            HeaderName::from_static("x-launchdarkly-event-schema"),
            HeaderValue::from_str(schema).map_err(|_| "invalid event schema value".to_owned())?,
        ),
        (
            HeaderName::from_static("x-launchdarkly-payload-id"),
            HeaderValue::from_str(payload_id).map_err(|_| "invalid payload id".to_owned())?,
        ),
    ];
    let url = match credential {
        Credential::ClientSideId(id) => format!("{events_url}/events/bulk/{id}"),
        Credential::SdkKey(key) => {
            let mut value = HeaderValue::from_str(key)
                .map_err(|_| "the configured SDK key is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.push((AUTHORIZATION, value));
            format!("{events_url}/bulk")
        }
    };
    Ok(Outbound { url, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(request: &'a Outbound, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(key, _)| key.as_str() == name)
            .and_then(|(_, value)| value.to_str().ok())
    }

    #[test]
    fn client_side_id_goes_in_the_path_without_authorization() {
        let request = bulk_request(
            "https://events.launchdarkly.com/",
            Credential::ClientSideId("6488674dc2ea1d6673731ba2"),
            "4",
            "payload-1",
            Bytes::from_static(b"[]"),
        )
        .unwrap();
        assert_eq!(
            request.url,
            "https://events.launchdarkly.com/events/bulk/6488674dc2ea1d6673731ba2"
        );
        assert_eq!(header(&request, "authorization"), None);
        assert_eq!(header(&request, "x-launchdarkly-event-schema"), Some("4"));
        assert_eq!(
            header(&request, "x-launchdarkly-payload-id"),
            Some("payload-1")
        );
        assert!(header(&request, "user-agent")
            .unwrap()
            .starts_with("ldbridge/"));
    }

    #[test]
    fn sdk_key_posts_to_bulk_with_authorization() {
        let request = bulk_request(
            "http://127.0.0.1:9",
            Credential::SdkKey("sdk-123"),
            "4",
            "p",
            Bytes::from_static(b"[]"),
        )
        .unwrap();
        assert_eq!(request.url, "http://127.0.0.1:9/bulk");
        assert_eq!(header(&request, "authorization"), Some("sdk-123"));
        assert!(!format!("{request:?}").contains("sdk-123"));
    }
}
