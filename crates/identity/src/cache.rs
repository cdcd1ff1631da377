//! A replica-local cache of already-verified access tokens.
//!
//! An entry holds the whole token it was verified for, and a lookup hits only when the
//! presented token is the very same bytes. Claims are still checked for expiry and
//! revocation on every use; only the signature check is skipped. It is derived state:
//! losing it costs one verification. Each entry carries the key-ring generation it was
//! verified under and misses once the ring has changed, so a key removed from the ring
//! (a revocation) cannot live on here.
//!
//! Entries are found by a keyed hash (SipHash with this process's random key) of the
//! token's last segment, its signature, rather than by a SHA-256 of the whole token,
//! which was 2.5 % of a replica's CPU on `GET /v1/me` (docs/benchmarks.md). The hash
//! only finds the slot; the full comparison decides. Two tokens whose hashes collide
//! (by chance, or forged to share a signature) take one slot: the later verified one
//! replaces the earlier, which then costs a verification, never a wrong hit. Only
//! verified tokens are inserted, so a stranger cannot fill a slot.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use crate::jwt::AccessClaims;

#[derive(Debug)]
struct Entry {
    token: Box<str>,
    claims: Arc<AccessClaims>,
    generation: u64,
}

#[derive(Debug)]
pub struct TokenCache {
    map: Mutex<HashMap<u64, Entry, BuildHasherDefault<Prehashed>>>,
    keys: RandomState,
    capacity: usize,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 turns caching off.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            map: Mutex::new(HashMap::default()),
            keys: RandomState::new(),
            capacity,
        }
    }

    fn slot(&self, token: &str) -> u64 {
        let signature = token.rsplit_once('.').map_or(token, |(_, s)| s);
        self.keys.hash_one(signature)
    }

    /// The claims of `token` if it was verified under key-ring `generation`, the
    /// current one.
    pub fn get(&self, token: &str, generation: u64) -> Option<Arc<AccessClaims>> {
        if self.capacity == 0 {
            return None;
        }
        let slot = self.slot(token);
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .filter(|e| e.generation == generation && *e.token == *token)
            .map(|e| e.claims.clone())
    }

    /// Remembers `token`, verified under key-ring `generation`.
    pub fn insert(&self, token: &str, claims: Arc<AccessClaims>, generation: u64, now: i64) {
        if self.capacity == 0 {
            return;
        }
        let slot = self.slot(token);
        let entry = Entry {
            token: token.into(),
            claims,
            generation,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            // Expired entries go first; if the cache is still full, every entry goes:
            // cheaper than tracking recency, and a miss only costs a verification.
            map.retain(|_, e| i64::try_from(e.claims.exp).is_ok_and(|exp| exp > now));
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(slot, entry);
    }

    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The map's own hasher: its keys are already keyed hashes, so it passes them through.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called, for the u64 keys; fold anything else in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "http://herd.test".into(),
            aud: "herd".into(),
            sub: "u".into(),
            sid: "s".into(),
            jti: "j".into(),
            iat: 0,
            exp,
            nbf: None,
            preferred_username: "alice".into(),
            client_id: "herd".into(),
            status: None,
        })
    }

    #[test]
    fn only_the_very_same_token_hits() {
        let cache = TokenCache::new(10);
        cache.insert("head.body.sig", claims(100), 1, 0);
        assert!(cache.get("head.body.sig", 1).is_some());
        // The same signature under another payload finds the slot, and misses.
        assert!(cache.get("head.forged.sig", 1).is_none());
        assert!(
            cache.get("head.body.sig", 2).is_none(),
            "another ring generation"
        );
    }

    #[test]
    fn a_token_sharing_a_slot_replaces_the_earlier_one() {
        let cache = TokenCache::new(10);
        cache.insert("a.b.sig", claims(100), 1, 0);
        cache.insert("a.c.sig", claims(200), 1, 0);
        assert!(cache.get("a.b.sig", 1).is_none());
        assert_eq!(cache.get("a.c.sig", 1).map(|c| c.exp), Some(200));
    }
}
