//! What a user controls of their own account, over HTTP: their login sessions (listed,
//! ended one at a time, all but this one, or all), their password, and the account.
//!
//! Each operation that ends sessions is a revocation made by identity (the store ends
//! them and logs them; this replica refuses their tokens at once; the bus tells the
//! others), and every one of them goes through [`revoke`], the one place where a
//! revocation made here meets the other replicas.
//!
//! Under `--sessions memory|shared` every route answers 400 `accounts-not-supported`
//! (see `herd_identity`'s `service/account.rs` for why).

use std::future::Future;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use herd_identity::{AuthError, Password, SessionInfo};
use serde::Serialize;
use utoipa::ToSchema;

use crate::client::ClientAddr;
use crate::cookies;
use crate::error::{ApiResult, Problem};
use crate::extract::{Fields, Identity, JsonObject, ReadFields};
use crate::news::UNCONFIRMED_HEADER;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", get(list).delete(end_all))
        .route("/v1/sessions/others", delete(end_others))
        .route("/v1/sessions/{id}", delete(end_one))
        .route("/v1/account/password", post(change_password))
        .route("/v1/account/delete", post(delete_account))
}

/// What the sessions a revocation ended need from the other replicas, once they are
/// ended in the store and refused here.
#[derive(Debug)]
pub struct Revoked {
    /// The login sessions ended.
    pub sessions: Vec<String>,
    /// Headers the answer carries about the revocation: `herd-unconfirmed` naming the live
    /// replicas that did not confirm by the deadline, when some did not.
    pub headers: HeaderMap,
}

/// Every revocation this module's routes make goes through here: `revocation` is the
/// identity operation that ends the sessions (in the store, and on this replica at once;
/// the bus carries them to the others, which also read the store's log on their upkeep).
/// The answer waits until every live replica has confirmed, up to the deadline
/// (`news::Confirmations::revoke_everywhere`), as logout's does; what did not confirm is
/// named in `headers`, which every route adds to its answer.
pub async fn revoke(
    state: &AppState,
    revocation: impl Future<Output = Result<Vec<String>, AuthError>>,
) -> ApiResult<Revoked> {
    let (outcome, unconfirmed) = state.confirmations().revoke_everywhere(revocation).await;
    let sessions = outcome?;
    let mut headers = HeaderMap::new();
    if let Some(value) = unconfirmed.header_value() {
        headers.insert(UNCONFIRMED_HEADER, value);
    }
    Ok(Revoked { sessions, headers })
}

/// One of the caller's live login sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The session id (the `sid` of its access tokens).
    pub id: String,
    /// When the login happened, in unix seconds.
    pub created_at: i64,
    /// When it last refreshed its tokens, in unix seconds; `null` until it does.
    pub refreshed_at: Option<i64>,
    /// The client address the login came from, as the replica saw it (behind a trusted
    /// proxy, the forwarded one); `null` when unknown.
    pub client_address: Option<String>,
    /// The `User-Agent` the login sent (at most 256 characters); `null` when none.
    pub user_agent: Option<String>,
    /// True for the session of the credential that asked.
    pub current: bool,
}

impl From<SessionInfo> for SessionView {
    fn from(s: SessionInfo) -> SessionView {
        SessionView {
            id: s.id,
            created_at: s.created_at,
            refreshed_at: s.refreshed_at,
            client_address: s.client_addr,
            user_agent: s.user_agent,
            current: s.current,
        }
    }
}

/// The caller's live login sessions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// How many login sessions an operation ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ended {
    pub ended: usize,
}

/// A new password, and the current one to confirm it is the owner asking.
#[derive(ToSchema)]
pub struct ChangePasswordRequest {
    /// The password now. Checked as a login is, and metered by the login throttle.
    #[schema(example = "correct horse")]
    pub current_password: String,
    /// 8 to 128 characters, not a common password.
    #[schema(value_type = String, min_length = 8, max_length = 128, example = "battery staple")]
    pub new_password: Password,
}

impl ReadFields for ChangePasswordRequest {
    fn read(body: &mut JsonObject) -> Option<ChangePasswordRequest> {
        let current = body.string("current_password");
        let new = body.parse("new_password", Password::parse);
        Some(ChangePasswordRequest {
            current_password: current?,
            new_password: new?,
        })
    }
}

impl std::fmt::Debug for ChangePasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePasswordRequest")
            .finish_non_exhaustive()
    }
}

/// The account's password, to confirm it is the owner asking.
#[derive(ToSchema)]
pub struct DeleteAccountRequest {
    #[schema(example = "correct horse")]
    pub password: String,
}

impl ReadFields for DeleteAccountRequest {
    fn read(body: &mut JsonObject) -> Option<DeleteAccountRequest> {
        Some(DeleteAccountRequest {
            password: body.string("password")?,
        })
    }
}

impl std::fmt::Debug for DeleteAccountRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeleteAccountRequest")
            .finish_non_exhaustive()
    }
}

/// Lists the caller's live login sessions: when each logged in and last refreshed, from
/// which address and user agent, and which one is asking.
#[utoipa::path(get, path = "/v1/sessions", tag = "account",
    responses(
        (status = 200, description = "The caller's live sessions, newest first.", body = SessionList),
        (status = 400, description = "`accounts-not-supported`: this replica runs \
            `--sessions shared` or `memory`.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn list(
    State(state): State<AppState>,
    Identity(principal): Identity,
) -> ApiResult<Json<SessionList>> {
    let sessions = state.auth.sessions(&principal).await?;
    Ok(Json(SessionList {
        sessions: sessions.into_iter().map(SessionView::from).collect(),
    }))
}

/// Ends one of the caller's sessions (the caller's own included: then it is a logout).
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "account",
    params(("id" = String, Path, description = "The session's id, from `GET /v1/sessions`.")),
    responses(
        (status = 204, description = "Ended: its tokens are refused from now on. When it \
            was the caller's own, the browser's cookies are cleared."),
        (status = 400, description = "`accounts-not-supported`: this replica runs \
            `--sessions shared` or `memory`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: the caller has no live session with \
            that id (another user's session is never touched, and answers the same).",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn end_one(
    State(state): State<AppState>,
    Identity(principal): Identity,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let own = id == principal.session_id();
    let revoked = revoke(&state, state.auth.end_session(&principal, &id)).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if own {
        state.cookies().clear_all(response.headers_mut());
    }
    response.headers_mut().extend(revoked.headers);
    Ok(response)
}

/// Ends every session of the caller's but the one asking.
#[utoipa::path(delete, path = "/v1/sessions/others", tag = "account",
    responses(
        (status = 200, description = "How many sessions ended; the caller's stays.", body = Ended),
        (status = 400, description = "`accounts-not-supported`: this replica runs \
            `--sessions shared` or `memory`.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn end_others(
    State(state): State<AppState>,
    Identity(principal): Identity,
) -> ApiResult<Response> {
    let revoked = revoke(&state, state.auth.end_other_sessions(&principal)).await?;
    let ended = revoked.sessions.len();
    Ok((revoked.headers, Json(Ended { ended })).into_response())
}

/// Ends every session of the caller's, the one asking included.
#[utoipa::path(delete, path = "/v1/sessions", tag = "account",
    responses(
        (status = 200, description = "How many sessions ended; the browser's cookies are \
            cleared.", body = Ended),
        (status = 400, description = "`accounts-not-supported`: this replica runs \
            `--sessions shared` or `memory`.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn end_all(
    State(state): State<AppState>,
    Identity(principal): Identity,
) -> ApiResult<Response> {
    let revoked = revoke(&state, state.auth.end_all_sessions(&principal)).await?;
    let ended = revoked.sessions.len();
    let mut response = (revoked.headers, Json(Ended { ended })).into_response();
    state.cookies().clear_all(response.headers_mut());
    Ok(response)
}

/// Changes the caller's password, given the current one; every other session ends, the
/// caller's stays.
#[utoipa::path(post, path = "/v1/account/password", tag = "account",
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "Changed; how many other sessions ended.", body = Ended),
        (status = 400, description = "`accounts-not-supported`: this replica runs \
            `--sessions shared` or `memory`; or `malformed-json`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`wrong-password`: `current_password` is not the \
            account's password (it counts as a failed login); or `csrf-failed`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too-many-attempts`: the login throttle refused \
            another password check; wait for the time in `Retry-After`.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn change_password(
    State(state): State<AppState>,
    Identity(principal): Identity,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Fields(request): Fields<ChangePasswordRequest>,
) -> ApiResult<Response> {
    let device = cookies::cookie(&headers, cookies::DEVICE);
    let revocation = state.auth.change_password(
        &principal,
        &request.current_password,
        &request.new_password,
        client,
        device,
    );
    let revoked = revoke(&state, revocation).await?;
    let ended = revoked.sessions.len();
    Ok((revoked.headers, Json(Ended { ended })).into_response())
}

/// Deletes the caller's account, given its password. Every session ends. The messages
/// the user wrote stay in their rooms, their author shown as `[deleted]`; the username
/// stays taken; the user's room memberships end.
#[utoipa::path(post, path = "/v1/account/delete", tag = "account",
    request_body = DeleteAccountRequest,
    responses(
        (status = 204, description = "Deleted; the browser's cookies are cleared."),
        (status = 400, description = "`accounts-not-supported`: this replica runs \
            `--sessions shared` or `memory`; or `malformed-json`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`wrong-password`: `password` is not the account's \
            password (it counts as a failed login); or `csrf-failed`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too-many-attempts`: the login throttle refused \
            another password check; wait for the time in `Retry-After`.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn delete_account(
    State(state): State<AppState>,
    Identity(principal): Identity,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Fields(request): Fields<DeleteAccountRequest>,
) -> ApiResult<Response> {
    let device = cookies::cookie(&headers, cookies::DEVICE);
    let revocation = state
        .auth
        .delete_account(&principal, &request.password, client, device);
    let revoked = revoke(&state, revocation).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    state.cookies().clear_all(response.headers_mut());
    response.headers_mut().extend(revoked.headers);
    Ok(response)
}
