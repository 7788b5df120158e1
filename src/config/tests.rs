//! Tests of parsing, secret resolution and validation.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use super::*;

const ORIGIN: &str = "test.toml";

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(text, ORIGIN, &no_env)
}

fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_toml_with_env(text, ORIGIN, &|name| vars.get(name).cloned())
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_error(text: &str, expected: &[&str]) {
    let message = error(text);
    for part in expected {
        assert!(
            message.contains(part),
            "error {message:?} should contain {part:?}"
        );
    }
}

const WEB: &str = "[[segment_source]]\nname = \"web\"\nwrite_key = \"wk-web\"\n";

const ARCHITECTURE_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8088"          # ingest: Segment- and LaunchDarkly-compatible endpoints
admin_listen = "127.0.0.1:8089"    # admin API, /metrics, /healthz, /readyz; omit to disable
admin_token = "file:/etc/ldbridge/admin-token"   # bearer token for the admin API; required unless admin_listen is loopback
max_request_bytes = 512000

[store]
path = "/var/lib/ldbridge/ldbridge.db"
retain = "7d"                      # delivered/skipped events and their attempts are purged after this

[dispatch]
schedule = "*/1 * * * * *"         # tokio-cron-scheduler expression (with seconds)
max_batch_events = 500
max_batch_bytes = 480000
request_timeout = "15s"
retry_schedule = ["5s", "30s", "2m", "10m", "30m", "1h", "2h", "4h", "8h"]
give_up_after = "24h"              # a batch older than this that still fails becomes `failed`

[launchdarkly]
events_url = "https://events.launchdarkly.com"

[segment]
api_url = "https://api.segment.io"

[[segment_source]]                  # events arriving with this write key ...
name = "web-prod"
write_key = "env:SEGMENT_WRITE_KEY_WEB"
webhook_secret = "cred:segment-webhook"          # optional: verify X-Signature on /segment/webhook
to_launchdarkly = { client_side_id = "5d4b…" }   # ... become LD custom events here (or sdk_key = "…")
relay_to_segment = false                          # ... and optionally pass through to Segment unchanged

[[launchdarkly_source]]             # events from SDKs using any of these credentials ...
name = "prod"
sdk_key = "env:LD_SDK_KEY"
mobile_key = "env:LD_MOBILE_KEY"
client_side_id = "5d4b…"
project_id = "5744c…"                              # written into properties.project
                                               # (client_side_id is written into properties.environment)
to_segment = { write_key = "env:SEGMENT_WRITE_KEY_LD" }   # ... become Segment track/page calls here
relay_to_launchdarkly = true                       # ... and still reach LaunchDarkly unchanged
"#;

#[test]
fn empty_text_gives_the_defaults() {
    let config = parse("").expect("empty config is valid");
    assert_eq!(config, Config::default());
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8088");
    assert_eq!(config.server.admin_listen, None);
    assert_eq!(config.server.max_request_bytes, 512_000);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.store.path, PathBuf::from("./ldbridge.db"));
    assert_eq!(config.store.retain, Duration::from_secs(7 * 86_400));
    assert_eq!(config.store.synchronous, Synchronous::Full);
    assert_eq!(config.store.busy_timeout, Duration::from_secs(5));
    assert_eq!(config.dispatch.schedule, "*/1 * * * * *");
    assert_eq!(config.dispatch.max_batch_events, 500);
    assert_eq!(config.dispatch.max_batch_bytes, 480_000);
    assert_eq!(config.dispatch.request_timeout, Duration::from_secs(15));
    assert_eq!(config.dispatch.retry_schedule.len(), 9);
    assert_eq!(config.dispatch.retry_schedule[2], Duration::from_secs(120));
    assert_eq!(
        config.dispatch.retry_schedule[8],
        Duration::from_secs(8 * 3600)
    );
    assert_eq!(config.dispatch.give_up_after, Duration::from_secs(86_400));
    assert_eq!(config.dispatch.max_in_flight, 4);
    // Three request timeouts (a run's three waves) plus 30 s.
    assert_eq!(
        config.dispatch.claim_timeout(),
        Duration::from_secs(3 * 15 + 30)
    );
    assert_eq!(config.dispatch.writer_queue, 1024);
    assert_eq!(
        config.launchdarkly.events_url,
        "https://events.launchdarkly.com"
    );
    assert_eq!(config.segment.api_url, "https://api.segment.io");
    assert!(config.segment_sources.is_empty());
    assert!(config.launchdarkly_sources.is_empty());
}

#[test]
fn empty_sections_give_the_defaults() {
    let text = "[server]\n[store]\n[dispatch]\n[launchdarkly]\n[segment]\n";
    assert_eq!(parse(text).expect("valid"), Config::default());
}

#[test]
fn load_without_a_file_gives_the_defaults() {
    assert_eq!(Config::load(None).expect("valid"), Config::default());
    assert_eq!(
        StoreConfig::load(None).expect("valid"),
        StoreConfig::default()
    );
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ldbridge.toml");
    std::fs::write(&path, "[store]\npath = \"/tmp/x.db\"\n").expect("write");
    let config = Config::load(Some(&path)).expect("valid");
    assert_eq!(config.store.path, PathBuf::from("/tmp/x.db"));

    std::fs::write(&path, "[store]\npth = 1\n").expect("write");
    let message = Config::load(Some(&path))
        .expect_err("unknown key")
        .to_string();
    assert!(message.contains("ldbridge.toml: line 2"), "{message}");

    let missing = dir.path().join("missing.toml");
    let err = Config::load(Some(&missing)).expect_err("no file");
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("missing.toml"));
}

#[test]
fn the_architecture_example_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "  admin-secret\n").expect("write");
    std::fs::write(dir.path().join("segment-webhook"), "hook-secret\n").expect("write");
    let text = ARCHITECTURE_EXAMPLE.replace(
        "/etc/ldbridge/admin-token",
        token.to_str().expect("utf-8 path"),
    );
    let creds = dir.path().to_str().expect("utf-8 path");
    let config = parse_with(
        &text,
        &[
            ("SEGMENT_WRITE_KEY_WEB", "wk-web"),
            ("LD_SDK_KEY", "sdk-123"),
            ("LD_MOBILE_KEY", "mob-123"),
            ("SEGMENT_WRITE_KEY_LD", "wk-ld"),
            ("CREDENTIALS_DIRECTORY", creds),
        ],
    )
    .expect("the documented example is valid");

    assert_eq!(
        config.server.admin_listen,
        Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8089)))
    );
    assert_eq!(config.server.admin_token, Some(Secret::new("admin-secret")));
    assert_eq!(
        config.store.path,
        PathBuf::from("/var/lib/ldbridge/ldbridge.db")
    );
    assert_eq!(config.dispatch, DispatchConfig::default());

    let web = &config.segment_sources[0];
    assert_eq!(web.name, "web-prod");
    assert_eq!(web.write_key.expose(), "wk-web");
    assert_eq!(web.webhook_secret, Some(Secret::new("hook-secret")));
    let dest = web.to_launchdarkly.as_ref().expect("to_launchdarkly");
    assert_eq!(dest.client_side_id.as_deref(), Some("5d4b…"));
    assert_eq!(dest.sdk_key, None);
    assert!(!web.relay_to_segment);

    let prod = &config.launchdarkly_sources[0];
    assert_eq!(prod.name, "prod");
    assert_eq!(prod.sdk_key, Some(Secret::new("sdk-123")));
    assert_eq!(prod.mobile_key, Some(Secret::new("mob-123")));
    assert_eq!(prod.project_id.as_deref(), Some("5744c…"));
    let to_segment = prod.to_segment.as_ref().expect("to_segment");
    assert_eq!(to_segment.write_key.expose(), "wk-ld");
    assert!(prod.relay_to_launchdarkly);
    assert!(!prod.copy_custom_data);
}

#[test]
fn extension_keys_parse() {
    let text = r#"
[server]
shutdown_timeout = "250ms"
[store]
synchronous = "normal"
busy_timeout = "1m"
[dispatch]
max_in_flight = 64
writer_queue = 1
[[launchdarkly_source]]
name = "ld"
client_side_id = "abc"
copy_custom_data = true
"#;
    let config = parse(text).expect("valid");
    assert_eq!(config.server.shutdown_timeout, Duration::from_millis(250));
    assert_eq!(config.store.synchronous, Synchronous::Normal);
    assert_eq!(config.store.synchronous.as_pragma(), "NORMAL");
    assert_eq!(config.store.busy_timeout, Duration::from_secs(60));
    assert_eq!(config.dispatch.max_in_flight, 64);
    assert_eq!(config.dispatch.writer_queue, 1);
    assert!(config.launchdarkly_sources[0].copy_custom_data);
}

#[test]
fn literal_and_env_secrets_resolve() {
    let text = "[[segment_source]]\nname = \"a\"\nwrite_key = \"env:WK\"\n\
                webhook_secret = \"plain-literal\"\n";
    let config = parse_with(text, &[("WK", "from-env")]).expect("valid");
    assert_eq!(config.segment_sources[0].write_key.expose(), "from-env");
    let hook = config.segment_sources[0]
        .webhook_secret
        .as_ref()
        .expect("set");
    assert_eq!(hook.expose(), "plain-literal");
}

#[test]
fn a_missing_or_empty_env_secret_names_the_key_and_variable() {
    let text = "[[segment_source]]\nname = \"web-prod\"\nwrite_key = \"env:WK\"\n";
    let err = parse(text).expect_err("unset");
    assert!(matches!(err, ConfigError::Secret { .. }));
    let message = err.to_string();
    assert!(
        message.contains("segment_source \"web-prod\" write_key"),
        "{message}"
    );
    assert!(message.contains("WK is not set"), "{message}");

    let message = parse_with(text, &[("WK", "")])
        .expect_err("empty")
        .to_string();
    assert!(message.contains("WK is empty"), "{message}");
}

#[test]
fn file_secrets_are_trimmed_and_errors_name_key_and_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::write(&path, "\n tok-123 \n").expect("write");
    let text = format!(
        "[server]\nadmin_token = \"file:{}\"\n",
        path.to_str().expect("utf-8")
    );
    let config = parse(&text).expect("valid");
    assert_eq!(config.server.admin_token, Some(Secret::new("tok-123")));

    std::fs::write(&path, " \n").expect("write");
    let message = error(&text);
    assert!(message.contains("server.admin_token"), "{message}");
    assert!(message.contains("is empty"), "{message}");

    let missing = dir.path().join("nope");
    let text = format!("[server]\nadmin_token = \"file:{}\"\n", missing.display());
    let message = error(&text);
    assert!(
        message.starts_with("server.admin_token: cannot read file"),
        "{message}"
    );
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

#[test]
fn cred_secrets_read_the_credentials_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ld-sdk"), "sdk-from-cred\n").expect("write");
    let creds = dir.path().to_str().expect("utf-8");
    let text = "[[launchdarkly_source]]\nname = \"ld\"\nsdk_key = \"cred:ld-sdk\"\n";
    let config = parse_with(text, &[("CREDENTIALS_DIRECTORY", creds)]).expect("valid");
    let key = config.launchdarkly_sources[0]
        .sdk_key
        .as_ref()
        .expect("set");
    assert_eq!(key.expose(), "sdk-from-cred");

    let message = error(text);
    assert!(
        message.contains("launchdarkly_source \"ld\" sdk_key"),
        "{message}"
    );
    assert!(message.contains("CREDENTIALS_DIRECTORY"), "{message}");

    let other = text.replace("ld-sdk", "other");
    let message = parse_with(&other, &[("CREDENTIALS_DIRECTORY", creds)])
        .expect_err("missing credential")
        .to_string();
    assert!(
        message.contains("launchdarkly_source \"ld\" sdk_key"),
        "{message}"
    );
    assert!(message.contains("credential other"), "{message}");

    let escape = text.replace("ld-sdk", "../ld-sdk");
    let message = parse_with(&escape, &[("CREDENTIALS_DIRECTORY", creds)])
        .expect_err("path in name")
        .to_string();
    assert!(message.contains("not a valid credential name"), "{message}");
}

#[test]
fn an_empty_literal_secret_is_rejected() {
    assert_error(
        "[[segment_source]]\nname = \"a\"\nwrite_key = \"\"\n",
        &["segment_source \"a\" write_key", "empty"],
    );
}

#[test]
fn a_mistyped_secret_scheme_is_an_error_not_a_literal_key() {
    for typo in ["envv:WK", "ENV:WK", "credential:wk", "File:/etc/key"] {
        let text = format!("[[segment_source]]\nname = \"a\"\nwrite_key = \"{typo}\"\n");
        let message = error(&text);
        assert!(
            message.contains("unknown secret scheme"),
            "{typo}: {message}"
        );
        assert!(message.contains("literal:"), "{message}");
        // The rest of the value (a key, perhaps) is never echoed.
        assert!(!message.contains(typo), "{message}");
    }
    // A key with a colon in it, written literally.
    let config =
        parse("[[segment_source]]\nname = \"a\"\nwrite_key = \"literal:abc:def\"\n").unwrap();
    assert_eq!(config.segment_sources[0].write_key.expose(), "abc:def");
    // Values that are not scheme-shaped stay literal keys.
    let config = parse("[[segment_source]]\nname = \"a\"\nwrite_key = \"9x:y\"\n").unwrap();
    assert_eq!(config.segment_sources[0].write_key.expose(), "9x:y");
}

#[test]
fn an_unknown_key_names_file_line_and_key() {
    let message = error("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n");
    assert!(
        message.starts_with("test.toml: line 3, column 1 (server.lisen)"),
        "{message}"
    );
    assert!(message.contains("unknown field `lisen`"), "{message}");

    assert_error("[sever]\n", &["line 1", "unknown field `sever`"]);
    assert_error(
        "[[segment_source]]   # web\nname = \"a\"\nwrite_key = \"k\"\nrelay = true\n",
        &["line 4", "(segment_source.relay)", "unknown field `relay`"],
    );
    assert_error(
        "[[segment_source]]\nname = \"a\"\nwrite_key = \"k\"\n\
         to_launchdarkly = { client_id = \"x\" }\n",
        &[
            "line 4",
            "segment_source.to_launchdarkly",
            "unknown field `client_id`",
        ],
    );
}

#[test]
fn type_and_syntax_errors_name_line_and_key() {
    assert_error(
        "[dispatch]\nmax_batch_events = \"many\"\n",
        &[
            "test.toml: line 2",
            "dispatch.max_batch_events",
            "expected usize",
        ],
    );
    assert_error(
        "[server]\nlisten = \"localhost\"\n",
        &["line 2", "server.listen", "socket address"],
    );
    assert_error(
        "[store]\nsynchronous = \"FULL\"\n",
        &["line 2", "store.synchronous"],
    );
    assert_error(
        "[[launchdarkly_source]]\nsdk_key = \"k\"\n",
        &["line 1", "launchdarkly_source", "missing field `name`"],
    );
}

#[test]
fn a_bad_duration_names_the_key_and_line() {
    let message = error("[dispatch]\nrequest_timeout = \"15x\"\n");
    assert!(
        message.starts_with("test.toml: line 2, column 19 (dispatch.request_timeout)"),
        "{message}"
    );
    assert!(message.contains("invalid duration \"15x\""), "{message}");

    assert_error(
        "[dispatch]\nretry_schedule = [\"5s\", \"soon\"]\n",
        &["line 2", "dispatch.retry_schedule[1]", "\"soon\""],
    );
    assert_error(
        "[store]\nretain = \"7\"\n",
        &["store.retain", "time unit needed"],
    );
    assert_error("[store]\nbusy_timeout = \"\"\n", &["store.busy_timeout"]);
    assert_error(
        "[server]\nshutdown_timeout = \"x\"\n",
        &["server.shutdown_timeout"],
    );
    assert_error(
        "[dispatch]\ngive_up_after = \"1 dy\"\n",
        &["dispatch.give_up_after"],
    );
}

#[test]
fn numeric_limits_are_enforced() {
    let cases: &[(&str, &str)] = &[
        (
            "[server]\nmax_request_bytes = 0",
            "server.max_request_bytes",
        ),
        (
            "[server]\nmax_request_bytes = 100000001",
            "server.max_request_bytes",
        ),
        (
            "[dispatch]\nmax_batch_events = 0",
            "dispatch.max_batch_events",
        ),
        (
            "[dispatch]\nmax_batch_events = 2501",
            "dispatch.max_batch_events",
        ),
        (
            "[dispatch]\nmax_batch_bytes = 999",
            "dispatch.max_batch_bytes",
        ),
        (
            "[dispatch]\nmax_batch_bytes = 500001",
            "dispatch.max_batch_bytes",
        ),
        ("[dispatch]\nmax_in_flight = 0", "dispatch.max_in_flight"),
        ("[dispatch]\nmax_in_flight = 65", "dispatch.max_in_flight"),
        ("[dispatch]\nwriter_queue = 0", "dispatch.writer_queue"),
        (
            "[dispatch]\nrequest_timeout = \"0s\"",
            "dispatch.request_timeout",
        ),
        (
            "[dispatch]\ngive_up_after = \"0s\"",
            "dispatch.give_up_after",
        ),
        ("[dispatch]\nretry_schedule = []", "dispatch.retry_schedule"),
        (
            "[dispatch]\nrequest_timeout = \"10s\"\nclaim_timeout = \"10s\"",
            "dispatch.claim_timeout",
        ),
        (
            "[dispatch]\nretry_schedule = [\"5s\", \"0ms\"]",
            "dispatch.retry_schedule[1]",
        ),
    ];
    for (text, key) in cases {
        let err = parse(text).expect_err(text);
        assert!(
            matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
            "{text}: {err}"
        );
    }
    let edges = "[server]\nmax_request_bytes = 100000000\n[dispatch]\nmax_batch_events = 2500\n\
                 max_batch_bytes = 1000\nmax_in_flight = 1\n";
    parse(edges).expect("limits are inclusive");
    parse("[dispatch]\nmax_batch_events = 1\nmax_batch_bytes = 500000\n")
        .expect("limits are inclusive");
}

#[test]
fn the_schedule_must_be_a_cron_expression_with_seconds() {
    assert_error(
        "[dispatch]\nschedule = \"*/5 * * * *\"\n",
        &[
            "dispatch.schedule",
            "\"*/5 * * * *\"",
            "Pattern must have 6 or 7 fields",
        ],
    );
    assert_error(
        "[dispatch]\nschedule = \"every minute\"\n",
        &["dispatch.schedule"],
    );
    assert_error(
        "[dispatch]\nschedule = \"0 61 * * * *\"\n",
        &["dispatch.schedule"],
    );
    parse("[dispatch]\nschedule = \"0 */5 * * * Mon-Fri\"\n").expect("valid");
}

#[test]
fn urls_need_a_scheme_and_lose_one_trailing_slash() {
    assert_error(
        "[launchdarkly]\nevents_url = \"ftp://x\"\n",
        &["launchdarkly.events_url", "http:// or https://"],
    );
    assert_error(
        "[segment]\napi_url = \"api.segment.io\"\n",
        &["segment.api_url"],
    );
    assert_error("[segment]\napi_url = \"https://\"\n", &["segment.api_url"]);
    let config = parse(
        "[launchdarkly]\nevents_url = \"http://127.0.0.1:9000/\"\n\
         [segment]\napi_url = \"https://proxy.example/segment/\"\n",
    )
    .expect("valid");
    assert_eq!(config.launchdarkly.events_url, "http://127.0.0.1:9000");
    assert_eq!(config.segment.api_url, "https://proxy.example/segment");
}

#[test]
fn source_names_must_be_tokens() {
    assert_error(
        "[[segment_source]]\nname = \"\"\nwrite_key = \"k\"\n",
        &["segment_source[0].name", "non-empty"],
    );
    assert_error(
        &format!("{WEB}[[segment_source]]\nname = \"web prod\"\nwrite_key = \"k2\"\n"),
        &["segment_source[1].name", "\"web prod\""],
    );
    parse("[[segment_source]]\nname = \"Web_prod-2.eu\"\nwrite_key = \"k\"\n").expect("valid name");
}

#[test]
fn source_names_are_unique_across_both_lists() {
    assert_error(
        &format!("{WEB}[[segment_source]]\nname = \"web\"\nwrite_key = \"k2\"\n"),
        &[
            "segment_source[1].name",
            "already used by segment_source[0]",
        ],
    );
    assert_error(
        &format!("{WEB}[[launchdarkly_source]]\nname = \"web\"\nsdk_key = \"s\"\n"),
        &[
            "launchdarkly_source[0].name",
            "already used by segment_source[0]",
        ],
    );
}

#[test]
fn credentials_are_unique_per_source_kind() {
    assert_error(
        &format!("{WEB}[[segment_source]]\nname = \"web2\"\nwrite_key = \"wk-web\"\n"),
        &[
            "segment_source \"web2\" write_key",
            "segment_source \"web\"",
        ],
    );
    let ld = |name: &str| format!("[[launchdarkly_source]]\nname = \"{name}\"\nsdk_key = \"s\"\n");
    assert_error(
        &format!("{}{}", ld("a"), ld("b")),
        &[
            "launchdarkly_source \"b\" sdk_key",
            "launchdarkly_source \"a\"",
        ],
    );
    let cs = |name: &str| {
        format!("[[launchdarkly_source]]\nname = \"{name}\"\nclient_side_id = \"c1\"\n")
    };
    assert_error(
        &format!("{}{}", cs("a"), cs("b")),
        &["launchdarkly_source \"b\" client_side_id"],
    );
}

#[test]
fn to_launchdarkly_needs_exactly_one_credential() {
    let source = |dest: &str| format!("{WEB}to_launchdarkly = {dest}\n");
    assert_error(
        &source("{ client_side_id = \"c\", sdk_key = \"s\" }"),
        &["segment_source \"web\" to_launchdarkly", "exactly one"],
    );
    assert_error(
        &source("{}"),
        &["segment_source \"web\" to_launchdarkly", "exactly one"],
    );
    assert_error(
        &source("{ client_side_id = \"a/b\" }"),
        &["to_launchdarkly.client_side_id"],
    );
    let config = parse(&source("{ sdk_key = \"s\" }")).expect("valid");
    let dest = config.segment_sources[0]
        .to_launchdarkly
        .as_ref()
        .expect("set");
    assert_eq!(dest.sdk_key, Some(Secret::new("s")));
}

#[test]
fn a_launchdarkly_source_needs_a_credential() {
    assert_error(
        "[[launchdarkly_source]]\nname = \"ld\"\nproject_id = \"p\"\n",
        &[
            "launchdarkly_source \"ld\"",
            "at least one of sdk_key, mobile_key or client_side_id",
        ],
    );
    parse("[[launchdarkly_source]]\nname = \"ld\"\nmobile_key = \"m\"\n").expect("valid");
}

#[test]
fn a_public_admin_listener_needs_a_token() {
    assert_error(
        "[server]\nadmin_listen = \"0.0.0.0:8089\"\n",
        &["server.admin_token", "not a loopback address"],
    );
    parse("[server]\nadmin_listen = \"0.0.0.0:8089\"\nadmin_token = \"t\"\n").expect("valid");
    parse("[server]\nadmin_listen = \"127.0.0.1:8089\"\n").expect("loopback needs no token");
    parse("[server]\nadmin_listen = \"[::1]:8089\"\n").expect("loopback needs no token");
}

#[test]
fn secrets_are_redacted_in_debug_and_display() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret:?}"), "Secret(***)");
    assert_eq!(format!("{secret}"), "***");
    assert_eq!(secret.expose(), "hunter2");

    let config = parse(&format!("{WEB}webhook_secret = \"hunter2\"\n")).expect("valid");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("wk-web"),
        "{debug}"
    );
}

#[test]
fn secrets_never_appear_in_error_messages() {
    let secret = "sekrit-value-123";
    let source = format!("[[segment_source]]\nname = \"web\"\nwrite_key = \"{secret}\"\n");
    let texts = [
        // Syntax error on the secret's own line: toml's snippet would show it.
        format!("[[segment_source]]\nname = \"web\"\nwrite_key = \"{secret}\" oops\n"),
        format!("[[segment_source]]\nname = \"web\"\nwrite_key = \"{secret}\nrelay = 1\n"),
        format!("{source}bogus = 1\n"),
        // A secret pasted into a non-secret field shows up in serde's
        // "invalid type: string ..." message unless redacted.
        format!("{source}relay_to_segment = \"{secret}\"\n"),
        format!("{source}[[segment_source]]\nname = \"b\"\nwrite_key = \"{secret}\"\n"),
        format!("{source}to_launchdarkly = {{ sdk_key = \"{secret}\", client_side_id = \"c\" }}\n"),
        format!("[server]\nadmin_listen = \"0.0.0.0:1\"\n{source}"),
        format!(
            "[[launchdarkly_source]]\nname = \"a\"\nsdk_key = \"{secret}\"\n\
                 [[launchdarkly_source]]\nname = \"b\"\nsdk_key = \"{secret}\"\n"
        ),
        format!("{source}webhook_secret = \"\"\n"),
    ];
    for text in &texts {
        let message = error(text);
        assert!(!message.contains(secret), "{message}");
        let debug = format!("{:?}", parse(text).expect_err("invalid"));
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[test]
fn sources_are_found_by_name_and_credential() {
    let text = format!(
        "{WEB}[[launchdarkly_source]]\nname = \"ld\"\nsdk_key = \"s\"\nmobile_key = \"m\"\n\
         client_side_id = \"c\"\n"
    );
    let config = parse(&text).expect("valid");
    assert_eq!(
        config
            .segment_source_by_key("wk-web")
            .map(|s| s.name.as_str()),
        Some("web")
    );
    assert!(config.segment_source_by_key("nope").is_none());
    assert!(matches!(
        config.source_by_name("web"),
        Some(SourceRef::Segment(_))
    ));
    let ld = config.source_by_name("ld").expect("found");
    assert!(matches!(ld, SourceRef::LaunchDarkly(_)));
    assert_eq!(ld.name(), "ld");
    assert!(config.source_by_name("missing").is_none());
    assert!(config.launchdarkly_source_by_sdk_key("s").is_some());
    assert!(config.launchdarkly_source_by_mobile_key("m").is_some());
    assert!(config.launchdarkly_source_by_mobile_key("s").is_none());
    assert!(config.launchdarkly_source_by_client_side_id("c").is_some());
}

#[test]
fn store_config_loads_without_resolving_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ldbridge.toml");
    let text = "[store]\npath = \"/data/l.db\"\nretain = \"3d\"\n\
                [[segment_source]]\nname = \"web\"\nwrite_key = \"cred:absent\"\n";
    std::fs::write(&path, text).expect("write");
    let store = StoreConfig::load(Some(&path)).expect("valid");
    assert_eq!(store.path, PathBuf::from("/data/l.db"));
    assert_eq!(store.retain, Duration::from_secs(3 * 86_400));
    assert!(
        Config::load(Some(&path)).is_err(),
        "full load resolves secrets"
    );

    std::fs::write(&path, "[store]\nretain = \"3 parsecs\"\n").expect("write");
    assert!(StoreConfig::load(Some(&path)).is_err());
}

#[test]
fn a_bad_trigger_names_the_key_and_the_line_and_column_of_the_mistake() {
    let text = "[[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-1\"\n\
        to_segment = { write_key = \"wk\", trigger = 'kind = \"custom\" and key = \"a\" or key = \"b\"' }\n";
    let message = error(text);
    assert!(
        message.starts_with(
            "test.toml: line 4, column 75 (launchdarkly_source \"prod\" to_segment.trigger)"
        ),
        "{message}"
    );
    assert!(message.contains("need parentheses"), "{message}");
    // A multi-line literal string: the line inside it.
    let text = "[[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-1\"\n\
        [launchdarkly_source.to_segment]\nwrite_key = \"wk\"\ntrigger = '''\nkind = \"custom\"\n  or key =\n'''\n";
    let message = error(text);
    assert!(message.contains("line 8, column 11"), "{message}");
    assert!(message.contains("expected a value"), "{message}");
    // A good one parses and keeps its text.
    let config = parse(
        "[[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-1\"\n\
         to_segment = { write_key = \"wk\", trigger = 'kind = \"custom\"' }\n",
    )
    .unwrap();
    let trigger = config.launchdarkly_sources[0]
        .to_segment
        .as_ref()
        .and_then(|to_segment| to_segment.trigger.as_ref())
        .unwrap();
    assert_eq!(trigger.text(), "kind = \"custom\"");
}

#[test]
fn per_source_hosts_parse_lose_a_trailing_slash_and_need_a_scheme() {
    let config = parse(
        "[[segment_source]]\nname = \"web\"\nwrite_key = \"wk-1\"\n\
         to_launchdarkly = { client_side_id = \"6488674dc2ea1d6673731ba2\", events_url = \"https://ld-relay.internal:8030/\" }\n\
         [[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-1\"\n\
         to_segment = { write_key = \"wk-2\", api_url = \"https://segment-proxy.internal\" }\n",
    )
    .unwrap();
    let events_url = config.segment_sources[0]
        .to_launchdarkly
        .as_ref()
        .and_then(|to| to.events_url.as_deref());
    assert_eq!(events_url, Some("https://ld-relay.internal:8030"));
    let api_url = config.launchdarkly_sources[0]
        .to_segment
        .as_ref()
        .and_then(|to| to.api_url.as_deref());
    assert_eq!(api_url, Some("https://segment-proxy.internal"));
    assert_error(
        "[[segment_source]]\nname = \"web\"\nwrite_key = \"wk-1\"\n\
         to_launchdarkly = { sdk_key = \"sdk-9\", events_url = \"ld-relay:8030\" }\n",
        &[
            "segment_source \"web\" to_launchdarkly.events_url",
            "not an http",
        ],
    );
    assert_error(
        "[[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-1\"\n\
         to_segment = { write_key = \"wk-2\", api_url = \"\" }\n",
        &["launchdarkly_source \"prod\" to_segment.api_url"],
    );
}

#[test]
fn mappings_parse_with_the_contracts_fields_and_mistakes_point_at_their_key() {
    let source = "[[segment_source]]\nname = \"web\"\nwrite_key = \"wk-1\"\n\
        to_launchdarkly = { client_side_id = \"6488674dc2ea1d6673731ba2\" }\n";
    let config = parse(&format!(
        "{source}[[segment_source.mapping]]\naction = \"custom\"\n\
         trigger = 'type = \"track\" and event = \"Order Completed\"'\n\
         event_name = \"purchase\"\ncontext_kind = \"user\"\n\
         user_key = [\"$.userId\", \"$.anonymousId\"]\n\
         additional_context_keys = {{ unauthenticatedUser = \"$.anonymousId\", organization = \"$.context.groupId\" }}\n\
         metric_value = [\"$.properties.total\", \"$.properties.value\"]\n\
         event_properties = \"$.properties\"\ntimestamp = \"$.timestamp\"\n\
         [[segment_source.mapping]]\naction = \"alias\"\nenabled = false\n"
    ))
    .unwrap();
    let mappings = &config.segment_sources[0].mappings;
    assert!(mappings.configured());
    let labels: Vec<String> = mappings.iter().map(|m| m.label()).collect();
    assert_eq!(labels.len(), 1, "the turned-off alias mapping is left out");
    assert!(labels[0].starts_with("mapping 1 (custom, #"), "{labels:?}");
    // No mapping: the defaults.
    let config = parse(source).unwrap();
    assert!(!config.segment_sources[0].mappings.configured());

    let message = error(&format!(
        "{source}[[segment_source.mapping]]\naction = \"custom\"\nuser_key = \"$.\"\n"
    ));
    assert!(
        message.starts_with(
            "test.toml: line 7, column 12 (segment_source \"web\" mapping[0].user_key)"
        ),
        "{message}"
    );
    let message = error(&format!(
        "{source}[[segment_source.mapping]]\naction = \"custom\"\n\
         [[segment_source.mapping]]\naction = \"alias\"\ntrigger = 'type = \"identify\" or'\n"
    ));
    assert!(
        message.starts_with(
            "test.toml: line 9, column 32 (segment_source \"web\" mapping[1].trigger)"
        ),
        "{message}"
    );
    let message = error(&format!(
        "{source}[[segment_source.mapping]]\naction = \"track\"\n"
    ));
    assert!(message.contains("mapping[0].action"), "{message}");
    assert!(message.contains("\"custom\""), "{message}");
    let message = error(&format!(
        "{source}[[segment_source.mapping]]\naction = \"custom\"\nprevious_key = \"$.previousId\"\n"
    ));
    assert!(message.contains("line 7, column 16"), "{message}");
    assert!(message.contains("has no field previous_key"), "{message}");
    let message = error(&format!(
        "{source}[[segment_source.mapping]]\naction = \"custom\"\nevent_nme = \"x\"\n"
    ));
    assert!(message.contains("event_nme"), "{message}");
}

#[test]
fn to_segment_takes_the_user_id_context_kind_and_copy_custom_data() {
    let config = parse(
        "[[launchdarkly_source]]\nname = \"prod\"\nsdk_key = \"sdk-1\"\n\
         to_segment = { write_key = \"wk\", user_id_context_kind = \"organization\", copy_custom_data = true }\n",
    )
    .unwrap();
    let source = &config.launchdarkly_sources[0];
    assert!(source.copy_custom_data);
    assert_eq!(
        source
            .to_segment
            .as_ref()
            .unwrap()
            .user_id_context_kind
            .as_deref(),
        Some("organization")
    );
}

#[test]
fn store_url_names_a_postgresql_database_literally_or_by_reference_never_with_path() {
    let config = parse("[store]\nurl = \"postgres://ld@db.internal/ldbridge\"\nnode = \"a\"\n")
        .expect("a literal URL");
    assert_eq!(
        config.store.location(),
        crate::store::Location::Postgres("postgres://ld@db.internal/ldbridge".to_owned())
    );
    assert_eq!(config.store.node, "a");
    let config = parse_with(
        "[store]\nurl = \"env:DATABASE_URL\"\n",
        &[("DATABASE_URL", "postgresql://ld:pw@db/x")],
    )
    .expect("a reference");
    assert!(config.store.is_postgres());
    assert_eq!(
        config.store.location().describe(),
        "postgresql://ld:***@db/x"
    );
    let both = parse("[store]\npath = \"/x.db\"\nurl = \"postgres://db/x\"\n").unwrap_err();
    assert!(both.to_string().contains("not both"), "{both}");
    let mysql = parse_with("[store]\nurl = \"env:U\"\n", &[("U", "mysql://db/x")]).unwrap_err();
    assert!(mysql.to_string().contains("PostgreSQL URL"), "{mysql}");
    assert!(
        !mysql.to_string().contains("mysql://"),
        "the value stays out of the error: {mysql}"
    );
    assert!(!parse("").unwrap().store.is_postgres());
}
