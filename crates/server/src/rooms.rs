//! Rooms and message history over HTTP: stateless, any replica.
//!
//! A message is durable (committed, with its room sequence number) before it is
//! acknowledged, then announced on the bus for live delivery. A retried send with the
//! same `client_id` returns the stored message (200) and never makes a second copy.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use herd_store::{MessageRecord, Posted, RoomRecord};
use serde::Serialize;
use serde_json::json;

use crate::error::{ApiError, ApiResult, Code, FieldError};
use crate::extract::{Identity, JsonObject};
use crate::AppState;

/// The most messages one history page returns.
pub const MAX_PAGE: i64 = 500;
pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_BODY_CHARS: usize = 4000;
pub const MAX_CLIENT_ID_CHARS: usize = 64;
pub const MAX_ROOM_NAME_CHARS: usize = 64;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rooms", post(create).get(mine))
        .route("/v1/rooms/{id}/join", post(join))
        .route("/v1/rooms/{id}/leave", post(leave))
        .route("/v1/rooms/{id}/messages", post(send).get(history))
}

/// A room as clients see it.
#[derive(Debug, Serialize)]
pub struct Room {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_seq: i64,
}

impl From<RoomRecord> for Room {
    fn from(r: RoomRecord) -> Room {
        Room {
            id: r.id,
            name: r.name,
            created_by: r.created_by,
            created_at: r.created_at,
            last_seq: r.last_seq,
        }
    }
}

/// A message as clients see it, over HTTP and WebSocket alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub room: String,
    pub seq: i64,
    pub id: String,
    pub author: String,
    pub author_id: String,
    pub body: String,
    pub client_id: String,
    pub created_at: i64,
}

impl From<MessageRecord> for Message {
    fn from(m: MessageRecord) -> Message {
        Message {
            room: m.room_id,
            seq: m.seq,
            id: m.id,
            author: m.author,
            author_id: m.author_id,
            body: m.body,
            client_id: m.client_id,
            created_at: m.created_at,
        }
    }
}

/// The bus topic carrying a room's new messages.
pub fn topic(room_id: &str) -> String {
    format!("room:{room_id}")
}

/// A room name: 1 to 64 characters after trimming, no control characters.
pub fn room_name(raw: &str) -> Result<String, herd_identity::Invalid> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 || len > MAX_ROOM_NAME_CHARS {
        return Err(herd_identity::Invalid("must be 1 to 64 characters long"));
    }
    if name.chars().any(char::is_control) {
        return Err(herd_identity::Invalid("may not contain control characters"));
    }
    Ok(name.to_owned())
}

/// A message body: 1 to 4000 characters.
pub fn message_body(raw: &str) -> Result<String, herd_identity::Invalid> {
    let len = raw.chars().count();
    if len == 0 || len > MAX_BODY_CHARS {
        return Err(herd_identity::Invalid("must be 1 to 4000 characters long"));
    }
    Ok(raw.to_owned())
}

/// A client-chosen id making a send idempotent: 1 to 64 printable ASCII characters.
pub fn client_id(raw: &str) -> Result<String, herd_identity::Invalid> {
    if raw.is_empty()
        || raw.len() > MAX_CLIENT_ID_CHARS
        || !raw.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(herd_identity::Invalid(
            "must be 1 to 64 printable ASCII characters",
        ));
    }
    Ok(raw.to_owned())
}

async fn create(
    State(state): State<AppState>,
    Identity(who): Identity,
    mut body: JsonObject,
) -> ApiResult<impl IntoResponse> {
    let name = body.parse("name", room_name);
    let name = body.finish(name)?;
    let now = state.auth.now();
    let id = herd_identity::random_id();
    let room = state
        .auth
        .store()
        .create_room(&id, &name, who.user_id(), now)
        .await?;
    Ok((StatusCode::CREATED, Json(Room::from(room))))
}

async fn mine(
    State(state): State<AppState>,
    Identity(who): Identity,
) -> ApiResult<impl IntoResponse> {
    let rooms = state.auth.store().rooms_of(who.user_id()).await?;
    let rooms: Vec<Room> = rooms.into_iter().map(Room::from).collect();
    Ok(Json(json!({ "rooms": rooms })))
}

async fn join(
    State(state): State<AppState>,
    Identity(who): Identity,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let joined = state
        .auth
        .store()
        .join_room(&id, who.user_id(), state.auth.now())
        .await?;
    Ok(Json(json!({ "room": id, "joined": joined })))
}

async fn leave(
    State(state): State<AppState>,
    Identity(who): Identity,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let store = state.auth.store();
    if store.room(&id).await?.is_none() {
        return Err(ApiError::new(Code::NotFound, "no such room"));
    }
    let left = store.leave_room(&id, who.user_id()).await?;
    Ok(Json(json!({ "room": id, "left": left })))
}

/// Refuses anyone but a member of an existing room.
pub async fn require_member(state: &AppState, room_id: &str, user_id: &str) -> ApiResult<()> {
    let store = state.auth.store();
    if store.is_member(room_id, user_id).await? {
        return Ok(());
    }
    if store.room(room_id).await?.is_none() {
        return Err(ApiError::new(Code::NotFound, "no such room"));
    }
    Err(ApiError::new(Code::NotAMember, "join the room first"))
}

/// Stores a message (durably, before anything is acknowledged) and announces it on the
/// bus. Returns it, and whether it was already there (a retried send).
pub async fn send_message(
    state: &AppState,
    room_id: &str,
    author_id: &str,
    body: &str,
    client_id: &str,
) -> ApiResult<(Message, bool)> {
    require_member(state, room_id, author_id).await?;
    let id = herd_identity::random_id();
    let posted = state
        .auth
        .store()
        .post_message(room_id, &id, author_id, body, client_id, state.auth.now())
        .await?;
    let (message, existed) = match posted {
        Posted::New(m) => (Message::from(m), false),
        Posted::Existing(m) => (Message::from(m), true),
    };
    if !existed {
        announce(state, &message).await;
    }
    Ok((message, existed))
}

/// Publishes a stored message for live delivery. A failure loses nothing: subscribers
/// notice the gap in sequence numbers, or get a bus `Gap`, and read the store.
async fn announce(state: &AppState, message: &Message) {
    let bus = state.bus();
    let payload = serde_json::to_vec(message).unwrap_or_default();
    if let Err(e) = bus.publish(&topic(&message.room), &payload).await {
        tracing::warn!(room = %message.room, seq = message.seq, error = %e, "could not announce a message");
    }
}

async fn send(
    State(state): State<AppState>,
    Identity(who): Identity,
    Path(id): Path<String>,
    mut body: JsonObject,
) -> ApiResult<impl IntoResponse> {
    let text = body.parse("body", message_body);
    let cid = body.parse("client_id", client_id);
    let (text, cid) = body.finish((text, cid))?;
    let (message, existed) = send_message(&state, &id, who.user_id(), &text, &cid).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(message)))
}

async fn history(
    State(state): State<AppState>,
    Identity(who): Identity,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let (after, limit) = page(query.as_deref().unwrap_or(""))?;
    require_member(&state, &id, who.user_id()).await?;
    let messages = state.auth.store().messages_after(&id, after, limit).await?;
    let messages: Vec<Message> = messages.into_iter().map(Message::from).collect();
    // The cursor for the next page: the last seq returned, or the one given.
    let next_after = messages.last().map_or(after, |m| m.seq);
    Ok(Json(
        json!({ "messages": messages, "next_after": next_after }),
    ))
}

/// `after` (default 0) and `limit` (default 100, at most 500) from a query string.
fn page(query: &str) -> ApiResult<(i64, i64)> {
    let mut after = 0;
    let mut limit = DEFAULT_PAGE;
    let mut errors = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let parsed = value.parse::<i64>();
        match (key, parsed) {
            ("after", Ok(v)) if v >= 0 => after = v,
            ("after", _) => errors.push(field("after", "must be a whole number, 0 or more")),
            ("limit", Ok(v)) if (1..=MAX_PAGE).contains(&v) => limit = v,
            ("limit", _) => errors.push(field("limit", "must be a whole number from 1 to 500")),
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok((after, limit))
    } else {
        Err(ApiError::validation(errors))
    }
}

fn field(name: &str, message: &str) -> FieldError {
    FieldError {
        field: name.to_owned(),
        message: message.to_owned(),
    }
}
