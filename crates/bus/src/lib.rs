//! Cross-replica publish/subscribe: herd's bus.
//!
//! A replica publishes news on a topic (a revoked session, a key-ring change, later a
//! chat message) and every replica subscribed to the topic hears it, the publisher
//! included. The bus carries news only; the store stays the source of truth. A
//! subscription that may have missed news is told so with a [`Delivery::Gap`], and its
//! owner catches up from the store. Payloads are opaque bytes: the bus knows nothing of
//! what they mean, and topics are plain strings (`"revocations"`, `"room:42"`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), herd_bus::BusError> {
//! use herd_bus::{Bus, Delivery};
//!
//! let bus = Bus::in_process();
//! let mut revocations = bus.subscribe("revocations").await;
//! bus.publish("revocations", b"session-id").await?;
//! match revocations.recv().await {
//!     Some(Delivery::Message { payload, .. }) => { /* revoke `payload` */ }
//!     Some(Delivery::Gap) => { /* reload the revocation set from the store */ }
//!     None => { /* every clone of the bus was dropped */ }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Backends
//!
//! One constructor each; nothing else about a [`Bus`] depends on which was chosen.
//! - [`Bus::in_process`]: one replica.
//! - [`Bus::sql_tail`]: replicas sharing one database (`herd cluster` on one SQLite
//!   file). Publishing appends to the store's event log; one poller per bus reads what
//!   was appended and fans it out. Pollers delete events older than ten minutes.
//! - [`Bus::redis`]: production. PUBLISH and SUBSCRIBE on channels named `herd:TOPIC`.
//!
//! # What a subscription receives
//!
//! - Every message published on its topic after [`Bus::subscribe`] returned, by this bus
//!   or any other on the same backend, exactly once, unless a gap (below) says some may
//!   be missing. Every subscription to a topic sees its messages in one order, which
//!   keeps the order of each publisher's successive `publish` calls.
//! - Nothing published before `subscribe` was called: the bus is not a log. One caveat,
//!   on Redis only: when this bus already had a subscription to the topic, a message
//!   still on its way to it may reach the new subscription too.
//! - [`Delivery::Gap`] wherever messages may have been missed: the subscription fell
//!   more than [`CAPACITY`] deliveries behind its publishers; the Redis connection was
//!   lost (a gap then, and another once it is restored, so that a resync done at the
//!   second covers the whole outage); the SQL tail could not read the log for long
//!   enough that unread events may have been pruned.
//! - `None` once every clone of the [`Bus`] has been dropped, which also stops its
//!   background task.
//!
//! # Failure
//!
//! [`Bus::publish`] fails with [`BusError::Unavailable`] when the backend cannot take the
//! message; on Redis that takes at most about a second. Subscriptions outlive outages:
//! the Redis bus reconnects by itself (100 ms, doubling up to 2 s, between attempts) and
//! resubscribes, and the SQL tail resumes from the last event it read.
//! [`Bus::healthy`] is for readiness.
//!
//! # Layout
//!
//! - `lib.rs`: [`Bus`], [`Delivery`] and [`BusError`].
//! - `hub.rs`: the local fan-out every backend feeds, one bounded broadcast channel per
//!   subscribed topic, and [`Subscription`].
//! - `sql_tail.rs`: the event-log poller.
//! - `redis_pubsub.rs`: the Redis publisher and the task that owns the pub/sub
//!   connection.
//! - `testing.rs` (feature `testing`, for tests only): a redis-server of a test's own,
//!   to kill and restart.

mod hub;
mod redis_pubsub;
mod sql_tail;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use herd_store::Store;
use tokio::task::AbortHandle;

use crate::hub::Hub;
pub use crate::hub::Subscription;
use crate::redis_pubsub::Redis;
use crate::sql_tail::SqlTail;

/// How many deliveries a subscription holds for a reader that falls behind. Past that
/// the oldest are dropped and the reader gets a [`Delivery::Gap`], so a slow reader costs
/// bounded memory.
pub const CAPACITY: usize = 1024;

/// A poll interval for [`Bus::sql_tail`]: a message published on one replica reaches the
/// others within about this long.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long [`Bus::healthy`] waits for its backend to answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// The cut of a subscription that leaves nothing out (see `Subscription::skip_through`).
const NO_CUT: i64 = i64::MIN;

/// What a [`Subscription`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A message published on the subscription's topic. Shared, not copied, between the
    /// subscriptions that receive it.
    Message { topic: Arc<str>, payload: Arc<[u8]> },
    /// Messages may have been missed here; whoever depends on them should catch up from
    /// the store.
    Gap,
}

/// Why the bus could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The Redis URL is malformed or names something this build cannot connect to.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    /// The backend could not be reached or did not answer in time; a message being
    /// published was not sent.
    #[error("the bus is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A round trip that took longer than its bound.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
struct TimedOut(Duration);

fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BusError {
    BusError::Unavailable(e.into())
}

/// A handle on the bus. Cheap to clone; the clones share one backend connection and one
/// background task, which stop when the last clone is dropped.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Arc<Hub>,
    backend: Backend,
    /// The poller or subscriber task, if the backend has one.
    task: Option<AbortHandle>,
}

enum Backend {
    InProcess,
    SqlTail(SqlTail),
    // Boxed only to keep clippy's variant-size lint quiet; there is one per bus.
    Redis(Box<Redis>),
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend: &dyn fmt::Debug = match &self.inner.backend {
            Backend::InProcess => &"in-process",
            Backend::SqlTail(tail) => tail,
            Backend::Redis(redis) => redis,
        };
        f.debug_struct("Bus").field("backend", backend).finish()
    }
}

impl Bus {
    /// A bus within this process, for a single replica.
    pub fn in_process() -> Bus {
        Bus::with(Arc::default(), Backend::InProcess, None)
    }

    /// A bus over the event log of `store`, for replicas sharing one database, polled
    /// every `poll_interval` ([`DEFAULT_POLL_INTERVAL`] is a good start) and right after
    /// each local publish. Fails if the log cannot be read.
    pub async fn sql_tail(store: Store, poll_interval: Duration) -> Result<Bus, BusError> {
        let hub = Arc::<Hub>::default();
        let (tail, task) = SqlTail::start(store, poll_interval, hub.clone()).await?;
        Ok(Bus::with(hub, Backend::SqlTail(tail), Some(task)))
    }

    /// A bus over Redis pub/sub at `url` (`redis://[:PASSWORD@]HOST[:PORT][/DB]`). Fails
    /// if the URL is malformed or Redis cannot be reached now; once connected, it
    /// survives Redis going away and coming back.
    pub async fn redis(url: &str) -> Result<Bus, BusError> {
        let hub = Arc::<Hub>::default();
        let (redis, task) = Redis::connect(url, hub.clone()).await?;
        Ok(Bus::with(hub, Backend::Redis(Box::new(redis)), Some(task)))
    }

    fn with(hub: Arc<Hub>, backend: Backend, task: Option<AbortHandle>) -> Bus {
        Bus {
            inner: Arc::new(Inner { hub, backend, task }),
        }
    }

    /// Whether other processes can be on this bus (the SQL tail, Redis), as opposed to
    /// a bus within this process.
    pub fn is_shared(&self) -> bool {
        !matches!(self.inner.backend, Backend::InProcess)
    }

    /// Sends `payload` to every subscription to `topic`, on every bus of this backend.
    /// Returns once the backend has taken the message (on the SQL tail, once it is
    /// durable); delivery itself is asynchronous.
    pub async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), BusError> {
        match &self.inner.backend {
            Backend::InProcess => {
                self.inner.hub.deliver(topic, 0, payload);
                Ok(())
            }
            Backend::SqlTail(tail) => tail.publish(topic, payload).await,
            Backend::Redis(redis) => redis.publish(topic, payload).await,
        }
    }

    /// [`publish`](Bus::publish)es each of `payloads` to `topic`, in order, as one
    /// exchange with the backend where it has one: on Redis one pipeline of `PUBLISH`es,
    /// one round trip for them all rather than one each. Subscribers see them in order;
    /// on an error, a prefix of them may have been sent.
    pub async fn publish_all(&self, topic: &str, payloads: &[Vec<u8>]) -> Result<(), BusError> {
        match &self.inner.backend {
            Backend::Redis(redis) => redis.publish_all(topic, payloads).await,
            _ => {
                for payload in payloads {
                    self.publish(topic, payload).await?;
                }
                Ok(())
            }
        }
    }

    /// Subscribes to `topic`. Returns once the subscription is in effect, so that a
    /// caller can subscribe, then read the store, then go live, without a window in
    /// which news is lost. Never fails: a subscription made while the backend is down
    /// takes effect once it is back (on Redis, announced by a [`Delivery::Gap`]).
    pub async fn subscribe(&self, topic: &str) -> Subscription {
        let hub = &self.inner.hub;
        match &self.inner.backend {
            Backend::InProcess => Subscription::new(hub, hub.subscribe(topic), NO_CUT),
            Backend::SqlTail(tail) => tail.subscribe(hub, topic).await,
            Backend::Redis(redis) => redis.subscribe(hub, topic).await,
        }
    }

    /// Someone on this replica awaits answers from the others for the next `span` (the
    /// confirmations of a revocation): on the SQL tail, the poller reads the log every
    /// few milliseconds until then instead of every poll interval, so that an answer
    /// costs no whole interval more than it must. The other backends deliver at once
    /// and ignore it.
    pub fn hurry(&self, span: Duration) {
        if let Backend::SqlTail(tail) = &self.inner.backend {
            tail.hurry(span);
        }
    }

    /// Whether the backend answers now (within a second), for readiness. On Redis,
    /// also whether the subscribing connection is up.
    pub async fn healthy(&self) -> bool {
        match &self.inner.backend {
            Backend::InProcess => true,
            Backend::SqlTail(tail) => tail.healthy().await,
            Backend::Redis(redis) => redis.healthy().await,
        }
    }
}
