//! Rooms and message history over HTTP: stateless, any replica. A thin transport over
//! [`herd_chat::Chat`], which holds the rules.
//!
//! A message is durable (committed, with its room sequence number) before it is
//! acknowledged, then announced on the bus for live delivery. A retried send with the
//! same `client_id` returns the stored message (200) and never makes a second copy.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use herd_chat::{ClientId, MessageBody, PageSize, RoomId, RoomName, Seq, UserId};
use herd_identity::Principal;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, Code, FieldError, Problem};
use crate::extract::{Identity, JsonObject};
use crate::AppState;

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

impl From<herd_chat::Room> for Room {
    fn from(r: herd_chat::Room) -> Room {
        Room {
            id: r.id.into_string(),
            name: r.name.into_string(),
            created_by: r.created_by.into_string(),
            created_at: r.created_at,
            last_seq: r.last_seq.get(),
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
    /// 1 to 64 characters after trimming, no control characters and no invisible ones
    /// (`docs/protocol.md`, "Characters"; the pattern says the same as `RoomName::parse`).
    #[schema(
        value_type = String,
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\xad\\u034f\\u061c\\u115f\\u1160\\u17b4\\u17b5\\u180b-\\u180f\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u206f\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0\\ufff9-\\ufffb]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\xad\\u034f\\u061c\\u115f\\u1160\\u17b4\\u17b5\\u180b-\\u180f\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u206f\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0\\ufff9-\\ufffb][^\\x00-\\x1f\\x7f-\\x9f\\xad\\u034f\\u061c\\u115f\\u1160\\u17b4\\u17b5\\u180b-\\u180f\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u206f\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0\\ufff9-\\ufffb]*$",
        example = "general"
    )]
    pub name: RoomName,
}

impl CreateRoom {
    /// Reads `POST /v1/rooms`'s body field by field: a 422 names every invalid one.
    pub fn read(mut body: JsonObject) -> ApiResult<CreateRoom> {
        let name = body.parse("name", RoomName::parse);
        let name = body.finish(name)?;
        Ok(CreateRoom { name })
    }
}

/// A message to post.
#[derive(Debug, ToSchema)]
pub struct SendMessage {
    /// 1 to 4000 characters; no control characters but tab and newlines, no bidi
    /// embeddings, overrides or isolates, no byte-order mark (as `MessageBody::parse`).
    #[schema(
        value_type = String,
        min_length = 1,
        max_length = 4000,
        pattern = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\ufeff]*$",
        example = "hello"
    )]
    pub body: MessageBody,
    /// Chosen by the client, 1 to 64 printable ASCII characters: the same one again
    /// returns the stored message instead of posting a copy.
    #[schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[!-~]+$", example = "c-1")]
    pub client_id: ClientId,
}

impl SendMessage {
    /// Reads `POST /v1/rooms/{id}/messages`'s body field by field: a 422 names every
    /// invalid one.
    pub fn read(mut body: JsonObject) -> ApiResult<SendMessage> {
        let text = body.parse("body", MessageBody::parse);
        let client_id = body.parse("client_id", ClientId::parse);
        let (body, client_id) = body.finish((text, client_id))?;
        Ok(SendMessage { body, client_id })
    }
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
pub struct PageQuery {
    /// Return messages with `seq` above this; 0 (the default) is the whole history.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Seq,
    /// At most this many, 1 to 500 (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: PageSize,
}

impl PageQuery {
    /// Reads `after` and `limit` from `GET /v1/rooms/{id}/messages`'s query string; a
    /// 422 names every invalid one.
    /// Other parameters are ignored.
    pub fn read(query: &str) -> ApiResult<PageQuery> {
        let mut page = PageQuery {
            after: Seq::ZERO,
            limit: PageSize::DEFAULT,
        };
        let mut errors = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = value.parse::<i64>().ok();
            match key {
                "after" => match number.and_then(|n| Seq::new(n).ok()) {
                    Some(after) => page.after = after,
                    None => errors.push(field("after", "must be a whole number, 0 or more")),
                },
                "limit" => match number.and_then(|n| PageSize::new(n).ok()) {
                    Some(limit) => page.limit = limit,
                    None => errors.push(field("limit", "must be a whole number from 1 to 500")),
                },
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

impl From<herd_chat::Message> for Message {
    fn from(m: herd_chat::Message) -> Message {
        Message {
            room: m.room.into_string(),
            seq: m.seq.get(),
            id: m.id.into_string(),
            author: m.author,
            author_id: m.author_id.into_string(),
            body: m.body.into_string(),
            client_id: m.client_id.into_string(),
            created_at: m.created_at,
        }
    }
}

/// The room a path names: an id that is not a room id names no room (404), whatever
/// it holds (a NUL, a megabyte), and never reaches the store.
fn room_id(raw: &str) -> ApiResult<RoomId> {
    RoomId::parse(raw).map_err(|_| ApiError::new(Code::NotFound, "no such room"))
}

/// The chat user a principal is: identity proved who it is, chat needs only the id.
pub(crate) fn user(principal: &Principal) -> UserId {
    UserId::new(principal.user_id())
}

/// Creates a room; the creator is its first member.
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms",
    request_body = CreateRoom,
    responses(
        (status = 201, description = "The room.", body = Room),
        (status = 429, description = "`too-many-rooms`: the caller created as many rooms \
            as one user may a minute; see `Retry-After`.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn create(
    State(state): State<AppState>,
    Identity(who): Identity,
    body: JsonObject,
) -> ApiResult<impl IntoResponse> {
    let CreateRoom { name } = CreateRoom::read(body)?;
    let room = state.chat.create_room(&user(&who), name).await?;
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
    let rooms = state.chat.rooms_of(&user(&who)).await?;
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
    let joined = state.chat.join(&user(&who), &room_id(&id)?).await?;
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
    let left = state.chat.leave(&user(&who), &room_id(&id)?).await?;
    Ok(Json(Left { room: id, left }))
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
        (status = 429, description = "`rate-limited`: the caller sent as many messages as \
            one user may a second, over HTTP and WebSocket together; see `Retry-After`.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn send(
    State(state): State<AppState>,
    Identity(who): Identity,
    Path(id): Path<String>,
    body: JsonObject,
) -> ApiResult<impl IntoResponse> {
    let SendMessage { body, client_id } = SendMessage::read(body)?;
    let posted = state
        .chat
        .post(&user(&who), &room_id(&id)?, body, client_id)
        .await?;
    let status = if posted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(Message::from(posted.message))))
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
    let PageQuery { after, limit } = PageQuery::read(query.as_deref().unwrap_or(""))?;
    let page = state
        .chat
        .history(&user(&who), &room_id(&id)?, after, limit)
        .await?;
    Ok(Json(MessagePage {
        messages: page.messages.into_iter().map(Message::from).collect(),
        next_after: page.next_after.get(),
    }))
}

fn field(name: &str, message: &str) -> FieldError {
    FieldError {
        field: name.to_owned(),
        message: message.to_owned(),
    }
}
