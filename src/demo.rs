//! `ldbridge demo`: the real daemon, end to end, with nothing to set up.
//!
//! Starts a stand-in LaunchDarkly receiver on loopback, runs the daemon on a
//! temporary database pointed at it, posts sample Segment traffic through
//! the real ingest endpoint the ways real libraries do (Basic auth, body
//! key, gzip, text/plain, single and batch), waits for delivery, and prints
//! the delivery log and what the receiver got.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use tokio::net::TcpListener;

use crate::{
    cli, clock,
    config::{Config, LaunchDarklyDestination, Secret, SegmentSource},
    daemon,
    deliver::{HttpClient, Outbound},
    receiver::Receiver,
    store::log as queries,
};

/// The fixtures' write key and client-side id (tests/fixtures/README.md).
pub const WRITE_KEY: &str = "Qx4pLw9TzR2mVbN7sK1yHc5dJf8aGe3U";
pub const CLIENT_SIDE_ID: &str = "6488674dc2ea1d6673731ba2";

/// How each sample is posted: path, body, and the way a library sends it.
const SAMPLES: [(&str, &str, &str); 5] = [
    (
        "/v1/track",
        include_str!("../tests/fixtures/segment-track.in.json"),
        "basic",
    ),
    (
        "/v1/identify",
        include_str!("../tests/fixtures/segment-identify.in.json"),
        "basic",
    ),
    (
        "/v1/alias",
        include_str!("../tests/fixtures/segment-alias.in.json"),
        "basic",
    ),
    (
        "/v1/p",
        include_str!("../tests/fixtures/segment-page.in.json"),
        "text/plain",
    ),
    (
        "/v1/batch",
        include_str!("../tests/fixtures/segment-batch.in.json"),
        "gzip",
    ),
];

/// The demo's config: everything on loopback, a temporary database.
pub fn config(database: &std::path::Path, launchdarkly_url: &str) -> anyhow::Result<Config> {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse()?;
    config.store.path = database.to_path_buf();
    config.launchdarkly.events_url = launchdarkly_url.to_owned();
    config.segment_sources.push(SegmentSource {
        name: "demo-web".to_owned(),
        write_key: Secret::new(WRITE_KEY),
        webhook_secret: None,
        to_launchdarkly: Some(LaunchDarklyDestination {
            client_side_id: Some(CLIENT_SIDE_ID.to_owned()),
            sdk_key: None,
        }),
        relay_to_segment: false,
    });
    config.validate()?;
    Ok(config)
}

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let launchdarkly = Receiver::start()
        .await
        .context("starting the stand-in receiver")?;
    let config = config(&dir.path().join("ldbridge.db"), &launchdarkly.url())?;
    let app = daemon::start(config, TcpListener::bind("127.0.0.1:0").await?).await?;
    println!(
        "ldbridge demo: daemon on http://{}, stand-in LaunchDarkly on {}\n",
        app.ingest_addr,
        launchdarkly.url()
    );
    let client = HttpClient::new(Duration::from_secs(10));
    for (path, body, how) in SAMPLES {
        let request = sample_request(&format!("http://{}{path}", app.ingest_addr), body, how)?;
        let reply = client.send(&request).await;
        println!(
            "POST {path:<12} ({how:<10}) → {} {}",
            reply
                .http_status()
                .map_or("error".to_owned(), |s| s.to_string()),
            reply.excerpt.unwrap_or_default()
        );
    }
    wait_for_delivery(&app.store).await?;
    println!("\nDelivery log (ldbridge log):\n");
    let filter = queries::BatchFilter {
        limit: 50,
        ..Default::default()
    };
    print!(
        "{}",
        cli::batch_table(&queries::list_batches(&app.store, &filter).await?)
    );
    println!("\nDeliveries by route and status:");
    for (route, status, count) in queries::delivery_counts(&app.store).await? {
        println!("  {route:<24} {status:<10} {count}");
    }
    for (n, request) in launchdarkly.requests().iter().enumerate() {
        println!(
            "\nLaunchDarkly stand-in, request {}: {} {}",
            n + 1,
            request.method,
            request.path
        );
        for name in [
            "x-launchdarkly-event-schema",
            "x-launchdarkly-payload-id",
            "user-agent",
        ] {
            println!("  {name}: {}", request.header(name).unwrap_or("-"));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&request.json()).unwrap_or_default()
        );
    }
    app.shutdown().await
}

fn sample_request(url: &str, body: &str, how: &str) -> anyhow::Result<Outbound> {
    let mut headers = Vec::new();
    let mut bytes = Bytes::copy_from_slice(body.as_bytes());
    match how {
        "basic" => {
            let encoded = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{WRITE_KEY}:"),
            );
            headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            headers.push((
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {encoded}"))?,
            ));
        }
        "text/plain" => headers.push((CONTENT_TYPE, HeaderValue::from_static("text/plain"))),
        _ => {
            use std::io::Write;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(body.as_bytes())?;
            bytes = Bytes::from(encoder.finish()?);
            headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            headers.push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
        }
    }
    headers.push((
        HeaderName::from_static("user-agent"),
        HeaderValue::from_static("ldbridge-demo"),
    ));
    Ok(Outbound {
        url: url.to_owned(),
        headers,
        body: bytes,
    })
}

/// Polls until no delivery is pending or batched (30 s at most).
async fn wait_for_delivery(store: &crate::store::Store) -> anyhow::Result<()> {
    let deadline = clock::now_ms() + 30_000;
    loop {
        let counts = queries::delivery_counts(store).await?;
        let open = counts
            .iter()
            .any(|(_, status, count)| (status == "pending" || status == "batched") && *count > 0);
        if !open && !counts.is_empty() {
            return Ok(());
        }
        if clock::now_ms() > deadline {
            anyhow::bail!("events were not delivered within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
