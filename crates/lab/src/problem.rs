//! The answers the balancer gives itself, as RFC 9457 problem+json with herd's stable
//! `urn:herd:problem:` types.

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::balancer::ProxyBody;

pub(crate) fn problem(
    status: StatusCode,
    code: &str,
    detail: impl Into<String>,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "type": format!("urn:herd:problem:{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    respond(status, "application/problem+json", &body)
}

pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response<ProxyBody> {
    respond(status, "application/json", body)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: &impl Serialize,
) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(
        http_body_util::Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
