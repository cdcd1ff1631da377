//! The store's integration tests, one binary.
//!
//! Every test body is written once, as an `async fn(TestDb)`, and `backend_tests!` turns
//! it into a `sqlite::NAME` test and a `postgres::NAME` test, each on a database of its
//! own. The PostgreSQL ones are ignored unless asked for, and then need
//! `HERD_TEST_POSTGRES` (a server URL the tests may create databases on):
//!
//! ```text
//! HERD_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test -p herd-store -- --include-ignored
//! ```
//!
//! Run without the variable, they fail rather than pass without having tested anything.

/// `backend_tests!(a, b)` in a module with `async fn a(db: TestDb)` and `b` generates
/// `sqlite::a`, `sqlite::b`, `postgres::a` and `postgres::b`.
macro_rules! backend_tests {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::harness::run(crate::harness::Kind::Sqlite, super::$test).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
                async fn $test() {
                    crate::harness::run(crate::harness::Kind::Postgres, super::$test).await;
                }
            )+
        }
    };
}

mod accounts;
mod chat;
mod events;
mod harness;
mod keys;
mod migrations;
mod revocations;
mod rotation;
mod secrets;
mod shared_sessions;
mod status_list;
mod store;
mod users;
