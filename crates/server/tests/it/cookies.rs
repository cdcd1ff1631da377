//! The browser transport: HttpOnly, SameSite cookies, and CSRF protection for
//! cookie-authenticated writes, under every strategy.

use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_with, Options, TestApp, PASSWORD};
use herd_identity::Strategy;

/// The cookies a response set, as `name=value` pairs, and their attributes.
fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

fn cookie_value(set: &[String], name: &str) -> Option<String> {
    set.iter().find_map(|c| {
        c.split(';')
            .next()?
            .strip_prefix(&format!("{name}="))
            .map(str::to_owned)
    })
}

struct Browser {
    cookies: Vec<(String, String)>,
    csrf: String,
}

impl Browser {
    async fn login(app: &TestApp, user: &str) -> (Browser, Vec<String>) {
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
        let set = set_cookies(response.headers());
        let body: Value = response.json().await.expect("json");
        assert!(
            body.get("access_token").is_none(),
            "a cookie login keeps tokens out of reach of scripts"
        );
        assert_eq!(body["token_type"], "cookie");
        let csrf = body["csrf_token"].as_str().expect("csrf").to_owned();
        let mut cookies = Vec::new();
        for name in [
            "herd_access",
            "herd_refresh",
            "herd_csrf",
            "__Host-herd_csrf",
        ] {
            if let Some(v) = cookie_value(&set, name) {
                cookies.push((name.to_owned(), v));
            }
        }
        (Browser { cookies, csrf }, set)
    }

    fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn post(
        &self,
        app: &TestApp,
        path: &str,
        origin: Option<&str>,
        csrf: Option<&str>,
    ) -> Response {
        let mut request = app
            .client
            .post(app.url(path))
            .header(COOKIE, self.header())
            .header("content-type", "application/json")
            .body("{}");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send().await.expect("request")
    }

    async fn me(&self, app: &TestApp) -> Response {
        app.client
            .get(app.url("/v1/me"))
            .header(COOKIE, self.header())
            .send()
            .await
            .expect("request")
    }
}

async fn cookie_login_and_csrf(strategy: Strategy) {
    let app = spawn_with(Options {
        strategy,
        insecure_cookies: false,
        ..Options::default()
    })
    .await;
    let (browser, set) = Browser::login(&app, "alice").await;
    let access = set
        .iter()
        .find(|c| c.starts_with("herd_access="))
        .expect("access cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(access.contains(attribute), "{access} lacks {attribute}");
    }
    let csrf_cookie = set
        .iter()
        .find(|c| c.starts_with("__Host-herd_csrf="))
        .expect("csrf cookie, __Host- prefixed since cookies are Secure");
    assert!(
        !csrf_cookie.contains("HttpOnly"),
        "the page must be able to read the CSRF token"
    );
    for attribute in ["SameSite=Strict", "Secure", "Path=/"] {
        assert!(
            csrf_cookie.contains(attribute),
            "{csrf_cookie} lacks {attribute}"
        );
    }
    if let Some(refresh) = set.iter().find(|c| c.starts_with("herd_refresh=")) {
        // The refresh token goes only where it is spent, and never to a script.
        for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/v1/auth"] {
            assert!(refresh.contains(attribute), "{refresh} lacks {attribute}");
        }
    }
    assert_eq!(
        set.iter().any(|c| c.starts_with("herd_refresh=")),
        strategy == Strategy::Token
    );

    assert_eq!(
        browser.me(&app).await.status(),
        StatusCode::OK,
        "a cookie authenticates a read"
    );

    let own = app.base.clone();
    // A forged cross-site POST: the browser attaches the cookies, but the attacker's page
    // can neither read the CSRF token nor make the Origin its own.
    let forged = browser
        .post(&app, "/v1/auth/logout", Some("https://evil.example"), None)
        .await;
    assert_problem(forged, StatusCode::FORBIDDEN, "csrf-failed").await;
    let guessed = browser
        .post(
            &app,
            "/v1/auth/logout",
            Some("https://evil.example"),
            Some(&browser.csrf),
        )
        .await;
    assert_problem(guessed, StatusCode::FORBIDDEN, "csrf-failed").await;
    let no_token = browser
        .post(&app, "/v1/auth/logout", Some(&own), None)
        .await;
    assert_problem(no_token, StatusCode::FORBIDDEN, "csrf-failed").await;
    let wrong_token = browser
        .post(&app, "/v1/auth/logout", Some(&own), Some("not-the-token"))
        .await;
    assert_problem(wrong_token, StatusCode::FORBIDDEN, "csrf-failed").await;
    assert_eq!(
        browser.me(&app).await.status(),
        StatusCode::OK,
        "none of those logged the user out"
    );

    if strategy == Strategy::Token {
        let refreshed = browser
            .post(&app, "/v1/auth/refresh", Some(&own), Some(&browser.csrf))
            .await;
        assert_eq!(refreshed.status(), StatusCode::OK);
        let set = set_cookies(refreshed.headers());
        assert!(cookie_value(&set, "herd_access").is_some_and(|v| v != browser.cookies[0].1));
    }

    let logout = browser
        .post(&app, "/v1/auth/logout", Some(&own), Some(&browser.csrf))
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(logout.headers());
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("herd_access=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert_problem(
        browser.me(&app).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
}

#[tokio::test]
async fn cookies_and_csrf_under_token() {
    cookie_login_and_csrf(Strategy::Token).await;
}

#[tokio::test]
async fn cookies_and_csrf_under_shared_sql() {
    cookie_login_and_csrf(Strategy::Shared).await;
}

#[tokio::test]
async fn cookies_and_csrf_under_memory() {
    cookie_login_and_csrf(Strategy::Memory).await;
}

#[tokio::test]
async fn a_bearer_request_needs_no_csrf_token() {
    let app = spawn_with(Options::default()).await;
    let tokens = app.user("bob").await;
    let response = app
        .client
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(&tokens.access)
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .expect("request");
    // A page cannot make a browser attach a bearer header cross-site, so it is no CSRF.
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}
