//! Passwords per NIST SP 800-63B: common ones refused at signup, and hashes made under
//! old argon2id parameters upgraded at the next successful login.

use herd_identity::HashParams;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, Options, CHEAP_HASH, PASSWORD};

#[tokio::test]
async fn signup_refuses_a_common_password_naming_the_field() {
    let app = spawn_app().await;
    for common in ["password1", "Baseball1", "QWERTY123"] {
        let body = assert_problem(
            app.signup("alice", common).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        )
        .await;
        assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(body["errors"][0]["field"], "password");
        let message = body["errors"][0]["message"].as_str().expect("message");
        assert!(
            message.contains("most commonly used passwords"),
            "{message}"
        );
    }
    // No composition rules: a long passphrase of lower-case words and spaces is fine.
    assert_eq!(
        app.signup("alice", "purple elephants juggle quietly")
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn password_length_is_counted_in_characters_from_8_to_128() {
    let app = spawn_app().await;
    for (password, accepted) in [
        ("ünïcødé", false),
        ("ünïcødé!", true),
        (&*"ab".repeat(64), true),
        (&*"ab".repeat(64).replace("ab", "éb"), true),
        (&format!("{}x", "ab".repeat(64)), false),
    ] {
        let response = app
            .post_json(
                "/v1/auth/signup",
                json!({ "username": format!("u{}", password.len()), "password": password }),
            )
            .await;
        let status = response.status();
        let body = response.text().await.expect("body");
        assert_eq!(
            status == StatusCode::CREATED,
            accepted,
            "{password:?}: {status} {body}"
        );
    }
}

fn stored_params(hash: &str) -> &str {
    // $argon2id$v=19$m=..,t=..,p=..$salt$hash
    hash.split('$').nth(3).expect("PHC params")
}

#[tokio::test]
async fn a_hash_under_old_parameters_is_upgraded_at_the_next_successful_login() {
    let old = spawn_app().await;
    assert_eq!(
        old.signup("alice", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let hash_of = |app: &crate::helpers::TestApp| {
        let store = app.auth.store().clone();
        async move {
            store
                .user_by_name("alice")
                .await
                .expect("user")
                .expect("alice exists")
                .password_hash
        }
    };
    let before = hash_of(&old).await;
    assert_eq!(stored_params(&before), "m=64,t=1,p=1");

    // The same store, under a configuration with stronger parameters.
    let stronger = HashParams {
        memory_kib: 256,
        iterations: 2,
        parallelism: 1,
    };
    let new = old
        .spawn_peer_with(Options {
            replica_id: "test-b".into(),
            hash: stronger,
            ..old.options.clone()
        })
        .await;

    assert_eq!(
        new.try_login("alice", "wrong password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        hash_of(&new).await,
        before,
        "a failed login knows no password to rehash"
    );

    new.login("alice").await;
    let after = hash_of(&new).await;
    assert_eq!(stored_params(&after), "m=256,t=2,p=1");
    assert!(after.starts_with("$argon2id$v=19$"), "{after}");

    // The upgraded hash verifies on both configurations (argon2 reads the parameters
    // from the hash), and an up-to-date hash is left alone.
    new.login("alice").await;
    assert_eq!(hash_of(&new).await, after);
    assert_eq!(old.options.hash, CHEAP_HASH);
    old.login("alice").await;
    assert_eq!(
        hash_of(&old).await,
        after,
        "a replica still on weaker parameters (a rolling deployment) does not undo it"
    );
}
