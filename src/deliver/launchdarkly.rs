//! Requests to LaunchDarkly's events service (launchdarkly.md §2, §3).
//!
//! Builds the analytics POST for a batch: the client-side route
//! `/events/bulk/{client_side_id}` (what Segment's LaunchDarkly destination
//! uses), or `/bulk` with the SDK key when one is configured instead. The
//! payload id is the batch's own, so every retry and resend of a batch
//! carries the same `X-LaunchDarkly-Payload-ID`.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};

use super::{Outbound, RequestError};
use crate::domain::LdEndpoint;

/// Where and how to post: one of the two LaunchDarkly credentials.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    ClientSideId(&'a str),
    SdkKey(&'a str),
}

/// One request to the events service. `authorization` holds a credential:
/// it goes into a sensitive header and nowhere else.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// Path below `events_url`, starting with `/`.
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    /// `X-LaunchDarkly-Event-Schema` (analytics posts only).
    pub schema: Option<&'a str>,
    /// `X-LaunchDarkly-Payload-ID` (analytics posts only).
    pub payload_id: Option<&'a str>,
    /// `X-LaunchDarkly-Tags`, passed through by the relay.
    pub tags: Option<&'a str>,
    /// The SDK's `User-Agent`, relayed in place of ldbridge's own.
    pub user_agent: Option<&'a str>,
    /// `X-LaunchDarkly-User-Agent`, passed through by the relay.
    pub sdk_user_agent: Option<&'a str>,
    /// `X-LaunchDarkly-Wrapper`, passed through by the relay.
    pub wrapper: Option<&'a str>,
}

/// Builds a request to `events_url` (trailing slash or not). Fails only if
/// a header value is invalid; the message never contains the credential.
pub fn request(
    events_url: &str,
    spec: &Request<'_>,
    body: Bytes,
) -> Result<Outbound, RequestError> {
    let header = |value: &str, what: &'static str| {
        HeaderValue::from_str(value).map_err(|_| RequestError::InvalidHeader(what))
    };
    let user_agent = match spec.user_agent {
        Some(agent) => header(agent, "user agent")?,
        None => HeaderValue::from_static(super::USER_AGENT),
    };
    let mut headers = vec![
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (USER_AGENT, user_agent),
    ];
    for (name, value) in [
        ("x-launchdarkly-user-agent", spec.sdk_user_agent),
        ("x-launchdarkly-wrapper", spec.wrapper),
    ] {
        if let Some(value) = value {
            headers.push((HeaderName::from_static(name), header(value, name)?));
        }
    }
    if let Some(schema) = spec.schema {
        headers.push((
            HeaderName::from_static("x-launchdarkly-event-schema"),
            header(schema, "event schema")?,
        ));
    }
    if let Some(payload_id) = spec.payload_id {
        headers.push((
            HeaderName::from_static("x-launchdarkly-payload-id"),
            header(payload_id, "payload id")?,
        ));
    }
    if let Some(tags) = spec.tags {
        headers.push((
            HeaderName::from_static("x-launchdarkly-tags"),
            header(tags, "tags")?,
        ));
    }
    if let Some(key) = spec.authorization {
        let mut value =
            HeaderValue::from_str(key).map_err(|_| RequestError::InvalidCredential("key"))?;
        value.set_sensitive(true);
        headers.push((AUTHORIZATION, value));
    }
    Ok(Outbound {
        url: format!("{}{}", events_url.trim_end_matches('/'), spec.path),
        headers,
        body,
    })
}

/// The credential a relayed payload is sent with: the source's key of the
/// kind the SDK used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKey {
    Sdk,
    Mobile,
    /// Browser paths carry the client-side id in the path instead.
    None,
}

/// Where the relay sends a payload that came in on `endpoint` (a
/// diagnostic or analytics post; `env` is a browser path's client-side
/// id): the events service's path for it, and which key goes with it.
/// `Err` names what is missing.
pub fn relay_target(
    endpoint: LdEndpoint,
    diagnostic: bool,
    env: Option<&str>,
) -> Result<(String, RelayKey), &'static str> {
    Ok(match (endpoint, diagnostic) {
        (LdEndpoint::Server, false) => ("/bulk".to_owned(), RelayKey::Sdk),
        (LdEndpoint::Server, true) => ("/diagnostic".to_owned(), RelayKey::Sdk),
        (LdEndpoint::Mobile, false) => ("/mobile".to_owned(), RelayKey::Mobile),
        (LdEndpoint::Mobile, true) => ("/mobile/events/diagnostic".to_owned(), RelayKey::Mobile),
        (LdEndpoint::Client, diagnostic) => {
            let env = env.ok_or("client-side id")?;
            let kind = if diagnostic { "diagnostic" } else { "bulk" };
            (format!("/events/{kind}/{env}"), RelayKey::None)
        }
    })
}

/// The analytics POST of a mapped batch (schema 4): `/events/bulk/{id}` for
/// a client-side id (what Segment's LaunchDarkly destination uses), or
/// `/bulk` with the SDK key.
pub fn bulk_request(
    events_url: &str,
    credential: Credential<'_>,
    schema: &str,
    payload_id: &str,
    body: Bytes,
) -> Result<Outbound, RequestError> {
    let (path, authorization) = match credential {
        Credential::ClientSideId(id) => (format!("/events/bulk/{id}"), None),
        Credential::SdkKey(key) => ("/bulk".to_owned(), Some(key)),
    };
    let spec = Request {
        path: &path,
        authorization,
        schema: Some(schema),
        payload_id: Some(payload_id),
        ..Request::default()
    };
    request(events_url, &spec, body)
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
    fn a_relayed_payload_goes_to_the_path_it_came_in_by_with_the_same_kind_of_key() {
        use crate::domain::LdEndpoint::*;
        let target = |endpoint, diagnostic, env| relay_target(endpoint, diagnostic, env);
        assert_eq!(
            target(Server, false, None),
            Ok(("/bulk".to_owned(), RelayKey::Sdk))
        );
        assert_eq!(
            target(Server, true, None),
            Ok(("/diagnostic".to_owned(), RelayKey::Sdk))
        );
        assert_eq!(
            target(Mobile, false, None),
            Ok(("/mobile".to_owned(), RelayKey::Mobile))
        );
        assert_eq!(
            target(Mobile, true, None),
            Ok(("/mobile/events/diagnostic".to_owned(), RelayKey::Mobile))
        );
        assert_eq!(
            target(Client, false, Some("abc")),
            Ok(("/events/bulk/abc".to_owned(), RelayKey::None))
        );
        assert_eq!(
            target(Client, true, Some("abc")),
            Ok(("/events/diagnostic/abc".to_owned(), RelayKey::None))
        );
        assert_eq!(target(Client, false, None), Err("client-side id"));
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
