//! Password hashing with argon2id, off the async workers and bounded in concurrency.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Version};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// argon2id cost parameters. The default is OWASP's: 19 MiB, 2 passes, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashParams {
    fn argon2(&self) -> Result<Argon2<'static>, argon2::Error> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks that argon2 accepts these parameters.
    pub fn validate(&self) -> Result<(), String> {
        self.argon2().map(|_| ()).map_err(|e| e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2 parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Failed(String),
    /// No hashing slot came free within the configured wait.
    #[error("every password-hashing slot is busy")]
    Busy,
}

/// Hashes and verifies passwords on the blocking pool, at most `concurrency` at a time,
/// so a burst of logins cannot starve the async workers or exhaust memory.
///
/// A request waits at most `permit_wait` for a slot, then gives up with
/// [`HashError::Busy`] instead of queueing without bound. Signups hash through their own
/// gate of half the slots (at least one), so a flood of signups leaves the other half to
/// logins, and logins never queue behind more than half a pool of signups.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    params: HashParams,
    permits: Arc<Semaphore>,
    signup_permits: Arc<Semaphore>,
    permit_wait: std::time::Duration,
    /// A hash of nothing anyone knows, verified against for unknown users so that they
    /// cost the same time as a wrong password.
    dummy: Arc<str>,
}

impl PasswordHasher {
    pub fn new(
        params: HashParams,
        concurrency: usize,
        permit_wait: std::time::Duration,
    ) -> Result<PasswordHasher, HashError> {
        let argon = params
            .argon2()
            .map_err(|e| HashError::Params(e.to_string()))?;
        let dummy = hash_with(&argon, &random_bytes::<16>())?;
        let concurrency = concurrency.max(1);
        Ok(PasswordHasher {
            argon,
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            signup_permits: Arc::new(Semaphore::new((concurrency / 2).max(1))),
            permit_wait,
            dummy: dummy.into(),
        })
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let secret = password.expose().as_bytes().to_vec();
        self.blocking(move |argon| hash_with(argon, &secret))
            .await?
    }

    /// Hashes a new account's password, through the signups' half of the slots.
    pub async fn hash_for_signup(&self, password: &Password) -> Result<String, HashError> {
        let _gate = self.permit(&self.signup_permits).await?;
        self.hash(password).await
    }

    /// Holds every signup slot, so a test can show what a signup meets when they are
    /// all taken. Not for use outside tests.
    #[doc(hidden)]
    pub async fn hold_signup_slots(&self) -> tokio::sync::OwnedSemaphorePermit {
        let n = u32::try_from(self.signup_permits.available_permits()).unwrap_or(u32::MAX);
        #[allow(clippy::expect_used)]
        self.signup_permits
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the semaphore is never closed")
    }

    async fn permit<'a>(
        &self,
        semaphore: &'a Semaphore,
    ) -> Result<tokio::sync::SemaphorePermit<'a>, HashError> {
        match tokio::time::timeout(self.permit_wait, semaphore.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(HashError::Failed("hasher closed".into())),
            Err(_) => Err(HashError::Busy),
        }
    }

    /// True when `password` matches `stored`. With `None`, verifies against the dummy
    /// hash and answers false, doing the same work as a real mismatch.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let known = stored.is_some();
        let stored: String = stored.map_or_else(|| self.dummy.to_string(), str::to_owned);
        let secret = password.expose().as_bytes().to_vec();
        let matched = self
            .blocking(move |argon| {
                PasswordHash::new(&stored)
                    .map(|parsed| argon.verify_password(&secret, &parsed).is_ok())
                    .unwrap_or(false)
            })
            .await?;
        Ok(known && matched)
    }

    /// Whether `stored` should be replaced by a fresh hash the next time the password is
    /// known (a successful login): it was made with anything but argon2id version 0x13,
    /// or with a memory cost, pass count or lane count below the configured ones.
    ///
    /// A hash made under higher parameters is left alone: during a rolling deployment
    /// that raises them, replicas still on the old configuration would otherwise undo
    /// every upgrade the new ones make. Lowering the parameters applies to new hashes.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13.into())
        {
            return true;
        }
        match argon2::Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() < self.params.memory_kib
                    || p.t_cost() < self.params.iterations
                    || p.p_cost() < self.params.parallelism
                    || p.output_len()
                        .is_some_and(|len| len != argon2::Params::DEFAULT_OUTPUT_LEN)
            }
            Err(_) => true,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self.permit(&self.permits).await?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || work(&argon))
            .await
            .map_err(|e| HashError::Failed(e.to_string()))
    }
}

fn hash_with(argon: &Argon2<'_>, secret: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| HashError::Failed(e.to_string()))?;
    argon
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

/// `N` bytes from the operating system's generator. Failing to get randomness leaves
/// nothing safe to do, so it panics rather than hand out a predictable secret.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    #[allow(clippy::expect_used)]
    getrandom::getrandom(&mut buf).expect("the operating system's random generator failed");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(
            HashParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
            std::time::Duration::from_secs(5),
        )
        .expect("valid params")
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let h = cheap();
        let pw = Password::parse("correct horse").expect("valid");
        let stored = h.hash(&pw).await.expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(h.verify(&pw, Some(&stored)).await.expect("verify"));
        let wrong = Password::parse("wrong horse").expect("valid");
        assert!(!h.verify(&wrong, Some(&stored)).await.expect("verify"));
    }

    #[tokio::test]
    async fn unknown_user_never_matches_even_the_dummy() {
        let h = cheap();
        assert!(!h
            .verify(&Password::attempt(""), None)
            .await
            .expect("verify"));
    }

    #[tokio::test]
    async fn a_hash_needs_rehashing_only_under_weaker_parameters() {
        let weak = cheap();
        let stored = weak
            .hash(&Password::parse("correct horse").expect("valid"))
            .await
            .expect("hash");
        assert!(!weak.needs_rehash(&stored), "made with these very params");
        let stronger = PasswordHasher::new(
            HashParams {
                memory_kib: 128,
                iterations: 1,
                parallelism: 1,
            },
            1,
            std::time::Duration::from_secs(5),
        )
        .expect("valid params");
        assert!(
            stronger.needs_rehash(&stored),
            "memory cost below the configured"
        );
        let stored_strong = stronger
            .hash(&Password::parse("correct horse").expect("valid"))
            .await
            .expect("hash");
        assert!(
            !weak.needs_rehash(&stored_strong),
            "a stronger hash is kept under a weaker configuration"
        );
        let argon2i = stored.replacen("$argon2id$", "$argon2i$", 1);
        assert!(weak.needs_rehash(&argon2i), "not argon2id");
        assert!(weak.needs_rehash("not a PHC string"));
    }

    #[test]
    fn defaults_are_owasp() {
        let p = HashParams::default();
        assert_eq!((p.memory_kib, p.iterations, p.parallelism), (19456, 2, 1));
        assert!(HashParams {
            memory_kib: 1,
            iterations: 1,
            parallelism: 1
        }
        .validate()
        .is_err());
    }

    #[tokio::test]
    async fn a_signup_flood_leaves_logins_their_half_of_the_slots() {
        // No wait for a slot: a request that finds none free is told so at once.
        let hasher = PasswordHasher::new(
            HashParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
            std::time::Duration::ZERO,
        )
        .expect("valid params");
        let password = Password::parse("correct horse battery").expect("valid");
        let held = hasher.hold_signup_slots().await;
        assert!(matches!(
            hasher.hash_for_signup(&password).await,
            Err(HashError::Busy)
        ));
        let stored = hasher
            .hash(&password)
            .await
            .expect("a login's slot is free");
        assert!(hasher
            .verify(&password, Some(&stored))
            .await
            .expect("verify"));
        drop(held);
        hasher
            .hash_for_signup(&password)
            .await
            .expect("a signup once a slot is free");
    }
}
