//! The load generator: hyper keep-alive client, closed loop (N connections,
//! each sending its next request when the previous one is acknowledged) or
//! open loop (a fixed arrival rate, latency counted from the planned send
//! time so a slow daemon cannot hide its queueing: no coordinated omission).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Request};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::fixtures::{SDK_KEY, WRITE_KEY};

/// Which endpoint a body goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SegmentBatch,
    SegmentTrack,
    LaunchDarklyBulk,
}

/// One request body and the number of events it carries.
#[derive(Clone)]
pub struct Body {
    pub kind: Kind,
    pub bytes: Bytes,
    pub events: usize,
}

/// LaunchDarkly payload ids must be unique across every run of one daemon.
static PAYLOAD: AtomicUsize = AtomicUsize::new(0);

/// Where the daemon listens, and one client for all connections.
#[derive(Clone)]
pub struct Target {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    basic: String,
}

impl Target {
    pub fn new(addr: &str) -> Target {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build_http();
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{WRITE_KEY}:"),
        );
        Target {
            base: format!("http://{addr}"),
            client,
            basic: format!("Basic {encoded}"),
        }
    }

    /// Sends `body`; returns whether it was acknowledged (2xx).
    pub async fn send(&self, body: &Body) -> bool {
        let (path, auth) = match body.kind {
            Kind::SegmentBatch => ("/v1/batch", self.basic.as_str()),
            Kind::SegmentTrack => ("/v1/track", self.basic.as_str()),
            Kind::LaunchDarklyBulk => ("/bulk", SDK_KEY),
        };
        let mut request = Request::post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, auth);
        if body.kind == Kind::LaunchDarklyBulk {
            let id = PAYLOAD.fetch_add(1, Ordering::Relaxed);
            request = request
                .header("x-launchdarkly-event-schema", "4")
                // UUID-shaped, like the SDKs' (the stored size depends on it).
                .header(
                    "x-launchdarkly-payload-id",
                    format!("5b2d3c4e-9f1a-4b7c-8d2e-{id:012x}"),
                );
        }
        let request = request.body(Full::new(body.bytes.clone())).unwrap();
        match self.client.request(request).await {
            Ok(response) => {
                let status = response.status();
                let text = response.into_body().collect().await.map(|b| b.to_bytes());
                if !status.is_success() {
                    static SHOWN: AtomicUsize = AtomicUsize::new(0);
                    if SHOWN.fetch_add(1, Ordering::Relaxed) < 3 {
                        let text = text.unwrap_or_default();
                        eprintln!("refused: {status} {}", String::from_utf8_lossy(&text));
                    }
                }
                status.is_success()
            }
            Err(_) => false,
        }
    }
}

/// What one load run measured.
#[derive(Default)]
pub struct LoadResult {
    pub requests: usize,
    pub events: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub errors: usize,
}

impl LoadResult {
    /// The `p` quantile (0..=1) of acknowledgement latency; zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
        sorted.get(at).copied().unwrap_or_default()
    }

    /// Acknowledged events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn add(&mut self, (latencies, errors, events): (Vec<Duration>, usize, usize)) {
        self.latencies.extend(latencies);
        self.errors += errors;
        self.events += events;
    }
}

/// Closed loop: `connections` senders, each waiting for its answer before
/// taking the next body.
pub async fn closed(target: &Target, bodies: Vec<Body>, connections: usize) -> LoadResult {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, bodies, next) = (target.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut events) = (0, 0);
            while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                let sent = Instant::now();
                let ok = target.send(body).await;
                latencies.push(sent.elapsed());
                if std::env::var_os("BENCH_DEBUG").is_some()
                    && sent.elapsed() > Duration::from_millis(200)
                {
                    eprintln!(
                        "slow: sent at {:?} took {:?}",
                        sent - started,
                        sent.elapsed()
                    );
                }
                if ok {
                    events += body.events;
                } else {
                    errors += 1;
                }
            }
            (latencies, errors, events)
        }));
    }
    let mut result = LoadResult {
        requests: bodies.len(),
        ..LoadResult::default()
    };
    for task in tasks {
        result.add(task.await.unwrap());
    }
    result.elapsed = started.elapsed();
    result
}

/// Open loop: body `i` is sent at `start + i / rate` whatever happened to
/// the earlier ones; its latency counts from that planned time.
pub async fn open(target: &Target, bodies: Vec<Body>, rate: f64) -> LoadResult {
    let started = tokio::time::Instant::now();
    let requests = bodies.len();
    let mut tasks = Vec::with_capacity(requests);
    for (i, body) in bodies.into_iter().enumerate() {
        let planned = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(planned).await;
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let ok = target.send(&body).await;
            let latency = planned.elapsed();
            (
                vec![latency],
                usize::from(!ok),
                if ok { body.events } else { 0 },
            )
        }));
    }
    let mut result = LoadResult {
        requests,
        ..LoadResult::default()
    };
    for task in tasks {
        result.add(task.await.unwrap());
    }
    result.elapsed = started.elapsed();
    if std::env::var("BENCH_DEBUG").is_ok() {
        let mut slow: Vec<(usize, Duration)> =
            result.latencies.iter().copied().enumerate().collect();
        slow.sort_by_key(|(_, l)| std::cmp::Reverse(*l));
        for (i, l) in slow.iter().take(8) {
            eprintln!("slow: at {:.3}s {:?}", *i as f64 / rate, l);
        }
    }
    result
}
