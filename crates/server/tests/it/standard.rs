//! The standard spellings, as a client that knows only the standards sees them: RFC 8414
//! metadata, the OAuth token endpoint (`refresh_token` grant, RFC 6749 errors), RFC 7009
//! revocation, the Token Status List (draft-ietf-oauth-status-list), and a resource
//! server built on `jwt-authorizer`, which discovers herd's keys by itself.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use herd_identity::status_list;
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_with, Options, TestApp};

const FORM: &str = "application/x-www-form-urlencoded";

/// A form's fields, in order.
type Pairs<'a> = &'a [(&'a str, &'a str)];

async fn form(app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> Response {
    app.client
        .post(app.url(path))
        .header("content-type", FORM)
        .body(serde_urlencoded::to_string(pairs).expect("form"))
        .send()
        .await
        .expect("request")
}

/// Asserts an RFC 6749 error: its status, `error` code, JSON body and `no-store`.
async fn assert_oauth_error(response: Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "token errors are not cached either"
    );
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("a JWT segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

#[tokio::test]
async fn the_metadata_publishes_only_what_herd_does() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let meta: Value = app.get(path).await.json().await.expect("json");
        assert_eq!(meta["issuer"], "http://herd.test", "{path}");
        assert_eq!(meta["jwks_uri"], "http://herd.test/.well-known/jwks.json");
        assert_eq!(meta["token_endpoint"], "http://herd.test/oauth/token");
        assert_eq!(meta["revocation_endpoint"], "http://herd.test/oauth/revoke");
        assert_eq!(
            meta["grant_types_supported"],
            serde_json::json!(["refresh_token"])
        );
        assert_eq!(meta["response_types_supported"], serde_json::json!([]));
        assert!(
            meta.get("id_token_signing_alg_values_supported").is_none(),
            "herd issues no ID token: {meta}"
        );
        // Every endpoint the metadata names answers here (the issuer is not this host).
        for field in ["token_endpoint", "revocation_endpoint", "jwks_uri"] {
            let path = meta[field]
                .as_str()
                .and_then(|u| u.strip_prefix("http://herd.test"))
                .expect("under the issuer");
            let status = if field == "jwks_uri" {
                app.get(path).await.status()
            } else {
                form(&app, path, &[]).await.status()
            };
            assert_ne!(status, StatusCode::NOT_FOUND, "{field}");
        }
    }
}

#[tokio::test]
async fn the_token_endpoint_refreshes_a_form_encoded_refresh_token() {
    let app = spawn_app().await;
    let tokens = app.user("alice").await;
    let response = form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &tokens.refresh),
            ("client_id", "herd"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    let access = body["access_token"].as_str().expect("access_token");
    assert_eq!(app.me(access).await.status(), StatusCode::OK);
    let next = body["refresh_token"].as_str().expect("refresh_token");
    assert_ne!(next, tokens.refresh, "rotated");

    // The spent token, past the grace window, is reuse: invalid_grant, session revoked.
    app.clock.advance(60);
    let reused = form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &tokens.refresh),
        ],
    )
    .await;
    assert_oauth_error(reused, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(app.me(access).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_token_endpoint_answers_rfc_6749_errors() {
    let app = spawn_app().await;
    let tokens = app.user("bob").await;
    let cases: [(Pairs, StatusCode, &str); 7] = [
        (
            &[
                ("grant_type", "password"),
                ("username", "bob"),
                ("password", "x"),
            ],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            &[("grant_type", "client_credentials")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            &[("grant_type", "refresh_token")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &[("refresh_token", "x")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "not-a-refresh-token"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &tokens.refresh),
                ("client_id", "someone-else"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
                ("refresh_token", &tokens.refresh),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (pairs, status, error) in cases {
        let response = form(&app, "/oauth/token", pairs).await;
        assert_oauth_error(response, status, error).await;
    }
    // JSON is not what RFC 6749 clients send.
    let json = app
        .post_json(
            "/oauth/token",
            serde_json::json!({"grant_type": "refresh_token", "refresh_token": tokens.refresh}),
        )
        .await;
    assert_oauth_error(json, StatusCode::BAD_REQUEST, "invalid_request").await;
    // None of that spent the refresh token.
    assert_eq!(app.refresh(&tokens.refresh).await.status(), StatusCode::OK);
    // A parameter herd does not read is ignored, even repeated (RFC 6749 section 3.2).
    let again = app.login("bob").await;
    let response = form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &again.refresh),
            ("extension", "1"),
            ("extension", "2"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn revocation_ends_the_session_of_either_token_and_answers_200_for_any_token() {
    let app = spawn_app().await;
    let by_refresh = app.user("carol").await;
    let response = form(&app, "/oauth/revoke", &[("token", &by_refresh.refresh)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.me(&by_refresh.access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let by_access = app.login("carol").await;
    let response = form(
        &app,
        "/oauth/revoke",
        &[
            ("token", &by_access.access),
            ("token_type_hint", "access_token"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let refreshed = form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &by_access.refresh),
        ],
    )
    .await;
    assert_oauth_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;

    // Unknown, already revoked, or not a token at all: 200 (RFC 7009 section 2.2).
    for token in [by_access.access.as_str(), "garbage", &by_refresh.refresh] {
        let response = form(&app, "/oauth/revoke", &[("token", token)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{token}");
    }
    let missing = form(
        &app,
        "/oauth/revoke",
        &[("token_type_hint", "access_token")],
    )
    .await;
    assert_oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_request").await;
}

/// Fetches the status list, checks it is what the draft says a status list token is,
/// signed by a key in the JWKS, and returns its claims and the raw JWT.
async fn status_list_of(app: &TestApp) -> (Value, String) {
    let response = app.get(status_list::PATH).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/statuslist+jwt"
    );
    assert!(response.headers()["cache-control"]
        .to_str()
        .expect("ascii")
        .starts_with("public, max-age="));
    let jwt = response.text().await.expect("body");
    let header = segment(&jwt, 0);
    assert_eq!(header["typ"], "statuslist+jwt");
    assert_eq!(header["alg"], "EdDSA");
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("json");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the list is signed by a published key");
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().expect("x"))
        .expect("base64url")
        .try_into()
        .expect("32 bytes");
    let (signed, signature) = jwt.rsplit_once('.').expect("three segments");
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).expect("b64"))
        .expect("a signature");
    VerifyingKey::from_bytes(&x)
        .expect("key")
        .verify_strict(signed.as_bytes(), &signature)
        .expect("the signature verifies");
    (segment(&jwt, 1), jwt)
}

/// Whether the list says the token `access` is revoked, by its own `status` claim.
fn listed_revoked(list: &Value, access: &str) -> bool {
    let status = &segment(access, 1)["status"]["status_list"];
    assert_eq!(status["uri"], list["sub"], "the token names this list");
    let bytes = status_list::decode(list["status_list"]["lst"].as_str().expect("lst"), 1 << 20)
        .expect("ZLIB");
    status_list::is_set(&bytes, status["idx"].as_u64().expect("idx")).expect("inside the list")
}

#[tokio::test]
async fn the_status_list_sets_a_sessions_bit_when_it_is_revoked() {
    let app = spawn_app().await;
    let dave = app.user("dave").await;
    let erin = app.user("erin").await;
    let claims = segment(&dave.access, 1);
    assert_eq!(
        claims["status"]["status_list"]["uri"],
        "http://herd.test/v1/auth/status-list"
    );
    assert_ne!(
        claims["status"]["status_list"]["idx"],
        segment(&erin.access, 1)["status"]["status_list"]["idx"],
        "one index per session"
    );
    let (list, first) = status_list_of(&app).await;
    assert_eq!(list["sub"], "http://herd.test/v1/auth/status-list");
    assert_eq!(list["iss"], "http://herd.test");
    assert_eq!(list["status_list"]["bits"], 1);
    assert!(list["ttl"].as_u64().is_some_and(|ttl| ttl > 0));
    assert_eq!(
        list["exp"].as_u64().expect("exp") - list["iat"].as_u64().expect("iat"),
        list["ttl"].as_u64().expect("ttl")
    );
    assert!(!listed_revoked(&list, &dave.access));
    assert!(!listed_revoked(&list, &erin.access));
    let (_, again) = status_list_of(&app).await;
    assert_eq!(again, first, "no revocation, no rebuild");

    assert_eq!(
        app.logout(&dave.access).await.status(),
        StatusCode::NO_CONTENT
    );
    let (list, _) = status_list_of(&app).await;
    assert!(listed_revoked(&list, &dave.access), "logged out");
    assert!(!listed_revoked(&list, &erin.access));

    // A refreshed token carries its session's index: revoking by it sets the same bit.
    let refreshed: Value = app.refresh(&erin.refresh).await.json().await.expect("json");
    let access = refreshed["access_token"].as_str().expect("access_token");
    assert_eq!(
        segment(access, 1)["status"],
        segment(&erin.access, 1)["status"]
    );
    let response = form(&app, "/oauth/revoke", &[("token", access)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (list, _) = status_list_of(&app).await;
    assert!(listed_revoked(&list, &erin.access));
}

#[tokio::test]
async fn another_replica_lists_a_revocation_it_heard_of_on_the_bus() {
    let bus = herd_bus::Bus::in_process();
    let a = spawn_with(Options {
        bus: crate::helpers::TestBus::InProcess(bus.clone()),
        ..Options::default()
    })
    .await;
    let b = a.spawn_peer("test-b").await;
    let frank = a.user("frank").await;
    let (list, _) = status_list_of(&b).await;
    assert!(!listed_revoked(&list, &frank.access));
    assert_eq!(
        a.logout(&frank.access).await.status(),
        StatusCode::NO_CONTENT
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let sid = segment(&frank.access, 1)["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    while !b.auth.is_revoked(&sid) {
        assert!(std::time::Instant::now() < deadline, "b never heard of it");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (list, _) = status_list_of(&b).await;
    assert!(
        listed_revoked(&list, &frank.access),
        "b rebuilt on the news"
    );
}

/// A resource server written with `jwt-authorizer` (axum 0.7), which finds herd's keys
/// from nothing but the issuer URL, by its OpenID-configuration discovery.
#[tokio::test]
async fn a_jwt_authorizer_resource_server_discovers_herds_keys_from_the_issuer() {
    use axum07::routing::get;
    use jwt_authorizer::{IntoLayer as _, JwtAuthorizer, JwtClaims, Validation};

    let app = spawn_with(Options {
        issuer_follows_listen: true,
        ..Options::default()
    })
    .await;
    let meta: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .expect("json");
    let issuer = meta["issuer"].as_str().expect("issuer").to_owned();
    let authorizer = JwtAuthorizer::<Value>::from_oidc(&issuer)
        .validation(Validation::new().iss(&[&issuer]).aud(&["herd"]))
        .build()
        .await
        .expect("jwt-authorizer discovers the JWKS from the issuer");
    let api = axum07::Router::new()
        .route(
            "/whoami",
            get(|JwtClaims(claims): JwtClaims<Value>| async move {
                claims["preferred_username"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            }),
        )
        .layer(authorizer.into_layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/whoami", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum07::serve(listener, api).await });

    let tokens = app.user("grace").await;
    let whoami = |token: String| {
        let client = app.client.clone();
        let url = url.clone();
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
        }
    };
    let ok = whoami(tokens.access.clone()).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.expect("text"), "grace");
    let mut tampered = tokens.access.clone();
    tampered.insert_str(tampered.rfind('.').expect("dot") + 1, "AA");
    tampered.truncate(tokens.access.len());
    assert_eq!(
        whoami(tampered).await.status(),
        StatusCode::UNAUTHORIZED,
        "a tampered signature is refused"
    );
}
