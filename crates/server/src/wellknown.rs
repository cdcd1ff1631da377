//! Discovery: the public keys (JWKS) and an OpenID-style configuration, so third-party
//! verifiers can check herd's tokens without herd's code.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    // Verifiers may cache the set for half the publish delay: a rotated-in key is then
    // in every cache before it signs anything.
    let max_age = (state.auth.config().key_publish_delay / 2).max(0);
    (
        [(header::CACHE_CONTROL, format!("public, max-age={max_age}"))],
        Json(state.auth.jwks()),
    )
}

async fn openid_configuration(State(state): State<AppState>) -> impl IntoResponse {
    let issuer = state.auth.config().issuer.trim_end_matches('/');
    Json(json!({
        "issuer": state.auth.config().issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/v1/auth/login"),
        "id_token_signing_alg_values_supported": [herd_identity::jwt::ALG],
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": ["password", "refresh_token"],
    }))
}
