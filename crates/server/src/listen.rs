//! How a replica serves its connections: accepting them, the limits every connection
//! lives under, and graceful shutdown. [`crate::serve`] calls [`run`].
//!
//! axum's own `serve` uses hyper's defaults, which protect nothing at the edge: a
//! refused request head (too many headers, too many bytes) is answered with 431 and a
//! hang-up on whatever the client still sends, a reset which nginx counts against the
//! replica; no deadline for a request head, no end to an idle keep-alive connection, and
//! about 400 KB of buffer per unfinished head. Here each connection gets:
//! - a header block of at most [`ConnectionLimits::max_header_bytes`] and
//!   [`herd_edge::REPLICA_MAX_HEADERS`] headers; a head over either is refused with 431 and a
//!   lingering close ([`Spare`]), so the proxy in front reads the refusal, not a reset;
//! - [`ConnectionLimits::header_read_timeout`] to send a request head once its first
//!   byte has arrived (a slowloris connection is closed); counted by the connection's own
//!   loop ([`herd_edge::Activity::check`]), not hyper's timer, which also runs while a
//!   connection waits between requests and so cut idle keep-alive connections early;
//! - [`ConnectionLimits::idle_timeout`] with no request in flight and no byte either way
//!   before it is closed, whether it never sent anything or sat idle between requests;
//! - and when the process runs out of file descriptors, every connection that is idle at
//!   that moment is closed so that new ones (a health check, a login) can be accepted,
//!   as nginx reuses its idle keep-alive connections when it runs out of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::Version;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower::ServiceExt as _;

use herd_edge::{is_out_of_descriptors, Activity, Checked, Spare, Tracked};

use crate::error::{ApiError, Code};

/// The bounds every client connection of a replica lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The largest request head (request line and headers), in bytes; over it the
    /// request gets 431. Also the HTTP/2 header list limit.
    pub max_header_bytes: usize,
    /// How long a client has to send a request head once its first byte arrived, and a
    /// declared body of at most the body limit once its head arrived.
    pub header_read_timeout: Duration,
    /// How long a connection may sit with no request in flight and no byte either way.
    /// Longer than the keep-alive timeout of the proxies in front (nginx's upstream
    /// `keepalive_timeout`, the development balancer's pool), so that they, not the
    /// replica, close an idle connection they might be about to reuse.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
        }
    }
}

impl ConnectionLimits {
    fn builder(&self) -> Builder<TokioExecutor> {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            // Kept by the connection's own loop instead (`Activity::check`): hyper's
            // runs while the connection waits for a next request too, so it cut idle
            // keep-alive connections at this timeout, not at the idle one.
            .header_read_timeout(None)
            // No `max_headers`: hyper's own bound is `REPLICA_MAX_HEADERS`, parsed
            // without the per-request cost that setting any count brings.
            // hyper's buffer must hold a whole head; it refuses a size under 8 KiB.
            .max_buf_size(self.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            // The CONNECT protocol carries WebSockets over HTTP/2.
            .enable_connect_protocol();
        builder
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then waits for
/// the requests in flight (WebSockets are the caller's to close).
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let pressure = Arc::new(Notify::new());
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    // Logged once a streak: accept fails every few milliseconds while it lasts.
    let mut starved = false;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                starved = false;
                accepted
            }
            Err(e) if is_out_of_descriptors(&e) => {
                if !starved {
                    tracing::warn!(
                        open = connections.len(),
                        "out of file descriptors: closing idle connections"
                    );
                    starved = true;
                }
                pressure.notify_waiters();
                // Their tasks need a turn to close the sockets before accept can succeed,
                // and when none was idle accept would fail again at once: a short pause
                // rather than a busy loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => {
                tracing::debug!("accepting a connection: {e}");
                continue;
            }
        };
        // Small frames (an ack, a chat message) must leave at once, not wait for Nagle to
        // coalesce them with the next one (measured: acks waited up to the 40 ms
        // delayed-ACK timer without it, docs/benchmarks.md).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        connections.spawn(connection(
            stream,
            remote,
            app.clone(),
            limits,
            stopped.clone(),
            pressure.clone(),
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One client connection, until it closes, is closed for idling, or shutdown has let its
/// last request finish.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
    pressure: Arc<Notify>,
) {
    let spare = Spare::of(&stream);
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = app.clone();
        let requests = requests.clone();
        async move {
            if request.version() == Version::HTTP_2 {
                requests.multiplexed();
            }
            let _in_flight = requests.begin();
            let mut request = request.map(Body::new);
            // Handlers read the peer's address as `ConnectInfo` (see `client.rs`).
            request.extensions_mut().insert(ConnectInfo(remote));
            app.oneshot(request).await
        }
    });
    let builder = limits.builder();
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    let mut look_at = Instant::now();
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, "connection: {e}");
                    spare.close_after(&*e).await;
                }
                return;
            }
            _ = stopped.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = pressure.notified(), if !closing => {
                if activity.in_flight() == 0 {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = tokio::time::sleep_until(look_at) => {
                match activity.check(limits.idle_timeout, limits.header_read_timeout) {
                    Checked::Until(next) => look_at = next,
                    Checked::HeadTooSlow => {
                        tracing::debug!(%remote, "request head not sent within the header-read timeout");
                        return;
                    }
                    Checked::Idle if closing => {
                        // Asked to close, nothing in flight, and still open after a whole
                        // idle period: drop it.
                        return;
                    }
                    Checked::Idle => {
                        tracing::debug!(%remote, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        look_at = Instant::now() + limits.idle_timeout;
                    }
                }
            }
        }
    }
}

/// Whether `request` has no body at all: HTTP/1 without Content-Length or
/// Transfer-Encoding (RFC 9112 section 6.3; hyper hands such a request an empty body).
/// An HTTP/2 request may send data with neither, so it is never taken for bodiless.
pub(crate) fn has_no_body(request: &Request) -> bool {
    request.version() <= Version::HTTP_11
        && !request.headers().contains_key(CONTENT_LENGTH)
        && !request.headers().contains_key(TRANSFER_ENCODING)
}

/// Whether `request` declares a body of at most `limit` bytes, which
/// [`read_declared_body`] reads before routing.
pub(crate) fn has_declared_body(limit: usize, request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0 && n <= limit as u64)
}

/// Reads the body of a request that [`has_declared_body`], before the request is
/// routed, within the header-read timeout. A handler that ignores its body (`GET
/// /healthz`) would otherwise leave it unread, and hyper closes such a connection with
/// the rest of the body still arriving: the proxy that is still sending it gets a reset,
/// which nginx counts as the replica failing. Larger bodies are left to the handlers,
/// which refuse them with 413. Called by `Observe` (lib.rs), so that it costs no
/// middleware layer of its own.
pub(crate) async fn read_declared_body(
    limit: usize,
    deadline: Duration,
    request: Request,
) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Err(_)) => Err(ApiError::new(
            Code::IncompleteBody,
            "the request body ended before its declared Content-Length",
        )
        .into_response()),
        Err(_) => Err(ApiError::new(
            Code::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                deadline.as_secs()
            ),
        )
        .into_response()),
    }
}
