//! Two replicas' buses on any backend, a private Redis server to kill (the crate's own
//! `testing::RedisServer`), and helpers that read subscriptions with a deadline.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

pub use herd_bus::testing::RedisServer;
use herd_bus::{Bus, Delivery, Subscription, DEFAULT_POLL_INTERVAL};
use herd_store::Store;
use tempfile::TempDir;
use tokio::time::Instant;

/// The variable naming the Redis server the tests may use, e.g. `redis://127.0.0.1:6379`.
pub const REDIS_VAR: &str = "HERD_TEST_REDIS";

/// How long anything a test waits for may take before the test fails. Generous: it is
/// only ever reached when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InProcess,
    SqlTail,
    Redis,
}

/// Two replicas' buses on one backend: on the same process's bus, on two stores opened
/// on one SQLite file, or on two connections to one Redis.
#[derive(Debug)]
pub struct Replicas {
    pub a: Bus,
    pub b: Bus,
    /// Prefixes every topic, so that tests sharing a Redis server do not hear each
    /// other.
    namespace: String,
    place: Place,
}

#[derive(Debug)]
enum Place {
    InProcess,
    /// The directory is held so that the database outlives the test body.
    Sqlite {
        url: String,
        _dir: TempDir,
    },
    Redis {
        url: String,
    },
}

impl Replicas {
    pub async fn start(kind: Kind) -> Replicas {
        let place = match kind {
            Kind::InProcess => Place::InProcess,
            Kind::SqlTail => {
                let dir = tempfile::tempdir().expect("creating a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("bus.db").display());
                Place::Sqlite { url, _dir: dir }
            }
            Kind::Redis => Place::Redis { url: redis_url() },
        };
        let a = place.bus(None).await;
        let b = place.bus(Some(&a)).await;
        Replicas {
            a,
            b,
            namespace: format!("test-{:016x}", random()),
            place,
        }
    }

    /// A third replica, started now.
    pub async fn another(&self) -> Bus {
        self.place.bus(Some(&self.a)).await
    }

    /// A topic of this test's own.
    pub fn topic(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }
}

impl Place {
    /// A replica's bus; `first` is another replica's, which on one process is the same bus.
    async fn bus(&self, first: Option<&Bus>) -> Bus {
        match self {
            Place::InProcess => first.cloned().unwrap_or_else(Bus::in_process),
            Place::Sqlite { url, .. } => {
                let store = Store::connect(url).await.expect("opening the store");
                Bus::sql_tail(store, DEFAULT_POLL_INTERVAL)
                    .await
                    .expect("starting the SQL tail")
            }
            Place::Redis { url } => Bus::redis(url)
                .await
                .unwrap_or_else(|e| panic!("connecting to {REDIS_VAR} ({url}): {e}")),
        }
    }
}

/// The Redis URL from the environment; run without it, a test fails rather than passes
/// without having tested anything.
pub fn redis_url() -> String {
    std::env::var(REDIS_VAR).unwrap_or_else(|_| {
        panic!(
            "{REDIS_VAR} is not set: this test needs Redis (and redis-server on PATH), \
             e.g. {REDIS_VAR}=redis://127.0.0.1:6379"
        )
    })
}

/// The next delivery, failing the test if none comes within [`WAIT`] or the bus ended.
pub async fn next(subscription: &mut Subscription) -> Delivery {
    match tokio::time::timeout(WAIT, subscription.recv()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("the subscription to {} ended", subscription.topic()),
        Err(_) => panic!(
            "nothing arrived on {} within {WAIT:?}",
            subscription.topic()
        ),
    }
}

/// The next delivery's payload, failing the test if it is a gap.
pub async fn message(subscription: &mut Subscription) -> Vec<u8> {
    match next(subscription).await {
        Delivery::Message { topic, payload } => {
            assert_eq!(&*topic, subscription.topic());
            payload.to_vec()
        }
        Delivery::Gap => panic!("a gap instead of a message on {}", subscription.topic()),
    }
}

/// Waits until `condition` holds, checking every 20 ms, failing the test after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "not {what} within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 64 random bits, from the standard library's randomly keyed hasher.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish()
}
