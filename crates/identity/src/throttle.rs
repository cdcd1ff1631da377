//! Login and signup throttling: how many attempts an account, a client address and a
//! device may make.
//!
//! Each limit is a GCRA (generic cell rate algorithm) meter: `N/PERIOD` allows a burst of
//! N attempts, then one more every PERIOD/N. What a meter keeps is one number a key, its
//! theoretical arrival time (TAT): when it would be empty again.
//!
//! A login is metered so that a stranger can slow an attacker but cannot lock the owner
//! out (OWASP's advice), by four meters:
//! - per (account, client address), failed attempts: the tight limit (5 per 15 minutes
//!   by default). It is what a guesser from one address meets, and it is the guesser's
//!   own: the owner, from any other address, is not charged for it.
//! - per account, failed attempts from browsers without that account's device cookie:
//!   a ceiling far above it (100 per 15 minutes), against guessing spread over many
//!   addresses. Once it is spent, a browser that never logged in to the account waits;
//!   one that did shows its device cookie and is not metered by it.
//! - per device cookie, failed attempts: the tight limit again, so a stolen device cookie
//!   buys no more guesses than one address has.
//! - per client address, every attempt (100 a minute).
//!
//! The failed-attempt meters are taken before the password is checked, so a flood of
//! concurrent guesses cannot all slip past a check; a successful login forgives the
//! (account, address) and device meters it was charged, never the per-account ceiling,
//! so an owner logging in does not hand the guessers a fresh allowance. An attempt is let
//! through only when every meter has room, and then it is taken from all of them; a
//! refused attempt takes nothing. Signups are metered per client address alone.
//!
//! With Redis the meters live there, under `herd:throttle:`, and every replica shares
//! them: one Lua script checks and takes from all of an attempt's meters atomically,
//! with the time passed in from identity's clock (so tests move it with `ManualClock`,
//! and replicas whose clocks disagree by a second or two disagree by that much about
//! refills). Every key is written with an expiry at its TAT, the moment the meter is full
//! again and the key means nothing, so Redis holds only meters that are in use.
//! Without Redis the meters are in this process's memory, at most `capacity` keys, and
//! each replica counts on its own, so N replicas grant N times the attempts. When Redis
//! fails, the throttle falls back to the in-memory meters for a few seconds rather than
//! refuse logins (fail open to a per-replica limit, never to no limit) and logs it; a
//! login never waits on Redis for longer than the pool's timeouts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::domain::Username;
use crate::redis_pool::RedisPool;

/// A limit: `attempts` at once, refilled evenly over `period_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub attempts: u32,
    pub period_secs: i64,
}

impl Rate {
    /// Milliseconds between two refills.
    fn interval_ms(&self) -> i64 {
        (self.period_secs * 1000 / i64::from(self.attempts.max(1))).max(1)
    }

    /// How far ahead of now a meter's TAT may run: a full burst.
    fn tolerance_ms(&self) -> i64 {
        self.interval_ms() * i64::from(self.attempts.max(1))
    }

    pub const MAX_PERIOD_SECS: i64 = 365 * 86_400;

    /// The same meter in whole seconds, as the store keeps it: one refill every
    /// `interval` (at least a second), a burst of `attempts`.
    pub fn in_seconds(&self) -> (i64, i64) {
        let interval = (self.period_secs / i64::from(self.attempts.max(1))).max(1);
        (interval, interval * i64::from(self.attempts.max(1)))
    }

    /// `attempts` per `period_secs`, as written on the command line (`N/PERIOD`).
    pub fn new(attempts: u32, period_secs: i64) -> Result<Rate, String> {
        if attempts == 0 {
            return Err(
                "the number of attempts must be at least 1 (write `off` to disable)".into(),
            );
        }
        if period_secs < 1 {
            return Err("the period must be at least 1s".into());
        }
        // Keeps every millisecond figure far from overflowing, and no login limit needs
        // a longer memory.
        if period_secs > Self::MAX_PERIOD_SECS {
            return Err("the period must be at most 365d".into());
        }
        Ok(Rate {
            attempts,
            period_secs,
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.attempts, self.period_secs)
    }
}

/// The login and signup limits; `None` turns one off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failed logins per account from browsers without its device cookie, whatever the
    /// address: the ceiling against guessing from many addresses. Default 100 per 15
    /// minutes.
    pub account: Option<Rate>,
    /// Failed logins per (account, client address), and per device cookie. Default 5
    /// per 15 minutes: a burst of 5, then one every 3 minutes.
    pub account_address: Option<Rate>,
    /// Login attempts per client address (an IPv6 address counts by its /64). Default
    /// 100 a minute.
    pub address: Option<Rate>,
    /// Signups per client address. Default 20 an hour.
    pub signup: Option<Rate>,
    /// Refreshes per login session, rotations and grace-window replays alike, counted
    /// in the store's session row. Default 10 per 5 minutes: an honest client refreshes
    /// about once per access-token lifetime.
    pub refresh: Option<Rate>,
    /// Keys the in-memory meters hold at most; past it, the emptiest are forgotten.
    pub capacity: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            account: Some(Rate {
                attempts: 100,
                period_secs: 15 * 60,
            }),
            account_address: Some(Rate {
                attempts: 5,
                period_secs: 15 * 60,
            }),
            address: Some(Rate {
                attempts: 100,
                period_secs: 60,
            }),
            signup: Some(Rate {
                attempts: 20,
                period_secs: 3600,
            }),
            refresh: Some(Rate {
                attempts: 10,
                period_secs: 300,
            }),
            capacity: 100_000,
        }
    }
}

impl ThrottleConfig {
    /// No limits at all: for load tests that log in far more than any person would.
    pub fn off() -> ThrottleConfig {
        ThrottleConfig {
            account: None,
            account_address: None,
            address: None,
            signup: None,
            refresh: None,
            ..ThrottleConfig::default()
        }
    }
}

/// Who is attempting a login, as far as the throttle cares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoginAttempt<'a> {
    /// The username as typed.
    pub username: &'a str,
    pub client: Option<IpAddr>,
    /// A digest of the device cookie, when the browser showed a valid one for this
    /// account: it is then metered on its own instead of by the per-account ceiling.
    pub device: Option<&'a str>,
}

/// A login refused by the throttle: try again after `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: u64,
}

const KEY_PREFIX: &str = "herd:throttle:";

/// How long the throttle keeps to its in-memory meters after Redis failed, so that an
/// outage costs one timeout every few seconds, not one per login.
const REDIS_COOL_DOWN: Duration = Duration::from_secs(5);

/// Checks every meter named in `KEYS` and, only when all have room, takes one attempt
/// from each. `ARGV[1]` is now in milliseconds; `ARGV[2i]` and `ARGV[2i+1]` are the
/// interval and the tolerance of `KEYS[i]`, in milliseconds. Returns 0 when granted,
/// else how many milliseconds until every meter has room again.
const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local next_tat = tat + interval
  if next_tat - now > tolerance then
    wait = math.max(wait, next_tat - tolerance - now)
  end
  tats[i] = next_tat
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tats[i], 'PX', tats[i] - now)
end
return 0
";

/// Gives one attempt back to the meter `KEYS[1]`: its TAT moves back by one interval
/// (`ARGV[2]`), and a meter that is then full (TAT at or before now, `ARGV[1]`) is
/// deleted.
const REFUND_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
tat = tat - tonumber(ARGV[2])
if tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], tat, 'PX', tat - now)
end
return 0
";

/// The login throttle of one replica.
#[derive(Debug)]
pub(crate) struct Throttle {
    config: ThrottleConfig,
    local: LocalMeters,
    redis: Option<Arc<RedisPool>>,
    /// Until when Redis is skipped after a failure.
    redis_down_until: Mutex<Option<Instant>>,
}

impl Throttle {
    pub(crate) fn new(config: ThrottleConfig, redis: Option<Arc<RedisPool>>) -> Throttle {
        Throttle {
            local: LocalMeters::new(config.capacity),
            config,
            redis,
            redis_down_until: Mutex::new(None),
        }
    }

    /// Where the meters live: `redis`, `memory`, or `off`.
    pub(crate) fn backend(&self) -> &'static str {
        let c = &self.config;
        let none = c.account.is_none() && c.account_address.is_none() && c.address.is_none();
        match (none, &self.redis) {
            (true, _) => "off",
            (false, Some(_)) => "redis",
            _ => "memory",
        }
    }

    /// Takes one attempt from every meter of a login, or refuses with how long to wait.
    pub(crate) async fn acquire_login(
        &self,
        attempt: LoginAttempt<'_>,
        now: i64,
    ) -> Result<(), Throttled> {
        let account = account_key(attempt.username);
        let mut meters = Vec::with_capacity(3);
        match (
            attempt.device,
            self.config.account_address,
            self.config.account,
        ) {
            (Some(device), Some(rate), _) => meters.push((format!("device:{device}"), rate)),
            (Some(_), None, _) => {}
            (None, _, Some(rate)) => meters.push((account.clone(), rate)),
            (None, _, None) => {}
        }
        if let (Some(rate), Some(ip)) = (self.config.account_address, attempt.client) {
            meters.push((pair_key(&account, ip), rate));
        }
        if let (Some(rate), Some(ip)) = (self.config.address, attempt.client) {
            meters.push((address_key(ip), rate));
        }
        self.acquire(&meters, now).await
    }

    /// Takes one signup from `client`'s address, or refuses with how long to wait.
    pub(crate) async fn acquire_signup(
        &self,
        client: Option<IpAddr>,
        now: i64,
    ) -> Result<(), Throttled> {
        let mut meters = Vec::with_capacity(1);
        if let (Some(rate), Some(ip)) = (self.config.signup, client) {
            meters.push((format!("signup:{}", address_key(ip)), rate));
        }
        self.acquire(&meters, now).await
    }

    async fn acquire(&self, meters: &[(String, Rate)], now: i64) -> Result<(), Throttled> {
        if meters.is_empty() {
            return Ok(());
        }
        let now_ms = now.saturating_mul(1000);
        let wait_ms = match self.redis_if_up() {
            Some(redis) => match self.acquire_in_redis(redis, meters, now_ms).await {
                Ok(wait) => wait,
                Err(e) => {
                    self.redis_failed(&e);
                    self.local.acquire(meters, now_ms)
                }
            },
            None => self.local.acquire(meters, now_ms),
        };
        if wait_ms <= 0 {
            Ok(())
        } else {
            // Whole seconds, rounded up: a client that waits that long finds room.
            let secs = (wait_ms + 999) / 1000;
            Err(Throttled {
                retry_after: u64::try_from(secs).unwrap_or(1).max(1),
            })
        }
    }

    /// A successful login: the failures charged to this (account, address) and to this
    /// device are forgiven. The per-account ceiling only gets back the one attempt this
    /// login took from it: it counts strangers' guesses, which the owner's success does
    /// not make any less suspicious.
    pub(crate) async fn forgive_login(&self, attempt: LoginAttempt<'_>, now: i64) {
        let account = account_key(attempt.username);
        if let (None, Some(rate)) = (attempt.device, self.config.account) {
            self.refund(&account, rate, now).await;
        }
        let mut keys = Vec::with_capacity(2);
        if self.config.account_address.is_some() {
            if let Some(ip) = attempt.client {
                keys.push(pair_key(&account, ip));
            }
            if let Some(device) = attempt.device {
                keys.push(format!("device:{device}"));
            }
        }
        if keys.is_empty() {
            return;
        }
        if let Some(redis) = self.redis_if_up() {
            let mut p = redis::pipe();
            for key in &keys {
                p.cmd("DEL").arg(format!("{KEY_PREFIX}{key}")).ignore();
            }
            if let Err(e) = redis.run::<()>(&p).await {
                self.redis_failed(&e);
            }
        }
        // Also here, in case this replica counted them while Redis was away.
        for key in &keys {
            self.local.forget(key);
        }
    }

    /// Gives one attempt back to the meter `key`.
    async fn refund(&self, key: &str, rate: Rate, now: i64) {
        let now_ms = now.saturating_mul(1000);
        if let Some(redis) = self.redis_if_up() {
            let mut p = redis::pipe();
            p.cmd("EVAL")
                .arg(REFUND_SCRIPT)
                .arg(1)
                .arg(format!("{KEY_PREFIX}{key}"))
                .arg(now_ms)
                .arg(rate.interval_ms())
                .ignore();
            match redis.run::<()>(&p).await {
                Ok(()) => return,
                Err(e) => self.redis_failed(&e),
            }
        }
        self.local.refund(key, rate, now_ms);
    }

    fn redis_if_up(&self) -> Option<&RedisPool> {
        let redis = self.redis.as_deref()?;
        let mut down = self
            .redis_down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *down {
            Some(until) if Instant::now() < until => None,
            Some(_) => {
                *down = None;
                Some(redis)
            }
            None => Some(redis),
        }
    }

    fn redis_failed(&self, error: &crate::sessions::Unavailable) {
        tracing::warn!(
            %error,
            "login throttle: Redis failed; counting on this replica alone for {}s",
            REDIS_COOL_DOWN.as_secs()
        );
        *self
            .redis_down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + REDIS_COOL_DOWN);
    }

    async fn acquire_in_redis(
        &self,
        redis: &RedisPool,
        meters: &[(String, Rate)],
        now_ms: i64,
    ) -> Result<i64, crate::sessions::Unavailable> {
        let mut p = redis::pipe();
        let cmd = p.cmd("EVAL").arg(SCRIPT).arg(meters.len());
        for (key, _) in meters {
            cmd.arg(format!("{KEY_PREFIX}{key}"));
        }
        cmd.arg(now_ms);
        for (_, rate) in meters {
            cmd.arg(rate.interval_ms()).arg(rate.tolerance_ms());
        }
        let (wait,): (i64,) = redis.run(&p).await?;
        Ok(wait)
    }
}

/// The key of an account: its username as herd stores it (case-folded), or, for a
/// string that is no valid username, a hash of it, so arbitrary input makes a short key.
fn account_key(raw: &str) -> String {
    match Username::parse(raw) {
        Ok(name) => format!("account:{name}"),
        Err(_) => {
            let digest = Sha256::digest(raw.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("account#{hex}")
        }
    }
}

/// The key of an (account, client address) pair.
fn pair_key(account: &str, ip: IpAddr) -> String {
    format!("{account}|{}", address_key(ip))
}

/// The key of a client address. An IPv6 client counts by its /64, the block one
/// subscriber is usually given, so rotating through its addresses gains nothing; an
/// IPv4-mapped address counts as the IPv4 one.
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("address:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("address:{v4}"),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("address:{prefix}/64")
            }
        },
    }
}

/// One GCRA step: the meter's new TAT when the attempt fits, else the milliseconds to
/// wait.
fn gcra(stored_tat: Option<i64>, rate: Rate, now_ms: i64) -> Result<i64, i64> {
    let tat = stored_tat.unwrap_or(now_ms).max(now_ms);
    let next = tat + rate.interval_ms();
    let over = next - now_ms - rate.tolerance_ms();
    if over > 0 {
        Err(over)
    } else {
        Ok(next)
    }
}

/// Meters in this process's memory, bounded in size.
#[derive(Debug)]
struct LocalMeters {
    tats: Mutex<HashMap<String, i64>>,
    capacity: usize,
}

impl LocalMeters {
    fn new(capacity: usize) -> LocalMeters {
        LocalMeters {
            tats: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Same contract as the Redis script: 0 when granted, else the wait in ms.
    fn acquire(&self, meters: &[(String, Rate)], now_ms: i64) -> i64 {
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = 0;
        let mut next = Vec::with_capacity(meters.len());
        for (key, rate) in meters {
            match gcra(tats.get(key).copied(), *rate, now_ms) {
                Ok(tat) => next.push(tat),
                Err(w) => wait = wait.max(w),
            }
        }
        if wait > 0 {
            return wait;
        }
        for ((key, _), tat) in meters.iter().zip(next) {
            if !tats.contains_key(key) && tats.len() >= self.capacity {
                Self::make_room(&mut tats, now_ms, self.capacity);
            }
            tats.insert(key.clone(), tat);
        }
        0
    }

    /// Drops meters that are full again (their TAT has passed: the same as absent);
    /// when that frees nothing, drops the one closest to full, which forgets the least.
    fn make_room(tats: &mut HashMap<String, i64>, now_ms: i64, capacity: usize) {
        tats.retain(|_, tat| *tat > now_ms);
        if tats.len() >= capacity {
            if let Some(key) = tats
                .iter()
                .min_by_key(|(_, tat)| **tat)
                .map(|(k, _)| k.clone())
            {
                tats.remove(&key);
            }
        }
    }

    fn refund(&self, key: &str, rate: Rate, now_ms: i64) {
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tat) = tats.get_mut(key) {
            *tat -= rate.interval_ms();
            if *tat <= now_ms {
                tats.remove(key);
            }
        }
    }

    fn forget(&self, key: &str) {
        self.tats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tats.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_PER_15M: Rate = Rate {
        attempts: 5,
        period_secs: 900,
    };

    fn throttle(account: Option<Rate>, address: Option<Rate>) -> Throttle {
        Throttle::new(
            ThrottleConfig {
                account,
                account_address: None,
                address,
                signup: None,
                refresh: None,
                capacity: 1000,
            },
            None,
        )
    }

    fn attempt<'a>(username: &'a str, client: Option<IpAddr>) -> LoginAttempt<'a> {
        LoginAttempt {
            username,
            client,
            device: None,
        }
    }

    /// A login attempt by `username` from `client` without a device cookie.
    async fn login(
        t: &Throttle,
        username: &str,
        client: Option<IpAddr>,
        now: i64,
    ) -> Result<(), Throttled> {
        t.acquire_login(attempt(username, client), now).await
    }

    #[tokio::test]
    async fn an_account_gets_its_burst_then_one_attempt_per_interval() {
        let t = throttle(Some(FIVE_PER_15M), None);
        for _ in 0..5 {
            login(&t, "alice", None, 1000).await.expect("in the burst");
        }
        assert_eq!(
            login(&t, "alice", None, 1000).await,
            Err(Throttled { retry_after: 180 })
        );
        assert_eq!(
            login(&t, "Alice", None, 1100).await,
            Err(Throttled { retry_after: 80 }),
            "usernames are case-folded, and the wait shrinks as time passes"
        );
        login(&t, "alice", None, 1180)
            .await
            .expect("one attempt refilled");
        assert!(login(&t, "alice", None, 1180).await.is_err());
        login(&t, "bob", None, 1180)
            .await
            .expect("other accounts are untouched");
    }

    #[tokio::test]
    async fn a_successful_login_forgives_its_address_and_device_but_not_the_ceiling() {
        let t = Throttle::new(
            ThrottleConfig {
                account: Some(Rate {
                    attempts: 7,
                    period_secs: 900,
                }),
                account_address: Some(FIVE_PER_15M),
                address: None,
                signup: None,
                refresh: None,
                capacity: 1000,
            },
            None,
        );
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for _ in 0..5 {
            login(&t, "alice", Some(ip), 0).await.expect("in the burst");
        }
        assert!(login(&t, "alice", Some(ip), 0).await.is_err(), "pair");
        // As if the sixth attempt had been the owner's, and right: the pair is
        // forgiven, and the ceiling gets back that one attempt, not the five before.
        t.forgive_login(attempt("alice", Some(ip)), 0).await;
        for _ in 0..3 {
            login(&t, "alice", Some(ip), 0).await.expect("forgiven");
        }
        assert!(
            login(&t, "alice", Some(ip), 0).await.is_err(),
            "the ceiling of 7 was not forgiven"
        );
        let device = LoginAttempt {
            device: Some("d1"),
            ..attempt("alice", Some(ip))
        };
        t.acquire_login(device, 0)
            .await
            .expect("a device cookie is not metered by the ceiling");
    }

    #[tokio::test]
    async fn an_exhausted_meter_takes_nothing_from_the_other() {
        let t = throttle(
            Some(Rate {
                attempts: 1,
                period_secs: 60,
            }),
            Some(Rate {
                attempts: 2,
                period_secs: 60,
            }),
        );
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        login(&t, "alice", Some(ip), 0).await.expect("first");
        assert!(login(&t, "alice", Some(ip), 0).await.is_err(), "account");
        login(&t, "bob", Some(ip), 0)
            .await
            .expect("the refused attempt took nothing from the address");
        assert!(login(&t, "carol", Some(ip), 0).await.is_err(), "address");
    }

    #[tokio::test]
    async fn an_ipv6_client_counts_by_its_64() {
        let t = throttle(
            None,
            Some(Rate {
                attempts: 1,
                period_secs: 60,
            }),
        );
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        login(&t, "x", Some(a), 0).await.expect("first");
        assert!(login(&t, "y", Some(b), 0).await.is_err(), "same /64");
        login(&t, "z", Some(c), 0).await.expect("another /64");
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().expect("ip")),
            "address:192.0.2.1"
        );
    }

    #[test]
    fn unparseable_usernames_are_hashed_into_short_keys() {
        let key = account_key(&"x".repeat(10_000));
        assert!(key.starts_with("account#") && key.len() < 64, "{key}");
        assert_eq!(account_key("ALICE"), "account:alice");
    }

    #[test]
    fn the_memory_meters_stay_within_their_capacity() {
        let m = LocalMeters::new(3);
        let rate = Rate {
            attempts: 1,
            period_secs: 60,
        };
        for i in 0..10 {
            assert_eq!(m.acquire(&[(format!("k{i}"), rate)], i * 1000), 0);
            assert!(m.len() <= 3);
        }
        assert!(
            m.acquire(&[("k9".to_owned(), rate)], 9000) > 0,
            "the newest meter was kept"
        );
    }

    #[test]
    fn rates_refuse_zero() {
        assert!(Rate::new(0, 60).is_err());
        assert!(Rate::new(5, 0).is_err());
        assert!(Rate::new(5, 366 * 86_400).is_err());
        let widest = Rate::new(u32::MAX, Rate::MAX_PERIOD_SECS).expect("valid");
        assert!(widest.tolerance_ms() > 0 && widest.interval_ms() >= 1);
        assert_eq!(
            Rate::new(5, 900).map(|r| r.to_string()),
            Ok("5/900s".into())
        );
    }
}
