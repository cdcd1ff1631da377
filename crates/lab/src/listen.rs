//! How the balancer serves its client connections, under the same kind of bounds as a
//! replica's (`herd_server::listen`, which this crate does not depend on): a bounded
//! request head that must arrive within a deadline once started, an end to idle
//! connections, and idle connections closed when file descriptors run out. Each proxied
//! request holds two descriptors (client and replica), so the balancer runs out first.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The bounds of the balancer's client connections and of its waits on replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// The largest request head a client may send, in bytes (as many headers as fit).
    /// Below a replica's own limit (`herd serve --max-header-bytes`, 64 KiB), so that
    /// what the balancer passes on, with its X-Forwarded-* added, a replica accepts.
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
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // The shortest header line (`a:` and a line end) is 3 bytes: a count limit
            // below what fits would refuse heads the byte limit admits.
            .max_headers(self.max_header_bytes / 3)
            .max_buf_size(self.max_header_bytes.max(8192));
        builder
    }
}

/// Accepts connections until `shutdown` resolves, handing each to `serve` along with
/// its [`Activity`]; `serve` must run the connection and return when it ends.
pub(crate) async fn accept<F, Fut>(
    listener: TcpListener,
    limits: EdgeLimits,
    shutdown: impl std::future::Future<Output = ()>,
    serve: F,
) where
    F: Fn(TokioIo<Tracked>, SocketAddr, Arc<Activity>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let pressure = Arc::new(Notify::new());
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
            // EMFILE and ENFILE: out of file descriptors.
            Err(e) if matches!(e.raw_os_error(), Some(24 | 23)) => {
                if !starved {
                    tracing::warn!("out of file descriptors: closing idle connections");
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
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let connection = serve(io, remote, activity.clone());
        tokio::spawn(watch(
            connection,
            activity,
            limits.idle_timeout,
            pressure.clone(),
        ));
    }
}

/// Runs `connection` until it ends, or drops it once it has been idle (nothing in
/// flight, no byte either way) for `idle`, or is idle when descriptors run out.
async fn watch(
    connection: impl std::future::Future<Output = ()>,
    activity: Arc<Activity>,
    idle: Duration,
    pressure: Arc<Notify>,
) {
    tokio::pin!(connection);
    loop {
        tokio::select! {
            () = &mut connection => return,
            () = pressure.notified() => {
                if activity.in_flight() == 0 {
                    return;
                }
            }
            () = tokio::time::sleep_until(activity.quiet_until(idle)) => {
                if activity.in_flight() == 0 && Instant::now() >= activity.quiet_until(idle) {
                    tracing::debug!("closing an idle client connection");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being answered.
#[derive(Debug)]
pub(crate) struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last byte read or written.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn quiet_until(&self, idle: Duration) -> Instant {
        self.opened + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// A request is being answered until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// A socket that records when it last moved a byte.
pub(crate) struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
