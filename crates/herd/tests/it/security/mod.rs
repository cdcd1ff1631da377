//! herd's security properties as an operator meets them, against real `herd serve`
//! processes: replicas whose clocks disagree (`skew.rs`, libfaketime), third-party JOSE
//! libraries verifying and forging tokens (`interop.rs`), and a whole session's logs
//! searched for secrets (`logs.rs`).

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{json, Value};

pub use crate::common::Replica;

mod interop;
mod logs;
mod skew;

pub const PASSWORD: &str = "correct horse battery";

/// What these tests ask of a replica over HTTP.
impl Replica {
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
