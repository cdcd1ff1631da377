//! herd's persistence, behind one interface.
//!
//! The store keeps what every replica must share: accounts, login sessions, refresh-token
//! hashes, the signing-key ring, the revocation log and store-wide secrets. It knows rows,
//! not meanings: a refresh token is an opaque hash here, a signing key two byte strings.
//! It never reads a clock either; callers pass `now` in unix seconds, so time-dependent
//! behaviour is decided (and tested) in one place, the identity crate.
//!
//! Layout:
//! - `lib.rs`: [`Store`], its records and [`StoreError`].
//! - `migrate.rs`: the embedded migrations and the runner that applies them.
//! - `migrations/sqlite/*.sql`: the schema, one file a version.
//!
//! SQL is written with `$N` placeholders and `ON CONFLICT` so that one text serves every
//! backend the store grows.

mod migrate;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use migrate::MIGRATIONS;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend this build supports, or is malformed.
    #[error("unsupported database URL {0:?}: expected sqlite://PATH")]
    UnsupportedUrl(String),
    /// A unique constraint refused the write; the name is the constraint's.
    #[error("conflict on {constraint}")]
    Conflict { constraint: &'static str },
    /// The schema is newer than this binary knows.
    #[error("the database schema is at version {found}, newer than this herd ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the failure is about reaching the database rather than the request.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            // SQLite's BUSY and LOCKED (and their extended codes, which keep the primary
            // code in the low byte): another writer held the file past the busy timeout.
            StoreError::Database(sqlx::Error::Database(e)) => e
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
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
    /// The token is past its expiry.
    Expired,
    /// No such token.
    Unknown,
}

/// One line of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub id: i64,
    pub session_id: String,
    /// When the last access token of the session expires; after it the line is moot.
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
    pool: SqlitePool,
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH`, created when missing) and brings its
    /// schema up to date.
    pub async fn connect(url: &str) -> Result<Store> {
        let store = Store::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database without touching its schema.
    pub async fn open(url: &str) -> Result<Store> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(url.to_owned()))?
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
        Ok(Store { pool })
    }

    /// Applies every pending migration; returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        migrate::run(&self.pool).await
    }

    /// How many migrations are still to apply.
    pub async fn pending_migrations(&self) -> Result<usize> {
        migrate::pending(&self.pool).await
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn create_user(&self, user: &UserRecord) -> Result<()> {
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // The id is 128 random bits, so the one unique key a caller can collide on
            // is the username.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict {
                constraint: "users_username_key",
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, created_at FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UserRecord {
            id: r.get(0),
            username: r.get(1),
            password_hash: r.get(2),
            created_at: r.get(3),
        }))
    }

    /// Starts a login session with its first refresh token, in one transaction.
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        now: i64,
        refresh: NewRefresh<'_>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(session_id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_refresh(&mut tx, session_id, now, refresh).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Spends the refresh token with hash `presented` and stores `successor` in its
    /// place, atomically: of two callers racing with the same token exactly one rotates.
    ///
    /// A spent token presented again within `grace` seconds of its spending is a
    /// [`Rotation::Replayed`]; later, it is a [`Rotation::Reused`] and revokes the
    /// session, logging a revocation that lasts until `access_expiry` seconds from now.
    pub async fn rotate_refresh(
        &self,
        presented: &[u8],
        successor: NewRefresh<'_>,
        now: i64,
        grace: i64,
        access_expiry: i64,
    ) -> Result<Rotation> {
        let mut tx = self.pool.begin().await?;
        // The write comes first so that the transaction holds the write lock from its
        // first statement: a read-then-write transaction can deadlock against another
        // replica doing the same on SQLite.
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET spent_at = $1, successor_hash = $2 \
             WHERE hash = $3 AND spent_at IS NULL AND expires_at > $1 \
             AND session_id IN (SELECT id FROM sessions WHERE revoked_at IS NULL)",
        )
        .bind(now)
        .bind(successor.hash)
        .bind(presented)
        .execute(&mut *tx)
        .await?
        .rows_affected();

        let row = sqlx::query(
            "SELECT t.session_id, t.expires_at, t.spent_at, s.revoked_at, u.id, u.username \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             JOIN users u ON u.id = s.user_id WHERE t.hash = $1",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::Unknown);
        };
        let owner = SessionOwner {
            session_id: row.get(0),
            user_id: row.get(4),
            username: row.get(5),
        };
        let expires_at: i64 = row.get(1);
        let spent_at: Option<i64> = row.get(2);
        let revoked_at: Option<i64> = row.get(3);

        if spent == 1 {
            insert_refresh(&mut tx, &owner.session_id, now, successor).await?;
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
            Some(at) if now - at <= grace => Ok(Rotation::Replayed(owner)),
            Some(_) => {
                revoke_in(&mut tx, &owner.session_id, now, access_expiry).await?;
                tx.commit().await?;
                Ok(Rotation::Reused {
                    session_id: owner.session_id,
                })
            }
        }
    }

    /// Revokes a session: its refresh tokens stop working and a revocation is logged
    /// that lasts until `access_expiry`. Returns false when it was revoked already.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        now: i64,
        access_expiry: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let revoked = revoke_in(&mut tx, session_id, now, access_expiry).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Revocations logged after `after_id` that still matter at `now`, oldest first.
    pub async fn revocations_since(&self, after_id: i64, now: i64) -> Result<Vec<Revocation>> {
        let rows = sqlx::query(
            "SELECT id, session_id, expires_at FROM revocations \
             WHERE id > $1 AND expires_at > $2 ORDER BY id",
        )
        .bind(after_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Revocation {
                id: r.get(0),
                session_id: r.get(1),
                expires_at: r.get(2),
            })
            .collect())
    }

    /// The highest revocation id logged so far (0 when none), so a tail can start there.
    pub async fn last_revocation_id(&self) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM revocations")
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or(0))
    }

    /// Deletes revocations and refresh tokens that can no longer matter. Spent tokens are
    /// kept until they expire, so that a replay is recognised as reuse all that time.
    pub async fn prune(&self, now: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let a = sqlx::query("DELETE FROM revocations WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let b = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(a + b)
    }

    /// Every signing key, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, secret, public, created_at, sign_from FROM signing_keys \
             ORDER BY sign_from, created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
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

    /// Stores `key` only if the ring is empty, so that replicas starting together on a
    /// new database agree on one first key. Returns whether it was stored.
    pub async fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO signing_keys (kid, secret, public, created_at, sign_from) \
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .bind(&key.kid)
        .bind(&key.secret)
        .bind(&key.public)
        .bind(key.created_at)
        .bind(key.sign_from)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, secret, public, created_at, sign_from) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.kid)
        .bind(&key.secret)
        .bind(&key.public)
        .bind(key.created_at)
        .bind(key.sign_from)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_signing_key(&self, kid: &str) -> Result<()> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The secret called `name`; `candidate` is stored first when there is none, so
    /// that concurrent first callers all end up with the same value.
    pub async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        sqlx::query(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.pool)
        .await?;
        let value = sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(value)
    }

    /// Appends an event to the log; returns its id. Ids grow in commit order, so a reader
    /// that remembers the last id it saw misses nothing.
    pub async fn append_event(&self, topic: &str, payload: &[u8], now: i64) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO events (topic, payload, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(topic)
        .bind(payload)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// At most `limit` events appended after `after_id`, oldest first.
    pub async fn events_since(&self, after_id: i64, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, topic, payload, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
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

    /// The id of the newest event (0 when none), where a new reader starts.
    pub async fn last_event_id(&self) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or(0))
    }

    /// Deletes events appended before `before`.
    pub async fn prune_events(&self, before: i64) -> Result<u64> {
        let n = sqlx::query("DELETE FROM events WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    /// Closes every connection, waiting for the ones in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

async fn insert_refresh(
    tx: &mut Tx,
    session_id: &str,
    now: i64,
    refresh: NewRefresh<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(refresh.hash)
    .bind(session_id)
    .bind(now)
    .bind(refresh.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn revoke_in(tx: &mut Tx, session_id: &str, now: i64, access_expiry: i64) -> Result<bool> {
    let n = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(session_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM refresh_tokens WHERE session_id = $1")
        .bind(session_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO revocations (session_id, revoked_at, expires_at) VALUES ($1, $2, $3)")
        .bind(session_id)
        .bind(now)
        .bind(access_expiry)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}
