//! `herd balance`: the balancer alone, in front of `herd serve` replicas it did not start.
//! The partition tests (`partition.rs`) use it across network namespaces; this one
//! needs nothing but the machine's loopback.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, database, herd, keep_lines, listen_address, replica_of, stop, Replica};

/// The replicas' flags: one issuer for both (without it each issues as its own
/// address, and refuses the other's tokens), news over the shared database.
const REPLICA_FLAGS: &[&str] = &["--bus", "sql", "--issuer", "http://herd.test"];

/// A child process that is stopped when the test ends, pass or fail.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        stop(&mut self.0, Duration::from_secs(10));
    }
}

async fn states(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/_cluster/replicas"))
        .send()
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("json")
}

async fn wait_for_state(http: &reqwest::Client, base: &str, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = states(http, base).await;
        let now = all["replicas"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["id"] == id))
            .map(|r| r["state"].clone());
        if now == Some(json!(state)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became {state}: {all}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn balance_spreads_requests_over_upstreams_and_routes_around_one_that_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let mut a = Replica::start("a", &db, REPLICA_FLAGS);
    let b = Replica::start("b", &db, REPLICA_FLAGS);
    let (addr_a, addr_b) = (a.listen.clone(), b.listen.clone());
    let (_balancer, listen, _) = spawn_command(
        herd(),
        &[
            "balance",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("{addr_a},{addr_b}"),
            "--health-interval",
            "100ms",
        ],
        "balancer is serving",
    );
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    wait_for_state(&http, &base, &addr_a, "up").await;
    wait_for_state(&http, &base, &addr_b, "up").await;

    // A token from one replica works through the balancer on both.
    let token = common::signup_and_login(&http, &base, "balanced", "correct horse battery").await;
    let mut served = BTreeSet::new();
    for _ in 0..4 {
        let me = http
            .get(format!("{base}/v1/me"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("me");
        assert_eq!(me.status(), 200);
        served.insert(replica_of(&me));
    }
    assert_eq!(served, BTreeSet::from(["a".to_owned(), "b".to_owned()]));

    // The balancer starts no replicas of its own.
    let add = http
        .post(format!("{base}/_cluster/replicas"))
        .header("x-herd-admin", "1")
        .send()
        .await
        .expect("admin answers");
    assert_eq!(add.status(), 409);
    let problem: Value = add.json().await.expect("problem+json");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--upstream")),
        "{problem}"
    );

    // One replica stops: every request goes to the other, none fails.
    stop(&mut a.child, Duration::from_secs(10));
    for _ in 0..20 {
        let me = http
            .get(format!("{base}/v1/me"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("me");
        assert_eq!(me.status(), 200);
        assert_eq!(replica_of(&me), "b");
    }
    wait_for_state(&http, &base, &addr_a, "down").await;
}

// --- The edge: what a client with no account can do to the balancer and the replicas.

/// Two replicas behind `herd balance`, with `flags` for the balancer; returns the
/// processes (kept alive by the caller), the balancer's address, the replicas' and the
/// balancer's log lines so far (collected as they come).
async fn balanced(
    dir: &tempfile::TempDir,
    flags: &[&str],
) -> (
    (Process, Replica, Replica),
    String,
    [String; 2],
    Arc<Mutex<Vec<String>>>,
) {
    let db = database(dir);
    let a = Replica::start("a", &db, REPLICA_FLAGS);
    let b = Replica::start("b", &db, REPLICA_FLAGS);
    let (addr_a, addr_b) = (a.listen.clone(), b.listen.clone());
    let upstreams = format!("{addr_a},{addr_b}");
    let mut args = vec![
        "balance",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstreams,
    ];
    args.extend_from_slice(flags);
    let (balancer, listen, log) = spawn_command(herd(), &args, "balancer is serving");
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    wait_for_state(&http, &base, &addr_a, "up").await;
    wait_for_state(&http, &base, &addr_b, "up").await;
    ((balancer, a, b), listen, [addr_a, addr_b], log)
}

/// A 1 MiB JSON body (the most the balancer buffers), far over a replica's 64 KiB limit.
fn huge_post(host: &str) -> Vec<u8> {
    let body = format!("{{\"name\":\"{}\"}}", "x".repeat(1024 * 1024 - 11));
    let mut request = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    request
}

#[tokio::test]
async fn requests_a_replica_refuses_do_not_take_it_out_of_the_balancer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_processes, listen, _, log) = balanced(&dir, &[]).await;
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    // Four attackers at once, each rotating crowded requests with unread bodies (some
    // over the balancer's own header count) and 1 MiB posts: a replica refuses the posts
    // and hangs up on the rest of the body, which the balancer, still sending it, sees
    // as a broken connection. The health checks
    // run at their default interval (500 ms), slower than the attack.
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let listen = listen.clone();
            tokio::spawn(async move {
                for round in 0..20 {
                    let attack = match round % 3 {
                        // Under the balancer's header count, so passed to a replica.
                        0 => common::raw::crowded_healthz(&listen, 94, 65_000),
                        // Over the balancer's own header count: its 431.
                        1 => common::raw::crowded_healthz(&listen, 1_000, 65_000),
                        _ => huge_post(&listen),
                    };
                    // Its own answer may be the replica's refusal, or 502 when the
                    // replica's reset overtook it; either way it is answered.
                    let status = common::raw::status_of(&listen, &attack).await;
                    assert!(status.is_some(), "round {round}: the attack got no answer");
                }
            })
        })
        .collect();
    let mut served = 0;
    while attackers.iter().any(|a| !a.is_finished()) {
        let normal = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        let status = normal.status();
        let body = normal.text().await.unwrap_or_default();
        assert_eq!(status, 200, "after {served} served: {body}");
        served += 1;
    }
    for attacker in attackers {
        attacker.await.expect("attacker");
    }
    // Neither replica was taken out for what a request did to it, not even for a moment.
    // (A replica too busy to answer /readyz within its second may still be, rightly: on a
    // loaded machine that can happen under this attack, so the test does not ask.)
    let log = log.lock().expect("log");
    let taken_out: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("taken out until /readyz passes"))
        .collect();
    assert!(taken_out.is_empty(), "{taken_out:#?}");
}

#[tokio::test]
async fn a_post_asking_for_an_h2c_upgrade_is_answered_not_hung() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_processes, listen, _, _) = balanced(&dir, &[]).await;
    // What `curl --http2 -X POST` sends over plain http: the balancer used to take it for
    // a WebSocket, drop its body and forward its Content-Length, so the replica waited
    // for a body that never came.
    let body = r#"{"username":"nobody","password":"not the password"}"#;
    let request = format!(
        "POST /v1/auth/login HTTP/1.1\r\nHost: {listen}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let status = common::raw::status_of(&listen, request.as_bytes()).await;
    assert_eq!(
        status,
        Some(401),
        "an unknown user's login is refused as usual"
    );
}

#[tokio::test]
async fn the_balancer_closes_slowloris_and_idle_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_processes, listen, _, _) = balanced(
        &dir,
        &[
            "--balancer-header-read-timeout",
            "300ms",
            "--balancer-idle-timeout",
            "300ms",
        ],
    )
    .await;
    let mut slow = common::raw::slowloris(&listen).await;
    assert!(
        common::raw::closed_by_peer(&mut slow).await,
        "the balancer still holds an unfinished request head"
    );
    let mut silent = tokio::net::TcpStream::connect(&listen)
        .await
        .expect("connect");
    assert!(
        common::raw::closed_by_peer(&mut silent).await,
        "the balancer still holds a connection that never said anything"
    );
}

/// Between requests a kept-alive client connection is idle, not slow: hyper's header-read
/// timer ran there too and ended it at the header-read timeout, not the idle timeout. A
/// head begun on it is still held to the header-read timeout.
#[tokio::test]
async fn the_balancer_keeps_an_idle_keep_alive_connection_past_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_processes, listen, _, _) = balanced(
        &dir,
        &[
            "--balancer-header-read-timeout",
            "200ms",
            // Longer than the test: whatever closes the connection is not this.
            "--balancer-idle-timeout",
            "10m",
        ],
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(&listen)
        .await
        .expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n";
    stream.write_all(request).await.expect("send");
    let status = common::raw::read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "the balancer ended an idle keep-alive connection at the header-read timeout: {waited:?}"
    );
    stream.write_all(request).await.expect("send again");
    let status = common::raw::read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nx-slow: ")
        .await
        .expect("send a head that never ends");
    assert!(
        common::raw::closed_by_peer(&mut stream).await,
        "the balancer still holds an unfinished request head on a kept-alive connection"
    );
}

#[tokio::test]
async fn many_idle_connections_do_not_keep_a_replica_or_the_balancer_from_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    // Both under a small descriptor limit, with their default (long) idle timeout: what
    // frees descriptors is closing idle connections when they run out.
    let (_replica, addr, replica_log) = spawn_command(
        common::herd_with_open_files(128),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--replica-id",
            "a",
            "--database",
            &db,
            "--bus",
            "in-process",
        ],
        "herd is serving",
    );
    let (_balancer, listen, balancer_log) = spawn_command(
        common::herd_with_open_files(128),
        &[
            "balance",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &addr,
            "--health-interval",
            "100ms",
        ],
        "balancer is serving",
    );
    let http = reqwest::Client::builder()
        .timeout(common::raw::NEVER)
        .build()
        .expect("client");
    wait_for_state(&http, &format!("http://{listen}"), &addr, "up").await;
    for target in [&addr, &listen] {
        let mut idle = Vec::new();
        for _ in 0..300 {
            idle.push(
                tokio::net::TcpStream::connect(target.as_str())
                    .await
                    .expect("connect"),
            );
        }
        // Out of descriptors, the server closes every connection with nothing in
        // flight, and a connection it accepted a moment before its request arrived is
        // one of them: a client retries such a close, as browsers do. Three tries, not
        // one, is what "keeps answering" means here.
        let mut last = None;
        for _ in 0..3 {
            match http.get(format!("http://{target}/healthz")).send().await {
                Ok(healthz) => {
                    last = Some(Ok(healthz.status()));
                    break;
                }
                Err(e) => last = Some(Err(e)),
            }
        }
        let answer = last.expect("tried");
        if !matches!(answer, Ok(reqwest::StatusCode::OK)) {
            let replica_log = replica_log.lock().expect("log").join("\n");
            let balancer_log = balancer_log.lock().expect("log").join("\n");
            panic!(
                "{target} did not answer past 300 idle connections: {answer:?}\n\
                 replica's log:\n{replica_log}\nbalancer's log:\n{balancer_log}"
            );
        }
    }
}

/// `command` (`herd`, or `herd` under a limit) run with `args`, until it logs `serving`;
/// the process, the address it logged, and its log lines after that, collected as they
/// come.
fn spawn_command(
    mut command: std::process::Command,
    args: &[&str],
    serving: &str,
) -> (Process, String, Arc<Mutex<Vec<String>>>) {
    let mut child = command
        .args(["--log-format", "json"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herd");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let listen = listen_address(&mut lines, serving);
    let log = Arc::new(Mutex::new(Vec::new()));
    keep_lines(lines, log.clone());
    (Process(child), listen, log)
}
