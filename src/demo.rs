//! `ldbridge demo`: the real daemon, end to end, with nothing to set up.
//!
//! Starts stand-in LaunchDarkly and Segment receivers on loopback, runs the
//! daemon on a temporary database pointed at them with all four routes on,
//! posts sample traffic through the real ingest endpoints the ways real
//! senders do (Segment libraries: Basic auth, body key, gzip, text/plain,
//! single and batch; Segment's Actions webhook with its signature;
//! LaunchDarkly server, browser and mobile SDKs, schema 4 and 3, a
//! diagnostic), waits for delivery, and prints the delivery log and what
//! each receiver got.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use tokio::net::TcpListener;

use crate::{
    clock,
    config::{
        Config, LaunchDarklyDestination, LaunchDarklySource, Secret, SegmentDestination,
        SegmentSource,
    },
    daemon,
    deliver::{HttpClient, Outbound},
    domain::{BatchStatus, DeliveryStatus},
    map::mapping::{MappingSpec, Mappings},
    receiver::Receiver,
    store::delivery_log,
};

/// The fixtures' credentials and ids (tests/fixtures/README.md). The demo
/// runs on loopback only; none of these is a real credential.
pub const WRITE_KEY: &str = "Qx4pLw9TzR2mVbN7sK1yHc5dJf8aGe3U";
pub const CLIENT_SIDE_ID: &str = "6488674dc2ea1d6673731ba2";
pub const PROJECT_ID: &str = "5744c96707c9900708000004";
pub const SDK_KEY: &str = "sdk-6f2b8a41-93de-4c7b-a1f0-2e5d9c7b4a18";
pub const MOBILE_KEY: &str = "mob-2c9e4f61-0b7a-4d3e-8f25-6a1c9d7e3b40";
pub const WEBHOOK_SECRET: &str = "whsec_test_5f2c9a1e";
/// The write key of the Segment source LaunchDarkly events go to.
pub const DESTINATION_WRITE_KEY: &str = "Lw7dKq2RzN5vBx9TmC3hYf6pJs1aGe8U";

/// How each sample is posted: path, body, and the way its sender posts it.
const SAMPLES: [(&str, &str, &str); 11] = [
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
    (
        "/segment/webhook",
        include_str!("../tests/fixtures/segment-webhook-actions-batch.in.json"),
        "webhook",
    ),
    (
        "/bulk",
        include_str!("../tests/fixtures/ld-server-bulk.in.json"),
        "sdk-key",
    ),
    (
        "/events/bulk/6488674dc2ea1d6673731ba2",
        include_str!("../tests/fixtures/ld-client-js-bulk.in.json"),
        "browser",
    ),
    (
        "/mobile/events/bulk",
        include_str!("../tests/fixtures/ld-client-js-legacy.in.json"),
        "mobile-key",
    ),
    (
        "/bulk",
        include_str!("../tests/fixtures/ld-schema3-legacy.in.json"),
        "schema-3",
    ),
    (
        "/diagnostic",
        include_str!("../tests/fixtures/ld-diagnostic-init.in.json"),
        "sdk-key",
    ),
];

/// The demo's config: everything on loopback, a temporary database, all
/// four routes on.
pub fn config(
    database: &std::path::Path,
    launchdarkly_url: &str,
    segment_url: &str,
) -> anyhow::Result<Config> {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse()?;
    config.store.path = database.to_path_buf();
    config.launchdarkly.events_url = launchdarkly_url.to_owned();
    config.segment.api_url = segment_url.to_owned();
    config.segment_sources.push(SegmentSource {
        name: "demo-web".to_owned(),
        write_key: Secret::new(WRITE_KEY),
        webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
        to_launchdarkly: Some(LaunchDarklyDestination {
            client_side_id: Some(CLIENT_SIDE_ID.to_owned()),
            sdk_key: None,
            events_url: None,
        }),
        relay_to_segment: true,
        mappings: demo_mappings(),
    });
    config.launchdarkly_sources.push(LaunchDarklySource {
        name: "demo-ld".to_owned(),
        sdk_key: Some(Secret::new(SDK_KEY)),
        mobile_key: Some(Secret::new(MOBILE_KEY)),
        client_side_id: Some(CLIENT_SIDE_ID.to_owned()),
        project_id: Some(PROJECT_ID.to_owned()),
        to_segment: Some(SegmentDestination {
            write_key: Secret::new(DESTINATION_WRITE_KEY),
            trigger: None,
            api_url: None,
            user_id_context_kind: None,
        }),
        relay_to_launchdarkly: true,
        copy_custom_data: false,
    });
    config.validate()?;
    Ok(config)
}

/// The demo source's mappings: Segment's two defaults written out, and one
/// of its own that also sends every "Order Completed" as a `purchase`
/// whose metric is the order's revenue.
fn demo_mappings() -> Mappings {
    let specs: Vec<MappingSpec> = serde_json::from_value(serde_json::json!([
        {"action": "custom", "trigger": "type = \"track\""},
        {"action": "custom", "trigger": "type = \"track\" and event = \"Order Completed\"",
         "event_name": "purchase", "metric_value": "$.properties.revenue",
         "event_properties": {"orderId": "$.properties.orderId", "channel": "web"}},
        {"action": "alias", "trigger": "type = \"identify\" or type = \"alias\""},
    ]))
    .expect("the demo mappings are specs");
    Mappings::from_specs(&specs).expect("the demo mappings are valid")
}

/// `ldbridge map` on the track sample: what each route would send.
fn print_map(config: &Config) -> anyhow::Result<()> {
    let input = SAMPLES[0].1;
    let preview =
        crate::ops::preview::preview(config, "demo-web", input.as_bytes(), clock::now_ms())?;
    println!("\nA custom mapping: demo-web sends each \"Order Completed\" also as \"purchase\".");
    println!("$ ldbridge map --source demo-web segment-track.in.json");
    for route in preview.routes.iter().take(1) {
        for event in &route.events {
            if let crate::ops::preview::EventPreview::Sent { mapped_by } = event {
                println!("  {}: sent, by {}", route.route, mapped_by.join(" and "));
            }
        }
        if let Some(request) = &route.request {
            println!("  POST {}", request.url);
            // The fields the mappings set; contextKeys and creationDate left out.
            for event in request.body.as_array().into_iter().flatten() {
                let shown: serde_json::Map<String, serde_json::Value> =
                    ["kind", "key", "metricValue", "data"]
                        .iter()
                        .filter_map(|name| Some((name.to_string(), event.get(name)?.clone())))
                        .collect();
                println!(
                    "    {}",
                    crate::ops::truncate(&serde_json::Value::Object(shown).to_string(), 110)
                );
            }
        }
    }
    Ok(())
}

/// `ldbridge demo`: the real daemon, sample traffic through the real
/// endpoints, then a summary that fits a screen (each route's first
/// request in and its payload out, counts by route and status) and the
/// operator loop (a batch retrying, failed, resent, delivered with the same
/// payload id). `verbose` prints every payload each stand-in received.
pub async fn run(verbose: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let launchdarkly = Receiver::start()
        .await
        .context("starting the stand-in receivers")?;
    let segment = Receiver::start()
        .await
        .context("starting the stand-in receivers")?;
    segment.set_default(crate::receiver::Reply::status(200).body(r#"{"success":true}"#));
    let mut config = config(
        &dir.path().join("ldbridge.db"),
        &launchdarkly.url(),
        &segment.url(),
    )?;
    // Quick retries, so the operator loop below takes seconds.
    config.dispatch.retry_schedule = vec![Duration::from_secs(1)];
    let app = daemon::start(config.clone(), TcpListener::bind("127.0.0.1:0").await?).await?;
    println!("ldbridge demo: daemon on http://{}", app.ingest_addr);
    println!(
        "  stand-in LaunchDarkly on {}, stand-in Segment on {}\n",
        launchdarkly.url(),
        segment.url()
    );
    let client = HttpClient::new();
    for (n, (path, body, how)) in SAMPLES.iter().enumerate() {
        let request = sample_request(&format!("http://{}{path}", app.ingest_addr), body, how, n)?;
        let reply = client.send(&request, Duration::from_secs(10)).await;
        let status = reply
            .http_status()
            .map_or("error".to_owned(), |s| s.to_string());
        let answer = crate::ops::truncate(&reply.excerpt.unwrap_or_default(), 40);
        println!("POST {path:<40} ({how:<10}) → {status} {answer}");
    }
    wait_for_delivery(&app.store).await?;
    println!("\nDeliveries by route and status (ldbridge stats):");
    for (route, status, count) in delivery_log::delivery_counts(&app.store).await? {
        println!("  {route:<24} {status:<10} {count}");
    }
    if verbose {
        println!("\nDelivery log (ldbridge log):\n");
        let filter = delivery_log::BatchFilter {
            limit: 50,
            ..Default::default()
        };
        print!(
            "{}",
            crate::ops::batch_table(&delivery_log::list_batches(&app.store, &filter).await?)
        );
        print_received("LaunchDarkly", &launchdarkly.requests());
        print_received("Segment", &segment.requests());
    } else {
        println!("\nWhat each destination got (--verbose prints every payload):");
        print_first_per_path("LaunchDarkly", &launchdarkly.requests());
        print_first_per_path("Segment", &segment.requests());
    }
    print_map(&config)?;
    operator_loop(&app, &client, &launchdarkly).await?;
    app.shutdown().await
}

/// A batch LaunchDarkly refuses: `retrying` after a 503, `failed` after a
/// 401, then `ldbridge resend`, and delivered with the same payload id.
///
/// Long on purpose: the demo's script, step by step as it prints.
async fn operator_loop(
    app: &daemon::App,
    client: &HttpClient,
    launchdarkly: &Receiver,
) -> anyhow::Result<()> {
    println!("\nThe operator loop: LaunchDarkly answers 503, then 401, then accepts.");
    let before = launchdarkly.requests().len();
    launchdarkly.push(crate::receiver::Reply::status(503));
    launchdarkly.push(crate::receiver::Reply::status(401).body(r#"{"message":"unauthorized"}"#));
    let body = r#"{"userId":"user-42","event":"Demo Checkout","messageId":"demo-operator-loop"}"#;
    let request = sample_request(
        &format!("http://{}/v1/track", app.ingest_addr),
        body,
        "basic",
        99,
    )?;
    client.send(&request, Duration::from_secs(10)).await;
    let batch = wait_for_batch(&app.store, None, BatchStatus::Failed).await?;
    let show = crate::ops::show(&app.store, batch).await?;
    if let Some(detail) = show {
        let attempts: Vec<String> = detail
            .attempts
            .iter()
            .map(|a| {
                format!(
                    "#{} {} → {}",
                    a.attempt,
                    a.http_status.map_or("-".to_owned(), |s| s.to_string()),
                    a.outcome
                )
            })
            .collect();
        println!(
            "  batch {batch} ({}): {}; attempts {}",
            detail.batch.route,
            detail.batch.status,
            attempts.join(", ")
        );
    }
    println!("$ ldbridge resend {batch}");
    let report = crate::ops::resend(
        &app.store,
        &crate::ops::ResendRequest {
            ids: vec![batch],
            ..Default::default()
        },
        clock::now_ms(),
    )
    .await?;
    print!("  {}", report.text());
    wait_for_batch(&app.store, Some(batch), BatchStatus::Delivered).await?;
    let ids: Vec<String> = launchdarkly.requests()[before..]
        .iter()
        .filter_map(|request| {
            request
                .header("x-launchdarkly-payload-id")
                .map(str::to_owned)
        })
        .collect();
    let same = ids.windows(2).all(|pair| pair[0] == pair[1]);
    println!(
        "  batch {batch}: delivered; {} attempts, payload id {} each time{}",
        ids.len(),
        ids.first().map_or("-", String::as_str),
        if same { "" } else { " (they differed!)" }
    );
    Ok(())
}

/// Batch `id` (or else the newest segment-to-launchdarkly batch) once it
/// is in `status` (30 s at most).
async fn wait_for_batch(
    store: &crate::store::Store,
    id: Option<i64>,
    status: BatchStatus,
) -> anyhow::Result<i64> {
    let deadline = clock::now_ms() + 30_000;
    loop {
        let batch = match id {
            Some(id) => delivery_log::batch(store, id).await?,
            None => {
                let filter = delivery_log::BatchFilter {
                    route: Some("segment-to-launchdarkly".to_owned()),
                    limit: 1,
                    ..Default::default()
                };
                delivery_log::list_batches(store, &filter)
                    .await?
                    .into_iter()
                    .next()
            }
        };
        if let Some(batch) = batch.filter(|batch| batch.status == status) {
            return Ok(batch.id);
        }
        if clock::now_ms() > deadline {
            anyhow::bail!("the demo's batch did not become {status} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each path's request count and the first event of its first request,
/// on one line.
fn print_first_per_path(name: &str, requests: &[crate::receiver::Recorded]) {
    let mut seen = std::collections::BTreeSet::new();
    for request in requests {
        if !seen.insert(request.path.clone()) {
            continue;
        }
        let count = requests.iter().filter(|r| r.path == request.path).count();
        let body = request.json();
        let first = match &body {
            serde_json::Value::Array(events) => events.first().cloned(),
            serde_json::Value::Object(object) => object
                .get("batch")
                .and_then(|batch| batch.as_array()?.first().cloned())
                .or(Some(body.clone())),
            _ => None,
        };
        let first = serde_json::to_string(&first.unwrap_or_default()).unwrap_or_default();
        println!(
            "  {name} {} {} ({count} request(s)), first event:\n    {}",
            request.method,
            request.path,
            crate::ops::truncate(&first, 150)
        );
    }
}

fn print_received(name: &str, requests: &[crate::receiver::Recorded]) {
    for (n, request) in requests.iter().enumerate() {
        println!(
            "\n{name} stand-in, request {}: {} {}",
            n + 1,
            request.method,
            request.path
        );
        for header in [
            "x-launchdarkly-event-schema",
            "x-launchdarkly-payload-id",
            "content-encoding",
            "user-agent",
        ] {
            if let Some(value) = request.header(header) {
                println!("  {header}: {value}");
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&request.json()).unwrap_or_default()
        );
    }
}

/// Long on purpose: one arm per way a library dresses a request.
fn sample_request(url: &str, body: &str, how: &str, n: usize) -> anyhow::Result<Outbound> {
    let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    let mut bytes = Bytes::copy_from_slice(body.as_bytes());
    let header = |name: &'static str, value: &str| -> anyhow::Result<(HeaderName, HeaderValue)> {
        Ok((HeaderName::from_static(name), HeaderValue::from_str(value)?))
    };
    let payload_id = format!("00000000-0000-4000-8000-{n:012}");
    let encoded = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{WRITE_KEY}:"),
    );
    let basic = (
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {encoded}"))?,
    );
    match how {
        "basic" => headers.push(basic),
        "text/plain" => headers[0].1 = HeaderValue::from_static("text/plain"),
        "gzip" => {
            use std::io::Write;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(body.as_bytes())?;
            bytes = Bytes::from(encoder.finish()?);
            headers.push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
        }
        "webhook" => {
            headers.push(basic);
            // The fixture's signature: HMAC-SHA1 of the first element with WEBHOOK_SECRET.
            headers.push(header(
                "x-signature",
                "51adeaab1160ba1891e74f6c7aa8f9af7e7c9c80",
            )?);
        }
        "sdk-key" | "schema-3" => {
            headers.push((AUTHORIZATION, HeaderValue::from_static(SDK_KEY)));
            headers.push(header(
                "x-launchdarkly-event-schema",
                if how == "schema-3" { "3" } else { "4" },
            )?);
            headers.push(header("x-launchdarkly-payload-id", &payload_id)?);
        }
        "mobile-key" => {
            headers.push((
                AUTHORIZATION,
                HeaderValue::from_str(&format!("api_key {MOBILE_KEY}"))?,
            ));
            headers.push(header("x-launchdarkly-event-schema", "4")?);
            headers.push(header("x-launchdarkly-payload-id", &payload_id)?);
        }
        _ => {
            headers.push(header("x-launchdarkly-event-schema", "4")?);
            headers.push(header("x-launchdarkly-payload-id", &payload_id)?);
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
        let counts = delivery_log::delivery_counts(store).await?;
        let open = counts.iter().any(|(_, status, count)| {
            matches!(status, DeliveryStatus::Pending | DeliveryStatus::Batched) && *count > 0
        });
        if !open && !counts.is_empty() {
            return Ok(());
        }
        if clock::now_ms() > deadline {
            anyhow::bail!("events were not delivered within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
