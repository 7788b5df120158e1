//! CORS on the ingest listener, as browsers running analytics.js and
//! LaunchDarkly's browser SDK need it.
//!
//! - A request with an `Origin` gets it echoed, with
//!   `Access-Control-Allow-Credentials: true` and `Vary: Origin`:
//!   `navigator.sendBeacon` with a JSON body and `fetch(…, {keepalive})` are
//!   credentialed requests, which `Access-Control-Allow-Origin: *` refuses
//!   (Chromium: `PreflightWildcardOriginNotAllowed`), losing the event.
//!   This is safe here only because ingest never reads cookies: keys come in
//!   headers or bodies. The admin listener never echoes origins.
//! - A preflight allows whatever headers the browser asks for: analytics.js
//!   adds `X-Retry-Count` to every retry, and a fixed list that lacks one
//!   header blocks every retry.
//! - `Date` and `Retry-After` are exposed: the LaunchDarkly SDK reads `Date`
//!   for its clock offset, and a client told 503 can read when to come back.
//!
//! Every answer carries these headers, 200, 4xx and 503 alike.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    header::{
        HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
        ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN, VARY,
    },
    HeaderMap, Response, StatusCode,
};

/// What a preflight allows when the browser names no headers.
const DEFAULT_ALLOWED_HEADERS: &str = "Authorization, Content-Type, Content-Encoding, \
     X-Retry-Count, X-LaunchDarkly-User-Agent, X-LaunchDarkly-Payload-ID, \
     X-LaunchDarkly-Wrapper, X-LaunchDarkly-Event-Schema, X-LaunchDarkly-Tags";
/// How long a browser may cache a preflight (Chromium caps it at 2 h).
const MAX_AGE_SECONDS: &str = "7200";

/// The CORS side of one request: the origin to echo, if any.
#[derive(Debug, Clone)]
pub struct Cors {
    origin: Option<HeaderValue>,
}

impl Cors {
    pub fn of(headers: &HeaderMap) -> Cors {
        Cors {
            origin: headers.get(ORIGIN).cloned(),
        }
    }

    /// Adds the CORS headers to an answer.
    pub fn apply<B>(&self, response: &mut Response<B>) {
        let headers = response.headers_mut();
        match &self.origin {
            Some(origin) => {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                headers.insert(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.append(VARY, HeaderValue::from_static("Origin"));
            }
            None => {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            }
        }
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Date, Retry-After"),
        );
    }
}

/// The answer to a preflight (`OPTIONS`): POST with the headers the
/// browser asked for, cached for two hours. [`Cors::apply`] adds the rest.
pub fn preflight(request: &HeaderMap) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    let asked = request
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|asked| !asked.is_empty())
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS));
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(
        ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECONDS),
    );
    headers.append(
        VARY,
        HeaderValue::from_static("Access-Control-Request-Headers"),
    );
    // Chromium's Private Network Access asks before a public page posts
    // to a private address (ldbridge on a LAN or a VPN address).
    if request
        .get("access-control-request-private-network")
        .is_some_and(|value| value == "true")
    {
        headers.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a, B>(response: &'a Response<B>, name: &str) -> Vec<&'a str> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap())
            .collect()
    }

    /// The preflight Chromium sends before analytics.js retries a batch.
    #[test]
    fn a_retry_preflight_from_another_origin_is_allowed_with_credentials() {
        let mut request = HeaderMap::new();
        request.insert(ORIGIN, "http://127.0.0.1:5173".parse().unwrap());
        request.insert("access-control-request-method", "POST".parse().unwrap());
        request.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type,x-retry-count".parse().unwrap(),
        );
        let mut response = preflight(&request);
        Cors::of(&request).apply(&mut response);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            ["http://127.0.0.1:5173"]
        );
        assert_eq!(
            header(&response, "access-control-allow-credentials"),
            ["true"]
        );
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            ["content-type,x-retry-count"]
        );
        assert_eq!(
            header(&response, "vary"),
            ["Access-Control-Request-Headers", "Origin"]
        );
        assert_eq!(
            header(&response, "access-control-expose-headers"),
            ["Date, Retry-After"]
        );
    }

    #[test]
    fn without_an_origin_any_origin_is_allowed_and_no_credentials() {
        let mut response = Response::new(());
        Cors::of(&HeaderMap::new()).apply(&mut response);
        assert_eq!(header(&response, "access-control-allow-origin"), ["*"]);
        assert!(header(&response, "access-control-allow-credentials").is_empty());
        let preflight = preflight(&HeaderMap::new());
        assert!(header(&preflight, "access-control-allow-headers")[0].contains("X-Retry-Count"));
    }

    #[test]
    fn private_network_access_is_granted_when_asked() {
        let mut request = HeaderMap::new();
        request.insert(
            "access-control-request-private-network",
            "true".parse().unwrap(),
        );
        let response = preflight(&request);
        assert_eq!(
            header(&response, "access-control-allow-private-network"),
            ["true"]
        );
    }
}
