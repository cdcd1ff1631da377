//! herd's identity: who a request is, decided without asking anyone.
//!
//! Accounts with argon2id password hashes; access tokens that are JWTs (RFC 9068) signed
//! with Ed25519 and verified with no I/O; opaque refresh tokens, rotated on every use
//! with reuse detection; the signing-key ring shared through the store and rotated with
//! a publish delay; revocation by login session. It knows nothing of HTTP and nothing of
//! SQL: persistence is [`herd_store::Store`], time is a [`Clock`].
//!
//! Layout:
//! - `service.rs`: [`Auth`], the operations, and the per-replica derived state;
//!   `service/account.rs` what a user controls of their account (sessions, password,
//!   deletion).
//! - `jwt`: signing and the strict verifier, with a [`Rejection`] for every failure,
//!   re-exported from `herd-token` (shared with `herd-verify`).
//! - `keyring.rs`: keys, their life cycle and JWKS.
//! - `revocation.rs`, `cache.rs`: the revoked-session set and the verified-token cache.
//! - `status_list.rs`: the Token Status List (draft-ietf-oauth-status-list) the same
//!   revocations are published as, for verifiers other than herd.
//! - `sessions.rs`: the stateful strategies herd argues against, `memory` and `shared`
//!   (Redis or SQL), kept to be compared with tokens behind the same API.
//! - `throttle.rs`: login throttling per account, client address and device cookie, and
//!   signup throttling per address (GCRA), in Redis when there is one, else per replica.
//! - `redis_pool.rs`: the small pool of reconnecting Redis connections that `shared`
//!   sessions and the throttle share.
//! - `password.rs`: argon2id on the blocking pool, bounded, and rehashing of hashes made
//!   under other parameters.
//! - `domain.rs`: [`Username`] and [`Password`] (with the bundled list of common
//!   passwords, `data/common-passwords.txt`), parsed at the edge.
//! - `clock.rs`: [`Clock`], real and manual.

mod cache;
mod clock;
mod domain;
pub use herd_token::jwt;
pub mod keyring;
mod password;
mod redis_pool;
mod revocation;
mod service;
mod sessions;
pub mod status_list;
mod throttle;

pub use clock::{Clock, ManualClock, SystemClock};
pub use domain::{Invalid, Password, Username};
pub use jwt::{AccessClaims, Rejection, StatusListRef, TokenStatus};
pub use keyring::{KeyInfo, KeyState, PublicKey};
pub use password::{HashError, HashParams};
pub use service::{
    random_id, random_token_bytes, Auth, AuthConfig, AuthError, AuthnError, KeyRevoked, NewAccount,
    Notice, Principal, RefreshFailure, SessionInfo, TokenPair, DEVICE_TTL,
};
pub use sessions::{SessionData, SessionTimeouts, Strategy, Unavailable};
pub use throttle::{Rate, ThrottleConfig};
