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
//! of frame), and a writer task, with a queue between them bounded in frames and in
//! bytes; a subscription whose live message finds the queue full closes the socket with
//! [`close::SLOW_CONSUMER`], and a write the client does not take within
//! [`ChatLimits::write_timeout`] drops the socket, queue and all.
//! Refused frames get an `error` frame whose code comes from `error.rs`'s table.
//!
//! What a connection may hold: until it authenticates, a slot of the small
//! `max_unauthenticated` budget; after, a slot of the replica's `max_connections` and
//! one of its user's `max_connections_per_user`, so one account cannot take every
//! slot and strangers cannot take the authenticated ones.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
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
use herd_chat::{ClientId, Event, Follow, MessageBody, Posted, RoomId, Seq, Submitted, UserId};
use herd_identity::{AuthnError, Principal};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::error::{ApiError, Code, Problem};
use crate::extract::Identity;
use crate::metrics::{DeliveryStage, Metrics};
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
    /// The client sent frames faster than a connection takes (`frames_per_second`).
    pub const POLICY: u16 = 1008;
    /// The replica has as many authenticated connections as it takes: reconnect, to
    /// any replica, later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client read too slowly and its queue filled: reconnect and resume from the
    /// last seq received, nothing is lost.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The user has as many connections open on this replica as one user may: close
    /// one first.
    pub const TOO_MANY_CONNECTIONS: u16 = 4009;
}

/// The limits of live chat on one replica.
#[derive(Debug, Clone)]
pub struct ChatLimits {
    /// Must take the largest valid `send` ([`min_frame_bytes`]).
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    /// Authenticated connections.
    pub max_connections: usize,
    /// Connections still waiting for their `auth` frame: a budget of their own, so
    /// sockets that never authenticate cannot take the authenticated ones' slots.
    pub max_unauthenticated: usize,
    /// Authenticated connections one user may hold on this replica.
    pub max_connections_per_user: usize,
    /// Messages one user may post a second, over HTTP and WebSocket together.
    pub sends_per_second: u32,
    /// Rooms one user may create a minute.
    pub rooms_per_minute: u32,
    /// Frames one connection may send a second, on average (twice that in a burst);
    /// past it the connection is closed with [`close::POLICY`].
    pub frames_per_second: u32,
    /// Frames queued for the writer, at most.
    pub outbound_queue: usize,
    /// Bytes queued for the writer, at most: a connection's memory is bounded by this,
    /// not by the frame count alone.
    pub outbound_bytes: usize,
    /// How long one write to the client may take; a client that reads nothing for
    /// this long is dropped, and its memory freed.
    pub write_timeout: Duration,
    /// How long before the access token expires the server asks for a fresh one.
    pub reauth_before: Duration,
    /// How long a connection without credentials may wait for its `auth` frame.
    pub auth_timeout: Duration,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            max_frame_bytes: 64 * 1024,
            max_subscriptions: 32,
            max_connections: 20_000,
            max_unauthenticated: 1_000,
            max_connections_per_user: 32,
            sends_per_second: 20,
            rooms_per_minute: 10,
            frames_per_second: 50,
            outbound_queue: 256,
            outbound_bytes: 256 * 1024,
            write_timeout: Duration::from_secs(10),
            reauth_before: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
        }
    }
}

/// The smallest frame limit that takes every valid `send`: the largest body once
/// JSON-escaped, and room for the rest of the frame (a 64-character client id escaped
/// twice over, a room id, the names of the fields).
pub const fn min_frame_bytes() -> usize {
    herd_chat::MessageBody::MAX_JSON_BYTES + 1024
}

impl ChatLimits {
    /// The per-user limits chat applies on every transport.
    pub fn chat(&self) -> herd_chat::Limits {
        herd_chat::Limits {
            posts_per_second: self.sends_per_second,
            rooms_per_minute: self.rooms_per_minute,
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
        /// 1 to 4000 characters; no control characters but tab and newlines, no bidi
        /// embeddings, overrides or isolates, no byte-order mark.
        #[schema(
            min_length = 1,
            max_length = 4000,
            pattern = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\ufeff]*$"
        )]
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
        (status = 429, description = "`too-many-connections`: the user has as many \
            connections open on this replica as one user may.", body = Problem,
            content_type = "application/problem+json"),
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
    let caller = match principal {
        Some(p) => match state.live.admit(p.user_id()) {
            Ok(admitted) => Caller::Admitted(p, admitted),
            Err(refused) => return refused.problem().into_response(),
        },
        None => match state.live.unauthenticated.clone().try_acquire_owned() {
            Ok(permit) => Caller::Waiting(permit),
            Err(_) => return Refused::Replica.problem().into_response(),
        },
    };
    let open = state.live.opened();
    let limits = &state.live.limits;
    ws.max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| connection(state, socket, caller, open))
}

/// Who is connecting, and what they hold of the replica's budgets until they leave.
enum Caller {
    /// Authenticated by the upgrade request: a place among the authenticated
    /// connections, and among its user's.
    Admitted(Principal, Admitted),
    /// No credentials yet: a place among the connections waiting for their `auth`
    /// frame, given back once it comes.
    Waiting(OwnedSemaphorePermit),
}

/// An authenticated connection's places: the replica's and its user's, given back
/// when it is dropped.
struct Admitted {
    _replica: OwnedSemaphorePermit,
    _user: UserSlot,
}

/// One of a user's connections on this replica, counted until dropped.
struct UserSlot {
    live: Arc<ChatState>,
    user_id: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self.live.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = users.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                users.remove(&self.user_id);
            }
        }
    }
}

/// Why an authenticated connection was not admitted.
#[derive(Debug, Clone, Copy)]
enum Refused {
    Replica,
    User,
}

impl Refused {
    fn problem(self) -> ApiError {
        match self {
            Refused::Replica => ApiError::new(
                Code::Unavailable,
                "this replica has as many connections as it takes; try another",
            ),
            Refused::User => ApiError::new(
                Code::TooManyConnections,
                "you have as many connections open here as one user may; close one first",
            ),
        }
    }

    fn close(self) -> Close {
        match self {
            Refused::Replica => Close(
                close::TRY_AGAIN_LATER,
                "this replica has as many connections as it takes",
            ),
            Refused::User => Close(
                close::TOO_MANY_CONNECTIONS,
                "too many connections for this user",
            ),
        }
    }
}

/// Counts a connection task as open until dropped, whatever it holds.
struct Open(Arc<ChatState>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
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
    const SESSION_ENDED: Close = Close(
        close::TOKEN_EXPIRED,
        "the session timed out: reconnect, or log in again",
    );
    const SLOW: Close = Close(close::SLOW_CONSUMER, "too slow: resume from your last seq");
    /// Said to no one: the client stopped reading, and its socket is dropped.
    const STALLED: Close = Close(close::SLOW_CONSUMER, "stopped reading");
    const FLOOD: Close = Close(close::POLICY, "too many frames: slow down");
    const STORE_FAILED: Close = Close(close::INTERNAL, "store unavailable: resume later");
}

/// A frame queued for the writer, holding its share of the connection's byte budget
/// until it is written (or dropped with the queue).
struct Out {
    text: Utf8Bytes,
    _budget: OwnedSemaphorePermit,
    /// When a live message's frame was queued, for the `write` stage of
    /// `herd_chat_stage_seconds`; `None` for any other frame.
    live: Option<Instant>,
}

/// The sending half of a connection, shared by its reader and its subscriptions.
#[derive(Clone)]
struct Outbox {
    out: mpsc::Sender<Out>,
    /// The bytes the queue may still take, of `budget`.
    bytes: Arc<Semaphore>,
    budget: usize,
    /// Set by a subscription that cannot go on, or by the writer when the client stops
    /// reading: the reader then closes with this.
    abort: watch::Sender<Option<Close>>,
    /// Where live messages' stages are recorded.
    metrics: Arc<Metrics>,
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
        let text = frame.text();
        let Ok(permit) = self
            .bytes
            .clone()
            .acquire_many_owned(self.cost(&text))
            .await
        else {
            return false;
        };
        let out = Out {
            text,
            _budget: permit,
            live: None,
        };
        self.out.send(out).await.is_ok()
    }

    /// Queues a live frame for the writer; a full queue (in frames or in bytes) means
    /// the client is too slow.
    fn push(&self, frame: ServerFrame) -> bool {
        self.push_text(frame.text(), None)
    }

    /// [`push`](Outbox::push) for a frame already encoded (and shared with other
    /// connections: a live message is encoded once per replica, not once per reader);
    /// `live` is when this replica decoded the live message it carries, if it does.
    fn push_text(&self, text: Utf8Bytes, live: Option<Instant>) -> bool {
        let queued = live.map(|decoded| {
            let now = Instant::now();
            let fanout = now.saturating_duration_since(decoded);
            self.metrics.record_delivery(DeliveryStage::Fanout, fanout);
            now
        });
        let Ok(permit) = self.bytes.clone().try_acquire_many_owned(self.cost(&text)) else {
            self.end(Close::SLOW);
            return false;
        };
        let out = Out {
            text,
            _budget: permit,
            live: queued,
        };
        match self.out.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.end(Close::SLOW);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// What a frame takes of the byte budget: its length, or the whole budget for a
    /// frame larger than it (which then goes alone).
    fn cost(&self, text: &Utf8Bytes) -> u32 {
        u32::try_from(text.len().min(self.budget)).unwrap_or(u32::MAX)
    }

    /// Asks the reader to close the connection.
    fn end(&self, close: Close) {
        self.abort.send_replace(Some(close));
    }
}

/// One connection, from the upgrade to the close: the writer task, authentication, then
/// the [`Handler`] until something ends it.
async fn connection(state: AppState, socket: WebSocket, caller: Caller, _open: Open) {
    let limits = &state.live.limits;
    let (sink, mut stream) = socket.split();
    let (out, rx) = mpsc::channel::<Out>(limits.outbound_queue);
    let (abort, aborted) = watch::channel(None);
    let (closing, close_rx) = oneshot::channel();
    let writer = tokio::spawn(write(
        sink,
        rx,
        close_rx,
        limits.write_timeout,
        abort.clone(),
        state.metrics.clone(),
    ));
    let outbox = Outbox {
        out,
        bytes: Arc::new(Semaphore::new(limits.outbound_bytes)),
        budget: limits.outbound_bytes,
        abort,
        metrics: state.metrics.clone(),
    };
    let admitted = match caller {
        Caller::Admitted(p, admitted) => Ok((p, admitted)),
        Caller::Waiting(waiting) => match first_frame_auth(&state, &mut stream).await {
            // Authenticated: it leaves the waiting budget for the replica's and its
            // user's.
            Ok(p) => {
                drop(waiting);
                state
                    .live
                    .admit(p.user_id())
                    .map(|admitted| (p, admitted))
                    .map_err(Refused::close)
            }
            Err(close) => Err(close),
        },
    };
    let close = match admitted {
        Ok((principal, _admitted)) => {
            let mut handler = Handler::new(state, principal, stream, outbox.clone(), aborted);
            handler.run().await
        }
        Err(close) => Some(close),
    };
    if let Some(close) = close {
        let _ = closing.send(close);
    }
    // The writer ends with the close, or at once without one; either way within the
    // write timeout, since every write it makes has that deadline.
    drop(outbox);
    let _ = writer.await;
}

/// Writes the reader's frames to the socket, in order, until a close, an error, or a
/// write the client does not take within `deadline`: a client that stops reading is
/// dropped, not waited for, and the queue goes with it.
async fn write(
    mut sink: SplitSink<WebSocket, Frame>,
    mut rx: mpsc::Receiver<Out>,
    mut closing: oneshot::Receiver<Close>,
    deadline: Duration,
    abort: watch::Sender<Option<Close>>,
    metrics: Arc<Metrics>,
) {
    loop {
        let out = tokio::select! {
            biased;
            close = &mut closing => {
                if let Ok(close) = close {
                    // What was queued before the close goes first (an ack before a
                    // restart), unless the close is for being too slow; all of it
                    // within one deadline.
                    let flush = close != Close::SLOW;
                    let _ = tokio::time::timeout(deadline, finish(&mut sink, &mut rx, close, flush)).await;
                }
                return;
            }
            out = rx.recv() => out,
        };
        let Some(first) = out else {
            return;
        };
        match tokio::time::timeout(deadline, send_queued(&mut sink, &mut rx, first, &metrics)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                abort.send_replace(Some(Close::STALLED));
                return;
            }
        }
    }
}

/// Writes `first` and whatever else is queued already (up to [`WRITE_BATCH`] frames),
/// then flushes once: a burst of frames costs one write to the socket, not one each.
async fn send_queued(
    sink: &mut SplitSink<WebSocket, Frame>,
    rx: &mut mpsc::Receiver<Out>,
    first: Out,
    metrics: &Metrics,
) -> Result<(), axum::Error> {
    // The frames keep their share of the byte budget until they are flushed, and the
    // live ones their queueing instant.
    let mut written = Vec::with_capacity(WRITE_BATCH);
    let mut next = Some(first);
    while let Some(Out {
        text,
        _budget,
        live,
    }) = next.take()
    {
        sink.feed(Frame::Text(text)).await?;
        written.push((_budget, live));
        if written.len() < WRITE_BATCH {
            next = rx.try_recv().ok();
        }
    }
    sink.flush().await?;
    let flushed = Instant::now();
    for queued in written.iter().filter_map(|(_, live)| *live) {
        let took = flushed.saturating_duration_since(queued);
        metrics.record_delivery(DeliveryStage::Write, took);
    }
    Ok(())
}

/// Frames written before one flush, at most.
const WRITE_BATCH: usize = 64;

/// Writes what is queued (when `flush`), then the close frame.
async fn finish(
    sink: &mut SplitSink<WebSocket, Frame>,
    rx: &mut mpsc::Receiver<Out>,
    Close(code, reason): Close,
    flush: bool,
) {
    if flush {
        while let Ok(Out { text, .. }) = rx.try_recv() {
            if sink.send(Frame::Text(text)).await.is_err() {
                return;
            }
        }
    }
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = sink.send(Frame::Close(Some(frame))).await;
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
    /// The answers to the sends not answered yet, in the order the sends came: the
    /// next frame is read while earlier sends commit, and acks go out in order.
    answers: VecDeque<Answer>,
    reauth: Reauth,
    session: SessionLife,
    frames: FrameBudget,
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
            session: SessionLife::new(&state, &principal),
            frames: FrameBudget::new(state.live.limits.frames_per_second),
            shutdown: state.live.shutdown.subscribe(),
            revocations: state.auth.revocations(),
            subscriptions: HashMap::new(),
            answers: VecDeque::new(),
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
                (frame, answered) = next_answer(&mut self.answers), if !self.answers.is_empty() => {
                    self.outbox.say(frame);
                    // Queued: the message may now be announced (and come back here).
                    drop(answered);
                    None
                }
                // At most SENDS_IN_FLIGHT sends wait for their commit; past that the
                // client's frames wait in the socket.
                frame = self.stream.next(), if self.answers.len() < SENDS_IN_FLIGHT => match frame {
                    Some(Ok(Frame::Text(_) | Frame::Binary(_))) if !self.frames.take() => {
                        Some(Close::FLOOD)
                    }
                    Some(Ok(Frame::Text(text))) => {
                        self.session.used();
                        self.on_text(&text).await;
                        None
                    }
                    Some(Ok(Frame::Binary(_))) => {
                        self.session.used();
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
                _ = self.session.next() => Some(Close::SESSION_ENDED),
            };
            if let Some(close) = ended {
                break Some(close);
            }
        };
        // The sends already taken are answered before the close (each is committed or
        // failed whether or not it is waited for).
        self.settle().await;
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
        close
    }

    /// A text frame: one of the protocol's, or a `bad-frame` error. No frame a client
    /// sends ends the connection (a close frame aside).
    async fn on_text(&mut self, text: &str) {
        let frame = decode_client_frame(text);
        // Only sends are pipelined: anything else is answered after every earlier send,
        // as if each frame were handled to its end before the next.
        if !matches!(frame, Ok(ClientFrame::Send { .. })) {
            self.settle().await;
        }
        let frame = match frame {
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
            } => self.on_send(room, &body, &client_id),
        }
    }

    /// Says the answer of every send taken so far, waiting for their commits.
    async fn settle(&mut self) {
        while !self.answers.is_empty() {
            let (frame, answered) = next_answer(&mut self.answers).await;
            self.outbox.say(frame);
            drop(answered);
        }
    }

    /// Says `frame` after the answers of the sends before it.
    fn answer(&mut self, frame: ServerFrame) {
        if self.answers.is_empty() {
            self.outbox.say(frame);
        } else {
            self.answers.push_back(Answer::Ready(frame));
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
        let Ok(room) = RoomId::parse(&room) else {
            self.outbox.say(error(Code::NotFound, "no such room", None));
            return;
        };
        // A follow that ended (its user left the room) no longer counts.
        self.subscriptions.retain(|_, task| !task.is_finished());
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
        if let Some(task) = RoomId::parse(&room)
            .ok()
            .and_then(|id| self.subscriptions.remove(&id))
        {
            task.abort();
        }
        self.outbox.say(ServerFrame::Unsubscribed { room });
    }

    /// Validates a send and queues it for its room's next commit; its answer comes
    /// through `answers`, in order.
    fn on_send(&mut self, room: String, body: &str, client_id: &str) {
        let checked = MessageBody::parse(body).and_then(|b| Ok((b, ClientId::parse(client_id)?)));
        let (body, client_id) = match checked {
            Ok(fields) => fields,
            Err(e) => {
                let message = e.to_string();
                self.answer(error(Code::ValidationFailed, &message, Some(client_id)));
                return;
            }
        };
        let Ok(room) = RoomId::parse(&room) else {
            self.answer(error(
                Code::NotFound,
                "no such room",
                Some(client_id.as_str()),
            ));
            return;
        };
        let posted = self
            .state
            .chat
            .submit(&self.user, &room, body, client_id.clone());
        self.answers
            .push_back(Answer::Posting { client_id, posted });
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

/// Sends a connection may have waiting for their commit, at most: as many as one commit
/// takes ([`herd_chat::MAX_BATCH`]). A socket's sends go no faster than this many a
/// commit cycle, so a smaller window caps one sender at window ÷ commit time: 64 at
/// PostgreSQL commits of 75 ms on a loaded machine was 850 a second, below the 1,000
/// offered, and the rest queued in the socket without bound (docs/benchmarks.md).
const SENDS_IN_FLIGHT: usize = herd_chat::MAX_BATCH;

/// What answers a send: its outcome once committed, or a refusal queued behind the
/// answers of earlier sends.
enum Answer {
    Posting {
        client_id: ClientId,
        posted: Submitted,
    },
    Ready(ServerFrame),
}

/// The first send's answer, once it has one, and the send, taken off the queue (to be
/// dropped once its answer is queued: only then is its message announced). Cancel-safe:
/// nothing is taken until it resolves.
async fn next_answer(answers: &mut VecDeque<Answer>) -> (ServerFrame, Option<Answer>) {
    let frame = poll_fn(|cx| match answers.front_mut() {
        None => Poll::Pending,
        Some(Answer::Ready(frame)) => Poll::Ready(frame.clone()),
        Some(Answer::Posting { client_id, posted }) => Pin::new(posted)
            .poll(cx)
            .map(|outcome| send_answer(client_id, outcome)),
    })
    .await;
    (frame, answers.pop_front())
}

/// The `ack` or `error` frame a send's outcome is.
fn send_answer(client_id: &ClientId, outcome: herd_chat::Result<Posted>) -> ServerFrame {
    match outcome {
        Ok(Posted { message, duplicate }) => ServerFrame::Ack {
            client_id: client_id.as_str().to_owned(),
            room: message.room.into_string(),
            seq: message.seq.get(),
            id: message.id.into_string(),
            duplicate,
        },
        Err(e) => {
            let code = ApiError::from(e).code();
            let message = match code {
                Code::RateLimited => "too many sends per second; retry with the same client_id",
                Code::Unavailable | Code::Internal => "not sent; retry with the same client_id",
                _ => "not sent",
            };
            error(code, message, Some(client_id.as_str()))
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
            // Encoded by the first subscription on this replica to get it, shared by the
            // rest.
            Ok(Event::Live(m)) => {
                let text = m.encoded(|m| ServerFrame::Message(m.clone().into()).text());
                outbox.push_text(text, Some(m.decoded_at()))
            }
            // The user left the room: the subscription ends as if they had unsubscribed.
            Ok(Event::Left) => {
                outbox.push(ServerFrame::Unsubscribed {
                    room: follow.room().to_string(),
                });
                false
            }
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

/// How many frames a connection may still send: a bucket of twice the rate, refilled
/// at the rate. Every frame costs the server a parse and most a store query, so a
/// client cannot make it spend without bound on one socket.
struct FrameBudget {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl FrameBudget {
    fn new(per_second: u32) -> FrameBudget {
        let rate = f64::from(per_second.max(1));
        FrameBudget {
            rate,
            tokens: 2.0 * rate,
            at: tokio::time::Instant::now(),
        }
    }

    /// Takes one frame's worth; false when the bucket is empty.
    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(2.0 * self.rate);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// When a connection authenticated by a session (`--sessions shared` or `memory`) ends,
/// as the session would without it: at the session's absolute end, or once the client
/// has sent no frame for the session's idle timeout. The socket does not extend the
/// session; a client that reconnects does (the upgrade is a use of it), if it is still
/// alive. Tokens expire by themselves and are not watched here ([`Reauth`]).
struct SessionLife {
    /// When the session ends whatever its use; `None` for tokens.
    absolute: Option<tokio::time::Instant>,
    idle: Option<Duration>,
    last_use: tokio::time::Instant,
}

impl SessionLife {
    fn new(state: &AppState, principal: &Principal) -> SessionLife {
        let now = tokio::time::Instant::now();
        let Principal::Session(session) = principal else {
            return SessionLife {
                absolute: None,
                idle: None,
                last_use: now,
            };
        };
        let timeouts = &state.auth.config().sessions;
        let absolute = i64::try_from(timeouts.absolute.as_secs()).unwrap_or(i64::MAX);
        let left = session
            .1
            .created_at
            .saturating_add(absolute)
            .saturating_sub(state.auth.now());
        SessionLife {
            absolute: Some(now + Duration::from_secs(left.max(0).unsigned_abs())),
            idle: Some(timeouts.idle),
            last_use: now,
        }
    }

    /// Counts a frame from the client as a use of the session.
    fn used(&mut self) {
        self.last_use = tokio::time::Instant::now();
    }

    /// Resolves when the session has ended (never, for tokens).
    async fn next(&self) {
        let idle_end = self.idle.map(|idle| self.last_use + idle);
        match (self.absolute, idle_end) {
            (Some(a), Some(i)) => tokio::time::sleep_until(a.min(i)).await,
            (Some(at), None) | (None, Some(at)) => tokio::time::sleep_until(at).await,
            (None, None) => std::future::pending().await,
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
    connections: Arc<Semaphore>,
    unauthenticated: Arc<Semaphore>,
    /// User id -> authenticated connections open; users with none are not kept.
    users: Mutex<HashMap<String, usize>>,
    /// Connections open, authenticated or not, until their socket is dropped.
    open: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
}

impl ChatState {
    /// Turns true when the replica stops: long-lived responses (the revocation feed's
    /// streams) end then, as WebSockets close.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn new(limits: ChatLimits) -> ChatState {
        ChatState {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            unauthenticated: Arc::new(Semaphore::new(limits.max_unauthenticated)),
            users: Mutex::new(HashMap::new()),
            open: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            limits,
        }
    }

    /// A place for an authenticated connection of `user_id`, if the replica and the
    /// user have one.
    fn admit(self: &Arc<Self>, user_id: &str) -> Result<Admitted, Refused> {
        let user = {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            let count = users.entry(user_id.to_owned()).or_insert(0);
            if *count >= self.limits.max_connections_per_user {
                return Err(Refused::User);
            }
            *count += 1;
            UserSlot {
                live: self.clone(),
                user_id: user_id.to_owned(),
            }
        };
        let replica = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Replica)?;
        Ok(Admitted {
            _replica: replica,
            _user: user,
        })
    }

    /// Counts a connection as open until the returned guard is dropped.
    fn opened(self: &Arc<Self>) -> Open {
        self.open.send_modify(|n| *n += 1);
        Open(self.clone())
    }

    /// Waits until at most `n` connections are open (their sockets dropped, not only
    /// asked to close).
    pub async fn until_open_at_most(&self, n: usize) {
        let _ = self.open.subscribe().wait_for(|open| *open <= n).await;
    }

    /// Tells every connection to close with 1012 once its in-flight send is answered,
    /// and waits (at most `patience`) for them to finish.
    pub async fn close_all(&self, patience: Duration) {
        self.shutdown.send_replace(true);
        let _ = tokio::time::timeout(patience, self.until_open_at_most(0)).await;
    }

    /// Authenticated connections open.
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
