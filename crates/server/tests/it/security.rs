//! Attacks on what `docs/security.md` promises, each test named after what it attacks.
//! The login lockout has its own module (`lockout.rs`).

use std::time::Duration;

use herd_identity::ThrottleConfig;
use herd_server::client::{Cidr, TrustedProxies};
use reqwest::header::SET_COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, spawn_with, Options, TestApp, PASSWORD};

/// Counts the series of a metric family in `/metrics`' text.
fn series(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .count()
}

#[tokio::test]
async fn made_up_http_methods_add_no_metric_series() {
    let app = spawn_app().await;
    let before = series(&app.metrics().await, "herd_http_requests_total");
    for i in 0..300 {
        let method = Method::from_bytes(format!("PROBE{i}").as_bytes()).expect("a method token");
        let response = app
            .client
            .request(method, app.url(&format!("/made/up/path/{i}")))
            .send()
            .await
            .expect("request");
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let text = app.metrics().await;
    assert!(
        !text.contains("PROBE"),
        "no client-chosen method in a label"
    );
    assert!(
        !text.contains("/made/up"),
        "no client-chosen path in a label"
    );
    // The first `/metrics` request adds its own series, and the probes one `other`
    // series per status they got: a handful, whatever their number.
    let after = series(&text, "herd_http_requests_total");
    assert!(after <= before + 3, "{before} -> {after} series:\n{text}");
    assert!(
        text.contains(r#"method="other",route="(unmatched)""#),
        "{text}"
    );
}

/// A replica behind a trusted proxy (the test client), so X-Forwarded-For names the
/// client, configured by `options` otherwise.
async fn behind_proxy(options: Options) -> TestApp {
    spawn_with(Options {
        trusted_proxies: TrustedProxies::new(vec![Cidr::parse("127.0.0.1").expect("cidr")]),
        ..options
    })
    .await
}

async fn signup_from(app: &TestApp, from: &str, username: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/signup"))
        .header("x-forwarded-for", from)
        .json(&json!({ "username": username, "password": PASSWORD }))
        .send()
        .await
        .expect("signup")
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After of whole seconds")
}

#[tokio::test]
async fn signup_flood_from_one_address_is_throttled_per_address() {
    // The production limit: 20 signups an hour per address (in-process meters: this
    // replica has no Redis).
    let app = behind_proxy(Options {
        throttle: ThrottleConfig::default(),
        ..Options::default()
    })
    .await;
    for i in 0..20 {
        assert_eq!(
            signup_from(&app, "203.0.113.5", &format!("flood{i}"))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let refused = signup_from(&app, "203.0.113.5", "flood20").await;
    assert_eq!(
        retry_after(&refused),
        180,
        "one signup refills every 3 minutes"
    );
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "too-many-signups").await;
    assert_eq!(
        signup_from(&app, "198.51.100.5", "someone").await.status(),
        StatusCode::CREATED,
        "another address is untouched"
    );
}

#[tokio::test]
async fn signup_flood_that_takes_every_signup_hashing_slot_gets_503_and_logins_still_hash() {
    let app = spawn_with(Options {
        hash_permit_wait: Duration::ZERO,
        ..Options::default()
    })
    .await;
    app.user("alice").await;
    // As if a flood of signups held every slot signups may use.
    let held = app.auth.hold_signup_slots().await;
    let refused = app.signup("bob", PASSWORD).await;
    assert!(retry_after(&refused) >= 1);
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK,
        "logins hash through the other half of the slots"
    );
    drop(held);
    assert_eq!(
        app.signup("bob", PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn refresh_flood_is_limited_per_session_and_its_rows_stay_bounded() {
    // The production limit: 10 refreshes per 5 minutes, one every 30 s after the burst.
    let app = spawn_app().await;
    let mut refresh = app.user("alice").await.refresh;
    let mut granted = 0;
    let mut last = None;
    for _ in 0..200 {
        let response = app.refresh(&refresh).await;
        if response.status() == StatusCode::OK {
            granted += 1;
            refresh = TestApp::tokens_of(&response.json().await.expect("json")).refresh;
        } else {
            last = Some(response);
            break;
        }
    }
    assert_eq!(granted, 10, "the burst");
    let refused = last.expect("the 11th refresh was refused");
    assert_eq!(retry_after(&refused), 30);
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "too-many-refreshes").await;
    let (sessions, tokens) = app.auth.store().session_rows().await.expect("rows");
    assert_eq!(
        (sessions, tokens),
        (1, 11),
        "one row per refresh granted, no more"
    );

    // The refused refresh spent nothing: the same token works once the meter refills.
    app.clock.advance(30);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK);
    assert_eq!(
        app.refresh(&refresh).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a replay in the grace window is metered too"
    );
}

#[tokio::test]
async fn replaying_a_spent_refresh_token_inside_the_grace_window_mints_a_bounded_number_of_tokens()
{
    let app = spawn_app().await;
    let spent = app.user("alice").await.refresh;
    assert_eq!(app.refresh(&spent).await.status(), StatusCode::OK);
    let mut minted = 0;
    for _ in 0..100 {
        match app.refresh(&spent).await.status() {
            StatusCode::OK => minted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("a replay got {other}"),
        }
    }
    assert_eq!(
        minted, 9,
        "the session's burst of 10, one taken by the rotation"
    );
}

#[tokio::test]
async fn ended_sessions_are_pruned_from_the_store() {
    let app = spawn_app().await;
    let kept = app.user("alice").await;
    let ended = [app.login("alice").await, app.login("alice").await];
    for tokens in &ended {
        assert_eq!(
            app.logout(&tokens.access).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    app.auth.maintain().await.expect("upkeep");
    let (sessions, _) = app.auth.store().session_rows().await.expect("rows");
    assert_eq!(sessions, 1, "only the live session is left");
    assert_eq!(app.me(&kept.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.refresh(&kept.refresh).await.status(),
        StatusCode::OK,
        "the live session still refreshes"
    );
    // Past its refresh tokens' expiry nothing can refresh it: it goes too.
    app.clock.advance(14 * 86_400 + 1);
    app.auth.maintain().await.expect("upkeep");
    assert_eq!(app.auth.store().session_rows().await.expect("rows"), (0, 0));
}

#[tokio::test]
async fn a_revoked_session_stays_refused_until_its_tokens_can_no_longer_pass() {
    let app = spawn_app().await;
    let tokens = app.user("alice").await;
    assert_eq!(
        app.logout(&tokens.access).await.status(),
        StatusCode::NO_CONTENT
    );
    // The token expires at +300 s and passes until +305 s with the 5 s leeway: upkeep
    // then must not have dropped the revocation, here or on a replica starting now.
    app.clock.advance(305);
    app.auth.maintain().await.expect("upkeep");
    let peer = app.spawn_peer("test-b").await;
    for replica in [&app, &peer] {
        let refused = replica.me(&tokens.access).await;
        let body = assert_problem(refused, StatusCode::UNAUTHORIZED, "invalid-token").await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("revoked")),
            "{body}"
        );
    }
}

/// Logs `user` in as a browser: the `Cookie` header its requests carry and the CSRF
/// token the login gave it.
async fn browser(app: &TestApp, user: &str) -> (String, String) {
    assert_eq!(
        app.signup(user, PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let response = app
        .post_json(
            "/v1/auth/login",
            json!({ "username": user, "password": PASSWORD, "cookies": true }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next())
        .collect::<Vec<_>>()
        .join("; ");
    let body: serde_json::Value = response.json().await.expect("json");
    (
        cookie,
        body["csrf_token"].as_str().expect("csrf").to_owned(),
    )
}

async fn logout_with(app: &TestApp, cookie: &str, origin: &str, csrf: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/logout"))
        .header("cookie", cookie)
        .header("origin", origin)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .expect("logout")
}

#[tokio::test]
async fn csrf_token_of_another_session_is_refused() {
    let app = spawn_app().await;
    let (alice, alices_token) = browser(&app, "alice").await;
    let (_, mallorys_token) = browser(&app, "mallory").await;
    // Mallory's own token, in the header and (as a double-submit check would want) in
    // the CSRF cookie too.
    let planted = format!("{alice}; herd_csrf={mallorys_token}");
    let refused = logout_with(&app, &planted, &app.base, &mallorys_token).await;
    assert_problem(refused, StatusCode::FORBIDDEN, "csrf-failed").await;
    assert_eq!(
        logout_with(&app, &alice, &app.base, &alices_token)
            .await
            .status(),
        StatusCode::NO_CONTENT,
        "the session's own token passes"
    );
}

#[tokio::test]
async fn csrf_cookie_carries_the_host_prefix_where_cookies_are_secure() {
    let app = spawn_with(Options {
        insecure_cookies: false,
        ..Options::default()
    })
    .await;
    assert_eq!(
        app.signup("alice", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let response = app
        .post_json(
            "/v1/auth/login",
            json!({ "username": "alice", "password": PASSWORD, "cookies": true }),
        )
        .await;
    let set: Vec<String> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let csrf = set
        .iter()
        .find(|c| c.starts_with("__Host-herd_csrf="))
        .expect("a __Host- CSRF cookie");
    assert!(
        csrf.contains("; Path=/;") && csrf.contains("Secure"),
        "{csrf}"
    );
    assert!(!csrf.contains("Domain"), "{csrf}");
    assert!(
        !set.iter().any(|c| c.starts_with("herd_csrf=")),
        "no unprefixed copy: {set:?}"
    );
}

#[tokio::test]
async fn an_origin_with_the_right_host_but_the_wrong_scheme_is_refused() {
    // The public origin is https: a page served over plain http on the same host (what
    // an attacker on the network can inject) may not write with the user's cookies.
    let app = spawn_with(Options {
        issuer: "https://herd.test".into(),
        ..Options::default()
    })
    .await;
    let (cookie, csrf) = browser(&app, "alice").await;
    let host = app.base.trim_start_matches("http://").to_owned();
    let plain = format!("http://{host}");
    let refused = logout_with(&app, &cookie, &plain, &csrf).await;
    assert_problem(refused, StatusCode::FORBIDDEN, "csrf-failed").await;
    let origins = [format!("https://{host}"), "https://herd.test".to_owned()];
    for (i, origin) in origins.iter().enumerate() {
        let (cookie, csrf) = browser(&app, &format!("user{i}")).await;
        assert_eq!(
            logout_with(&app, &cookie, origin, &csrf).await.status(),
            StatusCode::NO_CONTENT,
            "{origin}"
        );
    }
}
