//! Discovery: the public keys (JWKS) and the authorization server metadata (RFC 8414,
//! also served at the OpenID configuration path where JWKS-discovering libraries look),
//! so third-party verifiers and OAuth clients use herd without herd's code.

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
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server),
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

/// Authorization server metadata (RFC 8414): only what is true of herd. It issues no ID
/// token and has no authorization endpoint, so it publishes none of OpenID Connect's
/// provider fields; `response_types_supported`, which RFC 8414 requires, is empty
/// because there is no authorization endpoint to take a response type.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub issuer: String,
    pub jwks_uri: String,
    /// `POST /oauth/token`: the `refresh_token` grant, form-encoded (RFC 6749 section 6).
    pub token_endpoint: String,
    /// `POST /oauth/revoke` (RFC 7009): the standard spelling of logout.
    pub revocation_endpoint: String,
    /// `refresh_token` only: the password grant is not offered (RFC 9700 section 2.4).
    pub grant_types_supported: Vec<&'static str>,
    /// Empty: herd has no authorization endpoint.
    pub response_types_supported: Vec<&'static str>,
    /// `none`: herd's one client is public.
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub revocation_endpoint_auth_methods_supported: Vec<&'static str>,
}

impl ServerMetadata {
    fn of(state: &AppState) -> ServerMetadata {
        let config = state.auth.config();
        let base = config.issuer.trim_end_matches('/');
        ServerMetadata {
            issuer: config.issuer.clone(),
            jwks_uri: format!("{base}/.well-known/jwks.json"),
            token_endpoint: format!("{base}/oauth/token"),
            revocation_endpoint: format!("{base}/oauth/revoke"),
            grant_types_supported: vec!["refresh_token"],
            response_types_supported: vec![],
            token_endpoint_auth_methods_supported: vec!["none"],
            revocation_endpoint_auth_methods_supported: vec!["none"],
        }
    }
}

/// The authorization server metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    responses((status = 200, description = "Issuer, key set, token and revocation endpoints.",
        body = ServerMetadata)),
)]
async fn authorization_server(State(state): State<AppState>) -> Json<ServerMetadata> {
    Json(ServerMetadata::of(&state))
}

/// The same metadata where JWKS-discovering libraries look for `issuer` and `jwks_uri`
/// (jwt-authorizer reads only this path). herd is not an OpenID Provider: the document
/// has none of the provider fields OpenID Connect Discovery requires, only true ones.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, description = "The RFC 8414 metadata, for libraries that look \
        here for `issuer` and `jwks_uri`.", body = ServerMetadata)),
)]
async fn openid_configuration(State(state): State<AppState>) -> Json<ServerMetadata> {
    Json(ServerMetadata::of(&state))
}
