//! Throw-away PostgreSQL databases, for the tests of herd's crates: each test gets a
//! database of its own on the server its `HERD_TEST_POSTGRES` names, and drops it after,
//! with the store's own [`create_postgres_database`] and [`drop_postgres_database`].

pub use crate::databases::{create_postgres_database, drop_postgres_database, with_database};

/// The variable naming a PostgreSQL server tests may create databases on.
pub const POSTGRES_VAR: &str = "HERD_TEST_POSTGRES";

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
