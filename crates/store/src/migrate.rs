//! Embedded migrations and their runner.
//!
//! Each migration is a SQL file applied once, in order, inside a transaction, and recorded
//! in `schema_migrations`. A database whose schema is newer than this binary is refused
//! rather than guessed at.

use sqlx::SqlitePool;

use crate::{Result, StoreError};

/// The migrations this build knows, by version.
pub const MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("../migrations/sqlite/0001_identity.sql"))];

async fn applied(pool: &SqlitePool) -> Result<i64> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(pool)
        .await?;
    let version = version.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if version > known {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known,
        });
    }
    Ok(version)
}

pub(crate) async fn pending(pool: &SqlitePool) -> Result<usize> {
    let version = applied(pool).await?;
    Ok(MIGRATIONS.iter().filter(|m| m.0 > version).count())
}

pub(crate) async fn run(pool: &SqlitePool) -> Result<usize> {
    applied(pool).await?;
    let mut ran = 0;
    for (version, sql) in MIGRATIONS {
        let mut tx = pool.begin().await?;
        // Claiming the version first serialises concurrent runners: the loser's insert
        // conflicts and it skips a migration the winner applies.
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) \
             SELECT $1, CAST(strftime('%s','now') AS INTEGER) \
             WHERE NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version >= $1)",
        )
        .bind(version)
        .execute(&mut *tx)
        .await;
        let claimed = match claimed {
            Ok(done) => done.rows_affected() == 1,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => false,
            Err(e) => return Err(e.into()),
        };
        if !claimed {
            continue;
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        tx.commit().await?;
        ran += 1;
    }
    Ok(ran)
}
