//! Every way an access token can be refused, over HTTP: a 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"`, counted under its own reason.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{assert_problem, metric, spawn_app, TestApp};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Forges tokens with the replica's real signing key, read from its store.
struct Forger {
    key: ed25519_dalek::SigningKey,
    kid: String,
    now: i64,
}

impl Forger {
    async fn new(app: &TestApp) -> Forger {
        let record = app
            .auth
            .store()
            .signing_keys()
            .await
            .expect("keys")
            .remove(0);
        Forger {
            key: ed25519_dalek::SigningKey::from_bytes(
                &record.secret.try_into().expect("32 bytes"),
            ),
            kid: record.kid,
            now: app.clock_now(),
        }
    }

    fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid})
    }

    fn claims(&self) -> Value {
        json!({
            "iss": "http://herd.test", "aud": "herd", "sub": "u", "sid": "s", "jti": "j",
            "iat": self.now, "exp": self.now + 300, "preferred_username": "u", "client_id": "herd",
        })
    }

    fn raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        self.raw(&header.to_string(), &claims.to_string())
    }

    fn with_header(&self, name: &str, value: Value) -> String {
        let mut h = self.header();
        h[name] = value;
        self.sign(&h, &self.claims())
    }

    fn with_claim(&self, name: &str, value: Value) -> String {
        let mut c = self.claims();
        c[name] = value;
        self.sign(&self.header(), &c)
    }
}

impl TestApp {
    fn clock_now(&self) -> i64 {
        use herd_identity::Clock as _;
        self.clock.now()
    }
}

#[tokio::test]
async fn a_forged_token_with_the_real_key_is_accepted_so_the_cases_below_test_one_thing_each() {
    let app = spawn_app().await;
    let forger = Forger::new(&app).await;
    let response = app
        .me(&forger.sign(&forger.header(), &forger.claims()))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_bad_token_is_a_401_with_its_own_reason() {
    let app = spawn_app().await;
    let f = Forger::new(&app).await;
    let good = f.sign(&f.header(), &f.claims());
    let (input, signature) = good.rsplit_once('.').expect("dots");

    let hs256 = {
        let h = json!({"alg": "HS256", "typ": "at+jwt", "kid": f.kid});
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(f.claims().to_string().as_bytes())
        );
        let mut mac =
            Hmac::<Sha256>::new_from_slice(f.key.verifying_key().as_bytes()).expect("key");
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    let alg_none = {
        let h = json!({"alg": "none", "typ": "at+jwt"});
        format!(
            "{}.{}.",
            b64(h.to_string().as_bytes()),
            b64(f.claims().to_string().as_bytes())
        )
    };
    let padded = {
        let (h, rest) = good.split_once('.').expect("dot");
        format!(
            "{}.{rest}",
            STANDARD.encode(URL_SAFE_NO_PAD.decode(h).expect("b64"))
        )
    };
    let duplicate_sub = f.raw(
        &f.header().to_string(),
        &f.claims()
            .to_string()
            .replacen('{', "{\"sub\":\"admin\",", 1),
    );
    let other_key = {
        let impostor = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let sig = impostor.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    };

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", alg_none, "alg_not_allowed"),
        (
            "HS256 with the public key as secret",
            hs256,
            "alg_not_allowed",
        ),
        (
            "ES256",
            f.with_header("alg", json!("ES256")),
            "alg_not_allowed",
        ),
        ("typ JWT", f.with_header("typ", json!("JWT")), "wrong_type"),
        (
            "unknown kid",
            f.with_header("kid", json!("not-a-key")),
            "unknown_key",
        ),
        (
            "kid with a path",
            f.with_header("kid", json!("../../keys/secret")),
            "unknown_key",
        ),
        (
            "jku header",
            f.with_header("jku", json!("http://127.0.0.1:1/jwks")),
            "bad_header",
        ),
        (
            "crit header",
            f.with_header("crit", json!(["foo"])),
            "bad_header",
        ),
        (
            "wrong issuer",
            f.with_claim("iss", json!("http://evil.test")),
            "wrong_issuer",
        ),
        (
            "wrong audience",
            f.with_claim("aud", json!("other")),
            "wrong_audience",
        ),
        ("expired", f.with_claim("exp", json!(f.now - 60)), "expired"),
        (
            "not yet valid",
            f.with_claim("nbf", json!(f.now + 60)),
            "not_yet_valid",
        ),
        (
            "issued in the future",
            f.with_claim("iat", json!(f.now + 3600)),
            "issued_in_future",
        ),
        (
            "exp as a string",
            f.with_claim("exp", json!("9999999999")),
            "bad_claims",
        ),
        (
            "exp as a float",
            f.with_claim("exp", json!(9_999_999_999.5)),
            "bad_claims",
        ),
        ("negative iat", f.with_claim("iat", json!(-1)), "bad_claims"),
        ("duplicate sub", duplicate_sub, "bad_claims"),
        ("padded base64", padded, "bad_encoding"),
        ("four segments", format!("{good}.x"), "malformed"),
        ("two segments", input.to_owned(), "malformed"),
        (
            "truncated signature",
            format!("{input}.{}", &signature[..20]),
            "bad_signature",
        ),
        ("empty signature", format!("{input}."), "bad_signature"),
        ("signed by another key", other_key, "bad_signature"),
        (
            "over 8 KiB",
            f.with_claim("pad", json!("x".repeat(9000))),
            "too_large",
        ),
    ];

    for (name, token, _) in &cases {
        let response = app.me(token).await;
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some(r#"Bearer realm="herd", error="invalid_token""#),
            "{name}"
        );
        let body = assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-token").await;
        assert!(body["detail"].is_string(), "{name}");
    }

    let metrics = app.metrics().await;
    let mut expected = std::collections::HashMap::<&str, u64>::new();
    for (_, _, reason) in &cases {
        *expected.entry(reason).or_default() += 1;
    }
    for (reason, count) in expected {
        let line = format!(r#"herd_auth_failures_total{{kind="access_token",reason="{reason}"}}"#);
        assert_eq!(metric(&metrics, &line), count, "{reason}");
    }
}

#[tokio::test]
async fn a_request_without_credentials_gets_a_bare_challenge() {
    let app = spawn_app().await;
    let response = app.get("/v1/me").await;
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="herd""#
    );
    assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-token").await;

    let response = app
        .client
        .get(app.url("/v1/me"))
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .send()
        .await
        .expect("request");
    assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-token").await;
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"herd_auth_failures_total{kind="access_token",reason="missing"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            r#"herd_auth_failures_total{kind="access_token",reason="malformed"}"#
        ),
        1
    );
}
