//! Throw-away PostgreSQL databases, for the tests of herd's crates: each test gets a
//! database of its own on the server its `HERD_TEST_POSTGRES` names, and drops it after.

use sqlx::{Connection, Executor, PgConnection};

/// The variable naming a PostgreSQL server tests may create databases on.
pub const POSTGRES_VAR: &str = "HERD_TEST_POSTGRES";

/// A fresh, empty database on the server `admin_url` reaches; returns its name and URL.
pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String, sqlx::Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    admin
        .execute(sqlx::raw_sql(&format!("CREATE DATABASE {name}")))
        .await?;
    admin.close().await?;
    Ok(with_database(admin_url, name))
}

/// Drops the database `name`, ending whatever connections a test left open.
pub async fn drop_postgres_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    admin.execute(sqlx::raw_sql(&drop)).await?;
    admin.close().await
}

/// The admin URL from [`POSTGRES_VAR`]; panics, naming the variable, when it is unset,
/// so a test that needs PostgreSQL fails loudly instead of passing quietly.
pub fn postgres_admin_url() -> String {
    std::env::var(POSTGRES_VAR).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_VAR} is not set: this test needs a PostgreSQL server it may create \
             databases on, e.g. {POSTGRES_VAR}=postgres://postgres@127.0.0.1:5432/test"
        )
    })
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
