//! The two stateful strategies herd ships to be compared with tokens: opaque session ids
//! looked up in this process's memory (`memory`) or in a store every replica shares
//! (`shared`: Redis, or the SQL store when there is no Redis).
//!
//! A session id is 256 random bits handed to the client; what is kept is its SHA-256,
//! so a leaked store does not hand out live credentials. Sessions expire after an idle
//! timeout (sliding: every use counts as activity) and an absolute one. Sliding expiry
//! costs a write at most once per `touch_interval`, not on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_store::{SharedSession, Store};
use serde::{Deserialize, Serialize};

use crate::redis_pool::RedisPool;
use crate::service::seconds;

/// Where a replica keeps what it needs to recognise a caller: the one list of session
/// designs, which `herd serve --sessions` parses and `herd lab` compares. Written as
/// [`Strategy::as_str`] names it, lower case, on the command line and in the lab's
/// results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Signed access tokens: nothing to look up. The default.
    Token,
    /// Session ids shared by every replica, in Redis or the SQL store.
    Shared,
    /// Session ids in this process's memory: needs sticky routing, dies with the process.
    Memory,
}

impl Strategy {
    /// Every strategy, in the order `--help` lists them.
    pub const ALL: [Strategy; 3] = [Strategy::Token, Strategy::Shared, Strategy::Memory];

    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Token => "token",
            Strategy::Shared => "shared",
            Strategy::Memory => "memory",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    /// The name [`Strategy::as_str`] gives.
    fn from_str(name: &str) -> Result<Strategy, String> {
        Strategy::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| format!("{name:?} is not one of token, shared, memory"))
    }
}

/// How long sessions of the stateful strategies last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    pub idle: Duration,
    pub absolute: Duration,
    /// The least time between two extensions of a session's idle expiry.
    pub touch_interval: Duration,
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        SessionTimeouts {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
            touch_interval: Duration::from_secs(60),
        }
    }
}

impl SessionTimeouts {
    /// Seconds the session may still live from `now`, given when it was created.
    fn remaining(&self, created_at: i64, now: i64) -> i64 {
        self.idle().min(created_at + self.absolute() - now)
    }

    /// The idle timeout in the clock's seconds.
    fn idle(&self) -> i64 {
        seconds(self.idle)
    }

    fn absolute(&self) -> i64 {
        seconds(self.absolute)
    }

    fn touch_interval(&self) -> i64 {
        seconds(self.touch_interval)
    }
}

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    pub user_id: String,
    pub username: String,
    pub created_at: i64,
}

/// The shared store could not be reached; the request should get a 503.
#[derive(Debug, Clone, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct Unavailable(pub String);

#[derive(Debug)]
pub(crate) enum SessionStore {
    Memory(MemorySessions),
    Redis(RedisSessions),
    Sql(Store),
}

impl SessionStore {
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            SessionStore::Memory(_) => "memory",
            SessionStore::Redis(_) => "redis",
            SessionStore::Sql(_) => "sql",
        }
    }

    pub(crate) async fn create(
        &self,
        id: &str,
        data: &SessionData,
        t: &SessionTimeouts,
    ) -> Result<(), Unavailable> {
        match self {
            SessionStore::Memory(m) => {
                m.create(id, data);
                Ok(())
            }
            SessionStore::Redis(r) => r.create(id, data, t).await,
            SessionStore::Sql(store) => {
                let now = data.created_at;
                store
                    .create_shared_session(&SharedSession {
                        id: id.to_owned(),
                        user_id: data.user_id.clone(),
                        username: data.username.clone(),
                        created_at: now,
                        last_seen: now,
                    })
                    .await
                    .map_err(|e| Unavailable(e.to_string()))
            }
        }
    }

    /// The session's owner, counting this lookup as activity; `None` when it does not
    /// exist or has expired.
    pub(crate) async fn lookup(
        &self,
        id: &str,
        now: i64,
        t: &SessionTimeouts,
    ) -> Result<Option<SessionData>, Unavailable> {
        match self {
            SessionStore::Memory(m) => Ok(m.lookup(id, now, t)),
            SessionStore::Redis(r) => r.lookup(id, now, t).await,
            SessionStore::Sql(store) => {
                let Some(s) = store
                    .shared_session(id)
                    .await
                    .map_err(|e| Unavailable(e.to_string()))?
                else {
                    return Ok(None);
                };
                if s.last_seen + t.idle() <= now || s.created_at + t.absolute() <= now {
                    // Expired: the periodic prune deletes it; no write on this path.
                    return Ok(None);
                }
                if now - s.last_seen >= t.touch_interval() {
                    store
                        .touch_shared_session(id, now)
                        .await
                        .map_err(|e| Unavailable(e.to_string()))?;
                }
                Ok(Some(SessionData {
                    user_id: s.user_id,
                    username: s.username,
                    created_at: s.created_at,
                }))
            }
        }
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<(), Unavailable> {
        match self {
            SessionStore::Memory(m) => {
                m.delete(id);
                Ok(())
            }
            SessionStore::Redis(r) => r.delete(id).await,
            SessionStore::Sql(store) => store
                .delete_shared_session(id)
                .await
                .map(|_| ())
                .map_err(|e| Unavailable(e.to_string())),
        }
    }

    /// Drops expired sessions (Redis expires its own).
    pub(crate) async fn prune(&self, now: i64, t: &SessionTimeouts) -> Result<(), Unavailable> {
        match self {
            SessionStore::Memory(m) => {
                m.prune(now, t);
                Ok(())
            }
            SessionStore::Redis(_) => Ok(()),
            SessionStore::Sql(store) => store
                .prune_shared_sessions(now - t.idle(), now - t.absolute())
                .await
                .map(|_| ())
                .map_err(|e| Unavailable(e.to_string())),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), Unavailable> {
        match self {
            SessionStore::Memory(_) => Ok(()),
            SessionStore::Redis(r) => r.ping().await,
            SessionStore::Sql(store) => store.ping().await.map_err(|e| Unavailable(e.to_string())),
        }
    }
}

/// Sessions in this process's memory.
#[derive(Debug, Default)]
pub(crate) struct MemorySessions {
    map: Mutex<HashMap<String, (SessionData, i64)>>,
}

impl MemorySessions {
    fn create(&self, id: &str, data: &SessionData) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(id.to_owned(), (data.clone(), data.created_at));
    }

    fn lookup(&self, id: &str, now: i64, t: &SessionTimeouts) -> Option<SessionData> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (data, last_seen) = map.get_mut(id)?;
        if *last_seen + t.idle() <= now || data.created_at + t.absolute() <= now {
            map.remove(id);
            return None;
        }
        // Memory is not a store write: every use extends the session.
        *last_seen = now;
        Some(data.clone())
    }

    fn delete(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn prune(&self, now: i64, t: &SessionTimeouts) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (data, last_seen)| {
            *last_seen + t.idle() > now && data.created_at + t.absolute() > now
        });
    }
}

/// Sessions in Redis: one key a session, expiring by itself.
#[derive(Debug)]
pub(crate) struct RedisSessions {
    redis: Arc<RedisPool>,
}

const KEY_PREFIX: &str = "herd:session:";

impl RedisSessions {
    pub(crate) fn new(redis: Arc<RedisPool>) -> RedisSessions {
        RedisSessions { redis }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Pipeline) -> Result<T, Unavailable> {
        self.redis.run(cmd).await
    }

    async fn create(
        &self,
        id: &str,
        data: &SessionData,
        t: &SessionTimeouts,
    ) -> Result<(), Unavailable> {
        let value = serde_json::to_string(data).map_err(|e| Unavailable(e.to_string()))?;
        let ttl = t.remaining(data.created_at, data.created_at).max(1);
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(format!("{KEY_PREFIX}{id}"))
            .arg(value)
            .arg("EX")
            .arg(ttl)
            .ignore();
        self.run::<()>(&p).await
    }

    async fn lookup(
        &self,
        id: &str,
        now: i64,
        t: &SessionTimeouts,
    ) -> Result<Option<SessionData>, Unavailable> {
        let key = format!("{KEY_PREFIX}{id}");
        let mut p = redis::pipe();
        p.cmd("GET").arg(&key).cmd("TTL").arg(&key);
        let (value, ttl): (Option<String>, i64) = self.run(&p).await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let Ok(data) = serde_json::from_str::<SessionData>(&value) else {
            tracing::warn!("unreadable session record in Redis; treated as absent");
            return Ok(None);
        };
        let remaining = t.remaining(data.created_at, now);
        if remaining <= 0 {
            return Ok(None);
        }
        // The key's TTL says when it was last extended: extend only when that was at
        // least `touch_interval` ago, so most requests cost one read.
        if remaining - ttl >= t.touch_interval() {
            let mut p = redis::pipe();
            p.cmd("EXPIRE").arg(&key).arg(remaining).ignore();
            self.run::<()>(&p).await?;
        }
        Ok(Some(data))
    }

    async fn delete(&self, id: &str) -> Result<(), Unavailable> {
        let mut p = redis::pipe();
        p.cmd("DEL").arg(format!("{KEY_PREFIX}{id}")).ignore();
        self.run::<()>(&p).await
    }

    async fn ping(&self) -> Result<(), Unavailable> {
        self.redis.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(created_at: i64) -> SessionData {
        SessionData {
            user_id: "u".into(),
            username: "alice".into(),
            created_at,
        }
    }

    #[test]
    fn memory_sessions_slide_and_end() {
        let t = SessionTimeouts {
            idle: Duration::from_secs(100),
            absolute: Duration::from_secs(250),
            touch_interval: Duration::from_secs(10),
        };
        let m = MemorySessions::default();
        m.create("s", &data(0));
        assert!(m.lookup("s", 99, &t).is_some(), "inside the idle timeout");
        assert!(
            m.lookup("s", 198, &t).is_some(),
            "the use at 99 extended it"
        );
        assert!(
            m.lookup("s", 250, &t).is_none(),
            "the absolute timeout ends it whatever the use"
        );
        m.create("idle", &data(0));
        assert!(m.lookup("idle", 100, &t).is_none());
        m.create("gone", &data(0));
        m.delete("gone");
        assert!(m.lookup("gone", 1, &t).is_none());
    }
}
