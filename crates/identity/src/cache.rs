//! A replica-local cache of already-verified access tokens.
//!
//! Keyed by the SHA-256 of the token, so a hit means the very same bytes were verified
//! before. Claims are still checked for expiry and revocation on every use; only the
//! signature check is skipped. It is derived state: losing it costs one verification.
//! Each entry carries the key-ring generation it was verified under and misses once the
//! ring has changed, so a key removed from the ring (a revocation) cannot live on here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::jwt::AccessClaims;

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug)]
pub struct TokenCache {
    map: Mutex<HashMap<TokenDigest, (Arc<AccessClaims>, u64)>>,
    capacity: usize,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 turns caching off.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            map: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The claims of a token verified under key-ring `generation`, the current one.
    pub fn get(&self, key: &TokenDigest, generation: u64) -> Option<Arc<AccessClaims>> {
        if self.capacity == 0 {
            return None;
        }
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|(_, verified_under)| *verified_under == generation)
            .map(|(claims, _)| claims.clone())
    }

    /// Remembers a token verified under key-ring `generation`.
    pub fn insert(&self, key: TokenDigest, claims: Arc<AccessClaims>, generation: u64, now: i64) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            // Expired entries go first; if the cache is still full, every entry goes:
            // cheaper than tracking recency, and a miss only costs a verification.
            map.retain(|_, (c, _)| i64::try_from(c.exp).is_ok_and(|exp| exp > now));
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (claims, generation));
    }

    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
