//! Live chat over WebSocket (`/v1/ws`), the protocol in `docs/protocol.md`.
//!
//! A connection is stateful by nature, but nothing in it is needed after it ends: every
//! message is in the store with its room sequence number, so a client that reconnects to
//! any replica and subscribes `since` the last seq it saw misses nothing and gets nothing
//! twice. Each subscription subscribes to the bus first, then reads the store from
//! `since`, then goes live, dropping what it has already sent by seq and filling any hole
//! in the sequence (or a bus `Gap`) from the store.
//!
//! One connection is a reader (this module's loop: frames in, sends, subscriptions,
//! identity) and a writer task, with a bounded queue between them; a subscription that
//! finds the queue full closes the socket with [`close::SLOW_CONSUMER`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as Frame, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt as _, StreamExt as _};
use herd_bus::Delivery;
use herd_identity::{AuthnError, Principal};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::error::{ApiError, Code, Problem};
use crate::extract::Identity;
use crate::rooms::{self, Message};
use crate::AppState;

/// The close codes herd uses, and what a client should do on each.
pub mod close {
    /// The server is restarting or shutting down: reconnect (to any replica) and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// A frame was larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The store failed under a subscription: reconnect later and resume.
    pub const INTERNAL: u16 = 1011;
    /// No valid credential arrived in time: authenticate, then reconnect.
    pub const UNAUTHENTICATED: u16 = 4001;
    /// The access token expired and no fresh one came in answer to `reauth`.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// The session was logged out or revoked: log in again.
    pub const REVOKED: u16 = 4003;
    /// The client read too slowly and its queue filled: reconnect and resume from the
    /// last seq received, nothing is lost.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// The limits of live chat on one replica.
#[derive(Debug, Clone)]
pub struct ChatLimits {
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    pub max_connections: usize,
    pub sends_per_second: u32,
    pub outbound_queue: usize,
    /// How long before the access token expires the server asks for a fresh one.
    pub reauth_before: Duration,
    /// How long a connection without credentials may wait for its `auth` frame.
    pub auth_timeout: Duration,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            max_frame_bytes: 16 * 1024,
            max_subscriptions: 32,
            max_connections: 20_000,
            sends_per_second: 20,
            outbound_queue: 256,
            reauth_before: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/ws", get(upgrade))
}

/// Frames a client sends. `docs/protocol.schema.json` is generated from this type and
/// [`ServerFrame`] (a test keeps it equal). Serialize too, for clients written in Rust
/// (chatbench) to write frames with the server's own type.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// The first frame of a connection that sent no credentials with the upgrade.
    Auth {
        /// An access token.
        token: String,
    },
    /// A fresh access token for the same user, in answer to the server's `reauth`.
    Reauth { token: String },
    /// Deliver every message of `room` with `seq > since`, in order, exactly once, then
    /// live ones.
    Subscribe {
        room: String,
        /// The last seq received; 0 for the whole history.
        #[schema(minimum = 0)]
        since: i64,
    },
    /// Stop following a room.
    Unsubscribe { room: String },
    /// Post a message.
    Send {
        room: String,
        /// 1 to 4000 characters.
        #[schema(min_length = 1, max_length = 4000)]
        body: String,
        /// 1 to 64 printable ASCII characters; the same one again is not posted twice.
        #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
        client_id: String,
    },
}

/// Decodes one text frame from a client. Pure, so that it can be fuzzed without a
/// connection; what a frame may do is checked when it is handled.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, serde_json::Error> {
    // serde's internally tagged enums also take a sequence whose first element is the
    // tag, so `["send", room, body, client_id]` would be a send. A frame is one JSON
    // object (docs/protocol.md); a second spelling is one a proxy inspecting frames
    // would not know, so it is refused. The fuzzer found this.
    let first = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .chars()
        .next();
    if first.is_some_and(|c| c != '{') {
        return Err(serde::de::Error::custom(
            "a frame is a JSON object with a type",
        ));
    }
    serde_json::from_str(text)
}

/// Frames the server sends. Deserialize too, for clients written in Rust (chatbench) to
/// read frames with the server's own type.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection is authenticated.
    Ready {
        user_id: String,
        session_id: String,
        replica: String,
    },
    /// One message of a subscribed room.
    Message(Message),
    /// The history up to `last_seq` has been delivered; what follows is live.
    Subscribed { room: String, last_seq: i64 },
    /// The room is no longer followed.
    Unsubscribed { room: String },
    /// A sent message is durable in the store.
    Ack {
        client_id: String,
        room: String,
        seq: i64,
        id: String,
        /// True when this `client_id` had been sent before (the original is kept).
        duplicate: bool,
    },
    /// A frame was refused; the connection stays open.
    Error {
        /// `bad-frame`, `validation-failed`, `not-found`, `not-a-member`,
        /// `already-subscribed`, `too-many-subscriptions`, `rate-limited`,
        /// `reauth-failed` or `unavailable`.
        code: String,
        message: String,
        /// The `client_id` of the refused `send`.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// The access token expires at `expires_at` (unix seconds): send a `reauth` before.
    Reauth { expires_at: i64 },
    /// The fresh token was accepted; it expires at `expires_at` (null: never).
    Reauthed { expires_at: Option<i64> },
}

impl ServerFrame {
    fn text(&self) -> Utf8Bytes {
        serde_json::to_string(self).unwrap_or_default().into()
    }
}

/// Upgrades to live chat over WebSocket: the frames are in `docs/protocol.md` and
/// `docs/protocol.schema.json`. Credentials are optional here: a browser, which cannot
/// set headers on a WebSocket, sends an `auth` frame first instead.
#[utoipa::path(get, path = "/v1/ws", tag = "chat",
    responses(
        (status = 101, description = "Switched to the WebSocket protocol."),
        (status = 400, description = "`not-a-websocket`: this path takes only a WebSocket \
            upgrade.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`csrf-failed`: the `Origin` is neither this host nor \
            an allowed origin.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: this replica has as many connections as \
            it takes; try another.", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = []), ("cookie" = [])),
)]
async fn upgrade(
    State(state): State<AppState>,
    mut parts: Parts,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // axum's own rejection is plain text; every error herd sends is problem+json.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(Code::NotAWebSocket, rejection.body_text()).into_response()
        }
    };
    if let Err(e) = state.cookies().check_origin(&parts.headers) {
        return e.into_response();
    }
    // Credentials in the upgrade request are optional: browsers cannot set headers on a
    // WebSocket, so they may authenticate with a first `auth` frame instead.
    let has_credentials = parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
        || crate::cookies::cookie(&parts.headers, crate::cookies::ACCESS).is_some();
    let principal = if has_credentials {
        match Identity::from_request_parts(&mut parts, &state).await {
            Ok(Identity(p)) => Some(p),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let Ok(permit) = state.chat.connections.clone().try_acquire_owned() else {
        return ApiError::new(
            Code::Unavailable,
            "this replica has as many connections as it takes; try another",
        )
        .into_response();
    };
    let limits = &state.chat.limits;
    ws.max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| connection(state, socket, principal, permit))
}

/// What the reader sends the writer.
enum Out {
    Frame(Utf8Bytes),
    Close(u16, &'static str),
}

/// The shared state of one connection's subscriptions.
#[derive(Clone)]
struct Conn {
    state: AppState,
    out: mpsc::Sender<Out>,
    /// Set by a subscription that cannot go on: the reader then closes with this code.
    abort: watch::Sender<Option<(u16, &'static str)>>,
}

impl Conn {
    /// Queues a frame whose fate the caller need not know: a full queue already ends
    /// the connection.
    fn say(&self, frame: ServerFrame) {
        let _ = self.push(frame);
    }

    /// Queues a history frame, waiting for room: history is in the store, so a client
    /// reading it slowly only slows its own catch-up. False once the connection is gone.
    async fn push_history(&self, frame: ServerFrame) -> bool {
        self.out.send(Out::Frame(frame.text())).await.is_ok()
    }

    /// Queues a live frame for the writer; a full queue means the client is too slow.
    fn push(&self, frame: ServerFrame) -> bool {
        match self.out.try_send(Out::Frame(frame.text())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.abort.send_replace(Some((
                    close::SLOW_CONSUMER,
                    "too slow: resume from your last seq",
                )));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

async fn connection(
    state: AppState,
    socket: WebSocket,
    principal: Option<Principal>,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let (mut sink, mut stream) = socket.split();
    let (out, mut rx) = mpsc::channel::<Out>(state.chat.limits.outbound_queue);
    let writer = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            match item {
                Out::Frame(text) => {
                    if sink.send(Frame::Text(text)).await.is_err() {
                        break;
                    }
                }
                Out::Close(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = sink.send(Frame::Close(Some(frame))).await;
                    break;
                }
            }
        }
    });
    let (abort, mut aborted) = watch::channel(None);
    let conn = Conn {
        state: state.clone(),
        out: out.clone(),
        abort,
    };
    let mut shutdown = state.chat.shutdown.subscribe();
    let mut revocations = state.auth.revocations();

    let code = 'session: {
        // Authenticate: from the upgrade request, or a first `auth` frame.
        let mut principal = match principal {
            Some(p) => p,
            None => {
                let first =
                    tokio::time::timeout(state.chat.limits.auth_timeout, stream.next()).await;
                let Ok(Some(Ok(Frame::Text(text)))) = first else {
                    break 'session (close::UNAUTHENTICATED, "send an auth frame first");
                };
                let Ok(ClientFrame::Auth { token }) = decode_client_frame(&text) else {
                    break 'session (close::UNAUTHENTICATED, "the first frame must be auth");
                };
                match authenticate(&state, &token).await {
                    Ok(p) => p,
                    Err(_) => break 'session (close::UNAUTHENTICATED, "invalid credentials"),
                }
            }
        };
        conn.say(ServerFrame::Ready {
            user_id: principal.user_id().to_owned(),
            session_id: principal.session_id().to_owned(),
            replica: state.replica.to_string(),
        });

        let mut subscriptions: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut reauth = Reauth::new(&state, &principal);

        let code = loop {
            tokio::select! {
                frame = stream.next() => {
                    let text = match frame {
                        Some(Ok(Frame::Text(text))) => text,
                        Some(Ok(Frame::Binary(_))) => {
                            conn.say(error("bad-frame", "frames are JSON text", None));
                            continue;
                        }
                        Some(Ok(Frame::Close(_))) | None => break None,
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            let too_big = e.to_string().contains("too long") || e.to_string().contains("too big");
                            break too_big.then_some((close::TOO_BIG, "frame over the size limit"));
                        }
                    };
                    match decode_client_frame(&text) {
                        Ok(frame) => {
                            if let Some(code) = handle(&conn, &mut principal, &mut subscriptions, &mut reauth, frame).await {
                                break Some(code);
                            }
                        }
                        Err(e) => {
                            conn.say(error("bad-frame", &format!("not a frame of this protocol: {e}"), None));
                        }
                    }
                }
                _ = shutdown.changed() => break Some((close::SERVICE_RESTART, "server restarting: reconnect and resume")),
                revoked = revocations.recv() => match revoked {
                    Ok(sid) if sid == principal.session_id() => break Some((close::REVOKED, "session logged out or revoked")),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if state.auth.is_revoked(principal.session_id()) {
                            break Some((close::REVOKED, "session logged out or revoked"));
                        }
                    }
                    Err(_) => {}
                },
                _ = aborted.changed() => break *aborted.borrow(),
                _ = reauth.next() => {
                    match reauth.fire() {
                        Step::Ask(expires_at) => {
                            conn.say(ServerFrame::Reauth { expires_at });
                        }
                        Step::Expired => break Some((close::TOKEN_EXPIRED, "the access token expired without a reauth")),
                    }
                }
            }
        };
        for (_, task) in subscriptions.drain() {
            task.abort();
        }
        match code {
            Some(code) => code,
            None => {
                drop(out);
                drop(conn);
                let _ = writer.await;
                return;
            }
        }
    };
    let _ = out.send(Out::Close(code.0, code.1)).await;
    drop(out);
    drop(conn);
    let _ = writer.await;
}

async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ()> {
    match state.auth.authenticate(token).await {
        Ok(p) => Ok(p),
        Err(AuthnError::Rejected(r)) => {
            state.reject(r);
            Err(())
        }
        Err(AuthnError::Unavailable(_)) => Err(()),
    }
}

fn error(code: &str, message: &str, client_id: Option<&str>) -> ServerFrame {
    ServerFrame::Error {
        code: code.to_owned(),
        message: message.to_owned(),
        client_id: client_id.map(str::to_owned),
    }
}

/// Handles one client frame; returns a close code when the connection must end.
async fn handle(
    conn: &Conn,
    principal: &mut Principal,
    subscriptions: &mut HashMap<String, JoinHandle<()>>,
    reauth: &mut Reauth,
    frame: ClientFrame,
) -> Option<(u16, &'static str)> {
    let state = &conn.state;
    match frame {
        ClientFrame::Auth { .. } => {
            conn.say(error(
                "bad-frame",
                "already authenticated; use reauth",
                None,
            ));
        }
        ClientFrame::Reauth { token } => match authenticate(state, &token).await {
            Ok(fresh) if fresh.user_id() == principal.user_id() => {
                *principal = fresh;
                *reauth = Reauth::new(state, principal);
                conn.say(ServerFrame::Reauthed {
                    expires_at: principal.expires_at(),
                });
            }
            Ok(_) => conn.say(error("reauth-failed", "the token is another user's", None)),
            Err(()) => conn.say(error("reauth-failed", "the token is not valid", None)),
        },
        ClientFrame::Subscribe { room, since } => {
            if since < 0 {
                conn.say(error("bad-frame", "since must be 0 or more", None));
            } else if subscriptions.contains_key(&room) {
                conn.say(error(
                    "already-subscribed",
                    "unsubscribe first to change since",
                    None,
                ));
            } else if subscriptions.len() >= state.chat.limits.max_subscriptions {
                conn.say(error(
                    "too-many-subscriptions",
                    "unsubscribe from a room first",
                    None,
                ));
            } else {
                match rooms::require_member(state, &room, principal.user_id()).await {
                    Ok(()) => {
                        let task = tokio::spawn(follow(conn.clone(), room.clone(), since));
                        subscriptions.insert(room, task);
                    }
                    Err(e) => conn.say(error(
                        e.code().describe().0,
                        "cannot subscribe to that room",
                        None,
                    )),
                }
            }
        }
        ClientFrame::Unsubscribe { room } => {
            if let Some(task) = subscriptions.remove(&room) {
                task.abort();
            }
            conn.say(ServerFrame::Unsubscribed { room });
        }
        ClientFrame::Send {
            room,
            body,
            client_id,
        } => {
            let cid = client_id.clone();
            let checked = rooms::message_body(&body)
                .and_then(|b| rooms::client_id(&client_id).map(|c| (b, c)));
            let (body, client_id) = match checked {
                Ok(v) => v,
                Err(e) => {
                    conn.say(error("validation-failed", e.0, Some(&cid)));
                    return None;
                }
            };
            if !state.chat.user_may_send(principal.user_id()) {
                conn.say(error(
                    "rate-limited",
                    "too many sends per second; retry with the same client_id",
                    Some(&client_id),
                ));
                return None;
            }
            match rooms::send_message(state, &room, principal.user_id(), &body, &client_id).await {
                Ok((m, duplicate)) => {
                    conn.say(ServerFrame::Ack {
                        client_id,
                        room: m.room,
                        seq: m.seq,
                        id: m.id,
                        duplicate,
                    });
                }
                Err(e) => conn.say(error(
                    e.code().describe().0,
                    "not sent; retry with the same client_id",
                    Some(&client_id),
                )),
            }
        }
    }
    None
}

/// One subscription: bus first, then the store from `since`, then live, each message
/// exactly once and in order.
async fn follow(conn: Conn, room: String, since: i64) {
    let mut live = conn.state.bus().subscribe(&rooms::topic(&room)).await;
    let mut last = since;
    if !catch_up(&conn, &room, &mut last).await {
        return;
    }
    conn.push(ServerFrame::Subscribed {
        room: room.clone(),
        last_seq: last,
    });
    while let Some(delivery) = live.recv().await {
        let ok = match delivery {
            Delivery::Message { payload, .. } => {
                match serde_json::from_slice::<Message>(&payload) {
                    Ok(m) if m.seq <= last => true,
                    Ok(m) if m.seq == last + 1 => {
                        last = m.seq;
                        conn.push(ServerFrame::Message(m))
                    }
                    // A hole: an announcement was lost or overtaken; the store has it all.
                    Ok(_) => catch_up(&conn, &room, &mut last).await,
                    Err(_) => true,
                }
            }
            Delivery::Gap => catch_up(&conn, &room, &mut last).await,
        };
        if !ok {
            return;
        }
    }
}

/// Sends every stored message after `last`, advancing it. False when the connection
/// must end (it is gone, or the store failed and the socket was told to close).
async fn catch_up(conn: &Conn, room: &str, last: &mut i64) -> bool {
    loop {
        let page = match conn
            .state
            .auth
            .store()
            .messages_after(room, *last, rooms::MAX_PAGE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(room, error = %e, "could not read history for a subscription");
                conn.abort
                    .send_replace(Some((close::INTERNAL, "store unavailable: resume later")));
                return false;
            }
        };
        let full = page.len() as i64 == rooms::MAX_PAGE;
        for m in page {
            let m = Message::from(m);
            *last = m.seq;
            if !conn.push_history(ServerFrame::Message(m)).await {
                return false;
            }
        }
        if !full {
            return true;
        }
    }
}

/// When to ask for a fresh token, and when to give up waiting for it.
struct Reauth {
    /// (when, what) of the next step; `None` for credentials that do not expire.
    next: Option<(tokio::time::Instant, Step)>,
    /// How long after asking to wait for the answer: until expiry plus the leeway.
    grace: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Ask(i64),
    Expired,
}

impl Reauth {
    fn new(state: &AppState, principal: &Principal) -> Reauth {
        let grace = Duration::from_secs(state.auth.config().leeway.max(0).unsigned_abs());
        let Some(expires_at) = principal.expires_at() else {
            return Reauth { next: None, grace };
        };
        let left = Duration::from_secs((expires_at - state.auth.now()).max(0).unsigned_abs());
        let ask_in = left.saturating_sub(state.chat.limits.reauth_before);
        Reauth {
            next: Some((tokio::time::Instant::now() + ask_in, Step::Ask(expires_at))),
            grace: left - ask_in + grace,
        }
    }

    /// Resolves at the next step (never, for credentials that do not expire).
    async fn next(&self) {
        match self.next {
            Some((at, _)) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    fn fire(&mut self) -> Step {
        let step = self.next.map_or(Step::Expired, |(_, s)| s);
        if let Step::Ask(_) = step {
            self.next = Some((tokio::time::Instant::now() + self.grace, Step::Expired));
        } else {
            self.next = None;
        }
        step
    }
}

/// Live chat's state on one replica.
#[derive(Debug)]
pub struct ChatState {
    pub limits: ChatLimits,
    connections: Arc<tokio::sync::Semaphore>,
    shutdown: watch::Sender<bool>,
    senders: Mutex<HashMap<String, (Instant, u32)>>,
}

impl ChatState {
    pub fn new(limits: ChatLimits) -> ChatState {
        ChatState {
            connections: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            shutdown: watch::channel(false).0,
            senders: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// Per user across this replica's connections: at most `sends_per_second` a second.
    fn user_may_send(&self, user_id: &str) -> bool {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if senders.len() > 100_000 {
            senders.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(1));
        }
        let entry = senders.entry(user_id.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.limits.sends_per_second
    }

    /// Tells every connection to close with 1012 once its in-flight send is answered,
    /// and waits (at most `patience`) for them to finish.
    pub async fn close_all(&self, patience: Duration) {
        self.shutdown.send_replace(true);
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(patience, self.connections.acquire_many(all)).await;
    }

    pub fn open_connections(&self) -> usize {
        self.limits.max_connections - self.connections.available_permits()
    }
}

/// The JSON Schema (draft 2020-12) of every frame, generated from [`ClientFrame`] and
/// [`ServerFrame`]; `docs/protocol.schema.json` is this, and a test keeps it so.
pub fn protocol_schema() -> serde_json::Value {
    use utoipa::PartialSchema as _;
    let mut defs = serde_json::Map::new();
    let mut nested = Vec::new();
    <ServerFrame as ToSchema>::schemas(&mut nested);
    <ClientFrame as ToSchema>::schemas(&mut nested);
    for (name, schema) in nested {
        defs.insert(name, serde_json::to_value(schema).unwrap_or_default());
    }
    defs.insert(
        "ClientFrame".into(),
        serde_json::to_value(ClientFrame::schema()).unwrap_or_default(),
    );
    defs.insert(
        "ServerFrame".into(),
        serde_json::to_value(ServerFrame::schema()).unwrap_or_default(),
    );
    let document = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:herd:protocol",
        "title": "herd's live chat protocol over WebSocket (docs/protocol.md)",
        "description": "Every frame is one JSON object in a text frame. A frame is a \
            ClientFrame (client to server) or a ServerFrame (server to client).",
        "oneOf": [
            { "$ref": "#/$defs/ClientFrame" },
            { "$ref": "#/$defs/ServerFrame" },
        ],
        "$defs": defs,
    });
    // utoipa writes references for an OpenAPI document; this one is plain JSON Schema.
    let text = document
        .to_string()
        .replace("#/components/schemas/", "#/$defs/");
    serde_json::from_str(&text).unwrap_or(document)
}
