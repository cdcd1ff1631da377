//! Account lockout by strangers: an attacker hammers an account with wrong passwords,
//! from one address and then from fifty (behind a trusted proxy, X-Forwarded-For gives
//! each request its address), while the owner logs in from elsewhere. The attacker is
//! held to the limits; the owner gets in at the first try.

use herd_identity::{Rate, ThrottleConfig};
use herd_server::client::{Cidr, TrustedProxies};
use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_with, Options, TestApp, PASSWORD};

/// A replica behind a trusted proxy (the test client), with `throttle`.
async fn behind_proxy(throttle: ThrottleConfig, redis_url: Option<String>) -> TestApp {
    spawn_with(Options {
        throttle,
        redis_url,
        trusted_proxies: TrustedProxies::new(vec![
            Cidr::parse("127.0.0.1").expect("cidr"),
            Cidr::parse("::1").expect("cidr"),
        ]),
        ..Options::default()
    })
    .await
}

/// A login from `from` as a browser, with the device cookie when given: its status and
/// the device cookie it sets, if any.
async fn login_from(
    app: &TestApp,
    from: &str,
    username: &str,
    password: &str,
    device: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut request = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", from)
        .json(&json!({ "username": username, "password": password, "cookies": true }));
    if let Some(device) = device {
        request = request.header("cookie", format!("herd_device={device}"));
    }
    let response = request.send().await.expect("login");
    let device = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()?
                .strip_prefix("herd_device=")
                .map(str::to_owned)
        });
    (response.status(), device)
}

/// Counts the answers of `attempts` wrong-password logins from each of `addresses`.
async fn hammer(
    app: &TestApp,
    addresses: &[String],
    attempts: usize,
    username: &str,
    device: Option<&str>,
) -> (usize, usize) {
    let (mut checked, mut throttled) = (0, 0);
    for address in addresses {
        for _ in 0..attempts {
            match login_from(app, address, username, "wrong password", device)
                .await
                .0
            {
                StatusCode::UNAUTHORIZED => checked += 1,
                StatusCode::TOO_MANY_REQUESTS => throttled += 1,
                other => panic!("a wrong password got {other}"),
            }
        }
    }
    (checked, throttled)
}

async fn signup(app: &TestApp, username: &str) {
    assert_eq!(
        app.signup(username, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn lockout_an_attacker_from_one_address_cannot_lock_the_owner_out() {
    // The production limits: 5 failures per (account, address) per 15 minutes, a
    // ceiling of 100 per account, 100 attempts a minute per address.
    let app = behind_proxy(ThrottleConfig::default(), None).await;
    signup(&app, "alice").await;
    let attacker = vec!["203.0.113.66".to_owned()];
    let (checked, throttled) = hammer(&app, &attacker, 200, "alice", None).await;
    assert_eq!(
        (checked, throttled),
        (5, 195),
        "five passwords checked, the rest refused unchecked"
    );
    // The owner, from home, with no device cookie: first try.
    let (status, device) = login_from(&app, "198.51.100.7", "alice", PASSWORD, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        device.is_some(),
        "a successful login hands out a device cookie"
    );
    // The owner's success forgave nothing of the attacker's.
    assert_eq!(
        login_from(&app, "203.0.113.66", "alice", PASSWORD, None)
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn lockout_an_attacker_from_fifty_addresses_cannot_lock_out_a_browser_that_logged_in_before()
{
    let app = behind_proxy(ThrottleConfig::default(), None).await;
    signup(&app, "alice").await;
    signup(&app, "mallory").await;
    let (status, device) = login_from(&app, "198.51.100.7", "alice", PASSWORD, None).await;
    assert_eq!(status, StatusCode::OK);
    let device = device.expect("a device cookie");
    // The attacker's own device cookie, and a forged one, exempt nothing for alice.
    let (_, mallorys) = login_from(&app, "203.0.113.1", "mallory", PASSWORD, None).await;
    let mallorys = mallorys.expect("a device cookie");

    let attackers: Vec<String> = (1..=50).map(|i| format!("203.0.113.{i}")).collect();
    let (checked, _) = hammer(&app, &attackers[..25], 10, "alice", Some(&mallorys)).await;
    let (more, _) = hammer(&app, &attackers[25..], 10, "alice", Some("forged.token")).await;
    assert_eq!(
        checked + more,
        100,
        "500 guesses from 50 addresses: the per-account ceiling let 100 be checked"
    );

    // The owner's browser, from an address it never used: first try.
    let (status, _) = login_from(&app, "198.51.100.8", "alice", PASSWORD, Some(&device)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the device cookie exempts the owner"
    );
    // The limit that remains, as docs/security.md says: a browser that never logged in
    // to the account waits for the ceiling to refill.
    assert_eq!(
        login_from(&app, "198.51.100.9", "alice", PASSWORD, None)
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The owner's success did not refill the ceiling for strangers.
    let fresh = vec!["203.0.113.51".to_owned()];
    assert_eq!(hammer(&app, &fresh, 1, "alice", None).await, (0, 1));
}

#[tokio::test]
async fn lockout_a_stolen_device_cookie_buys_no_more_guesses_than_one_address() {
    let app = behind_proxy(ThrottleConfig::default(), None).await;
    signup(&app, "alice").await;
    let (_, device) = login_from(&app, "198.51.100.7", "alice", PASSWORD, None).await;
    let device = device.expect("a device cookie");
    let thieves: Vec<String> = (1..=10).map(|i| format!("203.0.113.{i}")).collect();
    let (checked, throttled) = hammer(&app, &thieves, 3, "alice", Some(&device)).await;
    assert_eq!(
        (checked, throttled),
        (5, 25),
        "the device is metered like one address"
    );
}

#[tokio::test]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn lockout_with_redis_fifty_addresses_on_two_replicas_meet_one_ceiling() {
    let redis = std::env::var("HERD_TEST_REDIS")
        .expect("this test needs Redis: set HERD_TEST_REDIS=redis://127.0.0.1:6379");
    let throttle = ThrottleConfig {
        account: Some(Rate {
            attempts: 40,
            period_secs: 900,
        }),
        // Redis-backed meters outlive the run; every run signs up from 127.0.0.1.
        signup: None,
        ..ThrottleConfig::default()
    };
    let a = behind_proxy(throttle, Some(redis)).await;
    let b = a.spawn_peer("test-b").await;
    assert_eq!(a.auth.throttle_backend(), "redis");
    // Redis outlives the test: names and addresses no other run uses.
    let run = &herd_identity::random_id()[..4];
    let user = format!("t{}", &herd_identity::random_id()[..8]);
    assert_eq!(
        a.signup(&user, PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let (status, device) = login_from(&a, &format!("fd01:{run}::1"), &user, PASSWORD, None).await;
    assert_eq!(status, StatusCode::OK);
    let device = device.expect("a device cookie");
    let attackers: Vec<String> = (1..=50).map(|i| format!("fd02:{run}:{i:x}::1")).collect();
    let (on_a, _) = hammer(&a, &attackers[..25], 4, &user, None).await;
    let (on_b, _) = hammer(&b, &attackers[25..], 4, &user, None).await;
    assert_eq!(on_a + on_b, 40, "one ceiling for both replicas");
    let (status, _) = login_from(
        &b,
        &format!("fd03:{run}::1"),
        &user,
        PASSWORD,
        Some(&device),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the owner's browser gets in");
}
