//! The access-token verifier on arbitrary text: it must refuse or accept, never panic,
//! and what it accepts must meet every expectation.
//!
//! Each input is verified twice: as it is, which exercises everything up to the
//! signature check, and re-signed with the ring's key, so that the fuzzer also reaches
//! the claims parser, which no forged signature could get to.

#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use herd_identity::jwt::{self, Expectations, MAX_TOKEN_BYTES};
use herd_identity::keyring::KeyRing;
use herd_store::SigningKeyRecord;
use libfuzzer_sys::fuzz_target;

/// The time the corpus's tokens are valid at.
const NOW: i64 = 1_800_000_000;
/// The fuzz key: its secret is fixed so that the committed corpus holds tokens it signed.
const SECRET: [u8; 32] = [42; 32];
const KID: &str = "fuzz-key";

struct Fixture {
    key: ed25519_dalek::SigningKey,
    ring: KeyRing,
    expect: Expectations,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = ed25519_dalek::SigningKey::from_bytes(&SECRET);
    let record = SigningKeyRecord {
        kid: KID.to_owned(),
        secret: SECRET.to_vec(),
        public: key.verifying_key().to_bytes().to_vec(),
        created_at: 0,
        sign_from: 0,
    };
    Fixture {
        ring: KeyRing::build(&[record], NOW, 305),
        key,
        expect: Expectations {
            issuer: "https://herd.test".into(),
            audience: "herd".into(),
            leeway: 5,
            max_lifetime: 3600,
        },
    }
});

fn check(token: &str) {
    let f = &*FIXTURE;
    if let Ok(claims) = jwt::verify(token, &f.ring, &f.expect, NOW) {
        assert!(token.len() <= MAX_TOKEN_BYTES, "an oversized token passed");
        for segment in token.split('.').take(2) {
            let json = URL_SAFE_NO_PAD
                .decode(segment)
                .expect("a passed segment decodes");
            let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
            assert!(
                value.is_object(),
                "a header or claims set that is not an object passed"
            );
        }
        assert_eq!(
            token.split('.').count(),
            3,
            "a token of another shape passed"
        );
        assert_eq!(claims.iss, f.expect.issuer);
        assert_eq!(claims.aud, f.expect.audience);
        let exp = i64::try_from(claims.exp).expect("exp fits");
        assert!(NOW <= exp + f.expect.leeway, "an expired token passed");
        let iat = i64::try_from(claims.iat).expect("iat fits");
        assert!(iat <= NOW + f.expect.leeway, "a future token passed");
        assert!(
            exp.saturating_sub(iat) <= f.expect.max_lifetime,
            "a token living longer than the access TTL passed"
        );
        if let Some(nbf) = claims.nbf {
            let nbf = i64::try_from(nbf).expect("nbf fits");
            assert!(nbf <= NOW + f.expect.leeway, "a not-yet-valid token passed");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    if let Some((input, _)) = text.rsplit_once('.') {
        let signature = FIXTURE.key.sign(input.as_bytes());
        check(&format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ));
    }
});
