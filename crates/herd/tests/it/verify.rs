//! A service built on `herd-verify` (the `herd-notes` example, in this process) in front
//! of `herd serve` (a process): a logout on herd is refused by the service within a
//! second; with herd gone the service keeps accepting valid tokens and refusing the
//! revoked ones it heard of; when herd is back, a revocation made while the service could
//! not hear it is refused too.

use std::time::{Duration, Instant};

use herd_verify::{Config, Verifier};
use serde_json::json;

use crate::common::{database, signup_and_login, Replica};

const ISSUER: &str = "http://herd.test";

async fn login(client: &reqwest::Client, herd: &Replica, username: &str) -> String {
    signup_and_login(client, &herd.url(""), username, "correct horse battery").await
}

async fn logout(client: &reqwest::Client, herd: &Replica, token: &str) {
    let response = client
        .post(herd.url("/v1/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 204);
}

/// The status the notes service answers `GET /notes` with under `token`.
async fn notes_status(client: &reqwest::Client, notes: &str, token: &str) -> u16 {
    client
        .get(format!("http://{notes}/notes"))
        .bearer_auth(token)
        .send()
        .await
        .expect("notes")
        .status()
        .as_u16()
}

/// Polls until the service refuses `token`, up to `deadline`; returns whether it did.
async fn refused_within(
    client: &reqwest::Client,
    notes: &str,
    token: &str,
    deadline: Duration,
) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if notes_status(client, notes, token).await == 401 {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_service_on_herd_verify_hears_of_logouts_and_rides_out_herd_being_away() {
    let dir = tempfile::tempdir().expect("dir");
    let db = database(&dir);
    let flags = ["--issuer", ISSUER];
    let herd = Replica::start("r1", &db, &flags);
    let client = reqwest::Client::new();

    let mut config = Config::new(herd.url(""), ISSUER);
    config.retry_max = Duration::from_millis(200);
    let verifier = Verifier::start(config);
    assert!(
        verifier.until_following(Duration::from_secs(10)).await,
        "the verifier fetched the keys and caught up with the feed"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let notes = listener.local_addr().expect("addr").to_string();
    let service = tokio::spawn(herd_notes::serve(listener, verifier.clone()));

    let ann = login(&client, &herd, "ann").await;
    let bob = login(&client, &herd, "bob").await;
    let cat = login(&client, &herd, "cat").await;
    for token in [&ann, &bob, &cat] {
        assert_eq!(notes_status(&client, &notes, token).await, 200);
    }
    let posted = client
        .post(format!("http://{notes}/notes"))
        .bearer_auth(&ann)
        .json(&json!({ "text": "buy milk" }))
        .send()
        .await
        .expect("post");
    assert_eq!(
        posted.status(),
        201,
        "the tower layer lets a valid token through"
    );
    let forged = format!("{}x", &bob[..bob.len() - 1]);
    assert_eq!(notes_status(&client, &notes, &forged).await, 401);

    // Logged out on herd: refused by the service within a second.
    logout(&client, &herd, &ann).await;
    assert!(
        refused_within(&client, &notes, &ann, Duration::from_secs(1)).await,
        "a token logged out on herd is refused by the service within 1 s"
    );

    // herd goes away (SIGKILL: no goodbye on the stream).
    let listen = herd.listen.clone();
    drop(herd);
    let until = Instant::now() + Duration::from_secs(60);
    while verifier.is_following() {
        assert!(Instant::now() < until, "the verifier noticed herd left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        notes_status(&client, &notes, &bob).await,
        200,
        "valid tokens still pass"
    );
    assert_eq!(
        notes_status(&client, &notes, &ann).await,
        401,
        "revoked ones still fail"
    );

    // While the service hears nothing, cat logs out through another replica of the
    // same database, which the service does not follow.
    let other = Replica::start("r2", &db, &flags);
    logout(&client, &other, &cat).await;
    other.stop();
    assert_eq!(
        notes_status(&client, &notes, &cat).await,
        200,
        "nothing told the service yet"
    );

    // herd comes back where it was: the feed resumes and catches up.
    let herd = Replica::start_at("r1", &listen, &db, &flags, &[]);
    assert!(
        refused_within(&client, &notes, &cat, Duration::from_secs(10)).await,
        "a revocation made while the service was cut off is refused once herd is back"
    );
    assert!(verifier.until_following(Duration::from_secs(10)).await);
    assert_eq!(notes_status(&client, &notes, &bob).await, 200);
    assert_eq!(notes_status(&client, &notes, &ann).await, 401);
    // And live again: a logout now is heard within a second.
    logout(&client, &herd, &bob).await;
    assert!(refused_within(&client, &notes, &bob, Duration::from_secs(1)).await);
    service.abort();
}
