//! Read-your-logout across replicas: once a logout (or a refresh-token reuse) has
//! answered, every other live replica already refuses the session's tokens, on each bus;
//! a live replica that never confirms is named in the answer's `herd-unconfirmed`.

use std::time::{Duration, Instant};

use herd_identity::ThrottleConfig;
use reqwest::StatusCode;

use crate::helpers::{spawn_with, Options, TestApp, TestBus};

#[derive(Debug, Clone, Copy)]
enum BusKind {
    InProcess,
    Sql,
    Redis,
}

fn test_bus(kind: BusKind) -> TestBus {
    match kind {
        BusKind::InProcess => TestBus::InProcess(herd_bus::Bus::in_process()),
        BusKind::Sql => TestBus::Sql,
        BusKind::Redis => TestBus::Redis(
            std::env::var("HERD_TEST_REDIS").expect("this test needs Redis: set HERD_TEST_REDIS"),
        ),
    }
}

/// Fifty logins of one account from one address in a few seconds are this test's
/// point, not an attack; with Redis the meters would also outlive the run.
fn unthrottled() -> ThrottleConfig {
    ThrottleConfig {
        account: None,
        address: None,
        signup: None,
        ..ThrottleConfig::default()
    }
}

/// A username no other run of the test has used (Redis-backed meters outlive a run).
fn fresh_user(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &herd_identity::random_id().replace('-', "")[..8]
    )
}

/// Three replicas on one SQLite file and one bus, each knowing the other two as live.
async fn three_replicas(kind: BusKind) -> Vec<TestApp> {
    let options = Options {
        replica_id: "r1".into(),
        bus: test_bus(kind),
        throttle: unthrottled(),
        ..Options::default()
    };
    let r1 = spawn_with(options).await;
    let r2 = r1.spawn_peer("r2").await;
    let r3 = r1.spawn_peer("r3").await;
    let replicas = vec![r1, r2, r3];
    for replica in &replicas {
        until_live(replica, &["r1", "r2", "r3"]).await;
    }
    replicas
}

/// Polls until `replica` counts every one of `ids` but itself as a live peer.
async fn until_live(replica: &TestApp, ids: &[&str]) {
    let me = replica.options.replica_id.as_str();
    let started = Instant::now();
    loop {
        let live = replica.state.confirmations().live_peers();
        if ids
            .iter()
            .filter(|id| **id != me)
            .all(|id| live.iter().any(|l| l == id))
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{me} never heard of {ids:?}, only {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 50 times: log in, log out on one replica, and at once present the same access token
/// to each of the others: every one refuses it, and the logout named no replica as
/// unconfirmed.
async fn logout_holds_on_every_replica(kind: BusKind) {
    let replicas = three_replicas(kind).await;
    let user = fresh_user("alice");
    replicas[0].user(&user).await;
    for round in 0..50 {
        let answering = &replicas[round % 3];
        let tokens = answering.login(&user).await;
        let response = answering.logout(&tokens.access).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            response.headers().get("herd-unconfirmed"),
            None,
            "round {round}: every replica is live and confirms"
        );
        for (i, other) in replicas.iter().enumerate() {
            if i == round % 3 {
                continue;
            }
            assert_eq!(
                other.me(&tokens.access).await.status(),
                StatusCode::UNAUTHORIZED,
                "round {round} ({kind:?}): {} accepted a token logged out on {}",
                other.options.replica_id,
                answering.options.replica_id
            );
        }
    }
}

#[tokio::test]
async fn logout_holds_on_every_replica_in_process_bus() {
    logout_holds_on_every_replica(BusKind::InProcess).await;
}

#[tokio::test]
async fn logout_holds_on_every_replica_sql_tail() {
    logout_holds_on_every_replica(BusKind::Sql).await;
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn logout_holds_on_every_replica_redis() {
    logout_holds_on_every_replica(BusKind::Redis).await;
}

/// A reused refresh token revokes its session; when that 401 answers, the session's
/// access tokens are refused on every other replica too.
async fn refresh_reuse_holds_on_every_replica(kind: BusKind) {
    let replicas = three_replicas(kind).await;
    let tokens = replicas[0].user(&fresh_user("mallory")).await;
    let fresh = replicas[0].refresh(&tokens.refresh).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    let fresh = TestApp::tokens_of(&fresh.json().await.expect("json"));
    replicas[0].clock.advance(11);
    let reused = replicas[1].refresh(&tokens.refresh).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(reused.headers().get("herd-unconfirmed"), None);
    for other in [&replicas[0], &replicas[2]] {
        assert_eq!(
            other.me(&fresh.access).await.status(),
            StatusCode::UNAUTHORIZED,
            "{kind:?}: {} accepted a token of a session revoked for reuse",
            other.options.replica_id
        );
    }
}

#[tokio::test]
async fn refresh_reuse_holds_on_every_replica_in_process_bus() {
    refresh_reuse_holds_on_every_replica(BusKind::InProcess).await;
}

#[tokio::test]
async fn refresh_reuse_holds_on_every_replica_sql_tail() {
    refresh_reuse_holds_on_every_replica(BusKind::Sql).await;
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn refresh_reuse_holds_on_every_replica_redis() {
    refresh_reuse_holds_on_every_replica(BusKind::Redis).await;
}

/// A replica that announces itself but never confirms: the logout still answers (204),
/// naming it, and only it, in `herd-unconfirmed`.
async fn a_replica_that_never_confirms_is_named(kind: BusKind) {
    let options = Options {
        replica_id: "r1".into(),
        bus: test_bus(kind),
        // Short, so that the test does not wait a whole second; no timing is asserted.
        confirm_deadline: Duration::from_millis(200),
        throttle: unthrottled(),
        ..Options::default()
    };
    let r1 = spawn_with(options).await;
    let r2 = r1.spawn_peer("r2").await;
    // "ghost" announces itself on r1's bus and deployment, and then does nothing: it is
    // live for a few seconds and confirms nothing.
    let ghost = herd_server::news::Confirmations::new(
        r1.auth.clone(),
        r1.state.bus().clone(),
        "ghost",
        Duration::from_secs(1),
    );
    ghost.announce(false).await.expect("announce the ghost");
    until_live(&r1, &["r2", "ghost"]).await;

    let tokens = r1.user(&fresh_user("bob")).await;
    let response = r1.logout(&tokens.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        response
            .headers()
            .get("herd-unconfirmed")
            .and_then(|v| v.to_str().ok()),
        Some("ghost"),
        "{kind:?}: the silent replica is named, the confirming one is not"
    );
    // The replica that confirmed refuses the token already.
    assert_eq!(
        r2.me(&tokens.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_replica_that_never_confirms_is_named_in_process_bus() {
    a_replica_that_never_confirms_is_named(BusKind::InProcess).await;
}

#[tokio::test]
async fn a_replica_that_never_confirms_is_named_sql_tail() {
    a_replica_that_never_confirms_is_named(BusKind::Sql).await;
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn a_replica_that_never_confirms_is_named_redis() {
    a_replica_that_never_confirms_is_named(BusKind::Redis).await;
}

/// A replica that stops says so, and a logout right after waits for it no longer.
#[tokio::test]
async fn a_stopped_replica_is_not_waited_for() {
    let mut replicas = three_replicas(BusKind::InProcess).await;
    let mut r3 = replicas.pop().expect("r3");
    r3.stop().await.expect("r3 stops");
    let r1 = &replicas[0];
    let started = Instant::now();
    while r1
        .state
        .confirmations()
        .live_peers()
        .iter()
        .any(|id| id == "r3")
    {
        assert!(started.elapsed() < Duration::from_secs(10), "r3 still live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tokens = r1.user(&fresh_user("carol")).await;
    let response = r1.logout(&tokens.access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers().get("herd-unconfirmed"), None);
}
