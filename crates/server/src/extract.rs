//! Extractors: a JSON object body whose every failure is a clear problem, and the
//! [`Identity`] of the caller, taken from the bearer token with no I/O.

use std::fmt;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::Json;
use herd_identity::{AuthnError, Principal, Rejection};
use serde_json::{Map, Value};

use crate::cookies;
use crate::error::{ApiError, Code, FieldError};
use crate::AppState;

/// A request body that is a JSON object, read field by field so that every invalid
/// field is named in one 422.
#[derive(Debug)]
pub struct JsonObject {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // axum checks the content type and the size limit, then parses the bytes as
        // `from_bytes` below does.
        let Json(value) = Json::<Value>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        JsonObject::from_value(value)
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let code = match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::UNPROCESSABLE_ENTITY => Code::ValidationFailed,
        _ => Code::MalformedJson,
    };
    let detail = match code {
        Code::UnsupportedMediaType => {
            "send the body with Content-Type: application/json".to_owned()
        }
        Code::PayloadTooLarge => "the body is over this server's limit".to_owned(),
        // axum's text says where the syntax error is (line and column).
        _ => rejection.body_text(),
    };
    ApiError::new(code, detail)
}

impl JsonObject {
    /// Parses a body already read, as the extractor does once the content type and the
    /// size limit have passed. Public so that it can be fuzzed without a server.
    pub fn from_bytes(body: &[u8]) -> Result<JsonObject, ApiError> {
        let Json(value) = Json::<Value>::from_bytes(body).map_err(json_rejection)?;
        JsonObject::from_value(value)
    }

    fn from_value(value: Value) -> Result<JsonObject, ApiError> {
        match value {
            Value::Object(map) => Ok(JsonObject {
                map,
                errors: Vec::new(),
            }),
            _ => Err(ApiError::validation(vec![FieldError {
                field: "(body)".into(),
                message: "must be a JSON object".into(),
            }])),
        }
    }

    /// A required string field; records an error and returns `None` when absent or not
    /// a string.
    pub fn string(&mut self, field: &str) -> Option<String> {
        match self.map.remove(field) {
            Some(Value::String(s)) => Some(s),
            Some(_) => self.invalid(field, "must be a string"),
            None => self.invalid(field, "is required"),
        }
    }

    /// An optional field: `None` when absent or null, an error when of another type.
    pub fn optional_string(&mut self, field: &str) -> Option<String> {
        match self.map.remove(field) {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => self.invalid(field, "must be a string"),
        }
    }

    /// An optional boolean field, false when absent.
    pub fn flag(&mut self, field: &str) -> bool {
        match self.map.remove(field) {
            Some(Value::Bool(b)) => b,
            None | Some(Value::Null) => false,
            Some(_) => self
                .invalid(field, "must be true or false")
                .unwrap_or(false),
        }
    }

    /// Records that `field` is invalid, for rules that span fields.
    pub fn reject(&mut self, field: &str, message: &str) {
        self.invalid::<()>(field, message);
    }

    /// A required string field parsed into a domain type; the parse error's text says
    /// what is wrong with the field.
    pub fn parse<T, E: fmt::Display>(
        &mut self,
        field: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let raw = self.string(field)?;
        match parse(&raw) {
            Ok(value) => Some(value),
            Err(why) => self.invalid(field, &why.to_string()),
        }
    }

    fn invalid<T>(&mut self, field: &str, message: &str) -> Option<T> {
        self.errors.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        });
        None
    }

    /// Ends reading: the fields read, or a 422 naming every invalid one.
    pub fn finish<T: AllPresent>(self, fields: T) -> Result<T::Values, ApiError> {
        match fields.all_present() {
            Some(values) if self.errors.is_empty() => Ok(values),
            _ => Err(ApiError::validation(self.errors)),
        }
    }
}

/// A request body type, read from a [`JsonObject`] field by field: `read` reads every
/// field, recording each invalid one, and returns the value only when all were valid.
/// The same type derives the body's `ToSchema`, so the API description and the
/// parsing are one definition.
pub trait ReadFields: Sized {
    fn read(body: &mut JsonObject) -> Option<Self>;
}

/// A JSON object body parsed into `T`, or a 422 naming every invalid field.
#[derive(Debug)]
pub struct Fields<T>(pub T);

impl<S: Send + Sync, T: ReadFields> FromRequest<S> for Fields<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut body = JsonObject::from_request(req, state).await?;
        let value = T::read(&mut body);
        body.finish(value).map(Fields)
    }
}

/// Options that are all `Some` once every field read without error.
pub trait AllPresent {
    type Values;
    fn all_present(self) -> Option<Self::Values>;
}

impl<A> AllPresent for Option<A> {
    type Values = A;
    fn all_present(self) -> Option<A> {
        self
    }
}

impl<A, B> AllPresent for (Option<A>, Option<B>) {
    type Values = (A, B);
    fn all_present(self) -> Option<(A, B)> {
        Some((self.0?, self.1?))
    }
}

/// The identified caller of a request, by this replica's session strategy.
///
/// The credential comes from `Authorization: Bearer` or, for browsers, from the
/// `herd_access` cookie; a cookie-authenticated unsafe request must also pass the CSRF
/// check.
#[derive(Debug, Clone)]
pub struct Identity(pub Principal);

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (credential, via_cookie) = match bearer(parts) {
            Ok(Some(token)) => (token, false),
            Ok(None) => match cookies::cookie(&parts.headers, cookies::ACCESS) {
                Some(token) => {
                    // The origin first: a cross-site request learns nothing, not even
                    // whether its cookie is still good.
                    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
                        state.cookies().check_origin(&parts.headers)?;
                    }
                    (token, true)
                }
                None => return Err(state.reject(Rejection::Missing)),
            },
            Err(rejection) => return Err(state.reject(rejection)),
        };
        let principal = match state.auth.authenticate(credential).await {
            Ok(principal) => principal,
            Err(AuthnError::Rejected(rejection)) => return Err(state.reject(rejection)),
            Err(AuthnError::Unavailable(e)) => return Err(ApiError::unavailable(e)),
        };
        if via_cookie {
            // The token must be this session's: one read from another session (say, the
            // attacker's own login) does not pass.
            state
                .cookies()
                .check_csrf(&parts.method, &parts.headers, principal.session_id())?;
        }
        Ok(Identity(principal))
    }
}

/// The bearer token, `None` when there is no Authorization header at all.
fn bearer(parts: &Parts) -> Result<Option<&str>, Rejection> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    // The same answer as `HeaderValue::to_str` (hyper and h2 let no control byte into a
    // value, so ASCII is what it checks), a word at a time rather than a byte at a time
    // over a token of several hundred bytes.
    if !value.as_bytes().is_ascii() {
        return Err(Rejection::Malformed);
    }
    let value = std::str::from_utf8(value.as_bytes()).map_err(|_| Rejection::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Rejection::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Rejection::Missing);
    }
    Ok(Some(token))
}
