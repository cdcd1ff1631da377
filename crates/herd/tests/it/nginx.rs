//! deploy/nginx.conf, run by a real nginx in front of two `herd serve` replicas: what the
//! development balancer promises, production's balancer keeps. Needs nginx, named by
//! `HERD_TEST_NGINX` (CI installs it; `.ci/run`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::{self, database, replica_of, Replica, Ws};

const IGNORED: &str = "needs nginx: set HERD_TEST_NGINX=/usr/sbin/nginx";

fn nginx_binary() -> PathBuf {
    match std::env::var_os("HERD_TEST_NGINX") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!("HERD_TEST_NGINX is not set: {IGNORED}"),
    }
}

/// The committed configuration.
fn committed_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx.conf")
}

/// Runs `nginx -t` on `conf` with `prefix` for every relative path; panics with nginx's
/// own words when the file is refused.
fn nginx_check(conf: &Path, prefix: &Path) {
    let out = Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .output()
        .expect("run nginx -t (is HERD_TEST_NGINX an nginx executable?)");
    assert!(
        out.status.success(),
        "nginx -t refused {}:\n{}",
        conf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Replaces `from`, which must occur exactly once in the committed file, by `to`.
fn substitute(conf: String, from: &str, to: &str) -> String {
    assert_eq!(
        conf.matches(from).count(),
        1,
        "deploy/nginx.conf should contain {from:?} once"
    );
    conf.replace(from, to)
}

/// The committed file with the test's upstreams and port, and with its sticky-cookie
/// variant switched on when `sticky`. Every path in it is relative, so the prefix (`-p`)
/// puts the pid, logs and temp files in the test's directory.
fn render(upstreams: [&str; 2], port: u16, sticky: bool) -> String {
    let conf = std::fs::read_to_string(committed_conf()).expect("read deploy/nginx.conf");
    let conf = substitute(conf, "127.0.0.1:8081", upstreams[0]);
    let conf = substitute(conf, "127.0.0.1:8082", upstreams[1]);
    let conf = substitute(conf, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    // Two workers, so the round-robin and failure state must be the shared zone's.
    let conf = substitute(conf, "worker_processes auto;", "worker_processes 2;");
    let conf = if sticky {
        let conf = substitute(
            conf,
            "#   hash $herd_affinity consistent;",
            "hash $herd_affinity consistent;",
        );
        substitute(
            conf,
            "# add_header Set-Cookie $herd_affinity_cookie;",
            "add_header Set-Cookie $herd_affinity_cookie;",
        )
    } else {
        conf
    };
    if running_as_root() {
        // Workers as root can reach the private temporary directory.
        format!("user root;\n{conf}")
    } else {
        conf
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `herd serve` flags for a replica behind nginx: the SQL bus polled often, the issuer
/// both replicas share, cookies over plain HTTP.
fn behind_nginx(issuer: &str) -> [&str; 7] {
    [
        "--bus",
        "sql",
        "--bus-poll-interval",
        "10ms",
        "--issuer",
        issuer,
        "--insecure-cookies",
    ]
}

/// nginx in the foreground (`daemon off`), stopped when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Renders deploy/nginx.conf for `upstreams`, checks it, starts nginx and waits until
    /// it answers (bounded).
    async fn start(port: u16, upstreams: [&str; 2], sticky: bool) -> Nginx {
        Nginx::start_edited(port, upstreams, sticky, &[]).await
    }

    /// [`Nginx::start`], with each `(from, to)` of `edits` substituted in the rendered
    /// file (each `from` must occur there once).
    async fn start_edited(
        port: u16,
        upstreams: [&str; 2],
        sticky: bool,
        edits: &[(&str, &str)],
    ) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("nginx.conf");
        let rendered = edits
            .iter()
            .fold(render(upstreams, port, sticky), |conf, (from, to)| {
                substitute(conf, from, to)
            });
        std::fs::write(&conf, rendered).expect("write conf");
        nginx_check(&conf, dir.path());
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", nginx.error_log());
            }
            if let Ok(response) = reqwest::get(nginx.url("/healthz")).await {
                if response.status() == 200 {
                    return nginx;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not answer within 15 s:\n{}",
                nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master, which stops its workers; SIGKILL would orphan them.
        common::stop(&mut self.child, Duration::from_secs(10));
    }
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

/// `GET /v1/me`: the status and the replica that answered.
async fn me(client: &reqwest::Client, nginx: &Nginx, token: &str) -> (u16, String) {
    let response = client
        .get(nginx.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request through nginx");
    (response.status().as_u16(), replica_of(&response))
}

/// The next frame that is not a ping or pong, within 10 s.
async fn next_frame(ws: &mut Ws) -> WsMessage {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        if !matches!(frame, WsMessage::Ping(_) | WsMessage::Pong(_)) {
            return frame;
        }
    }
}

/// The next JSON frame whose `type` is `kind`, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        match next_frame(ws).await {
            WsMessage::Text(text) => {
                let frame: Value = serde_json::from_str(&text).expect("json");
                if frame["type"] == kind {
                    return frame;
                }
            }
            other => panic!("expected a {kind:?} frame, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs nginx: set HERD_TEST_NGINX=/usr/sbin/nginx"]
fn the_committed_config_is_valid_as_it_stands() {
    let prefix = tempfile::tempdir().expect("tempdir");
    nginx_check(&committed_conf(), prefix.path());
}

#[tokio::test]
#[ignore = "needs nginx: set HERD_TEST_NGINX=/usr/sbin/nginx"]
async fn nginx_in_front_of_two_replicas_balances_proxies_websockets_and_survives_a_crash() {
    let _ = nginx_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut r1 = Replica::start("r1", &db, &behind_nginx(&issuer));
    let r2 = Replica::start("r2", &db, &behind_nginx(&issuer));
    let nginx = Nginx::start(port, [r1.listen.as_str(), r2.listen.as_str()], false).await;
    let client = reqwest::Client::new();

    // Accounts through nginx.
    let credentials = json!({ "username": "alice", "password": "correct horse" });
    let signup = post(
        &client,
        nginx.url("/v1/auth/signup"),
        None,
        credentials.clone(),
    )
    .await;
    assert_eq!(signup["username"], "alice", "{signup}");
    let login = post(
        &client,
        nginx.url("/v1/auth/login"),
        None,
        credentials.clone(),
    )
    .await;
    let token = login["access_token"].as_str().expect("token").to_owned();

    // Round-robin: consecutive requests alternate, and the token works on both.
    let mut served = Vec::new();
    for _ in 0..6 {
        let (status, replica) = me(&client, &nginx, &token).await;
        assert_eq!(status, 200, "the token works on {replica}");
        served.push(replica);
    }
    assert!(
        served.windows(2).all(|pair| pair[0] != pair[1]),
        "requests alternate: {served:?}"
    );
    let seen: BTreeSet<&str> = served.iter().map(String::as_str).collect();
    assert_eq!(seen, BTreeSet::from(["r1", "r2"]));

    // An oversized body is refused by nginx itself, as problem+json like herd's own.
    let big = client
        .post(nginx.url("/v1/rooms"))
        .bearer_auth(&token)
        .json(&json!({ "name": "x".repeat(70 * 1024) }))
        .send()
        .await
        .expect("request");
    assert_eq!(big.status(), 413);
    assert_eq!(big.headers()["content-type"], "application/problem+json");
    let problem: Value = big.json().await.expect("json");
    assert_eq!(problem["type"], "urn:herd:problem:payload-too-large");

    // A WebSocket through nginx hears a message posted over HTTP on the other replica.
    let room = post(
        &client,
        nginx.url("/v1/rooms"),
        Some(&token),
        json!({ "name": "lobby" }),
    )
    .await;
    let room = room["id"].as_str().expect("room id").to_owned();
    let (mut ws, upgrade) =
        common::websocket(&format!("ws://127.0.0.1:{port}/v1/ws"), &token).await;
    assert_eq!(upgrade.status(), 101);
    let ready = next_of(&mut ws, "ready").await;
    let ws_replica = ready["replica"].as_str().expect("replica").to_owned();
    let subscribe = json!({ "type": "subscribe", "room": room, "since": 0 });
    ws.send(WsMessage::Text(subscribe.to_string().into()))
        .await
        .expect("subscribe");
    let subscribed = next_of(&mut ws, "subscribed").await;
    assert_eq!(subscribed["last_seq"], 0, "{subscribed}");
    let other = if ws_replica == r1.id { &r2 } else { &r1 };
    let posted = client
        .post(other.url(&format!("/v1/rooms/{room}/messages")))
        .bearer_auth(&token)
        .json(&json!({ "body": "hello from the other side", "client_id": "c1" }))
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 201);
    assert_eq!(replica_of(&posted), other.id);
    let message = next_of(&mut ws, "message").await;
    assert_eq!(message["body"], "hello from the other side", "{message}");
    assert_eq!(message["seq"], 1, "{message}");

    // Logout through nginx: the token is refused on both replicas, and the socket closes
    // with 4003.
    let logout = client
        .post(nginx.url("/v1/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = BTreeSet::new();
    while refused.len() < 2 {
        let (status, replica) = me(&client, &nginx, &token).await;
        if status == 401 {
            refused.insert(replica);
        } else {
            assert_eq!(status, 200);
            refused.clear();
        }
        assert!(
            Instant::now() < deadline,
            "the logged-out token still works on one replica"
        );
    }
    match next_frame(&mut ws).await {
        WsMessage::Close(Some(close)) => assert_eq!(close.code, CloseCode::Library(4003)),
        other => panic!("expected a 4003 close, got {other:?}"),
    }

    // r1 crashes: nginx retries its share of requests on r2, and none fails.
    let login = post(&client, nginx.url("/v1/auth/login"), None, credentials).await;
    let token = login["access_token"].as_str().expect("token").to_owned();
    r1.child.kill().expect("SIGKILL");
    r1.child.wait().expect("reaped");
    for _ in 0..20 {
        let (status, replica) = me(&client, &nginx, &token).await;
        assert_eq!(
            (status, replica.as_str()),
            (200, "r2"),
            "{}",
            nginx.error_log()
        );
    }
    // ... because nginx tried r1, found it gone, and passed the request on.
    let log = nginx.error_log();
    assert!(
        log.lines()
            .any(|l| l.contains("connect() failed") && l.contains(&r1.listen)),
        "nginx never tried the dead replica:\n{log}"
    );
}

/// `GET /healthz` through nginx with `cookie`: the replica, and the Set-Cookie if any.
async fn healthz(
    client: &reqwest::Client,
    nginx: &Nginx,
    cookie: Option<&str>,
) -> (String, Option<String>) {
    let mut request = client.get(nginx.url("/healthz"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("request through nginx");
    assert_eq!(response.status(), 200);
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (replica_of(&response), set_cookie)
}

#[tokio::test]
#[ignore = "needs nginx: set HERD_TEST_NGINX=/usr/sbin/nginx"]
async fn the_sticky_variant_pins_a_cookie_to_one_replica_until_it_dies() {
    let _ = nginx_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut replicas = [
        Replica::start("r1", &db, &behind_nginx(&issuer)),
        Replica::start("r2", &db, &behind_nginx(&issuer)),
    ];
    let upstreams = [replicas[0].listen.as_str(), replicas[1].listen.as_str()];
    let nginx = Nginx::start(port, upstreams, true).await;
    let client = reqwest::Client::new();

    // A first request gets a random affinity key; some key lands on each replica.
    let mut cookies = std::collections::BTreeMap::new();
    for _ in 0..50 {
        let (replica, set_cookie) = healthz(&client, &nginx, None).await;
        let set_cookie = set_cookie.expect("a first response hands out herd_affinity");
        assert!(set_cookie.starts_with("herd_affinity="), "{set_cookie}");
        let cookie = set_cookie.split(';').next().expect("pair").to_owned();
        cookies.entry(replica).or_insert(cookie);
        if cookies.len() == 2 {
            break;
        }
    }
    assert_eq!(cookies.len(), 2, "50 keys all hashed to one replica");

    // With the cookie, a client stays where its key hashed, and is not handed another.
    for (replica, cookie) in &cookies {
        for _ in 0..6 {
            let (served, set_cookie) = healthz(&client, &nginx, Some(cookie)).await;
            assert_eq!(&served, replica);
            assert_eq!(set_cookie, None);
        }
    }

    // Its replica dies: the client moves to the other one.
    let pinned = &cookies["r1"];
    replicas[0].child.kill().expect("SIGKILL");
    replicas[0].child.wait().expect("reaped");
    for _ in 0..6 {
        let (served, _) = healthz(&client, &nginx, Some(pinned)).await;
        assert_eq!(served, "r2");
    }
}

// --- The edge: what a client with no account can do through nginx.

#[tokio::test]
#[ignore = "needs nginx: set HERD_TEST_NGINX=/usr/sbin/nginx"]
async fn crowded_requests_with_unread_bodies_do_not_take_replicas_out_behind_nginx() {
    let _ = nginx_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let r1 = Replica::start("r1", &db, &behind_nginx(&issuer));
    let r2 = Replica::start("r2", &db, &behind_nginx(&issuer));
    let nginx = Nginx::start(port, [r1.listen.as_str(), r2.listen.as_str()], false).await;
    let client = reqwest::Client::new();
    let addr = format!("127.0.0.1:{port}");
    // Crowded heads with a 65,000-byte body to an endpoint that reads none: the replicas
    // used to answer 431 and hang up on the body, nginx counted it against them, and
    // after 20 of these every replica was out. Under a replica's header count (with the
    // two nginx adds) it is served; over it (nginx forwards as many as fit its buffers)
    // the replica's 431 reaches the client, and the replica stays in.
    for round in 0..30 {
        let (extra, expected) = if round % 2 == 0 {
            (90, 200)
        } else {
            (150, 431)
        };
        let attack = common::raw::crowded_healthz(&addr, extra, 65_000);
        let status = common::raw::status_of(&addr, &attack).await;
        assert_eq!(
            status,
            Some(expected),
            "round {round}: {}",
            nginx.error_log()
        );
        let normal = client
            .get(nginx.url("/healthz"))
            .send()
            .await
            .expect("request through nginx");
        assert_eq!(normal.status(), 200, "round {round}: {}", nginx.error_log());
    }
    let log = nginx.error_log();
    assert!(
        !log.contains("upstream"),
        "nginx saw an upstream fail:\n{log}"
    );
}

#[tokio::test]
#[ignore = "needs nginx: set HERD_TEST_NGINX=/usr/sbin/nginx"]
async fn nginx_retries_a_safe_request_off_a_paused_replica() {
    let _ = nginx_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let r1 = Replica::start("r1", &db, &behind_nginx(&issuer));
    let r2 = Replica::start("r2", &db, &behind_nginx(&issuer));
    // A short read timeout, so the test does not wait out the committed 10 s.
    let nginx = Nginx::start_edited(
        port,
        [r1.listen.as_str(), r2.listen.as_str()],
        false,
        &[("proxy_read_timeout 10s;", "proxy_read_timeout 1s;")],
    )
    .await;
    let client = reqwest::Client::builder()
        .timeout(common::raw::NEVER)
        .build()
        .expect("client");
    let pid = r1.child.id().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status();
    assert!(stopped.is_ok_and(|s| s.success()), "kill -STOP {pid}");
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let started = Instant::now();
        let response = client
            .get(nginx.url("/healthz"))
            .send()
            .await
            .expect("an answer, not a request held on the paused replica");
        slowest = slowest.max(started.elapsed());
        assert_eq!(response.status(), 200, "{}", nginx.error_log());
        assert_eq!(replica_of(&response), "r2");
    }
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    // A figure for docs/deploy.md, not an assertion: it depends on the machine.
    eprintln!("slowest request around the paused replica: {slowest:?}");
    let log = nginx.error_log();
    assert!(
        log.lines()
            .any(|l| l.contains("timed out") && l.contains(&r1.listen)),
        "nginx never gave up on the paused replica:\n{log}"
    );
}

#[tokio::test]
#[ignore = "needs nginx: set HERD_TEST_NGINX=/usr/sbin/nginx"]
async fn nginx_closes_a_slowloris_connection() {
    let _ = nginx_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let r1 = Replica::start("r1", &db, &behind_nginx(&issuer));
    let r2 = Replica::start("r2", &db, &behind_nginx(&issuer));
    let nginx = Nginx::start_edited(
        port,
        [r1.listen.as_str(), r2.listen.as_str()],
        false,
        &[("client_header_timeout 10s;", "client_header_timeout 1s;")],
    )
    .await;
    let mut slow = common::raw::slowloris(&format!("127.0.0.1:{port}")).await;
    assert!(
        common::raw::closed_by_peer(&mut slow).await,
        "nginx still holds an unfinished request head"
    );
    let healthz = reqwest::get(nginx.url("/healthz")).await.expect("healthz");
    assert_eq!(healthz.status(), 200);
}
