//! A stand-in for Segment's and LaunchDarkly's ingestion APIs, on loopback.
//!
//! Records every request it gets (gzip bodies decompressed) and answers as
//! told: a queue of scripted replies first, then an optional responder that
//! looks at the request, then a default (202). Used by `ldbridge demo`, the
//! integration tests and the benchmarks; it is not a model of either
//! service's validation.

use std::{
    collections::VecDeque,
    io::Read,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{channel::Channel, BodyExt, Either, Full};
use hyper::{body::Incoming, HeaderMap, Request, Response, StatusCode};
use serde_json::Value;
use tokio::{net::TcpListener, sync::watch};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The body, decompressed when it came gzip-encoded.
    pub body: Bytes,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A reply to give.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a slow or hanging receiver).
    pub delay: Duration,
    /// Misbehave while sending the answer.
    pub fault: Option<Fault>,
}

/// Ways a receiver can go wrong after it has started answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send the status line, headers and half the body, then drop the
    /// connection.
    CutOff,
    /// Send the body one byte at a time, this long apart.
    Trickle(Duration),
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
            fault: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_owned();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn fault(mut self, fault: Fault) -> Reply {
        self.fault = Some(fault);
        self
    }
}

type Responder = Box<dyn Fn(&Recorded) -> Option<Reply> + Send + Sync>;

struct State {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    responder: Mutex<Option<Responder>>,
    default: Mutex<Reply>,
    arrived: tokio::sync::Notify,
    /// When false, requests are counted but not kept (benchmarks).
    recording: std::sync::atomic::AtomicBool,
    count: std::sync::atomic::AtomicUsize,
    /// Events received: LaunchDarkly array elements, Segment batch items.
    elements: std::sync::atomic::AtomicUsize,
}

/// A running stand-in receiver. Stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
}

impl Receiver {
    /// Starts on `127.0.0.1:0`, answering 202 until told otherwise.
    pub async fn start() -> std::io::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            responder: Mutex::new(None),
            default: Mutex::new(Reply::status(202)),
            arrived: tokio::sync::Notify::new(),
            recording: std::sync::atomic::AtomicBool::new(true),
            count: std::sync::atomic::AtomicUsize::new(0),
            elements: std::sync::atomic::AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let handler_state = Arc::clone(&state);
        tokio::spawn(crate::server::serve(
            listener,
            move |request| answer(Arc::clone(&handler_state), request),
            stopped,
            crate::server::Limits {
                drain: Duration::from_millis(100),
                ..crate::server::Limits::default()
            },
        ));
        Ok(Receiver { addr, state, stop })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues replies for the next requests, in order.
    pub fn push(&self, reply: Reply) {
        lock(&self.state.script).push_back(reply);
    }

    /// Decides replies by looking at each request (after the queue is used
    /// up); `None` falls through to the default.
    pub fn respond_with(
        &self,
        responder: impl Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static,
    ) {
        *lock(&self.state.responder) = Some(Box::new(responder));
    }

    /// The reply when nothing else applies.
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.state.default) = reply;
    }

    /// Stops keeping requests (they are still counted): for long runs.
    pub fn stop_recording(&self) {
        self.state
            .recording
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Requests received so far, recorded or not.
    pub fn request_count(&self) -> usize {
        self.state.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Events received so far: elements of LaunchDarkly arrays and of
    /// Segment `batch` envelopes.
    pub fn element_count(&self) -> usize {
        self.state
            .elements
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Waits until `done` holds for the requests received, or `timeout`
    /// passes. Returns the requests either way.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.state.arrived.notified();
            let requests = self.requests();
            if done(&requests) || tokio::time::Instant::now() >= deadline {
                return requests;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Body = Either<Full<Bytes>, Channel<Bytes, std::io::Error>>;

/// Long on purpose: the stand-in's reply, one step per feature (status,
/// headers, delay, faults) in the order they apply.
async fn answer(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let at = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let raw = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let gzip = parts
        .headers
        .get("content-encoding")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = if gzip {
        let mut out = Vec::new();
        match flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out) {
            Ok(_) => Bytes::from(out),
            Err(_) => raw,
        }
    } else {
        raw
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
        at,
    };
    let scripted = lock(&state.script).pop_front();
    let reply = scripted
        .or_else(|| {
            lock(&state.responder)
                .as_ref()
                .and_then(|respond| respond(&recorded))
        })
        .unwrap_or_else(|| lock(&state.default).clone());
    // Events received: a LaunchDarkly array, or a Segment batch envelope.
    let elements = match serde_json::from_slice::<serde_json::Value>(&recorded.body) {
        Ok(serde_json::Value::Array(elements)) => elements.len(),
        Ok(serde_json::Value::Object(envelope)) => envelope
            .get("batch")
            .and_then(|b| b.as_array())
            .map_or(0, Vec::len),
        _ => 0,
    };
    state
        .elements
        .fetch_add(elements, std::sync::atomic::Ordering::SeqCst);
    state
        .count
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if state.recording.load(std::sync::atomic::Ordering::SeqCst) {
        lock(&state.requests).push(recorded);
    }
    state.arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let body = Bytes::from(reply.body);
    let mut response = match reply.fault {
        None => Response::new(Either::Left(Full::new(body))),
        Some(fault) => Response::new(Either::Right(misbehave(fault, body))),
    };
    if reply.fault == Some(Fault::CutOff) {
        // Promise more than is sent, so the cut is visible to the client.
        response.headers_mut().insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(CUT_OFF_PROMISED),
        );
    }
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The declared length of a cut-off answer: more than it ever sends.
const CUT_OFF_PROMISED: u64 = 100_000;

/// Streams `body` as `fault` says, from a task of its own.
fn misbehave(fault: Fault, body: Bytes) -> Channel<Bytes, std::io::Error> {
    let (mut sender, channel) = Channel::new(1);
    tokio::spawn(async move {
        match fault {
            Fault::CutOff => {
                let half = body.slice(..body.len() / 2);
                if !half.is_empty() {
                    let _ = sender.send_data(half).await;
                }
                sender.abort(std::io::Error::other("receiver cut the connection"));
            }
            Fault::Trickle(every) => {
                for i in 0..body.len() {
                    tokio::time::sleep(every).await;
                    if sender.send_data(body.slice(i..i + 1)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    channel
}
