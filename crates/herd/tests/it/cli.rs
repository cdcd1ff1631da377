//! The `herd` binary as an operator runs it: bad flags, migrations, key rotation, and a
//! replica that starts, serves and stops on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::{self, database, herd, Replica, Ws};

#[test]
fn a_bad_flag_value_stops_start_up_naming_the_flag() {
    for (args, says) in [
        (["serve", "--leeway", "2m"], "--leeway must be at most 30s"),
        (["serve", "--access-ttl", "soon"], "--access-ttl"),
        (["serve", "--database", "mysql://x"], "--database"),
    ] {
        let out = herd().args(args).output().expect("run");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// Every flag is validated before anything opens the store, the ones only later steps
/// read (chat limits, the replica id, the bus) included: a refused flag leaves a fresh
/// database absent, not migrated with a first signing key in it.
#[test]
fn a_bad_flag_leaves_a_fresh_database_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    for (flag, value) in [
        ("--ws-queue", "0"),
        ("--ws-max-frame", "100"),
        ("--ws-sends-per-second", "0"),
        ("--replica-id", "two\nlines"),
        ("--leeway", "2m"),
        ("--body-limit", "10"),
        ("--bus-poll-interval", "0s"),
    ] {
        let out = herd()
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
            .args([flag, value])
            .output()
            .expect("run");
        assert!(!out.status.success(), "{flag} {value:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag} {value:?}: {stderr}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "{flag} {value:?} left {left:?} behind");
    }
}

#[test]
fn serve_without_migrating_refuses_a_schema_that_is_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let out = herd()
        .args([
            "serve",
            "--migrate=false",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run `herd migrate`"), "{stderr}");

    assert!(herd()
        .args(["migrate", "--database", &db])
        .status()
        .expect("run")
        .success());
}

#[test]
fn keys_rotate_adds_a_pending_key_beside_the_active_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let out = herd()
        .args(["keys", "list", "--database", &db])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(" active "), "{list}");

    let out = herd()
        .args(["keys", "rotate", "--database", &db])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = herd()
        .args(["keys", "list", "--database", &db])
        .output()
        .expect("run");
    let list = String::from_utf8_lossy(&out.stdout);
    let states: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(states, ["active", "pending"], "{list}");
}

#[test]
fn keys_revoke_replaces_the_signing_key_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let kids_and_states = |db: &str| -> Vec<(String, String)> {
        let out = herd()
            .args(["keys", "list", "--database", db])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| {
                let mut words = l.split_whitespace().map(str::to_owned);
                (words.next().expect("kid"), words.next().expect("state"))
            })
            .collect()
    };
    let before = kids_and_states(&db);
    let [(leaked, state)] = before.as_slice() else {
        panic!("one key on a new database: {before:?}");
    };
    assert_eq!(state, "active");

    let out = herd()
        .args(["keys", "revoke", leaked, "--database", &db])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = kids_and_states(&db);
    let [(added, state)] = after.as_slice() else {
        panic!("only the added key is left: {after:?}");
    };
    assert_eq!(state, "active", "the added key signs at once");
    assert_ne!(added, leaked);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("added {added}")), "{stdout}");
    assert!(stdout.contains(&format!("revoked {leaked}")), "{stdout}");

    let out = herd()
        .args(["keys", "revoke", leaked, "--database", &db])
        .output()
        .expect("run");
    assert!(!out.status.success(), "a key revoked twice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no signing key has the id {leaked}")),
        "{stderr}"
    );
    assert_eq!(kids_and_states(&db), after, "nothing changed");
}

#[tokio::test]
async fn serve_answers_then_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replica = Replica::start("cli-1", &database(&dir), &[]);
    let response = reqwest::get(replica.url("/healthz"))
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-herd-replica"], "cli-1");

    let pid = replica.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = replica.child.wait().expect("wait");
    assert!(status.success(), "exited with {status}");
    let rest = replica.log_to_end();
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
}

/// With `--drain-delay`, SIGTERM first takes the replica out of balancers' rotation
/// (`/readyz` 503) while it keeps serving; a second signal ends the wait.
#[tokio::test]
async fn a_draining_replica_fails_readiness_but_keeps_serving_until_told_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replica = Replica::start("drain-1", &database(&dir), &["--drain-delay", "10m"]);
    let http = reqwest::Client::new();
    // On the SQL tail a replica is ready once it has compared its clock with its peers'
    // (at most 1.5 s after it started; docs/security.md, "Clock skew").
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http
            .get(replica.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if ready.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready: {}",
            ready.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = replica.child.id().to_string();
    let term = || {
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
    };
    assert!(term().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused: Value = loop {
        let answer = http
            .get(replica.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if answer.status() == 503 {
            break answer.json().await.expect("problem+json");
        }
        assert!(std::time::Instant::now() < deadline, "/readyz never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused["type"], "urn:herd:problem:unavailable", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("shutting down")),
        "{refused}"
    );
    // Everything else is still served, writes included.
    let signup = http
        .post(replica.url("/v1/auth/signup"))
        .json(&json!({ "username": "draining", "password": "correct horse battery" }))
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), 201);
    assert_eq!(
        http.get(replica.url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );

    // A second signal ends the 10-minute wait. It is sent until the replica exits: the
    // first may land before the replica listens for a second one.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = replica.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a second SIGTERM did not end the drain"
        );
        let _ = term();
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "exited with {status}");
}

/// `herd keys revoke` joins the replicas' bus and returns once every live replica has
/// confirmed dropping the key: the very next request with a token it signed is refused.
#[tokio::test]
async fn keys_revoke_returns_once_every_live_replica_refuses_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let flags = ["--bus", "sql", "--issuer", "http://herd.test"];
    let replica = Replica::start("k1", &db, &flags);
    let client = reqwest::Client::new();
    let credentials = json!({ "username": "keyholder", "password": "correct horse" });
    post(
        &client,
        replica.url("/v1/auth/signup"),
        None,
        credentials.clone(),
    )
    .await;
    let login = post(&client, replica.url("/v1/auth/login"), None, credentials).await;
    let token = login["access_token"].as_str().expect("token").to_owned();
    let me = |token: String| {
        let client = client.clone();
        let url = replica.url("/v1/me");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("me")
                .status()
        }
    };
    assert_eq!(me(token.clone()).await, 200);

    let listed = herd()
        .args(["keys", "list", "--database", &db])
        .output()
        .expect("run");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let kid = listed
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("one key")
        .to_owned();
    let out = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            herd()
                .args(["keys", "revoke", &kid, "--database", &db])
                .output()
                .expect("run")
        }
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every live replica (k1) refuses its tokens now"),
        "{stdout}"
    );
    assert_eq!(
        me(token).await,
        401,
        "refused as soon as the command returned"
    );
}

async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap_or(Value::Null)
}

/// The seq of the next `message` frame, or `None` when the connection ended.
async fn next_seq(ws: &mut Ws) -> Option<i64> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s");
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("json");
                if frame["type"] == "message" {
                    return frame["seq"].as_i64();
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

async fn subscribe(replica: &Replica, token: &str, room: &str, since: i64) -> Ws {
    let (mut ws, _) = common::websocket(&format!("ws://{}/v1/ws", replica.listen), token).await;
    let frame = json!({ "type": "subscribe", "room": room, "since": since });
    ws.send(WsMessage::Text(frame.to_string().into()))
        .await
        .expect("subscribe");
    ws
}

#[tokio::test]
async fn a_replica_killed_mid_flood_costs_its_subscribers_nothing() {
    const N: i64 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    // Replicas that accept each other's tokens share one issuer; without --issuer each
    // would issue as its own address.
    // One user floods: the per-user send limit (shared by HTTP and WebSocket) is not
    // what this test is about.
    let bus = [
        "--bus",
        "sql",
        "--bus-poll-interval",
        "10ms",
        "--issuer",
        "http://herd.test",
        "--ws-sends-per-second",
        "1000000",
    ];
    let mut a = Replica::start("a", &db, &bus);
    let b = Replica::start("b", &db, &bus);
    let client = reqwest::Client::new();
    let credentials = json!({ "username": "alice", "password": "correct horse" });
    post(&client, a.url("/v1/auth/signup"), None, credentials.clone()).await;
    let login = post(&client, a.url("/v1/auth/login"), None, credentials).await;
    let token = login["access_token"].as_str().expect("token").to_owned();
    let room = post(
        &client,
        a.url("/v1/rooms"),
        Some(&token),
        json!({ "name": "r" }),
    )
    .await;
    let room = room["id"].as_str().expect("id").to_owned();

    let mut ws = subscribe(&a, &token, &room, 0).await;
    let flood = {
        let (url, token, client) = (
            b.url(&format!("/v1/rooms/{room}/messages")),
            token.clone(),
            client.clone(),
        );
        tokio::spawn(async move {
            for i in 1..=N {
                let body = json!({ "body": format!("m{i}"), "client_id": format!("c{i}") });
                post(&client, url.clone(), Some(&token), body).await;
            }
        })
    };

    let mut received = Vec::new();
    while received.len() < 50 {
        received.push(next_seq(&mut ws).await.expect("a message before the kill"));
    }
    // A crash, not a shutdown: no close frame, no goodbye.
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reaped");
    while let Some(seq) = next_seq(&mut ws).await {
        received.push(seq);
    }

    let mut ws = subscribe(&b, &token, &room, *received.last().expect("some")).await;
    while received.last() != Some(&N) {
        received.push(next_seq(&mut ws).await.expect("a message on b"));
    }
    flood.await.expect("flood");
    assert_eq!(
        received,
        (1..=N).collect::<Vec<_>>(),
        "every seq once, in order, across the crash"
    );
}

const NEEDS_POSTGRES: &str = "needs PostgreSQL: set HERD_TEST_POSTGRES";

/// A fresh PostgreSQL database of this test's own, dropped when the test ends.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    fn create(tag: &str) -> PgDatabase {
        let admin = herd_store::testing::postgres_admin_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let name = format!("herd_cli_{tag}_{}_{nanos}", std::process::id());
        let url = runtime()
            .block_on(herd_store::testing::create_postgres_database(&admin, &name))
            .unwrap_or_else(|e| panic!("creating a database ({NEEDS_POSTGRES}): {e}"));
        PgDatabase { admin, name, url }
    }

    fn pending_migrations(&self) -> usize {
        runtime().block_on(async {
            let store = herd_store::Store::open(&self.url).await.expect("open");
            let pending = store.pending_migrations().await.expect("schema version");
            store.close().await;
            pending
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let dropped = runtime().block_on(herd_store::testing::drop_postgres_database(
            &self.admin,
            &self.name,
        ));
        if let Err(e) = dropped {
            eprintln!("dropping test database {}: {e}", self.name);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
fn serve_without_migrating_refuses_a_postgres_schema_that_is_behind() {
    let db = PgDatabase::create("behind");
    let out = herd()
        .args(["serve", "--migrate=false", "--listen", "127.0.0.1:0"])
        // As the Kubernetes manifests configure it: from the environment.
        .env("HERD_DATABASE", &db.url)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("migration(s) behind: run `herd migrate` first"),
        "{stderr}"
    );
    assert_eq!(db.pending_migrations(), herd_store::MIGRATIONS.len());
}

/// A retried migration Job, or two operators at once: both `herd migrate` processes
/// succeed, and every migration is applied exactly once between them (PostgreSQL's
/// advisory lock serialises them; the second finds nothing to do).
#[test]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
fn two_herd_migrate_processes_at_once_apply_each_migration_once() {
    let db = PgDatabase::create("race");
    let runs: Vec<Child> = (0..2)
        .map(|_| {
            herd()
                .args(["--log-format", "json", "migrate"])
                .env("HERD_DATABASE", &db.url)
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn herd migrate")
        })
        .collect();
    let mut applied = Vec::new();
    for run in runs {
        let out = run.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "herd migrate failed: {stderr}");
        let done = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["message"] == "migrations are up to date")
            .unwrap_or_else(|| panic!("no 'up to date' line: {stderr}"));
        applied.push(done["fields"]["applied"].as_u64().expect("applied count"));
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        [0, herd_store::MIGRATIONS.len() as u64],
        "one run applies every migration, the other none"
    );
    assert_eq!(db.pending_migrations(), 0);

    // And a replica that refuses to migrate now starts.
    let mut replica = herd()
        .args([
            "--log-format",
            "json",
            "serve",
            "--migrate=false",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("HERD_DATABASE", &db.url)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herd serve");
    let stderr = replica.stderr.take().expect("stderr");
    let listen = common::listen_address(&mut BufReader::new(stderr).lines(), "herd is serving");
    assert!(!listen.is_empty());
    common::stop(&mut replica, Duration::from_secs(10));
}

/// A JWKS client pointed at the discovery document must find the keys where the replica
/// answers: without `--issuer`, `issuer` and `jwks_uri` name the address `herd serve`
/// listens on (port 0 here, so the address it bound), not a default nobody serves.
#[tokio::test]
async fn serve_publishes_its_own_address_as_issuer_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = Replica::start("issuer-1", &database(&dir), &[]);
    let discovery: Value = reqwest::get(replica.url("/.well-known/openid-configuration"))
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    let own = format!("http://{}", replica.listen);
    assert_eq!(discovery["issuer"], own.as_str(), "{discovery}");
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    assert!(jwks_uri.starts_with(&own), "{discovery}");
    let keys: Value = reqwest::get(jwks_uri)
        .await
        .expect("the jwks_uri answers")
        .json()
        .await
        .expect("json");
    assert!(
        keys["keys"].as_array().is_some_and(|k| !k.is_empty()),
        "{keys}"
    );
    drop(replica);

    // An explicit --issuer (the public URL behind a proxy) still wins.
    let replica = Replica::start(
        "issuer-2",
        &database(&dir),
        &["--issuer", "https://auth.example.test"],
    );
    let discovery: Value = reqwest::get(replica.url("/.well-known/openid-configuration"))
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(
        discovery["issuer"], "https://auth.example.test",
        "{discovery}"
    );
    assert!(
        discovery["jwks_uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://auth.example.test/")),
        "{discovery}"
    );
}
