//! The three session strategies behind one API: what each keeps, where, and what that
//! costs when a request lands on another replica or a store goes away.

use std::process::Command;
use std::time::{Duration, Instant};

use herd_bus::testing::RedisServer;
use herd_identity::Strategy;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_problem, metric, spawn_with, Options, TestApp, PASSWORD, TIMEOUTS};

fn redis_url() -> String {
    std::env::var("HERD_TEST_REDIS")
        .expect("this test needs Redis: set HERD_TEST_REDIS=redis://127.0.0.1:6379")
}

async fn app(strategy: Strategy, redis: Option<String>) -> TestApp {
    spawn_with(Options {
        strategy,
        redis_url: redis,
        ..Options::default()
    })
    .await
}

/// The same endpoints behave the same under every strategy; refresh is token-only.
async fn same_api(app: &TestApp) {
    let tokens = app.user("alice").await;
    let me: Value = app.me(&tokens.access).await.json().await.expect("json");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["replica"], "test-a");

    let refresh = app.refresh(&tokens.refresh).await;
    if app.options.strategy == Strategy::Token {
        assert_eq!(refresh.status(), StatusCode::OK);
    } else {
        assert!(tokens.refresh.is_empty(), "no refresh token outside token");
        let body = assert_problem(refresh, StatusCode::BAD_REQUEST, "refresh-not-supported").await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("--sessions")),
            "{body}"
        );
    }

    assert_eq!(
        app.logout(&tokens.access).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.me(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    assert_problem(
        app.me("x".repeat(43).as_str()).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
}

/// Whether a login on replica A is recognised by replica B.
async fn seen_by_a_peer(app: &TestApp) -> bool {
    let peer = app.spawn_peer("test-b").await;
    let tokens = app.user("carol").await;
    peer.me(&tokens.access).await.status() == StatusCode::OK
}

/// A session ends after the idle timeout unless used; a read counts as use.
async fn idle_sessions_slide_then_end(app: &TestApp) {
    let tokens = app.user("dave").await;
    app.clock.advance(TIMEOUTS.idle - 1);
    assert_eq!(
        app.me(&tokens.access).await.status(),
        StatusCode::OK,
        "a read inside the idle timeout"
    );
    app.clock.advance(TIMEOUTS.idle - 1);
    assert_eq!(
        app.me(&tokens.access).await.status(),
        StatusCode::OK,
        "the read above extended it"
    );
    app.clock.advance(TIMEOUTS.idle);
    let response = app.me(&tokens.access).await;
    let body = assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-token").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no such session")),
        "{body}"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"herd_auth_failures_total{kind="access_token",reason="unknown_session"}"#
        ),
        1
    );
}

/// The absolute timeout ends a session however busy it is.
async fn absolute_timeout_ends_a_busy_session(app: &TestApp) {
    let tokens = app.user("erin").await;
    let mut elapsed = 0;
    while elapsed + TIMEOUTS.idle / 2 < TIMEOUTS.absolute {
        app.clock.advance(TIMEOUTS.idle / 2);
        elapsed += TIMEOUTS.idle / 2;
        assert_eq!(
            app.me(&tokens.access).await.status(),
            StatusCode::OK,
            "at {elapsed}"
        );
    }
    app.clock.advance(TIMEOUTS.absolute - elapsed);
    assert_eq!(
        app.me(&tokens.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn token_serves_the_same_api() {
    same_api(&app(Strategy::Token, None).await).await;
}

#[tokio::test]
async fn memory_serves_the_same_api() {
    same_api(&app(Strategy::Memory, None).await).await;
}

#[tokio::test]
async fn shared_sql_serves_the_same_api() {
    same_api(&app(Strategy::Shared, None).await).await;
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn shared_redis_serves_the_same_api() {
    same_api(&app(Strategy::Shared, Some(redis_url())).await).await;
}

#[tokio::test]
async fn a_memory_session_is_unknown_to_every_other_replica() {
    assert!(!seen_by_a_peer(&app(Strategy::Memory, None).await).await);
}

#[tokio::test]
async fn token_and_shared_sessions_are_known_to_every_replica() {
    assert!(seen_by_a_peer(&app(Strategy::Token, None).await).await);
    assert!(seen_by_a_peer(&app(Strategy::Shared, None).await).await);
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn a_redis_session_is_known_to_every_replica() {
    assert!(seen_by_a_peer(&app(Strategy::Shared, Some(redis_url())).await).await);
}

#[tokio::test]
async fn memory_sessions_slide_then_end() {
    let app = app(Strategy::Memory, None).await;
    idle_sessions_slide_then_end(&app).await;
    absolute_timeout_ends_a_busy_session(&app).await;
}

#[tokio::test]
async fn shared_sql_sessions_slide_then_end() {
    let app = app(Strategy::Shared, None).await;
    idle_sessions_slide_then_end(&app).await;
    absolute_timeout_ends_a_busy_session(&app).await;
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn shared_redis_sessions_slide_then_end() {
    // Redis expires keys on its own clock, so only the absolute timeout, which herd
    // checks against the session's creation time, can be moved by the test clock.
    let app = app(Strategy::Shared, Some(redis_url())).await;
    absolute_timeout_ends_a_busy_session(&app).await;
}

#[tokio::test]
async fn shared_sql_extends_a_session_at_most_once_per_touch_interval() {
    let app = app(Strategy::Shared, None).await;
    let tokens = app.user("frank").await;
    let session_id = app
        .me(&tokens.access)
        .await
        .json::<Value>()
        .await
        .expect("json")["session_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let last_seen = || async {
        app.auth
            .store()
            .shared_session(&session_id)
            .await
            .expect("store")
            .expect("session")
            .last_seen
    };
    let created = last_seen().await;
    for _ in 0..5 {
        app.clock.advance(1);
        assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    }
    assert_eq!(
        last_seen().await,
        created,
        "five reads inside the interval wrote nothing"
    );
    app.clock.advance(TIMEOUTS.touch_interval);
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    assert_eq!(
        last_seen().await,
        created + 5 + TIMEOUTS.touch_interval,
        "one write after it"
    );
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn shared_redis_extends_a_session_at_most_once_per_touch_interval() {
    let url = redis_url();
    let app = app(Strategy::Shared, Some(url.clone())).await;
    let tokens = app.user("gina").await;
    let me: Value = app.me(&tokens.access).await.json().await.expect("json");
    let key = format!("herd:session:{}", me["session_id"].as_str().expect("id"));
    let ttl = || {
        let out = Command::new("redis-cli")
            .args(["-u", &url, "TTL", &key])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .expect("ttl")
    };
    assert!(ttl() <= TIMEOUTS.idle && ttl() > 0);
    // The TTL runs on Redis's clock; lower it by hand to stand for time passing, then
    // check whether a read puts it back.
    let expire = |secs: i64| {
        Command::new("redis-cli")
            .args(["-u", &url, "EXPIRE", &key, &secs.to_string()])
            .output()
            .expect("redis-cli")
    };
    expire(TIMEOUTS.idle - TIMEOUTS.touch_interval + 2);
    app.me(&tokens.access).await;
    assert!(
        ttl() <= TIMEOUTS.idle - TIMEOUTS.touch_interval + 2,
        "recently extended: no write"
    );
    expire(TIMEOUTS.idle - TIMEOUTS.touch_interval - 2);
    app.me(&tokens.access).await;
    assert!(
        ttl() > TIMEOUTS.idle - TIMEOUTS.touch_interval,
        "extended again after the interval"
    );
}

#[tokio::test]
#[ignore = "needs redis-server: set HERD_TEST_REDIS"]
async fn redis_going_down_gives_503_and_herd_recovers_by_itself() {
    let _ = redis_url();
    let mut redis = RedisServer::start();
    let app = app(Strategy::Shared, Some(redis.url())).await;
    let tokens = app.user("hank").await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);

    redis.kill();
    assert_problem(
        app.me(&tokens.access).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    assert_problem(
        app.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    let login = app.try_login("hank", PASSWORD).await;
    assert_problem(login, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;

    // A fresh Redis has lost the sessions (it keeps nothing on disk here), so the old
    // token is now unknown; but herd reconnects without a restart.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if app.get("/readyz").await.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "herd did not reconnect to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tokens = app.login("hank").await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
}
