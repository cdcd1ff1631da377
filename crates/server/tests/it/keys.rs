//! The shared key ring: JWKS, discovery, rotation with a publish delay, retirement, and
//! a replica meeting a key another replica rotated in, and the emergency revocation of a
//! leaked key.

use reqwest::StatusCode;
use serde_json::Value;

use herd_identity::AuthError;

use crate::helpers::{metric, spawn_app, spawn_with, Options};

const UNKNOWN_KEY: &str = r#"herd_auth_failures_total{kind="access_token",reason="unknown_key"}"#;

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("header");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("b64");
    let header: Value = serde_json::from_slice(&header).expect("json");
    header["kid"].as_str().expect("kid").to_owned()
}

async fn jwks_kids(app: &crate::helpers::TestApp) -> Vec<String> {
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("json");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            assert_eq!(k["kty"], "OKP");
            assert_eq!(k["crv"], "Ed25519");
            assert_eq!(k["alg"], "EdDSA");
            assert_eq!(k["use"], "sig");
            assert!(k.get("d").is_none(), "no private part is ever published");
            k["kid"].as_str().expect("kid").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn discovery_points_at_the_jwks_that_holds_the_signing_key() {
    let app = spawn_app().await;
    let config: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(config["issuer"], "http://herd.test");
    assert_eq!(config["jwks_uri"], "http://herd.test/.well-known/jwks.json");
    let tokens = app.user("alice").await;
    assert_eq!(jwks_kids(&app).await, [kid_of(&tokens.access)]);
}

#[tokio::test]
async fn a_rotated_key_is_published_before_it_signs_and_old_tokens_keep_verifying() {
    let app = spawn_app().await; // publishes new keys 60 s before they sign
    let before = app.user("bob").await;
    let old_kid = kid_of(&before.access);

    let ring = app.auth.rotate_keys().await.expect("rotate");
    assert_eq!(ring.len(), 2);
    let new_kid = ring[1].kid.clone();
    assert_eq!(
        jwks_kids(&app).await,
        [old_kid.clone(), new_kid.clone()],
        "published at once"
    );
    assert_eq!(
        kid_of(&app.login("bob").await.access),
        old_kid,
        "but not signing yet"
    );

    app.clock.advance(60);
    let after = app.login("bob").await;
    assert_eq!(kid_of(&after.access), new_kid, "signing after the delay");
    assert_eq!(
        app.me(&before.access).await.status(),
        StatusCode::OK,
        "a token signed before still verifies"
    );
    assert_eq!(app.me(&after.access).await.status(), StatusCode::OK);

    // The old key stays published until every token it signed has expired (TTL 300 s
    // plus 5 s leeway after it stopped signing), then retires.
    app.clock.advance(300 + 5 - 1);
    app.auth.maintain().await.expect("upkeep");
    assert_eq!(jwks_kids(&app).await.len(), 2);
    app.clock.advance(1);
    app.auth.maintain().await.expect("upkeep");
    assert_eq!(jwks_kids(&app).await, std::slice::from_ref(&new_kid));
    let states: Vec<String> = app
        .auth
        .keys()
        .await
        .expect("keys")
        .iter()
        .map(|k| k.state.to_string())
        .collect();
    assert_eq!(states, ["retired", "active"]);
    app.auth.rotate_keys().await.expect("rotate");
    let kids: Vec<String> = app
        .auth
        .keys()
        .await
        .expect("keys")
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert!(
        !kids.contains(&old_kid),
        "a retired key is deleted at the next rotation"
    );
}

#[tokio::test]
async fn a_replica_started_before_a_rotation_accepts_tokens_signed_with_the_new_key() {
    let a = spawn_with(Options {
        key_publish_delay: 0,
        ..Options::default()
    })
    .await;
    let b = a.spawn_peer("test-b").await;
    a.user("carol").await;

    a.auth.rotate_keys().await.expect("rotate on A");
    let tokens = a.login("carol").await;
    let new_kid = a.auth.keys().await.expect("keys")[1].kid.clone();
    assert_eq!(kid_of(&tokens.access), new_kid);

    // B has not reloaded its ring: the unknown kid makes it reload once, then accept.
    let response = b.me(&tokens.access).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-herd-replica"], "test-b");
    assert!(jwks_kids(&b).await.contains(&new_kid));
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_every_replica_after_upkeep_and_sessions_survive() {
    let a = spawn_app().await; // publishes rotated keys 60 s before they sign
    let b = a.spawn_peer("test-b").await;
    let dave = a.user("dave").await;
    let leaked = kid_of(&dave.access);
    assert_eq!(b.me(&dave.access).await.status(), StatusCode::OK);

    // The leaked key is the only one that signs: a key that signs at once replaces it,
    // the publish delay notwithstanding.
    let done = a.auth.revoke_key(&leaked).await.expect("revoke");
    assert_eq!(done.revoked, leaked);
    let added = done.added.expect("a signer was added first");
    let ring: Vec<(String, String)> = done
        .keys
        .iter()
        .map(|k| (k.kid.clone(), k.state.to_string()))
        .collect();
    assert_eq!(ring, [(added.clone(), "active".to_owned())]);

    // The replica that revoked it refuses its tokens at once.
    let response = a.me(&dave.access).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(metric(&a.metrics().await, UNKNOWN_KEY), 1);
    assert_eq!(jwks_kids(&a).await, std::slice::from_ref(&added));

    // Another replica, after one upkeep, even for a token it had verified and cached.
    b.auth.maintain().await.expect("upkeep");
    let response = b.me(&dave.access).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(metric(&b.metrics().await, UNKNOWN_KEY), 1);
    assert_eq!(jwks_kids(&b).await, std::slice::from_ref(&added));

    // The session survives: its refresh token yields a token signed by the new key.
    let response = b.refresh(&dave.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    let fresh = crate::helpers::TestApp::tokens_of(&body);
    assert_eq!(kid_of(&fresh.access), added);
    assert_eq!(a.me(&fresh.access).await.status(), StatusCode::OK);
    assert_eq!(b.me(&fresh.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_the_signer_never_hands_signing_back_to_an_older_key() {
    let app = spawn_with(Options {
        key_publish_delay: 0,
        ..Options::default()
    })
    .await;
    let first = app.user("erin").await;
    let old = kid_of(&first.access);
    // Keys that start signing in the same second are ordered by kid, so each step here
    // happens a second after the last.
    app.clock.advance(1);
    app.auth.rotate_keys().await.expect("rotate");
    let second = app.login("erin").await;
    let signer = kid_of(&second.access);
    assert_ne!(signer, old);
    app.clock.advance(1);

    // Without a new key, the retiring one would be the newest started key again.
    let done = app.auth.revoke_key(&signer).await.expect("revoke signer");
    let added = done.added.expect("a signer was added first");
    assert_eq!(kid_of(&app.login("erin").await.access), added);
    assert_eq!(jwks_kids(&app).await, [old.clone(), added.clone()]);
    assert_eq!(app.me(&first.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.me(&second.access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A key that no longer signs is removed with nothing added.
    let done = app.auth.revoke_key(&old).await.expect("revoke retiring");
    assert_eq!(done.added, None);
    assert_eq!(jwks_kids(&app).await, std::slice::from_ref(&added));
    assert_eq!(
        app.me(&first.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(metric(&app.metrics().await, UNKNOWN_KEY), 2);
}

#[tokio::test]
async fn revoking_an_unknown_key_is_an_error_and_changes_nothing() {
    let app = spawn_app().await;
    let before = app.auth.keys().await.expect("keys");
    let err = app
        .auth
        .revoke_key("not-a-key")
        .await
        .expect_err("an unknown kid");
    assert!(
        matches!(&err, AuthError::UnknownKey(kid) if kid == "not-a-key"),
        "{err:?}"
    );
    assert_eq!(app.auth.keys().await.expect("keys"), before);
}
