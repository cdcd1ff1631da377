//! Whole PostgreSQL databases, created and dropped on a server: `herd lab` gives each
//! scenario a fresh one, and the tests of every crate one each (through `testing.rs`).

use sqlx::{Connection as _, Executor as _, PgConnection};

use crate::StoreError;

/// PostgreSQL's longest identifier, in bytes; a longer name would be cut short silently.
const MAX_NAME_BYTES: usize = 63;

/// Creates the empty database `name` on the server `server_url` reaches (as a user that
/// may create databases), and returns the URL of the new database: `server_url` with its
/// database replaced by `name`, query string kept.
pub async fn create_postgres_database(server_url: &str, name: &str) -> Result<String, StoreError> {
    let quoted = quoted_name(name)?;
    let mut admin = PgConnection::connect(server_url).await?;
    admin
        .execute(sqlx::raw_sql(&format!("CREATE DATABASE {quoted}")))
        .await?;
    admin.close().await?;
    Ok(with_database(server_url, name))
}

/// Drops the database `name` if it exists, ending whatever connections are still open
/// to it.
pub async fn drop_postgres_database(server_url: &str, name: &str) -> Result<(), StoreError> {
    let quoted = quoted_name(name)?;
    let mut admin = PgConnection::connect(server_url).await?;
    let drop = format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)");
    admin.execute(sqlx::raw_sql(&drop)).await?;
    admin.close().await?;
    Ok(())
}

/// `name` as a quoted identifier, so that it is taken as written (never folded to lower
/// case, never read as SQL), and refused when PostgreSQL would shorten it.
fn quoted_name(name: &str) -> Result<String, StoreError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
        return Err(StoreError::InvalidDatabaseName(name.to_owned()));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `url` with its database name replaced by `name`, query string kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    format!("{server}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_quoted_as_written_and_refused_when_postgres_would_cut_it() {
        assert_eq!(
            quoted_name("herd_lab_1").ok(),
            Some("\"herd_lab_1\"".into())
        );
        assert_eq!(quoted_name("a\"b").ok(), Some("\"a\"\"b\"".into()));
        assert!(quoted_name("").is_err());
        assert!(quoted_name(&"x".repeat(64)).is_err());
        assert!(quoted_name(&"x".repeat(63)).is_ok());
    }
}
