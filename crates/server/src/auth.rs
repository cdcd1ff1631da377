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
use herd_identity::{AuthError, Password, TokenPair, Username};
use serde::Serialize;
use utoipa::ToSchema;

use crate::client::ClientAddr;
use crate::cookies;
use crate::error::{ApiError, ApiResult, Code, Problem};
use crate::extract::{Fields, Identity, JsonObject, ReadFields};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/signup", post(signup))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/me", get(me))
}

/// A new account's credentials. The body is read field by field, so a 422 names every
/// invalid one.
#[derive(Debug, ToSchema)]
pub struct SignupRequest {
    /// 3 to 32 of `a-z 0-9 _ . -` (upper case is folded to lower).
    #[schema(
        value_type = String,
        min_length = 3,
        max_length = 32,
        pattern = "^[A-Za-z0-9_.-]+$",
        example = "alice"
    )]
    pub username: Username,
    /// 8 to 128 characters.
    #[schema(
        value_type = String,
        min_length = 8,
        max_length = 128,
        example = "correct horse"
    )]
    pub password: Password,
}

impl ReadFields for SignupRequest {
    fn read(body: &mut JsonObject) -> Option<SignupRequest> {
        let username = body.parse("username", Username::parse);
        let password = body.parse("password", Password::parse);
        Some(SignupRequest {
            username: username?,
            password: password?,
        })
    }
}

/// Credentials to log in with.
// Plain strings: any string is tried, so a password set under older rules still logs in.
#[derive(ToSchema)]
pub struct LoginRequest {
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "correct horse")]
    pub password: String,
    /// True for a browser: the credentials then come back only as HttpOnly cookies, and
    /// the body carries the CSRF token the page echoes in `X-CSRF-Token`.
    #[schema(value_type = Option<bool>, default = false)]
    pub cookies: bool,
}

impl ReadFields for LoginRequest {
    fn read(body: &mut JsonObject) -> Option<LoginRequest> {
        let username = body.string("username");
        let password = body.string("password");
        let cookies = body.flag("cookies");
        Some(LoginRequest {
            username: username?,
            password: password?,
            cookies,
        })
    }
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("cookies", &self.cookies)
            .finish()
    }
}

/// The refresh token to spend.
#[derive(ToSchema)]
pub struct RefreshRequest {
    /// Required, except from a browser whose `herd_refresh` cookie carries it (then the
    /// request must pass the CSRF check, and the body may be `{}`).
    #[schema(value_type = String, required = true)]
    pub refresh_token: Option<String>,
}

impl ReadFields for RefreshRequest {
    fn read(body: &mut JsonObject) -> Option<RefreshRequest> {
        Some(RefreshRequest {
            refresh_token: body.optional_string("refresh_token"),
        })
    }
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.refresh_token.as_ref().map(|_| "<redacted>");
        f.debug_struct("RefreshRequest")
            .field("refresh_token", &token)
            .finish()
    }
}

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Account {
    pub user_id: String,
    /// The username as stored: case-folded.
    pub username: String,
}

/// Who the caller is, and which replica answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me<'a> {
    pub user_id: &'a str,
    pub username: &'a str,
    /// The login session (`sid`) the credential belongs to.
    pub session_id: &'a str,
    /// The replica that served this request.
    pub replica: &'a str,
}

/// What a login or refresh answers: tokens for an API client, or a cookie session for a
/// browser that asked for `"cookies": true`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    Tokens(Tokens),
    Cookies(CookieSession),
}

/// Tokens in the body, for API clients.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// A JWT (RFC 9068) under `--sessions token`, an opaque session id otherwise. Send it
    /// as `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, pattern = "^Bearer$")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Good for one `POST /v1/auth/refresh`; absent under `--sessions shared|memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub refresh_token: Option<String>,
}

/// A browser's session: the credentials are in HttpOnly cookies (`herd_access`,
/// `herd_refresh`), never in the body.
#[derive(Debug, Serialize, ToSchema)]
pub struct CookieSession {
    /// Always `cookie`.
    #[schema(value_type = String, pattern = "^cookie$")]
    pub token_type: &'static str,
    /// Seconds until the access cookie's token expires.
    pub expires_in: i64,
    /// Echo it in `X-CSRF-Token` on every cookie-authenticated write.
    pub csrf_token: String,
}

/// Creates an account.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "The account was created.", body = Account),
        (status = 409, description = "`username-taken`: choose another username.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too-many-signups`: too many signups from this \
            address; wait for the time in `Retry-After`.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "`busy`: no password-hashing slot came free in time; \
            wait for the time in `Retry-After`.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
)]
async fn signup(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Fields(request): Fields<SignupRequest>,
) -> ApiResult<impl IntoResponse> {
    let account = state
        .auth
        .signup(&request.username, &request.password, client)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Account {
            user_id: account.user_id,
            username: account.username,
        }),
    ))
}

/// A replica whose clock is off from its peers' issues no tokens: the others would
/// refuse them (or it theirs), logging the user out (docs/security.md, "Clock skew").
fn refuse_if_skewed(state: &AppState) -> ApiResult<()> {
    // Not while it is still listening for its peers' clocks: /readyz keeps the balancer
    // away meanwhile, and a caller that reached it directly is no worse off than before.
    match state.confirmations().clock_skew() {
        Some(problem) => Err(ApiError::new(Code::Unavailable, problem)),
        None => Ok(()),
    }
}

/// Logs in: tokens for an API client, HttpOnly cookies for a browser.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in. Never cached (`Cache-Control: no-store`); \
            with `\"cookies\": true` the credentials are in `Set-Cookie` headers.",
            body = LoginResponse),
        (status = 401, description = "`invalid-credentials`: the username or password is wrong.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too-many-attempts`: too many failed logins for this \
            account from this address or browser, for this account from everywhere (a \
            browser holding the account's `herd_device` cookie is exempt from that one), \
            or from this address; wait for the time in `Retry-After`.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "`busy`: no password-hashing slot came free in time; \
            wait for the time in `Retry-After`.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
)]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Fields(request): Fields<LoginRequest>,
) -> ApiResult<Response> {
    let LoginRequest {
        username,
        password,
        cookies: want_cookies,
    } = request;
    refuse_if_skewed(&state)?;
    let device = cookies::cookie(&headers, cookies::DEVICE);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    match state
        .auth
        .login(&username, &password, client, device, user_agent)
        .await
    {
        Ok(pair) => {
            let device = pair.device_token.clone();
            let mut response = token_response(&state, pair, want_cookies);
            if let Some(device) = device {
                let cookie = state.cookies().set(
                    cookies::DEVICE,
                    &device,
                    cookies::DEVICE_PATH,
                    herd_identity::DEVICE_TTL,
                    true,
                );
                response.headers_mut().append(SET_COOKIE, cookie);
            }
            Ok(response)
        }
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
/// Spends a refresh token for a new pair. The old refresh token is spent: presenting it
/// again within the grace window returns the same successor; later, the whole login
/// session is revoked as stolen.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair (or cookies, when the refresh token came \
            from the `herd_refresh` cookie). Never cached.", body = LoginResponse),
        (status = 400, description = "`refresh-not-supported`: this replica runs \
            `--sessions shared` or `memory`, which have no refresh tokens; or \
            `malformed-json`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid-refresh-token`: unknown, expired, spent or \
            revoked; log in again.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`csrf-failed`: the refresh token came from the cookie \
            without this session's `X-CSRF-Token` or from another origin.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too-many-refreshes`: this login session refreshed \
            (or replayed a spent token) more often than its limit allows; wait for the \
            time in `Retry-After`. Nothing was spent.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
)]
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut body: JsonObject,
) -> ApiResult<Response> {
    // Not the `Fields` extractor: whether the field is required depends on the cookie,
    // and that 422 joins the body's own.
    let request = RefreshRequest::read(&mut body);
    let from_body = request.as_ref().and_then(|r| r.refresh_token.clone());
    let from_cookie = cookies::cookie(&headers, cookies::REFRESH).filter(|v| !v.is_empty());
    if from_body.is_none() && from_cookie.is_none() {
        body.reject(
            "refresh_token",
            "is required (or send the herd_refresh cookie)",
        );
    }
    body.finish(request)?;
    refuse_if_skewed(&state)?;
    let (token, via_cookie) = match (from_body, from_cookie) {
        (Some(token), _) => (token, false),
        (None, Some(cookie)) => {
            // The CSRF token is bound to the session, so find the token's session
            // first; an unknown token needs no check, its refresh fails anyway.
            state.cookies().check_origin(&headers)?;
            if let Some(session_id) = state.auth.refresh_session(cookie).await? {
                state
                    .cookies()
                    .check_csrf(&axum::http::Method::POST, &headers, &session_id)?;
            }
            (cookie.to_owned(), true)
        }
        (None, None) => {
            return Err(ApiError::internal(
                "refresh token vanished after validation",
            ))
        }
    };
    // A reused refresh token revokes its session: that answer, too, waits until every
    // live replica refuses the session's access tokens.
    let (refreshed, unconfirmed) = state
        .confirmations()
        .revoke_everywhere(state.auth.refresh(&token))
        .await;
    match refreshed {
        Ok(pair) => Ok(token_response(&state, pair, via_cookie)),
        Err(e) => {
            if let AuthError::InvalidRefresh(why) = &e {
                state
                    .metrics
                    .record_auth_failure("refresh_token", why.reason());
                tracing::info!(reason = why.reason(), "refresh refused");
            }
            let mut response = ApiError::from(e).into_response();
            unconfirmed.stamp(&mut response);
            Ok(response)
        }
    }
}

/// Logs out: the login session's refresh and access tokens stop working on every replica.
/// The answer comes once every live replica has confirmed that it refuses them, or after
/// the confirmation deadline (1 s by default) naming those that had not.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "Logged out; the browser's cookies are cleared. \
        Every live replica refuses the session's tokens, except those named in \
        `herd-unconfirmed`, which refuse them by their next upkeep.",
        headers(("herd-unconfirmed" = String, description = "The live replicas (ids, \
            comma-separated) that had not confirmed the logout by the deadline; absent \
            when all did.")))),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn logout(
    State(state): State<AppState>,
    Identity(principal): Identity,
) -> ApiResult<Response> {
    let (logged_out, unconfirmed) = state
        .confirmations()
        .revoke_everywhere(state.auth.logout(&principal))
        .await;
    logged_out?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    state.cookies().clear_all(response.headers_mut());
    unconfirmed.stamp(&mut response);
    Ok(response)
}

/// Who the credential belongs to, and which replica answered.
#[utoipa::path(get, path = "/v1/me", tag = "auth",
    responses((status = 200, description = "The caller.", body = Me)),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn me(State(state): State<AppState>, Identity(principal): Identity) -> Response {
    // The hottest answer herd gives: borrowed fields, and a buffer that holds the whole
    // body at once (`Json`'s starts at 128 bytes and grows once for this one).
    let me = Me {
        user_id: principal.user_id(),
        username: principal.username(),
        session_id: principal.session_id(),
        replica: &state.replica,
    };
    let mut body = Vec::with_capacity(256);
    match serde_json::to_writer(&mut body, &me) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("encoding /v1/me: {e}")).into_response(),
    }
}

/// A token response, never cached by anyone (RFC 6749 section 5.1): tokens in the body
/// for API clients, or in HttpOnly cookies for a browser.
fn token_response(state: &AppState, pair: TokenPair, as_cookies: bool) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    if !as_cookies {
        let body = LoginResponse::Tokens(Tokens {
            access_token: pair.access_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token,
        });
        return (no_store, Json(body)).into_response();
    }
    let policy = state.cookies();
    let csrf = policy.csrf_token(&pair.session_id);
    let mut response = (
        no_store,
        Json(LoginResponse::Cookies(CookieSession {
            token_type: "cookie",
            expires_in: pair.expires_in,
            csrf_token: csrf.clone(),
        })),
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
        let ttl = refresh_max_age(state);
        headers.append(
            SET_COOKIE,
            policy.set(cookies::REFRESH, refresh, "/v1/auth", ttl, true),
        );
    }
    headers.append(
        SET_COOKIE,
        policy.set(
            policy.csrf_name(),
            &csrf,
            "/",
            refresh_max_age(state),
            false,
        ),
    );
    response
}

/// The refresh token's lifetime in seconds, the cookies' `Max-Age`.
fn refresh_max_age(state: &AppState) -> i64 {
    i64::try_from(state.auth.config().refresh_ttl.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use herd_identity::{Password, Username};
    use utoipa::PartialSchema as _;

    use super::SignupRequest;

    /// The limits the description states are the ones identity enforces.
    #[test]
    fn the_signup_schema_states_the_limits_identity_parses_with() {
        let schema = serde_json::to_value(SignupRequest::schema()).expect("schema");
        let field = |name: &str, key: &str| schema["properties"][name][key].as_u64();
        let bound = |n: usize| u64::try_from(n).ok();
        assert_eq!(field("username", "minLength"), bound(Username::MIN));
        assert_eq!(field("username", "maxLength"), bound(Username::MAX));
        assert_eq!(field("password", "minLength"), bound(Password::MIN));
        assert_eq!(field("password", "maxLength"), bound(Password::MAX));
    }
}
