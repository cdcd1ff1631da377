//! The standard spellings of what `auth` does, for clients nobody here wrote: the OAuth 2.0
//! token endpoint for the `refresh_token` grant (RFC 6749 section 6), token revocation
//! (RFC 7009, the standard logout) and the Token Status List
//! (draft-ietf-oauth-status-list) that publishes revocations to other verifiers.
//!
//! Both OAuth endpoints take `application/x-www-form-urlencoded` bodies and answer errors
//! as RFC 6749 section 5.2 JSON (`{"error", "error_description"}`), not problem+json,
//! because that is what OAuth client libraries parse. There is no password grant: RFC 9700
//! section 2.4 forbids it; a login is `POST /v1/auth/login`. herd's one client is public
//! (RFC 6749 section 2.1): it authenticates with nothing but its `client_id`, which,
//! when sent, must be herd's.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herd_identity::{status_list, AuthError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Tokens;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route(status_list::PATH, get(status_list_token))
}

/// The form media type both endpoints take.
const FORM: &str = "application/x-www-form-urlencoded";

/// A token request (RFC 6749 section 6).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the form; the handler reads the fields by name.
pub struct TokenRequest {
    /// `refresh_token`; any other grant is `unsupported_grant_type`.
    #[schema(example = "refresh_token", pattern = "^refresh_token$")]
    grant_type: String,
    /// The refresh token to spend (an empty value is as good as none, RFC 6749 section 3.2).
    #[schema(min_length = 1)]
    refresh_token: String,
    /// Herd's client id (`herd`), optional for this public client.
    #[schema(required = false)]
    client_id: Option<String>,
    /// herd has no scopes: any non-empty value is `invalid_scope`.
    #[schema(required = false, max_length = 0)]
    scope: Option<String>,
}

/// A revocation request (RFC 7009 section 2.1).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the form; the handler reads the fields by name.
pub struct RevocationRequest {
    /// An access or refresh token; either ends its whole login session.
    #[schema(min_length = 1)]
    token: String,
    /// `access_token` or `refresh_token`: which to try first.
    #[schema(required = false)]
    token_type_hint: Option<String>,
    /// Herd's client id (`herd`), optional for this public client.
    #[schema(required = false)]
    client_id: Option<String>,
}

/// An error as OAuth clients read it (RFC 6749 section 5.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unsupported_grant_type`,
    /// `invalid_scope` or `slow_down`.
    pub error: &'static str,
    pub error_description: String,
    #[serde(skip)]
    status: StatusCode,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            error,
            error_description: description.into(),
            status,
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after;
        let mut response = (status, no_store(), Json(self)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// What either handler can fail with: an OAuth error, or one of herd's own (the store
/// unavailable), rendered as herd renders them.
enum Failure {
    OAuth(OAuthError),
    Api(ApiError),
}

impl From<OAuthError> for Failure {
    fn from(e: OAuthError) -> Self {
        Failure::OAuth(e)
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        Failure::Api(e.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::OAuth(e) => e.into_response(),
            Failure::Api(e) => e.into_response(),
        }
    }
}

/// RFC 6749 section 5.1: token responses and their errors are never cached.
fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// The parameters herd reads from either endpoint's form.
const PARAMETERS: &[&str] = &[
    "grant_type",
    "refresh_token",
    "client_id",
    "scope",
    "token",
    "token_type_hint",
];

/// The form's parameters. RFC 6749 section 3.2 and RFC 7009 section 2.1: the body is
/// form-encoded; a parameter sent twice, or one sent empty, is treated as absent and
/// twice is an error (RFC 6749 section 3.1).
struct Form(Vec<(String, String)>);

impl Form {
    fn read(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Form, Failure> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM));
        if !form {
            return Err(OAuthError::invalid_request(format!("send the body as {FORM}")).into());
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| OAuthError::invalid_request("the body is not a valid form"))?;
        let form = Form(pairs);
        // A parameter herd reads may come once; unrecognised ones are ignored, repeated or
        // not (RFC 6749 section 3.2: "MUST ignore unrecognized request parameters").
        for (i, (name, _)) in form.0.iter().enumerate() {
            if PARAMETERS.contains(&name.as_str()) && form.0[..i].iter().any(|(n, _)| n == name) {
                return Err(OAuthError::invalid_request(format!("{name} is sent twice")).into());
            }
        }
        if let Some(client) = form.get("client_id") {
            if client != state.auth.config().client_id {
                return Err(OAuthError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "unknown client_id",
                )
                .into());
            }
        }
        Ok(form)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, Failure> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")).into())
    }
}

/// The OAuth 2.0 token endpoint, for the `refresh_token` grant: spends a refresh token for
/// a new pair, exactly as `POST /v1/auth/refresh` does (rotation, grace window, reuse
/// revokes the session). There is no password grant (RFC 9700 section 2.4).
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A new pair; the refresh token sent is spent. Never \
            cached.", body = Tokens,
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 400, description = "`invalid_request` (not a form, a parameter missing \
            or repeated), `invalid_grant` (the refresh token is unknown, expired, spent or \
            revoked), `unsupported_grant_type` (anything but `refresh_token`, or a replica \
            under `--sessions shared|memory`) or `invalid_scope`.", body = OAuthError),
        (status = 401, description = "`invalid_client`: a `client_id` that is not herd's.",
            body = OAuthError),
        (status = 429, description = "`slow_down`: this login session refreshed more often \
            than its limit allows; nothing was spent. Wait for `Retry-After`.",
            body = OAuthError,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "`unavailable`: the store is unavailable; try again \
            shortly.", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    // A reused refresh token revokes its session: like `/v1/auth/refresh`, the answer
    // then waits until every live replica refuses the session's access tokens.
    let (outcome, unconfirmed) = state
        .confirmations()
        .revoke_everywhere(token_inner(&state, &headers, &body))
        .await;
    let mut response = match outcome {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    };
    unconfirmed.stamp(&mut response);
    response
}

async fn token_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Failure> {
    let form = Form::read(state, headers, body)?;
    match form.required("grant_type")? {
        "refresh_token" => {}
        "password" => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "the password grant is not offered (RFC 9700 section 2.4); log in with \
                 POST /v1/auth/login",
            )
            .into())
        }
        _ => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only the refresh_token grant is offered",
            )
            .into())
        }
    }
    let refresh_token = form.required("refresh_token")?;
    if form.get("scope").is_some() {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "herd's tokens have no scopes",
        )
        .into());
    }
    match state.auth.refresh(refresh_token).await {
        Ok(pair) => Ok((
            no_store(),
            Json(Tokens {
                access_token: pair.access_token,
                token_type: "Bearer",
                expires_in: pair.expires_in,
                refresh_token: pair.refresh_token,
            }),
        )
            .into_response()),
        Err(AuthError::InvalidRefresh(why)) => {
            state
                .metrics
                .record_auth_failure("refresh_token", why.reason());
            tracing::info!(reason = why.reason(), "refresh refused");
            Err(OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", why.to_string()).into())
        }
        Err(AuthError::RefreshThrottled { retry_after }) => Err(OAuthError {
            retry_after: Some(retry_after),
            ..OAuthError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                format!("this session refreshed too often; try again in {retry_after}s"),
            )
        }
        .into()),
        Err(AuthError::RefreshNotSupported(strategy)) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("this replica runs --sessions {strategy}, which has no refresh tokens"),
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Token revocation (RFC 7009), the standard spelling of logout: an access or refresh
/// token ends its whole login session, as `POST /v1/auth/logout` does. A token that is
/// unknown, expired or already revoked is answered 200 all the same (RFC 7009 section
/// 2.2): the caller's goal, that it no longer works, is met.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = RevocationRequest,
        content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token no longer works, whether it did before or \
            not.", headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 400, description = "`invalid_request`: not a form, or `token` missing or \
            repeated.", body = OAuthError),
        (status = 401, description = "`invalid_client`: a `client_id` that is not herd's.",
            body = OAuthError),
        (status = 503, description = "`unavailable`: the store is unavailable; try again \
            shortly.", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    // The standard spelling of logout gets logout's guarantee: the answer waits until
    // every live replica refuses the session's tokens (`herd-unconfirmed` otherwise).
    let (outcome, unconfirmed) = state
        .confirmations()
        .revoke_everywhere(revoke_inner(&state, &headers, &body))
        .await;
    let mut response = match outcome {
        Ok(()) => (StatusCode::OK, no_store()).into_response(),
        Err(failure) => failure.into_response(),
    };
    unconfirmed.stamp(&mut response);
    response
}

async fn revoke_inner(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<(), Failure> {
    let form = Form::read(state, headers, body)?;
    let token = form.required("token")?;
    // RFC 7009 section 2.1: the hint only says where to look first.
    let access_first = form.get("token_type_hint") == Some("access_token");
    for refresh in [!access_first, access_first] {
        if refresh {
            if let Some(session_id) = state.auth.refresh_session(token).await? {
                state.auth.revoke(&session_id).await?;
                return Ok(());
            }
        } else {
            match state.auth.authenticate(token).await {
                Ok(principal) => {
                    state.auth.logout(&principal).await?;
                    return Ok(());
                }
                Err(herd_identity::AuthnError::Unavailable(e)) => {
                    return Err(Failure::Api(ApiError::unavailable(e)));
                }
                Err(herd_identity::AuthnError::Rejected(_)) => {}
            }
        }
    }
    tracing::info!("revocation of a token that was not live: nothing to do");
    Ok(())
}

/// herd's Token Status List (draft-ietf-oauth-status-list): bit `idx` is 1 while the
/// login session of the access tokens whose `status.status_list.idx` it is has been
/// revoked and any of its tokens can still pass. A JWT (`typ` `statuslist+jwt`) signed
/// with the key that signs access tokens, so the JWKS verifies it too. Rebuilt when a
/// revocation arrives, not per request.
#[utoipa::path(get, path = "/v1/auth/status-list", tag = "discovery",
    responses(
        (status = 200, description = "The signed status list; `sub` is this URI, \
            `status_list.lst` the ZLIB-compressed bits, `ttl` how long to keep it.",
            content_type = "application/statuslist+jwt", body = String,
            headers(("Cache-Control" = String, description = "`public, max-age=N`, N \
                the seconds left until the list's `exp`."))),
        (status = 503, description = "`unavailable`: the store is unavailable, or no key \
            signs; try again shortly.",
            body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn status_list_token(State(state): State<AppState>) -> ApiResult<Response> {
    let list = state.auth.status_list().await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(status_list::MEDIA_TYPE),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::try_from(format!("public, max-age={}", list.max_age.max(0)))
                    .unwrap_or(HeaderValue::from_static("no-cache")),
            ),
            // The list is public, and a verifier running in a browser may fetch it.
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        list.token.to_string(),
    )
        .into_response())
}
