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

/// Forges tokens with one of a replica's real signing keys, read from its store.
struct Forger {
    key: ed25519_dalek::SigningKey,
    kid: String,
    now: i64,
}

impl Forger {
    /// With the replica's first key.
    async fn new(app: &TestApp) -> Forger {
        let kid = app.auth.store().signing_keys().await.expect("keys")[0]
            .kid
            .clone();
        Forger::with_key(app, &kid).await
    }

    /// With the stored key `kid`, whatever its state.
    async fn with_key(app: &TestApp, kid: &str) -> Forger {
        let record = app
            .auth
            .store()
            .signing_keys()
            .await
            .expect("keys")
            .into_iter()
            .find(|r| r.kid == kid)
            .expect("the key is stored");
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

    fn without_header(&self, name: &str) -> String {
        let mut h = self.header();
        h.as_object_mut().expect("object").remove(name);
        self.sign(&h, &self.claims())
    }

    fn with_claim(&self, name: &str, value: Value) -> String {
        let mut c = self.claims();
        c[name] = value;
        self.sign(&self.header(), &c)
    }

    fn without_claim(&self, name: &str) -> String {
        let mut c = self.claims();
        c.as_object_mut().expect("object").remove(name);
        self.sign(&self.header(), &c)
    }

    /// With claim `name` spelled as the raw JSON `text`, for values serde_json will not
    /// produce (`1e400`) and spellings it would normalise.
    fn with_raw_claim(&self, name: &str, text: &str) -> String {
        let mut c = self.claims();
        c.as_object_mut().expect("object").remove(name);
        let payload = c
            .to_string()
            .replacen('{', &format!("{{\"{name}\":{text},"), 1);
        self.raw(&self.header().to_string(), &payload)
    }

    /// An HS256 token whose MAC key is `secret`: what a verifier that lets the token pick
    /// its algorithm would check with the public key it holds.
    fn hs256(&self, secret: &[u8]) -> String {
        let h = json!({"alg": "HS256", "typ": "at+jwt", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(self.claims().to_string().as_bytes())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn unsigned(&self, alg: &str) -> String {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": self.kid});
        format!(
            "{}.{}.",
            b64(h.to_string().as_bytes()),
            b64(self.claims().to_string().as_bytes())
        )
    }
}

/// Every `herd_auth_failures_total` count for access tokens, by reason.
fn failures_by_reason(metrics: &str) -> std::collections::BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest =
                l.strip_prefix(r#"herd_auth_failures_total{kind="access_token",reason=""#)?;
            let (reason, n) = rest.split_once("\"}")?;
            Some((reason.to_owned(), n.trim().parse().expect("a count")))
        })
        .collect()
}

impl TestApp {
    fn clock_now(&self) -> i64 {
        use herd_identity::Clock as _;
        self.clock.now()
    }
}

fn kid_of(token: &str) -> String {
    let header = URL_SAFE_NO_PAD
        .decode(token.split('.').next().expect("header"))
        .expect("b64");
    serde_json::from_slice::<Value>(&header).expect("json")["kid"]
        .as_str()
        .expect("kid")
        .to_owned()
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

/// The attack suite (RFC 8725, the OWASP JWT cheat sheet): every case builds its own
/// token, names the reason it must be refused for, and is checked over HTTP for a 401
/// `invalid_token` challenge and counted under that reason in `/metrics`.
#[tokio::test]
async fn every_bad_token_is_a_401_with_its_own_reason() {
    let app = spawn_app().await;

    // State first, so that every forgery below is made at the final time. A key that
    // signed once and has since retired:
    let first = app.user("alice").await;
    let retired_kid = kid_of(&first.access);
    let retired = Forger::with_key(&app, &retired_kid).await;
    app.auth.rotate_keys().await.expect("rotate");
    app.clock.advance(60 + 300 + 5); // publish delay, then token TTL plus leeway
    app.auth.maintain().await.expect("upkeep");
    let states = app.auth.keys().await.expect("keys");
    assert_eq!(states[0].kid, retired_kid);
    assert_eq!(states[0].state.to_string(), "retired");
    let f = Forger::with_key(&app, &states[1].kid).await;
    let retired = Forger {
        now: f.now,
        ..retired
    };

    // A session logged out, and a live one whose refresh token is misused.
    let bob = app.user("bob").await;
    assert_eq!(
        app.logout(&bob.access).await.status(),
        StatusCode::NO_CONTENT
    );
    let carol = app.user("carol").await;

    // Another herd deployment: its own database and keys, the same issuer name.
    let other = spawn_app().await;
    other.clock.advance(f.now - other.clock_now());
    let other_token = other.user("mallory").await.access;
    let other_key = Forger {
        kid: f.kid.clone(),
        ..Forger::new(&other).await
    };
    let foreign_issuer = {
        let mut c = other_key.claims();
        c["iss"] = json!("http://other.test");
        other_key.sign(&other_key.header(), &c)
    };

    // Where a verifier that fetched key URLs would connect: nothing may arrive here.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_url = format!("http://{}/keys", trap.local_addr().expect("addr"));

    let good = f.sign(&f.header(), &f.claims());
    let (input, signature) = good.rsplit_once('.').expect("dots");
    let public = f.key.verifying_key();
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let attacker_jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "x": b64(attacker.verifying_key().as_bytes()),
    });
    let attacker_signed = |header: Value| {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(f.claims().to_string().as_bytes())
        );
        let sig = attacker.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    };
    let padded = {
        let (h, rest) = good.split_once('.').expect("dot");
        format!(
            "{}.{rest}",
            STANDARD.encode(URL_SAFE_NO_PAD.decode(h).expect("b64"))
        )
    };
    let stray_bits = {
        // 64 signature bytes leave 4 unused bits in the last character; setting one
        // spells the same bytes another way.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = alphabet
            .find(good.chars().last().expect("char"))
            .expect("b64");
        assert_eq!(last % 16, 0, "the unused bits are zero");
        let sloppy = alphabet.as_bytes()[last | 1] as char;
        format!("{}{sloppy}", &good[..good.len() - 1])
    };
    let duplicate_claim = f.raw(
        &f.header().to_string(),
        &f.claims()
            .to_string()
            .replacen('{', "{\"sub\":\"admin\",", 1),
    );
    let duplicate_header = f.raw(
        &f.header()
            .to_string()
            .replacen('{', "{\"alg\":\"none\",", 1),
        &f.claims().to_string(),
    );
    let claims_array = {
        let c = f.claims();
        json!([
            c["iss"],
            c["aud"],
            c["sub"],
            c["sid"],
            c["jti"],
            c["iat"],
            c["exp"],
            null,
            c["preferred_username"],
            c["client_id"]
        ])
        .to_string()
    };
    let nested_payload = f.raw(&f.header().to_string(), &format!("\"{good}\""));
    let other_signature = {
        let sig = attacker.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    };

    let mut cases: Vec<(String, String, &str)> = vec![
        // The algorithm is herd's, not the token's, to choose.
        ("alg none".into(), f.unsigned("none"), "alg_not_allowed"),
        ("alg None".into(), f.unsigned("None"), "alg_not_allowed"),
        ("alg NONE".into(), f.unsigned("NONE"), "alg_not_allowed"),
        (
            "HS256 keyed with the public key's bytes".into(),
            f.hs256(public.as_bytes()),
            "alg_not_allowed",
        ),
        (
            "HS256 keyed with the public key as published in the JWKS".into(),
            f.hs256(b64(public.as_bytes()).as_bytes()),
            "alg_not_allowed",
        ),
        (
            "ES256".into(),
            f.with_header("alg", json!("ES256")),
            "alg_not_allowed",
        ),
        (
            "RS256".into(),
            f.with_header("alg", json!("RS256")),
            "alg_not_allowed",
        ),
        // Key selection.
        (
            "unknown kid".into(),
            f.with_header("kid", json!("not-a-key")),
            "unknown_key",
        ),
        ("no kid".into(), f.without_header("kid"), "unknown_key"),
        (
            "kid with path traversal".into(),
            f.with_header("kid", json!("../../../../dev/null")),
            "unknown_key",
        ),
        (
            "kid with SQL".into(),
            f.with_header("kid", json!("x' UNION SELECT 'secret' --")),
            "unknown_key",
        ),
        (
            "kid not a string".into(),
            f.with_header("kid", json!(["a", "b"])),
            "bad_header",
        ),
        // Headers that carry or point at keys are never honoured, not even fetched.
        (
            "jku header".into(),
            f.with_header("jku", json!(trap_url)),
            "bad_header",
        ),
        (
            "x5u header".into(),
            f.with_header("x5u", json!(trap_url)),
            "bad_header",
        ),
        (
            "jwk header with the attacker's key, signed by it".into(),
            attacker_signed(json!({"alg": "EdDSA", "typ": "at+jwt", "jwk": attacker_jwk})),
            "bad_header",
        ),
        (
            "x5c header".into(),
            f.with_header("x5c", json!(["MIIBLjCB4aADAgECAhQ"])),
            "bad_header",
        ),
        (
            "unknown crit header".into(),
            f.with_header("crit", json!(["urn:example:must-understand"])),
            "bad_header",
        ),
        // Only an access token is an access token.
        ("typ missing".into(), f.without_header("typ"), "wrong_type"),
        (
            "typ JWT (an ID token or any generic JWT)".into(),
            f.with_header("typ", json!("JWT")),
            "wrong_type",
        ),
        (
            "typ refresh+jwt".into(),
            f.with_header("typ", json!("refresh+jwt")),
            "wrong_type",
        ),
        (
            // herd's refresh tokens are opaque, not JWTs, so one is not even the shape
            // of an access token.
            "a refresh token as an access token".into(),
            carol.refresh.clone(),
            "malformed",
        ),
        // Claims.
        (
            "issuer mismatch".into(),
            f.with_claim("iss", json!("http://evil.test")),
            "wrong_issuer",
        ),
        (
            "audience mismatch".into(),
            f.with_claim("aud", json!("other")),
            "wrong_audience",
        ),
        (
            "exp past".into(),
            f.with_claim("exp", json!(f.now - 60)),
            "expired",
        ),
        (
            "nbf in the future".into(),
            f.with_claim("nbf", json!(f.now + 60)),
            "not_yet_valid",
        ),
        (
            "iat far in the future".into(),
            f.with_claim("iat", json!(f.now + 3600)),
            "issued_in_future",
        ),
        // Signed with the real key, as with a leaked one: it must not live for years.
        (
            "a lifetime of ten years".into(),
            f.with_claim("exp", json!(f.now + 10 * 365 * 86_400)),
            "lifetime_too_long",
        ),
        (
            "a lifetime one second over the access TTL plus the leeway".into(),
            f.with_claim("exp", json!(f.now + 306)),
            "lifetime_too_long",
        ),
        (
            "duplicate key in the payload".into(),
            duplicate_claim,
            "bad_claims",
        ),
        (
            "duplicate key in the header".into(),
            duplicate_header,
            "bad_header",
        ),
        // A header or claims set is a JSON object; serde would also take an array.
        (
            "header as a JSON array".into(),
            f.raw(
                &json!(["EdDSA", "at+jwt", f.kid]).to_string(),
                &f.claims().to_string(),
            ),
            "bad_header",
        ),
        (
            "claims as a JSON array".into(),
            f.raw(&f.header().to_string(), &claims_array),
            "bad_claims",
        ),
        // Encoding and shape.
        ("base64 padding".into(), padded, "bad_encoding"),
        (
            "base64 with stray trailing bits".into(),
            stray_bits,
            "bad_encoding",
        ),
        (
            "over 8 KiB".into(),
            f.with_claim("pad", json!("x".repeat(9000))),
            "too_large",
        ),
        (
            "nested: cty JWT header".into(),
            f.with_header("cty", json!("JWT")),
            "bad_header",
        ),
        (
            "nested: a JWT as the payload".into(),
            nested_payload,
            "bad_claims",
        ),
        ("four segments".into(), format!("{good}.x"), "malformed"),
        (
            "five segments (JWE compact)".into(),
            format!("{good}.x.y"),
            "malformed",
        ),
        ("two segments".into(), input.to_owned(), "malformed"),
        // Signatures.
        (
            "empty signature".into(),
            format!("{input}."),
            "bad_signature",
        ),
        (
            "truncated signature".into(),
            format!("{input}.{}", &signature[..20]),
            "bad_signature",
        ),
        (
            "signed by a key not in the ring".into(),
            other_signature,
            "bad_signature",
        ),
        (
            "a genuine token whose key has since retired".into(),
            first.access.clone(),
            "unknown_key",
        ),
        (
            "signed by a retired key, fresh claims".into(),
            retired.sign(&retired.header(), &retired.claims()),
            "unknown_key",
        ),
        // State.
        (
            "a token of a logged-out session".into(),
            bob.access.clone(),
            "revoked",
        ),
        // Another issuer. Key ids are RFC 7638 thumbprints, so no honest key elsewhere
        // shares one of herd's; only a forger writes herd's kid over another key.
        (
            "minted by another deployment with the same issuer name".into(),
            other_token,
            "unknown_key",
        ),
        (
            "minted for another issuer by its key under this key id name".into(),
            foreign_issuer,
            "bad_signature",
        ),
        (
            "minted for another issuer by this very key".into(),
            f.with_claim("iss", json!("http://other.test")),
            "wrong_issuer",
        ),
    ];
    // A required claim missing, and each time claim in every wrong type: a string, a
    // float, a negative number, and `1e400`, which overflows to infinity as a float.
    for claim in ["iss", "aud", "sub", "sid", "jti", "iat", "exp", "client_id"] {
        cases.push((
            format!("{claim} missing"),
            f.without_claim(claim),
            "bad_claims",
        ));
    }
    for claim in ["exp", "nbf", "iat"] {
        let at = if claim == "exp" { f.now + 60 } else { f.now };
        for (kind, text) in [
            ("a string", format!("\"{at}\"")),
            ("a float", format!("{at}.5")),
            ("a negative number", "-1".to_owned()),
            ("1e400", "1e400".to_owned()),
            ("null", "null".to_owned()),
        ] {
            cases.push((
                format!("{claim} as {kind}"),
                f.with_raw_claim(claim, &text),
                "bad_claims",
            ));
        }
    }

    // Each case is checked against the metrics on its own, so that two cases swapping
    // reasons cannot hide behind equal totals.
    let mut expected = failures_by_reason(&app.metrics().await);
    for (name, token, reason) in &cases {
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
        *expected.entry(reason.to_string()).or_default() += 1;
        assert_eq!(
            failures_by_reason(&app.metrics().await),
            expected,
            "{name}: counted once, as {reason}"
        );
    }
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a jku or x5u URL was fetched"
    );
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

/// An Authorization header HTTP lets through but that is not ASCII (obs-text bytes,
/// here a valid token with "é" appended, valid UTF-8): refused as malformed before any
/// verification, and counted once, as when the header was checked a byte at a time.
#[tokio::test]
async fn a_bearer_header_with_bytes_beyond_ascii_is_refused_as_malformed() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut value = format!("Bearer {}", alice.access).into_bytes();
    value.extend_from_slice("é".as_bytes());
    let response = app
        .client
        .get(app.url("/v1/me"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(&value).expect("obs-text is a header value"),
        )
        .send()
        .await
        .expect("request");
    assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-token").await;
    let failures = failures_by_reason(&app.metrics().await);
    assert_eq!(
        failures,
        std::collections::BTreeMap::from([("malformed".to_owned(), 1)]),
        "{failures:?}"
    );
    assert_eq!(app.me(&alice.access).await.status(), StatusCode::OK);
}

/// The verified-token cache finds an entry by the token's signature alone: a stranger
/// who has seen one valid token grafts its signature onto claims of their choosing and
/// sends it while the real one is cached. It must be refused as a bad signature, and
/// the real token keep working.
#[tokio::test]
async fn a_cached_tokens_signature_on_other_claims_is_refused() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    assert_eq!(app.me(&alice.access).await.status(), StatusCode::OK);
    let (header_and_payload, signature) = alice.access.rsplit_once('.').expect("a JWS");
    let (header, payload) = header_and_payload.split_once('.').expect("a JWS");
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    claims["preferred_username"] = json!("mallory");
    let grafted = format!(
        "{header}.{}.{signature}",
        b64(&serde_json::to_vec(&claims).expect("json"))
    );
    let response = app.me(&grafted).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "invalid-token").await;
    let me = app.me(&alice.access).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["username"], "alice");
}
