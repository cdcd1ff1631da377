//! Keys as the token format needs them: a private key with its id, and the lookup of a
//! public key by id that the verifier makes.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

/// What the verifier asks of a set of keys: the public key named `kid`, if it is one the
/// caller trusts now. herd's key ring and a verifier's JWKS cache both answer it.
pub trait VerifyingKeys {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey>;
}

/// Public keys by id: what a JWK Set (RFC 7517) of Ed25519 keys amounts to.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    pub fn insert(&mut self, kid: impl Into<String>, key: VerifyingKey) {
        self.keys.insert(kid.into(), key);
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn remove(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }
}

impl<'a> FromIterator<&'a SigningKey> for KeySet {
    fn from_iter<I: IntoIterator<Item = &'a SigningKey>>(iter: I) -> KeySet {
        let mut set = KeySet::default();
        for key in iter {
            set.insert(key.kid(), key.key().verifying_key());
        }
        set
    }
}

impl VerifyingKeys for KeySet {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }
}

/// A private key with its id.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's generator. Its id is its RFC 7638 JWK
    /// thumbprint, so the id says which key it is to anyone holding the public half.
    pub fn generate() -> SigningKey {
        let mut secret = [0u8; 32];
        // Failing to get randomness leaves nothing safe to do.
        #[allow(clippy::expect_used)]
        getrandom::getrandom(&mut secret).expect("the operating system's random generator failed");
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        SigningKey {
            kid: thumbprint(&key.verifying_key()),
            key,
        }
    }

    /// A key stored under `kid`.
    pub fn from_parts(kid: String, key: ed25519_dalek::SigningKey) -> SigningKey {
        SigningKey { kid, key }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn key(&self) -> &ed25519_dalek::SigningKey {
        &self.key
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key: herd's key ids.
pub fn thumbprint(key: &VerifyingKey) -> String {
    // Members in lexicographic order with no white space, as RFC 7638 requires.
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_the_jwk_thumbprint() {
        // RFC 8037 appendix A.3 gives this thumbprint for its example key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("b64");
        let key = VerifyingKey::from_bytes(&x.try_into().expect("32 bytes")).expect("key");
        assert_eq!(
            thumbprint(&key),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
