//! Discovery: the public keys (JWKS) and an OpenID-style configuration, so third-party
//! verifiers can check herd's tokens without herd's code.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use herd_identity::PublicKey;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
}

/// The published public keys (JWK Set), cacheable for half the key publish delay.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses((status = 200, description = "The key set.", body = JwkSet,
        headers(("Cache-Control" = String, description = "`public, max-age=N`.")))),
)]
async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    // Verifiers may cache the set for half the publish delay: a rotated-in key is then
    // in every cache before it signs anything.
    let max_age = state.auth.config().key_publish_delay.as_secs() / 2;
    let keys = state
        .auth
        .public_keys()
        .into_iter()
        .map(Jwk::from)
        .collect();
    (
        [(header::CACHE_CONTROL, format!("public, max-age={max_age}"))],
        Json(JwkSet { keys }),
    )
}

/// The public keys access tokens are signed with (RFC 7517).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// One Ed25519 public key (RFC 8037).
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    /// `OKP`.
    #[schema(value_type = String)]
    pub kty: &'static str,
    /// `Ed25519`.
    #[schema(value_type = String)]
    pub crv: &'static str,
    /// The public key, base64url.
    pub x: String,
    /// The key id tokens name in their header.
    pub kid: String,
    /// `sig`.
    #[serde(rename = "use")]
    #[schema(value_type = String)]
    pub use_: &'static str,
    /// `EdDSA`.
    #[schema(value_type = String)]
    pub alg: &'static str,
}

impl From<PublicKey> for Jwk {
    fn from(key: PublicKey) -> Jwk {
        Jwk {
            kty: "OKP",
            crv: "Ed25519",
            x: key.x,
            kid: key.kid,
            use_: "sig",
            alg: herd_identity::jwt::ALG,
        }
    }
}

/// Where verifiers find the keys and the token endpoint (OpenID Connect Discovery style).
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    pub token_endpoint: String,
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub grant_types_supported: Vec<&'static str>,
}

/// The discovery document.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, description = "Issuer, key set and token endpoint.",
        body = OpenIdConfiguration)),
)]
async fn openid_configuration(State(state): State<AppState>) -> Json<OpenIdConfiguration> {
    let issuer = state.auth.config().issuer.trim_end_matches('/');
    Json(OpenIdConfiguration {
        issuer: state.auth.config().issuer.clone(),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        token_endpoint: format!("{issuer}/v1/auth/login"),
        id_token_signing_alg_values_supported: vec![herd_identity::jwt::ALG],
        token_endpoint_auth_methods_supported: vec!["none"],
        grant_types_supported: vec!["password", "refresh_token"],
    })
}
