//! A whole session against real `herd serve` processes with JSON logs at debug level,
//! every line captured, then searched for each secret the session used or issued: the
//! passwords, access and refresh tokens (and each token's signature alone), the CSRF
//! token, session ids, the private signing keys and the refresh-token HMAC secret, each
//! in the encodings it could leak in. ARCHITECTURE.md: "No token, password, refresh
//! token or private key is written to a log line".

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{client, Replica, PASSWORD};

const WRONG_PASSWORD: &str = "wrong horse battery";
/// Debug for everything, herd's own crates included; what an operator turns on to
/// investigate, and so what must still be safe to ship to a log store.
const LOG_LEVEL: &str = "debug";

/// The secrets of a session, each with the name it is reported under.
#[derive(Debug, Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, name: &str, value: &str) {
        assert!(
            value.len() >= 16,
            "{name} is too short to search for: {value:?}"
        );
        self.0.push((name.to_owned(), value.to_owned()));
    }

    /// A token, and its signature on its own (the part that makes it a credential).
    fn token(&mut self, name: &str, token: &str) {
        self.add(name, token);
        if let Some(signature) = token.rsplit('.').next().filter(|_| token.contains('.')) {
            self.add(&format!("{name} signature"), signature);
        }
    }

    /// Key material, in each text encoding it could be logged in.
    fn bytes(&mut self, name: &str, bytes: &[u8]) {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.add(
            &format!("{name} (base64url)"),
            &URL_SAFE_NO_PAD.encode(bytes),
        );
        self.add(&format!("{name} (base64)"), &STANDARD_NO_PAD.encode(bytes));
        self.add(&format!("{name} (hex)"), &hex);
        // Rust's `{:?}` of a byte slice: "[12, 34, ...]".
        self.add(&format!("{name} (debug)"), &format!("{bytes:?}"));
    }

    fn assert_absent_from(&self, log: &[String]) {
        let mut leaks = Vec::new();
        for (name, secret) in &self.0 {
            for line in log {
                if line.contains(secret.as_str()) {
                    leaks.push(format!("{name} in: {line}"));
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "secrets in the logs:\n{}",
            leaks.join("\n")
        );
    }
}

/// The log of a run is the evidence; a run that logged nothing proves nothing.
fn assert_logged_at_debug(log: &[String], messages: &[&str]) {
    for message in messages {
        assert!(
            log.iter().any(|l| l.contains(message)),
            "no log line says {message:?}; was the level {LOG_LEVEL}? {} lines",
            log.len()
        );
    }
    assert!(
        log.iter().any(|l| l.contains(r#""level":"DEBUG""#)),
        "no debug line was captured"
    );
}

fn set_cookies(response: &reqwest::Response) -> Vec<(String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let (name, value) = v.to_str().ok()?.split(';').next()?.split_once('=')?;
            Some((name.to_owned(), value.to_owned()))
        })
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

async fn post(
    replica: &Replica,
    path: &str,
    bearer: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = client().post(replica.url(path)).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// A WebSocket session: authenticate with a first frame, subscribe, send, re-authenticate.
async fn chat(replica: &Replica, access: &str, fresh: &str, room: &str) {
    let url = replica.url("/v1/ws").replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let next_of = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, kind: &str| loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            if frame["type"] == kind {
                return frame;
            }
        }
    };
    for frame in [
        json!({ "type": "auth", "token": access }),
        json!({ "type": "subscribe", "room": room, "since": 0 }),
        json!({ "type": "send", "room": room, "body": "hello", "client_id": "log-test-1" }),
    ] {
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }
    next_of(&mut ws, "ready").await;
    next_of(&mut ws, "ack").await;
    ws.send(Message::Text(
        json!({ "type": "reauth", "token": fresh })
            .to_string()
            .into(),
    ))
    .await
    .expect("reauth");
    let _ = ws.close(None).await;
}

#[tokio::test]
async fn a_whole_token_session_logs_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = crate::common::database(&dir);
    let env = [("RUST_LOG", LOG_LEVEL)];
    let replica = Replica::start_with_env("logs", &database, &["--bus", "sql"], &env);
    let mut secrets = Secrets::default();
    secrets.add("password", PASSWORD);
    secrets.add("wrong password", WRONG_PASSWORD);

    replica.signup("alice").await;
    let failed = post(
        &replica,
        "/v1/auth/login",
        None,
        json!({ "username": "alice", "password": WRONG_PASSWORD }),
    )
    .await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let unknown = post(
        &replica,
        "/v1/auth/login",
        None,
        json!({ "username": "nobody", "password": PASSWORD }),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let login = replica.login("alice").await;
    let access = login["access_token"].as_str().expect("access").to_owned();
    let refresh = login["refresh_token"].as_str().expect("refresh").to_owned();
    secrets.token("access token", &access);
    secrets.add("refresh token", &refresh);
    assert_eq!(replica.me(&access).await, StatusCode::OK);
    // A token with its last signature character changed, and one that is not a JWT.
    let mut tampered = access.clone();
    let last = if tampered.ends_with('A') { "B" } else { "A" };
    tampered.replace_range(tampered.len() - 1.., last);
    assert_eq!(replica.me(&tampered).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        replica.me("not-a-token-at-all").await,
        StatusCode::UNAUTHORIZED
    );

    let rotated: Value = replica.refresh(&refresh).await.json().await.expect("pair");
    let access2 = rotated["access_token"].as_str().expect("access").to_owned();
    let refresh2 = rotated["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    secrets.token("refreshed access token", &access2);
    secrets.add("successor refresh token", &refresh2);
    // The spent one again, inside the grace window, then a token never issued.
    assert_eq!(replica.refresh(&refresh).await.status(), StatusCode::OK);
    assert_eq!(
        replica
            .refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // A browser: cookies, a CSRF token, a cookie-authenticated refresh.
    let browser = post(
        &replica,
        "/v1/auth/login",
        None,
        json!({ "username": "alice", "password": PASSWORD, "cookies": true }),
    )
    .await;
    let cookies = set_cookies(&browser);
    let csrf = browser.json::<Value>().await.expect("body")["csrf_token"]
        .as_str()
        .expect("csrf")
        .to_owned();
    secrets.add("csrf token", &csrf);
    for (name, value) in &cookies {
        secrets.token(&format!("cookie {name}"), value);
    }
    let cookie_header = cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let refreshed = client()
        .post(replica.url("/v1/auth/refresh"))
        .header(COOKIE, &cookie_header)
        .header("origin", replica.url(""))
        .header("x-csrf-token", &csrf)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("cookie refresh");
    assert_eq!(refreshed.status(), StatusCode::OK);
    for (name, value) in set_cookies(&refreshed) {
        secrets.token(&format!("refreshed cookie {name}"), &value);
    }

    let room = post(
        &replica,
        "/v1/rooms",
        Some(&access2),
        json!({ "name": "logs" }),
    )
    .await;
    assert_eq!(room.status(), StatusCode::CREATED);
    let room = room.json::<Value>().await.expect("room")["id"]
        .as_str()
        .expect("room id")
        .to_owned();
    chat(&replica, &access2, &access2, &room).await;

    let logout = post(&replica, "/v1/auth/logout", Some(&access2), json!({})).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(replica.me(&access2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        replica.refresh(&refresh2).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // An operator rotates the keys, with the same logging.
    let rotation = crate::common::herd()
        .args([
            "--log-format",
            "json",
            "keys",
            "rotate",
            "--database",
            &database,
        ])
        .env("RUST_LOG", LOG_LEVEL)
        .stdin(Stdio::null())
        .output()
        .expect("herd keys rotate");
    assert!(rotation.status.success(), "{rotation:?}");

    // The secrets only the store holds.
    let store = herd_store::Store::open(&database).await.expect("store");
    let keys = store.signing_keys().await.expect("keys");
    assert_eq!(keys.len(), 2, "the first key and the rotated-in one");
    for key in &keys {
        secrets.bytes(&format!("private key {}", key.kid), &key.secret);
    }
    let hmac = store
        .secret("refresh_hmac", &[0; 32])
        .await
        .expect("secret");
    assert_ne!(hmac, [0; 32], "the replica created the secret");
    secrets.bytes("refresh HMAC secret", &hmac);
    store.close().await;

    let mut log = replica.stop();
    log.extend(
        String::from_utf8_lossy(&rotation.stderr)
            .lines()
            .map(str::to_owned),
    );
    log.extend(
        String::from_utf8_lossy(&rotation.stdout)
            .lines()
            .map(str::to_owned),
    );
    assert_logged_at_debug(
        &log,
        &[
            "herd is serving",
            "access token refused",
            "served",
            "stopped",
        ],
    );
    secrets.assert_absent_from(&log);
}

/// The stateful strategies hand out session ids: as much a credential as a token.
#[tokio::test]
async fn the_stateful_strategies_log_no_session_id() {
    for strategy in ["shared", "memory"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = crate::common::database(&dir);
        let replica = Replica::start_with_env(
            strategy,
            &database,
            &["--sessions", strategy],
            &[("RUST_LOG", LOG_LEVEL)],
        );
        let mut secrets = Secrets::default();
        secrets.add("password", PASSWORD);
        secrets.add("wrong password", WRONG_PASSWORD);
        replica.signup("alice").await;
        let failed = post(
            &replica,
            "/v1/auth/login",
            None,
            json!({ "username": "alice", "password": WRONG_PASSWORD }),
        )
        .await;
        assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
        let session = replica.login("alice").await["access_token"]
            .as_str()
            .expect("session id")
            .to_owned();
        secrets.add("session id", &session);
        assert_eq!(replica.me(&session).await, StatusCode::OK);
        let logout = post(&replica, "/v1/auth/logout", Some(&session), json!({})).await;
        assert_eq!(logout.status(), StatusCode::NO_CONTENT);
        assert_eq!(replica.me(&session).await, StatusCode::UNAUTHORIZED);
        let log = replica.stop();
        assert_logged_at_debug(&log, &["herd is serving", "served"]);
        secrets.assert_absent_from(&log);
    }
}
