//! What a user controls of their own account, under the `token` strategy: their login
//! sessions (listed, ended one by one, all but the caller's, or all), their password, and
//! the account itself.
//!
//! Every operation that ends sessions is a revocation like logout's: the store ends them
//! (refresh tokens deleted, a revocation line logged per session) in the same transaction
//! as the change that calls for it, then this replica refuses their access tokens at once
//! and the bus tells the others ([`Auth::revoked_here`]). Each returns the ids it ended, so
//! the transport can wait for other replicas to confirm them.
//!
//! The stateful strategies keep sessions under the hash of their id with no index by user
//! (in Redis, or in this process), so "every other session of this user" cannot be found
//! there; rather than pretend, every operation here answers
//! [`AuthError::AccountsNotSupported`] under them. They exist to be compared, not used.

use std::net::IpAddr;

use herd_store::{SessionScope, UserRecord};

use super::{Auth, AuthError, Principal};
use crate::domain::Password;
use crate::sessions::Strategy;

/// A user agent is kept to this many characters: enough to tell browsers apart, and a
/// client cannot make the sessions table hold more.
pub const USER_AGENT_MAX: usize = 256;

/// `raw` as kept with a session: at most [`USER_AGENT_MAX`] characters, control
/// characters dropped.
pub(super) fn user_agent(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(USER_AGENT_MAX)
        .collect()
}

/// One of the caller's live sessions, as listed to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub created_at: i64,
    /// When it last refreshed; `None` until it does.
    pub refreshed_at: Option<i64>,
    /// The client address its login came from, as the replica saw it (behind trusted
    /// proxies, the forwarded one).
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    /// Whether it is the session of the credential that asked.
    pub current: bool,
}

impl Auth {
    /// The caller's live sessions, newest first, the caller's own marked.
    pub async fn sessions(&self, principal: &Principal) -> Result<Vec<SessionInfo>, AuthError> {
        self.require_tokens()?;
        let current = principal.session_id();
        let records = self
            .inner
            .store
            .user_sessions(principal.user_id(), self.now())
            .await?;
        Ok(records
            .into_iter()
            .map(|r| SessionInfo {
                current: r.id == current,
                id: r.id,
                created_at: r.created_at,
                refreshed_at: r.refreshed_at,
                client_addr: r.client_addr,
                user_agent: r.user_agent,
            })
            .collect())
    }

    /// Ends the caller's session `session_id` (the caller's own included). A session that
    /// is not the caller's, or not live, is [`AuthError::NoSuchSession`] and is left alone:
    /// nobody learns whether another user's session id exists.
    pub async fn end_session(
        &self,
        principal: &Principal,
        session_id: &str,
    ) -> Result<Vec<String>, AuthError> {
        self.require_tokens()?;
        let ended = self
            .end_sessions(principal, SessionScope::One(session_id))
            .await?;
        if ended.is_empty() {
            return Err(AuthError::NoSuchSession);
        }
        Ok(ended)
    }

    /// Ends every live session of the caller's but the one asking. Returns their ids.
    pub async fn end_other_sessions(
        &self,
        principal: &Principal,
    ) -> Result<Vec<String>, AuthError> {
        self.require_tokens()?;
        self.end_sessions(principal, SessionScope::AllBut(principal.session_id()))
            .await
    }

    /// Ends every live session of the caller's, the one asking included.
    pub async fn end_all_sessions(&self, principal: &Principal) -> Result<Vec<String>, AuthError> {
        self.require_tokens()?;
        self.end_sessions(principal, SessionScope::All).await
    }

    /// Changes the caller's password, given the current one, and ends every other live
    /// session of theirs; the caller's stays. The current password is checked as a login
    /// is (metered by the same throttle, so this is no way to guess it faster than
    /// logging in). Returns the sessions ended.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: &str,
        replacement: &Password,
        client: Option<IpAddr>,
        device: Option<&str>,
    ) -> Result<Vec<String>, AuthError> {
        self.require_tokens()?;
        let user = self
            .confirm_password(principal, current, client, device)
            .await?;
        let fresh = self
            .inner
            .hasher
            .hash(replacement)
            .await
            .map_err(|e| self.hash_error(e))?;
        let now = self.now();
        let until = self.revocation_expiry(now);
        // `None`: the password changed (or the account went) since it was checked; the
        // password given is then no longer the current one.
        let ended = self
            .inner
            .store
            .change_password(
                &user.id,
                &user.password_hash,
                &fresh,
                principal.session_id(),
                now,
                until,
            )
            .await?
            .ok_or(AuthError::WrongPassword)?;
        for session_id in &ended {
            self.revoked_here(session_id, until);
        }
        tracing::info!(user_id = %user.id, ended = ended.len(), "password changed");
        Ok(ended)
    }

    /// Deletes the caller's account, given its password: every session ends, the account
    /// stays as a tombstone (its username taken for good, its messages kept with the
    /// author shown as deleted) that can never log in. Returns the sessions ended.
    pub async fn delete_account(
        &self,
        principal: &Principal,
        password: &str,
        client: Option<IpAddr>,
        device: Option<&str>,
    ) -> Result<Vec<String>, AuthError> {
        self.require_tokens()?;
        let user = self
            .confirm_password(principal, password, client, device)
            .await?;
        let now = self.now();
        let until = self.revocation_expiry(now);
        let ended = self
            .inner
            .store
            .delete_user(&user.id, &user.password_hash, now, until)
            .await?
            .ok_or(AuthError::WrongPassword)?;
        for session_id in &ended {
            self.revoked_here(session_id, until);
        }
        tracing::info!(user_id = %user.id, ended = ended.len(), "account deleted");
        Ok(ended)
    }

    fn require_tokens(&self) -> Result<(), AuthError> {
        match self.inner.config.strategy {
            Strategy::Token => Ok(()),
            other => Err(AuthError::AccountsNotSupported(other.as_str())),
        }
    }

    async fn end_sessions(
        &self,
        principal: &Principal,
        scope: SessionScope<'_>,
    ) -> Result<Vec<String>, AuthError> {
        let now = self.now();
        let until = self.revocation_expiry(now);
        let ended = self
            .inner
            .store
            .revoke_user_sessions(principal.user_id(), scope, now, until)
            .await?;
        for session_id in &ended {
            self.revoked_here(session_id, until);
        }
        Ok(ended)
    }

    /// Checks that `password` is the caller's, as a login checks it: the same throttle
    /// (taken before the hash is checked, forgiven on success) and the same cost whether
    /// or not the account is still there.
    async fn confirm_password(
        &self,
        principal: &Principal,
        password: &str,
        client: Option<IpAddr>,
        device: Option<&str>,
    ) -> Result<UserRecord, AuthError> {
        let lookup = self.inner.store.user_by_id(principal.user_id());
        self.check_password(
            principal.username(),
            &Password::attempt(password),
            client,
            device,
            self.now(),
            lookup,
        )
        .await?
        .ok_or(AuthError::WrongPassword)
    }
}
