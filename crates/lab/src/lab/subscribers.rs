//! The chaos runs' subscribers: WebSocket clients of the chat protocol
//! (docs/protocol.md), each pinned to one replica by the `herd_affinity` cookie, that
//! subscribe to their room from seq 0 and, whenever the connection ends, reconnect
//! (to any replica the balancer picks) and resume from the last seq they saw. What they
//! received is checked after the run: each seq once, in order, up to the room's last.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::balancer::AFFINITY_COOKIE;

/// How long a subscriber may take, once the users stopped, to receive its room's last
/// message.
const CATCH_UP: Duration = Duration::from_secs(15);

/// What one subscriber received.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watched {
    pub room: String,
    pub seqs: Vec<i64>,
    /// Reconnections after the first subscription.
    pub resumes: u64,
    /// The replica it was pinned to.
    pub replica: String,
}

impl Watched {
    /// (breaks, seqs received) against a room whose last seq is `last`: a seq received
    /// twice or out of order, each seq skipped, and each never delivered by the end.
    pub fn check(&self, last: i64) -> (u64, u64) {
        let d = self.damage(last);
        (
            d.duplicates + d.skipped + d.undelivered,
            self.seqs.len() as u64,
        )
    }

    /// What went wrong, by kind.
    pub fn damage(&self, last: i64) -> Damage {
        let mut d = Damage::default();
        let mut previous = 0i64;
        for &seq in &self.seqs {
            if seq <= previous {
                d.duplicates += 1;
            } else {
                d.skipped += u64::try_from(seq - previous - 1).unwrap_or(0);
                previous = seq;
            }
        }
        d.undelivered = u64::try_from(last - previous).unwrap_or(0);
        d
    }
}

/// A subscriber's damage: seqs received again or out of order, seqs skipped (a later
/// one came first), and seqs never delivered by the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Damage {
    pub duplicates: u64,
    pub skipped: u64,
    pub undelivered: u64,
}

/// One subscriber's settings.
pub(crate) struct Subscriber {
    pub client: reqwest::Client,
    /// The balancer, `http://host:port`.
    pub base: String,
    pub user: String,
    pub room: String,
    pub replica: String,
    /// Test-only: reconnect without resuming (subscribe from 0 again).
    pub no_resume: bool,
}

/// Runs until `targets` names the room's last seq and it has been received (or
/// [`CATCH_UP`] has passed since).
pub(crate) async fn run(
    s: Subscriber,
    mut targets: watch::Receiver<Option<HashMap<String, i64>>>,
) -> Watched {
    let mut watched = Watched {
        room: s.room.clone(),
        replica: s.replica.clone(),
        ..Watched::default()
    };
    let mut token: Option<String> = None;
    let mut joined = false;
    let mut connections = 0u64;
    let mut catch_up_until: Option<tokio::time::Instant> = None;
    let ws_base = s.base.replacen("http://", "ws://", 1);
    loop {
        let target = targets
            .borrow()
            .as_ref()
            .map(|t| t.get(&s.room).copied().unwrap_or(0));
        if let Some(target) = target {
            let until =
                *catch_up_until.get_or_insert_with(|| tokio::time::Instant::now() + CATCH_UP);
            let last = watched.seqs.last().copied().unwrap_or(0);
            if last >= target || tokio::time::Instant::now() >= until {
                return watched;
            }
        }
        let Some(bearer) = token.clone() else {
            token = login(&s).await;
            if token.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        };
        if !joined {
            joined = s
                .client
                .post(format!("{}/v1/rooms/{}/join", s.base, s.room))
                .bearer_auth(&bearer)
                .header("cookie", format!("{AFFINITY_COOKIE}={}", s.replica))
                .send()
                .await
                .is_ok_and(|a| a.status().is_success());
            if !joined {
                token = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        }
        let Ok(mut request) = format!("{ws_base}/v1/ws").into_client_request() else {
            return watched;
        };
        let headers = request.headers_mut();
        if let (Ok(auth), Ok(cookie)) = (
            format!("Bearer {bearer}").parse(),
            format!("{AFFINITY_COOKIE}={}", s.replica).parse(),
        ) {
            headers.insert("authorization", auth);
            headers.insert("cookie", cookie);
        }
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(request),
        )
        .await;
        let mut ws = match connected {
            Ok(Ok((ws, _))) => ws,
            _ => {
                // A refused upgrade may be a session the replica no longer takes.
                token = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if connections > 0 {
            watched.resumes += 1;
        }
        connections += 1;
        let since = if s.no_resume {
            0
        } else {
            watched.seqs.last().copied().unwrap_or(0)
        };
        let subscribe = json!({ "type": "subscribe", "room": s.room, "since": since });
        if ws.send(Message::text(subscribe.to_string())).await.is_err() {
            continue;
        }
        loop {
            let frame = tokio::select! {
                frame = ws.next() => frame,
                _ = targets.changed() => Some(Ok(Message::Ping(Default::default()))),
                () = tokio::time::sleep(Duration::from_millis(250)) => Some(Ok(Message::Ping(Default::default()))),
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {
                    // A tick: stop once caught up.
                    let target = targets
                        .borrow()
                        .as_ref()
                        .map(|t| t.get(&s.room).copied().unwrap_or(0));
                    if let Some(target) = target {
                        let until = *catch_up_until
                            .get_or_insert_with(|| tokio::time::Instant::now() + CATCH_UP);
                        let last = watched.seqs.last().copied().unwrap_or(0);
                        if last >= target || tokio::time::Instant::now() >= until {
                            let _ = ws.close(None).await;
                            return watched;
                        }
                    }
                    continue;
                }
            };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            if frame["type"] == "error" && frame.get("client_id").is_none() {
                // The subscribe was refused (`unavailable`: the replica could not read the
                // store): the protocol says retry, so reconnect and subscribe again.
                let _ = ws.close(None).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            if frame["type"] == "message" && frame["room"] == s.room.as_str() {
                if let Some(seq) = frame["seq"].as_i64() {
                    watched.seqs.push(seq);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(s: &Subscriber) -> Option<String> {
    let answer = s
        .client
        .post(format!("{}/v1/auth/login", s.base))
        .header("cookie", format!("{AFFINITY_COOKIE}={}", s.replica))
        .json(&json!({ "username": s.user, "password": super::workload::PASSWORD }))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    let body: Value = answer.json().await.ok()?;
    body["access_token"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_gaps_and_an_undelivered_tail_each_count() {
        let w = |seqs: &[i64]| Watched {
            room: "r".into(),
            seqs: seqs.to_vec(),
            resumes: 0,
            replica: "r1".into(),
        };
        assert_eq!(w(&[1, 2, 3]).check(3), (0, 3));
        assert_eq!(w(&[1, 2, 2, 3]).check(3).0, 1, "a duplicate");
        assert_eq!(w(&[1, 3]).check(3).0, 1, "a gap");
        assert_eq!(w(&[1, 2]).check(4).0, 2, "two never delivered");
        assert_eq!(w(&[1, 2, 3, 1, 2, 3]).check(3).0, 3, "a replay from 0");
    }
}
