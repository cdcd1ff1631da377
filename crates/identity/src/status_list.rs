//! herd's Token Status List (draft-ietf-oauth-status-list): one bit per token session,
//! set while the session is revoked and any of its access tokens can still pass, served
//! as a signed JWT so that any verifier implementing the draft checks herd's tokens with
//! no herd-specific code and no call per request.
//!
//! Each access token names its bit in its `status` claim (`{"status_list": {"idx",
//! "uri"}}`); the index is the session's, handed out by the store at login (see
//! `Store::create_session`). The list is as long as the most sessions that held an
//! index at once: a pruned session's index is handed to a new session once every list
//! that could show its bit set has expired, [`reuse_margin`] after its last token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keyring::SigningKey;

/// The header type of a status list token.
pub const TYP: &str = "statuslist+jwt";
/// The media type it is served as.
pub const MEDIA_TYPE: &str = "application/statuslist+jwt";
/// Where the list is served, under the issuer.
pub const PATH: &str = "/v1/auth/status-list";

/// The claims of a status list token (draft section 5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListClaims {
    pub iss: String,
    /// The list's URI: what the tokens' `status.status_list.uri` names.
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    /// Seconds a verifier may keep the list before fetching it again.
    pub ttl: u64,
    pub status_list: StatusList,
}

/// The list itself (draft section 4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusList {
    /// Bits per token: always 1 (0 valid, 1 invalid).
    pub bits: u8,
    /// The byte array, ZLIB-wrapped DEFLATE (RFC 1950, 1951), base64url without padding.
    pub lst: String,
}

/// How long after a freed index's last token stops passing it may be handed out again:
/// a list built while the bit was set lives until its `exp`, `ttl` after it was built,
/// and a verifier may honour it up to its own clock leeway past that. Reused sooner, the
/// new session's tokens would read as revoked in such a list.
pub fn reuse_margin(ttl: i64, leeway: i64) -> i64 {
    ttl + leeway
}

/// The byte array of a list of `len` one-bit statuses with the indices in `set` at 1:
/// status `i` is bit `i % 8` of byte `i / 8`, counted from the least significant bit
/// (draft section 4.1). At least one byte, so that an empty list still decodes.
/// Indices at or past `len`, or negative, are ignored.
pub fn pack(len: u64, set: &[i64]) -> Vec<u8> {
    let bytes = usize::try_from(len.div_ceil(8))
        .unwrap_or(usize::MAX)
        .max(1);
    let mut out = vec![0u8; bytes];
    for &idx in set {
        let Ok(i) = u64::try_from(idx) else { continue };
        if i >= len {
            continue;
        }
        if let Some(byte) = usize::try_from(i / 8).ok().and_then(|b| out.get_mut(b)) {
            *byte |= 1 << (i % 8);
        }
    }
    out
}

/// `bytes` compressed with DEFLATE in the ZLIB format, at the best compression (the
/// list is built once per revocation change and fetched by every verifier), base64url.
pub fn encode(bytes: &[u8]) -> String {
    use std::io::Write as _;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(bytes);
    URL_SAFE_NO_PAD.encode(z.finish().unwrap_or_default())
}

/// The byte array `lst` encodes, or `None` when it is not base64url-wrapped ZLIB of at
/// most `limit` bytes: what a verifier does with a fetched list.
pub fn decode(lst: &str, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let compressed = URL_SAFE_NO_PAD.decode(lst).ok()?;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(limit + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= limit).then_some(out)
}

/// Status `idx` in a one-bit byte array: `Some(true)` when set (the token is invalid),
/// `None` when the list is shorter than the index.
pub fn is_set(bytes: &[u8], idx: u64) -> Option<bool> {
    let byte = bytes.get(usize::try_from(idx / 8).ok()?)?;
    Some(byte & (1 << (idx % 8)) != 0)
}

/// Signs `claims` with `key` into a status list token (typ `statuslist+jwt`).
pub fn sign(claims: &StatusListClaims, key: &SigningKey) -> String {
    crate::jwt::sign_compact(claims, TYP, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draft's one-bit example (section 4.1): sixteen statuses, set at these
    /// indices, are the bytes `B9 A3`, encoded as `eNrbuRgAAhcBXQ`.
    const DRAFT_SET: [i64; 9] = [0, 3, 4, 5, 7, 8, 9, 13, 15];
    const DRAFT_LST: &str = "eNrbuRgAAhcBXQ";

    #[test]
    fn the_drafts_one_bit_example_packs_and_encodes_as_the_draft_says() {
        let bytes = pack(16, &DRAFT_SET);
        assert_eq!(bytes, [0xB9, 0xA3]);
        assert_eq!(encode(&bytes), DRAFT_LST);
        assert_eq!(decode(DRAFT_LST, 2), Some(bytes));
    }

    #[test]
    fn each_index_reads_back_as_it_was_set() {
        let bytes = decode(DRAFT_LST, 16).expect("the draft's list decodes");
        for idx in 0..16 {
            assert_eq!(
                is_set(&bytes, idx),
                Some(DRAFT_SET.contains(&(idx as i64))),
                "{idx}"
            );
        }
        assert_eq!(is_set(&bytes, 16), None, "past the end");
    }

    #[test]
    fn indices_outside_the_list_are_ignored_and_an_empty_list_is_one_byte() {
        assert_eq!(pack(0, &[]), [0]);
        assert_eq!(pack(9, &[-1, 9, 100, 8]), [0, 1]);
    }

    #[test]
    fn a_list_larger_than_the_limit_is_refused() {
        let big = encode(&vec![0u8; 1000]);
        assert!(decode(&big, 1000).is_some());
        assert_eq!(decode(&big, 999), None);
        assert_eq!(decode("not base64!", 10), None);
        assert_eq!(decode("AAAA", 10), None, "not zlib");
    }
}
