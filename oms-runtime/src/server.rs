//! HTTP/1.1 serving with limits a careless or hostile client cannot get around.
//!
//! `axum::serve` has none: no cap on connections, no header, idle or write timeouts, and a
//! graceful shutdown that waits for every connection, however stalled. Here:
//! - at most `max_connections` are open per port; a client over the cap gets a 503 as soon as
//!   it has sent its request (or, in a flood, a closed socket), so file descriptors (and the
//!   admin port's probes) never run out;
//! - a request head must arrive within `header_timeout` of its first byte (slow-header clients);
//! - a connection with no request for `idle_timeout` is closed (hyper's header-read timer, which
//!   starts when the connection waits for a request);
//! - a response the client does not read within `idle_timeout` closes the connection;
//! - the body's deadline is the API's (`api::read_body`), which answers 408;
//! - on shutdown the listener closes, idle connections close at once, requests in flight may
//!   finish until `drain_timeout`, and whatever is left is then dropped.

use crate::metrics::{ConnectionLabels, ConnectionMetrics};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

/// File descriptors kept out of the API's connection cap: the admin port's connections, the
/// store, Kafka, Redis and MongoDB clients, and logs.
pub const RESERVED_FILES: u64 = 256;

/// Connections of the admin port: probes and a scraper need a handful.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Connections over the cap that are answered 503 at the same time (each waits up to
/// [`REFUSAL_WAIT`] for its request); beyond them, connections are closed unanswered. Counted
/// in [`RESERVED_FILES`].
const REFUSING_AT_ONCE: usize = 32;

/// A connection's read buffer at most, so the longest request head: hyper's default of about
/// 400 KiB times the connection cap would be gigabytes an attacker could make us hold. A
/// longer head gets hyper's `431`.
const MAX_BUFFER_BYTES: usize = 64 * 1024;

/// How long a refused client has to send its request and read the 503.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// How a port treats its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Longest time from the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// Longest wait for the next request on a kept-alive connection, and for a client to read
    /// a response.
    pub idle_timeout: Duration,
    /// Longest wait at shutdown for requests in flight.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The admin port's: a small cap of its own, the API's timeouts.
    pub fn admin(api: &Limits) -> Limits {
        Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..api.clone()
        }
    }
}

/// The API's connection cap under an open-files limit: what is configured, lowered so that the
/// cap, the admin port and [`RESERVED_FILES`] fit (at least 1).
pub fn connection_cap(configured: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_FILES + ADMIN_MAX_CONNECTIONS as u64);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// The process's open-files soft limit, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// What a client over the cap reads before its socket is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 92\r\n\
\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections; retry later\"}}";

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then drains.
/// `port` names the port in metrics and logs.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    port: &'static str,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let labels = ConnectionLabels { port };
    let open = metrics.open.get_or_create(&labels).clone();
    let refused = metrics.refused.get_or_create(&labels).clone();
    let timeouts = metrics.timed_out.get_or_create(&labels).clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    // Told to connections at shutdown: finish the request in flight, then close. (hyper-util's
    // `GracefulShutdown` does not take connections that can switch to WebSocket.)
    let (draining, _) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(MAX_BUFFER_BYTES);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors or a connection reset before it was accepted; the
                // pause keeps a persistent error from spinning the loop.
                tracing::warn!(port, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.inc();
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let requests = Arc::new(AtomicU64::new(0));
        let router = router.clone();
        let io = TokioIo::new(Guarded::new(stream, requests.clone(), &limits));
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            requests.fetch_add(1, Ordering::Relaxed);
            let answered = router.clone().oneshot(request);
            let requests = requests.clone();
            async move {
                let response = answered.await;
                // A switch to WebSocket leaves the count odd ("answering") for good: the
                // stream's frames are not request heads, and must not start the head timer.
                if !matches!(&response, Ok(r) if r.status() == hyper::StatusCode::SWITCHING_PROTOCOLS)
                {
                    requests.fetch_add(1, Ordering::Relaxed);
                }
                response
            }
        });
        let connection = http.serve_connection(io, service).with_upgrades();
        let mut drain = draining.subscribe();
        let (open, timeouts) = (open.clone(), timeouts.clone());
        open.inc();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = async { drop(drain.wait_for(|draining| *draining).await) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            match result {
                Err(error) if is_timeout(&error) => {
                    timeouts.inc();
                }
                Err(error) => tracing::debug!(port, %error, "connection closed with an error"),
                Ok(()) => {}
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(port, connections = connections.len(), "draining");
    let _ = draining.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            port,
            deadline = ?limits.drain_timeout,
            "drain deadline passed: closing the connections left"
        );
    }
    connections.shutdown().await;
}

/// Answers 503 to a client over the cap, then closes its socket.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // HTTP clients read an answer only once they have sent their request, and unread input
    // would turn the close into a reset that could discard the answer.
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_WAIT, stream.read(&mut scratch)).await;
    let _ = tokio::time::timeout(REFUSAL_WAIT, stream.write_all(REFUSED)).await;
}

/// A connection's socket with the deadlines hyper does not keep: a request head must be
/// complete within `header_timeout` of its first byte, and a stalled write fails after
/// `write_timeout`.
///
/// `requests` is odd while a request is being answered: the service adds one when it starts and
/// one when it ends. Bytes read while it is even belong to a request head.
struct Guarded {
    stream: TcpStream,
    requests: Arc<AtomicU64>,
    header_timeout: Duration,
    write_timeout: Duration,
    /// The head deadline and the value of `requests` when it was set.
    head: Option<(u64, Pin<Box<Sleep>>)>,
    write: Option<Pin<Box<Sleep>>>,
}

impl Guarded {
    fn new(stream: TcpStream, requests: Arc<AtomicU64>, limits: &Limits) -> Guarded {
        Guarded {
            stream,
            requests,
            header_timeout: limits.header_timeout,
            write_timeout: limits.idle_timeout,
            head: None,
            write: None,
        }
    }
}

/// Whether a request is being answered, from the counter of [`Guarded`].
fn answering(requests: u64) -> bool {
    !requests.is_multiple_of(2)
}

/// Whether a connection ended on one of hyper's timeouts or one of [`Guarded`]'s.
fn is_timeout(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = cause.source();
    }
    error.is_timeout()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let requests = this.requests.load(Ordering::Relaxed);
        if answering(requests) || this.head.as_ref().is_some_and(|(at, _)| *at != requests) {
            // Reading a body (the API bounds it), or a head that has since been answered.
            this.head = None;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if !answering(requests) && this.head.is_none() && buf.filled().len() > before {
            let deadline = tokio::time::sleep(this.header_timeout);
            this.head = Some((requests, Box::pin(deadline)));
        }
        if read.is_pending()
            && let Some((_, deadline)) = &mut this.head
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(timed_out("reading the request head")));
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, data);
        this.stalled(written, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, data);
        this.stalled(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Guarded {
    /// A write that makes no progress for `write_timeout` fails: a client that does not read
    /// its responses holds no connection for longer.
    fn stalled(
        &mut self,
        written: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if written.is_ready() {
            self.write = None;
            return written;
        }
        let timeout = self.write_timeout;
        let deadline = self
            .write
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(timed_out("writing the response")));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_admin_port_and_the_clients() {
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(4096, 1024), 1024 - 256 - 64);
        assert_eq!(connection_cap(4096, 100), 1);
    }

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "too_many_connections");
    }
}
