//! [`Auth`]: signup, login, refresh with rotation, logout, and verification, over the
//! store, with the key ring and revocation set each replica keeps as derived state.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use herd_store::{
    NewRefresh, NewSession, RefreshLimit, Rotation, SessionOrigin, Store, StoreError, UserRecord,
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::cache::TokenCache;
use crate::clock::Clock;
use crate::domain::{Password, Username};
use crate::jwt::{self, AccessClaims, Expectations, Rejection};
use crate::keyring::{key_states, KeyInfo, KeyRing, PublicKey, SigningKey, ToRecord as _};
use crate::password::{random_bytes, HashError, HashParams, PasswordHasher};
use crate::redis_pool::RedisPool;
use crate::revocation::RevocationSet;
use crate::sessions::{
    MemorySessions, RedisSessions, SessionData, SessionStore, SessionTimeouts, Strategy,
    Unavailable,
};
use crate::throttle::{LoginAttempt, Throttle, ThrottleConfig, Throttled};

mod account;
pub use account::SessionInfo;

/// How identity behaves. Spans are `Duration`s; the clock and the store count whole
/// seconds, so identity reads them with [`seconds`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub client_id: String,
    pub access_ttl: Duration,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`; at most 30 s.
    pub leeway: Duration,
    pub refresh_ttl: Duration,
    /// How long a spent refresh token still yields its successor instead of counting
    /// as reuse, so two tabs refreshing at once both keep working.
    pub refresh_grace: Duration,
    /// How long a rotated-in key is published before it signs.
    pub key_publish_delay: Duration,
    pub hash: HashParams,
    pub hash_concurrency: usize,
    /// How long a signup or login waits for a password-hashing slot before it is
    /// answered "busy, retry" instead.
    pub hash_permit_wait: Duration,
    /// Verified tokens kept per replica; 0 turns the cache off.
    pub cache_capacity: usize,
    /// The least time between two key-ring reloads caused by an unknown `kid`.
    pub unknown_kid_reload_interval: Duration,
    /// How callers are recognised: tokens, or one of the stateful strategies.
    pub strategy: Strategy,
    /// Lifetimes of `memory` and `shared` sessions.
    pub sessions: SessionTimeouts,
    /// Where `shared` sessions and the login throttle's meters live; without it,
    /// sessions are in the SQL store and each replica throttles on its own.
    pub redis_url: Option<String>,
    /// Connections to Redis kept open.
    pub redis_pool: usize,
    /// Login attempts allowed per account and per client address.
    pub throttle: ThrottleConfig,
    /// How long verifiers may keep the token status list before fetching it again (its
    /// `ttl`); its `exp` is as long after it was built.
    pub status_list_ttl: Duration,
}

impl AuthConfig {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> AuthConfig {
        AuthConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            client_id: "herd".to_owned(),
            access_ttl: Duration::from_secs(300),
            leeway: Duration::from_secs(5),
            refresh_ttl: Duration::from_secs(14 * 24 * 3600),
            refresh_grace: Duration::from_secs(10),
            key_publish_delay: Duration::from_secs(60),
            hash: HashParams::default(),
            hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_permit_wait: Duration::from_secs(5),
            cache_capacity: 100_000,
            unknown_kid_reload_interval: Duration::from_secs(1),
            strategy: Strategy::Token,
            sessions: SessionTimeouts::default(),
            redis_url: None,
            redis_pool: 1,
            throttle: ThrottleConfig::default(),
            status_list_ttl: Duration::from_secs(60),
        }
    }

    /// The URI of the token status list, which access tokens name in their `status`
    /// claim and which is the list's `sub`.
    pub fn status_list_uri(&self) -> String {
        format!(
            "{}{}",
            self.issuer.trim_end_matches('/'),
            crate::status_list::PATH
        )
    }

    /// How long after a key stops signing it must still verify, in seconds.
    fn retire_after(&self) -> i64 {
        seconds(self.access_ttl) + seconds(self.leeway)
    }
}

/// `span` in the whole seconds the clock and the store count in (a fraction is dropped;
/// a span too long for `i64` is the longest there is).
pub(crate) fn seconds(span: Duration) -> i64 {
    i64::try_from(span.as_secs()).unwrap_or(i64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("that username is taken")]
    UsernameTaken,
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("too many login attempts; try again in {retry_after}s")]
    Throttled { retry_after: u64 },
    #[error("this session refreshed too often; try again in {retry_after}s")]
    RefreshThrottled { retry_after: u64 },
    #[error("too many signups from this address; try again in {retry_after}s")]
    SignupThrottled { retry_after: u64 },
    /// Every password-hashing slot stayed busy for the configured wait.
    #[error("password hashing is busy; try again in {retry_after}s")]
    Busy { retry_after: u64 },
    #[error("the refresh token is {0}")]
    InvalidRefresh(RefreshFailure),
    #[error("no signing key is active")]
    NoSigningKey,
    #[error("no signing key has the id {0}; `herd keys list` shows them")]
    UnknownKey(String),
    #[error("refresh tokens exist only under the token strategy; this replica runs {0}")]
    RefreshNotSupported(&'static str),
    /// Listing and ending one's sessions, changing a password and deleting an account
    /// exist only under `token` (see `service/account.rs`).
    #[error("managing sessions and accounts exists only under the token strategy; this replica runs {0}")]
    AccountsNotSupported(&'static str),
    /// The password given to confirm a change of the account is not its password.
    #[error("the password is wrong")]
    WrongPassword,
    /// No live session of the caller's has that id (another user's counts as none).
    #[error("no such session")]
    NoSuchSession,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshFailure {
    Malformed,
    Unknown,
    Expired,
    /// Its session was revoked (logout, or reuse detected earlier).
    Revoked,
    /// It was spent before, past the grace window: its session is now revoked.
    Reused,
}

impl RefreshFailure {
    pub fn reason(&self) -> &'static str {
        match self {
            RefreshFailure::Malformed => "malformed",
            RefreshFailure::Unknown => "unknown",
            RefreshFailure::Expired => "expired",
            RefreshFailure::Revoked => "revoked",
            RefreshFailure::Reused => "reused",
        }
    }
}

impl std::fmt::Display for RefreshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefreshFailure::Malformed => "not a herd refresh token",
            RefreshFailure::Unknown => "unknown",
            RefreshFailure::Expired => "expired",
            RefreshFailure::Revoked => "of a session that was logged out or revoked",
            RefreshFailure::Reused => "already used; its session is now revoked",
        })
    }
}

/// What login and refresh hand back. Under the stateful strategies the access token is
/// an opaque session id and there is no refresh token.
#[derive(Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<String>,
    pub session_id: String,
    /// Given by a login: proof that this browser logged in to the account, which
    /// exempts it from the account's ceiling on failed logins (see `throttle`).
    pub device_token: Option<String>,
}

/// Why a presented credential did not identify anyone.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthnError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The caller a credential identified.
#[derive(Debug, Clone)]
pub enum Principal {
    Token(Arc<AccessClaims>),
    Session(Arc<(String, SessionData)>),
}

impl Principal {
    pub fn user_id(&self) -> &str {
        match self {
            Principal::Token(c) => &c.sub,
            Principal::Session(s) => &s.1.user_id,
        }
    }

    pub fn username(&self) -> &str {
        match self {
            Principal::Token(c) => &c.preferred_username,
            Principal::Session(s) => &s.1.username,
        }
    }

    /// When the credential stops being valid, for a token; sessions slide instead.
    pub fn expires_at(&self) -> Option<i64> {
        match self {
            Principal::Token(c) => i64::try_from(c.exp).ok(),
            Principal::Session(_) => None,
        }
    }

    pub fn session_id(&self) -> &str {
        match self {
            Principal::Token(c) => &c.sid,
            Principal::Session(s) => &s.0,
        }
    }
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("session_id", &self.session_id)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Where a login came from, as kept with its session.
struct Origin {
    client_addr: Option<String>,
    user_agent: Option<String>,
}

/// An account just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub user_id: String,
    pub username: String,
}

/// Identity for one replica. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    config: AuthConfig,
    expect: Expectations,
    hasher: PasswordHasher,
    /// Replaced whole on reload, so a verification never waits for one.
    ring: ArcSwap<KeyRing>,
    /// The last key-ring generation handed out.
    ring_generations: std::sync::atomic::AtomicU64,
    revoked: RevocationSet,
    cache: TokenCache,
    /// Successor refresh tokens are an HMAC of their predecessor under this secret, so
    /// a replayed token's successor can be handed out again without storing it.
    refresh_secret: Vec<u8>,
    /// Device tokens are an HMAC of the account and the time under this secret.
    device_secret: Vec<u8>,
    /// What [`Auth::session_binding`] is an HMAC under.
    binding_secret: Vec<u8>,
    last_kid_reload: Mutex<Option<Instant>>,
    /// Where `memory` and `shared` sessions live; `None` under `token`.
    sessions: Option<SessionStore>,
    throttle: Throttle,
    /// Notices, each with its number: the `n`th notice this `Auth` sent carries `n`.
    notices: broadcast::Sender<(u64, Notice)>,
    /// The number of the last notice sent. Numbering and sending happen under this lock,
    /// so that notices reach their receivers in the order of their numbers.
    announced: Mutex<u64>,
    revoked_tx: broadcast::Sender<String>,
    /// When the store was last pruned, in clock seconds.
    last_prune: std::sync::atomic::AtomicI64,
    /// The token status list last built, rebuilt when a revocation arrives or it is
    /// half way to its `exp`; the lock makes concurrent requests wait for one build.
    status_list: tokio::sync::Mutex<Option<BuiltList>>,
}

/// A signed status list and what it was built from.
#[derive(Debug)]
struct BuiltList {
    /// [`RevocationSet::changes`] when the build began.
    changes: u64,
    iat: i64,
    exp: i64,
    token: Arc<str>,
}

/// The token status list as served: the signed JWT and how long it may be cached.
#[derive(Debug, Clone)]
pub struct StatusListToken {
    pub token: Arc<str>,
    /// Seconds left until its `exp`, at most the configured TTL.
    pub max_age: i64,
}

/// How long a device token exempts its browser from the per-account login ceiling, in
/// seconds; every successful login issues a fresh one.
pub const DEVICE_TTL: i64 = 90 * 86_400;

/// The least time between two prunes of the store by one replica, in seconds.
pub const PRUNE_EVERY: i64 = 60;

/// What [`Auth::revoke_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRevoked {
    /// The key removed from the store.
    pub revoked: String,
    /// The key added to sign in its place, when the revoked key was the one signing.
    pub added: Option<String>,
    /// The ring as it stands after.
    pub keys: Vec<KeyInfo>,
}

/// Something other replicas should hear about now rather than at their next upkeep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Revoked { session_id: String, until: i64 },
    KeysChanged,
}

impl Auth {
    /// Readies identity on `store`: creates the first signing key and the refresh
    /// secret on a new database, loads the key ring and the revocation log.
    pub async fn start(
        store: Store,
        clock: Arc<dyn Clock>,
        config: AuthConfig,
    ) -> Result<Auth, AuthError> {
        let hasher = PasswordHasher::new(
            config.hash,
            config.hash_concurrency,
            config.hash_permit_wait,
        )?;
        let now = clock.now();
        if store.signing_keys().await?.is_empty() {
            let key = SigningKey::generate();
            if store
                .insert_first_signing_key(&key.to_record(now, now))
                .await?
            {
                tracing::info!(kid = %key.kid(), "generated the first signing key");
            }
        }
        let refresh_secret = store.secret("refresh_hmac", &random_bytes::<32>()).await?;
        let device_secret = store.secret("device_hmac", &random_bytes::<32>()).await?;
        let binding_secret = store
            .secret("session_binding_hmac", &random_bytes::<32>())
            .await?;
        let expect = Expectations {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: seconds(config.leeway),
            max_lifetime: config.retire_after(),
        };
        let redis = match &config.redis_url {
            Some(url) => Some(Arc::new(
                RedisPool::new(url, config.redis_pool).map_err(AuthError::Config)?,
            )),
            None => None,
        };
        let sessions = match (config.strategy, &redis) {
            (Strategy::Token, _) => None,
            (Strategy::Memory, _) => Some(SessionStore::Memory(MemorySessions::default())),
            (Strategy::Shared, Some(redis)) => {
                Some(SessionStore::Redis(RedisSessions::new(redis.clone())))
            }
            (Strategy::Shared, None) => Some(SessionStore::Sql(store.clone())),
        };
        let throttle = Throttle::new(config.throttle.clone(), redis);
        let auth = Auth {
            inner: Arc::new(Inner {
                sessions,
                throttle,
                cache: TokenCache::new(config.cache_capacity),
                store,
                clock,
                expect,
                hasher,
                ring: ArcSwap::from_pointee(KeyRing::default()),
                ring_generations: std::sync::atomic::AtomicU64::new(0),
                revoked: RevocationSet::default(),
                refresh_secret,
                device_secret,
                binding_secret,
                last_kid_reload: Mutex::new(None),
                notices: broadcast::channel(1024).0,
                announced: Mutex::new(0),
                revoked_tx: broadcast::channel(1024).0,
                last_prune: std::sync::atomic::AtomicI64::new(i64::MIN / 2),
                status_list: tokio::sync::Mutex::new(None),
                config,
            }),
        };
        auth.reload_keys().await?;
        auth.sync_revocations().await?;
        Ok(auth)
    }

    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// Creates an account, for a caller at `client` (when known), whose address is
    /// metered: past its signup limit the request is refused before any hashing.
    pub async fn signup(
        &self,
        username: &Username,
        password: &Password,
        client: Option<IpAddr>,
    ) -> Result<NewAccount, AuthError> {
        self.inner
            .throttle
            .acquire_signup(client, self.now())
            .await
            .map_err(|Throttled { retry_after }| AuthError::SignupThrottled { retry_after })?;
        let hash = self
            .inner
            .hasher
            .hash_for_signup(password)
            .await
            .map_err(|e| self.hash_error(e))?;
        let user = UserRecord {
            id: random_id(),
            username: username.as_str().to_owned(),
            password_hash: hash,
            created_at: self.now(),
        };
        match self.inner.store.create_user(&user).await {
            Ok(()) => Ok(NewAccount {
                user_id: user.id,
                username: user.username,
            }),
            Err(StoreError::Conflict { .. }) => Err(AuthError::UsernameTaken),
            Err(e) => Err(e.into()),
        }
    }

    fn hash_error(&self, e: HashError) -> AuthError {
        match e {
            HashError::Busy => AuthError::Busy {
                retry_after: self.inner.config.hash_permit_wait.as_secs().max(1),
            },
            e => e.into(),
        }
    }

    /// Holds every signup hashing slot until the guard is dropped: for tests of what a
    /// signup meets when they are all taken.
    #[doc(hidden)]
    pub async fn hold_signup_slots(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.inner.hasher.hold_signup_slots().await
    }

    /// Logs in `username` from `client` (the caller's address, when known), with the
    /// device token this browser was given at an earlier login, if any, and the client's
    /// `User-Agent` (kept with the session, for its owner's list). An unknown
    /// user, a malformed username and a wrong password all cost one argon2
    /// verification and fail alike. Past the throttle's limits the attempt is refused
    /// before any hashing, with how long to wait. A password stored under weaker argon2
    /// parameters than the configured ones is rehashed with them on success.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
        device: Option<&str>,
        user_agent: Option<&str>,
    ) -> Result<TokenPair, AuthError> {
        let now = self.now();
        let attempt = Password::attempt(password);
        let lookup = async move {
            match Username::parse(username) {
                Ok(name) => self.inner.store.user_by_name(name.as_str()).await,
                Err(_) => Ok(None),
            }
        };
        let user = self
            .check_password(username, &attempt, client, device, now, lookup)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        let verified = self.upgrade_hash(&user, &attempt).await;
        let device_token = Some(self.device_token(&user.username, now));
        let origin = Origin {
            client_addr: client.map(|ip| ip.to_string()),
            user_agent: user_agent.map(account::user_agent),
        };
        let mut pair = self.open_session(user, &verified, &origin, now).await?;
        pair.device_token = device_token;
        Ok(pair)
    }

    /// The password check of a login, also made when an account change asks for the
    /// password again: the throttle's meters for `username`, `client` and the `device`
    /// token taken before any hashing, one argon2 verification whether or not `lookup`
    /// finds the account (so a missing one costs the same), and the meters forgiven on
    /// success. `None` when the password is not the account's, or there is no account.
    async fn check_password(
        &self,
        username: &str,
        password: &Password,
        client: Option<IpAddr>,
        device: Option<&str>,
        now: i64,
        lookup: impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send,
    ) -> Result<Option<UserRecord>, AuthError> {
        let device = device.and_then(|token| self.device_of(token, username, now));
        let metered = LoginAttempt {
            username,
            client,
            device: device.as_deref(),
        };
        self.inner
            .throttle
            .acquire_login(metered, now)
            .await
            .map_err(|Throttled { retry_after }| AuthError::Throttled { retry_after })?;
        let user = lookup.await?;
        let matched = self
            .inner
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(|e| self.hash_error(e))?;
        match user {
            Some(user) if matched => {
                self.inner.throttle.forgive_login(metered, now).await;
                Ok(Some(user))
            }
            _ => Ok(None),
        }
    }

    /// Opens a login session for `user`, whose password hash `verified` was just checked,
    /// by this replica's strategy. A token session is opened only if the hash is still
    /// that one and the account still there: a login racing with a password change or the
    /// account's deletion fails as a wrong password rather than outlive them.
    async fn open_session(
        &self,
        user: UserRecord,
        verified: &str,
        origin: &Origin,
        now: i64,
    ) -> Result<TokenPair, AuthError> {
        if let Some(sessions) = &self.inner.sessions {
            let credential = random_bytes::<32>();
            let credential = URL_SAFE_NO_PAD.encode(credential);
            let id = session_key(&credential);
            let data = SessionData {
                user_id: user.id,
                username: user.username,
                created_at: now,
            };
            let timeouts = &self.inner.config.sessions;
            sessions.create(&id, &data, timeouts).await?;
            return Ok(TokenPair {
                access_token: credential,
                expires_in: seconds(timeouts.idle),
                refresh_token: None,
                session_id: id,
                device_token: None,
            });
        }
        let session_id = random_id();
        let refresh = random_bytes::<32>();
        let refresh_hash = sha256(&refresh);
        let config = &self.inner.config;
        let status_idx = self
            .inner
            .store
            .open_session(
                NewSession {
                    id: &session_id,
                    user_id: &user.id,
                    verified_hash: verified,
                    origin: SessionOrigin {
                        client_addr: origin.client_addr.as_deref(),
                        user_agent: origin.user_agent.as_deref(),
                    },
                    status_margin: crate::status_list::reuse_margin(
                        seconds(config.status_list_ttl),
                        seconds(config.leeway),
                    ),
                },
                now,
                NewRefresh {
                    hash: &refresh_hash,
                    expires_at: now + seconds(config.refresh_ttl),
                },
            )
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        self.issue(
            &user.id,
            &user.username,
            &session_id,
            Some(status_idx),
            &refresh,
        )
    }

    /// Replaces `user`'s stored hash by one under the configured parameters, when it was
    /// made under weaker ones, now that the password is known. It costs one more hash, once
    /// per account and parameter change. The login goes on whatever happens here: the
    /// old hash still verifies, and the next login tries again. Returns the hash the
    /// store holds for the password now, as far as this login knows.
    async fn upgrade_hash(&self, user: &UserRecord, password: &Password) -> String {
        if !self.inner.hasher.needs_rehash(&user.password_hash) {
            return user.password_hash.clone();
        }
        let fresh = match self.inner.hasher.hash(password).await {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(error = %e, user_id = %user.id, "could not rehash a password");
                return user.password_hash.clone();
            }
        };
        // Only over the hash just verified: a password changed meanwhile stays changed.
        match self
            .inner
            .store
            .replace_password_hash(&user.id, &user.password_hash, &fresh)
            .await
        {
            Ok(true) => {
                tracing::info!(user_id = %user.id, "password rehashed with the configured argon2id parameters");
                fresh
            }
            Ok(false) => user.password_hash.clone(),
            Err(e) => {
                tracing::warn!(error = %e, user_id = %user.id, "could not store a rehashed password");
                user.password_hash.clone()
            }
        }
    }

    /// A value only this deployment can compute from `session_id`, the same on every
    /// replica: what the server binds a session's CSRF token to.
    pub fn session_binding(&self, session_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac_of(&self.inner.binding_secret, session_id.as_bytes()))
    }

    /// A short name for this deployment (the replicas sharing this store), the same on
    /// every replica and different for every store: what keeps replicas of two
    /// deployments that share one Redis from counting each other as peers. It names
    /// nothing secret: it is an HMAC under the binding secret of a fixed label that no
    /// session id can equal (session ids are random base64url, never with a space).
    pub fn deployment(&self) -> String {
        let mac = hmac_of(&self.inner.binding_secret, b"herd deployment");
        URL_SAFE_NO_PAD.encode(&mac[..9])
    }

    /// The login session a refresh token belongs to, spent or not, without spending it:
    /// what a browser's refresh is checked against before it is made. `None` for a
    /// token that is malformed or unknown.
    pub async fn refresh_session(&self, refresh_token: &str) -> Result<Option<String>, AuthError> {
        let Some(presented) = decode_refresh(refresh_token) else {
            return Ok(None);
        };
        Ok(self
            .inner
            .store
            .refresh_token_session(&sha256(&presented))
            .await?)
    }

    /// Trades a refresh token for a new pair, spending it.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        if self.inner.config.strategy != Strategy::Token {
            return Err(AuthError::RefreshNotSupported(
                self.inner.config.strategy.as_str(),
            ));
        }
        let presented = decode_refresh(refresh_token)
            .ok_or(AuthError::InvalidRefresh(RefreshFailure::Malformed))?;
        let successor = self.successor_of(&presented);
        let now = self.now();
        let config = &self.inner.config;
        let rotation = self
            .inner
            .store
            .rotate_refresh(
                &sha256(&presented),
                NewRefresh {
                    hash: &sha256(&successor),
                    expires_at: now + seconds(config.refresh_ttl),
                },
                now,
                seconds(config.refresh_grace),
                self.revocation_expiry(now),
                config.throttle.refresh.map(|rate| {
                    let (interval, tolerance) = rate.in_seconds();
                    RefreshLimit {
                        interval,
                        tolerance,
                    }
                }),
            )
            .await?;
        match rotation {
            Rotation::Rotated(owner) | Rotation::Replayed(owner) => self.issue(
                &owner.user_id,
                &owner.username,
                &owner.session_id,
                owner.status_idx,
                &successor,
            ),
            Rotation::Reused { session_id } => {
                tracing::warn!(
                    session_id,
                    "refresh token reused after its grace window; session revoked"
                );
                self.revoked_here(&session_id, self.revocation_expiry(now));
                Err(AuthError::InvalidRefresh(RefreshFailure::Reused))
            }
            Rotation::SessionRevoked => Err(AuthError::InvalidRefresh(RefreshFailure::Revoked)),
            Rotation::Throttled { retry_after } => Err(AuthError::RefreshThrottled {
                retry_after: u64::try_from(retry_after).unwrap_or(1).max(1),
            }),
            Rotation::Expired => Err(AuthError::InvalidRefresh(RefreshFailure::Expired)),
            Rotation::Unknown => Err(AuthError::InvalidRefresh(RefreshFailure::Unknown)),
        }
    }

    /// Ends the caller's login session. Under `token`: its refresh tokens stop working
    /// now, its access tokens here at once and on other replicas when they next read the
    /// log. Under the stateful strategies: the session is deleted.
    pub async fn logout(&self, principal: &Principal) -> Result<(), AuthError> {
        match (&self.inner.sessions, principal) {
            (Some(sessions), Principal::Session(s)) => {
                sessions.delete(&s.0).await?;
                // Connections of this session, here and on other replicas, must end too.
                self.revoked_here(&s.0, self.now() + seconds(self.inner.config.sessions.idle));
                Ok(())
            }
            _ => self.revoke(principal.session_id()).await,
        }
    }

    /// Revokes the token login session `session_id`.
    pub async fn revoke(&self, session_id: &str) -> Result<(), AuthError> {
        let now = self.now();
        let until = self.revocation_expiry(now);
        self.inner
            .store
            .revoke_session(session_id, now, until)
            .await?;
        self.revoked_here(session_id, until);
        Ok(())
    }

    /// Refuses the session's tokens here at once, and tells whoever listens (the bus,
    /// for the other replicas).
    fn revoked_here(&self, session_id: &str, until: i64) {
        self.inner.revoked.insert(session_id, until);
        let _ = self.inner.revoked_tx.send(session_id.to_owned());
        self.announce(Notice::Revoked {
            session_id: session_id.to_owned(),
            until,
        });
    }

    /// Numbers `notice` and sends it to whoever listens.
    fn announce(&self, notice: Notice) {
        let mut announced = self
            .inner
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *announced += 1;
        let _ = self.inner.notices.send((*announced, notice));
    }

    /// The number of the last notice this `Auth` sent (0 before the first): a caller
    /// that reads it after a revocation returned knows that the revocation's notice is
    /// numbered at most this, and can wait for the other replicas to confirm it.
    pub fn announced(&self) -> u64 {
        *self
            .inner
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a revocation another replica announced.
    pub fn apply_revocation(&self, session_id: &str, until: i64) {
        if until >= self.now() {
            self.inner.revoked.insert(session_id, until);
            let _ = self.inner.revoked_tx.send(session_id.to_owned());
        }
    }

    /// Whether this replica holds `session_id` as revoked.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.inner.revoked.contains(session_id)
    }

    /// The id of every session this replica learns is revoked, however it learns it
    /// (here, from the bus, from the store): what long-lived connections watch.
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.inner.revoked_tx.subscribe()
    }

    /// News for other replicas: revocations made here, keys rotated here. Nothing is
    /// lost if no one listens: the store has it all, and replicas read it periodically.
    /// Each comes with its number (see [`Auth::announced`]).
    pub fn notices(&self) -> broadcast::Receiver<(u64, Notice)> {
        self.inner.notices.subscribe()
    }

    /// Identifies the caller from the credential they presented, by this replica's
    /// strategy: a token is verified with no I/O; a session id is looked up.
    pub async fn authenticate(&self, credential: &str) -> Result<Principal, AuthnError> {
        let Some(sessions) = &self.inner.sessions else {
            return Ok(Principal::Token(self.verify(credential).await?));
        };
        if credential.is_empty() {
            return Err(Rejection::Missing.into());
        }
        if credential.len() != 43 || URL_SAFE_NO_PAD.decode(credential).is_err() {
            return Err(Rejection::Malformed.into());
        }
        let id = session_key(credential);
        match sessions
            .lookup(&id, self.now(), &self.inner.config.sessions)
            .await?
        {
            Some(data) => Ok(Principal::Session(Arc::new((id, data)))),
            None => Err(Rejection::UnknownSession.into()),
        }
    }

    /// True when everything this replica's requests depend on answers.
    pub async fn ready(&self) -> Result<(), AuthError> {
        self.inner.store.ping().await?;
        if let Some(sessions) = &self.inner.sessions {
            sessions.ping().await?;
        }
        Ok(())
    }

    pub fn strategy(&self) -> Strategy {
        self.inner.config.strategy
    }

    /// Where the login throttle counts: `redis` (shared by every replica), `memory` (this
    /// replica alone) or `off`.
    pub fn throttle_backend(&self) -> &'static str {
        self.inner.throttle.backend()
    }

    /// Where sessions are kept: `token` (nowhere), `memory`, `redis` or `sql`.
    pub fn session_backend(&self) -> &'static str {
        self.inner
            .sessions
            .as_ref()
            .map_or("token", SessionStore::backend)
    }

    /// Verifies an access token. An unknown `kid` reloads the ring first (at most once
    /// per `unknown_kid_reload_interval`), so a key rotated in by another replica is
    /// honoured as soon as a token signed with it arrives.
    pub async fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, Rejection> {
        match self.verify_now(token) {
            Err(Rejection::UnknownKey) if self.may_reload_for_unknown_kid() => {
                if let Err(e) = self.reload_keys().await {
                    tracing::warn!(error = %e, "could not reload the key ring for an unknown kid");
                }
                self.verify_now(token)
            }
            result => result,
        }
    }

    /// Verifies with what this replica holds now, without any I/O.
    pub fn verify_now(&self, token: &str) -> Result<Arc<AccessClaims>, Rejection> {
        if token.len() > jwt::MAX_TOKEN_BYTES {
            return Err(Rejection::TooLarge);
        }
        let ring = self.inner.ring.load_full();
        self.verify_with_ring(token, &ring)
    }

    /// Verifies with `ring`, which may have been replaced since it was loaded (a
    /// verification in flight while a key is revoked): the cache entry it leaves is
    /// tagged with that ring's generation, so it never counts under a later ring.
    fn verify_with_ring(
        &self,
        token: &str,
        ring: &KeyRing,
    ) -> Result<Arc<AccessClaims>, Rejection> {
        let now = self.now();
        let generation = self.inner.ring.load().generation();
        let claims = match self.inner.cache.get(token, generation) {
            Some(claims) => {
                jwt::check_claims(&claims, &self.inner.expect, now)?;
                claims
            }
            None => {
                let claims = Arc::new(jwt::verify(token, ring, &self.inner.expect, now)?);
                self.inner
                    .cache
                    .insert(token, claims.clone(), ring.generation(), now);
                claims
            }
        };
        if self.inner.revoked.contains(&claims.sid) {
            return Err(Rejection::Revoked);
        }
        Ok(claims)
    }

    fn may_reload_for_unknown_kid(&self) -> bool {
        let mut last = self
            .inner
            .last_kid_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due =
            last.is_none_or(|at| at.elapsed() >= self.inner.config.unknown_kid_reload_interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Rebuilds the key ring from the store and swaps it in whole. Returns whether the
    /// set of published keys changed.
    pub async fn reload_keys(&self) -> Result<bool, AuthError> {
        let records = self.inner.store.signing_keys().await?;
        let ring = KeyRing::build(&records, self.now(), self.inner.config.retire_after());
        let old = self.inner.ring.load();
        let changed = !old.kids().eq(ring.kids());
        // Numbers come from one counter, so two reloads racing never give different
        // rings the same generation.
        let generation = if changed {
            self.inner
                .ring_generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1
        } else {
            old.generation()
        };
        self.inner
            .ring
            .store(Arc::new(ring.with_generation(generation)));
        if changed {
            // A key gone from the ring must stop verifying at once, cached or not.
            self.inner.cache.clear();
            tracing::info!(kids = ?self.inner.ring.load().kids().collect::<Vec<_>>(), "key ring changed");
        }
        Ok(changed)
    }

    /// Reads revocations logged since the last read and applies them; prunes the ones
    /// that no longer matter. Returns how many were read.
    pub async fn sync_revocations(&self) -> Result<usize, AuthError> {
        let now = self.now();
        let lines = self
            .inner
            .store
            .revocations_since(self.inner.revoked.last_id(), now)
            .await?;
        self.inner.revoked.apply(&lines);
        self.inner.revoked.prune(now);
        for line in &lines {
            let _ = self.inner.revoked_tx.send(line.session_id.clone());
        }
        Ok(lines.len())
    }

    /// At most `limit` revocations logged after `after_id` and still in force, oldest
    /// first: a page of the revocation feed (session ids, and withdrawn keys under
    /// [`herd_store::KEY_SUBJECT_PREFIX`]).
    pub async fn revocation_page(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<herd_store::Revocation>, AuthError> {
        Ok(self
            .inner
            .store
            .revocation_page(after_id, self.now(), limit)
            .await?)
    }

    /// The oldest id still in the revocation log (`None` when empty) and the newest.
    pub async fn revocation_bounds(&self) -> Result<(Option<i64>, i64), AuthError> {
        Ok(self.inner.store.revocation_bounds().await?)
    }

    /// One round of upkeep: reload the ring, tail the revocation log, prune the store.
    ///
    /// Pruning is a write, and on a SQLite file shared by replicas every write waits for
    /// the others: chat's message writes stalled behind it when it ran every few seconds
    /// (docs/benchmarks.md, chat section). Nothing is urgent about it, so it runs at most
    /// once every [`PRUNE_EVERY`] seconds.
    pub async fn maintain(&self) -> Result<(), AuthError> {
        self.reload_keys().await?;
        self.sync_revocations().await?;
        let now = self.now();
        let last = self
            .inner
            .last_prune
            .load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= PRUNE_EVERY {
            self.inner
                .last_prune
                .store(now, std::sync::atomic::Ordering::Relaxed);
            self.inner.store.prune(now).await?;
            if let Some(sessions) = &self.inner.sessions {
                sessions.prune(now, &self.inner.config.sessions).await?;
            }
        }
        Ok(())
    }

    /// Adds a new signing key that starts signing after the publish delay, and deletes
    /// keys that have retired. Returns the ring as it stands after.
    pub async fn rotate_keys(&self) -> Result<Vec<KeyInfo>, AuthError> {
        let now = self.now();
        let key = SigningKey::generate();
        self.inner
            .store
            .insert_signing_key(
                &key.to_record(now, now + seconds(self.inner.config.key_publish_delay)),
            )
            .await?;
        tracing::info!(kid = %key.kid(), "rotated in a new signing key");
        for info in self.keys().await? {
            if info.state == crate::keyring::KeyState::Retired {
                self.inner.store.delete_signing_key(&info.kid).await?;
            }
        }
        self.reload_keys().await?;
        self.announce(Notice::KeysChanged);
        self.keys().await
    }

    /// Withdraws key `kid` at once: an emergency for a key that leaked. If it is the key
    /// signing now, a new key that signs at once is added first, so the ring always has
    /// a signer. Returns what was done.
    ///
    /// The row is deleted rather than marked revoked. A revoked-but-kept row would need a
    /// state every reader of the ring must skip (building the ring, choosing the signer,
    /// `keys list`) and would keep the leaked secret in the store; deleting it reuses the
    /// path a retired key already takes out of the ring. Deleting shifts one thing: a
    /// key's retirement is timed from when the next key began signing, so an older key
    /// still retiring now retires `retire_after` after the new key started instead. That
    /// only keeps an honest key published a little longer. Keys already retired are
    /// deleted here too, as at a rotation, so that none comes back into the ring.
    ///
    /// Replicas drop the key at their next ring reload (upkeep, or the bus notice sent
    /// here) and clear their token caches, so every token it signed is then refused as
    /// `unknown_key`. Refresh tokens are not signed, so sessions survive: a client
    /// refreshes and gets a token signed by the new key.
    pub async fn revoke_key(&self, kid: &str) -> Result<KeyRevoked, AuthError> {
        let before = self.keys().await?;
        let Some(target) = before.iter().find(|k| k.kid == kid) else {
            return Err(AuthError::UnknownKey(kid.to_owned()));
        };
        let now = self.now();
        let added = if target.state == crate::keyring::KeyState::Active {
            // No publish delay: while verifiers' JWKS caches lack the new key they refuse
            // its tokens for a while, which beats tokens signed with a leaked key.
            let key = SigningKey::generate();
            self.inner
                .store
                .insert_signing_key(&key.to_record(now, now))
                .await?;
            tracing::warn!(kid = %key.kid(), "added a signing key that signs at once, replacing a revoked one");
            Some(key.kid().to_owned())
        } else {
            None
        };
        for info in &before {
            if info.state == crate::keyring::KeyState::Retired && info.kid != kid {
                self.inner.store.delete_signing_key(&info.kid).await?;
            }
        }
        // Logged with the revocations, until the last token it signed has expired, so
        // that services verifying herd's tokens offline hear of it on the feed.
        self.inner
            .store
            .revoke_signing_key(kid, now, self.revocation_expiry(now))
            .await?;
        tracing::warn!(%kid, "revoked a signing key");
        self.reload_keys().await?;
        self.announce(Notice::KeysChanged);
        Ok(KeyRevoked {
            revoked: kid.to_owned(),
            added,
            keys: self.keys().await?,
        })
    }

    /// Every stored key with its state now.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, AuthError> {
        let records = self.inner.store.signing_keys().await?;
        Ok(key_states(
            &records,
            self.now(),
            self.inner.config.retire_after(),
        ))
    }

    /// The published public keys, for the JWK Set.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.inner.ring.load().public_keys()
    }

    pub fn revoked_sessions(&self) -> usize {
        self.inner.revoked.len()
    }

    /// The token status list, signed with the key signing now. It is built from the
    /// store's revocation log once per change this replica hears of (a revocation made
    /// here, announced on the bus or read from the log) and once half its lifetime has
    /// passed, never per request.
    pub async fn status_list(&self) -> Result<StatusListToken, AuthError> {
        let ttl = seconds(self.inner.config.status_list_ttl).max(2);
        let mut built = self.inner.status_list.lock().await;
        let changes = self.inner.revoked.changes();
        let now = self.now();
        if let Some(list) = built.as_ref() {
            if list.changes == changes && now >= list.iat && now - list.iat < ttl / 2 {
                return Ok(StatusListToken {
                    token: list.token.clone(),
                    max_age: list.exp - now,
                });
            }
        }
        let (len, set) = self.inner.store.status_list(now).await?;
        let bytes = crate::status_list::pack(u64::try_from(len).unwrap_or(0), &set);
        let claims = crate::status_list::StatusListClaims {
            iss: self.inner.config.issuer.clone(),
            sub: self.inner.config.status_list_uri(),
            iat: now.max(0).unsigned_abs(),
            exp: (now + ttl).max(0).unsigned_abs(),
            ttl: ttl.unsigned_abs(),
            status_list: crate::status_list::StatusList {
                bits: 1,
                lst: crate::status_list::encode(&bytes),
            },
        };
        let ring = self.inner.ring.load();
        let key = ring.signer(now).ok_or(AuthError::NoSigningKey)?;
        let token: Arc<str> = crate::status_list::sign(&claims, key).into();
        *built = Some(BuiltList {
            changes,
            iat: now,
            exp: now + ttl,
            token: token.clone(),
        });
        Ok(StatusListToken {
            token,
            max_age: ttl,
        })
    }

    fn issue(
        &self,
        user_id: &str,
        username: &str,
        session_id: &str,
        status_idx: Option<i64>,
        refresh: &[u8; 32],
    ) -> Result<TokenPair, AuthError> {
        let now = self.now();
        let config = &self.inner.config;
        let ring = self.inner.ring.load();
        let key = ring.signer(now).ok_or(AuthError::NoSigningKey)?;
        let claims = AccessClaims {
            iss: config.issuer.clone(),
            aud: config.audience.clone(),
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            jti: random_id(),
            iat: now.max(0).unsigned_abs(),
            exp: (now + seconds(config.access_ttl)).max(0).unsigned_abs(),
            nbf: None,
            preferred_username: username.to_owned(),
            client_id: config.client_id.clone(),
            status: status_idx
                .and_then(|idx| u64::try_from(idx).ok())
                .map(|idx| jwt::TokenStatus {
                    status_list: jwt::StatusListRef {
                        idx,
                        uri: config.status_list_uri(),
                    },
                }),
        };
        Ok(TokenPair {
            access_token: jwt::sign(&claims, key),
            expires_in: seconds(config.access_ttl),
            refresh_token: Some(URL_SAFE_NO_PAD.encode(refresh)),
            session_id: session_id.to_owned(),
            device_token: None,
        })
    }

    /// The last second at which an access token of a session revoked at `now` can still
    /// pass verification anywhere: a token is accepted up to `exp + leeway` inclusive,
    /// and the replica that issued it may have a clock up to the leeway ahead of this
    /// one, so its `exp` may be as late as `now + access_ttl + leeway`. The revocation
    /// is kept through that second.
    fn revocation_expiry(&self, now: i64) -> i64 {
        now + self.inner.config.retire_after() + seconds(self.inner.config.leeway)
    }

    /// A device token for `username` (as stored), issued at `now`: the account and the
    /// time, with an HMAC of both.
    fn device_token(&self, username: &str, now: i64) -> String {
        let payload = format!("{username}|{now}");
        let mac = hmac_of(&self.inner.device_secret, payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(&mac[..16])
        )
    }

    /// What the throttle meters a device under: a digest of `token`, when it is a
    /// device token this deployment issued for `username` within [`DEVICE_TTL`].
    fn device_of(&self, token: &str, username: &str, now: i64) -> Option<String> {
        if token.len() > 200 {
            return None;
        }
        let (payload_b64, mac_b64) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac_b64).ok()?;
        if mac.len() != 16 {
            return None;
        }
        #[allow(clippy::expect_used)]
        let mut check = Hmac::<Sha256>::new_from_slice(&self.inner.device_secret)
            .expect("HMAC takes a key of any length");
        check.update(&payload);
        check.verify_truncated_left(&mac).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let (name, issued) = payload.rsplit_once('|')?;
        let issued: i64 = issued.parse().ok()?;
        let username = Username::parse(username).ok()?;
        if name != username.as_str() || issued > now || now - issued > DEVICE_TTL {
            return None;
        }
        let digest = Sha256::digest(token.as_bytes());
        Some(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    fn successor_of(&self, presented: &[u8; 32]) -> [u8; 32] {
        #[allow(clippy::expect_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.inner.refresh_secret)
            .expect("HMAC takes a key of any length");
        mac.update(presented);
        mac.finalize().into_bytes().into()
    }
}

fn hmac_of(key: &[u8], message: &[u8]) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// What a stateful session is stored under: the SHA-256 of the id the client holds.
fn session_key(credential: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(credential.as_bytes()))
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// A refresh token is exactly 32 bytes in canonical, unpadded base64url.
fn decode_refresh(token: &str) -> Option<[u8; 32]> {
    if token.len() != 43 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(token).ok()?.try_into().ok()
}

/// 32 random bytes, for tokens that other layers mint (a CSRF token, say).
pub fn random_token_bytes() -> [u8; 32] {
    random_bytes::<32>()
}

/// A random (version 4) UUID.
pub fn random_id() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    async fn auth_on_temp_store(dir: &tempfile::TempDir) -> Auth {
        let url = format!("sqlite://{}", dir.path().join("herd.db").display());
        let store = Store::connect(&url).await.expect("store");
        let mut config = AuthConfig::new("http://herd.test", "herd");
        config.hash = HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        Auth::start(store, Arc::new(ManualClock::starting_now()), config)
            .await
            .expect("auth")
    }

    /// The interleaving a race would need, made deterministic: a verification loads the
    /// ring, the key is revoked (the ring swapped, the cache cleared), then the
    /// verification finishes and caches its token.
    #[tokio::test]
    async fn a_verification_in_flight_during_a_key_revocation_cannot_cache_the_revoked_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = auth_on_temp_store(&dir).await;
        let before = auth.inner.ring.load_full();
        let now = auth.now();
        let key = before.signer(now).expect("a signer").clone();
        let claims = AccessClaims {
            iss: "http://herd.test".into(),
            aud: "herd".into(),
            sub: "u1".into(),
            sid: "s1".into(),
            jti: random_id(),
            iat: now.unsigned_abs(),
            exp: (now + 300).unsigned_abs(),
            nbf: None,
            preferred_username: "mallory".into(),
            client_id: "herd".into(),
            status: None,
        };
        let forged = jwt::sign(&claims, &key);

        auth.revoke_key(key.kid()).await.expect("revoke");
        assert!(
            auth.verify_with_ring(&forged, &before).is_ok(),
            "the verification in flight used the ring it loaded"
        );
        assert_eq!(
            auth.verify_now(&forged).map(|_| ()),
            Err(Rejection::UnknownKey),
            "what it cached does not outlive the key"
        );
    }
}
