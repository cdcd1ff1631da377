//! What a replica (`herd_server::listen`) and the development balancer
//! (`herd_lab::listen`) share at their edge with clients:
//! - [`Activity`] and [`Tracked`]: when a connection last moved a byte and how many of
//!   its requests are in flight, for closing idle connections;
//! - the header-count bounds, [`REPLICA_MAX_HEADERS`] and [`BALANCER_MAX_HEADERS`];
//! - [`Spare`]: a lingering close after hyper refused a request head, so that the
//!   proxy in front reads the refusal instead of a reset.
//!
//! Each side keeps its own accept loop: the replica's waits for its requests at
//! shutdown, the balancer's does not.

use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How many headers a replica accepts in one request: hyper's own bound, which a replica
/// leaves in place (it sets no `max_headers`); more get 431 from hyper and a lingering
/// close ([`Spare`]), so a proxy in front reads the refusal rather than a reset it would
/// count against the replica. Left to hyper because any count set, even this one, makes
/// hyper build its index of header slots element by element for every request it parses
/// (800 instructions a request at 100, 2,500 at 128 by callgrind, of about 28,000 for a
/// whole `/v1/me`; docs/benchmarks.md). No count protects a replica from what a proxy
/// forwards: nginx passes as many header lines as fit its buffers (150 of a client's
/// with 2 of its own were forwarded, checked with deploy/nginx.conf), so what keeps
/// a replica in rotation is the lingering close, not a count above nginx's.
pub const REPLICA_MAX_HEADERS: usize = 100;

/// How many headers the development balancer accepts in one request: two fewer than a
/// replica, for the `X-Forwarded-For` and `X-Forwarded-Proto` it adds, so that a
/// replica accepts every head it passes.
pub const BALANCER_MAX_HEADERS: usize = REPLICA_MAX_HEADERS - 2;

/// How long a lingering close waits for the client to stop sending.
const LINGER: Duration = Duration::from_secs(5);

/// How much a lingering close reads (and drops) at most before it closes anyway.
const LINGER_BYTES: usize = 1024 * 1024;

/// A refused request head's connection, kept open to close it gently.
///
/// When hyper refuses a request head (431 for too many headers or too many bytes, 400
/// for a malformed one) it writes the answer and closes the connection with the rest of
/// what the client sent unread, typically a body. A socket closed with unread data is
/// reset, and the reset can reach the client before the answer: nginx, still sending
/// the body, sees the upstream fail and counts it against the replica. So, as nginx
/// itself does (`lingering_close`), [`Spare::linger`] stops writing and reads and drops
/// what still arrives until the client closes, for at most 5 s and 1 MiB.
///
/// It holds a duplicate of the connection's descriptor, taken before hyper owns the
/// stream: one `dup` a connection, not a request.
#[derive(Debug)]
pub struct Spare(Option<OwnedFd>);

impl Spare {
    /// A duplicate of `stream`'s descriptor (none when the process is out of them: the
    /// connection then closes as hyper leaves it).
    pub fn of(stream: &TcpStream) -> Spare {
        Spare(stream.as_fd().try_clone_to_owned().ok())
    }

    /// Closes the connection gently if `error`, what hyper's connection ended with, is
    /// a refused request head; otherwise lets it close as it is.
    pub async fn close_after(self, error: &(dyn std::error::Error + Send + Sync + 'static)) {
        if refused_head(error) {
            self.linger().await;
        }
    }

    /// Stops writing, then reads and drops what the client still sends until it closes,
    /// [`LINGER`] passes or [`LINGER_BYTES`] were read.
    pub async fn linger(self) {
        let Some(fd) = self.0 else { return };
        let socket = std::net::TcpStream::from(fd);
        // The descriptor shares the connection's non-blocking flag; tokio asks anyway.
        if socket.shutdown(Shutdown::Write).is_err() || socket.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(mut socket) = TcpStream::from_std(socket) else {
            return;
        };
        let mut sink = [0u8; 8192];
        let mut left = LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while left > 0 {
                match socket.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

/// Whether hyper's connection ended because it refused a request head.
fn refused_head(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            return hyper.is_parse();
        }
        source = e.source();
    }
    false
}

/// Whether accepting failed because the process or the system ran out of file
/// descriptors (EMFILE, ENFILE).
pub fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// Whether `error`, or an error it was caused by, is [`is_out_of_descriptors`]: a
/// connection this process failed to open for want of a descriptor, which says nothing
/// about the peer it was meant for.
pub fn caused_by_out_of_descriptors(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(is_out_of_descriptors)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// When a connection last moved a byte, how many of its requests are being answered, and
/// since when the request head now arriving has been arriving.
///
/// The header-read timeout is kept here rather than left to hyper: hyper's (HTTP/1
/// `header_read_timeout`) starts as soon as it waits for the next head, so it also ends
/// every keep-alive connection that sits idle for that long between requests (10 s
/// rather than the idle timeout's 75 s, under the keep-alive timeouts of the proxies in
/// front), and it arms and drops a timer for every request. Here the head's clock starts
/// at its first byte, and the connection's one timer, never armed further than the
/// header-read timeout ahead, is the only one ([`Activity::check`]).
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last byte read or written.
    last: AtomicU64,
    in_flight: AtomicUsize,
    /// One more than the milliseconds from `opened` to the first byte of the request
    /// head now arriving; 0 while none is (a request is being answered, or nothing has
    /// arrived since the last one was).
    head: AtomicU64,
    /// An HTTP/2 connection: its frames between requests are no request head.
    multiplexed: AtomicBool,
}

/// What [`Activity::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Look again at this instant.
    Until(Instant),
    /// Nothing in flight and no byte either way for the idle timeout.
    Idle,
    /// A request head started arriving longer ago than the header-read timeout and has
    /// not been answered with a request.
    HeadTooSlow,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
        })
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn touch(&self) {
        self.last.store(self.millis(), Ordering::Relaxed);
    }

    /// Bytes arrived: the last byte moved now, and if no request is being answered they
    /// are a request head's, whose clock starts unless it already runs.
    fn arrived(&self) {
        let now = self.millis();
        self.last.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::SeqCst) == 0
            && self.head.load(Ordering::Relaxed) == 0
            && !self.multiplexed.load(Ordering::Relaxed)
        {
            self.head.store(now + 1, Ordering::Relaxed);
        }
    }

    /// Marks the connection as HTTP/2: no header-read timeout applies between its
    /// requests (the idle timeout does).
    pub fn multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
        self.head.store(0, Ordering::Relaxed);
    }

    /// Whether the connection should close now, or when to look again: never later
    /// than `head_timeout` from now, so that a head starting after this call is
    /// looked at in time without rearming the timer for it.
    pub fn check(&self, idle: Duration, head_timeout: Duration) -> Checked {
        let now = Instant::now();
        if self.is_idle(idle) {
            return Checked::Idle;
        }
        let mut next = now + head_timeout;
        if self.in_flight() > 0 {
            // However long the request takes, with or without bytes moving.
            return Checked::Until(next);
        }
        // Not idle with nothing in flight: the quiet period ends after now.
        next = next.min(self.quiet_until(idle));
        let head = self.head.load(Ordering::Relaxed);
        if head > 0 {
            let deadline = self.opened + Duration::from_millis(head - 1) + head_timeout;
            if now >= deadline {
                return Checked::HeadTooSlow;
            }
            next = next.min(deadline);
        }
        Checked::Until(next)
    }

    /// When the connection will have been quiet for `idle`, unless something moves.
    fn quiet_until(&self, idle: Duration) -> Instant {
        self.opened + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }

    /// Whether the connection has been quiet for `idle` with nothing in flight.
    fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight() == 0 && Instant::now() >= self.quiet_until(idle)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// A request is being answered until the returned guard drops; its head has arrived.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head.store(0, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request being answered; the connection is not idle while one lives.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// A socket that records when it last moved a byte.
#[derive(Debug)]
pub struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Tracked {
    pub fn new(inner: TcpStream, activity: Arc<Activity>) -> Tracked {
        Tracked { inner, activity }
    }
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
            self.activity.arrived();
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that, like hyper-util's `ConnectError`, names its cause only as a source.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "tcp connect error")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn running_out_of_descriptors_is_found_under_the_error_that_reports_it() {
        let emfile = Wrapped(std::io::Error::from_raw_os_error(24));
        let enfile = Wrapped(std::io::Error::from_raw_os_error(23));
        let refused = Wrapped(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(caused_by_out_of_descriptors(&emfile));
        assert!(caused_by_out_of_descriptors(&enfile));
        assert!(!caused_by_out_of_descriptors(&refused));
    }
}
