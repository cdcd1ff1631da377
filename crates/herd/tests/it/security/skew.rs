//! Two replicas on one SQLite file, one of them with its clock moved by libfaketime
//! (`LD_PRELOAD`), checking what docs/security.md "Clock skew" says: a skew within
//! `--leeway` is invisible, one beyond it makes the replicas refuse each other's fresh
//! tokens (each still accepts its own), and a refresh replayed on a replica ahead by more
//! than `--refresh-grace` counts as theft.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;

use super::{required_env, Replica};

const IGNORED: &str =
    "needs libfaketime: set HERD_TEST_FAKETIME=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A replica with a true clock and one whose clock is `offset` (libfaketime's syntax,
/// e.g. "+30" or "-300" seconds) away, on one database.
struct Pair {
    sane: Replica,
    skewed: Replica,
    _dir: tempfile::TempDir,
}

/// The issuer every replica of a test shares.
const SHARED_ISSUER: &str = "http://herd.test";

fn pair(offset: &str, flags: &[&str]) -> Pair {
    let library = required_env("HERD_TEST_FAKETIME", IGNORED);
    assert!(
        std::path::Path::new(&library).is_file(),
        "HERD_TEST_FAKETIME={library} is not a file: {IGNORED}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let database = crate::common::database(&dir);
    let fake = [
        ("LD_PRELOAD", library.as_str()),
        ("FAKETIME", offset),
        // tokio's timers and Instant read the monotonic clock; moving it with the wall
        // clock gains nothing, and a relative offset there is not what is tested.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    // The first replica on a fresh store creates the signing key, valid from its own
    // now; a replica whose clock is behind that cannot sign (login answers 503) until
    // its clock gets there. So the replica furthest behind starts first, as it would be
    // in production where the key was created long ago.
    // One issuer for both: without --issuer each would issue as its own address, and
    // neither would accept the other's tokens whatever the clocks say.
    let flags = [&["--issuer", SHARED_ISSUER][..], flags].concat();
    let flags = flags.as_slice();
    let (sane, skewed) = if offset.starts_with('-') {
        let skewed = Replica::start_with_env("skewed", &database, flags, &fake);
        (
            Replica::start_with_env("sane", &database, flags, &[]),
            skewed,
        )
    } else {
        let sane = Replica::start_with_env("sane", &database, flags, &[]);
        (
            sane,
            Replica::start_with_env("skewed", &database, flags, &fake),
        )
    };
    Pair {
        sane,
        skewed,
        _dir: dir,
    }
}

/// The `iat` claim of an access token (the issuer's clock when it signed).
fn iat(token: &str) -> i64 {
    let payload = token.split('.').nth(1).expect("a JWT");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&payload).expect("claims");
    claims["iat"].as_i64().expect("iat")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .try_into()
        .expect("fits")
}

/// Each replica's verdict on the token it minted and on the other's.
#[derive(Debug, PartialEq, Eq)]
struct Verdicts {
    sane_on_own: Result<(), String>,
    skewed_on_own: Result<(), String>,
    sane_on_skewed: Result<(), String>,
    skewed_on_sane: Result<(), String>,
}

async fn verdicts(pair: &Pair, seconds: i64) -> Verdicts {
    pair.sane.signup("alice").await;
    let from_sane = pair.sane.login("alice").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let from_skewed = pair.skewed.login("alice").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    // The fake clock is really in force: the skewed replica signs with its own time.
    // (Seconds of slack for a slow machine; the offsets tested are tens of seconds.)
    let moved = iat(&from_skewed) - iat(&from_sane);
    assert!(
        (moved - seconds).abs() <= 5,
        "the skewed replica's clock is {moved}s off, not {seconds}s: is libfaketime working?"
    );
    assert!((iat(&from_sane) - unix_now()).abs() <= 5, "the sane clock");
    Verdicts {
        sane_on_own: pair.sane.verdict(&from_sane).await,
        skewed_on_own: pair.skewed.verdict(&from_skewed).await,
        sane_on_skewed: pair.sane.verdict(&from_skewed).await,
        skewed_on_sane: pair.skewed.verdict(&from_sane).await,
    }
}

#[tokio::test]
#[ignore = "needs libfaketime: set HERD_TEST_FAKETIME to libfaketime.so.1's path"]
async fn a_skew_equal_to_the_leeway_is_accepted_everywhere() {
    // The checks are strict (refused when iat > now + leeway, or now > exp + leeway), so
    // a skew of exactly the leeway is inside it.
    for (offset, seconds) in [("+30", 30), ("-30", -30)] {
        let pair = pair(offset, &["--leeway", "30s"]);
        let all_accepted = Verdicts {
            sane_on_own: Ok(()),
            skewed_on_own: Ok(()),
            sane_on_skewed: Ok(()),
            skewed_on_sane: Ok(()),
        };
        assert_eq!(verdicts(&pair, seconds).await, all_accepted, "{offset}s");
    }
}

#[tokio::test]
#[ignore = "needs libfaketime: set HERD_TEST_FAKETIME to libfaketime.so.1's path"]
async fn a_skew_beyond_the_leeway_is_refused_across_replicas_in_both_directions() {
    // 300 s of skew against a 30 s leeway and a 60 s lifetime, right after login: a
    // token minted ahead is "issued in the future" to the replica behind (and would be
    // for 300 - 30 s, then accepted: docs/security.md works the windows out), and one
    // minted behind has already expired for the replica ahead (60 + 30 < 300).
    let flags = ["--leeway", "30s", "--access-ttl", "60s"];
    let ahead = pair("+300", &flags);
    assert_eq!(
        verdicts(&ahead, 300).await,
        Verdicts {
            sane_on_own: Ok(()),
            skewed_on_own: Ok(()),
            sane_on_skewed: Err("issued_in_future".into()),
            skewed_on_sane: Err("expired".into()),
        }
    );
    let behind = pair("-300", &flags);
    assert_eq!(
        verdicts(&behind, -300).await,
        Verdicts {
            sane_on_own: Ok(()),
            skewed_on_own: Ok(()),
            sane_on_skewed: Err("expired".into()),
            skewed_on_sane: Err("issued_in_future".into()),
        }
    );
}

#[tokio::test]
#[ignore = "needs libfaketime: set HERD_TEST_FAKETIME to libfaketime.so.1's path"]
async fn a_refresh_replayed_on_a_replica_ahead_by_more_than_the_grace_revokes_the_session() {
    // Inside the leeway for access tokens, but beyond the refresh grace (10 s): two tabs
    // refreshing at once through different replicas look like a stolen token replayed.
    let pair = pair("+30", &["--leeway", "30s", "--refresh-grace", "10s"]);
    pair.sane.signup("alice").await;
    let login = pair.sane.login("alice").await;
    let first = login["refresh_token"].as_str().expect("refresh token");
    let rotated = pair.sane.refresh(first).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.expect("pair");
    let replayed = pair.skewed.refresh(first).await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = replayed.json().await.expect("problem");
    assert_eq!(problem["type"], "urn:herd:problem:invalid-refresh-token");
    // The skewed replica revoked the session; the sane one hears it over the bus (the
    // SQL tail, every 50 ms) and then refuses the session's newest access token.
    let access = rotated["access_token"].as_str().expect("access token");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match pair.sane.verdict(access).await {
            Err(reason) if reason == "revoked" => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "the session was not revoked: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let successor = rotated["refresh_token"].as_str().expect("refresh token");
    assert_eq!(
        pair.sane.refresh(successor).await.status(),
        StatusCode::UNAUTHORIZED,
        "the successor died with the session"
    );
}

#[tokio::test]
#[ignore = "needs libfaketime: set HERD_TEST_FAKETIME to libfaketime.so.1's path"]
async fn a_replica_behind_a_new_keys_start_cannot_sign_until_its_clock_gets_there() {
    // The first replica on a fresh store makes the key, signing from its own now; one
    // 30 s behind sees that key as not yet started and has none to sign with.
    let library = required_env("HERD_TEST_FAKETIME", IGNORED);
    let dir = tempfile::tempdir().expect("tempdir");
    let database = crate::common::database(&dir);
    let flags = ["--leeway", "30s", "--issuer", SHARED_ISSUER];
    let sane = Replica::start_with_env("sane", &database, &flags, &[]);
    let behind = Replica::start_with_env(
        "behind",
        &database,
        &flags,
        &[
            ("LD_PRELOAD", library.as_str()),
            ("FAKETIME", "-30"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    sane.signup("alice").await;
    let refused = super::client()
        .post(behind.url("/v1/auth/login"))
        .json(&serde_json::json!({ "username": "alice", "password": super::PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["type"], "urn:herd:problem:unavailable");
    // It still verifies the sane replica's tokens: the key is published, only not
    // started, and the token's iat is within the leeway of its clock.
    let token = sane.login("alice").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(behind.verdict(&token).await, Ok(()));
    let log = behind.stop();
    assert!(
        log.iter().any(|l| l.contains("no signing key is active")),
        "the operator is told why"
    );
}

/// Asks `/readyz` of `replica` until `done` holds of its status and body (each answer
/// is a fresh look; the bound is what a slow machine needs to start three replicas).
async fn readyz_until(replica: &Replica, done: impl Fn(StatusCode, &str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(answer) = reqwest::get(replica.url("/readyz")).await {
            let status = answer.status();
            last = answer.text().await.unwrap_or_default();
            if done(status, &last) {
                return last;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{}'s /readyz never got there; last answer: {last}",
        replica.id
    );
}

#[tokio::test]
#[ignore = "needs libfaketime: set HERD_TEST_FAKETIME to libfaketime.so.1's path"]
async fn a_replica_whose_clock_is_off_from_most_of_its_peers_is_unready_and_issues_no_tokens() {
    // Before herd compared clocks, a replica 60 s ahead served logins behind the
    // balancer, and its tokens were refused elsewhere (`issued_in_future`) for 55 s:
    // users logged out (herd lab --chaos clock, which now logs users in during the
    // fault). Now it hears its peers' clocks in their announcements on the bus and steps
    // out of rotation; the two whose clocks agree stay in.
    let library = required_env("HERD_TEST_FAKETIME", IGNORED);
    let dir = tempfile::tempdir().expect("tempdir");
    let database = crate::common::database(&dir);
    let flags = ["--issuer", SHARED_ISSUER];
    let fake = [
        ("LD_PRELOAD", library.as_str()),
        ("FAKETIME", "+60"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let a = Replica::start("a", &database, &flags);
    let b = Replica::start("b", &database, &flags);
    let skewed = Replica::start_with_env("skewed", &database, &flags, &fake);
    a.signup("alice").await;

    let why = readyz_until(&skewed, |status, body| {
        status == StatusCode::SERVICE_UNAVAILABLE && body.contains("clock is")
    })
    .await;
    // Clocks travel in whole seconds, so a 60 s offset reads 60 or 61 depending on
    // where each clock's second boundary falls between the announcement and its receipt.
    assert!(
        ["60", "61"]
            .iter()
            .any(|s| why.contains(&format!("{s} s ahead of 2 of its 2 live peers"))),
        "{why}"
    );
    let login = reqwest::Client::new()
        .post(skewed.url("/v1/auth/login"))
        .json(&serde_json::json!({ "username": "alice", "password": super::PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(login
        .text()
        .await
        .unwrap_or_default()
        .contains("issues no tokens"));

    for sane in [&a, &b] {
        readyz_until(sane, |status, _| status == StatusCode::OK).await;
        assert!(sane.login("alice").await["access_token"].is_string());
    }
}
