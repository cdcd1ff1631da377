//! [`Quota`]: how many times one user may do a thing in a window of time, on this
//! process; and [`Limits`], the quotas chat applies whatever the transport.

use std::collections::HashMap;
use std::sync::Mutex;

/// What one user may do on one replica, over REST and WebSocket together: a client
/// cannot get more by switching transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages one user may post a second.
    pub posts_per_second: u32,
    /// Rooms one user may create a minute.
    pub rooms_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            posts_per_second: 20,
            rooms_per_minute: 10,
        }
    }
}

/// At most `limit` uses per user in each window of `window` seconds (fixed windows, by
/// the chat's clock, so tests can move time).
#[derive(Debug)]
pub(crate) struct Quota {
    limit: u32,
    window: i64,
    /// User id -> (the window's start, uses in it). Only users seen in the current
    /// window are worth keeping, so the map is swept when it grows.
    uses: Mutex<HashMap<String, (i64, u32)>>,
}

/// The map is swept of past windows once it holds this many users.
const SWEEP_AT: usize = 10_000;

impl Quota {
    pub(crate) fn new(limit: u32, window: i64) -> Quota {
        Quota {
            limit,
            window: window.max(1),
            uses: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one use by `user` at `now`; `Err(seconds)` to wait when over the limit.
    pub(crate) fn take(&self, user: &str, now: i64) -> Result<(), u64> {
        let start = now - now.rem_euclid(self.window);
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        if uses.len() >= SWEEP_AT {
            uses.retain(|_, (at, _)| *at == start);
        }
        let entry = uses.entry(user.to_owned()).or_insert((start, 0));
        if entry.0 != start {
            *entry = (start, 0);
        }
        if entry.1 >= self.limit {
            return Err((start + self.window - now).max(1).unsigned_abs());
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_the_limit_per_window_and_others_are_not_charged() {
        let quota = Quota::new(2, 60);
        assert_eq!(quota.take("ada", 120), Ok(()));
        assert_eq!(quota.take("ada", 130), Ok(()));
        assert_eq!(quota.take("ada", 150), Err(30));
        assert_eq!(quota.take("bob", 150), Ok(()));
        assert_eq!(quota.take("ada", 180), Ok(()));
    }
}
