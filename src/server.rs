//! The HTTP accept loop shared by every listener (ingest, admin, the demo's
//! stand-in receivers): HTTP/1.1 and HTTP/2, a header-read timeout against
//! slow clients (it also closes keep-alive connections left idle), a bound on
//! open connections, and graceful shutdown with a deadline.
//!
//! Knows nothing of routes; callers pass the service function and the
//! listener (bound by the caller, so tests can use port 0).

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
    task::JoinSet,
};

/// What a listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send request headers, and how long an
    /// idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// Connections served at once; the rest are answered 503 and closed.
    pub max_connections: usize,
    /// How long graceful shutdown waits for open requests.
    pub drain: Duration,
}

impl Limits {
    /// The `[server]` settings.
    pub fn from_config(server: &crate::config::ServerConfig) -> Limits {
        Limits {
            header_timeout: server.header_timeout,
            max_connections: server.max_connections,
            drain: server.shutdown_timeout,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&crate::config::ServerConfig::default())
    }
}

/// Sent, best effort, to a connection over `max_connections` before it is
/// closed: clients that retry on 503 come back later.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
content-type: application/json\r\ncontent-length: 71\r\nconnection: close\r\n\r\n\
{\"success\":false,\"code\":\"unavailable\",\"message\":\"too many connections\"}";

/// Serves connections from `listener` with `handler` until `shutdown`
/// becomes true, then stops accepting and waits up to `limits.drain` for
/// open connections to finish their requests. A connection that has not
/// sent its first bytes yet (a browser's preconnect) is closed at once; one
/// still open at the deadline is closed then. Nothing this handler serves
/// outlives the call, so a daemon started again on the same port never
/// shares a client's pooled connection with the old one. Returns false if
/// some connection had to be abandoned at the deadline.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) -> bool
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = connection_builder(&limits);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "Accept failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                    refuse(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    stream,
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    stop: shutdown.clone(),
                    header_timeout: limits.header_timeout,
                };
                let handler = handler.clone();
                connections.spawn(async move {
                    connection.serve(handler).await;
                    drop(permit);
                });
                // Only live connections stay in the set.
                while connections.try_join_next().is_some() {}
            }
            _ = stop_requested(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_ok();
    connections.shutdown().await;
    drained
}

/// Both protocols' settings: HTTP/1 headers within `header_timeout`, and
/// HTTP/2 pings on the same period.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    builder
}

/// One accepted connection and what serving it needs.
struct Connection {
    stream: TcpStream,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    stop: watch::Receiver<bool>,
    header_timeout: Duration,
}

impl Connection {
    /// Waits for the first bytes (closing at shutdown if none came), then
    /// serves requests until the client closes or graceful shutdown ends it.
    async fn serve<H, F, B>(mut self, handler: H)
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let opened = tokio::select! {
            opened = opening_arrives(&self.stream, self.header_timeout) => opened,
            () = stop_requested(&mut self.stop) => false,
        };
        if !opened {
            return;
        }
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(request).await) }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(self.stream), service);
        let _ = self.watcher.watch(connection.into_owned()).await;
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits (up to `timeout`) until a new connection has sent enough to tell
/// HTTP/1 from HTTP/2; false if it sent nothing in time or closed. hyper's
/// own header timeout only starts after that, so without this a client that
/// connects and stays silent would hold its slot forever.
async fn opening_arrives(stream: &TcpStream, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut opening = [0u8; H2_PREFACE.len()];
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut opening)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) if n == H2_PREFACE.len() || opening[..n] != H2_PREFACE[..n] => return true,
            // Part of the HTTP/2 preface: peek returns at once until more
            // arrives, so wait a little between looks.
            Ok(Ok(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Ok(_)) => return false,
        }
    }
}

/// Answers a connection over the limit with a 503 (if its socket buffer
/// takes it at once) and closes it.
fn refuse(stream: TcpStream) {
    tracing::debug!("Connection refused: server.max_connections reached.");
    let _ = stream.try_write(OVER_CAPACITY);
}

/// Completes once `shutdown` holds `true` (or its sender is gone). The
/// borrow guard is never held across an await, so the future stays `Send`.
pub async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OVER_CAPACITY;

    #[test]
    fn the_over_capacity_answer_declares_its_true_length_and_is_json() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "unavailable");
    }
}
