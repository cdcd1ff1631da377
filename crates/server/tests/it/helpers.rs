//! `spawn_app` and the typed helpers the tests use. A test replica starts through
//! [`App::builder`], the production start-up, with a `ManualClock` and, where the test
//! asks for one, a bus shared with its other replicas.

use std::sync::Arc;
use std::time::Duration;

use herd_identity::{
    Auth, AuthConfig, HashParams, ManualClock, SessionTimeouts, Strategy, ThrottleConfig,
};
use herd_server::app::{BusSettings, Schema, StartError};
use herd_server::client::TrustedProxies;
use herd_server::{App, Settings};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "correct horse battery";

/// Cheap hashing keeps the suite fast; the production parameters are tested in the
/// identity crate and by the default configuration.
pub const CHEAP_HASH: HashParams = HashParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// How a test replica is configured; the defaults suit most tests.
#[derive(Debug, Clone)]
pub struct Options {
    pub replica_id: String,
    /// In seconds, like the manual clock.
    pub key_publish_delay: i64,
    pub body_limit: usize,
    pub strategy: Strategy,
    pub redis_url: Option<String>,
    pub insecure_cookies: bool,
    pub bus: TestBus,
    pub chat: herd_server::chat::ChatLimits,
    /// In seconds, like the manual clock.
    pub access_ttl: i64,
    /// The production defaults unless a test says otherwise.
    pub throttle: ThrottleConfig,
    pub trusted_proxies: TrustedProxies,
    /// argon2id parameters; cheap ones keep the suite fast.
    pub hash: HashParams,
    /// `--allowed-origin`: origins besides the replica's own that may use its cookies.
    pub allowed_origins: Vec<String>,
    /// `--issuer`, whose origin is the public origin cookie-authenticated writes may
    /// come from.
    pub issuer: String,
    /// How long a signup or login waits for a password-hashing slot.
    pub hash_permit_wait: Duration,
    /// Header size, header-read and idle timeouts of the replica's connections.
    pub connections: herd_server::ConnectionLimits,
    /// Session lifetimes under `shared` and `memory`.
    pub sessions: Timeouts,
    /// How long a revocation waits for the other live replicas to confirm it.
    pub confirm_deadline: Duration,
    /// No `--issuer`: the replica names its own address, so that a client discovering
    /// its keys from the issuer reaches it.
    pub issuer_follows_listen: bool,
}

/// Which bus a test replica relays news over.
#[derive(Debug, Clone)]
pub enum TestBus {
    None,
    /// One bus shared by the replicas of the test, as if they were one process.
    InProcess(herd_bus::Bus),
    /// The event log of the replica's own store, polled every 10 ms.
    Sql,
    Redis(String),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replica_id: "test-a".into(),
            key_publish_delay: 60,
            body_limit: 64 * 1024,
            strategy: Strategy::Token,
            redis_url: None,
            insecure_cookies: true,
            bus: TestBus::None,
            chat: herd_server::chat::ChatLimits::default(),
            access_ttl: 300,
            // Signups are not metered unless a test asks: with Redis the meters outlive
            // the test run, and every run signs users up from 127.0.0.1, so a limit of 20
            // an hour would refuse the next run's signups on the same machine.
            throttle: ThrottleConfig {
                signup: None,
                ..ThrottleConfig::default()
            },
            trusted_proxies: TrustedProxies::default(),
            hash: CHEAP_HASH,
            allowed_origins: vec![],
            issuer: "http://herd.test".into(),
            hash_permit_wait: Duration::from_secs(5),
            connections: herd_server::ConnectionLimits::default(),
            sessions: TIMEOUTS,
            confirm_deadline: herd_server::news::DEFAULT_CONFIRM_DEADLINE,
            issuer_follows_listen: false,
        }
    }
}

/// Session lifetimes in tests, in the seconds the manual clock advances by: 100 s idle,
/// 1000 s absolute, extended at most every 10 s.
pub const TIMEOUTS: Timeouts = Timeouts {
    idle: 100,
    absolute: 1000,
    touch_interval: 10,
};

/// [`SessionTimeouts`] in whole seconds, the unit the tests move the clock by.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: i64,
    pub absolute: i64,
    pub touch_interval: i64,
}

impl Timeouts {
    fn config(&self) -> SessionTimeouts {
        SessionTimeouts {
            idle: secs(self.idle),
            absolute: secs(self.absolute),
            touch_interval: secs(self.touch_interval),
        }
    }
}

/// A span of `n` seconds of the manual clock.
fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(0).unsigned_abs())
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub auth: Auth,
    pub database: String,
    pub options: Options,
    /// The replica's state, for what a test must wait on rather than poll.
    pub state: herd_server::AppState,
    dir: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<JoinHandle<Result<(), StartError>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(options: Options) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let database = format!("sqlite://{}", dir.path().join("herd.db").display());
    spawn_on(
        dir,
        database,
        Arc::new(ManualClock::starting_now()),
        options,
    )
    .await
}

/// A replica on the database at `database` (which the caller owns and removes).
pub async fn spawn_on_database(database: String, options: Options) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    spawn_on(
        dir,
        database,
        Arc::new(ManualClock::starting_now()),
        options,
    )
    .await
}

impl TestApp {
    /// Another replica on the same database and clock, started now.
    pub async fn spawn_peer(&self, replica_id: &str) -> TestApp {
        let options = Options {
            replica_id: replica_id.into(),
            ..self.options.clone()
        };
        self.spawn_peer_with(options).await
    }

    /// Another replica on the same database and clock, configured by `options`.
    pub async fn spawn_peer_with(&self, options: Options) -> TestApp {
        spawn_on(
            self.dir.clone(),
            self.database.clone(),
            self.clock.clone(),
            options,
        )
        .await
    }
}

/// Starts a replica the way `herd serve` does ([`App::builder`]), with the manual `clock`
/// and, for [`TestBus::InProcess`], the test's shared bus.
async fn spawn_on(
    dir: Arc<tempfile::TempDir>,
    database: String,
    clock: Arc<ManualClock>,
    options: Options,
) -> TestApp {
    let mut config = AuthConfig::new(options.issuer.clone(), "herd");
    config.hash = options.hash;
    config.hash_permit_wait = options.hash_permit_wait;
    config.throttle = options.throttle.clone();
    config.key_publish_delay = secs(options.key_publish_delay);
    config.access_ttl = secs(options.access_ttl);
    config.strategy = options.strategy;
    config.redis_url = options.redis_url.clone();
    config.sessions = options.sessions.config();
    let settings = Settings {
        database: database.clone(),
        schema: Schema::Migrate,
        listen: "127.0.0.1:0".parse().expect("address"),
        replica_id: Some(options.replica_id.clone()),
        auth: config,
        body_limit: options.body_limit,
        upkeep_interval: Duration::from_secs(3600),
        cookies: herd_server::cookies::CookiePolicy {
            insecure: options.insecure_cookies,
            allowed_origins: options.allowed_origins.clone(),
        },
        chat: options.chat.clone(),
        trusted_proxies: options.trusted_proxies.clone(),
        bus: match &options.bus {
            TestBus::None | TestBus::InProcess(_) => BusSettings::InProcess,
            TestBus::Sql => BusSettings::Sql {
                poll_interval: Duration::from_millis(10),
            },
            TestBus::Redis(url) => BusSettings::Redis { url: url.clone() },
        },
        connections: options.connections,
        issuer_follows_listen: options.issuer_follows_listen,
        drain_delay: Duration::ZERO,
        confirm_deadline: options.confirm_deadline,
    };
    let mut builder = App::builder(settings).clock(clock.clone());
    if let TestBus::InProcess(bus) = &options.bus {
        builder = builder.bus(bus.clone());
    }
    let app = builder.build().await.expect("app");
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let auth = state.auth.clone();
    let (tx, rx) = oneshot::channel::<()>();
    // The first call is the stop; a second (a hurried drain) never comes: no drain delay.
    let mut stop = Some(rx);
    let signal = move || {
        let stop = stop.take();
        async move {
            match stop {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        }
    };
    let server = tokio::spawn(app.run_until_stopped(signal));
    TestApp {
        base,
        client: reqwest::Client::new(),
        clock,
        auth,
        database,
        options,
        state,
        dir,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// The pair a login or refresh returns.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    fn from(body: &Value) -> Tokens {
        Tokens {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn signup(&self, username: &str, password: &str) -> Response {
        self.post_json(
            "/v1/auth/signup",
            json!({ "username": username, "password": password }),
        )
        .await
    }

    pub async fn try_login(&self, username: &str, password: &str) -> Response {
        self.post_json(
            "/v1/auth/login",
            json!({ "username": username, "password": password }),
        )
        .await
    }

    pub async fn login(&self, username: &str) -> Tokens {
        let response = self.try_login(username, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        Tokens::from(&response.json::<Value>().await.expect("json"))
    }

    /// Signs up `username` with [`PASSWORD`] and logs in.
    pub async fn user(&self, username: &str) -> Tokens {
        assert_eq!(
            self.signup(username, PASSWORD).await.status(),
            StatusCode::CREATED
        );
        self.login(username).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    pub fn tokens_of(body: &Value) -> Tokens {
        Tokens::from(body)
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.client
            .get(self.url("/v1/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request")
    }

    pub async fn logout(&self, access_token: &str) -> Response {
        self.client
            .post(self.url("/v1/auth/logout"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.expect("text")
    }

    /// Triggers graceful shutdown and waits for the server to finish.
    pub async fn stop(&mut self) -> Result<(), StartError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.expect("server task"),
            None => Ok(()),
        }
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts a problem+json response with the given status and code, and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], format!("urn:herd:problem:{code}"), "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The value of one metric line with exactly these labels, or 0.
pub fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

impl TestApp {
    pub async fn post_authed(&self, token: &str, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_authed(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Creates a room as the holder of `token`; returns its id.
    pub async fn room(&self, token: &str, name: &str) -> String {
        let response = self
            .post_authed(token, "/v1/rooms", json!({ "name": name }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let room: Value = response.json().await.expect("json");
        room["id"].as_str().expect("id").to_owned()
    }

    pub async fn join(&self, token: &str, room: &str) -> Response {
        self.post_authed(token, &format!("/v1/rooms/{room}/join"), json!({}))
            .await
    }

    pub async fn post_message(
        &self,
        token: &str,
        room: &str,
        body: &str,
        client_id: &str,
    ) -> Response {
        let path = format!("/v1/rooms/{room}/messages");
        self.post_authed(
            token,
            &path,
            json!({ "body": body, "client_id": client_id }),
        )
        .await
    }

    /// The seqs of a room's history after `after`, every page.
    pub async fn history_seqs(&self, token: &str, room: &str, after: i64) -> Vec<i64> {
        let mut seqs = Vec::new();
        let mut after = after;
        loop {
            let path = format!("/v1/rooms/{room}/messages?after={after}&limit=500");
            let page: Value = self
                .get_authed(token, &path)
                .await
                .json()
                .await
                .expect("json");
            let messages = page["messages"].as_array().expect("messages").clone();
            if messages.is_empty() {
                return seqs;
            }
            seqs.extend(messages.iter().map(|m| m["seq"].as_i64().expect("seq")));
            after = page["next_after"].as_i64().expect("cursor");
        }
    }
}
