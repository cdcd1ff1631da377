//! The two ways a service puts the verifier in front of its handlers: the [`Verified`]
//! extractor on a handler, or the [`VerifyLayer`] around a whole router (whose handlers
//! then take `Verified` from the request, verified once).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::{AccessClaims, Rejection, Verifier};

/// The claims of a verified herd access token. As an extractor it answers 401 (with
/// `WWW-Authenticate: Bearer error="invalid_token"`) when the request's bearer token is
/// missing, invalid, expired or revoked.
#[derive(Debug, Clone)]
pub struct Verified(pub Arc<AccessClaims>);

/// Why a request was refused: a 401 in problem+json.
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub Rejection);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": self.0.to_string(),
            "reason": self.0.reason(),
        });
        let challenge = if self.0 == Rejection::Missing {
            "Bearer".to_owned()
        } else {
            format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.0.reason()
            )
        };
        let mut response = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim())
        })
        .unwrap_or("")
}

impl<S> FromRequestParts<S> for Verified
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(verified) = parts.extensions.get::<Verified>() {
            return Ok(verified.clone());
        }
        let verifier = Verifier::from_ref(state);
        verifier
            .verify(bearer(&parts.headers))
            .await
            .map(Verified)
            .map_err(Refused)
    }
}

/// A tower layer that refuses every request without a valid, unrevoked herd token, and
/// hands the claims to the handlers as the [`Verified`] request extension.
#[derive(Debug, Clone)]
pub struct VerifyLayer {
    verifier: Verifier,
}

impl VerifyLayer {
    pub fn new(verifier: Verifier) -> VerifyLayer {
        VerifyLayer { verifier }
    }
}

impl<S> tower::Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> VerifyService<S> {
        VerifyService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`VerifyLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct VerifyService<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, B> tower::Service<Request<B>> for VerifyService<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            match verifier.verify(bearer(request.headers())).await {
                Ok(claims) => {
                    request.extensions_mut().insert(Verified(claims));
                    inner.call(request).await
                }
                Err(rejection) => Ok(Refused(rejection).into_response()),
            }
        })
    }
}
