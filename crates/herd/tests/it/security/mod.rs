//! herd's security properties as an operator meets them, against real `herd serve`
//! processes: replicas whose clocks disagree (`skew.rs`, libfaketime), third-party JOSE
//! libraries verifying and forging tokens (`interop.rs`), and a whole session's logs
//! searched for secrets (`logs.rs`).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

#[path = "../common/mod.rs"]
mod common;
mod interop;
mod logs;
mod skew;

pub const PASSWORD: &str = "correct horse battery";

/// A `herd serve` child process with JSON logs; every line it writes to stderr is kept.
#[derive(Debug)]
pub struct Replica {
    child: Child,
    pub listen: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts `herd serve` on port 0 with cheap password hashing (these tests are about
    /// tokens and processes, not passwords), `flags` after the defaults and `env` set.
    pub fn start(id: &str, database: &str, flags: &[&str], env: &[(&str, &str)]) -> Replica {
        let mut child = common::herd()
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(["--replica-id", id, "--database", database])
            .args(common::CHEAP_HASH)
            .args(flags)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herd serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut listen = None;
        for line in lines.by_ref() {
            let line = line.expect("a log line");
            let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            log.lock().expect("log").push(line);
            if entry["fields"]["message"] == "herd is serving" {
                listen = entry["fields"]["listen"].as_str().map(str::to_owned);
                break;
            }
        }
        let listen = listen.unwrap_or_else(|| {
            panic!(
                "{id} exited before serving:\n{}",
                log.lock().expect("log").join("\n")
            )
        });
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        Replica { child, listen, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Stops the process with SIGTERM and returns everything it logged.
    pub fn stop(mut self) -> Vec<String> {
        common::stop(&mut self.child, Duration::from_secs(10));
        // The reader thread ends at EOF, which the exit has caused; wait for it to have
        // taken the last lines.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.log) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines = self.log.lock().expect("log").clone();
        lines
    }

    pub async fn signup(&self, user: &str) {
        let response = client()
            .post(self.url("/v1/auth/signup"))
            .json(&json!({ "username": user, "password": PASSWORD }))
            .send()
            .await
            .expect("signup");
        assert_eq!(response.status(), StatusCode::CREATED, "signing up {user}");
    }

    /// Logs in and returns the body: `access_token`, `refresh_token`, ...
    pub async fn login(&self, user: &str) -> Value {
        let response = client()
            .post(self.url("/v1/auth/login"))
            .json(&json!({ "username": user, "password": PASSWORD }))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::OK, "logging in {user}");
        response.json().await.expect("login body")
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        client()
            .post(self.url("/v1/auth/refresh"))
            .json(&json!({ "refresh_token": refresh_token }))
            .send()
            .await
            .expect("refresh")
    }

    pub async fn me(&self, access_token: &str) -> StatusCode {
        client()
            .get(self.url("/v1/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("me")
            .status()
    }

    /// How many access tokens this replica has refused, by reason, from `/metrics`.
    pub async fn refusals(&self) -> BTreeMap<String, u64> {
        let text = client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter_map(|l| {
                let rest =
                    l.strip_prefix("herd_auth_failures_total{kind=\"access_token\",reason=\"")?;
                let (reason, count) = rest.split_once("\"}")?;
                Some((reason.to_owned(), count.trim().parse().ok()?))
            })
            .collect()
    }

    /// Presents `token` to `/v1/me`; on a 401 returns the reason this replica counted.
    pub async fn verdict(&self, token: &str) -> Result<(), String> {
        let before = self.refusals().await;
        let status = self.me(token).await;
        if status == StatusCode::OK {
            return Ok(());
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "an unexpected answer");
        let after = self.refusals().await;
        let counted: Vec<&String> = after
            .iter()
            .filter(|(reason, n)| before.get(*reason).copied().unwrap_or(0) < **n)
            .map(|(reason, _)| reason)
            .collect();
        match counted.as_slice() {
            [reason] => Err((*reason).clone()),
            other => panic!("a 401 should count one reason, not {other:?}"),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// The value of the environment variable an ignored test needs, or a loud failure.
pub fn required_env(name: &str, why: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: {why}"),
    }
}
