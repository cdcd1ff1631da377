//! The signing-key ring: every key replicas share, and which of them signs now.
//!
//! A key's life: *pending* (published in JWKS, not signing yet, so that verifiers'
//! caches learn it first), *active* (the newest key whose `sign_from` has come: it signs),
//! *retiring* (superseded, still published until every token it signed has expired),
//! *retired* (gone from JWKS, deleted at the next rotation).

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use herd_store::SigningKeyRecord;
use serde::Serialize;

pub use herd_token::keys::SigningKey;
use herd_token::keys::VerifyingKeys;

/// A signing key as the store keeps it.
pub trait ToRecord {
    /// The record to store, signing from `sign_from`.
    fn to_record(&self, created_at: i64, sign_from: i64) -> SigningKeyRecord;
}

impl ToRecord for SigningKey {
    fn to_record(&self, created_at: i64, sign_from: i64) -> SigningKeyRecord {
        SigningKeyRecord {
            kid: self.kid().to_owned(),
            secret: self.key().to_bytes().to_vec(),
            public: self.key().verifying_key().to_bytes().to_vec(),
            created_at,
            sign_from,
        }
    }
}

/// Where a key is in its life at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Pending,
    Active,
    Retiring,
    Retired,
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        })
    }
}

/// A key's place in the ring, for `herd keys list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub state: KeyState,
    pub created_at: i64,
    pub sign_from: i64,
    /// When it stops being published; `None` while it signs or waits to.
    pub retire_at: Option<i64>,
}

/// Assigns each stored key its state at `now`. `retire_after` is how long a superseded
/// key must stay published: the access-token lifetime plus the verification leeway.
pub fn key_states(records: &[SigningKeyRecord], now: i64, retire_after: i64) -> Vec<KeyInfo> {
    let mut sorted: Vec<&SigningKeyRecord> = records.iter().collect();
    sorted.sort_by(|a, b| {
        (a.sign_from, a.created_at, &a.kid).cmp(&(b.sign_from, b.created_at, &b.kid))
    });
    let active = sorted.iter().rposition(|k| k.sign_from <= now);
    sorted
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let superseded_at = sorted.get(i + 1).map(|next| next.sign_from);
            let (state, retire_at) = match active {
                Some(a) if i == a => (KeyState::Active, None),
                Some(a) if i < a => {
                    // Keys older than the active one were superseded when their next key
                    // began signing; they stay until the last token they signed expires.
                    let retire_at = superseded_at.unwrap_or(now).saturating_add(retire_after);
                    let state = if now < retire_at {
                        KeyState::Retiring
                    } else {
                        KeyState::Retired
                    };
                    (state, Some(retire_at))
                }
                _ => (KeyState::Pending, None),
            };
            KeyInfo {
                kid: k.kid.clone(),
                state,
                created_at: k.created_at,
                sign_from: k.sign_from,
                retire_at,
            }
        })
        .collect()
}

/// An Ed25519 public key as a JWK needs it (RFC 8037): its id and its bytes, base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub x: String,
}

/// The keys one replica verifies with and signs with, built whole and swapped in whole.
#[derive(Debug, Default)]
pub struct KeyRing {
    /// Published keys (pending, active, retiring) with the time each may start signing.
    keys: Vec<(i64, Arc<SigningKey>)>,
    verifying: HashMap<String, VerifyingKey>,
    /// Counts the changes of the set of keys a replica has swapped in. A cached
    /// verification remembers the generation it was made under, and counts only while
    /// that generation is current: a key that left the ring takes its tokens with it,
    /// even one a verification in flight cached after the ring changed.
    generation: u64,
}

impl KeyRing {
    /// Builds the ring from stored records at `now`, leaving out retired keys and any
    /// record whose bytes are not a valid key.
    pub fn build(records: &[SigningKeyRecord], now: i64, retire_after: i64) -> KeyRing {
        let states = key_states(records, now, retire_after);
        let mut ring = KeyRing::default();
        for info in states.iter().filter(|i| i.state != KeyState::Retired) {
            let Some(record) = records.iter().find(|r| r.kid == info.kid) else {
                continue;
            };
            let Ok(secret) = <[u8; 32]>::try_from(record.secret.as_slice()) else {
                tracing::error!(kid = %record.kid, "stored signing key has the wrong length; skipped");
                continue;
            };
            let key = ed25519_dalek::SigningKey::from_bytes(&secret);
            ring.verifying
                .insert(record.kid.clone(), key.verifying_key());
            ring.keys.push((
                record.sign_from,
                Arc::new(SigningKey::from_parts(record.kid.clone(), key)),
            ));
        }
        ring
    }

    /// The key that signs at `now`: the newest whose `sign_from` has come.
    pub fn signer(&self, now: i64) -> Option<&Arc<SigningKey>> {
        self.keys
            .iter()
            .rev()
            .find(|(from, _)| *from <= now)
            .map(|(_, k)| k)
    }

    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// This ring, numbered `generation`.
    pub fn with_generation(mut self, generation: u64) -> KeyRing {
        self.generation = generation;
        self
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(_, k)| k.kid())
    }

    /// The published public keys, for a JWK Set (RFC 7517): the server writes them at
    /// `/.well-known/jwks.json`, knowing their JSON shape, not the keys.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys
            .iter()
            .map(|(_, k)| PublicKey {
                kid: k.kid().to_owned(),
                x: URL_SAFE_NO_PAD.encode(k.key().verifying_key().as_bytes()),
            })
            .collect()
    }
}

impl VerifyingKeys for KeyRing {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        KeyRing::verifying_key(self, kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kid: &str, sign_from: i64) -> SigningKeyRecord {
        let mut r = SigningKey::generate().to_record(sign_from, sign_from);
        r.kid = kid.to_owned();
        r
    }

    #[test]
    fn a_rotation_walks_keys_through_their_states() {
        let keys = [record("old", 0), record("new", 100)];
        let at = |now| {
            key_states(&keys, now, 50)
                .into_iter()
                .map(|k| k.state)
                .collect::<Vec<_>>()
        };
        use KeyState::*;
        assert_eq!(at(10), [Active, Pending]);
        assert_eq!(at(100), [Retiring, Active]);
        assert_eq!(at(149), [Retiring, Active]);
        assert_eq!(at(150), [Retired, Active]);
    }

    #[test]
    fn the_ring_signs_with_the_newest_started_key_and_verifies_all_published() {
        let keys = [record("old", 0), record("new", 100)];
        let ring = KeyRing::build(&keys, 10, 50);
        assert_eq!(ring.signer(10).map(|k| k.kid()), Some("old"));
        assert!(
            ring.verifying_key("new").is_some(),
            "a pending key is published"
        );
        let ring = KeyRing::build(&keys, 200, 50);
        assert_eq!(ring.signer(200).map(|k| k.kid()), Some("new"));
        assert!(ring.verifying_key("old").is_none(), "a retired key is not");
        assert_eq!(ring.public_keys().len(), 1);
    }
}
