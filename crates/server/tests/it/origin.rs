//! Cross-site WebSocket hijacking: a browser attaches cookies to a WebSocket upgrade
//! whatever page opened it, and no CORS check stands in the way, so the Origin the browser
//! stamps on the upgrade is the only thing that tells herd's own page from another site's.

use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_with, Options, TestApp, PASSWORD};
use crate::ws::Refusal;

/// Signs `user` up, logs in as a browser does, and returns the `Cookie` header its
/// requests then carry.
async fn browser_cookie(app: &TestApp, user: &str) -> String {
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
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

fn assert_refused_as_cross_site(refusal: Refusal, origin: &str) {
    assert_eq!(refusal.status, 403, "{origin}: {refusal:?}");
    assert_eq!(
        refusal.content_type.as_deref(),
        Some("application/problem+json"),
        "{origin}"
    );
    assert_eq!(
        refusal.body["type"], "urn:herd:problem:csrf-failed",
        "{origin}: {refusal:?}"
    );
}

#[tokio::test]
async fn a_cross_site_upgrade_is_refused_before_the_upgrade_even_with_a_valid_cookie() {
    let app = spawn_with(Options::default()).await;
    let cookie = browser_cookie(&app, "alice").await;
    let own = app.base.clone();
    // The same host on another port is another origin, and "null" is what a sandboxed
    // frame or a data: URL sends.
    let sibling = format!("{}1", own);
    for origin in ["https://evil.example", "null", sibling.as_str()] {
        let refused = app
            .ws_with_headers(&[("cookie", &cookie), ("origin", origin)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{origin} was upgraded"));
        assert_refused_as_cross_site(refused, origin);
    }
    // The cookie itself is good: from the page's own origin the same upgrade succeeds
    // and is authenticated by it.
    let mut socket = app
        .ws_with_headers(&[("cookie", &cookie), ("origin", &own)])
        .await
        .expect("a same-origin upgrade");
    let ready: Value = socket.next_of("ready").await;
    assert!(ready["user_id"].is_string(), "{ready}");
}

#[tokio::test]
async fn a_cross_site_upgrade_is_refused_with_a_bearer_token_too() {
    let app = spawn_with(Options::default()).await;
    let alice = app.user("alice").await;
    let bearer = format!("Bearer {}", alice.access);
    let refused = app
        .ws_with_headers(&[
            ("authorization", &bearer),
            ("origin", "https://evil.example"),
        ])
        .await
        .err()
        .expect("refused");
    assert_refused_as_cross_site(refused, "https://evil.example");
}

#[tokio::test]
async fn an_allowed_origin_may_upgrade_and_no_other() {
    let app = spawn_with(Options {
        allowed_origins: vec!["https://app.example".into()],
        ..Options::default()
    })
    .await;
    let cookie = browser_cookie(&app, "alice").await;
    let mut socket = app
        .ws_with_headers(&[("cookie", &cookie), ("origin", "https://app.example")])
        .await
        .expect("an allowed origin's upgrade");
    assert!(socket.next_of("ready").await["user_id"].is_string());
    for origin in ["https://other.example", "https://app.example.evil.example"] {
        let refused = app
            .ws_with_headers(&[("cookie", &cookie), ("origin", origin)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{origin} was upgraded"));
        assert_refused_as_cross_site(refused, origin);
    }
}

/// Browsers always send Origin on a WebSocket upgrade; a client without one is not a
/// browser, so no other site's page can be behind it, and it must bring its own
/// credentials.
#[tokio::test]
async fn a_client_that_sends_no_origin_is_not_a_browser_and_may_upgrade() {
    let app = spawn_with(Options::default()).await;
    let alice = app.user("alice").await;
    let bearer = format!("Bearer {}", alice.access);
    let mut socket = app
        .ws_with_headers(&[("authorization", &bearer)])
        .await
        .expect("a non-browser upgrade");
    assert!(socket.next_of("ready").await["user_id"].is_string());
}
