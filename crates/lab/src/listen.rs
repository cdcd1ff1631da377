//! How the balancer serves its client connections, under the same kind of bounds as a
//! replica's (`herd_server::listen`; both build on `herd_edge`): a bounded request head
//! that must arrive within a deadline once started (a head over the bounds gets 431 and
//! a lingering close), an end to idle connections, and idle connections closed when file
//! descriptors run out. Each proxied
//! request holds two descriptors (client and replica), so the balancer runs out first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herd_edge::{is_out_of_descriptors, Activity, Checked, Spare, Tracked, BALANCER_MAX_HEADERS};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The bounds of the balancer's client connections and of its waits on replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// The largest request head a client may send, in bytes, of at most
    /// [`BALANCER_MAX_HEADERS`] headers. Both below a replica's own limits (`herd serve
    /// --max-header-bytes`, 64 KiB, and `herd_edge::REPLICA_MAX_HEADERS`), so that what
    /// the balancer passes on, with its X-Forwarded-* added, a replica accepts.
    pub max_header_bytes: usize,
    /// How long a client has to send a request head once it started.
    pub header_read_timeout: Duration,
    /// How long a client connection may sit with no request in flight and no byte
    /// either way.
    pub idle_timeout: Duration,
    /// How long one try waits for a replica's response head. A safe request whose try
    /// runs out is retried on another replica; another gets 504.
    pub upstream_timeout: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            max_header_bytes: 32 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(10),
        }
    }
}

impl EdgeLimits {
    pub(crate) fn builder(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            // Kept by `watch` instead (`Activity::check`): hyper's also runs while a
            // connection waits for its next request, which ended idle keep-alive
            // connections at this timeout rather than the idle one.
            .header_read_timeout(None)
            .max_headers(BALANCER_MAX_HEADERS)
            .max_buf_size(self.max_header_bytes.max(8192));
        builder
    }
}

/// What closes idle client connections when the balancer runs out of file descriptors:
/// its accept loop relieves it when accepting fails, a health check or a connection to a
/// replica when opening one does (`Cluster::pressure`).
#[derive(Debug, Default)]
pub(crate) struct Pressure(Notify);

impl Pressure {
    /// Tells every idle connection to close, then gives their tasks a moment to: the
    /// sockets must be closed before a descriptor is free, and when none was idle the
    /// caller's next try would fail at once, so a short pause rather than a busy loop.
    pub async fn relieve(&self) {
        self.0.notify_waiters();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Accepts connections until `shutdown` resolves, handing each to `serve` along with
/// its [`Activity`] and [`Spare`]; `serve` must run the connection, close it gently
/// with the spare if it ended in a refused head, and return when it ends. Idle
/// connections close when accepting runs out of descriptors, and whenever `pressure` is
/// told that something else did.
pub(crate) async fn accept<F, Fut>(
    listener: TcpListener,
    limits: EdgeLimits,
    pressure: Arc<Pressure>,
    shutdown: impl std::future::Future<Output = ()>,
    serve: F,
) where
    F: Fn(TokioIo<Tracked>, SocketAddr, Arc<Activity>, Spare) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    // Logged once a streak: accept fails every few milliseconds while it lasts.
    let mut starved = false;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                starved = false;
                accepted
            }
            Err(e) if is_out_of_descriptors(&e) => {
                if !starved {
                    tracing::warn!("out of file descriptors: closing idle connections");
                    starved = true;
                }
                pressure.relieve().await;
                continue;
            }
            Err(e) => {
                tracing::debug!("accepting a connection: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let spare = Spare::of(&stream);
        let activity = Activity::new();
        let io = TokioIo::new(Tracked::new(stream, activity.clone()));
        let connection = serve(io, remote, activity.clone(), spare);
        tokio::spawn(watch(connection, activity, limits, pressure.clone()));
    }
}

/// Runs `connection` until it ends, or drops it once it has been idle (nothing in
/// flight, no byte either way) for the idle timeout, once a request head has taken
/// longer than the header-read timeout from its first byte, or when it is idle as
/// descriptors run out.
async fn watch(
    connection: impl std::future::Future<Output = ()>,
    activity: Arc<Activity>,
    limits: EdgeLimits,
    pressure: Arc<Pressure>,
) {
    tokio::pin!(connection);
    let mut look_at = Instant::now();
    loop {
        tokio::select! {
            () = &mut connection => return,
            () = pressure.0.notified() => {
                if activity.in_flight() == 0 {
                    return;
                }
            }
            () = tokio::time::sleep_until(look_at) => {
                match activity.check(limits.idle_timeout, limits.header_read_timeout) {
                    Checked::Until(next) => look_at = next,
                    Checked::Idle => {
                        tracing::debug!("closing an idle client connection");
                        return;
                    }
                    Checked::HeadTooSlow => {
                        tracing::debug!("request head not sent within the header-read timeout");
                        return;
                    }
                }
            }
        }
    }
}
