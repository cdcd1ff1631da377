//! The one error type of the HTTP layer, rendered as RFC 9457 problem+json from one table
//! of stable codes. The WebSocket's `error` frames take their codes from the same table.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herd_identity::{AuthError, Rejection};
use serde::Serialize;
use utoipa::ToSchema;

/// A stable error code: its `type` URI, HTTP status and title never change meaning.
///
/// Over HTTP a code is the end of a problem's `type`; over the WebSocket it is an `error`
/// frame's `code` (`docs/protocol.md`). A few codes only a WebSocket sends; their status
/// is what the same refusal would be over HTTP, and is never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MalformedJson,
    UnsupportedMediaType,
    PayloadTooLarge,
    ValidationFailed,
    InvalidToken,
    InvalidCredentials,
    TooManyAttempts,
    TooManySignups,
    TooManyRefreshes,
    Busy,
    InvalidRefreshToken,
    UsernameTaken,
    CsrfFailed,
    RefreshNotSupported,
    /// Sessions and accounts are managed only under `--sessions token`.
    AccountsNotSupported,
    /// The password confirming a change of the account is wrong.
    WrongPassword,
    NotAMember,
    NotFound,
    MethodNotAllowed,
    NotAWebSocket,
    IncompleteBody,
    RequestTimeout,
    Unavailable,
    Internal,
    /// WebSocket only: the frame is not one of the protocol's.
    BadFrame,
    /// WebSocket only: the room is followed already.
    AlreadySubscribed,
    /// WebSocket only: the connection follows as many rooms as it may.
    TooManySubscriptions,
    /// The user sends messages faster than a replica takes, over HTTP and WebSocket
    /// together.
    RateLimited,
    /// The user creates rooms faster than a replica takes.
    TooManyRooms,
    /// The user has as many WebSocket connections open on the replica as one user may.
    TooManyConnections,
    /// WebSocket only: the fresh token of a `reauth` was refused.
    ReauthFailed,
    /// The revocation feed's cursor is not a revocation id.
    InvalidCursor,
    /// The revocation feed no longer holds what follows the cursor.
    CursorExpired,
}

impl Code {
    /// The table: code, status, title. Clients match on the code (the end of `type`).
    pub const fn describe(self) -> (&'static str, StatusCode, &'static str) {
        use Code::*;
        match self {
            MalformedJson => (
                "malformed-json",
                StatusCode::BAD_REQUEST,
                "The request body is not valid JSON",
            ),
            UnsupportedMediaType => (
                "unsupported-media-type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "The request body must be application/json",
            ),
            PayloadTooLarge => (
                "payload-too-large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large",
            ),
            ValidationFailed => (
                "validation-failed",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Some fields are invalid",
            ),
            InvalidToken => (
                "invalid-token",
                StatusCode::UNAUTHORIZED,
                "The access token is missing or invalid",
            ),
            InvalidCredentials => (
                "invalid-credentials",
                StatusCode::UNAUTHORIZED,
                "Invalid username or password",
            ),
            TooManyAttempts => (
                "too-many-attempts",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many login attempts",
            ),
            TooManySignups => (
                "too-many-signups",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many signups from this address",
            ),
            TooManyRefreshes => (
                "too-many-refreshes",
                StatusCode::TOO_MANY_REQUESTS,
                "This session refreshed too often",
            ),
            Busy => (
                "busy",
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is busy",
            ),
            InvalidRefreshToken => (
                "invalid-refresh-token",
                StatusCode::UNAUTHORIZED,
                "The refresh token is invalid",
            ),
            CsrfFailed => (
                "csrf-failed",
                StatusCode::FORBIDDEN,
                "Cross-site request refused",
            ),
            NotAMember => (
                "not-a-member",
                StatusCode::FORBIDDEN,
                "Only members of the room may do that",
            ),
            RefreshNotSupported => (
                "refresh-not-supported",
                StatusCode::BAD_REQUEST,
                "This replica's session strategy has no refresh tokens",
            ),
            AccountsNotSupported => (
                "accounts-not-supported",
                StatusCode::BAD_REQUEST,
                "This replica's session strategy cannot list or end a user's sessions",
            ),
            WrongPassword => (
                "wrong-password",
                StatusCode::FORBIDDEN,
                "The password is wrong",
            ),
            UsernameTaken => (
                "username-taken",
                StatusCode::CONFLICT,
                "That username is taken",
            ),
            NotFound => ("not-found", StatusCode::NOT_FOUND, "No such resource"),
            MethodNotAllowed => (
                "method-not-allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed here",
            ),
            NotAWebSocket => (
                "not-a-websocket",
                StatusCode::BAD_REQUEST,
                "This path takes only a WebSocket upgrade",
            ),
            IncompleteBody => (
                "incomplete-body",
                StatusCode::BAD_REQUEST,
                "The request body ended before its declared length",
            ),
            RequestTimeout => (
                "request-timeout",
                StatusCode::REQUEST_TIMEOUT,
                "The request did not arrive in time",
            ),
            Unavailable => (
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "A dependency is unavailable",
            ),
            Internal => (
                "internal",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ),
            BadFrame => (
                "bad-frame",
                StatusCode::BAD_REQUEST,
                "The frame is not one of this protocol",
            ),
            AlreadySubscribed => (
                "already-subscribed",
                StatusCode::CONFLICT,
                "The room is followed already",
            ),
            TooManySubscriptions => (
                "too-many-subscriptions",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many rooms followed on one connection",
            ),
            RateLimited => (
                "rate-limited",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many messages sent",
            ),
            TooManyRooms => (
                "too-many-rooms",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many rooms created",
            ),
            TooManyConnections => (
                "too-many-connections",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many connections open",
            ),
            ReauthFailed => (
                "reauth-failed",
                StatusCode::UNAUTHORIZED,
                "The fresh access token was refused",
            ),
            InvalidCursor => (
                "invalid-cursor",
                StatusCode::BAD_REQUEST,
                "The cursor is not a revocation id",
            ),
            CursorExpired => (
                "cursor-expired",
                StatusCode::GONE,
                "The cursor is older than the revocations kept",
            ),
        }
    }

    /// The code alone, as clients match on it (`not-found`).
    pub const fn as_str(self) -> &'static str {
        self.describe().0
    }

    pub fn type_uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.describe().0)
    }
}

/// Problem types are URNs: stable names that promise no web page.
pub const TYPE_PREFIX: &str = "urn:herd:problem:";

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The body field or query parameter, `(body)` for the body as a whole.
    pub field: String,
    /// What is wrong with it, in words meant for the person who fixes it.
    pub message: String,
}

/// An error a handler returns. Everything but `Internal` is the client's to fix.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    detail: String,
    fields: Vec<FieldError>,
    /// For 401 from a bearer-protected route: what to put in `WWW-Authenticate`.
    challenge: Option<&'static str>,
    /// For unexpected errors: what to log (once, by the middleware), never sent.
    internal: Option<String>,
    /// For 429: whole seconds to wait, sent in `Retry-After`.
    retry_after: Option<u64>,
}

/// Carries an unexpected error's message from the handler to the logging middleware.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> ApiError {
        ApiError {
            code,
            detail: detail.into(),
            fields: Vec::new(),
            challenge: None,
            internal: None,
            retry_after: None,
        }
    }

    pub fn validation(fields: Vec<FieldError>) -> ApiError {
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        let mut e = ApiError::new(
            Code::ValidationFailed,
            format!("invalid fields: {}", names.join(", ")),
        );
        e.fields = fields;
        e
    }

    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        let mut e = ApiError::new(
            Code::Internal,
            "something went wrong on our side; it has been logged",
        );
        e.internal = Some(error.to_string());
        e
    }

    pub fn unavailable(error: impl std::fmt::Display) -> ApiError {
        let mut e = ApiError::new(
            Code::Unavailable,
            "a store this request needs is unavailable; try again shortly",
        );
        e.internal = Some(error.to_string());
        e
    }

    pub fn invalid_token(rejection: Rejection) -> ApiError {
        let mut e = ApiError::new(Code::InvalidToken, rejection.to_string());
        // RFC 6750: no error code when no credentials were sent at all.
        e.challenge = Some(if rejection == Rejection::Missing {
            r#"Bearer realm="herd""#
        } else {
            r#"Bearer realm="herd", error="invalid_token""#
        });
        e
    }

    /// A login refused by the throttle (RFC 6585: 429 with `Retry-After`).
    pub fn too_many_attempts(retry_after: u64) -> ApiError {
        let mut e = ApiError::new(
            Code::TooManyAttempts,
            format!("too many login attempts; try again in {retry_after} seconds"),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// A request refused for now: `code` with a `Retry-After` of `retry_after` seconds
    /// (a 429 for a per-user or per-address limit, a 503 for a busy replica).
    pub fn retry_later(code: Code, detail: impl Into<String>, retry_after: u64) -> ApiError {
        let mut e = ApiError::new(code, detail);
        e.retry_after = Some(retry_after);
        e
    }

    pub fn code(&self) -> Code {
        self.code
    }
}

/// An error, as RFC 9457 problem details (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem<'a> {
    /// `urn:herd:problem:<code>`; clients match on the code, which never changes meaning.
    #[serde(rename = "type")]
    #[schema(example = "urn:herd:problem:validation-failed")]
    pub type_uri: String,
    /// A short summary of the problem type, the same for every occurrence.
    pub title: &'static str,
    /// The HTTP status code, repeated.
    pub status: u16,
    /// What went wrong this time and how to fix it.
    pub detail: &'a str,
    /// Every invalid field, for `validation-failed` only.
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    #[schema(required = false)]
    pub errors: &'a [FieldError],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (_, status, title) = self.code.describe();
        let body = Problem {
            type_uri: self.code.type_uri(),
            title,
            status: status.as_u16(),
            detail: &self.detail,
            errors: &self.fields,
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(internal) = self.internal {
            response.extensions_mut().insert(InternalError(internal));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::UsernameTaken => {
                ApiError::new(Code::UsernameTaken, "choose another username")
            }
            AuthError::InvalidCredentials => {
                ApiError::new(Code::InvalidCredentials, "check the username and password")
            }
            AuthError::Throttled { retry_after } => ApiError::too_many_attempts(retry_after),
            AuthError::SignupThrottled { retry_after } => ApiError::retry_later(
                Code::TooManySignups,
                format!("too many signups from this address; try again in {retry_after} seconds"),
                retry_after,
            ),
            AuthError::RefreshThrottled { retry_after } => ApiError::retry_later(
                Code::TooManyRefreshes,
                format!("this session refreshed too often; try again in {retry_after} seconds"),
                retry_after,
            ),
            AuthError::Busy { retry_after } => ApiError::retry_later(
                Code::Busy,
                format!("every password-hashing slot is busy; try again in {retry_after} seconds"),
                retry_after,
            ),
            AuthError::InvalidRefresh(why) => ApiError::new(
                Code::InvalidRefreshToken,
                format!("the refresh token is {why}; log in again"),
            ),
            AuthError::NoSigningKey => ApiError::unavailable("no signing key is active"),
            AuthError::RefreshNotSupported(strategy) => ApiError::new(
                Code::RefreshNotSupported,
                format!(
                    "this replica runs --sessions {strategy}: log in again when the session ends"
                ),
            ),
            AuthError::AccountsNotSupported(strategy) => ApiError::new(
                Code::AccountsNotSupported,
                format!(
                    "this replica runs --sessions {strategy}, which keeps no list of a \
                     user's sessions; only --sessions token manages sessions and accounts"
                ),
            ),
            // 403, not 401: the credential is fine, and a client that logs out on 401
            // must not do so for a mistyped password.
            AuthError::WrongPassword => ApiError::new(
                Code::WrongPassword,
                "the password is not this account's; it counts as a failed login",
            ),
            AuthError::NoSuchSession => {
                ApiError::new(Code::NotFound, "you have no live session with that id")
            }
            AuthError::Unavailable(e) => ApiError::unavailable(e),
            AuthError::Store(e) if e.is_unavailable() => ApiError::unavailable(e),
            e => ApiError::internal(e),
        }
    }
}

impl From<herd_chat::ChatError> for ApiError {
    fn from(e: herd_chat::ChatError) -> ApiError {
        use herd_chat::ChatError;
        match e {
            ChatError::NoSuchRoom => ApiError::new(Code::NotFound, "no such room"),
            ChatError::NotAMember => ApiError::new(Code::NotAMember, "join the room first"),
            ChatError::TooManyPosts { retry_after } => ApiError::retry_later(
                Code::RateLimited,
                format!("too many messages; retry in {retry_after} seconds"),
                retry_after,
            ),
            ChatError::TooManyRooms { retry_after } => ApiError::retry_later(
                Code::TooManyRooms,
                format!("too many rooms created; retry in {retry_after} seconds"),
                retry_after,
            ),
            // Logged, since a rule the parsers missed is a bug to fix, but the client's
            // to fix first: a retry would fail the same way.
            ChatError::Rejected(e) => {
                tracing::warn!(error = %e, "the store refused a value the parsers let through");
                ApiError::new(
                    Code::ValidationFailed,
                    "the store refused a value in the request",
                )
            }
            ChatError::Unavailable(e) => ApiError::unavailable(e),
            ChatError::Store(e) => ApiError::internal(e),
            e @ ChatError::Abandoned => ApiError::unavailable(e),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::Code;

    /// The codes `docs/protocol.md` says an `error` frame carries are the table's, spelled
    /// the same: the WebSocket has no codes of its own.
    #[test]
    fn the_websocket_error_codes_the_protocol_lists_are_the_tables() {
        let protocol = include_str!("../../../docs/protocol.md");
        let row = protocol
            .lines()
            .find(|l| l.starts_with(r#"| `{"type":"error""#))
            .expect("the error frame's row");
        // `a`, `b` (a note naming `a_field`), `c`: the first code span of each item.
        let listed: Vec<&str> = row
            .split("Codes:")
            .nth(1)
            .expect("the row lists codes")
            .split(", ")
            .filter_map(|item| item.split('`').nth(1))
            .collect();
        let sent = [
            Code::BadFrame,
            Code::ValidationFailed,
            Code::NotFound,
            Code::NotAMember,
            Code::AlreadySubscribed,
            Code::TooManySubscriptions,
            Code::RateLimited,
            Code::ReauthFailed,
            Code::Unavailable,
        ];
        let sent: Vec<&str> = sent.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, sent);
    }
}
