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
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, Code, FieldError, Problem};
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
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct Message {
    /// The room's id.
    pub room: String,
    /// Gap-free per room, from 1: remember the last one seen and resume after it.
    #[schema(minimum = 1)]
    pub seq: i64,
    pub id: String,
    /// The author's username.
    pub author: String,
    pub author_id: String,
    pub body: String,
    /// The id the sender chose; a retried send with it returns this message.
    pub client_id: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A new room.
#[derive(Debug, ToSchema)]
pub struct CreateRoom {
    /// 1 to 64 characters after trimming, no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        example = "general"
    )]
    pub name: String,
}

/// A message to post.
#[derive(Debug, ToSchema)]
pub struct SendMessage {
    /// 1 to 4000 characters.
    #[schema(min_length = 1, max_length = 4000, example = "hello")]
    pub body: String,
    /// Chosen by the client, 1 to 64 printable ASCII characters: the same one again
    /// returns the stored message instead of posting a copy.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$", example = "c-1")]
    pub client_id: String,
}

/// The rooms the caller is a member of.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    pub rooms: Vec<Room>,
}

/// The answer to a join.
#[derive(Debug, Serialize, ToSchema)]
pub struct Joined {
    pub room: String,
    /// False when the caller was a member already.
    pub joined: bool,
}

/// The answer to a leave.
#[derive(Debug, Serialize, ToSchema)]
pub struct Left {
    pub room: String,
    /// False when the caller was not a member.
    pub left: bool,
}

/// A page of history.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// Ascending by `seq`.
    pub messages: Vec<Message>,
    /// The cursor for the next page: pass it as `after`.
    pub next_after: i64,
}

/// Where a page of history starts and how long it is.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documents the query string `page` reads by hand, field by field.
pub struct PageQuery {
    /// Return messages with `seq` above this; 0 (the default) is the whole history.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// At most this many, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
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

/// Creates a room; the creator is its first member.
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms",
    request_body = CreateRoom,
    responses((status = 201, description = "The room.", body = Room)),
    security(("bearer" = []), ("cookie" = [])),
)]
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

/// The rooms the caller is a member of.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms",
    responses((status = 200, description = "The caller's rooms.", body = RoomList)),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn mine(
    State(state): State<AppState>,
    Identity(who): Identity,
) -> ApiResult<impl IntoResponse> {
    let rooms = state.auth.store().rooms_of(who.user_id()).await?;
    let rooms: Vec<Room> = rooms.into_iter().map(Room::from).collect();
    Ok(Json(RoomList { rooms }))
}

/// Joins a room (again: no change).
#[utoipa::path(post, path = "/v1/rooms/{id}/join", tag = "rooms",
    params(("id" = String, Path, description = "The room's id.")),
    responses((status = 200, description = "A member now.", body = Joined), (status = 404, description = "`not-found`: no such room.",
            body = Problem, content_type = "application/problem+json"),),
    security(("bearer" = []), ("cookie" = [])),
)]
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
    Ok(Json(Joined { room: id, joined }))
}

/// Leaves a room.
#[utoipa::path(post, path = "/v1/rooms/{id}/leave", tag = "rooms",
    params(("id" = String, Path, description = "The room's id.")),
    responses((status = 200, description = "Not a member now.", body = Left), (status = 404, description = "`not-found`: no such room.",
            body = Problem, content_type = "application/problem+json"),),
    security(("bearer" = []), ("cookie" = [])),
)]
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
    Ok(Json(Left { room: id, left }))
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

/// Posts a message. It is durable (committed with its `seq`) before the answer, then
/// delivered live to subscribers on every replica.
#[utoipa::path(post, path = "/v1/rooms/{id}/messages", tag = "rooms",
    params(("id" = String, Path, description = "The room's id.")),
    request_body = SendMessage,
    responses(
        (status = 201, description = "Posted.", body = Message),
        (status = 200, description = "This `client_id` was sent before: the stored message, \
            no copy made.", body = Message),
        (status = 403, description = "`not-a-member`: join the room first; or `csrf-failed`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such room.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
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

/// A page of a room's history, ascending; follow `next_after` for the next.
#[utoipa::path(get, path = "/v1/rooms/{id}/messages", tag = "rooms",
    params(("id" = String, Path, description = "The room's id."), PageQuery),
    responses(
        (status = 200, description = "A page (empty past the end).", body = MessagePage),
        (status = 403, description = "`not-a-member`: join the room first.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such room.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation-failed`: `after` or `limit` is out of range.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
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
    Ok(Json(MessagePage {
        messages,
        next_after,
    }))
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
