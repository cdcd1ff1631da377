//! Live chat over WebSocket (`/v1/ws`), the protocol in `docs/protocol.md`: a transport
//! over [`herd_chat::Chat`], which holds the rules.
//!
//! A connection is stateful by nature, but nothing in it is needed after it ends: every
//! message is in the store with its room sequence number, so a client that reconnects to
//! any replica and subscribes `since` the last seq it saw misses nothing and gets nothing
//! twice. Each subscription is a task draining a [`herd_chat::Follow`] (bus first, then
//! the store from `since`, then live, each message once) into the connection's queue.
//!
//! One connection is a reader, the `Handler` (its state in one value: the principal, the
//! subscriptions, when to ask for a fresh token; `run` is the loop, one method per kind
//! of frame), and a writer task, with a bounded queue between them; a subscription whose
//! live message finds the queue full closes the socket with [`close::SLOW_CONSUMER`].
//! Refused frames get an `error` frame whose code comes from `error.rs`'s table.

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
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use herd_chat::{ClientId, Event, Follow, MessageBody, Posted, RoomId, Seq, UserId};
use herd_identity::{AuthnError, Principal};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit};
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

// Serialize too, so that clients written in Rust (chatbench) write frames with the
// server's own type. (A plain comment: doc comments go into the generated schema.)
/// Frames a client sends. `docs/protocol.schema.json` is generated from this type and
/// [`ServerFrame`] (a test keeps it equal).
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

// Deserialize too, so that clients written in Rust (chatbench) read frames with the
// server's own type. (A plain comment: doc comments go into the generated schema.)
/// Frames the server sends.
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
    let Ok(permit) = state.live.connections.clone().try_acquire_owned() else {
        return ApiError::new(
            Code::Unavailable,
            "this replica has as many connections as it takes; try another",
        )
        .into_response();
    };
    let limits = &state.live.limits;
    ws.max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| connection(state, socket, principal, permit))
}

/// A close code and its reason, as the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Close(u16, &'static str);

impl Close {
    const RESTART: Close = Close(
        close::SERVICE_RESTART,
        "server restarting: reconnect and resume",
    );
    const TOO_BIG: Close = Close(close::TOO_BIG, "frame over the size limit");
    const REVOKED: Close = Close(close::REVOKED, "session logged out or revoked");
    const EXPIRED: Close = Close(
        close::TOKEN_EXPIRED,
        "the access token expired without a reauth",
    );
    const SLOW: Close = Close(close::SLOW_CONSUMER, "too slow: resume from your last seq");
    const STORE_FAILED: Close = Close(close::INTERNAL, "store unavailable: resume later");
}

/// What the reader sends the writer.
enum Out {
    Frame(Utf8Bytes),
    Close(Close),
}

/// The sending half of a connection, shared by its reader and its subscriptions.
#[derive(Clone)]
struct Outbox {
    out: mpsc::Sender<Out>,
    /// Set by a subscription that cannot go on: the reader then closes with this.
    abort: watch::Sender<Option<Close>>,
}

impl Outbox {
    /// Queues a frame whose fate the caller need not know: a full queue already ends
    /// the connection.
    fn say(&self, frame: ServerFrame) {
        let _ = self.push(frame);
    }

    /// Queues a frame read from the store, waiting for room: the store keeps it, so a
    /// client reading slowly only slows its own catch-up. False once the connection is
    /// gone.
    async fn push_stored(&self, frame: ServerFrame) -> bool {
        self.out.send(Out::Frame(frame.text())).await.is_ok()
    }

    /// Queues a live frame for the writer; a full queue means the client is too slow.
    fn push(&self, frame: ServerFrame) -> bool {
        match self.out.try_send(Out::Frame(frame.text())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.end(Close::SLOW);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the reader to close the connection.
    fn end(&self, close: Close) {
        self.abort.send_replace(Some(close));
    }
}

/// One connection, from the upgrade to the close: the writer task, authentication, then
/// the [`Handler`] until something ends it.
async fn connection(
    state: AppState,
    socket: WebSocket,
    principal: Option<Principal>,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let (sink, mut stream) = socket.split();
    let (out, rx) = mpsc::channel::<Out>(state.live.limits.outbound_queue);
    let writer = tokio::spawn(write(sink, rx));
    let (abort, aborted) = watch::channel(None);
    let outbox = Outbox { out, abort };
    let principal = match principal {
        Some(p) => Ok(p),
        None => first_frame_auth(&state, &mut stream).await,
    };
    let close = match principal {
        Ok(principal) => {
            let mut handler = Handler::new(state, principal, stream, outbox.clone(), aborted);
            handler.run().await
        }
        Err(close) => Some(close),
    };
    if let Some(close) = close {
        let _ = outbox.out.send(Out::Close(close)).await;
    }
    // The writer ends once every sender is gone: the handler's went with it.
    drop(outbox);
    let _ = writer.await;
}

/// Writes the reader's frames to the socket, in order, until a close or an error.
async fn write(mut sink: SplitSink<WebSocket, Frame>, mut rx: mpsc::Receiver<Out>) {
    while let Some(item) = rx.recv().await {
        match item {
            Out::Frame(text) => {
                if sink.send(Frame::Text(text)).await.is_err() {
                    break;
                }
            }
            Out::Close(Close(code, reason)) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(Frame::Close(Some(frame))).await;
                break;
            }
        }
    }
}

/// The principal of a connection whose upgrade carried no credentials: its first frame
/// must be an `auth` with a valid token, within the time allowed.
async fn first_frame_auth(
    state: &AppState,
    stream: &mut SplitStream<WebSocket>,
) -> Result<Principal, Close> {
    let unauthenticated = |why| Close(close::UNAUTHENTICATED, why);
    let first = tokio::time::timeout(state.live.limits.auth_timeout, stream.next()).await;
    let Ok(Some(Ok(Frame::Text(text)))) = first else {
        return Err(unauthenticated("send an auth frame first"));
    };
    let Ok(ClientFrame::Auth { token }) = decode_client_frame(&text) else {
        return Err(unauthenticated("the first frame must be auth"));
    };
    authenticate(state, &token)
        .await
        .map_err(|()| unauthenticated("invalid credentials"))
}

/// Whether a read failed because a frame or message was over the size limit.
fn over_the_limit(error: axum::Error) -> bool {
    matches!(
        error
            .into_inner()
            .downcast::<tungstenite::Error>()
            .as_deref(),
        Ok(tungstenite::Error::Capacity(_))
    )
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

/// An `error` frame with a code from the problem table.
fn error(code: Code, message: &str, client_id: Option<&str>) -> ServerFrame {
    ServerFrame::Error {
        code: code.as_str().to_owned(),
        message: message.to_owned(),
        client_id: client_id.map(str::to_owned),
    }
}

/// An authenticated connection's reader: its state, the loop that waits on everything
/// that can happen to it, and one method per kind of client frame.
struct Handler {
    state: AppState,
    principal: Principal,
    /// The chat user `principal` is; changes with it only in name (a reauth keeps the
    /// user).
    user: UserId,
    stream: SplitStream<WebSocket>,
    outbox: Outbox,
    /// Each followed room's task, which forwards its messages to `outbox`.
    subscriptions: HashMap<RoomId, JoinHandle<()>>,
    reauth: Reauth,
    aborted: watch::Receiver<Option<Close>>,
    shutdown: watch::Receiver<bool>,
    revocations: broadcast::Receiver<String>,
}

impl Handler {
    fn new(
        state: AppState,
        principal: Principal,
        stream: SplitStream<WebSocket>,
        outbox: Outbox,
        aborted: watch::Receiver<Option<Close>>,
    ) -> Handler {
        Handler {
            user: rooms::user(&principal),
            reauth: Reauth::new(&state, &principal),
            shutdown: state.live.shutdown.subscribe(),
            revocations: state.auth.revocations(),
            subscriptions: HashMap::new(),
            state,
            principal,
            stream,
            outbox,
            aborted,
        }
    }

    /// Serves the connection until the client leaves (`None`) or something closes it.
    async fn run(&mut self) -> Option<Close> {
        self.outbox.say(ServerFrame::Ready {
            user_id: self.principal.user_id().to_owned(),
            session_id: self.principal.session_id().to_owned(),
            replica: self.state.replica.to_string(),
        });
        let close = loop {
            let ended = tokio::select! {
                frame = self.stream.next() => match frame {
                    Some(Ok(Frame::Text(text))) => {
                        self.on_text(&text).await;
                        None
                    }
                    Some(Ok(Frame::Binary(_))) => {
                        self.outbox.say(error(Code::BadFrame, "frames are JSON text", None));
                        None
                    }
                    Some(Ok(Frame::Close(_))) | None => break None,
                    // Pings are answered by the socket itself.
                    Some(Ok(_)) => None,
                    Some(Err(e)) => break over_the_limit(e).then_some(Close::TOO_BIG),
                },
                _ = self.shutdown.changed() => Some(Close::RESTART),
                revoked = self.revocations.recv() => self.on_revocation(revoked),
                _ = self.aborted.changed() => *self.aborted.borrow(),
                _ = self.reauth.next() => self.on_reauth_due(),
            };
            if let Some(close) = ended {
                break Some(close);
            }
        };
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
        close
    }

    /// A text frame: one of the protocol's, or a `bad-frame` error. No frame a client
    /// sends ends the connection (a close frame aside).
    async fn on_text(&mut self, text: &str) {
        let frame = match decode_client_frame(text) {
            Ok(frame) => frame,
            Err(e) => {
                let message = format!("not a frame of this protocol: {e}");
                self.outbox.say(error(Code::BadFrame, &message, None));
                return;
            }
        };
        match frame {
            ClientFrame::Auth { .. } => self.outbox.say(error(
                Code::BadFrame,
                "already authenticated; use reauth",
                None,
            )),
            ClientFrame::Reauth { token } => self.on_reauth(&token).await,
            ClientFrame::Subscribe { room, since } => self.on_subscribe(room, since).await,
            ClientFrame::Unsubscribe { room } => self.on_unsubscribe(room),
            ClientFrame::Send {
                room,
                body,
                client_id,
            } => self.on_send(room, &body, &client_id).await,
        }
    }

    async fn on_reauth(&mut self, token: &str) {
        match authenticate(&self.state, token).await {
            Ok(fresh) if fresh.user_id() == self.principal.user_id() => {
                self.reauth = Reauth::new(&self.state, &fresh);
                self.principal = fresh;
                self.outbox.say(ServerFrame::Reauthed {
                    expires_at: self.principal.expires_at(),
                });
            }
            Ok(_) => self.outbox.say(error(
                Code::ReauthFailed,
                "the token is another user's",
                None,
            )),
            Err(()) => self
                .outbox
                .say(error(Code::ReauthFailed, "the token is not valid", None)),
        }
    }

    async fn on_subscribe(&mut self, room: String, since: i64) {
        let Ok(since) = Seq::new(since) else {
            self.outbox
                .say(error(Code::BadFrame, "since must be 0 or more", None));
            return;
        };
        let room = RoomId::new(room);
        if self.subscriptions.contains_key(&room) {
            self.outbox.say(error(
                Code::AlreadySubscribed,
                "unsubscribe first to change since",
                None,
            ));
        } else if self.subscriptions.len() >= self.state.live.limits.max_subscriptions {
            self.outbox.say(error(
                Code::TooManySubscriptions,
                "unsubscribe from a room first",
                None,
            ));
        } else {
            match self.state.chat.follow(&self.user, &room, since).await {
                Ok(follow) => {
                    let task = tokio::spawn(forward(follow, self.outbox.clone()));
                    self.subscriptions.insert(room, task);
                }
                Err(e) => self.outbox.say(error(
                    ApiError::from(e).code(),
                    "cannot subscribe to that room",
                    None,
                )),
            }
        }
    }

    fn on_unsubscribe(&mut self, room: String) {
        if let Some(task) = self.subscriptions.remove(&RoomId::new(room.as_str())) {
            task.abort();
        }
        self.outbox.say(ServerFrame::Unsubscribed { room });
    }

    async fn on_send(&mut self, room: String, body: &str, client_id: &str) {
        let checked = MessageBody::parse(body).and_then(|b| Ok((b, ClientId::parse(client_id)?)));
        let (body, client_id) = match checked {
            Ok(fields) => fields,
            Err(e) => {
                let message = e.to_string();
                self.outbox
                    .say(error(Code::ValidationFailed, &message, Some(client_id)));
                return;
            }
        };
        if !self.state.live.user_may_send(self.principal.user_id()) {
            self.outbox.say(error(
                Code::RateLimited,
                "too many sends per second; retry with the same client_id",
                Some(client_id.as_str()),
            ));
            return;
        }
        let room = RoomId::new(room);
        match self
            .state
            .chat
            .post(&self.user, &room, body, client_id.clone())
            .await
        {
            Ok(Posted { message, duplicate }) => self.outbox.say(ServerFrame::Ack {
                client_id: client_id.into_string(),
                room: message.room.into_string(),
                seq: message.seq.get(),
                id: message.id.into_string(),
                duplicate,
            }),
            Err(e) => self.outbox.say(error(
                ApiError::from(e).code(),
                "not sent; retry with the same client_id",
                Some(client_id.as_str()),
            )),
        }
    }

    /// A session was revoked somewhere; this connection ends if it was its own.
    fn on_revocation(&self, revoked: Result<String, broadcast::error::RecvError>) -> Option<Close> {
        let own = match revoked {
            Ok(sid) => sid == self.principal.session_id(),
            // Some notices were missed: ask the revocation set instead.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.state.auth.is_revoked(self.principal.session_id())
            }
            Err(broadcast::error::RecvError::Closed) => false,
        };
        own.then_some(Close::REVOKED)
    }

    /// The token is about to expire (ask for a fresh one) or has (close).
    fn on_reauth_due(&mut self) -> Option<Close> {
        match self.reauth.fire() {
            Step::Ask(expires_at) => {
                self.outbox.say(ServerFrame::Reauth { expires_at });
                None
            }
            Step::Expired => Some(Close::EXPIRED),
        }
    }
}

/// One subscription's task: the room's messages from [`Follow`] to the connection,
/// history at the client's pace, live ones at once or the connection is too slow.
async fn forward(mut follow: Follow, outbox: Outbox) {
    while let Some(event) = follow.next().await {
        let delivered = match event {
            Ok(Event::Stored(m)) => outbox.push_stored(ServerFrame::Message(m.into())).await,
            Ok(Event::CaughtUp { last_seq }) => outbox.push(ServerFrame::Subscribed {
                room: follow.room().to_string(),
                last_seq: last_seq.get(),
            }),
            Ok(Event::Live(m)) => outbox.push(ServerFrame::Message(m.into())),
            Err(e) => {
                tracing::warn!(room = %follow.room(), error = %e, "could not read history for a subscription");
                outbox.end(Close::STORE_FAILED);
                false
            }
        };
        if !delivered {
            return;
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
        let grace = state.auth.config().leeway;
        let Some(expires_at) = principal.expires_at() else {
            return Reauth { next: None, grace };
        };
        let left = Duration::from_secs((expires_at - state.auth.now()).max(0).unsigned_abs());
        let ask_in = left.saturating_sub(state.live.limits.reauth_before);
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
