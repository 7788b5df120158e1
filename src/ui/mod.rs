//! The Delivery Overview: web pages on the admin listener (`/ui/`), to see
//! where events stop, explain one, and resend.
//!
//! Owns the page routes, the login that exchanges the admin token for a
//! session cookie, the cross-site request checks, and the embedded assets
//! (`assets/`: one stylesheet, one script, the icon; no CDN, nothing
//! fetched at build or run time). The views and their data are in
//! [`pages`]; everything they show comes from `ops` and `store::counts`,
//! as the CLI's does. Does not own the JSON API or `/metrics` (`admin`).
//!
//! Security, as the admin API's: with `server.admin_token` set, every page
//! but the login needs a session (an `HttpOnly`, `SameSite=Strict`
//! cookie; the token is never in a URL); a wrong token is answered after a
//! pause, one at a time, and counted. Every state-changing request must
//! come from the page itself: an `Origin` naming this listener's `Host`,
//! and the `X-Ldbridge-Request` header only a same-origin script can set.

pub mod pages;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::Bytes;
use cookie::{Cookie, SameSite};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::Incoming,
    header::{
        HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE,
    },
    HeaderMap, Method, Request, Response, StatusCode,
};

use crate::admin::Admin;

type Answer = Response<Full<Bytes>>;

/// The session cookie's name.
const COOKIE_NAME: &str = "ldbridge_session";
/// How long a session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a wrong token waits for its answer; answers wait in turn, so
/// guesses go at most one a second, however many connections send them.
pub const BAD_TOKEN_PAUSE: Duration = Duration::from_secs(1);
/// The header the page's script sets on every state-changing request.
pub const REQUEST_HEADER: &str = "x-ldbridge-request";
/// The largest form the pages post.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The page's state: open sessions, and the turn wrong tokens wait for.
#[derive(Default)]
pub struct Ui {
    /// Session id → when it expires. std Mutex: never held across `.await`.
    sessions: Mutex<HashMap<String, Instant>>,
    /// Held while a wrong token's answer waits.
    bad_token_turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Session ids are credentials.
        f.debug_struct("Ui").finish_non_exhaustive()
    }
}

/// Whether `path` (trailing slash trimmed) is the page's.
pub fn is_page_path(path: &str) -> bool {
    path.is_empty() || path == "/ui" || path.starts_with("/ui/") || path == "/favicon.ico"
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

pub(crate) fn html(status: StatusCode, body: String) -> Answer {
    respond(status, "text/html; charset=utf-8", body)
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    respond(status, "application/json", value.to_string())
}

fn redirect(to: &str) -> Answer {
    let mut answer = respond(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(location) = HeaderValue::from_str(to) {
        answer.headers_mut().insert(LOCATION, location);
    }
    answer
}

fn asset(path: &str) -> Option<Answer> {
    let (content_type, body): (&'static str, &'static str) = match path {
        "/ui/app.css" => (
            "text/css; charset=utf-8",
            include_str!("../../assets/app.css"),
        ),
        "/ui/app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../../assets/app.js"),
        ),
        "/ui/favicon.svg" | "/favicon.ico" => {
            ("image/svg+xml", include_str!("../../assets/favicon.svg"))
        }
        _ => return None,
    };
    let mut answer = respond(StatusCode::OK, content_type, body);
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    Some(answer)
}

impl Ui {
    /// Answers one request for a page path. Never fails: every problem is
    /// an answer.
    pub async fn handle(&self, admin: &Admin, request: Request<Incoming>, path: &str) -> Answer {
        if let Some(answer) = asset(path) {
            return answer;
        }
        // `path` has its trailing slash trimmed: `/ui/` (the overview) is
        // `/ui` here, and only a bare `/` or `/ui` is sent to it.
        if matches!(request.uri().path(), "/" | "/ui") {
            return redirect("/ui/");
        }
        let path = if path == "/ui" { "/ui/" } else { path };
        let method = request.method().clone();
        let state_changing = method != Method::GET && method != Method::HEAD;
        if state_changing {
            if let Err(why) = same_origin(request.headers()) {
                return json(StatusCode::FORBIDDEN, &serde_json::json!({ "error": why }));
            }
        }
        let needs_login = admin.config.get().server.admin_token.is_some();
        if path == "/ui/login" {
            return match method {
                Method::POST => self.login(admin, request).await,
                _ => pages::login(&next_page(request.uri().query())),
            };
        }
        if needs_login && !self.has_session(request.headers()) {
            if state_changing {
                return json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({"error": "log in first"}),
                );
            }
            let next = request
                .uri()
                .path_and_query()
                .map_or("/ui/".to_owned(), |p| p.as_str().to_owned());
            return redirect(&format!(
                "/ui/login?next={}",
                form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            ));
        }
        if path == "/ui/logout" && state_changing {
            self.forget(request.headers());
            let mut answer = redirect("/ui/login");
            let gone = Cookie::build((COOKIE_NAME, ""))
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .max_age(cookie::time::Duration::ZERO)
                .build();
            if let Ok(value) = HeaderValue::from_str(&gone.to_string()) {
                answer.headers_mut().insert(SET_COOKIE, value);
            }
            return answer;
        }
        let form = if state_changing {
            match read_form(request).await {
                Ok(form) => form,
                Err(answer) => return answer,
            }
        } else {
            parse_query(request.uri().query().unwrap_or_default())
        };
        pages::route(admin, &method, path, &form).await
    }

    /// `POST /ui/login`: the admin token for a session cookie.
    async fn login(&self, admin: &Admin, request: Request<Incoming>) -> Answer {
        let form = match read_form(request).await {
            Ok(form) => form,
            Err(answer) => return answer,
        };
        let presented = form.get("token").map(String::as_str).unwrap_or_default();
        let config = admin.config.get();
        let good = match &config.server.admin_token {
            Some(token) => crate::admin::tokens_match(token, presented),
            None => true,
        };
        if !good {
            self.bad_token(admin).await;
            return json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "wrong admin token"}),
            );
        }
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        {
            let mut sessions = self.sessions.lock().expect("not poisoned");
            let now = Instant::now();
            sessions.retain(|_, expires| *expires > now);
            sessions.insert(id.clone(), now + SESSION_LIFETIME);
        }
        let cookie = Cookie::build((COOKIE_NAME, id))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .max_age(cookie::time::Duration::seconds(
                SESSION_LIFETIME.as_secs() as i64
            ))
            .build();
        let mut answer = json(StatusCode::OK, &serde_json::json!({"ok": true}));
        if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
            answer.headers_mut().insert(SET_COOKIE, value);
        }
        answer
    }

    /// Waits [`BAD_TOKEN_PAUSE`] in turn with every other wrong token, and
    /// counts it.
    pub async fn bad_token(&self, admin: &Admin) {
        admin.metrics.admin_bad_token();
        let _turn = self.bad_token_turn.lock().await;
        tokio::time::sleep(BAD_TOKEN_PAUSE).await;
    }

    fn session_id(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|cookie| cookie.name() == COOKIE_NAME)
            .map(|cookie| cookie.value().to_owned())
    }

    fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(id) = Self::session_id(headers) else {
            return false;
        };
        let sessions = self.sessions.lock().expect("not poisoned");
        sessions
            .get(&id)
            .is_some_and(|expires| *expires > Instant::now())
    }

    fn forget(&self, headers: &HeaderMap) {
        if let Some(id) = Self::session_id(headers) {
            self.sessions.lock().expect("not poisoned").remove(&id);
        }
    }
}

/// Where to go after logging in: a page path from the query, else the
/// overview (never another site).
fn next_page(query: Option<&str>) -> String {
    let next = parse_query(query.unwrap_or_default())
        .remove("next")
        .unwrap_or_default();
    if next.starts_with("/ui/") && !next.starts_with("//") {
        next
    } else {
        "/ui/".to_owned()
    }
}

/// A state-changing request is the page's own when it carries the
/// page's header and an `Origin` naming this listener.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if headers.get(REQUEST_HEADER).is_none() {
        return Err("cross-site request refused: the X-Ldbridge-Request header is missing");
    }
    let host = headers.get(HOST).and_then(|value| value.to_str().ok());
    let origin = headers.get(ORIGIN).and_then(|value| value.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin))
            if origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host) =>
        {
            Ok(())
        }
        _ => Err("cross-site request refused: Origin does not name this listener"),
    }
}

/// `application/x-www-form-urlencoded` pairs (the last of a name wins).
pub(crate) fn parse_query(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

async fn read_form(request: Request<Incoming>) -> Result<HashMap<String, String>, Answer> {
    let body = Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| {
            json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": "form too large or cut off"}),
            )
        })?
        .to_bytes();
    Ok(parse_query(&String::from_utf8_lossy(&body)))
}

/// On a tokenless admin listener (loopback only), whether `headers` name a
/// loopback host: a web page reached by another name (DNS rebinding) is
/// refused, on the page and the API alike.
pub fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_loopback_host_names_pass_a_tokenless_listener() {
        for good in [
            "127.0.0.1:8089",
            "localhost:8089",
            "LOCALHOST",
            "[::1]:8089",
            "127.9.9.9",
        ] {
            assert!(loopback_host(&headers(&[("host", good)])), "{good}");
        }
        for bad in [
            "evil.example:8089",
            "10.0.0.1:8089",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!loopback_host(&headers(&[("host", bad)])), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn state_changing_requests_need_the_header_and_this_origin() {
        let ok = [
            ("host", "127.0.0.1:8089"),
            ("origin", "http://127.0.0.1:8089"),
            ("x-ldbridge-request", "1"),
        ];
        assert!(same_origin(&headers(&ok)).is_ok());
        assert!(same_origin(&headers(&ok[..2])).is_err(), "no header");
        let foreign = [
            ("host", "127.0.0.1:8089"),
            ("origin", "http://evil.example"),
            ("x-ldbridge-request", "1"),
        ];
        assert!(same_origin(&headers(&foreign)).is_err());
        assert!(same_origin(&headers(&[ok[0], ok[2]])).is_err(), "no Origin");
    }

    #[test]
    fn after_login_only_page_paths_are_followed() {
        assert_eq!(
            next_page(Some("next=%2Fui%2Fbatches%3Fstatus%3Dfailed")),
            "/ui/batches?status=failed"
        );
        assert_eq!(next_page(Some("next=https%3A%2F%2Fevil.example")), "/ui/");
        assert_eq!(next_page(Some("next=%2F%2Fevil.example")), "/ui/");
        assert_eq!(next_page(None), "/ui/");
    }
}
