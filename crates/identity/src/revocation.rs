//! The replica-local set of revoked sessions, fed from the store's revocation log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use herd_store::Revocation;

/// Session ids whose access tokens must be refused, each through the last second at
/// which one of its access tokens could still pass (its `exp` plus the leeway). Losing it is safe: it is rebuilt from the store.
#[derive(Debug, Default)]
pub struct RevocationSet {
    inner: RwLock<Inner>,
    /// Counts the revocations added, however they came: what the token status list is
    /// rebuilt on.
    changes: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, i64>,
    /// The id of the last log line applied, where the next tail starts.
    last_id: i64,
}

impl RevocationSet {
    pub fn contains(&self, session_id: &str) -> bool {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        !inner.sessions.is_empty() && inner.sessions.contains_key(session_id)
    }

    /// How many revocations were added so far: it changes when the set gains one.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Adds a revocation this replica made itself, ahead of reading it from the log.
    pub fn insert(&self, session_id: &str, expires_at: i64) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let until = inner
            .sessions
            .entry(session_id.to_owned())
            .or_insert(expires_at);
        *until = (*until).max(expires_at);
    }

    /// Applies log lines read from the store, oldest first.
    pub fn apply(&self, lines: &[Revocation]) {
        if !lines.is_empty() {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for line in lines {
            let until = inner
                .sessions
                .entry(line.session_id.clone())
                .or_insert(line.expires_at);
            *until = (*until).max(line.expires_at);
            inner.last_id = inner.last_id.max(line.id);
        }
    }

    pub fn last_id(&self) -> i64 {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).last_id
    }

    /// Forgets sessions whose every access token has stopped passing before `now`: a
    /// revocation is kept through its `until` second, when a token may still pass.
    pub fn prune(&self, now: i64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.sessions.retain(|_, until| *until >= now);
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_lasts_until_its_tokens_expire() {
        let set = RevocationSet::default();
        set.apply(&[Revocation {
            id: 7,
            session_id: "s1".into(),
            expires_at: 100,
        }]);
        assert!(set.contains("s1"));
        assert!(!set.contains("s2"));
        assert_eq!(set.last_id(), 7);
        set.prune(100);
        assert!(set.contains("s1"), "kept through its last second");
        set.prune(101);
        assert!(!set.contains("s1"));
    }
}
