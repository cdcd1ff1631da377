//! Embedded migrations and their runner.
//!
//! A migration is one schema version written once per backend, in
//! `migrations/sqlite/NNNN_name.sql` and `migrations/postgres/NNNN_name.sql`; listing it
//! here embeds both, so a version cannot exist for one backend and not the other. The
//! runner applies the pending ones in order, in one transaction, and records each in
//! `schema_migrations`. A database whose schema is newer than this binary is refused
//! rather than guessed at.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::dialect::{Dialect, Lock};
use crate::{Result, StoreError};

/// One schema version, in each backend's dialect.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../migrations/postgres/", $name, ".sql")),
        }
    };
}

/// The migrations this build knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_identity"),
    migration!(2, "0002_events"),
    migration!(3, "0003_shared_sessions"),
    migration!(4, "0004_chat"),
    migration!(5, "0005_refresh_limit"),
    migration!(6, "0006_status_list"),
    migration!(7, "0007_accounts"),
    migration!(8, "0008_post_messages"),
];

fn known() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The version the database is at, refusing one newer than this build.
async fn version<DB>(conn: &mut DB::Connection) -> Result<i64>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
{
    let row = conn
        .fetch_one(sqlx::raw_sql("SELECT MAX(version) FROM schema_migrations"))
        .await?;
    let version = row.get::<Option<i64>, _>(0).unwrap_or(0);
    if version > known() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: known(),
        });
    }
    Ok(version)
}

pub(crate) async fn pending<DB>(pool: &Pool<DB>) -> Result<usize>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
{
    // Only looks: creating the table here could race a concurrent `run` on PostgreSQL,
    // where two CREATE TABLE IF NOT EXISTS at once can both try to create it.
    let mut conn = pool.acquire().await?;
    let tables: i64 = conn
        .fetch_one(sqlx::raw_sql(DB::HAS_MIGRATIONS_TABLE))
        .await?
        .get(0);
    let version = if tables == 0 {
        0
    } else {
        version(&mut conn).await?
    };
    Ok(MIGRATIONS.iter().filter(|m| m.version > version).count())
}

pub(crate) async fn run<DB>(pool: &Pool<DB>) -> Result<usize>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
{
    // The lock is held from before the version is read until the new one commits, so a
    // second runner (another replica starting, `herd migrate` run twice) waits and then
    // finds nothing left to do, instead of applying a migration twice. Both backends
    // have transactional DDL, so a failed migration leaves the schema as it was.
    let mut tx = DB::begin_locked(pool, Lock::Migrations).await?;
    tx.execute(sqlx::raw_sql(DB::CREATE_MIGRATIONS_TABLE))
        .await?;
    let version = version(&mut tx).await?;
    let mut ran = 0;
    for migration in MIGRATIONS.iter().filter(|m| m.version > version) {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        tx.execute(sqlx::raw_sql(DB::migration_sql(migration)))
            .await?;
        tx.execute(sqlx::query(DB::RECORD_MIGRATION).bind(migration.version))
            .await?;
        ran += 1;
    }
    tx.commit().await?;
    Ok(ran)
}
