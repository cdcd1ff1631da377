//! `herd cluster` as a child process, driven through its balancer and admin API.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    database, herd, keep_lines, listen_address, replica_of, signup_and_login, stop, CHEAP_HASH,
};

/// A `herd cluster` child process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Cluster {
    pub child: Child,
    pub listen: String,
    pub client: reqwest::Client,
    /// Every log line after the address, kept for failure messages. Reading them also
    /// keeps the pipe from filling up and stalling the cluster.
    pub log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Two replicas; `flags` go to `herd cluster` itself.
    pub fn start(flags: &[&str]) -> Cluster {
        Cluster::start_serving(flags, &[])
    }

    /// Two replicas, each given `serve_flags` too, and cheap password hashing (these
    /// tests are about processes, not passwords). The database is a SQLite file in a
    /// directory of the cluster's own.
    pub fn start_serving(flags: &[&str], serve_flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = herd()
            .args(["--log-format", "json", "cluster", "--replicas", "2"])
            .args(["--listen", "127.0.0.1:0", "--database", &database(&dir)])
            .args(flags)
            .args(["--"])
            .args(CHEAP_HASH)
            .args(serve_flags)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herd cluster");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let listen = listen_address(&mut lines, "cluster is serving");
        let log = Arc::new(Mutex::new(Vec::new()));
        keep_lines(lines, log.clone());
        Cluster {
            child,
            listen,
            client: reqwest::Client::new(),
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// The admin API's table: `policy` and `replicas`.
    pub async fn replicas(&self) -> Value {
        let response = self
            .client
            .get(self.url("/_cluster/replicas"))
            .send()
            .await
            .expect("admin request");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// The state the admin API gives replica `id`, if it lists one.
    pub async fn state_of(&self, id: &str) -> Option<String> {
        self.replicas().await["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .find(|r| r["id"] == id)
            .and_then(|r| r["state"].as_str().map(str::to_owned))
    }

    /// Polls the admin API until `done` holds for the replica table.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let table = self.replicas().await;
            if done(table["replicas"].as_array().expect("replicas")) {
                return table;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {table}\n{}",
                self.log.lock().expect("log").join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn admin(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header(herd_lab::ADMIN_HEADER, "1")
            .send()
            .await
            .expect("admin request")
    }

    /// A JSON request through the balancer; the status and the body.
    pub async fn call(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Signs alice up and logs her in; returns her access token.
    pub async fn login(&self) -> String {
        signup_and_login(&self.client, &self.url(""), "alice", "correct horse").await
    }

    /// `GET /v1/me`: the status and the replica that answered.
    pub async fn me(&self, token: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url("/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        (response.status().as_u16(), replica_of(&response))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGTERM first, so the cluster stops its replicas; SIGKILL would orphan them.
        stop(&mut self.child, Duration::from_secs(15));
    }
}
