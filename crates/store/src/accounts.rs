//! What a user controls of their own account: their login sessions (listed with where
//! they came from, ended one, all but one, or all), their password, and the account
//! itself. Laid out as `shared_sessions.rs`: the records, their `Store` methods, their
//! queries.
//!
//! Every write here that ends sessions does it in the same transaction as the change that
//! calls for it (a new password, a deleted account), and logs a revocation line per
//! session ended, as `revoke_session` does: a replica tailing the log learns of them all.

use sqlx::{Executor, Row, Transaction};

use crate::{Backend, NewRefresh, Result, Store, UserRecord};

/// A login session to open: whose, over which verified password hash, from where, and the
/// margin before a freed status-list index may be handed out again.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    /// The hash the login just checked: the session opens only while it is still the
    /// account's.
    pub verified_hash: &'a str,
    pub origin: SessionOrigin<'a>,
    pub status_margin: i64,
}

/// Where a login came from, as the server saw it; either may be unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOrigin<'a> {
    pub client_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// A live login session, as its owner sees it listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub created_at: i64,
    /// When it last refreshed; `None` until it does.
    pub refreshed_at: Option<i64>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
}

/// Which of a user's live sessions to end.
#[derive(Debug, Clone, Copy)]
pub enum SessionScope<'a> {
    /// That one, if it is the user's.
    One(&'a str),
    /// Every one but that one (the caller's).
    AllBut(&'a str),
    All,
}

impl Store {
    /// Starts a login session for `user_id` with its first refresh token and where the
    /// login came from, in one transaction, but only while the account is not deleted and
    /// its password hash is still `verified_hash` (the one the login just checked): a login
    /// racing with a password change or a deletion opens no session that outlives it.
    /// Returns the session's status-list index, or `None` when it was not opened.
    pub async fn open_session(
        &self,
        session: NewSession<'_>,
        now: i64,
        refresh: NewRefresh<'_>,
    ) -> Result<Option<i64>> {
        dispatch!(self, db => db.open_session(session, now, refresh).await)
    }

    /// The account `user_id`, unless it was deleted.
    pub async fn user_by_id(&self, user_id: &str) -> Result<Option<UserRecord>> {
        dispatch!(self, db => db.user_by_id(user_id).await)
    }

    /// `user_id`'s live sessions (not revoked, with a refresh token not yet expired at
    /// `now`), newest first.
    pub async fn user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>> {
        dispatch!(self, db => db.user_sessions(user_id, now).await)
    }

    /// Ends `user_id`'s live sessions in `scope`: their refresh tokens are deleted and a
    /// revocation lasting until `access_expiry` is logged for each. Returns their ids; a
    /// session of another user is never touched (`One` of it returns none).
    pub async fn revoke_user_sessions(
        &self,
        user_id: &str,
        scope: SessionScope<'_>,
        now: i64,
        access_expiry: i64,
    ) -> Result<Vec<String>> {
        dispatch!(self, db => db.revoke_user_sessions(user_id, scope, now, access_expiry).await)
    }

    /// Replaces `user_id`'s password hash `current` by `replacement` and ends every other
    /// live session than `keep`, in one transaction. `None` when the hash was no longer
    /// `current` (changed meanwhile) or the account is deleted: nothing changed.
    pub async fn change_password(
        &self,
        user_id: &str,
        current: &str,
        replacement: &str,
        keep: &str,
        now: i64,
        access_expiry: i64,
    ) -> Result<Option<Vec<String>>> {
        dispatch!(self, db => {
            db.change_password(user_id, current, replacement, keep, now, access_expiry).await
        })
    }

    /// Deletes account `user_id`, whose password hash must still be `current`, in one
    /// transaction: the row stays as a tombstone (`deleted_at` set, the hash emptied, the
    /// username kept, so it stays taken and the messages keep their author), every live
    /// session ends, its room memberships and shared sessions go. Returns the sessions
    /// ended, or `None` when the hash was no longer `current` or the account was gone.
    pub async fn delete_user(
        &self,
        user_id: &str,
        current: &str,
        now: i64,
        access_expiry: i64,
    ) -> Result<Option<Vec<String>>> {
        dispatch!(self, db => db.delete_user(user_id, current, now, access_expiry).await)
    }
}

impl_queries! {
    async fn open_session(
        &self,
        session: NewSession<'_>,
        now: i64,
        refresh: NewRefresh<'_>,
    ) -> Result<Option<i64>> {
        let NewSession {
            id: session_id,
            user_id,
            verified_hash,
            origin,
            status_margin,
        } = session;
        let mut tx = DB::begin(self.pool()).await?;
        // A write first, for the account's row lock (PostgreSQL) or the file's write lock
        // (SQLite): a password change or deletion running now either committed before this
        // (and the hash no longer matches) or waits for this session and then ends it.
        let hold = sqlx::query(
            "UPDATE users SET password_hash = password_hash \
             WHERE id = $1 AND password_hash = $2 AND deleted_at IS NULL",
        )
        .bind(user_id)
        .bind(verified_hash);
        if DB::rows_affected(&tx.execute(hold).await?) == 0 {
            return Ok(None);
        }
        let insert = sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, client_addr, user_agent) \
             VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''))",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        // Unknown is NULL; an empty string is bound for it, which the generic queries
        // can encode on both backends where an `Option` cannot be.
        .bind(origin.client_addr.unwrap_or(""))
        .bind(origin.user_agent.unwrap_or(""));
        tx.execute(insert).await?;
        Self::insert_refresh(&mut tx, session_id, now, refresh).await?;
        let idx = Self::assign_status_idx(&mut tx, session_id, now, status_margin).await?;
        tx.commit().await?;
        Ok(Some(idx))
    }

    async fn user_by_id(&self, user_id: &str) -> Result<Option<UserRecord>> {
        let select = sqlx::query(
            "SELECT id, username, password_hash, created_at FROM users \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(user_id);
        let row = self.pool().fetch_optional(select).await?;
        Ok(row.map(|r| UserRecord {
            id: r.get(0),
            username: r.get(1),
            password_hash: r.get(2),
            created_at: r.get(3),
        }))
    }

    async fn user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>> {
        let select = sqlx::query(
            "SELECT id, created_at, refreshed_at, client_addr, user_agent FROM sessions \
             WHERE user_id = $1 AND revoked_at IS NULL AND EXISTS \
             (SELECT 1 FROM refresh_tokens t WHERE t.session_id = sessions.id AND t.expires_at > $2) \
             ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .bind(now);
        let rows = self.pool().fetch_all(select).await?;
        Ok(rows
            .into_iter()
            .map(|r| SessionRecord {
                id: r.get(0),
                created_at: r.get(1),
                refreshed_at: r.get(2),
                client_addr: r.get(3),
                user_agent: r.get(4),
            })
            .collect())
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        scope: SessionScope<'_>,
        now: i64,
        access_expiry: i64,
    ) -> Result<Vec<String>> {
        let mut tx = DB::begin(self.pool()).await?;
        let ended = Self::end_sessions(&mut tx, user_id, scope, now, access_expiry).await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn change_password(
        &self,
        user_id: &str,
        current: &str,
        replacement: &str,
        keep: &str,
        now: i64,
        access_expiry: i64,
    ) -> Result<Option<Vec<String>>> {
        let mut tx = DB::begin(self.pool()).await?;
        let update = sqlx::query(
            "UPDATE users SET password_hash = $1 \
             WHERE id = $2 AND password_hash = $3 AND deleted_at IS NULL",
        )
        .bind(replacement)
        .bind(user_id)
        .bind(current);
        if DB::rows_affected(&tx.execute(update).await?) == 0 {
            return Ok(None);
        }
        let ended =
            Self::end_sessions(&mut tx, user_id, SessionScope::AllBut(keep), now, access_expiry)
                .await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    async fn delete_user(
        &self,
        user_id: &str,
        current: &str,
        now: i64,
        access_expiry: i64,
    ) -> Result<Option<Vec<String>>> {
        let mut tx = DB::begin(self.pool()).await?;
        let update = sqlx::query(
            "UPDATE users SET password_hash = '', deleted_at = $1 \
             WHERE id = $2 AND password_hash = $3 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .bind(current);
        if DB::rows_affected(&tx.execute(update).await?) == 0 {
            return Ok(None);
        }
        let ended =
            Self::end_sessions(&mut tx, user_id, SessionScope::All, now, access_expiry).await?;
        for statement in [
            "DELETE FROM room_members WHERE user_id = $1",
            "DELETE FROM shared_sessions WHERE user_id = $1",
        ] {
            tx.execute(sqlx::query(statement).bind(user_id)).await?;
        }
        tx.commit().await?;
        Ok(Some(ended))
    }
}

// The step the transactions above share, run on their transaction.
impl_queries! {
/// Ends `user_id`'s live sessions in `scope` on `tx`; returns their ids.
async fn end_sessions(
    tx: &mut Transaction<'static, DB>,
    user_id: &str,
    scope: SessionScope<'_>,
    now: i64,
    access_expiry: i64,
) -> Result<Vec<String>> {
    let (filter, id) = match scope {
        SessionScope::One(id) => (" AND id = $4", id),
        SessionScope::AllBut(id) => (" AND id <> $4", id),
        // Never a session id (they are UUIDs), so `<>` keeps them all.
        SessionScope::All => (" AND id <> $4", ""),
    };
    let revoke = format!(
        "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL \
         AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = sessions.id \
         AND t.expires_at > $3){filter} RETURNING id"
    );
    let revoke = sqlx::query(&revoke)
        .bind(now)
        .bind(user_id)
        .bind(now)
        .bind(id);
    let ended: Vec<String> = tx
        .fetch_all(revoke)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    if !ended.is_empty() {
        Self::log_revoked(tx, &ended, now, access_expiry).await?;
    }
    Ok(ended)
}
}
