//! `herd balance`: the balancer alone, in front of `herd serve` replicas it did not start.
//! The partition tests (`partition.rs`) use it across network namespaces; this one
//! needs nothing but the machine's loopback.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{database, herd, listen_address, replica_of, stop, Replica};

/// A child process that is stopped when the test ends, pass or fail.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        stop(&mut self.0, Duration::from_secs(10));
    }
}

fn spawn(args: &[&str], serving: &str) -> (Process, String) {
    let mut child = herd()
        .args(["--log-format", "json"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herd");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let listen = listen_address(&mut lines, serving);
    // Keep reading, so the pipe never fills up and stalls the child.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (Process(child), listen)
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
    let mut a = Replica::start("a", &db, &["--bus", "sql"]);
    let b = Replica::start("b", &db, &["--bus", "sql"]);
    let (addr_a, addr_b) = (a.listen.clone(), b.listen.clone());
    let (_balancer, listen) = spawn(
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
    let creds = json!({ "username": "balanced", "password": "correct horse battery" });
    let signup = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&creds)
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), 201);
    let login: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&creds)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();
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
