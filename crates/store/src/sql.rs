//! The store's queries, written once and compiled for each backend.
//!
//! [`Db`] is generic over the sqlx database; the bounds of `impl_queries!` (in `lib.rs`,
//! shared with `chat.rs` and `shared_sessions.rs`) say which Rust types the queries bind
//! and read, and both SQLite and PostgreSQL meet them. What differs between the two
//! comes from [`Dialect`](crate::dialect::Dialect).
//!
//! Queries are run through the executor's methods (`conn.execute(query)`), never the
//! query's own (`query.execute(conn)`). The latter are `async fn`s generic over the
//! executor's lifetime, and rustc cannot prove their futures `Send` once this generic code
//! is instantiated ("implementation of `Executor` is not general enough", sqlx#3150); the
//! executor's methods return boxed futures that are `Send` by their signature. Identity
//! and the server need every store future to be `Send`; `tests/it/store.rs` checks it.

use sqlx::{Executor, Pool, Row, Transaction};

use crate::dialect::Lock;
use crate::migrate;
use crate::{
    Event, NewRefresh, RefreshLimit, Result, Revocation, Rotation, SessionOwner, SigningKeyRecord,
    StoreError, UserRecord,
};

/// A pool of one backend, with the store's operations on it.
#[derive(Debug)]
pub(crate) struct Db<DB: sqlx::Database> {
    pool: Pool<DB>,
}

// Not derived: that would ask for `DB: Clone`, which the database marker types are not.
impl<DB: sqlx::Database> Clone for Db<DB> {
    fn clone(&self) -> Self {
        Db {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: sqlx::Database> Db<DB> {
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        Db { pool }
    }

    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

impl_queries! {
    pub(crate) async fn migrate(&self) -> Result<usize> {
        migrate::run(&self.pool).await
    }

    pub(crate) async fn pending_migrations(&self) -> Result<usize> {
        migrate::pending(&self.pool).await
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        self.pool.execute(sqlx::query("SELECT 1")).await?;
        Ok(())
    }

    pub(crate) async fn create_user(&self, user: &UserRecord) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.created_at);
        self.pool
            .execute(insert)
            .await
            .map_err(|e| conflict_on(e, "users_username_key"))?;
        Ok(())
    }

    pub(crate) async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        let select = sqlx::query(
            "SELECT id, username, password_hash, created_at FROM users \
             WHERE username = $1 AND deleted_at IS NULL",
        )
        .bind(username);
        let row = self.pool.fetch_optional(select).await?;
        Ok(row.map(|r| UserRecord {
            id: r.get(0),
            username: r.get(1),
            password_hash: r.get(2),
            created_at: r.get(3),
        }))
    }

    pub(crate) async fn replace_password_hash(
        &self,
        user_id: &str,
        current: &str,
        replacement: &str,
    ) -> Result<bool> {
        let update =
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
                .bind(replacement)
                .bind(user_id)
                .bind(current);
        Ok(DB::rows_affected(&self.pool.execute(update).await?) == 1)
    }

    pub(crate) async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        now: i64,
        refresh: NewRefresh<'_>,
        status_margin: i64,
    ) -> Result<i64> {
        let mut tx = DB::begin(&self.pool).await?;
        let insert =
            sqlx::query("INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)")
                .bind(session_id)
                .bind(user_id)
                .bind(now);
        tx.execute(insert).await?;
        Self::insert_refresh(&mut tx, session_id, now, refresh).await?;
        let idx = Self::assign_status_idx(&mut tx, session_id, now, status_margin).await?;
        tx.commit().await?;
        Ok(idx)
    }

    pub(crate) async fn rotate_refresh(
        &self,
        presented: &[u8],
        successor: NewRefresh<'_>,
        now: i64,
        grace: i64,
        access_expiry: i64,
        limit: Option<RefreshLimit>,
    ) -> Result<Rotation> {
        let mut tx = DB::begin(&self.pool).await?;
        // The write comes first. On SQLite the transaction then holds the write lock from
        // its first statement: a read-then-write transaction can deadlock against another
        // replica doing the same. On PostgreSQL (READ COMMITTED) a racing UPDATE of the
        // same token waits for this one's row lock, then re-checks `spent_at IS NULL`
        // against the committed row and affects nothing; its SELECT below, a statement
        // with a fresh snapshot, sees this spending. Either way exactly one caller rotates.
        let spend = sqlx::query(
            "UPDATE refresh_tokens SET spent_at = $1, successor_hash = $2 \
             WHERE hash = $3 AND spent_at IS NULL AND expires_at > $1 \
             AND session_id IN (SELECT id FROM sessions WHERE revoked_at IS NULL)",
        )
        .bind(now)
        .bind(successor.hash)
        .bind(presented);
        let spent = DB::rows_affected(&tx.execute(spend).await?);

        let select = sqlx::query(
            "SELECT t.session_id, t.expires_at, t.spent_at, s.revoked_at, u.id, u.username, \
             s.status_idx FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             JOIN users u ON u.id = s.user_id WHERE t.hash = $1",
        )
        .bind(presented);
        let Some(row) = tx.fetch_optional(select).await? else {
            return Ok(Rotation::Unknown);
        };
        let owner = SessionOwner {
            session_id: row.get(0),
            user_id: row.get(4),
            username: row.get(5),
            status_idx: row.get(6),
        };
        let expires_at: i64 = row.get(1);
        let spent_at: Option<i64> = row.get(2);
        let revoked_at: Option<i64> = row.get(3);

        if spent == 1 {
            if let Some(wait) = Self::take_refresh(&mut tx, &owner.session_id, now, limit).await? {
                // Dropping the transaction rolls the spending back: the token stays live.
                return Ok(Rotation::Throttled { retry_after: wait });
            }
            Self::insert_refresh(&mut tx, &owner.session_id, now, successor).await?;
            // What the owner sees in their list of sessions as "last refreshed".
            let refreshed = sqlx::query("UPDATE sessions SET refreshed_at = $1 WHERE id = $2")
                .bind(now)
                .bind(owner.session_id.as_str());
            tx.execute(refreshed).await?;
            tx.commit().await?;
            return Ok(Rotation::Rotated(owner));
        }
        if revoked_at.is_some() {
            return Ok(Rotation::SessionRevoked);
        }
        match spent_at {
            None if expires_at <= now => Ok(Rotation::Expired),
            // Unspent, unexpired and unrevoked, yet the update missed it: impossible
            // inside one transaction, so treat it as unknown rather than guess.
            None => Ok(Rotation::Unknown),
            Some(at) if now - at <= grace => {
                // A replay mints access tokens like a rotation does, so it is metered
                // like one: the grace window is no way around the session's limit.
                if let Some(wait) = Self::take_refresh(&mut tx, &owner.session_id, now, limit).await? {
                    return Ok(Rotation::Throttled { retry_after: wait });
                }
                tx.commit().await?;
                Ok(Rotation::Replayed(owner))
            }
            Some(_) => {
                Self::revoke_in(&mut tx, &owner.session_id, now, access_expiry).await?;
                tx.commit().await?;
                Ok(Rotation::Reused {
                    session_id: owner.session_id,
                })
            }
        }
    }

    pub(crate) async fn refresh_token_session(&self, hash: &[u8]) -> Result<Option<String>> {
        let select =
            sqlx::query("SELECT session_id FROM refresh_tokens WHERE hash = $1").bind(hash);
        Ok(self.pool.fetch_optional(select).await?.map(|r| r.get(0)))
    }

    pub(crate) async fn session_rows(&self) -> Result<(i64, i64)> {
        let sessions = self
            .pool
            .fetch_one(sqlx::query("SELECT COUNT(*) FROM sessions"))
            .await?
            .get(0);
        let tokens = self
            .pool
            .fetch_one(sqlx::query("SELECT COUNT(*) FROM refresh_tokens"))
            .await?
            .get(0);
        Ok((sessions, tokens))
    }

    pub(crate) async fn revoke_session(
        &self,
        session_id: &str,
        now: i64,
        access_expiry: i64,
    ) -> Result<bool> {
        let mut tx = DB::begin(&self.pool).await?;
        let revoked = Self::revoke_in(&mut tx, session_id, now, access_expiry).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    pub(crate) async fn revocations_since(
        &self,
        after_id: i64,
        now: i64,
    ) -> Result<Vec<Revocation>> {
        // One page with no limit: the same query, so the two readers of the log cannot
        // come to disagree on what still matters.
        self.revocation_page(after_id, now, i64::MAX).await
    }

    pub(crate) async fn revocation_page(
        &self,
        after_id: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Revocation>> {
        let select = sqlx::query(
            "SELECT id, session_id, expires_at FROM revocations \
             WHERE id > $1 AND expires_at >= $2 ORDER BY id LIMIT $3",
        )
        .bind(after_id)
        .bind(now)
        .bind(limit);
        let rows = self.pool.fetch_all(select).await?;
        Ok(rows
            .into_iter()
            .map(|r| Revocation {
                id: r.get(0),
                session_id: r.get(1),
                expires_at: r.get(2),
            })
            .collect())
    }

    pub(crate) async fn revocation_bounds(&self) -> Result<(Option<i64>, i64)> {
        let row = self
            .pool
            .fetch_one(sqlx::query("SELECT MIN(id), MAX(id) FROM revocations"))
            .await?;
        Ok((
            row.get::<Option<i64>, _>(0),
            row.get::<Option<i64>, _>(1).unwrap_or(0),
        ))
    }

    pub(crate) async fn revoke_signing_key(
        &self,
        kid: &str,
        now: i64,
        access_expiry: i64,
    ) -> Result<()> {
        let mut tx = DB::begin(&self.pool).await?;
        let delete = sqlx::query("DELETE FROM signing_keys WHERE kid = $1").bind(kid);
        tx.execute(delete).await?;
        DB::lock(&mut tx, Lock::Revocations).await?;
        let subject = format!("{}{kid}", crate::KEY_SUBJECT_PREFIX);
        let log = sqlx::query(
            "INSERT INTO revocations (session_id, revoked_at, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(subject.as_str())
        .bind(now)
        .bind(access_expiry);
        tx.execute(log).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn last_revocation_id(&self) -> Result<i64> {
        let row = self
            .pool
            .fetch_one(sqlx::query("SELECT MAX(id) FROM revocations"))
            .await?;
        Ok(row.get::<Option<i64>, _>(0).unwrap_or(0))
    }

    pub(crate) async fn prune(&self, now: i64) -> Result<u64> {
        let mut tx = DB::begin(&self.pool).await?;
        let revocations = sqlx::query("DELETE FROM revocations WHERE expires_at < $1").bind(now);
        let revocations = DB::rows_affected(&tx.execute(revocations).await?);
        let tokens = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1").bind(now);
        let tokens = DB::rows_affected(&tx.execute(tokens).await?);
        // Sessions are created with their first token in one transaction, so one without
        // any is over: logged out or revoked (which delete its tokens), or expired.
        // Their status-list indices are freed as of the last second one of their access
        // tokens can pass: a revoked session's log line says when; an expired one's
        // last access token was issued with its last refresh token, which has now
        // expired too, a refresh TTL later, so its tokens are long dead.
        let free = sqlx::query(
            "INSERT INTO status_free (idx, free_at) \
             SELECT status_idx, COALESCE((SELECT MAX(r.expires_at) FROM revocations r \
             WHERE r.session_id = sessions.id), $1) FROM sessions \
             WHERE status_idx IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM refresh_tokens t WHERE t.session_id = sessions.id)",
        )
        .bind(now);
        tx.execute(free).await?;
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE NOT EXISTS \
             (SELECT 1 FROM refresh_tokens t WHERE t.session_id = sessions.id)",
        );
        let sessions = DB::rows_affected(&tx.execute(sessions).await?);
        tx.commit().await?;
        Ok(revocations + tokens + sessions)
    }

    pub(crate) async fn status_list(&self, now: i64) -> Result<(i64, Vec<i64>)> {
        let next = self
            .pool
            .fetch_one(sqlx::query("SELECT next_idx FROM status_list"))
            .await?
            .get(0);
        let select = sqlx::query(
            "SELECT DISTINCT status_idx FROM revocations \
             WHERE expires_at >= $1 AND status_idx IS NOT NULL ORDER BY status_idx",
        )
        .bind(now);
        let rows = self.pool.fetch_all(select).await?;
        Ok((next, rows.into_iter().map(|r| r.get(0)).collect()))
    }

    pub(crate) async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let select = sqlx::query(
            "SELECT kid, secret, public, created_at, sign_from FROM signing_keys \
             ORDER BY sign_from, created_at, kid",
        );
        let rows = self.pool.fetch_all(select).await?;
        Ok(rows
            .into_iter()
            .map(|r| SigningKeyRecord {
                kid: r.get(0),
                secret: r.get(1),
                public: r.get(2),
                created_at: r.get(3),
                sign_from: r.get(4),
            })
            .collect())
    }

    pub(crate) async fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<bool> {
        // NOT EXISTS alone is no guard on PostgreSQL: two READ COMMITTED transactions can
        // both see the empty table and both insert. With the lock, the second waits for
        // the first to commit, and its statement's snapshot then sees the first key.
        let mut tx = DB::begin_locked(&self.pool, Lock::SigningKeys).await?;
        let insert = sqlx::query(
            "INSERT INTO signing_keys (kid, secret, public, created_at, sign_from) \
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .bind(key.kid.as_str())
        .bind(key.secret.as_slice())
        .bind(key.public.as_slice())
        .bind(key.created_at)
        .bind(key.sign_from);
        let inserted = DB::rows_affected(&tx.execute(insert).await?);
        tx.commit().await?;
        Ok(inserted == 1)
    }

    pub(crate) async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO signing_keys (kid, secret, public, created_at, sign_from) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.kid.as_str())
        .bind(key.secret.as_slice())
        .bind(key.public.as_slice())
        .bind(key.created_at)
        .bind(key.sign_from);
        self.pool.execute(insert).await?;
        Ok(())
    }

    pub(crate) async fn delete_signing_key(&self, kid: &str) -> Result<()> {
        let delete = sqlx::query("DELETE FROM signing_keys WHERE kid = $1").bind(kid);
        self.pool.execute(delete).await?;
        Ok(())
    }

    pub(crate) async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        // A racing insert of the same name waits for the first to commit and then does
        // nothing, on both backends, so the SELECT that follows always finds the winner.
        let insert = sqlx::query(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate);
        self.pool.execute(insert).await?;
        let select = sqlx::query("SELECT value FROM secrets WHERE name = $1").bind(name);
        Ok(self.pool.fetch_one(select).await?.get(0))
    }

    pub(crate) async fn append_event(&self, topic: &str, payload: &[u8], now: i64) -> Result<i64> {
        // Readers tail the log by id; see `Lock` for why writers queue.
        let mut tx = DB::begin_locked(&self.pool, Lock::Events).await?;
        let insert = sqlx::query(
            "INSERT INTO events (topic, payload, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(topic)
        .bind(payload)
        .bind(now);
        let id = tx.fetch_one(insert).await?.get(0);
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn events_since(&self, after_id: i64, limit: i64) -> Result<Vec<Event>> {
        let select = sqlx::query(
            "SELECT id, topic, payload, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit);
        let rows = self.pool.fetch_all(select).await?;
        Ok(rows
            .into_iter()
            .map(|r| Event {
                id: r.get(0),
                topic: r.get(1),
                payload: r.get(2),
                created_at: r.get(3),
            })
            .collect())
    }

    pub(crate) async fn last_event_id(&self) -> Result<i64> {
        let row = self
            .pool
            .fetch_one(sqlx::query("SELECT MAX(id) FROM events"))
            .await?;
        Ok(row.get::<Option<i64>, _>(0).unwrap_or(0))
    }

    pub(crate) async fn prune_events(&self, before: i64) -> Result<u64> {
        let delete = sqlx::query("DELETE FROM events WHERE created_at < $1").bind(before);
        Ok(DB::rows_affected(&self.pool.execute(delete).await?))
    }
}

/// Maps a unique violation of `constraint` to [`StoreError::Conflict`]. PostgreSQL names
/// the constraint, so only that one maps; SQLite names none, so there any unique
/// violation does, and callers use this only where one unique key can be broken.
fn conflict_on(e: sqlx::Error, constraint: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(db)
            if db.is_unique_violation() && db.constraint().is_none_or(|c| c == constraint) =>
        {
            StoreError::Conflict { constraint }
        }
        _ => e.into(),
    }
}

// The steps a transaction above shares, run on that transaction.
impl_queries! {
pub(crate) async fn insert_refresh(
    tx: &mut Transaction<'static, DB>,
    session_id: &str,
    now: i64,
    refresh: NewRefresh<'_>,
) -> Result<()> {
    let insert = sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(refresh.hash)
    .bind(session_id)
    .bind(now)
    .bind(refresh.expires_at);
    tx.execute(insert).await?;
    Ok(())
}

/// Gives the new session `session_id` its token status list index, in the login's
/// transaction (which has already written the session row).
pub(crate) async fn assign_status_idx(
    tx: &mut Transaction<'static, DB>,
    session_id: &str,
    now: i64,
    status_margin: i64,
) -> Result<i64> {
    // The session row is written first, so on SQLite the transaction holds the write
    // lock before anything reads. A freed index is taken before a new one, the lowest
    // first, so the list stays as short as the sessions alive at once. On PostgreSQL
    // two logins racing for one freed index queue on its row; the loser deletes
    // nothing and takes a new index instead.
    let reuse = sqlx::query(
        "DELETE FROM status_free WHERE idx = \
         (SELECT idx FROM status_free WHERE free_at < $1 ORDER BY idx LIMIT 1) RETURNING idx",
    )
    .bind(now.saturating_sub(status_margin));
    let idx: i64 = match tx.fetch_optional(reuse).await? {
        Some(row) => row.get(0),
        None => {
            let next = sqlx::query(
                "UPDATE status_list SET next_idx = next_idx + 1 RETURNING next_idx - 1",
            );
            tx.fetch_one(next).await?.get(0)
        }
    };
    let assign = sqlx::query("UPDATE sessions SET status_idx = $1 WHERE id = $2")
        .bind(idx)
        .bind(session_id);
    tx.execute(assign).await?;
    Ok(idx)
}

/// Takes one refresh from session `session_id`'s meter, or returns how many seconds until
/// it has room. The check and the take are one statement on the session's row, so
/// concurrent refreshes of one session queue on its row lock and each sees the last.
async fn take_refresh(
    tx: &mut Transaction<'static, DB>,
    session_id: &str,
    now: i64,
    limit: Option<RefreshLimit>,
) -> Result<Option<i64>> {
    let Some(limit) = limit else {
        return Ok(None);
    };
    let take = sqlx::query(
        "UPDATE sessions SET refresh_tat = \
         (CASE WHEN refresh_tat > $1 THEN refresh_tat ELSE $1 END) + $2 \
         WHERE id = $3 AND (CASE WHEN refresh_tat > $1 THEN refresh_tat ELSE $1 END) + $2 - $1 <= $4",
    )
    .bind(now)
    .bind(limit.interval)
    .bind(session_id)
    .bind(limit.tolerance);
    if DB::rows_affected(&tx.execute(take).await?) == 1 {
        return Ok(None);
    }
    let select = sqlx::query("SELECT refresh_tat FROM sessions WHERE id = $1").bind(session_id);
    let tat: i64 = tx.fetch_one(select).await?.get(0);
    Ok(Some(
        (tat.max(now) + limit.interval - limit.tolerance - now).max(1),
    ))
}

async fn revoke_in(
    tx: &mut Transaction<'static, DB>,
    session_id: &str,
    now: i64,
    access_expiry: i64,
) -> Result<bool> {
    let revoke =
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(session_id);
    if DB::rows_affected(&tx.execute(revoke).await?) == 0 {
        return Ok(false);
    }
    Self::log_revoked(tx, &[session_id], now, access_expiry).await?;
    Ok(true)
}

/// The rest of a revocation, for sessions this transaction has just marked revoked:
/// their refresh tokens deleted and a line each in the revocation log. Every revocation
/// (`revoke_in`, and ending a user's sessions by scope in `accounts.rs`) goes through
/// here, so the log's lock and the status index are taken one way.
pub(crate) async fn log_revoked<S: AsRef<str> + Sync>(
    tx: &mut Transaction<'static, DB>,
    session_ids: &[S],
    now: i64,
    access_expiry: i64,
) -> Result<()> {
    for session_id in session_ids {
        let delete = sqlx::query("DELETE FROM refresh_tokens WHERE session_id = $1")
            .bind(session_id.as_ref());
        tx.execute(delete).await?;
    }
    // Readers tail the log by id; see `Lock` for why writers queue. The lock comes last,
    // after this transaction's row locks, so it is held only for the inserts and commit.
    DB::lock(tx, Lock::Revocations).await?;
    for session_id in session_ids {
        // The session's status-list index goes with the line: the bit is set while the
        // line lives, which outlasts the session row.
        let log = sqlx::query(
            "INSERT INTO revocations (session_id, revoked_at, expires_at, status_idx) \
             SELECT $1, $2, $3, status_idx FROM sessions WHERE id = $1",
        )
        .bind(session_id.as_ref())
        .bind(now)
        .bind(access_expiry);
        tx.execute(log).await?;
    }
    Ok(())
}
}
