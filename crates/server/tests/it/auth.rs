//! Accounts and sessions end to end: signup, login, refresh with rotation, logout, me.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, metric, spawn_app, TestApp, PASSWORD};

#[tokio::test]
async fn signup_login_and_me_identify_the_caller_and_the_replica() {
    let app = spawn_app().await;
    let response = app.signup("Alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-herd-replica"], "test-a");
    let account: Value = response.json().await.expect("json");
    assert_eq!(account["username"], "alice", "usernames are case-folded");

    let response = app.try_login("ALICE", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let tokens = TestApp::tokens_of(&body);
    assert_eq!(tokens.refresh.len(), 43, "256 bits in unpadded base64url");

    let response = app.me(&tokens.access).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-herd-replica"], "test-a");
    let me: Value = response.json().await.expect("json");
    assert_eq!(me["user_id"], account["user_id"]);
    assert_eq!(me["username"], "alice");
    assert_eq!(me["replica"], "test-a");
    assert!(me["session_id"].as_str().is_some_and(|s| s.len() == 36));
}

#[tokio::test]
async fn a_duplicate_username_is_a_conflict_whatever_its_case() {
    let app = spawn_app().await;
    assert_eq!(
        app.signup("bob", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    assert_problem(
        app.signup("BOB", "another password").await,
        StatusCode::CONFLICT,
        "username-taken",
    )
    .await;
}

#[tokio::test]
async fn invalid_signup_fields_are_each_named() {
    let app = spawn_app().await;
    let body = assert_problem(
        app.signup("x", "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["username", "password"]);

    let response = app
        .post_json("/v1/auth/signup", json!({ "username": 42 }))
        .await;
    let body = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    )
    .await;
    assert_eq!(
        body["errors"][0],
        json!({ "field": "username", "message": "must be a string" })
    );
    assert_eq!(
        body["errors"][1],
        json!({ "field": "password", "message": "is required" })
    );

    for bad in ["has space", "émile", &"a".repeat(33)] {
        let response = app.signup(bad, PASSWORD).await;
        assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        )
        .await;
    }
    let response = app.signup("carol", &"p".repeat(129)).await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    )
    .await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_answer_the_same() {
    let app = spawn_app().await;
    app.user("dave").await;
    let wrong = app.try_login("dave", "not the password").await;
    let wrong = assert_problem(wrong, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    let unknown = app.try_login("nobody", PASSWORD).await;
    let unknown = assert_problem(unknown, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    let malformed = app.try_login("?", PASSWORD).await;
    let malformed =
        assert_problem(malformed, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, malformed);
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"herd_auth_failures_total{kind="login",reason="invalid_credentials"}"#
        ),
        3
    );
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_stops_working_after_the_grace_window() {
    let app = spawn_app().await;
    let first = app.user("erin").await;

    let response = app.refresh(&first.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second = TestApp::tokens_of(&response.json().await.expect("json"));
    assert_ne!(second.refresh, first.refresh, "rotated on use");
    assert_eq!(app.me(&second.access).await.status(), StatusCode::OK);

    // Inside the grace window a second tab presenting the same token gets the same
    // successor, so both tabs go on with one session.
    app.clock.advance(10);
    let response = app.refresh(&first.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let again = TestApp::tokens_of(&response.json().await.expect("json"));
    assert_eq!(again.refresh, second.refresh);
    assert_eq!(app.me(&again.access).await.status(), StatusCode::OK);

    // Past it, the spent token is reuse: the whole session is revoked.
    app.clock.advance(1);
    let response = app.refresh(&first.refresh).await;
    let body = assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-refresh-token").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("already used")),
        "{body}"
    );
    assert_problem(
        app.refresh(&second.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    )
    .await;
    assert_problem(
        app.me(&second.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    assert_problem(
        app.me(&first.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"herd_auth_failures_total{kind="refresh_token",reason="reused"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            r#"herd_auth_failures_total{kind="access_token",reason="revoked"}"#
        ),
        2
    );
}

#[tokio::test]
async fn a_chain_of_refreshes_keeps_one_session() {
    let app = spawn_app().await;
    let mut tokens = app.user("frank").await;
    let session = app
        .me(&tokens.access)
        .await
        .json::<Value>()
        .await
        .expect("json")["session_id"]
        .clone();
    for _ in 0..5 {
        app.clock.advance(60);
        let response = app.refresh(&tokens.refresh).await;
        assert_eq!(response.status(), StatusCode::OK);
        tokens = TestApp::tokens_of(&response.json().await.expect("json"));
    }
    let me: Value = app.me(&tokens.access).await.json().await.expect("json");
    assert_eq!(me["session_id"], session);
}

#[tokio::test]
async fn bad_refresh_tokens_are_refused_without_revoking_anything() {
    let app = spawn_app().await;
    let tokens = app.user("gina").await;
    for bad in [
        "",
        "garbage",
        &"A".repeat(43),
        &format!("{}=", tokens.refresh),
    ] {
        let response = app.refresh(bad).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-refresh-token").await;
    }
    let response = app.post_json("/v1/auth/refresh", json!({})).await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    )
    .await;
    assert_eq!(app.refresh(&tokens.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_expired_refresh_token_is_refused() {
    let app = spawn_app().await;
    let tokens = app.user("hank").await;
    app.clock.advance(14 * 24 * 3600);
    let body = assert_problem(
        app.refresh(&tokens.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{body}"
    );
}

#[tokio::test]
async fn logout_revokes_the_access_token_and_the_refresh_token() {
    let app = spawn_app().await;
    let tokens = app.user("iris").await;
    let other_session = app.login("iris").await;
    assert_eq!(
        app.logout(&tokens.access).await.status(),
        StatusCode::NO_CONTENT
    );

    let response = app.me(&tokens.access).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="herd", error="invalid_token""#
    );
    let body = assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-token").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("revoked")),
        "{body}"
    );
    assert_problem(
        app.refresh(&tokens.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    )
    .await;
    assert_problem(
        app.logout(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;

    // Logout ends one login session, not the account's others.
    assert_eq!(app.me(&other_session.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_logout_reaches_a_replica_started_before_it_through_the_store() {
    let a = spawn_app().await;
    let b = a.spawn_peer("test-b").await;
    let tokens = a.user("jack").await;
    let me_b = b.me(&tokens.access).await;
    assert_eq!(
        me_b.status(),
        StatusCode::OK,
        "a token issued by A is accepted by B"
    );
    assert_eq!(me_b.headers()["x-herd-replica"], "test-b");

    assert_eq!(
        a.logout(&tokens.access).await.status(),
        StatusCode::NO_CONTENT
    );
    // B learns of it when it next tails the revocation log (its upkeep does this every
    // few seconds; the test runs one round itself rather than wait).
    b.auth.sync_revocations().await.expect("sync");
    assert_problem(
        b.me(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
}

#[tokio::test]
async fn access_tokens_expire_after_their_ttl_plus_the_leeway() {
    let app = spawn_app().await;
    let tokens = app.user("kate").await;
    app.clock.advance(300 + 5);
    assert_eq!(
        app.me(&tokens.access).await.status(),
        StatusCode::OK,
        "inside the leeway"
    );
    app.clock.advance(1);
    let body = assert_problem(
        app.me(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{body}"
    );
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"herd_auth_failures_total{kind="access_token",reason="expired"}"#
        ),
        1
    );
}
