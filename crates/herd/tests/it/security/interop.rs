//! Interoperability: independent JOSE libraries, Python's PyJWT and Node's `jose`, verify
//! herd's access tokens from nothing but herd's JWKS URL, and herd refuses the tokens
//! those libraries forge. The scripts are `interop/pyjwt_check.py` and
//! `interop/jose_check.mjs`; their pinned dependencies are installed by `.ci/run`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::{client, required_env, Replica};

const IGNORED: &str = "needs python PyJWT and node jose: set HERD_TEST_INTEROP=1 after \
     `pip install -r interop/requirements.txt` and `npm ci --prefix interop`";
const ISSUER: &str = "https://herd.test";
const AUDIENCE: &str = "herd";

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

/// Runs one of the scripts; returns its stdout on success, its stderr on failure.
fn run(program: &str, script: &str, args: &[&str]) -> Result<String, String> {
    required_env("HERD_TEST_INTEROP", IGNORED);
    let out = Command::new(program)
        .arg(script)
        .args(args)
        .current_dir(interop_dir())
        .output()
        .unwrap_or_else(|e| panic!("running {program} {script}: {e}: {IGNORED}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

/// A script and the program that runs it.
type Library = (&'static str, &'static str);
/// Forgeries by name, each with the reason herd must refuse it for.
type Forgeries = &'static [(&'static str, &'static str)];

const PYJWT: Library = ("python3", "pyjwt_check.py");
const JOSE: Library = ("node", "jose_check.mjs");

/// Each library's verdict on `token`, with the claims it returned.
fn verify(library: Library, base: &str, audience: &str, token: &str) -> Result<Value, String> {
    let (program, script) = library;
    let stdout = run(program, script, &["verify", base, ISSUER, audience, token])?;
    Ok(serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script} printed no claims ({e}): {stdout}")))
}

fn assert_both_accept(base: &str, token: &str) {
    for library in [PYJWT, JOSE] {
        let claims = verify(library, base, AUDIENCE, token)
            .unwrap_or_else(|e| panic!("{} refused herd's token: {e}", library.1));
        assert_eq!(claims["preferred_username"], "alice", "{}", library.1);
        assert_eq!(claims["iss"], ISSUER, "{}", library.1);
        // The script checks what it is asked to: another audience is refused.
        let refused = verify(library, base, "someone-else", token);
        assert!(refused.is_err(), "{} ignored the audience", library.1);
    }
}

fn kid(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("a JWT");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let header: Value = serde_json::from_slice(&header).expect("header");
    header["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test]
#[ignore = "needs python PyJWT and node jose: set HERD_TEST_INTEROP=1"]
async fn pyjwt_and_jose_verify_herds_tokens_from_its_jwks_also_after_a_rotation() {
    required_env("HERD_TEST_INTEROP", IGNORED);
    let dir = tempfile::tempdir().expect("tempdir");
    let database = crate::common::database(&dir);
    let replica = Replica::start_with_env(
        "interop",
        &database,
        &["--issuer", ISSUER, "--upkeep-interval", "100ms"],
        &[],
    );
    let base = replica.url("");
    replica.signup("alice").await;
    let token = replica.login("alice").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_both_accept(&base, &token);

    // A new key that signs at once: the libraries must pick it from the JWKS by kid.
    let rotated = crate::common::herd()
        .args([
            "keys",
            "rotate",
            "--database",
            &database,
            "--issuer",
            ISSUER,
        ])
        .args(["--key-publish-delay", "0s"])
        .output()
        .expect("herd keys rotate");
    assert!(rotated.status.success(), "{rotated:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let fresh = replica.login("alice").await["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        if kid(&fresh) != kid(&token) {
            break fresh;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never signed with the new key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_both_accept(&base, &fresh);
    assert_both_accept(&base, &token);
}

#[tokio::test]
#[ignore = "needs python PyJWT and node jose: set HERD_TEST_INTEROP=1"]
async fn herd_refuses_the_tokens_pyjwt_and_jose_forge() {
    required_env("HERD_TEST_INTEROP", IGNORED);
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = Replica::start_with_env(
        "interop",
        &crate::common::database(&dir),
        &["--issuer", ISSUER],
        &[],
    );
    let base = replica.url("");
    replica.signup("alice").await;
    let token = replica.login("alice").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(replica.me(&token).await, StatusCode::OK);

    let expected: [(Library, Forgeries); 2] = [
        (
            PYJWT,
            &[
                ("none", "alg_not_allowed"),
                ("hs256-public-key-raw", "alg_not_allowed"),
                ("hs256-public-key-pem", "alg_not_allowed"),
            ],
        ),
        (
            JOSE,
            &[
                ("none", "alg_not_allowed"),
                ("hs256-public-key-bytes", "alg_not_allowed"),
                // herd's kid, the forger's key: the signature does not verify.
                ("eddsa-forger-key", "bad_signature"),
                // A header naming its own key (RFC 8725 3.10): herd knows no `jwk`.
                ("eddsa-embedded-jwk", "bad_header"),
            ],
        ),
    ];
    for ((program, script), cases) in expected {
        let stdout = run(program, script, &["forge", &base, &token])
            .unwrap_or_else(|e| panic!("{script} could not forge: {e}"));
        let forged: Value = serde_json::from_str(&stdout).expect("forged tokens");
        assert_eq!(
            forged.as_object().map(|o| o.len()),
            Some(cases.len()),
            "{script}: {forged}"
        );
        for (name, reason) in cases {
            let forgery = forged[name]
                .as_str()
                .unwrap_or_else(|| panic!("{script}: no {name}"));
            let response = client()
                .get(replica.url("/v1/me"))
                .bearer_auth(forgery)
                .send()
                .await
                .expect("me");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{script} {name}"
            );
            let challenge = response.headers()["www-authenticate"]
                .to_str()
                .expect("ascii");
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{script} {name}: {challenge}"
            );
            let problem: Value = response.json().await.expect("problem");
            assert_eq!(problem["type"], "urn:herd:problem:invalid-token");
            assert_eq!(
                replica.verdict(forgery).await,
                Err((*reason).to_owned()),
                "{script} {name}"
            );
        }
    }
}

/// Authlib refreshing and revoking through herd's OAuth endpoints, found from the
/// issuer's RFC 8414 metadata, and a Python service (`interop/herd_verify.py`, the one
/// docs/verifying.md shows) checking tokens with PyJWT from the JWKS plus the Token
/// Status List: a revoked session's tokens are refused with no call to herd but the
/// list's fetch. The replica has no `--issuer`, so the issuer is where it answers.
#[tokio::test]
#[ignore = "needs python PyJWT and Authlib: set HERD_TEST_INTEROP=1"]
async fn authlib_refreshes_and_revokes_and_pyjwt_with_the_status_list_refuses_the_revoked() {
    required_env("HERD_TEST_INTEROP", IGNORED);
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = Replica::start("interop", &crate::common::database(&dir), &[]);
    let issuer = replica.url("");
    let issuer = issuer.trim_end_matches('/');
    replica.signup("alice").await;
    let login = replica.login("alice").await;
    let refresh = login["refresh_token"].as_str().expect("refresh_token");

    let verify = |token: &str| run("python3", "herd_verify.py", &[issuer, AUDIENCE, token]);
    let claims: Value = serde_json::from_str(
        &verify(login["access_token"].as_str().expect("access_token"))
            .unwrap_or_else(|e| panic!("herd_verify.py refused a live token: {e}")),
    )
    .expect("claims");
    assert_eq!(claims["preferred_username"], "alice");

    let refreshed = run("python3", "authlib_check.py", &["refresh", issuer, refresh])
        .unwrap_or_else(|e| panic!("Authlib could not refresh: {e}"));
    let refreshed: Value = serde_json::from_str(&refreshed).expect("token response");
    let access = refreshed["access_token"].as_str().expect("access_token");
    let next = refreshed["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(replica.me(access).await, StatusCode::OK);
    verify(access).unwrap_or_else(|e| panic!("herd_verify.py refused a refreshed token: {e}"));

    // The spent token again, by a client nobody here wrote: an OAuth error it understands.
    let spent = run("python3", "authlib_check.py", &["refresh", issuer, refresh]);
    assert!(
        spent.is_ok() || spent.as_ref().is_err_and(|e| e.contains("invalid_grant")),
        "{spent:?}"
    );

    let revoked = run(
        "python3",
        "authlib_check.py",
        &["revoke", issuer, next, "refresh_token"],
    )
    .unwrap_or_else(|e| panic!("Authlib could not revoke: {e}"));
    assert_eq!(revoked.trim(), "200");
    assert_eq!(replica.me(access).await, StatusCode::UNAUTHORIZED);
    let refused = verify(access).expect_err("a revoked session's token is refused");
    assert!(refused.contains("revoked"), "{refused}");

    // Revoking what is no longer live is still 200 (RFC 7009 section 2.2).
    let again = run(
        "python3",
        "authlib_check.py",
        &["revoke", issuer, next, "refresh_token"],
    )
    .unwrap_or_else(|e| panic!("Authlib: {e}"));
    assert_eq!(again.trim(), "200");
}
