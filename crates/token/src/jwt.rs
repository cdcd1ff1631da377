//! Access tokens: JWTs per RFC 9068, signed with Ed25519, parsed strictly.
//!
//! herd verifies only the tokens it issues, so the parser accepts exactly their shape:
//! three canonical base64url segments, a header object of `alg`, `typ` and `kid` and
//! nothing else (no `jku`, `x5u`, `jwk`, `x5c` or `crit` is ever honoured), a claims
//! object with integer times, no duplicate members. Each way a token can fail has its
//! own [`Rejection`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys::{SigningKey, VerifyingKeys};

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
    /// Absent, or an integer: an explicit `null` is refused like any other non-integer.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_u64"
    )]
    pub nbf: Option<u64>,
    /// So that `GET /v1/me` needs no lookup.
    pub preferred_username: String,
    /// The client the token was issued to, which RFC 9068 requires; herd's own API is
    /// its one client.
    pub client_id: String,
    /// Where the token's bit is in herd's Token Status List, for verifiers that follow
    /// draft-ietf-oauth-status-list. herd itself never reads it: its own revocation set
    /// says the same sooner. Absent on tokens of sessions made before the list existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TokenStatus>,
}

/// The `status` claim (draft-ietf-oauth-status-list section 6.1). Members other than
/// `status_list`, which the draft lets other status mechanisms add, are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStatus {
    pub status_list: StatusListRef,
}

/// The token's index in the status list at `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListRef {
    pub idx: u64,
    pub uri: String,
}

fn some_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    u64::deserialize(d).map(Some)
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
    /// `exp - iat` is longer than this deployment ever issues: a forged token.
    #[error("the token lives longer than this issuer's access tokens do")]
    LifetimeTooLong,
    #[error("the token's session was revoked")]
    Revoked,
    /// For the stateful strategies: no such session, or it expired or was logged out.
    #[error("no such session: it expired, was logged out, or lived on another replica")]
    UnknownSession,
}

impl Rejection {
    pub const ALL: [Rejection; 18] = [
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
        Rejection::LifetimeTooLong,
        Rejection::Revoked,
        Rejection::UnknownSession,
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
            Rejection::LifetimeTooLong => "lifetime_too_long",
            Rejection::Revoked => "revoked",
            Rejection::UnknownSession => "unknown_session",
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
    /// The longest `exp - iat` accepted: the access TTL plus the leeway. A token signed
    /// with a leaked key could otherwise be made to live for years, outliving the key's
    /// revocation in any verifier that caches it.
    pub max_lifetime: i64,
}

/// Signs `claims` with `key` into a compact JWT.
pub fn sign(claims: &AccessClaims, key: &SigningKey) -> String {
    sign_compact(claims, TYP, key)
}

/// The header herd signs with: the fields [`Header`] reads, borrowed.
#[derive(Serialize)]
struct SignedHeader<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// Signs `claims` with `key` into a compact JWT whose header is `alg` EdDSA, `typ` and
/// the key's `kid`: every token herd signs (access tokens, the status list) is made here.
pub fn sign_compact(claims: &impl Serialize, typ: &str, key: &SigningKey) -> String {
    let header = SignedHeader {
        alg: ALG,
        typ,
        kid: key.kid(),
    };
    // Serialising the header cannot fail (every field is a string), nor can herd's claims
    // (plain structs of strings and integers).
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
    ring: &(impl VerifyingKeys + ?Sized),
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

    let header: Header = json_object(&decode(header_b64)?).ok_or(Rejection::BadHeader)?;
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
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    verify_signature(key, signed.as_bytes(), &signature)?;

    let claims: AccessClaims = json_object(&decode(payload_b64)?).ok_or(Rejection::BadClaims)?;
    check_claims(&claims, expect, now)?;
    Ok(claims)
}

/// The Ed25519 check every token goes through, shared with the Wycheproof test so that
/// what is tested is what runs.
///
/// `verify_strict` rather than `verify`: it also refuses public keys and `R` points of
/// small order and a non-canonical `R` encoding, so a signature cannot be made to verify
/// under several messages or keys (RFC 8032 section 5.1.7 leaves those to the
/// implementer). The scalar `s` must be reduced either way.
pub fn verify_signature(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Rejection> {
    let signature = Signature::from_slice(signature).map_err(|_| Rejection::BadSignature)?;
    key.verify_strict(message, &signature)
        .map_err(|_| Rejection::BadSignature)
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
    if exp.saturating_sub(iat) > expect.max_lifetime {
        return Err(Rejection::LifetimeTooLong);
    }
    Ok(())
}

fn seconds(v: u64) -> Result<i64, Rejection> {
    i64::try_from(v).map_err(|_| Rejection::BadClaims)
}

/// Parses a header or claims set, which must be a JSON object (RFC 7515 section 4, RFC
/// 7519 section 7.2). serde's derived deserializers also take an array of the fields in
/// order; that second spelling is refused here, before serde sees it.
fn json_object<T: serde::de::DeserializeOwned>(json: &[u8]) -> Option<T> {
    let first = json
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Decodes one segment. The engine refuses padding and non-zero trailing bits, so a
/// token has exactly one accepted spelling.
fn decode(segment: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::BadEncoding)
}

#[cfg(test)]
mod tests {
    //! Crafted tokens, one per way a token can be wrong, each expecting its own reason.

    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, Mac};
    use serde_json::{json, Value};
    use sha2::Sha256;

    use super::*;
    use crate::keys::KeySet;

    const NOW: i64 = 1_800_000_000;

    struct Fixture {
        key: SigningKey,
        ring: KeySet,
        expect: Expectations,
    }

    fn fixture() -> Fixture {
        let key = SigningKey::generate();
        let ring = KeySet::from_iter([&key]);
        Fixture {
            key,
            ring,
            expect: Expectations {
                issuer: "https://herd.test".into(),
                audience: "herd".into(),
                leeway: 5,
                max_lifetime: 305,
            },
        }
    }

    fn header(f: &Fixture) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": f.key.kid()})
    }

    fn claims() -> Value {
        json!({
            "iss": "https://herd.test", "aud": "herd", "sub": "u1", "sid": "s1", "jti": "j1",
            "iat": NOW - 10, "exp": NOW + 290, "preferred_username": "alice", "client_id": "herd",
        })
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs raw header and payload text with `key`, as an attacker holding it would.
    fn forge_raw(header: &str, payload: &str, key: &SigningKey) -> String {
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = key.key().sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&sig.to_bytes()))
    }

    fn forge(header: &Value, payload: &Value, key: &SigningKey) -> String {
        forge_raw(&header.to_string(), &payload.to_string(), key)
    }

    fn check(f: &Fixture, token: &str) -> Result<AccessClaims, Rejection> {
        verify(token, &f.ring, &f.expect, NOW)
    }

    #[test]
    fn a_token_herd_signed_verifies() {
        let f = fixture();
        let claims: AccessClaims = serde_json::from_value(claims()).expect("claims");
        let token = sign(&claims, &f.key);
        assert_eq!(check(&f, &token), Ok(claims));
        assert_eq!(
            check(&f, &forge(&header(&f), &self::claims(), &f.key)).map(|c| c.sub),
            Ok("u1".into())
        );
    }

    /// herd never reads `status` (its revocation set decides), so its inner members
    /// are taken as they come; the claim itself must still be an object.
    #[test]
    fn a_status_claim_is_accepted_and_ignored_by_herds_verifier() {
        let f = fixture();
        let mut c = claims();
        c["status"] = json!({"status_list": {"idx": 7, "uri": "https://herd.test/s"}, "x": 1});
        let got = check(&f, &forge(&header(&f), &c, &f.key)).expect("verifies");
        assert_eq!(got.status.map(|s| s.status_list.idx), Some(7));
        c["status"] = json!("revoked");
        assert_eq!(
            check(&f, &forge(&header(&f), &c, &f.key)),
            Err(Rejection::BadClaims)
        );
    }

    #[test]
    fn alg_none_in_any_case_is_refused() {
        let f = fixture();
        for alg in ["none", "None", "NONE"] {
            let mut h = header(&f);
            h["alg"] = json!(alg);
            let unsigned = format!(
                "{}.{}.",
                b64(h.to_string().as_bytes()),
                b64(claims().to_string().as_bytes())
            );
            assert_eq!(check(&f, &unsigned), Err(Rejection::AlgNotAllowed), "{alg}");
        }
    }

    #[test]
    fn hmac_signed_with_the_public_key_is_refused() {
        let f = fixture();
        let mut h = header(&f);
        h["alg"] = json!("HS256");
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let public = f.key.key().verifying_key().to_bytes();
        let mut mac = Hmac::<Sha256>::new_from_slice(&public).expect("key");
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(check(&f, &token), Err(Rejection::AlgNotAllowed));
    }

    #[test]
    fn other_asymmetric_algorithms_are_refused() {
        let f = fixture();
        for alg in ["ES256", "RS256", "PS256", "Ed25519", "eddsa"] {
            let mut h = header(&f);
            h["alg"] = json!(alg);
            assert_eq!(
                check(&f, &forge(&h, &claims(), &f.key)),
                Err(Rejection::AlgNotAllowed),
                "{alg}"
            );
        }
    }

    #[test]
    fn typ_must_be_at_jwt() {
        let f = fixture();
        for typ in [json!("JWT"), json!("refresh+jwt"), json!(null)] {
            let mut h = header(&f);
            h["typ"] = typ.clone();
            assert_eq!(
                check(&f, &forge(&h, &claims(), &f.key)),
                Err(Rejection::WrongType),
                "{typ}"
            );
        }
        let mut h = header(&f);
        h.as_object_mut().expect("object").remove("typ");
        assert_eq!(
            check(&f, &forge(&h, &claims(), &f.key)),
            Err(Rejection::WrongType)
        );
        h["typ"] = json!("application/AT+JWT");
        assert!(
            check(&f, &forge(&h, &claims(), &f.key)).is_ok(),
            "media types compare case-insensitively"
        );
    }

    #[test]
    fn kid_must_be_in_the_ring() {
        let f = fixture();
        for kid in [
            json!("nope"),
            json!("../../etc/passwd"),
            json!("' OR 1=1 --"),
            json!(null),
        ] {
            let mut h = header(&f);
            h["kid"] = kid.clone();
            assert_eq!(
                check(&f, &forge(&h, &claims(), &f.key)),
                Err(Rejection::UnknownKey),
                "{kid}"
            );
        }
    }

    #[test]
    fn key_carrying_and_critical_headers_are_refused() {
        let f = fixture();
        for (name, value) in [
            ("jku", json!("https://evil.example/jwks.json")),
            ("x5u", json!("https://evil.example/cert.pem")),
            ("jwk", json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})),
            ("x5c", json!(["MIIB"])),
            ("crit", json!(["exp"])),
        ] {
            let mut h = header(&f);
            h[name] = value;
            assert_eq!(
                check(&f, &forge(&h, &claims(), &f.key)),
                Err(Rejection::BadHeader),
                "{name}"
            );
        }
    }

    #[test]
    fn a_key_with_the_same_kid_but_other_bytes_does_not_verify() {
        let f = fixture();
        let impostor = SigningKey::generate();
        assert_eq!(
            check(&f, &forge(&header(&f), &claims(), &impostor)),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let f = fixture();
        let mut c = claims();
        c["iss"] = json!("https://other.test");
        assert_eq!(
            check(&f, &forge(&header(&f), &c, &f.key)),
            Err(Rejection::WrongIssuer)
        );
        let mut c = claims();
        c["aud"] = json!("someone-else");
        assert_eq!(
            check(&f, &forge(&header(&f), &c, &f.key)),
            Err(Rejection::WrongAudience)
        );
        let mut c = claims();
        c["aud"] = json!(["herd"]);
        assert_eq!(
            check(&f, &forge(&header(&f), &c, &f.key)),
            Err(Rejection::BadClaims),
            "aud is a string"
        );
    }

    #[test]
    fn times_are_checked_with_the_leeway() {
        let f = fixture();
        let at = |field: &str, value: i64| {
            let mut c = claims();
            c[field] = json!(value);
            check(&f, &forge(&header(&f), &c, &f.key)).map(|_| ())
        };
        assert_eq!(at("exp", NOW - 5), Ok(()), "inside the leeway");
        assert_eq!(at("exp", NOW - 6), Err(Rejection::Expired));
        assert_eq!(at("nbf", NOW + 5), Ok(()));
        assert_eq!(at("nbf", NOW + 6), Err(Rejection::NotYetValid));
        assert_eq!(at("iat", NOW + 5), Ok(()));
        assert_eq!(at("iat", NOW + 3600), Err(Rejection::IssuedInFuture));
        // iat is NOW - 10: a lifetime of 305 s (the TTL plus the leeway) passes, 306 not.
        assert_eq!(at("exp", NOW + 295), Ok(()));
        assert_eq!(at("exp", NOW + 296), Err(Rejection::LifetimeTooLong));
        assert_eq!(
            at("exp", NOW + 10 * 365 * 86_400),
            Err(Rejection::LifetimeTooLong),
            "a forged token cannot live for years"
        );
    }

    #[test]
    fn times_must_be_non_negative_integers() {
        let f = fixture();
        for field in ["exp", "iat", "nbf"] {
            for bad in [
                "\"1800000300\"",
                "1800000300.5",
                "-1",
                "1e400",
                "18446744073709551616",
                "null",
            ] {
                let payload =
                    claims()
                        .to_string()
                        .replacen('{', &format!("{{\"{field}\":{bad},"), 1);
                let payload = if field == "nbf" {
                    payload
                } else {
                    // Drop the original member so the only one left is the bad one.
                    let mut v: Value = claims();
                    v.as_object_mut().expect("object").remove(field);
                    v.to_string()
                        .replacen('{', &format!("{{\"{field}\":{bad},"), 1)
                };
                let token = forge_raw(&header(&f).to_string(), &payload, &f.key);
                assert_eq!(
                    check(&f, &token),
                    Err(Rejection::BadClaims),
                    "{field}={bad}"
                );
            }
        }
        let too_big = i64::MAX as u64 + 1;
        let mut c = claims();
        c["exp"] = json!(too_big);
        assert_eq!(
            check(&f, &forge(&header(&f), &c, &f.key)),
            Err(Rejection::BadClaims)
        );
    }

    #[test]
    fn required_claims_must_be_present() {
        let f = fixture();
        for field in ["iss", "aud", "sub", "sid", "jti", "iat", "exp", "client_id"] {
            let mut c = claims();
            c.as_object_mut().expect("object").remove(field);
            assert_eq!(
                check(&f, &forge(&header(&f), &c, &f.key)),
                Err(Rejection::BadClaims),
                "{field}"
            );
        }
    }

    #[test]
    fn duplicate_members_are_refused() {
        let f = fixture();
        let payload = claims().to_string().replacen('{', "{\"sub\":\"admin\",", 1);
        assert_eq!(
            check(&f, &forge_raw(&header(&f).to_string(), &payload, &f.key)),
            Err(Rejection::BadClaims)
        );
        let h = header(&f)
            .to_string()
            .replacen('{', "{\"alg\":\"none\",", 1);
        assert_eq!(
            check(&f, &forge_raw(&h, &claims().to_string(), &f.key)),
            Err(Rejection::BadHeader)
        );
    }

    #[test]
    fn only_canonical_unpadded_base64url_is_accepted() {
        let f = fixture();
        let token = forge(&header(&f), &claims(), &f.key);
        let (h, rest) = token.split_once('.').expect("dots");
        // Standard-alphabet padding.
        let padded = format!(
            "{}.{rest}",
            STANDARD.encode(URL_SAFE_NO_PAD.decode(h).expect("b64"))
        );
        assert_ne!(padded, token);
        assert_eq!(check(&f, &padded), Err(Rejection::BadEncoding));
        // A signature of 64 bytes has 2 spare bits in its last character; setting them
        // spells the same bytes differently.
        let last = token.chars().last().expect("char");
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.find(last).expect("in alphabet");
        let sloppy = alphabet.as_bytes()[idx | 1] as char;
        let non_canonical = format!("{}{sloppy}", &token[..token.len() - 1]);
        if sloppy != last {
            assert_eq!(check(&f, &non_canonical), Err(Rejection::BadEncoding));
        }
    }

    #[test]
    fn the_shape_must_be_three_segments_under_8_kib() {
        let f = fixture();
        let token = forge(&header(&f), &claims(), &f.key);
        assert_eq!(
            check(&f, &format!("{token}.extra")),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            check(&f, token.rsplit_once('.').expect("dots").0),
            Err(Rejection::Malformed)
        );
        assert_eq!(check(&f, "a"), Err(Rejection::Malformed));
        assert_eq!(check(&f, ""), Err(Rejection::Missing));
        let mut big = claims();
        big["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
        assert_eq!(
            check(&f, &forge(&header(&f), &big, &f.key)),
            Err(Rejection::TooLarge)
        );
        // A JWT nested as the payload of another is still just bad claims.
        let nested = forge_raw(&header(&f).to_string(), &format!("\"{token}\""), &f.key);
        assert_eq!(check(&f, &nested), Err(Rejection::BadClaims));
    }

    #[test]
    fn a_truncated_empty_or_tampered_signature_is_refused() {
        let f = fixture();
        let token = forge(&header(&f), &claims(), &f.key);
        let (input, sig) = token.rsplit_once('.').expect("dots");
        assert_eq!(
            check(&f, &format!("{input}.")),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(&f, &format!("{input}.{}", &sig[..40])),
            Err(Rejection::BadSignature)
        );
        let mut c = claims();
        c["sub"] = json!("admin");
        let (_, tampered_payload) = forge(&header(&f), &c, &f.key)
            .split_once('.')
            .map(|(h, r)| (h.to_owned(), r.split_once('.').expect("dots").0.to_owned()))
            .expect("dots");
        let (h, _) = input.split_once('.').expect("dot");
        assert_eq!(
            check(&f, &format!("{h}.{tampered_payload}.{sig}")),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn a_retired_key_no_longer_verifies() {
        let f = fixture();
        let token = forge(&header(&f), &claims(), &f.key);
        let next = SigningKey::generate();
        let ring = KeySet::from_iter([&next]);
        assert_eq!(
            verify(&token, &ring, &f.expect, NOW),
            Err(Rejection::UnknownKey)
        );
    }

    /// serde derives a struct's deserializer from a JSON array too, in field order, so
    /// a header `["EdDSA","at+jwt",kid]` and claims spelled as an array were accepted,
    /// where RFC 7515 and RFC 7519 require JSON objects.
    #[test]
    fn a_header_or_claims_spelled_as_a_json_array_is_refused() {
        let f = fixture();
        let header_array = json!(["EdDSA", "at+jwt", f.key.kid()]).to_string();
        assert_eq!(
            check(&f, &forge_raw(&header_array, &claims().to_string(), &f.key)),
            Err(Rejection::BadHeader)
        );
        let c = claims();
        let claims_array = json!([
            c["iss"],
            c["aud"],
            c["sub"],
            c["sid"],
            c["jti"],
            c["iat"],
            c["exp"],
            null,
            c["preferred_username"],
            c["client_id"]
        ])
        .to_string();
        assert_eq!(
            check(
                &f,
                &forge_raw(&header(&f).to_string(), &claims_array, &f.key)
            ),
            Err(Rejection::BadClaims)
        );
    }

    #[test]
    fn every_reason_is_distinct() {
        let reasons: std::collections::HashSet<_> =
            Rejection::ALL.iter().map(Rejection::reason).collect();
        assert_eq!(reasons.len(), Rejection::ALL.len());
    }
}
