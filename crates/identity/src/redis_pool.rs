//! The connections to Redis that the `shared` sessions and the login throttle share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::sessions::Unavailable;

/// A few of the redis crate's multiplexed connections (`ConnectionManager`: `Clone`,
/// pipelining every caller's commands over one socket, reconnecting by itself), each
/// opened on first use, so herd starts while Redis is down and recovers when it
/// returns. Shared by the `shared` sessions and the login throttle. Once a connection
/// is open, taking it is an atomic load and a clone: no lock on the request path.
pub(crate) struct RedisPool {
    client: redis::Client,
    pool: Vec<OnceCell<ConnectionManager>>,
    next: AtomicUsize,
    timeout: Duration,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("pool", &self.pool.len())
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    pub(crate) fn new(url: &str, pool_size: usize) -> Result<RedisPool, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis-url: {e}"))?;
        Ok(RedisPool {
            client,
            pool: (0..pool_size.max(1)).map(|_| OnceCell::new()).collect(),
            next: AtomicUsize::new(0),
            timeout: Duration::from_secs(1),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, Unavailable> {
        let slot = &self.pool[self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len()];
        if let Some(conn) = slot.get() {
            return Ok(conn.clone());
        }
        // Not open yet (or the first attempt failed): one caller connects while the
        // others of this slot wait for it; a failure leaves the slot empty for the next.
        let conn = slot
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1);
                tokio::time::timeout(
                    self.timeout * 2,
                    ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await
                .map_err(|_| Unavailable("connecting to Redis timed out".into()))?
                .map_err(|e| Unavailable(e.to_string()))
            })
            .await?;
        Ok(conn.clone())
    }

    /// Runs `cmd`, once more if the connection had broken: the manager reconnects on
    /// the first failure, so after Redis comes back the retry goes through. Every
    /// command herd sends is idempotent but the throttle's script, which, repeated after
    /// a reply lost on a broken connection, at worst counts one login attempt twice.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Pipeline,
    ) -> Result<T, Unavailable> {
        let mut conn = self.connection().await?;
        let mut last = String::new();
        // The manager's response timeout bounds each try (one timer a request, where a
        // `tokio::time::timeout` around it armed a second).
        for _ in 0..2 {
            match cmd.query_async(&mut conn).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_timeout() => {
                    return Err(Unavailable("Redis did not answer within 1 s".into()))
                }
                Err(e)
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal() =>
                {
                    last = e.to_string();
                }
                Err(e) => return Err(Unavailable(e.to_string())),
            }
        }
        Err(Unavailable(last))
    }

    pub(crate) async fn ping(&self) -> Result<(), Unavailable> {
        let mut p = redis::pipe();
        p.cmd("PING").ignore();
        self.run::<()>(&p).await
    }
}
