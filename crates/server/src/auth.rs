//! Accounts and sessions over HTTP: signup, login, refresh, logout, and `GET /v1/me`.
//!
//! Login answers API clients with tokens in the body. A browser asks for cookies instead
//! (`"cookies": true`): the credentials then travel only in HttpOnly cookies, and the
//! body carries the CSRF token the page must echo on writes.

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use herd_identity::{AuthError, Password, TokenPair, Username};
use serde_json::json;

use crate::client::ClientAddr;
use crate::cookies;
use crate::error::{ApiError, ApiResult};
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
    ClientAddr(client): ClientAddr,
    mut body: JsonObject,
) -> ApiResult<Response> {
    let username = body.string("username");
    let password = body.string("password");
    let want_cookies = body.flag("cookies");
    let (username, password) = body.finish((username, password))?;
    match state.auth.login(&username, &password, client).await {
        Ok(pair) => Ok(token_response(&state, pair, want_cookies)),
        Err(e) => {
            let reason = match &e {
                AuthError::InvalidCredentials => Some("invalid_credentials"),
                AuthError::Throttled { .. } => Some("throttled"),
                _ => None,
            };
            if let Some(reason) = reason {
                state.metrics.record_auth_failure("login", reason);
                tracing::info!(reason, client = ?client, "login refused");
            }
            Err(e.into())
        }
    }
}

/// Takes the refresh token from the body or, for a browser, from its cookie (then the
/// request must pass the CSRF check, like any cookie-authenticated write).
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut body: JsonObject,
) -> ApiResult<Response> {
    let from_body = body.optional_string("refresh_token");
    let from_cookie = cookies::cookie(&headers, cookies::REFRESH).filter(|v| !v.is_empty());
    if from_body.is_none() && from_cookie.is_none() {
        body.reject(
            "refresh_token",
            "is required (or send the herd_refresh cookie)",
        );
    }
    let from_body = body.finish(Some(from_body))?;
    let (token, via_cookie) = match (from_body, from_cookie) {
        (Some(token), _) => (token, false),
        (None, Some(cookie)) => {
            state
                .cookies()
                .check_csrf(&axum::http::Method::POST, &headers)?;
            (cookie.to_owned(), true)
        }
        (None, None) => {
            return Err(ApiError::internal(
                "refresh token vanished after validation",
            ))
        }
    };
    match state.auth.refresh(&token).await {
        Ok(pair) => Ok(token_response(&state, pair, via_cookie)),
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
    Identity(principal): Identity,
) -> ApiResult<Response> {
    state.auth.logout(&principal).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    state.cookies().clear_all(response.headers_mut());
    Ok(response)
}

async fn me(State(state): State<AppState>, Identity(principal): Identity) -> impl IntoResponse {
    Json(json!({
        "user_id": principal.user_id(),
        "username": principal.username(),
        "session_id": principal.session_id(),
        "replica": &*state.replica,
    }))
}

/// A token response, never cached by anyone (RFC 6749 section 5.1): tokens in the body
/// for API clients, or in HttpOnly cookies for a browser.
fn token_response(state: &AppState, pair: TokenPair, as_cookies: bool) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    if !as_cookies {
        let mut body = json!({
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
        });
        if let Some(refresh) = pair.refresh_token {
            body["refresh_token"] = json!(refresh);
        }
        return (no_store, Json(body)).into_response();
    }
    let policy = state.cookies();
    let csrf = URL_SAFE_NO_PAD.encode(herd_identity::random_token_bytes());
    let mut response = (
        no_store,
        Json(json!({ "token_type": "cookie", "expires_in": pair.expires_in, "csrf_token": csrf })),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        policy.set(
            cookies::ACCESS,
            &pair.access_token,
            "/",
            pair.expires_in,
            true,
        ),
    );
    if let Some(refresh) = &pair.refresh_token {
        let ttl = state.auth.config().refresh_ttl;
        headers.append(
            SET_COOKIE,
            policy.set(cookies::REFRESH, refresh, "/v1/auth", ttl, true),
        );
    }
    headers.append(
        SET_COOKIE,
        policy.set(
            cookies::CSRF,
            &csrf,
            "/",
            state.auth.config().refresh_ttl,
            false,
        ),
    );
    response
}
