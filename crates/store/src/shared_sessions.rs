//! Sessions of the `shared` strategy, in the SQL store (used when there is no Redis).

use sqlx::{Executor, Row};

use crate::{Backend, Result, Store};

/// A shared session as stored. `id` is the hash of what the client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSession {
    pub id: String,
    pub user_id: String,
    pub username: String,
    pub created_at: i64,
    pub last_seen: i64,
}

impl Store {
    pub async fn create_shared_session(&self, s: &SharedSession) -> Result<()> {
        dispatch!(self, db => db.create_shared_session(s).await)
    }

    pub async fn shared_session(&self, id: &str) -> Result<Option<SharedSession>> {
        dispatch!(self, db => db.shared_session(id).await)
    }

    /// Marks the session used at `now` (it never moves backwards).
    pub async fn touch_shared_session(&self, id: &str, now: i64) -> Result<()> {
        dispatch!(self, db => db.touch_shared_session(id, now).await)
    }

    /// Returns whether there was such a session.
    pub async fn delete_shared_session(&self, id: &str) -> Result<bool> {
        dispatch!(self, db => db.delete_shared_session(id).await)
    }

    /// Deletes sessions last seen before `idle_before` or created before `created_before`.
    pub async fn prune_shared_sessions(
        &self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<u64> {
        dispatch!(self, db => db.prune_shared_sessions(idle_before, created_before).await)
    }
}

impl_queries! {
    async fn create_shared_session(&self, s: &SharedSession) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO shared_sessions (id, user_id, username, created_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.id.as_str())
        .bind(s.user_id.as_str())
        .bind(s.username.as_str())
        .bind(s.created_at)
        .bind(s.last_seen);
        self.pool().execute(insert).await?;
        Ok(())
    }

    async fn shared_session(&self, id: &str) -> Result<Option<SharedSession>> {
        let select = sqlx::query(
            "SELECT id, user_id, username, created_at, last_seen FROM shared_sessions WHERE id = $1",
        )
        .bind(id);
        let row = self.pool().fetch_optional(select).await?;
        Ok(row.map(|r| SharedSession {
            id: r.get(0),
            user_id: r.get(1),
            username: r.get(2),
            created_at: r.get(3),
            last_seen: r.get(4),
        }))
    }

    async fn touch_shared_session(&self, id: &str, now: i64) -> Result<()> {
        let touch = sqlx::query(
            "UPDATE shared_sessions SET last_seen = $1 WHERE id = $2 AND last_seen < $1",
        )
        .bind(now)
        .bind(id);
        self.pool().execute(touch).await?;
        Ok(())
    }

    async fn delete_shared_session(&self, id: &str) -> Result<bool> {
        let delete = sqlx::query("DELETE FROM shared_sessions WHERE id = $1").bind(id);
        Ok(DB::rows_affected(&self.pool().execute(delete).await?) == 1)
    }

    async fn prune_shared_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64> {
        let delete =
            sqlx::query("DELETE FROM shared_sessions WHERE last_seen <= $1 OR created_at <= $2")
                .bind(idle_before)
                .bind(created_before);
        Ok(DB::rows_affected(&self.pool().execute(delete).await?))
    }
}
