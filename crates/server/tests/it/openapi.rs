//! The API description at /openapi.json: complete (every route the router answers is in
//! it, and nothing else), and carrying what clients generate code from.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use herd_identity::{Auth, AuthConfig, HashParams, ManualClock};
use herd_server::{AppState, ServerConfig};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::helpers::spawn_app;

async fn state(dir: &tempfile::TempDir) -> AppState {
    let database = format!("sqlite://{}", dir.path().join("herd.db").display());
    let store = herd_store::Store::connect(&database).await.expect("store");
    let mut config = AuthConfig::new("http://herd.test", "herd");
    config.hash = HashParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let auth = Auth::start(store, Arc::new(ManualClock::starting_now()), config)
        .await
        .expect("auth");
    AppState::new(
        auth,
        ServerConfig {
            replica_id: "test-a".into(),
            body_limit: 64 * 1024,
            upkeep_interval: Duration::from_secs(3600),
            cookies: herd_server::cookies::CookiePolicy {
                insecure: true,
                allowed_origins: vec![],
            },
            chat: herd_server::chat::ChatLimits::default(),
            trusted_proxies: Default::default(),
            connections: Default::default(),
            confirm_deadline: herd_server::news::DEFAULT_CONFIRM_DEADLINE,
        },
    )
    .expect("state")
}

/// The path templates the router holds. axum has no public list of routes, but its
/// `Debug` output names every path (`Node { paths: {RouteId(0): "/v1/me", ...} }`).
fn router_paths(router: &axum::Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    debug
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/') && !s.contains("__private__axum"))
        .map(str::to_owned)
        .collect()
}

/// Every (method, path) the description documents.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn every_route_the_router_answers_is_documented_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = herd_server::router(state(&dir).await);
    let paths = router_paths(&router);
    // If axum's Debug output ever changes shape, fail here rather than compare nothing.
    assert!(
        paths.contains("/v1/me") && paths.contains("/v1/rooms/{id}/messages"),
        "could not read the router's paths from {paths:?}"
    );
    let mut answered = BTreeSet::new();
    for path in &paths {
        let concrete = path.replace("{id}", "some-room");
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let request = Request::builder()
                .method(method.clone())
                .uri(&concrete)
                .body(Body::empty())
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                answered.insert((method.to_string(), path.clone()));
            }
        }
    }
    let doc = herd_server::openapi::document_json();
    let documented = documented(&doc);
    let undocumented: Vec<_> = answered.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&answered).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    assert!(missing.is_empty(), "documented but not routed: {missing:?}");
}

#[tokio::test]
async fn openapi_json_describes_security_errors_and_schemas() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["cookie"]["in"], "cookie");
    assert_eq!(schemes["cookie"]["name"], "herd_access");
    for name in [
        "Problem",
        "Account",
        "LoginResponse",
        "Room",
        "Message",
        "MessagePage",
    ] {
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "no schema {name}"
        );
    }
    let op = |method: &str, path: &str| doc["paths"][path][method].clone();
    let problem = |op: &Value, status: &str| {
        op["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"]
            .as_str()
            .map(str::to_owned)
    };
    // Every operation that needs credentials says how a refusal looks.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if secured {
                assert!(
                    op["responses"]["401"]["headers"]["WWW-Authenticate"].is_object(),
                    "{method} {path}: no 401 with WWW-Authenticate"
                );
            }
            let form =
                op["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object();
            if form {
                // The OAuth endpoints answer RFC 6749 errors; only the body reader's
                // timeout and size limit are herd's problems.
                for status in ["408", "413"] {
                    assert_eq!(
                        problem(op, status).as_deref(),
                        Some("#/components/schemas/Problem"),
                        "{method} {path}: no {status}"
                    );
                }
                assert_eq!(
                    op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/OAuthError",
                    "{method} {path}: no RFC 6749 400"
                );
            } else if op["requestBody"].is_object() {
                for status in ["400", "408", "413", "415", "422"] {
                    assert_eq!(
                        problem(op, status).as_deref(),
                        Some("#/components/schemas/Problem"),
                        "{method} {path}: no {status}"
                    );
                }
            }
            assert!(
                op["responses"]["200"]["headers"]["x-herd-replica"].is_object()
                    || op["responses"]
                        .as_object()
                        .expect("responses")
                        .values()
                        .all(|r| r["headers"]["x-herd-replica"].is_object()),
                "{method} {path}: x-herd-replica undocumented"
            );
        }
    }
    assert!(problem(&op("post", "/v1/auth/login"), "429").is_some());
    assert!(problem(&op("post", "/v1/auth/login"), "401").is_some());
    assert!(problem(&op("post", "/v1/auth/refresh"), "400").is_some());
    assert!(problem(&op("post", "/v1/rooms/{id}/join"), "403").is_some());
    assert!(problem(&op("post", "/v1/rooms/{id}/messages"), "404").is_some());
    assert!(problem(&op("get", "/readyz"), "503").is_some());
    assert_eq!(
        op("post", "/v1/rooms")["responses"]["201"]["links"]["Send"]["parameters"]["id"],
        "$response.body#/id"
    );
}

#[tokio::test]
async fn the_reference_page_is_served_under_the_csp_and_linked_from_the_app() {
    let app = spawn_app().await;
    let page = app.get("/docs/api").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .expect("text")
        .contains("default-src 'self'"));
    let html = page.text().await.expect("html");
    assert!(html.contains(r#"<script src="/docs/api.js" defer></script>"#));
    let js = app.get("/docs/api.js").await;
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.text().await.expect("js").contains("/openapi.json"));
    assert_eq!(app.get("/docs/api.css").await.status(), StatusCode::OK);
    let index = app.get("/").await.text().await.expect("html");
    assert!(index.contains(r#"href="/docs/api""#));
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_path_is_a_problem_not_plain_text() {
    let app = spawn_app().await;
    let response = app.get("/v1/ws").await;
    crate::helpers::assert_problem(response, StatusCode::BAD_REQUEST, "not-a-websocket").await;
}

#[tokio::test]
async fn links_use_the_openapi_key_names() {
    let doc = herd_server::openapi::document_json();
    let link = &doc["paths"]["/v1/auth/signup"]["post"]["responses"]["201"]["links"]["LogIn"];
    assert_eq!(link["operationId"], "login");
    assert_eq!(link["requestBody"]["username"], "$request.body#/username");
}

/// The character rules the description states as patterns are the ones the parsers
/// apply: every character of the Basic Multilingual Plane, alone inside a field, is
/// accepted by both or refused by both. A pattern looser than the parser made API
/// fuzzers send schema-valid bodies that got 422; a stricter one would hide what the
/// API takes.
#[test]
fn the_described_character_rules_are_the_parsers() {
    let doc = herd_server::openapi::document_json();
    let pattern = |schema: &str, field: &str| {
        let p = &doc["components"]["schemas"][schema]["properties"][field]["pattern"];
        let p = p
            .as_str()
            .unwrap_or_else(|| panic!("{schema}.{field} has a pattern"));
        jsonschema::draft202012::new(&serde_json::json!({ "type": "string", "pattern": p }))
            .expect("a valid pattern")
    };
    let name = pattern("CreateRoom", "name");
    let body = pattern("SendMessage", "body");
    let bmp = (0u32..=0xffff).filter_map(char::from_u32);
    for c in bmp {
        let text = format!("a{c}b");
        let value = Value::String(text.clone());
        assert_eq!(
            name.is_valid(&value),
            herd_chat::RoomName::parse(&text).is_ok(),
            "room name with U+{:04X}",
            c as u32
        );
        assert_eq!(
            body.is_valid(&value),
            herd_chat::MessageBody::parse(&text).is_ok(),
            "message body with U+{:04X}",
            c as u32
        );
    }
}
