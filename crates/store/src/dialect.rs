//! What the shared SQL cannot say the same way on every backend: how a transaction
//! begins, how writers of one table are made to queue, and the few statements that only
//! exist in one dialect. Everything else is in `sql.rs`, written once.

use std::future::Future;

use sqlx::postgres::{PgConnection, PgQueryResult, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqliteQueryResult};
use sqlx::{Database, Pool, Transaction};

use crate::migrate::Migration;

/// A named point of serialisation between writers. Each backend honours it its own way:
/// PostgreSQL with a transaction-scoped advisory lock, SQLite with the write lock every
/// writing transaction holds on the whole file anyway.
///
/// The two logs need it most. Replicas tail `revocations` and `events` by id, remembering
/// the highest they have seen. PostgreSQL hands an identity value out when a row is
/// inserted, not when it commits, so without a lock a transaction holding id 8 can commit
/// while the one holding id 7 is still open; a reader that sees 8 moves past 7 and never
/// sees it. Taken before the INSERT and held until commit (PostgreSQL releases it only
/// after the commit is visible), the lock makes ids commit in the order they were handed
/// out. It costs one writer at a time per log, which both logs can afford: a revocation
/// is a logout, an event one cross-replica message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lock {
    /// Held for a whole migration run.
    Migrations = 1,
    /// Held while deciding whether the key ring is still empty.
    SigningKeys = 2,
    /// Held from before a revocation is inserted until its transaction ends.
    Revocations = 3,
    /// Held from before an event is inserted until its transaction ends.
    Events = 4,
}

impl Lock {
    /// The advisory-lock key. Advisory locks are per database but shared by every
    /// application using it, so "herd" in the high bytes keeps clear of other keys.
    fn key(self) -> i64 {
        0x6865_7264_0000_0000 | self as i64
    }
}

/// A backend: a sqlx [`Database`] and the little that differs about it.
pub(crate) trait Dialect: Database {
    /// Creates the table that records applied migrations, if missing.
    const CREATE_MIGRATIONS_TABLE: &'static str;
    /// Counts tables called `schema_migrations` (0 or 1) without creating one.
    const HAS_MIGRATIONS_TABLE: &'static str;
    /// Records migration `$1` as applied now.
    const RECORD_MIGRATION: &'static str;

    /// This backend's text of a migration.
    fn migration_sql(migration: &Migration) -> &'static str;

    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Begins a transaction with the isolation the store's queries are written for.
    fn begin(
        pool: &Pool<Self>,
    ) -> impl Future<Output = sqlx::Result<Transaction<'static, Self>>> + Send + '_;

    /// Begins a transaction that holds `lock` from its start to its end.
    fn begin_locked(
        pool: &Pool<Self>,
        lock: Lock,
    ) -> impl Future<Output = sqlx::Result<Transaction<'static, Self>>> + Send + '_;

    /// Takes `lock` inside a transaction that has already written, until it ends.
    fn lock(
        conn: &mut Self::Connection,
        lock: Lock,
    ) -> impl Future<Output = sqlx::Result<()>> + Send + '_;
}

impl Dialect for Sqlite {
    const CREATE_MIGRATIONS_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)";
    const HAS_MIGRATIONS_TABLE: &'static str =
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'";
    const RECORD_MIGRATION: &'static str = "INSERT INTO schema_migrations (version, applied_at) \
         VALUES ($1, CAST(strftime('%s', 'now') AS INTEGER))";

    fn migration_sql(migration: &Migration) -> &'static str {
        migration.sqlite
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn begin(pool: &Pool<Sqlite>) -> sqlx::Result<Transaction<'static, Sqlite>> {
        pool.begin().await
    }

    // SQLite has one lock, on the whole file. IMMEDIATE takes it at BEGIN (waiting out the
    // busy timeout), so a transaction that reads before it writes cannot fail to upgrade.
    async fn begin_locked(
        pool: &Pool<Sqlite>,
        _: Lock,
    ) -> sqlx::Result<Transaction<'static, Sqlite>> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    // A transaction that has written holds the file's write lock until it ends, which
    // already serialises it against every other writer.
    async fn lock(_: &mut SqliteConnection, _: Lock) -> sqlx::Result<()> {
        Ok(())
    }
}

impl Dialect for Postgres {
    const CREATE_MIGRATIONS_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
    const HAS_MIGRATIONS_TABLE: &'static str = "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = 'schema_migrations'";
    const RECORD_MIGRATION: &'static str = "INSERT INTO schema_migrations (version, applied_at) \
         VALUES ($1, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT))";

    fn migration_sql(migration: &Migration) -> &'static str {
        migration.postgres
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    // The queries are written for READ COMMITTED: `rotate_refresh`'s UPDATE waits for a
    // racing rotation of the same row, re-checks `spent_at IS NULL` against the committed
    // row and misses, and its next SELECT sees the winner's commit. Under REPEATABLE READ
    // or SERIALIZABLE the loser would get a serialisation failure instead, so the level is
    // named here rather than left to the server's default_transaction_isolation.
    async fn begin(pool: &Pool<Postgres>) -> sqlx::Result<Transaction<'static, Postgres>> {
        pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
    }

    async fn begin_locked(
        pool: &Pool<Postgres>,
        lock: Lock,
    ) -> sqlx::Result<Transaction<'static, Postgres>> {
        let mut tx = Self::begin(pool).await?;
        Self::lock(&mut tx, lock).await?;
        Ok(tx)
    }

    async fn lock(conn: &mut PgConnection, lock: Lock) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock.key())
            .execute(conn)
            .await?;
        Ok(())
    }
}
