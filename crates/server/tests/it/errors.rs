//! Bad input is the client's to fix: problem+json with a stable code, never a 500.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, spawn_with, Options};

#[tokio::test]
async fn malformed_json_is_a_400_that_says_where() {
    let app = spawn_app().await;
    let response = app
        .post_raw(
            "/v1/auth/signup",
            "application/json",
            "{\"username\": \"a\",\n \"password\": }",
        )
        .await;
    let body = assert_problem(response, StatusCode::BAD_REQUEST, "malformed-json").await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("line 2 column"), "{detail}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = spawn_app().await;
    let response = app
        .post_raw("/v1/auth/login", "text/plain", "username=alice&password=x")
        .await;
    assert_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .send()
        .await
        .expect("request");
    assert_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = spawn_with(Options {
        body_limit: 2048,
        ..Options::default()
    })
    .await;
    let big = json!({ "username": "alice", "password": "x".repeat(4096) }).to_string();
    let response = app
        .post_raw("/v1/auth/signup", "application/json", big)
        .await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_a_422() {
    let app = spawn_app().await;
    for body in ["[]", "\"alice\"", "null", "42"] {
        let response = app
            .post_raw("/v1/auth/login", "application/json", body)
            .await;
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "(body)", "{body}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let app = spawn_app().await;
    assert_problem(
        app.get("/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let response = app.get("/v1/auth/login").await;
    assert_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
}

#[tokio::test]
async fn no_input_a_client_can_send_produces_a_server_error() {
    let app = spawn_app().await;
    let tokens = app.user("mallory").await;
    let long = "a".repeat(10_000);
    let bodies = [
        "",
        "{",
        "}",
        "{}",
        "[",
        "\u{0}",
        "{\"username\":null,\"password\":null}",
        "{\"username\":{},\"password\":[]}",
        "{\"username\":\"\\ud800\",\"password\":\"x\"}",
        "{\"refresh_token\":123}",
        "{\"refresh_token\":\"\\u0000\"}",
        "1e999999",
        "{\"a\":1e400}",
        "\u{feff}{}",
        "{\"username\":\"alice\",\"username\":\"bob\",\"password\":\"xxxxxxxxxx\"}",
    ];
    let paths = [
        "/v1/auth/signup",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/me",
    ];
    for path in paths {
        for body in bodies.iter().copied().chain([long.as_str()]) {
            for content_type in [
                "application/json",
                "application/json; charset=utf-8",
                "text/html",
            ] {
                let response = app
                    .client
                    .post(app.url(path))
                    .header("content-type", content_type)
                    .bearer_auth(&tokens.access)
                    .body(body.to_owned())
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                assert!(
                    status.is_client_error() || status.is_success(),
                    "{path} {content_type} {body:?}: {status}"
                );
                if !status.is_success() {
                    assert_eq!(
                        response.headers()["content-type"],
                        "application/problem+json",
                        "{path} {body:?}"
                    );
                }
            }
        }
    }
    // The one logout among them ended the session: everything after it was a 401.
    assert_eq!(
        app.me(&tokens.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
