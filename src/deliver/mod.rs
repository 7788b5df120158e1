//! Outbound HTTP: one keep-alive client for every destination, a request
//! type the route builders fill in, and [`HttpClient::send`], which turns
//! whatever happens on the wire into a [`Reply`] for the retry policy.
//!
//! Never touches the database and decides nothing: classification is
//! `retry`'s job, recording is `store`'s.

pub mod launchdarkly;
pub mod segment;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    header::{HeaderName, HeaderValue},
    Request,
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use crate::{clock::Clock, retry::Answer};

/// `ldbridge/<version>`, sent as `User-Agent` on every request.
pub const USER_AGENT: &str = concat!("ldbridge/", env!("CARGO_PKG_VERSION"));

/// How much of a response body the attempt log keeps.
const EXCERPT_BYTES: usize = 1024;
/// How much of a response body is read at most (the rest is dropped with
/// the connection): enough to reuse connections after ordinary answers.
const DRAIN_BYTES: usize = 64 * 1024;

/// A request ready to send. Header values may hold credentials: never log it.
#[derive(Clone)]
pub struct Outbound {
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers are left out on purpose: they may carry credentials.
        f.debug_struct("Outbound")
            .field("url", &self.url)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Why a destination request could not be built: a value the config or a
/// stored request holds cannot be an HTTP header. Names the header, never
/// its value (it may be a credential).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid {0} header value")]
    InvalidHeader(&'static str),
    #[error("the configured {0} is not a valid header value")]
    InvalidCredential(&'static str),
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Reply {
    pub answer: Answer,
    pub started_at: i64,
    pub duration: Duration,
    /// The first 1 KB of the response body (lossy UTF-8), if any.
    pub excerpt: Option<String>,
}

impl Reply {
    pub fn http_status(&self) -> Option<u16> {
        match self.answer {
            Answer::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The transport error text, for the attempt log.
    pub fn error(&self) -> Option<String> {
        match &self.answer {
            Answer::Status { .. } => None,
            Answer::Timeout => Some("timed out".to_owned()),
            Answer::Transport(text) => Some(text.clone()),
        }
    }
}

/// Serialises already-serialised JSON values as one JSON array (the body
/// of a LaunchDarkly bulk post, the `batch` of a Segment one).
pub fn json_array<'a>(elements: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = String::from("[");
    for (n, element) in elements.into_iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(element);
    }
    body.push(']');
    body
}

/// A pooled HTTP/HTTPS client (rustls, webpki roots); each send has a
/// deadline covering connect, send and reading the answer.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Stamps each reply's start and reads `Retry-After` dates.
    clock: Clock,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    /// A client that trusts the public web PKI (webpki-roots), as needed for
    /// LaunchDarkly's and Segment's endpoints.
    pub fn new() -> HttpClient {
        let connector = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots();
        HttpClient::from_connector(connector)
    }

    /// A client that trusts only `roots`: a private CA in front of the
    /// destination, or a test's own certificate.
    pub fn with_roots(roots: rustls::RootCertStore) -> HttpClient {
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        HttpClient::from_connector(hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls))
    }

    fn from_connector(
        connector: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
    ) -> HttpClient {
        let connector = connector.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        HttpClient {
            client,
            clock: Clock::system(),
        }
    }

    /// The same client reading time from `clock`.
    pub fn with_clock(self, clock: Clock) -> HttpClient {
        HttpClient { clock, ..self }
    }

    /// Sends `request` (POST) within `timeout` and reports what happened;
    /// never fails: errors are part of the [`Reply`].
    pub async fn send(&self, request: &Outbound, timeout: Duration) -> Reply {
        self.send_as(hyper::Method::POST, request, timeout).await
    }

    /// As [`HttpClient::send`], with another method (`check-config
    /// --online` asks with HEAD and GET).
    pub async fn send_as(
        &self,
        method: hyper::Method,
        request: &Outbound,
        timeout: Duration,
    ) -> Reply {
        let started_at = self.clock.now_ms();
        let clock_start = Instant::now();
        let result = tokio::time::timeout(timeout, self.exchange(method, request)).await;
        let (answer, excerpt) = match result {
            Ok(Ok(pair)) => pair,
            Ok(Err(error)) => (Answer::Transport(error), None),
            Err(_) => (Answer::Timeout, None),
        };
        Reply {
            answer,
            started_at,
            duration: clock_start.elapsed(),
            excerpt,
        }
    }

    async fn exchange(
        &self,
        method: hyper::Method,
        outbound: &Outbound,
    ) -> Result<(Answer, Option<String>), String> {
        let mut builder = Request::builder().method(method).uri(&outbound.url);
        for (name, value) in &outbound.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(outbound.body.clone()))
            .map_err(|error| format!("invalid request: {error}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| transport_error(&error))?;
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| crate::retry::parse_retry_after(value, self.clock.now_ms()));
        let excerpt = read_excerpt(response.into_body()).await?;
        Ok((Answer::Status { code, retry_after }, excerpt))
    }
}

/// Reads up to [`DRAIN_BYTES`] of the body and keeps the first
/// [`EXCERPT_BYTES`]. A body cut off mid-response is a transport error: the
/// receiver's answer is not trustworthy.
async fn read_excerpt(mut body: hyper::body::Incoming) -> Result<Option<String>, String> {
    let mut kept = Vec::new();
    let mut read = 0usize;
    while read < DRAIN_BYTES {
        match body.frame().await {
            None => break,
            Some(Err(error)) => return Err(format!("response body: {error}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len();
                    let room = EXCERPT_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    Ok((!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned()))
}

/// A short, credential-free description of a client error: its chain of
/// causes (`tcp connect error: Connection refused (os error 111)`). The
/// retry policy puts "connection error: " in front, once.
fn transport_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut causes = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let mut text = if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    };
    if error.is_connect() && !text.contains("connect") {
        text.push_str(" (connect)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_joins_elements() {
        assert_eq!(json_array([]), "[]");
        assert_eq!(json_array(["1", "{\"a\":2}"]), "[1,{\"a\":2}]");
    }
}
