//! herd's persistence, behind one interface.
//!
//! The store keeps what every replica must share: accounts, login sessions, refresh-token
//! hashes, the signing-key ring, the revocation log, the event log, store-wide secrets,
//! and chat rooms with their members and messages. It knows rows, not meanings: a
//! refresh token is an opaque hash here, a signing key two byte strings. It never reads a
//! clock either; callers pass `now` in unix seconds, so time-dependent behaviour is
//! decided (and tested) in one place, the identity crate.
//!
//! Two backends sit behind the one [`Store`]: SQLite (`sqlite://PATH`), embedded, for one
//! machine, and PostgreSQL (`postgres://...` or `postgresql://...`) for replicas spread
//! over several. The URL picks one; nothing else in herd knows which it got.
//!
//! Layout:
//! - `lib.rs`: [`Store`], its records and [`StoreError`]; each `Store` method hands the
//!   call to the backend the URL chose.
//! - `sql.rs`: every query, written once as code generic over the sqlx database and
//!   compiled for each backend. SQL is written with `$N` placeholders and `ON CONFLICT`
//!   so that one text serves both.
//! - `dialect.rs`: the little that differs: how transactions begin, how writers that must
//!   queue are serialised (an advisory lock on PostgreSQL, the file lock on SQLite), and
//!   the migration bookkeeping statements.
//! - `shared_sessions.rs`: sessions of identity's `shared` strategy, for when there is
//!   no Redis: the record, its `Store` methods and their queries.
//! - `accounts.rs`: what a user controls of their account: their sessions listed and
//!   ended, their password changed, the account deleted (kept as a tombstone).
//! - `chat.rs`: rooms, membership and messages, numbered per room without gaps: the
//!   records, their `Store` methods and their queries, laid out as `shared_sessions.rs`.
//! - `migrate.rs`: the embedded migrations and the runner that applies them.
//! - `databases.rs`: whole PostgreSQL databases created and dropped on a server
//!   (`herd lab`'s scenarios); `testing.rs` gives tests one each with them.
//! - `migrations/{sqlite,postgres}/NNNN_name.sql`: the schema, one file a version and
//!   backend, with the same tables and constraint names on both.

/// Calls the same method on whichever backend the store has. Each arm is compiled for
/// its own database type, which is what lets `sql.rs` be written once. Defined before the
/// modules so that `shared_sessions.rs` and `chat.rs` can use it too.
macro_rules! dispatch {
    ($store:expr, $db:ident => $call:expr) => {
        match &$store.backend {
            Backend::Sqlite($db) => $call,
            Backend::Postgres($db) => $call,
        }
    };
}

/// `impl<DB> Db<DB>` with the bounds every query needs, said once: which Rust types the
/// queries bind (`Encode`) and read (`Decode`), reading columns by index, and running
/// queries through a connection, a transaction or the pool. SQLite and PostgreSQL meet
/// them all. A macro rather than a trait with these bounds as its where-clause: Rust
/// does not carry such bounds to the trait's users (only bounds on `Self` are implied),
/// so every generic function would still have to repeat them.
macro_rules! impl_queries {
    ($($body:tt)*) => {
        impl<DB> $crate::sql::Db<DB>
        where
            DB: $crate::dialect::Dialect,
            for<'c> &'c mut DB::Connection: ::sqlx::Executor<'c, Database = DB>,
            for<'q> DB::Arguments<'q>: ::sqlx::IntoArguments<'q, DB>,
            usize: ::sqlx::ColumnIndex<DB::Row>,
            i64: ::sqlx::Type<DB>
                + for<'q> ::sqlx::Encode<'q, DB>
                + for<'r> ::sqlx::Decode<'r, DB>,
            String: ::sqlx::Type<DB> + for<'r> ::sqlx::Decode<'r, DB>,
            Vec<u8>: ::sqlx::Type<DB> + for<'r> ::sqlx::Decode<'r, DB>,
            for<'q> &'q str: ::sqlx::Type<DB> + ::sqlx::Encode<'q, DB>,
            for<'q> &'q [u8]: ::sqlx::Type<DB> + ::sqlx::Encode<'q, DB>,
        {
            $($body)*
        }
    };
}

mod accounts;
mod chat;
mod databases;
mod dialect;
mod migrate;
mod shared_sessions;
mod sql;
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePoolOptions,
    SqliteSynchronous,
};

pub use accounts::{NewSession, SessionOrigin, SessionRecord, SessionScope};
pub use chat::{Batched, MessageRecord, NewMessage, Posted, RoomRecord};
pub use databases::{create_postgres_database, drop_postgres_database, with_database};
pub use migrate::{Migration, MIGRATIONS};
pub use shared_sessions::SharedSession;
use sql::Db;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend this build supports, or is malformed. The URL is kept
    /// with any password replaced by `***`, since this error ends up in logs.
    #[error(
        "unsupported database URL {0:?}: expected sqlite://PATH or postgres://USER@HOST/DATABASE"
    )]
    UnsupportedUrl(String),
    /// A unique constraint refused the write; the name is the constraint's.
    #[error("conflict on {constraint}")]
    Conflict { constraint: &'static str },
    /// The room the call names does not exist.
    #[error("no such room")]
    NotFound,
    /// The schema is newer than this binary knows.
    #[error("the database schema is at version {found}, newer than this herd ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    /// A database name PostgreSQL would not take as written (empty, or longer than its
    /// 63-byte identifiers).
    #[error("{0:?} is not a usable database name")]
    InvalidDatabaseName(String),
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the connection a call ran on was lost under it (the server ended it:
    /// a restart, `pg_terminate_backend`; or the socket broke), rather than the database
    /// refusing the call: a fresh connection may well succeed. A pool that timed out is
    /// not this (another try would wait as long again).
    pub fn is_connection_lost(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed) => true,
            StoreError::Database(sqlx::Error::Database(e)) => e
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|e| e.code().starts_with("08") || e.code() == "57P01"),
            _ => false,
        }
    }

    /// True when the failure is about reaching the database rather than the request.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            // The codes are read per backend: PostgreSQL's SQLSTATEs are strings that can
            // look numeric ("42501" has 5 in its low byte) and would fool SQLite's test.
            StoreError::Database(sqlx::Error::Database(e)) => {
                if let Some(e) = e.try_downcast_ref::<SqliteError>() {
                    // BUSY and LOCKED (and their extended codes, which keep the primary
                    // code in the low byte): another writer held the file past the busy
                    // timeout.
                    e.code()
                        .and_then(|c| c.parse::<i32>().ok())
                        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
                } else if let Some(e) = e.try_downcast_ref::<PgDatabaseError>() {
                    // Class 08 is "connection exception"; 57P01-57P03 are the server
                    // shutting down or still starting; 53300 is "too many connections".
                    let code = e.code();
                    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
                } else {
                    false
                }
            }
            _ => false,
        }
    }
}

impl StoreError {
    /// True when the database refused a value the request carried (PostgreSQL's class
    /// 22, "data exception": a NUL in text, an invalid byte sequence, a number out of
    /// range): the caller's to fix, not the server's.
    pub fn is_bad_input(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|e| e.code().starts_with("22")),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub created_at: i64,
}

/// A signing key as stored. `sign_from` is when it may start signing; before that it is
/// only published, so that verifiers learn it before they meet a token it signed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub secret: Vec<u8>,
    pub public: Vec<u8>,
    pub created_at: i64,
    pub sign_from: i64,
}

impl std::fmt::Debug for SigningKeyRecord {
    // The secret half of a key never reaches a log line, even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("sign_from", &self.sign_from)
            .finish_non_exhaustive()
    }
}

/// The login session a refresh token belongs to, with its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    pub session_id: String,
    pub user_id: String,
    pub username: String,
    /// The session's index in the token status list; `None` for a session made before
    /// there was one.
    pub status_idx: Option<i64>,
}

/// A refresh token to be written: its hash and how long it may be used.
#[derive(Debug, Clone, Copy)]
pub struct NewRefresh<'a> {
    pub hash: &'a [u8],
    pub expires_at: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now spent and its successor stored.
    Rotated(SessionOwner),
    /// The token was already spent, within the grace window: the successor stands, and
    /// the caller may hand it out again.
    Replayed(SessionOwner),
    /// The token was already spent, past the grace window: the whole session is now
    /// revoked, and the revocation logged.
    Reused { session_id: String },
    /// The token's session was revoked before.
    SessionRevoked,
    /// The session has refreshed as often as its limit allows: nothing was spent or
    /// handed out; try again in `retry_after` seconds.
    Throttled { retry_after: i64 },
    /// The token is past its expiry.
    Expired,
    /// No such token.
    Unknown,
}

/// How often one login session may refresh: a GCRA meter in whole seconds, a burst of
/// `tolerance / interval` refreshes, then one every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshLimit {
    pub interval: i64,
    pub tolerance: i64,
}

/// The revocation log's subject for a withdrawn signing key is this prefix and its kid;
/// any other subject is a login session id (random base64url, which never has a colon).
pub const KEY_SUBJECT_PREFIX: &str = "key:";

/// One line of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub id: i64,
    /// A login session id, or [`KEY_SUBJECT_PREFIX`] and a key id.
    pub session_id: String,
    /// The last second at which an access token of the session may still pass
    /// verification (its expiry plus the leeway); after it the line is moot.
    pub expires_at: i64,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub created_at: i64,
}

/// The handle every part of herd uses to reach persistence. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(Db<Sqlite>),
    Postgres(Db<Postgres>),
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH`, created when missing, or
    /// `postgres://...`) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Store> {
        let store = Store::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database without touching its schema.
    pub async fn open(url: &str) -> Result<Store> {
        let unsupported = || StoreError::UnsupportedUrl(without_password(url));
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|_| unsupported())?
                .create_if_missing(true)
                // WAL lets readers on every replica proceed while one writes; the busy
                // timeout makes concurrent writers queue instead of failing.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            Backend::Sqlite(Db::new(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // The queries are written for READ COMMITTED (see `dialect.rs`). Transactions
            // name it as they begin; this names it for the statements run in autocommit
            // too, whose implicit transaction would otherwise take the server's default:
            // `herd_post_messages` is one of those, and is written for it. (A startup
            // option, so it costs no round trip; the backslash keeps the space in the
            // value.)
            let options = PgConnectOptions::from_str(url)
                .map_err(|_| unsupported())?
                .options([("default_transaction_isolation", "read\\ committed")]);
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            Backend::Postgres(Db::new(pool))
        } else {
            return Err(unsupported());
        };
        Ok(Store { backend })
    }

    /// Applies every pending migration; returns how many ran. Safe to run from several
    /// processes at once: one applies, the others wait and find nothing left to do.
    pub async fn migrate(&self) -> Result<usize> {
        dispatch!(self, db => db.migrate().await)
    }

    /// How many migrations are still to apply. Changes nothing.
    pub async fn pending_migrations(&self) -> Result<usize> {
        dispatch!(self, db => db.pending_migrations().await)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, db => db.ping().await)
    }

    /// Stores a new account. A taken username is
    /// `Conflict { constraint: "users_username_key" }`.
    pub async fn create_user(&self, user: &UserRecord) -> Result<()> {
        dispatch!(self, db => db.create_user(user).await)
    }

    /// The account called `username`, unless it was deleted (its name stays taken).
    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        dispatch!(self, db => db.user_by_name(username).await)
    }

    /// Replaces a user's password hash, but only if it is still `current`: a rehash
    /// computed from an old hash must not overwrite one stored meanwhile. Returns
    /// whether it was replaced.
    pub async fn replace_password_hash(
        &self,
        user_id: &str,
        current: &str,
        replacement: &str,
    ) -> Result<bool> {
        dispatch!(self, db => db.replace_password_hash(user_id, current, replacement).await)
    }

    /// Starts a login session with its first refresh token, in one transaction, and
    /// gives it an index in the token status list, which it returns: the lowest freed
    /// index whose last token stopped passing more than `status_margin` seconds before
    /// `now`, else a new one at the end of the list.
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        now: i64,
        refresh: NewRefresh<'_>,
        status_margin: i64,
    ) -> Result<i64> {
        dispatch!(self, db => db.create_session(session_id, user_id, now, refresh, status_margin).await)
    }

    /// The token status list as of `now`: its length (every index ever handed out is
    /// below it) and the indices of revoked sessions whose tokens may still pass,
    /// ascending.
    pub async fn status_list(&self, now: i64) -> Result<(i64, Vec<i64>)> {
        dispatch!(self, db => db.status_list(now).await)
    }

    /// Spends the refresh token with hash `presented` and stores `successor` in its
    /// place, atomically: of two callers racing with the same token exactly one rotates.
    ///
    /// A spent token presented again within `grace` seconds of its spending is a
    /// [`Rotation::Replayed`]; later, it is a [`Rotation::Reused`] and revokes the
    /// session, logging a revocation that lasts until `access_expiry` seconds from now.
    ///
    /// With a `limit`, every refresh that hands a token out (a rotation or a replay) is
    /// taken from the session's meter, in the same transaction; past it the answer is
    /// [`Rotation::Throttled`] and nothing changes.
    pub async fn rotate_refresh(
        &self,
        presented: &[u8],
        successor: NewRefresh<'_>,
        now: i64,
        grace: i64,
        access_expiry: i64,
        limit: Option<RefreshLimit>,
    ) -> Result<Rotation> {
        dispatch!(self, db => {
            db.rotate_refresh(presented, successor, now, grace, access_expiry, limit)
                .await
        })
    }

    /// The session a refresh token (by hash) belongs to, spent or not.
    pub async fn refresh_token_session(&self, hash: &[u8]) -> Result<Option<String>> {
        dispatch!(self, db => db.refresh_token_session(hash).await)
    }

    /// How many rows the `sessions` and `refresh_tokens` tables hold, in that order: for
    /// tests and operators checking that pruning and the refresh limit keep them bounded.
    pub async fn session_rows(&self) -> Result<(i64, i64)> {
        dispatch!(self, db => db.session_rows().await)
    }

    /// Revokes a session: its refresh tokens stop working and a revocation is logged
    /// that lasts until `access_expiry`. Returns false when it was revoked already.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        now: i64,
        access_expiry: i64,
    ) -> Result<bool> {
        dispatch!(self, db => db.revoke_session(session_id, now, access_expiry).await)
    }

    /// Revocations logged after `after_id` that still matter at `now`, oldest first. Ids
    /// grow in commit order, so a reader that remembers the last id it saw misses nothing.
    pub async fn revocations_since(&self, after_id: i64, now: i64) -> Result<Vec<Revocation>> {
        dispatch!(self, db => db.revocations_since(after_id, now).await)
    }

    /// At most `limit` revocations logged after `after_id` that still matter at `now`,
    /// oldest first: a page of the revocation feed.
    pub async fn revocation_page(
        &self,
        after_id: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Revocation>> {
        dispatch!(self, db => db.revocation_page(after_id, now, limit).await)
    }

    /// The lowest id still in the revocation log (`None` when it is empty) and the
    /// highest (0 when empty). Pruning deletes lines oldest first, so ids below the lowest
    /// may have been pruned: the feed refuses a cursor from before it.
    pub async fn revocation_bounds(&self) -> Result<(Option<i64>, i64)> {
        dispatch!(self, db => db.revocation_bounds().await)
    }

    /// Withdraws signing key `kid` and logs its revocation (subject
    /// [`KEY_SUBJECT_PREFIX`] + kid) until `access_expiry`, in one transaction, so that
    /// services following the revocation feed hear of it in order with logouts.
    pub async fn revoke_signing_key(&self, kid: &str, now: i64, access_expiry: i64) -> Result<()> {
        dispatch!(self, db => db.revoke_signing_key(kid, now, access_expiry).await)
    }

    /// The highest revocation id logged so far (0 when none), so a tail can start there.
    pub async fn last_revocation_id(&self) -> Result<i64> {
        dispatch!(self, db => db.last_revocation_id().await)
    }

    /// Deletes revocations, refresh tokens and login sessions that can no longer matter.
    /// Spent tokens are kept until they expire, so that a replay is recognised as reuse
    /// all that time; a session goes once it has no token left (logged out, revoked, or
    /// every token expired), since nothing can then refresh it, and its status-list
    /// index is freed as of when its last access token stops passing.
    pub async fn prune(&self, now: i64) -> Result<u64> {
        dispatch!(self, db => db.prune(now).await)
    }

    /// Every signing key, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        dispatch!(self, db => db.signing_keys().await)
    }

    /// Stores `key` only if the ring is empty, so that replicas starting together on a
    /// new database agree on one first key. Returns whether it was stored.
    pub async fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<bool> {
        dispatch!(self, db => db.insert_first_signing_key(key).await)
    }

    pub async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        dispatch!(self, db => db.insert_signing_key(key).await)
    }

    pub async fn delete_signing_key(&self, kid: &str) -> Result<()> {
        dispatch!(self, db => db.delete_signing_key(kid).await)
    }

    /// The secret called `name`; `candidate` is stored first when there is none, so
    /// that concurrent first callers all end up with the same value.
    pub async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        dispatch!(self, db => db.secret(name, candidate).await)
    }

    /// Appends an event to the log; returns its id. Ids grow in commit order, so a reader
    /// that remembers the last id it saw misses nothing.
    pub async fn append_event(&self, topic: &str, payload: &[u8], now: i64) -> Result<i64> {
        dispatch!(self, db => db.append_event(topic, payload, now).await)
    }

    /// At most `limit` events appended after `after_id`, oldest first.
    pub async fn events_since(&self, after_id: i64, limit: i64) -> Result<Vec<Event>> {
        dispatch!(self, db => db.events_since(after_id, limit).await)
    }

    /// The id of the newest event (0 when none), where a new reader starts.
    pub async fn last_event_id(&self) -> Result<i64> {
        dispatch!(self, db => db.last_event_id().await)
    }

    /// Deletes events appended before `before`.
    pub async fn prune_events(&self, before: i64) -> Result<u64> {
        dispatch!(self, db => db.prune_events(before).await)
    }

    /// Closes every connection, waiting for the ones in use.
    pub async fn close(&self) {
        dispatch!(self, db => db.close().await)
    }
}

/// `url` with the password of its user info, if any, replaced by `***`.
fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    // The last '@' ends the user info: a password may itself contain '@'.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}***{}",
        &url[..scheme_end + colon + 1],
        &url[scheme_end + at..]
    )
}
