//! Two replicas in one test, on one SQLite file or one PostgreSQL database, with each bus
//! backend: what one replica does, the other honours.

use std::future::Future;
use std::time::{Duration, Instant};

use herd_store::testing::{create_postgres_database, drop_postgres_database, postgres_admin_url};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{spawn_on_database, Options, TestApp, TestBus};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Db {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy)]
enum BusKind {
    InProcess,
    Sql,
    Redis,
}

/// Runs `test` with a database URL of its own, removing a PostgreSQL database after,
/// pass or fail.
pub(crate) async fn on_database<F, Fut>(db: Db, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            test(format!("sqlite://{}", dir.path().join("herd.db").display())).await;
        }
        Db::Postgres => {
            let admin = postgres_admin_url();
            let name = format!("herd_it_{}", herd_identity::random_id().replace('-', ""));
            let url = create_postgres_database(&admin, &name)
                .await
                .expect("create database");
            let outcome = tokio::spawn(test(url)).await;
            if let Err(e) = drop_postgres_database(&admin, &name).await {
                eprintln!("left database {name} behind: {e}");
            }
            if let Err(e) = outcome {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

async fn pair(database: String, bus: BusKind) -> (TestApp, TestApp) {
    let bus = match bus {
        BusKind::InProcess => TestBus::InProcess(herd_bus::Bus::in_process()),
        BusKind::Sql => TestBus::Sql,
        BusKind::Redis => TestBus::Redis(
            std::env::var("HERD_TEST_REDIS").expect("this test needs Redis: set HERD_TEST_REDIS"),
        ),
    };
    let options = Options {
        key_publish_delay: 0,
        bus,
        ..Options::default()
    };
    let a = spawn_on_database(database, options).await;
    // The peer shares A's database, clock and kind of bus (with a bus of its own, but
    // for the in-process one, which stands for one process).
    let b = a.spawn_peer("test-b").await;
    (a, b)
}

/// Polls `check` until it holds or `limit` passes; returns how long it took.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn two_replicas(db: Db, bus: BusKind) {
    on_database(db, move |database| async move {
        let (a, b) = pair(database, bus).await;

        // A token issued by A is accepted by B.
        let tokens = a.user("alice").await;
        let response = b.me(&tokens.access).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-herd-replica"], "test-b");

        // A logout on A is refused by B within a second: the bus carries it (B's upkeep
        // is an hour away in these tests).
        assert_eq!(
            a.logout(&tokens.access).await.status(),
            StatusCode::NO_CONTENT
        );
        let took = within(Duration::from_secs(1), || async {
            b.me(&tokens.access).await.status() == StatusCode::UNAUTHORIZED
        })
        .await;
        eprintln!("{db:?}/{bus:?}: logout reached the other replica in {took:?}");

        // A key rotated on A is in B's ring (announced, not met by chance), and signs
        // tokens B accepts.
        let ring = a.auth.rotate_keys().await.expect("rotate");
        let new_kid = ring.last().expect("a key").kid.clone();
        within(Duration::from_secs(1), || async {
            let jwks: Value = b
                .get("/.well-known/jwks.json")
                .await
                .json()
                .await
                .expect("json");
            jwks["keys"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k["kid"] == new_kid.as_str()))
        })
        .await;
        let fresh = a.login("alice").await;
        assert_eq!(b.me(&fresh.access).await.status(), StatusCode::OK);

        // Two replicas racing to refresh one token: one rotates, the other hands out the
        // same successor (the grace window), so there is still one session.
        let (ra, rb) = tokio::join!(a.refresh(&fresh.refresh), b.refresh(&fresh.refresh));
        assert_eq!((ra.status(), rb.status()), (StatusCode::OK, StatusCode::OK));
        let ta = TestApp::tokens_of(&ra.json().await.expect("json"));
        let tb = TestApp::tokens_of(&rb.json().await.expect("json"));
        assert_eq!(
            ta.refresh, tb.refresh,
            "one successor, never two live sessions"
        );
        let me_a: Value = a.me(&ta.access).await.json().await.expect("json");
        let me_b: Value = b.me(&tb.access).await.json().await.expect("json");
        assert_eq!(me_a["session_id"], me_b["session_id"]);
        // After the grace window the spent token is reuse, seen by either replica.
        a.clock.advance(11);
        assert_eq!(
            b.refresh(&fresh.refresh).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            a.refresh(&ta.refresh).await.status(),
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test]
async fn sqlite_in_process_bus() {
    two_replicas(Db::Sqlite, BusKind::InProcess).await;
}

#[tokio::test]
async fn sqlite_sql_tail_bus() {
    two_replicas(Db::Sqlite, BusKind::Sql).await;
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn sqlite_redis_bus() {
    two_replicas(Db::Sqlite, BusKind::Redis).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
async fn postgres_in_process_bus() {
    two_replicas(Db::Postgres, BusKind::InProcess).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
async fn postgres_sql_tail_bus() {
    two_replicas(Db::Postgres, BusKind::Sql).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set HERD_TEST_POSTGRES and HERD_TEST_REDIS"]
async fn postgres_redis_bus() {
    two_replicas(Db::Postgres, BusKind::Redis).await;
}
