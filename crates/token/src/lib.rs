//! herd's access tokens: the format (JWT per RFC 9068, Ed25519) and the one strict
//! verifier, in a crate of their own so that herd (`herd-identity`, which re-exports
//! them) and the services that accept herd's tokens offline (`herd-verify`) run the same
//! code. It depends on no store, no HTTP and no runtime.
//!
//! Layout:
//! - `jwt.rs`: signing and the strict verifier, with a [`Rejection`] for every failure.
//! - `keys.rs`: a signing key with its RFC 7638 id, and [`VerifyingKeys`], what the
//!   verifier asks of a key set (herd's key ring, or a verifier's cached JWKS).

pub mod jwt;
pub mod keys;

pub use jwt::{AccessClaims, Expectations, Rejection};
pub use keys::{KeySet, SigningKey, VerifyingKeys};
