//! The verifier against a stand-in for herd that answers what herd can: a JWKS, a page
//! of revocations, and a stream that first says the cursor is gone (410), then carries a
//! key revocation. herd itself is exercised by `crates/herd/tests/it/verify.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::StreamExt as _;
use herd_token::{jwt, AccessClaims, Rejection, SigningKey};
use herd_verify::{Config, Verifier};
use tokio::sync::Notify;

const ISSUER: &str = "http://herd.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

fn token(key: &SigningKey, sid: &str) -> String {
    let now = now();
    jwt::sign(
        &AccessClaims {
            iss: ISSUER.into(),
            aud: "herd".into(),
            sub: "u1".into(),
            sid: sid.into(),
            jti: format!("j-{sid}"),
            iat: now,
            exp: now + 300,
            nbf: None,
            preferred_username: "ann".into(),
            client_id: "herd".into(),
            status: None,
        },
        key,
    )
}

#[derive(Clone)]
struct FakeHerd {
    key: Arc<SigningKey>,
    streams: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

async fn jwks(state: axum::extract::State<FakeHerd>) -> Response {
    let x = URL_SAFE_NO_PAD.encode(state.key.key().verifying_key().as_bytes());
    let body = serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": state.key.kid(), "use": "sig", "alg": "EdDSA"},
        {"kty": "RSA", "kid": "not-ours", "n": "AQAB", "e": "AQAB"},
    ]});
    axum::Json(body).into_response()
}

async fn page(axum::extract::RawQuery(query): axum::extract::RawQuery) -> Response {
    if query.is_some_and(|q| q.contains("after=")) {
        return StatusCode::GONE.into_response();
    }
    let expires_at = now() + 300;
    axum::Json(serde_json::json!({
        "revocations": [{"id": 5, "kind": "session", "subject": "s-revoked", "expires_at": expires_at}],
        "next": 5,
        "more": false,
    }))
    .into_response()
}

async fn stream(state: axum::extract::State<FakeHerd>, headers: HeaderMap) -> Response {
    assert_eq!(
        headers.get("last-event-id").and_then(|v| v.to_str().ok()),
        Some("5"),
        "the stream resumes from the page's cursor"
    );
    if state.streams.fetch_add(1, Ordering::SeqCst) == 0 {
        return StatusCode::GONE.into_response();
    }
    let first = Bytes::from("retry: 1000\n\nid: 5\nevent: caught_up\ndata: {\"next\":5}\n\n");
    let release = state.release.clone();
    let kid = state.key.kid().to_owned();
    let later = async move {
        release.notified().await;
        let entry =
            serde_json::json!({"id": 6, "kind": "key", "subject": kid, "expires_at": now() + 300});
        Bytes::from(format!("id: 6\nevent: revoked\ndata: {entry}\n\n"))
    };
    let body = futures_util::stream::iter([first])
        .chain(futures_util::stream::once(later))
        .chain(futures_util::stream::pending())
        .map(Ok::<_, std::convert::Infallible>);
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

#[tokio::test]
async fn the_verifier_follows_the_feed_through_a_410_and_drops_a_withdrawn_key() {
    let herd = FakeHerd {
        key: Arc::new(SigningKey::generate()),
        streams: Arc::default(),
        release: Arc::new(Notify::new()),
    };
    let app = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/revocations", get(page))
        .route("/v1/revocations/stream", get(stream))
        .with_state(herd.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = Config::new(url, ISSUER);
    config.unknown_kid_refetch = Duration::ZERO;
    let verifier = Verifier::start(config);
    assert!(verifier.until_following(Duration::from_secs(10)).await);
    assert!(
        herd.streams.load(Ordering::SeqCst) >= 2,
        "the first stream answered 410 and the verifier started again"
    );
    assert_eq!(verifier.key_count(), 1, "the RSA key is not herd's kind");

    let good = token(&herd.key, "s-ok");
    assert_eq!(
        verifier.verify(&good).await.map(|c| c.sid.clone()),
        Ok("s-ok".into())
    );
    assert_eq!(
        verifier
            .verify(&token(&herd.key, "s-revoked"))
            .await
            .map(|_| ()),
        Err(Rejection::Revoked)
    );
    let other = SigningKey::generate();
    assert_eq!(
        verifier.verify(&token(&other, "s-ok")).await.map(|_| ()),
        Err(Rejection::UnknownKey),
        "a key herd never published"
    );

    herd.release.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while verifier.key_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the key revocation arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The JWKS still lists the key: a refetch for the unknown kid must not bring it back.
    assert_eq!(
        verifier.verify(&good).await.map(|_| ()),
        Err(Rejection::UnknownKey)
    );
    assert_eq!(verifier.key_count(), 0);
}
