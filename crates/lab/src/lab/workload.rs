//! The virtual users: each a tokio task with its own seeded random numbers, its own
//! session and its own `herd_affinity` cookie, speaking the public API through the
//! balancer like any client would.
//!
//! A user logs in, joins its room, then loops over a mix of `GET /v1/me` (50%), a
//! history read (30%) and a message send (20%), thinking between requests. A 401 means
//! the session is gone: the user logs in again, a forced re-login. Under `token` an
//! access token about to expire is refreshed first, which is not a re-login.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::metrics::{Outcome, Recorder};
use crate::balancer::AFFINITY_COOKIE;
use crate::LabError;

/// Every virtual user's password (the accounts live in a throw-away store).
pub(crate) const PASSWORD: &str = "lab password 1234";

/// A request that takes longer than this counts as failed.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn username(user: usize) -> String {
    format!("lab{user:05}")
}

/// A small, seeded generator (xorshift64*): the same seed gives every scenario the same
/// think times and the same mix, which is all the lab asks of randomness.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Rng {
        // splitmix64 of seed and stream, so that neighbouring users' streams differ and
        // the state is never zero.
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), near enough for think times and a mix.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration uniform in `[d/2, 3d/2)`: think time around a mean of `d`.
    pub fn around(&mut self, d: Duration) -> Duration {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(ms / 2 + self.below(ms))
    }
}

/// An answer as the workload needs it.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    replica: Option<String>,
    body: Value,
}

/// What the users of one scenario share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub client: reqwest::Client,
    pub base: String,
    pub recorder: Arc<Recorder>,
    pub rooms: Vec<String>,
    pub think: Duration,
    pub seed: u64,
}

pub(crate) fn client() -> Result<reqwest::Client, LabError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| LabError::Setup(format!("building the HTTP client: {e}")))
}

/// Sends `request` with the user's affinity cookie and keeps the one the balancer sets.
async fn send(
    request: RequestBuilder,
    affinity: &mut Option<String>,
) -> Result<Answer, reqwest::Error> {
    let request = match affinity.as_deref() {
        Some(replica) => request.header("cookie", format!("{AFFINITY_COOKIE}={replica}")),
        None => request,
    };
    let response = request.send().await?;
    for cookie in response.headers().get_all("set-cookie") {
        let pinned = cookie
            .to_str()
            .ok()
            .and_then(|c| c.split(';').next())
            .and_then(|pair| pair.trim().strip_prefix(AFFINITY_COOKIE))
            .and_then(|rest| rest.strip_prefix('='));
        if let Some(replica) = pinned {
            *affinity = Some(replica.to_owned());
        }
    }
    let status = response.status();
    let replica = response
        .headers()
        .get("x-herd-replica")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        replica,
        body,
    })
}

/// The status of an answer, or why there was none (for the chaos checks' notes).
fn status(answer: &Result<Answer, reqwest::Error>) -> Result<u16, String> {
    match answer {
        Ok(a) => Ok(a.status.as_u16()),
        Err(e) => {
            // reqwest's own message is "error sending request"; the cause says more.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            Err(why)
        }
    }
}

fn classify(answer: &Result<Answer, reqwest::Error>) -> Outcome {
    match answer {
        Ok(a) if a.status.is_success() => Outcome::Ok,
        Ok(a) if a.status == StatusCode::UNAUTHORIZED => Outcome::LoggedOut,
        Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS => Outcome::Throttled,
        Ok(a) if a.status.is_server_error() => Outcome::Failed,
        Ok(_) => Outcome::Unexpected,
        Err(_) => Outcome::Failed,
    }
}

/// Signs up `users` accounts and creates `rooms` rooms (as a host account) before the
/// clock starts; none of it is measured. Under `memory` with round-robin a session
/// rarely survives two requests, so every step retries (logging in again) until it
/// succeeds or `deadline` passes.
pub(crate) async fn setup(
    client: &reqwest::Client,
    base: &str,
    users: usize,
    rooms: usize,
    deadline: tokio::time::Instant,
) -> Result<Vec<String>, LabError> {
    let gave_up = |what: &str, last: &str| {
        LabError::Setup(format!(
            "{what}: no success before the setup deadline (last answer: {last})"
        ))
    };
    let signup = |name: String| {
        let client = client.clone();
        let url = format!("{base}/v1/auth/signup");
        async move {
            let mut last = String::new();
            while tokio::time::Instant::now() < deadline {
                let answer = send(
                    client
                        .post(&url)
                        .json(&json!({ "username": name, "password": PASSWORD })),
                    &mut None,
                )
                .await;
                match answer {
                    // 409: an earlier attempt did create it and its answer was lost.
                    Ok(a) if a.status.is_success() || a.status == StatusCode::CONFLICT => {
                        return Ok(())
                    }
                    Ok(a) => last = format!("{} {}", a.status, a.body),
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(gave_up(&format!("signing up {name}"), &last))
        }
    };
    // A few at a time: each is a password hash, and the replicas bound those anyway.
    let mut names: Vec<String> = (0..users).map(username).collect();
    names.push("labhost".to_owned());
    for chunk in names.chunks(8) {
        let results = join_all(chunk.iter().cloned().map(signup).collect::<Vec<_>>()).await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
    }

    let mut created = Vec::with_capacity(rooms);
    let mut token: Option<String> = None;
    let mut affinity = None;
    let mut last = String::new();
    while created.len() < rooms {
        if tokio::time::Instant::now() >= deadline {
            return Err(gave_up("creating the rooms", &last));
        }
        let Some(bearer) = token.clone() else {
            let answer = send(
                client
                    .post(format!("{base}/v1/auth/login"))
                    .json(&json!({ "username": "labhost", "password": PASSWORD })),
                &mut affinity,
            )
            .await;
            match answer {
                Ok(a) if a.status.is_success() => {
                    token = a.body["access_token"].as_str().map(str::to_owned);
                }
                Ok(a) => last = format!("{} {}", a.status, a.body),
                Err(e) => last = e.to_string(),
            }
            continue;
        };
        let answer = send(
            client
                .post(format!("{base}/v1/rooms"))
                .bearer_auth(&bearer)
                .json(&json!({ "name": format!("lab room {}", created.len() + 1) })),
            &mut affinity,
        )
        .await;
        match answer {
            Ok(a) if a.status.is_success() => {
                if let Some(id) = a.body["id"].as_str() {
                    created.push(id.to_owned());
                }
            }
            Ok(a) => {
                if a.status == StatusCode::UNAUTHORIZED {
                    token = None;
                }
                last = format!("{} {}", a.status, a.body);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Ok(created)
}

/// Runs the futures concurrently and returns their outputs in order (a tiny
/// `join_all`, to spare a dependency for one call).
async fn join_all<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(value) => out.push(value),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// A login session as the user holds it.
#[derive(Debug)]
struct Session {
    access: String,
    refresh: Option<String>,
    /// When to refresh (a little before the access token expires), scenario time.
    refresh_at: Option<Duration>,
    /// When the login that started this session was answered, scenario time.
    from: Duration,
}

impl Session {
    /// Whether the access token is close enough to its expiry to refresh it first.
    fn refresh_due(&self, now: Duration) -> bool {
        self.refresh.is_some() && self.refresh_at.is_some_and(|at| now >= at)
    }
}

fn session_from(body: &Value, now: Duration, from: Duration) -> Option<Session> {
    let access = body["access_token"].as_str()?.to_owned();
    let refresh = body["refresh_token"].as_str().map(str::to_owned);
    let refresh_at = match (&refresh, body["expires_in"].as_u64()) {
        (Some(_), Some(secs)) => Some(now + Duration::from_secs(secs.saturating_sub(10))),
        _ => None,
    };
    Some(Session {
        access,
        refresh,
        refresh_at,
        from,
    })
}

/// Sleeps for `d`, or less if the scenario stops; returns whether it stopped.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// One virtual user: who it is, what it holds (a session, an affinity cookie, the room
/// it joined and the last seq it saw) and its random numbers. [`User::run`] loops until
/// the scenario stops; each turn is a login, a refresh or one request of the mix.
pub(crate) struct User {
    shared: Arc<Shared>,
    index: usize,
    name: String,
    room: String,
    rng: Rng,
    session: Option<Session>,
    affinity: Option<String>,
    joined: bool,
    last_seq: i64,
    sent: u64,
    stop: watch::Receiver<bool>,
    /// Bumped when every user is to log in again of its own accord (not a forced
    /// re-login): the clock fault's workload.
    relogin: watch::Receiver<u64>,
}

/// What a turn asks of the loop.
enum Next {
    /// Think (or back off) this long, then take the next turn.
    Pause(Duration),
    /// Take the next turn at once.
    Go,
}

impl User {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: usize,
        stop: watch::Receiver<bool>,
        relogin: watch::Receiver<u64>,
    ) -> User {
        let room = shared.rooms[index % shared.rooms.len()].clone();
        let rng = Rng::new(shared.seed, index as u64);
        User {
            shared,
            index,
            name: username(index),
            room,
            rng,
            session: None,
            affinity: None,
            joined: false,
            last_seq: 0,
            sent: 0,
            stop,
            relogin,
        }
    }

    /// Runs until `stop` turns true. Its request in flight then finishes.
    pub(crate) async fn run(mut self) {
        // Users arrive spread over one think time rather than all in the same millisecond.
        let arrival = self.rng.around(self.shared.think) / 2;
        if pause(arrival, &mut self.stop).await {
            return;
        }
        loop {
            if *self.stop.borrow() {
                return;
            }
            if self.relogin.has_changed().unwrap_or(false) {
                self.relogin.borrow_and_update();
                self.session = None;
            }
            let next = match &self.session {
                None => self.login().await,
                Some(current) if current.refresh_due(self.shared.recorder.now()) => {
                    self.refresh().await
                }
                Some(_) => self.request().await,
            };
            if let Next::Pause(wait) = next {
                if pause(wait, &mut self.stop).await {
                    return;
                }
            }
        }
    }

    /// Logs in; on failure, waits before the next try.
    async fn login(&mut self) -> Next {
        let (shared, recorder) = (&self.shared, &self.shared.recorder);
        let started = recorder.begin();
        let answer = send(
            shared
                .client
                .post(format!("{}/v1/auth/login", shared.base))
                .json(&json!({ "username": self.name, "password": PASSWORD })),
            &mut self.affinity,
        )
        .await;
        recorder.done_side();
        recorder.note(started, "login", classify(&answer), status(&answer));
        let wait = match classify(&answer) {
            Outcome::Ok => {
                let now = recorder.now();
                self.session = answer.ok().and_then(|a| session_from(&a.body, now, now));
                if self.session.is_some() {
                    recorder.logged_in();
                    Duration::ZERO
                } else {
                    // A 200 without a token: counted, and not retried in a hot loop.
                    recorder.side_request_failed(Outcome::Unexpected, started);
                    self.rng.around(shared.think)
                }
            }
            Outcome::Throttled => {
                recorder.side_request_failed(Outcome::Throttled, started);
                // Back off as a person told to wait would: a second or so.
                self.rng.around(Duration::from_secs(1))
            }
            other => {
                recorder.side_request_failed(other, started);
                self.rng.around(shared.think)
            }
        };
        Next::Pause(wait)
    }

    /// Refreshes the session's access token, which is not a re-login; a 401 ends the
    /// session (the next turn logs in again).
    async fn refresh(&mut self) -> Next {
        let Some(current) = &self.session else {
            return Next::Go;
        };
        let Some(refresh) = current.refresh.clone() else {
            return Next::Go;
        };
        let from = current.from;
        let (shared, recorder) = (&self.shared, &self.shared.recorder);
        let started = recorder.begin();
        let answer = send(
            shared
                .client
                .post(format!("{}/v1/auth/refresh", shared.base))
                .json(&json!({ "refresh_token": refresh })),
            &mut self.affinity,
        )
        .await;
        recorder.note(started, "refresh", classify(&answer), status(&answer));
        match classify(&answer) {
            Outcome::Ok => {
                recorder.done_side();
                let now = recorder.now();
                self.session = answer.ok().and_then(|a| session_from(&a.body, now, from));
            }
            Outcome::LoggedOut => {
                recorder.end(self.index, started, Outcome::LoggedOut, Some(from), None);
                self.session = None;
            }
            other => {
                recorder.done_side();
                recorder.side_request_failed(other, started);
            }
        }
        Next::Go
    }

    /// One measured request: the join first, then the mix of `/v1/me`, a history read
    /// and a message send.
    async fn request(&mut self) -> Next {
        let Some(current) = &self.session else {
            return Next::Go;
        };
        let bearer = current.access.clone();
        let from = current.from;
        let (shared, recorder) = (&self.shared, &self.shared.recorder);
        let (base, room, client) = (&shared.base, &self.room, &shared.client);
        let mut client_id = None;
        let (what, request) = if !self.joined {
            ("join", client.post(format!("{base}/v1/rooms/{room}/join")))
        } else {
            match self.rng.below(10) {
                0..=4 => ("me", client.get(format!("{base}/v1/me"))),
                5..=7 => (
                    "history",
                    client.get(format!(
                        "{base}/v1/rooms/{room}/messages?after={}&limit=20",
                        (self.last_seq - 20).max(0)
                    )),
                ),
                _ => {
                    self.sent += 1;
                    let (name, sent) = (&self.name, self.sent);
                    let id = format!("{name}-{sent}");
                    let request = client
                        .post(format!("{base}/v1/rooms/{room}/messages"))
                        .json(&json!({
                            "body": format!("message {sent} from {name}"),
                            "client_id": id,
                        }));
                    client_id = Some(id);
                    ("send", request)
                }
            }
        };
        let started = recorder.begin();
        let answer = send(request.bearer_auth(bearer), &mut self.affinity).await;
        let outcome = classify(&answer);
        recorder.note(started, what, outcome, status(&answer));
        if let (Outcome::Ok, Some(client_id), Ok(a)) = (outcome, client_id, &answer) {
            if let Some(seq) = a.body["seq"].as_i64() {
                recorder.acked(super::metrics::Ack {
                    at: started,
                    room: room.clone(),
                    client_id,
                    seq,
                });
            }
        }
        let replica = answer.as_ref().ok().and_then(|a| a.replica.clone());
        recorder.end(self.index, started, outcome, Some(from), replica.as_deref());
        match (outcome, answer) {
            (Outcome::Ok, Ok(a)) => {
                self.joined = true;
                if let Some(seq) = a.body["seq"].as_i64() {
                    self.last_seq = self.last_seq.max(seq);
                }
                if let Some(seq) = a.body["next_after"].as_i64() {
                    self.last_seq = self.last_seq.max(seq);
                }
            }
            (Outcome::LoggedOut, _) => {
                // The forced re-login happens at once: the person was in the middle of
                // something.
                self.session = None;
                return Next::Go;
            }
            _ => {}
        }
        Next::Pause(self.rng.around(shared.think))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers_and_users_differ() {
        let mut one = Rng::new(7, 1);
        let mut other = Rng::new(7, 2);
        let first: Vec<u64> = (0..5).map(|_| one.next()).collect();
        let second: Vec<u64> = (0..5).map(|_| other.next()).collect();
        assert_ne!(first, second);
        let mut again = Rng::new(7, 1);
        assert_eq!((0..5).map(|_| again.next()).collect::<Vec<_>>(), first);
    }

    #[test]
    fn think_time_stays_around_its_mean() {
        let mut rng = Rng::new(1, 0);
        let mean = Duration::from_millis(200);
        for _ in 0..1000 {
            let d = rng.around(mean);
            assert!(d >= mean / 2 && d < mean * 3 / 2, "{d:?}");
        }
    }
}
