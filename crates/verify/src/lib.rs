//! herd-verify: what a Rust HTTP service adds to accept herd's access tokens with no
//! call to herd per request.
//!
//! A [`Verifier`] holds herd's public keys (its JWKS, fetched at start, refetched when a
//! token names a key it does not know, at most once per
//! [`Config::unknown_kid_refetch`], and kept whenever herd cannot be reached) and the
//! revocations herd has published on its feed. A token is checked by herd's own strict
//! verifier (`herd_token::jwt::verify`, the code herd runs, not a copy), then against
//! the revoked sessions. Nothing in that path does I/O but the rate-limited refetch.
//!
//! The feed is followed by a background task: it catches up with the paged
//! `GET /v1/revocations` from its cursor (from scratch on a 410), then follows
//! `GET /v1/revocations/stream` with `Last-Event-ID`, and starts over whenever the
//! stream ends or herd is unreachable, so a revocation made meanwhile is read on
//! return. Revocations are forgotten once every token they refuse has expired.
//!
//! Layout:
//! - `lib.rs`: [`Config`] and [`Verifier`].
//! - `feed.rs`: the task that follows the revocation feed.
//! - `http.rs`: [`Verified`], the axum extractor, and [`VerifyLayer`], the tower layer.

mod feed;
mod http;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use herd_token::{jwt, KeySet};
pub use herd_token::{AccessClaims, Expectations, Rejection};
use serde::Deserialize;
use tokio::task::AbortHandle;

pub use crate::http::{Verified, VerifyLayer, VerifyService};

/// Where herd is and what its tokens must say.
#[derive(Debug, Clone)]
pub struct Config {
    /// herd's base URL, where `/.well-known/jwks.json` and `/v1/revocations` are.
    pub herd_url: String,
    /// The expected `iss`, `aud`, clock leeway and longest lifetime (herd's access TTL
    /// plus the leeway).
    pub expect: Expectations,
    /// The least time between two JWKS fetches made because a token named an unknown
    /// key: a stream of forged `kid`s cannot make the service hammer herd.
    pub unknown_kid_refetch: Duration,
    /// How often the JWKS is fetched again anyway (herd publishes a new key before it
    /// signs with it, so this only needs to be shorter than herd's publish delay).
    pub jwks_refresh: Duration,
    /// The longest wait between two attempts to reach the feed while herd is away.
    pub retry_max: Duration,
}

impl Config {
    /// herd's defaults: audience `herd`, a 5 s leeway and 5 min access tokens.
    pub fn new(herd_url: impl Into<String>, issuer: impl Into<String>) -> Config {
        Config {
            herd_url: herd_url.into().trim_end_matches('/').to_owned(),
            expect: Expectations {
                issuer: issuer.into(),
                audience: "herd".into(),
                leeway: 5,
                max_lifetime: 305,
            },
            unknown_kid_refetch: Duration::from_secs(10),
            jwks_refresh: Duration::from_secs(60),
            retry_max: Duration::from_millis(500),
        }
    }
}

/// Accepts herd's access tokens offline. Cheap to clone; the background task stops when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Verifier {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What the verifier and its background task share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Keys the feed said were withdrawn: never taken back from a JWKS fetched later.
    revoked_keys: RwLock<HashMap<String, i64>>,
    /// Session id -> the last second a token of it could pass anyway.
    revoked_sessions: RwLock<HashMap<String, i64>>,
    last_refetch: Mutex<Option<Instant>>,
    /// True while the feed's stream is open and has caught up.
    pub(crate) following: AtomicBool,
}

/// The JWK Set as herd writes it; keys of another type are skipped.
#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Debug, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: String,
    #[serde(default)]
    x: String,
    #[serde(default)]
    kid: String,
}

impl Verifier {
    /// Starts following herd at `config.herd_url`: fetches the JWKS and the revocations
    /// in the background (call [`Verifier::until_following`] to wait for both). Must be
    /// called inside a tokio runtime.
    pub fn start(config: Config) -> Verifier {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            config,
            client,
            keys: RwLock::new(Arc::new(KeySet::default())),
            revoked_keys: RwLock::default(),
            revoked_sessions: RwLock::default(),
            last_refetch: Mutex::new(None),
            following: AtomicBool::new(false),
        });
        let feed = tokio::spawn(feed::follow(shared.clone())).abort_handle();
        let jwks = tokio::spawn(refresh_jwks(shared.clone())).abort_handle();
        Verifier {
            handle: Arc::new(Handle {
                shared,
                tasks: vec![feed, jwks],
            }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Verifies `token`: herd's strict checks, then the revocations heard of. A token
    /// naming an unknown key refetches the JWKS first when the rate limit allows.
    pub async fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, Rejection> {
        match self.verify_now(token) {
            Err(Rejection::UnknownKey) if self.shared().may_refetch() => {
                if let Err(e) = self.shared().fetch_jwks().await {
                    tracing::warn!(error = %e, "could not fetch herd's JWKS for an unknown kid");
                }
                self.verify_now(token)
            }
            result => result,
        }
    }

    /// Verifies with what is held now, with no I/O.
    pub fn verify_now(&self, token: &str) -> Result<Arc<AccessClaims>, Rejection> {
        let shared = self.shared();
        let keys = shared
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let claims = jwt::verify(token, keys.as_ref(), &shared.config.expect, now())?;
        let revoked = shared
            .revoked_sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&claims.sid);
        if revoked {
            return Err(Rejection::Revoked);
        }
        Ok(Arc::new(claims))
    }

    /// Whether the feed's stream is open and caught up: revocations arrive as herd makes
    /// them. While false (herd unreachable), tokens are still verified with what is held.
    pub fn is_following(&self) -> bool {
        self.shared().following.load(Ordering::SeqCst)
    }

    /// Waits until the keys are fetched and the feed has caught up, or `deadline` passes;
    /// returns whether it got there.
    pub async fn until_following(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if self.is_following() && self.key_count() > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// How many keys are held.
    pub fn key_count(&self) -> usize {
        self.shared()
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// How many revoked sessions are held.
    pub fn revoked_sessions(&self) -> usize {
        self.shared()
            .revoked_sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Shared {
    fn may_refetch(&self) -> bool {
        let mut last = self.last_refetch.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= self.config.unknown_kid_refetch);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Fetches the JWKS and swaps it in; on any failure the keys held are kept.
    pub(crate) async fn fetch_jwks(&self) -> Result<(), reqwest::Error> {
        let url = format!("{}/.well-known/jwks.json", self.config.herd_url);
        let set: JwkSet = self
            .client
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let revoked = self.revoked_keys.read().unwrap_or_else(|e| e.into_inner());
        let mut keys = KeySet::default();
        for jwk in set.keys {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" || revoked.contains_key(&jwk.kid) {
                continue;
            }
            let key = URL_SAFE_NO_PAD
                .decode(&jwk.x)
                .ok()
                .and_then(|x| <[u8; 32]>::try_from(x).ok())
                .and_then(|x| VerifyingKey::from_bytes(&x).ok());
            match key {
                Some(key) => keys.insert(jwk.kid, key),
                None => tracing::warn!(kid = %jwk.kid, "skipped a JWK that is not an Ed25519 key"),
            }
        }
        drop(revoked);
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Applies one revocation from the feed, and forgets those past their expiry.
    pub(crate) fn apply(&self, entry: &feed::Entry) {
        let now = now();
        match entry.kind {
            feed::Kind::Session => {
                let mut sessions = self
                    .revoked_sessions
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                sessions.retain(|_, until| *until >= now);
                if entry.expires_at >= now {
                    sessions.insert(entry.subject.clone(), entry.expires_at);
                }
            }
            feed::Kind::Key => {
                let mut kids = self.revoked_keys.write().unwrap_or_else(|e| e.into_inner());
                kids.retain(|_, until| *until >= now);
                kids.insert(entry.subject.clone(), entry.expires_at);
                let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
                let mut without = KeySet::clone(&keys);
                if without.remove(&entry.subject) {
                    *keys = Arc::new(without);
                }
                tracing::warn!(kid = %entry.subject, "herd withdrew a signing key");
            }
        }
    }
}

/// Fetches the JWKS at start (retrying until it succeeds) and every `jwks_refresh`.
async fn refresh_jwks(shared: Arc<Shared>) {
    let mut wait = Duration::from_millis(50);
    loop {
        match shared.fetch_jwks().await {
            Ok(()) => {
                wait = Duration::from_millis(50);
                tokio::time::sleep(shared.config.jwks_refresh).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "herd's JWKS is unreachable; keeping the keys held");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(shared.config.retry_max.max(Duration::from_millis(50)));
            }
        }
    }
}

/// Unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
