//! Login throttling: per account (failed attempts) and per client address (every
//! attempt), 429 with `Retry-After`, the client address behind a trusted proxy, and the
//! limit shared by replicas through Redis or kept by each one without it.

use std::time::Duration;

use herd_identity::{Rate, ThrottleConfig};
use herd_server::client::{Cidr, TrustedProxies};
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::{assert_problem, metric, spawn_with, Options, TestApp, PASSWORD};

fn rate(attempts: u32, period_secs: i64) -> Option<Rate> {
    Some(Rate {
        attempts,
        period_secs,
    })
}

/// Failed logins per (account, address) and attempts per address; the per-account
/// ceiling over all addresses is off here (`lockout.rs` tests it).
fn limits(account: Option<Rate>, address: Option<Rate>) -> ThrottleConfig {
    ThrottleConfig {
        account: None,
        account_address: account,
        address,
        // Redis-backed meters outlive the run; every run signs up from 127.0.0.1.
        signup: None,
        ..ThrottleConfig::default()
    }
}

async fn app(throttle: ThrottleConfig) -> TestApp {
    spawn_with(Options {
        throttle,
        ..Options::default()
    })
    .await
}

async fn signed_up(app: &TestApp, username: &str) {
    assert_eq!(
        app.signup(username, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

/// A login that says it was forwarded for `forwarded_for`.
async fn login_via(app: &TestApp, forwarded_for: &str, username: &str, password: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("request")
}

/// Asserts the throttle's answer and returns its `Retry-After`.
async fn assert_throttled(response: Response) -> u64 {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a Retry-After of whole seconds");
    let body = assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "too-many-attempts").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("{retry_after} seconds"))),
        "{body}"
    );
    retry_after
}

#[tokio::test]
async fn past_its_failed_attempts_an_account_gets_429_until_one_refills() {
    // 3 attempts a minute: a burst of 3, then one every 20 s.
    let app = app(limits(rate(3, 60), None)).await;
    signed_up(&app, "alice").await;
    signed_up(&app, "bob").await;
    for _ in 0..3 {
        assert_eq!(
            app.try_login("alice", "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Refused before the password is looked at: the right one is refused too.
    assert_eq!(
        assert_throttled(app.try_login("Alice", PASSWORD).await).await,
        20
    );
    app.clock.advance(15);
    assert_eq!(
        assert_throttled(app.try_login("alice", PASSWORD).await).await,
        5,
        "the wait counts down with the clock"
    );
    assert_eq!(
        app.try_login("bob", "wrong password").await.status(),
        StatusCode::UNAUTHORIZED,
        "another account is untouched"
    );
    assert!(
        metric(
            &app.metrics().await,
            r#"herd_auth_failures_total{kind="login",reason="throttled"}"#
        ) >= 2
    );

    app.clock.advance(5);
    app.login("alice").await;
    // The owner logged in: the failures before are forgiven, and a full burst is back.
    for _ in 0..3 {
        assert_eq!(
            app.try_login("alice", "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(app.try_login("alice", PASSWORD).await).await;
}

#[tokio::test]
async fn unknown_and_malformed_usernames_are_throttled_like_real_ones() {
    let app = app(limits(rate(2, 60), None)).await;
    for name in ["nobody", "no body at all!"] {
        for _ in 0..2 {
            assert_eq!(
                app.try_login(name, "wrong password").await.status(),
                StatusCode::UNAUTHORIZED
            );
        }
        assert_throttled(app.try_login(name, "wrong password").await).await;
    }
}

#[tokio::test]
async fn the_address_limit_counts_every_attempt_from_a_client() {
    let app = app(limits(None, rate(3, 60))).await;
    signed_up(&app, "alice").await;
    app.login("alice").await;
    app.login("alice").await;
    assert_eq!(
        app.try_login("bob", "wrong password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        assert_throttled(app.try_login("alice", PASSWORD).await).await,
        20
    );
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_a_peer_that_is_not_a_trusted_proxy() {
    let app = app(limits(None, rate(2, 60))).await;
    signed_up(&app, "alice").await;
    // A client cannot buy itself fresh limits by claiming to be someone else.
    for spoofed in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(
            login_via(&app, spoofed, "alice", "wrong password")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(login_via(&app, "203.0.113.3", "alice", PASSWORD).await).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = spawn_with(Options {
        throttle: limits(None, rate(2, 60)),
        trusted_proxies: TrustedProxies::new(vec![Cidr::parse("127.0.0.1").expect("cidr")]),
        ..Options::default()
    })
    .await;
    signed_up(&app, "alice").await;
    for _ in 0..2 {
        assert_eq!(
            login_via(&app, "203.0.113.1", "alice", "wrong password")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(login_via(&app, "203.0.113.1", "alice", PASSWORD).await).await;
    // The proxy appended 203.0.113.1; whatever the client wrote to its left is ignored.
    assert_throttled(login_via(&app, "198.51.100.77, 203.0.113.1", "alice", PASSWORD).await).await;
    assert_eq!(
        login_via(&app, "203.0.113.2", "alice", PASSWORD)
            .await
            .status(),
        StatusCode::OK,
        "another client behind the same proxy"
    );
}

#[tokio::test]
async fn without_redis_each_replica_counts_on_its_own() {
    let a = app(limits(rate(2, 60), None)).await;
    let b = a.spawn_peer("test-b").await;
    signed_up(&a, "alice").await;
    for _ in 0..2 {
        assert_eq!(
            a.try_login("alice", "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(a.try_login("alice", "wrong password").await).await;
    // Documented in --help: N replicas without Redis grant N times the attempts.
    assert_eq!(
        b.try_login("alice", "wrong password").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

fn redis_url() -> String {
    std::env::var("HERD_TEST_REDIS")
        .expect("this test needs Redis: set HERD_TEST_REDIS=redis://127.0.0.1:6379")
}

/// A name no other run of the suite uses, since Redis outlives the test.
fn fresh_name() -> String {
    format!("t{}", &herd_identity::random_id()[..8])
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn with_redis_two_replicas_grant_the_limit_once_not_twice() {
    let a = spawn_with(Options {
        redis_url: Some(redis_url()),
        throttle: limits(rate(4, 60), rate(6, 60)),
        trusted_proxies: TrustedProxies::new(vec![Cidr::parse("127.0.0.1").expect("cidr")]),
        ..Options::default()
    })
    .await;
    let b = a.spawn_peer("test-b").await;
    assert_eq!(a.auth.throttle_backend(), "redis");

    // Per account: four failures in all, alternating replicas, then both refuse.
    let user = fresh_name();
    signed_up(&a, &user).await;
    let client = format!("fd00:{}::1", &herd_identity::random_id()[..4]);
    for replica in [&a, &b, &a, &b] {
        assert_eq!(
            login_via(replica, &client, &user, "wrong password")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        assert_throttled(login_via(&a, &client, &user, PASSWORD).await).await,
        15
    );
    assert_throttled(login_via(&b, &client, &user, PASSWORD).await).await;

    // Per address: six attempts in all from one client (two already refused ones took
    // nothing), whichever replica they reach.
    let other = fresh_name();
    signed_up(&b, &other).await;
    assert_eq!(
        login_via(&b, &client, &other, PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        login_via(&a, &client, &other, PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_throttled(login_via(&a, &client, &other, PASSWORD).await).await;
    assert_throttled(login_via(&b, &client, &other, PASSWORD).await).await;

    // The refill follows identity's clock, which both replicas share here.
    a.clock.advance(10);
    assert_eq!(
        login_via(&b, &client, &other, PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn when_redis_is_unreachable_logins_fall_back_to_the_per_replica_limit() {
    let app = spawn_with(Options {
        // Nothing listens on port 1.
        redis_url: Some("redis://127.0.0.1:1".into()),
        throttle: limits(rate(2, 60), None),
        ..Options::default()
    })
    .await;
    signed_up(&app, "alice").await;
    app.login("alice").await;
    for _ in 0..2 {
        assert_eq!(
            app.try_login("alice", "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(app.try_login("alice", PASSWORD).await).await;
}

#[tokio::test]
async fn a_redis_that_never_answers_does_not_hang_a_login() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("redis://{}", silent.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let app = spawn_with(Options {
        redis_url: Some(url),
        throttle: limits(rate(2, 60), None),
        ..Options::default()
    })
    .await;
    signed_up(&app, "alice").await;
    // A guard against hanging forever, not a measure of speed: the throttle's own
    // timeouts end the wait in a few seconds.
    let attempts = async {
        let mut statuses = Vec::new();
        for password in ["wrong password", "wrong password", PASSWORD] {
            statuses.push(app.try_login("alice", password).await.status());
        }
        statuses
    };
    let statuses = tokio::time::timeout(Duration::from_secs(60), attempts)
        .await
        .expect("logins finished although Redis never answered");
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "still throttled, by this replica alone"
    );
    hold.abort();
}
