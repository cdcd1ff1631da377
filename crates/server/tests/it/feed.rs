//! The revocation feed: a page for catch-up and a Server-Sent Events stream, as a
//! service verifying herd's tokens offline follows them.

use std::time::Duration;

use axum::body::Body;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use herd_identity::{KeyState, ThrottleConfig};
use reqwest::StatusCode;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::helpers::{assert_problem, spawn_with, Options, TestApp};

/// Logins are not throttled here: the tests log one user in many times.
fn options() -> Options {
    Options {
        throttle: ThrottleConfig {
            address: None,
            signup: None,
            ..ThrottleConfig::default()
        },
        ..Options::default()
    }
}

fn sid_of(access: &str) -> String {
    let payload = access.split('.').nth(1).expect("payload");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    claims["sid"].as_str().expect("sid").to_owned()
}

/// Logs `user` in and out again; returns the session id that was revoked.
async fn logged_out(app: &TestApp, user: &str) -> String {
    let tokens = app.login(user).await;
    assert_eq!(
        app.logout(&tokens.access).await.status(),
        StatusCode::NO_CONTENT
    );
    sid_of(&tokens.access)
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads events off a streaming response, with a deadline for each.
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    async fn open(app: &TestApp, last_event_id: Option<&str>) -> Sse {
        let mut request = app.client.get(app.url("/v1/revocations/stream"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().expect("ascii"),
            "text/event-stream"
        );
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// The next event that is not a comment or a `retry` line; `None` once the stream ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("stream read")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// Events up to and including the first of kind `until`.
    async fn until(&mut self, until: &str) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await.expect("the stream goes on");
            let done = event.event == until;
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// The next `n` revocations.
    async fn revoked(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let event = self.next().await.expect("the stream goes on");
            if event.event == "revoked" {
                let entry: Value = serde_json::from_str(&event.data).expect("json");
                assert_eq!(event.id.as_deref(), Some(entry["id"].to_string().as_str()));
                out.push(entry);
            }
        }
        out
    }
}

fn subjects(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["subject"].as_str().expect("subject").to_owned())
        .collect()
}

#[tokio::test]
async fn a_malformed_cursor_is_refused_with_400() {
    let app = spawn_with(options()).await;
    for bad in ["abc", "-1", "1.5", "99999999999999999999", "", "%31"] {
        let page = app.get(&format!("/v1/revocations?after={bad}")).await;
        assert_problem(page, StatusCode::BAD_REQUEST, "invalid-cursor").await;
        let stream = app
            .client
            .get(app.url("/v1/revocations/stream"))
            .header("last-event-id", bad)
            .send()
            .await
            .expect("request");
        assert_problem(stream, StatusCode::BAD_REQUEST, "invalid-cursor").await;
    }
    let limit = app.get("/v1/revocations?limit=0").await;
    assert_problem(limit, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
}

#[tokio::test]
async fn a_cursor_older_than_the_log_keeps_is_gone_and_no_cursor_catches_up() {
    let mut app = spawn_with(options()).await;
    app.user("alice").await;
    let first = logged_out(&app, "alice").await;
    let page: Value = app.get("/v1/revocations").await.json().await.expect("json");
    assert_eq!(
        subjects(page["revocations"].as_array().expect("list")),
        [first]
    );
    let old_cursor = page["next"].as_i64().expect("next");
    let second = logged_out(&app, "alice").await;
    // Past every token of the first two sessions (TTL 300 s plus leeway); the upkeep
    // prunes the log, after which a third logout is all that is kept.
    app.clock.advance(400);
    app.auth.maintain().await.expect("prune");
    let third = logged_out(&app, "alice").await;
    assert_ne!(second, third);
    let gone = app
        .get(&format!("/v1/revocations?after={old_cursor}"))
        .await;
    let body = assert_problem(gone, StatusCode::GONE, "cursor-expired").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("no cursor"),
        "{body}"
    );
    let stream = app
        .client
        .get(app.url("/v1/revocations/stream"))
        .header("last-event-id", old_cursor.to_string())
        .send()
        .await
        .expect("request");
    assert_problem(stream, StatusCode::GONE, "cursor-expired").await;
    let page: Value = app.get("/v1/revocations").await.json().await.expect("json");
    assert_eq!(
        subjects(page["revocations"].as_array().expect("list")),
        [third],
        "no cursor lists every revocation in force, and only those"
    );
    let far = app.get("/v1/revocations?after=999999").await;
    assert_problem(far, StatusCode::GONE, "cursor-expired").await;
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn pages_follow_one_another_without_gap_or_duplicate() {
    let app = spawn_with(options()).await;
    app.user("alice").await;
    let mut expected = Vec::new();
    for _ in 0..5 {
        expected.push(logged_out(&app, "alice").await);
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = app
            .get(&format!("/v1/revocations?after={after}&limit=2"))
            .await
            .json()
            .await
            .expect("json");
        seen.extend(subjects(page["revocations"].as_array().expect("list")));
        after = page["next"].as_i64().expect("next");
        if !page["more"].as_bool().expect("more") {
            break;
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn resuming_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let mut app = spawn_with(options()).await;
    app.user("alice").await;
    let before = logged_out(&app, "alice").await;
    let mut sse = Sse::open(&app, None).await;
    let backlog = sse.until("caught_up").await;
    let revoked: Vec<&Event> = backlog.iter().filter(|e| e.event == "revoked").collect();
    assert_eq!(revoked.len(), 1);
    assert!(revoked[0].data.contains(&before));
    let live = logged_out(&app, "alice").await;
    let heard = sse.revoked(1).await;
    assert_eq!(subjects(&heard), [live]);
    assert_eq!(heard[0]["kind"], "session");
    let last_id = heard[0]["id"].to_string();
    drop(sse);

    // Revoked while no one listened.
    let missed = [
        logged_out(&app, "alice").await,
        logged_out(&app, "alice").await,
    ];
    let mut sse = Sse::open(&app, Some(&last_id)).await;
    let resumed = sse.until("caught_up").await;
    let resumed: Vec<Value> = resumed
        .iter()
        .filter(|e| e.event == "revoked")
        .map(|e| serde_json::from_str(&e.data).expect("json"))
        .collect();
    assert_eq!(
        subjects(&resumed),
        missed,
        "exactly what was missed, in order"
    );
    let after = logged_out(&app, "alice").await;
    assert_eq!(subjects(&sse.revoked(1).await), [after]);
    drop(sse);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn a_revoked_signing_key_appears_on_the_feed() {
    let app = spawn_with(options()).await;
    let mut sse = Sse::open(&app, None).await;
    sse.until("caught_up").await;
    let keys = app.auth.keys().await.expect("keys");
    let active = keys
        .iter()
        .find(|k| k.state == KeyState::Active)
        .expect("active key");
    app.auth.revoke_key(&active.kid).await.expect("revoke");
    // `herd keys revoke` runs in another process: replicas hear of it by their upkeep.
    app.auth.maintain().await.expect("upkeep");
    let heard = sse.revoked(1).await;
    assert_eq!(heard[0]["kind"], "key");
    assert_eq!(heard[0]["subject"], active.kid.as_str());
    let page: Value = app.get("/v1/revocations").await.json().await.expect("json");
    assert_eq!(page["revocations"][0]["kind"], "key");
}

#[tokio::test]
async fn a_stream_reader_that_stops_reading_is_dropped() {
    let app = spawn_with(options()).await;
    app.user("alice").await;
    let request = axum::http::Request::get("/v1/revocations/stream")
        .body(Body::empty())
        .expect("request");
    // Nothing reads this body until the end: the stream's queue fills.
    let response = herd_server::router(app.state.clone())
        .oneshot(request)
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let n = herd_server::feed::QUEUE + 8;
    for _ in 0..n {
        logged_out(&app, "alice").await;
    }
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        axum::body::to_bytes(response.into_body(), usize::MAX),
    )
    .await
    .expect("the dropped stream ends rather than waiting for its reader")
    .expect("body");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let delivered = text.matches("event: revoked").count();
    assert!(
        delivered < n,
        "a reader that does not read does not get every event queued: {delivered} of {n}"
    );
}

/// The replica closes a connection that moved no byte for its idle timeout, whatever it
/// is doing (a reader that stopped reading must not hold it for ever); a quiet stream
/// stays open because its keep-alive comments come faster than that.
#[tokio::test]
async fn a_quiet_stream_outlives_the_idle_timeout() {
    let mut options = options();
    options.connections.idle_timeout = Duration::from_millis(300);
    let app = spawn_with(options).await;
    app.user("alice").await;
    let mut sse = Sse::open(&app, None).await;
    sse.until("caught_up").await;
    // Quiet for three idle periods: a connection that moved nothing is closed after two.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let revoked = logged_out(&app, "alice").await;
    assert_eq!(subjects(&sse.revoked(1).await), [revoked]);
}
