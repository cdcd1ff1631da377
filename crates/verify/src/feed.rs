//! Following herd's revocation feed: catch up with pages from the cursor, then the
//! event stream from the same cursor, and again from the top whenever it ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use crate::Shared;

/// What a revocation is of, as herd's feed says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Session,
    Key,
}

/// One revocation, as herd's feed writes it (`RevocationEntry` in its API description).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Entry {
    pub id: i64,
    pub kind: Kind,
    pub subject: String,
    pub expires_at: i64,
}

#[derive(Debug, Deserialize)]
struct Page {
    revocations: Vec<Entry>,
    next: i64,
    more: bool,
}

/// How long a stream may stay silent before it is taken for dead: herd sends a comment
/// at least every 15 s.
const SILENCE: Duration = Duration::from_secs(45);

#[derive(Debug)]
enum Failure {
    Http(reqwest::Error),
    Status(StatusCode),
    Silent,
    BadEvent,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Http(e) => write!(f, "{e}"),
            Failure::Status(s) => write!(f, "herd answered {s}"),
            Failure::Silent => write!(f, "the stream went silent"),
            Failure::BadEvent => write!(f, "an event that is not a revocation"),
        }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Failure {
        Failure::Http(e)
    }
}

/// Follows the feed for as long as the verifier lives.
pub(crate) async fn follow(shared: Arc<Shared>) {
    let mut follower = Follower {
        shared,
        cursor: None,
    };
    let mut wait = Duration::from_millis(50);
    loop {
        let result = follower.once().await;
        let was_following = follower.shared.following.swap(false, Ordering::SeqCst);
        match result {
            Ok(()) => tracing::debug!("herd's revocation stream ended; resuming"),
            Err(e) => {
                tracing::debug!(error = %e, "herd's revocation feed is unreachable; retrying")
            }
        }
        if was_following {
            wait = Duration::from_millis(50);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(
            follower
                .shared
                .config
                .retry_max
                .max(Duration::from_millis(50)),
        );
    }
}

struct Follower {
    shared: Arc<Shared>,
    /// The id of the last revocation read; `None` before the first, or after a 410.
    cursor: Option<i64>,
}

impl Follower {
    /// One connection: pages up to now, then the stream until it ends.
    async fn once(&mut self) -> Result<(), Failure> {
        self.catch_up().await?;
        let url = format!("{}/v1/revocations/stream", self.shared.config.herd_url);
        let mut request = self.shared.client.get(url);
        if let Some(cursor) = self.cursor {
            request = request.header("last-event-id", cursor.to_string());
        }
        let mut response = request.send().await?;
        if response.status() == StatusCode::GONE {
            self.cursor = None;
            return Ok(());
        }
        if !response.status().is_success() {
            return Err(Failure::Status(response.status()));
        }
        let mut buffer = String::new();
        loop {
            let chunk = match tokio::time::timeout(SILENCE, response.chunk()).await {
                Err(_) => return Err(Failure::Silent),
                Ok(chunk) => chunk?,
            };
            let Some(chunk) = chunk else {
                return Ok(());
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                self.event(&block)?;
            }
        }
    }

    /// Reads pages from the cursor until none is left; a 410 starts again with none.
    async fn catch_up(&mut self) -> Result<(), Failure> {
        loop {
            let mut url = format!("{}/v1/revocations", self.shared.config.herd_url);
            if let Some(cursor) = self.cursor {
                url.push_str(&format!("?after={cursor}"));
            }
            let response = self
                .shared
                .client
                .get(url)
                .timeout(Duration::from_secs(10))
                .send()
                .await?;
            if response.status() == StatusCode::GONE {
                tracing::info!(
                    "herd no longer keeps this feed cursor; reading every revocation in force"
                );
                self.cursor = None;
                continue;
            }
            if !response.status().is_success() {
                return Err(Failure::Status(response.status()));
            }
            let page: Page = response.json().await?;
            for entry in &page.revocations {
                self.shared.apply(entry);
            }
            self.cursor = Some(page.next);
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Applies one event block of the stream.
    fn event(&mut self, block: &str) -> Result<(), Failure> {
        let mut kind = "message";
        let mut id = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse::<i64>().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        match kind {
            "revoked" => {
                let entry: Entry = serde_json::from_str(&data).map_err(|_| Failure::BadEvent)?;
                self.shared.apply(&entry);
                self.cursor = Some(entry.id);
            }
            "caught_up" => {
                if id.is_some() {
                    self.cursor = id;
                }
                self.shared.following.store(true, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(())
    }
}
