//! Access tokens: JWTs per RFC 9068, signed with Ed25519, parsed strictly.
//!
//! herd verifies only the tokens it issues, so the parser accepts exactly their shape:
//! three canonical base64url segments, a header of `alg`, `typ` and `kid` and nothing
//! else (no `jku`, `x5u`, `jwk`, `x5c` or `crit` is ever honoured), integer times, no
//! duplicate members. Each way a token can fail has its own [`Rejection`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _};
use serde::{Deserialize, Serialize};

use crate::keyring::{KeyRing, SigningKey};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The only algorithm herd signs with or accepts.
pub const ALG: &str = "EdDSA";
/// The header type of an access token (RFC 9068).
pub const TYP: &str = "at+jwt";

/// The claims of a herd access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The login session: logout and revocation act on it.
    pub sid: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// So that `GET /v1/me` needs no lookup.
    pub preferred_username: String,
    /// The client the token was issued to, which RFC 9068 requires; herd's own API is
    /// its one client.
    pub client_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// Why a token was refused. Each is logged and counted under its [`reason`](Self::reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("no token was presented")]
    Missing,
    #[error("the token is longer than 8 KiB")]
    TooLarge,
    #[error("the token is not three dot-separated segments")]
    Malformed,
    #[error("a segment is not canonical base64url")]
    BadEncoding,
    #[error("the header is not a herd access-token header")]
    BadHeader,
    #[error("the algorithm is not EdDSA")]
    AlgNotAllowed,
    #[error("the header type is not at+jwt")]
    WrongType,
    #[error("the key id is not in the key ring")]
    UnknownKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the claims are missing, of the wrong type, or unexpected")]
    BadClaims,
    #[error("the issuer does not match")]
    WrongIssuer,
    #[error("the audience does not match")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token's session was revoked")]
    Revoked,
}

impl Rejection {
    pub const ALL: [Rejection; 16] = [
        Rejection::Missing,
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::BadEncoding,
        Rejection::BadHeader,
        Rejection::AlgNotAllowed,
        Rejection::WrongType,
        Rejection::UnknownKey,
        Rejection::BadSignature,
        Rejection::BadClaims,
        Rejection::WrongIssuer,
        Rejection::WrongAudience,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::IssuedInFuture,
        Rejection::Revoked,
    ];

    /// A stable, machine-readable name: a metrics label and a log field.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::BadEncoding => "bad_encoding",
            Rejection::BadHeader => "bad_header",
            Rejection::AlgNotAllowed => "alg_not_allowed",
            Rejection::WrongType => "wrong_type",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::BadClaims => "bad_claims",
            Rejection::WrongIssuer => "wrong_issuer",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::IssuedInFuture => "issued_in_future",
            Rejection::Revoked => "revoked",
        }
    }
}

/// What a token must match besides its signature.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: i64,
}

/// Signs `claims` with `key` into a compact JWT.
pub fn sign(claims: &AccessClaims, key: &SigningKey) -> String {
    let header = Header {
        alg: ALG.to_owned(),
        typ: Some(TYP.to_owned()),
        kid: Some(key.kid().to_owned()),
    };
    // Serialising these plain structs cannot fail: every field is a string or integer.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(header.len() * 2 + payload.len() * 2 + 90);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.key().sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
    token
}

/// Verifies `token` against `ring` and `expect` at time `now`. Revocation is the
/// caller's to check: it needs state this function does not hold.
pub fn verify(
    token: &str,
    ring: &KeyRing,
    expect: &Expectations,
    now: i64,
) -> Result<AccessClaims, Rejection> {
    if token.is_empty() {
        return Err(Rejection::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };

    let header = decode(header_b64)?;
    let header: Header = serde_json::from_slice(&header).map_err(|_| Rejection::BadHeader)?;
    if header.alg != ALG {
        return Err(Rejection::AlgNotAllowed);
    }
    // RFC 9068 allows the media type with or without its "application/" prefix, and
    // media types compare case-insensitively.
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(Rejection::WrongType);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| ring.verifying_key(kid))
        .ok_or(Rejection::UnknownKey)?;

    let signature = decode(signature_b64)?;
    let signature = Signature::from_slice(&signature).map_err(|_| Rejection::BadSignature)?;
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    key.verify_strict(signed.as_bytes(), &signature)
        .map_err(|_| Rejection::BadSignature)?;

    let payload = decode(payload_b64)?;
    let claims: AccessClaims =
        serde_json::from_slice(&payload).map_err(|_| Rejection::BadClaims)?;
    check_claims(&claims, expect, now)?;
    Ok(claims)
}

/// The time-dependent and audience checks, also run on a cached token at every use.
pub fn check_claims(
    claims: &AccessClaims,
    expect: &Expectations,
    now: i64,
) -> Result<(), Rejection> {
    if claims.iss != expect.issuer {
        return Err(Rejection::WrongIssuer);
    }
    if claims.aud != expect.audience {
        return Err(Rejection::WrongAudience);
    }
    let exp = seconds(claims.exp)?;
    let iat = seconds(claims.iat)?;
    if now > exp.saturating_add(expect.leeway) {
        return Err(Rejection::Expired);
    }
    if let Some(nbf) = claims.nbf {
        if seconds(nbf)? > now.saturating_add(expect.leeway) {
            return Err(Rejection::NotYetValid);
        }
    }
    if iat > now.saturating_add(expect.leeway) {
        return Err(Rejection::IssuedInFuture);
    }
    Ok(())
}

fn seconds(v: u64) -> Result<i64, Rejection> {
    i64::try_from(v).map_err(|_| Rejection::BadClaims)
}

/// Decodes one segment. The engine refuses padding and non-zero trailing bits, so a
/// token has exactly one accepted spelling.
fn decode(segment: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::BadEncoding)
}
