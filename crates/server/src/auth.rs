//! Accounts and sessions over HTTP: signup, login, refresh, logout, and `GET /v1/me`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use herd_identity::{AuthError, Password, TokenPair, Username};
use serde_json::json;

use crate::error::ApiResult;
use crate::extract::{Identity, JsonObject};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/signup", post(signup))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/me", get(me))
}

async fn signup(
    State(state): State<AppState>,
    mut body: JsonObject,
) -> ApiResult<impl IntoResponse> {
    let username = body.parse("username", Username::parse);
    let password = body.parse("password", Password::parse);
    let (username, password) = body.finish((username, password))?;
    let account = state.auth.signup(&username, &password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user_id": account.user_id, "username": account.username })),
    ))
}

async fn login(
    State(state): State<AppState>,
    mut body: JsonObject,
) -> ApiResult<impl IntoResponse> {
    let username = body.string("username");
    let password = body.string("password");
    let (username, password) = body.finish((username, password))?;
    match state.auth.login(&username, &password).await {
        Ok(pair) => Ok(token_response(pair)),
        Err(e) => {
            if matches!(e, AuthError::InvalidCredentials) {
                state
                    .metrics
                    .record_auth_failure("login", "invalid_credentials");
                tracing::info!(reason = "invalid_credentials", "login refused");
            }
            Err(e.into())
        }
    }
}

async fn refresh(
    State(state): State<AppState>,
    mut body: JsonObject,
) -> ApiResult<impl IntoResponse> {
    let token = body.string("refresh_token");
    let token = body.finish(token)?;
    match state.auth.refresh(&token).await {
        Ok(pair) => Ok(token_response(pair)),
        Err(e) => {
            if let AuthError::InvalidRefresh(why) = &e {
                state
                    .metrics
                    .record_auth_failure("refresh_token", why.reason());
                tracing::info!(reason = why.reason(), "refresh refused");
            }
            Err(e.into())
        }
    }
}

async fn logout(
    State(state): State<AppState>,
    Identity(claims): Identity,
) -> ApiResult<StatusCode> {
    state.auth.logout(&claims.sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(state): State<AppState>, Identity(claims): Identity) -> impl IntoResponse {
    Json(json!({
        "user_id": claims.sub,
        "username": claims.preferred_username,
        "session_id": claims.sid,
        "replica": &*state.replica,
    }))
}

/// A token response, never cached by anyone (RFC 6749 section 5.1).
fn token_response(pair: TokenPair) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
            "refresh_token": pair.refresh_token,
        })),
    )
}
