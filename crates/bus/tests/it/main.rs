//! The bus's integration tests, one binary.
//!
//! Every test of what a subscription receives is written once, as an
//! `async fn(Replicas)`, and `backend_tests!` runs it on each backend, two replicas' buses
//! apiece: `in_process::NAME` (one bus, cloned), `sql_tail::NAME` (two stores on one
//! temporary SQLite file) and `redis::NAME` (two connections to one Redis). The Redis
//! ones, and the outage test in `redis_pubsub.rs`, which starts and kills a redis-server
//! of its own, are ignored unless asked for, and then need `HERD_TEST_REDIS`:
//!
//! ```text
//! HERD_TEST_REDIS=redis://127.0.0.1:6379 cargo test -p herd-bus -- --include-ignored
//! ```
//!
//! Run without the variable, they fail rather than pass without having tested anything.

/// `backend_tests!(a, b)` in a module with `async fn a(replicas: Replicas)` and `b`
/// generates `in_process::a`, `sql_tail::a`, `redis::a` and the same for `b`.
macro_rules! backend_tests {
    ($($test:ident),+ $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    use crate::harness::{Kind, Replicas};
                    super::$test(Replicas::start(Kind::InProcess).await).await;
                }
            )+
        }

        mod sql_tail {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    use crate::harness::{Kind, Replicas};
                    super::$test(Replicas::start(Kind::SqlTail).await).await;
                }
            )+
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs Redis: set HERD_TEST_REDIS"]
                async fn $test() {
                    use crate::harness::{Kind, Replicas};
                    super::$test(Replicas::start(Kind::Redis).await).await;
                }
            )+
        }
    };
}

mod delivery;
mod harness;
mod redis_pubsub;
mod sql_tail;
