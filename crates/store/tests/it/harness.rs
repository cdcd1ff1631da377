//! A fresh database per test, on either backend, and the fixtures tests share.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use herd_store::{Migration, NewRefresh, SigningKeyRecord, Store, UserRecord};
use sqlx::sqlite::SqliteConnectOptions;
// Statements go through the connection's `Executor` methods rather than the query's:
// sqlx's `raw_sql(..).execute(conn)` future is not provably `Send` (sqlx#3150), and these
// run inside spawned tasks.
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tempfile::TempDir;

use herd_store::testing::{
    create_postgres_database, drop_postgres_database, postgres_admin_url, with_database,
};

/// A moment to run tests at; the store never reads a clock, so any will do.
pub const NOW: i64 = 1_700_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One test's own database, empty until a store migrates it.
#[derive(Debug, Clone)]
pub struct TestDb {
    kind: Kind,
    url: String,
    place: Place,
}

#[derive(Debug, Clone)]
enum Place {
    /// Held only so that the directory is removed with the last clone.
    Sqlite { _dir: Arc<TempDir> },
    /// Dropped by `run` once the test is over.
    Postgres { admin_url: String, name: String },
}

/// Runs `test` on a database of its own on `kind`, then removes the database, whether
/// the test passed or not.
pub async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = TestDb::create(kind).await;
    // Spawned so that a failing test still reaches the clean-up below; its panic is
    // re-raised afterwards, unchanged.
    let outcome = tokio::spawn(test(db.clone())).await;
    db.remove().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

impl TestDb {
    async fn create(kind: Kind) -> TestDb {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("creating a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("herd.db").display());
                TestDb {
                    kind,
                    url,
                    place: Place::Sqlite {
                        _dir: Arc::new(dir),
                    },
                }
            }
            Kind::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("herd_test_{:016x}", random());
                let url = create_postgres_database(&admin_url, &name)
                    .await
                    .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
                TestDb {
                    kind,
                    url,
                    place: Place::Postgres { admin_url, name },
                }
            }
        }
    }

    async fn remove(&self) {
        if let Place::Postgres { admin_url, name } = &self.place {
            if let Err(e) = drop_postgres_database(admin_url, name).await {
                eprintln!("leaving test database {name} behind: {e}");
            }
        }
    }

    /// A store on this database, schema untouched.
    pub async fn open(&self) -> Store {
        Store::open(&self.url).await.expect("opening the store")
    }

    /// A store on this database, migrated.
    pub async fn connect(&self) -> Store {
        Store::connect(&self.url)
            .await
            .expect("connecting the store")
    }

    /// Runs `sql` outside the store, to set up what only an older herd or a race can
    /// leave behind.
    pub async fn exec(&self, sql: &str) {
        let done = match self.kind {
            Kind::Sqlite => {
                let options = SqliteConnectOptions::from_str(&self.url)
                    .expect("a SQLite URL")
                    .create_if_missing(true);
                let mut conn = SqliteConnection::connect_with(&options)
                    .await
                    .expect("connecting");
                conn.execute(sqlx::raw_sql(sql)).await.map(drop)
            }
            Kind::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connecting");
                conn.execute(sqlx::raw_sql(sql)).await.map(drop)
            }
        };
        done.unwrap_or_else(|e| panic!("running {sql:?}: {e}"));
    }

    /// A connection of its own to this PostgreSQL database (panics on SQLite).
    pub async fn postgres_connection(&self) -> PgConnection {
        assert_eq!(
            self.kind,
            Kind::Postgres,
            "a PostgreSQL connection on SQLite"
        );
        PgConnection::connect(&self.url).await.expect("connecting")
    }

    /// This backend's text of `migration`.
    pub fn migration_sql(&self, migration: &Migration) -> &'static str {
        match self.kind {
            Kind::Sqlite => migration.sqlite,
            Kind::Postgres => migration.postgres,
        }
    }
}

/// 64 bits no other test process will pick, without a dependency for them: std's hasher
/// keys are random per process and differ per `RandomState`.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Creates an account called `name` (its id is `u-NAME`).
pub async fn user(store: &Store, name: &str) -> UserRecord {
    let user = UserRecord {
        id: format!("u-{name}"),
        username: name.to_owned(),
        password_hash: format!("hash of {name}'s password"),
        created_at: NOW,
    };
    store.create_user(&user).await.expect("creating a user");
    user
}

/// Starts session `session_id` for `user` whose first refresh token has hash `token`
/// and expires at `expires_at`; returns its status-list index.
pub async fn session(
    store: &Store,
    user: &UserRecord,
    session_id: &str,
    token: &[u8],
    expires_at: i64,
) -> i64 {
    store
        .create_session(
            session_id,
            &user.id,
            NOW,
            NewRefresh {
                hash: token,
                expires_at,
            },
            0,
        )
        .await
        .expect("creating a session")
}

pub fn key(kid: &str, created_at: i64, sign_from: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        secret: format!("secret of {kid}").into_bytes(),
        public: format!("public of {kid}").into_bytes(),
        created_at,
        sign_from,
    }
}

#[test]
fn with_database_replaces_only_the_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
