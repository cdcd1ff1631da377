//! Request-body parsing on arbitrary bytes: the JSON-object reader and each endpoint's
//! field-by-field reading must answer a value or a 4xx problem, never panic or a 500.

#![no_main]

use axum::response::IntoResponse as _;
use herd_server::account::{ChangePasswordRequest, DeleteAccountRequest};
use herd_server::auth::{LoginRequest, RefreshRequest, SignupRequest};
use herd_server::error::ApiError;
use herd_server::extract::{JsonObject, ReadFields as _};
use herd_server::rooms;
use libfuzzer_sys::fuzz_target;

/// Renders the problem as the server would, and requires it to be the client's fault.
fn refused(error: ApiError) {
    let response = error.into_response();
    assert!(
        response.status().is_client_error(),
        "a body gave {}",
        response.status()
    );
}

/// Reads `data` as one endpoint does; `read` returns the endpoint's verdict.
fn endpoint(data: &[u8], read: impl FnOnce(JsonObject) -> Result<(), ApiError>) {
    match JsonObject::from_bytes(data) {
        Ok(body) => {
            if let Err(e) = read(body) {
                refused(e);
            }
        }
        Err(e) => refused(e),
    }
}

fuzz_target!(|data: &[u8]| {
    let is_object = matches!(
        serde_json::from_slice::<serde_json::Value>(data),
        Ok(serde_json::Value::Object(_))
    );
    assert_eq!(
        JsonObject::from_bytes(data).is_ok(),
        is_object,
        "accepted exactly the JSON objects"
    );
    // POST /v1/auth/signup, /login and /refresh: their request types, as the handlers read them.
    endpoint(data, |mut b| {
        let request = SignupRequest::read(&mut b);
        b.finish(request).map(drop)
    });
    endpoint(data, |mut b| {
        let request = LoginRequest::read(&mut b);
        b.finish(request).map(drop)
    });
    endpoint(data, |mut b| {
        let request = RefreshRequest::read(&mut b);
        b.finish(request).map(drop)
    });
    // POST /v1/account/password and /delete
    endpoint(data, |mut b| {
        let request = ChangePasswordRequest::read(&mut b);
        b.finish(request).map(drop)
    });
    endpoint(data, |mut b| {
        let request = DeleteAccountRequest::read(&mut b);
        b.finish(request).map(drop)
    });
    // POST /v1/rooms
    endpoint(data, |b| rooms::CreateRoom::read(b).map(drop));
    // POST /v1/rooms/{id}/messages
    endpoint(data, |b| rooms::SendMessage::read(b).map(drop));
});
