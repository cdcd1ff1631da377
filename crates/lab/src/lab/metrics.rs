//! What the virtual users saw, recorded as it happens: counts and latencies a second at
//! a time, plus the few facts about the crash the report needs (who was logged out by
//! it, what failed after it, when the added replica first answered).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, from 1 µs to a minute.
const LATENCY_MAX_US: u64 = 60_000_000;

pub(crate) fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; `auto` makes a value past the
    // top grow the histogram instead of failing.
    let mut h = Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    });
    h.auto(true);
    h
}

/// How one request of the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx answer to an authenticated request (`/v1/me`, history, send).
    Ok,
    /// A 401 to an authenticated request: the user's session is gone and they must log
    /// in again.
    LoggedOut,
    /// A 429: throttled, neither a success nor a failure of the design.
    Throttled,
    /// A 5xx answer, a connection error or a timeout.
    Failed,
    /// Any other answer (a 4xx the workload does not expect): a bug in the lab or the
    /// server, counted so that it cannot hide.
    Unexpected,
}

/// One second of a scenario.
#[derive(Debug, Clone)]
pub(crate) struct Second {
    pub ok: u64,
    pub relogins: u64,
    pub logins: u64,
    pub failed: u64,
    pub throttled: u64,
    pub unexpected: u64,
    pub latency: Histogram<u64>,
}

impl Second {
    fn new() -> Second {
        Second {
            ok: 0,
            relogins: 0,
            logins: 0,
            failed: 0,
            throttled: 0,
            unexpected: 0,
            latency: histogram(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    seconds: Vec<Second>,
    total: Histogram<u64>,
    kill: Option<Duration>,
    /// When the timeline saw the killed process reaped: its sockets are closed by then.
    gone: Option<Duration>,
    /// Requests that started after the killed process was gone and failed.
    failed_after_kill: u64,
    /// Users with a session from before the kill that a request after it found gone.
    logged_out_by_crash: HashSet<usize>,
    /// Users who have had at least one authenticated request answered 2xx.
    served_users: HashSet<usize>,
    /// Authenticated requests (answered 2xx or 401) between the end of the warm-up and
    /// the kill, and how many of them were 401s.
    steady_requests: u64,
    steady_logged_out: u64,
    warmup: Duration,
    new_replica: Option<String>,
    first_served_by_new: Option<Duration>,
    /// Every request, for the chaos checks: when it started, how long it took, what it
    /// was and how it ended.
    log: Vec<Logged>,
    /// Sends answered 2xx: the messages the store promised to keep.
    acked: Vec<Ack>,
}

/// One request of the workload, as the chaos checks read it.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub started: Duration,
    pub latency: Duration,
    /// `login`, `refresh`, `join`, `me`, `history`, `send`.
    pub what: &'static str,
    pub outcome: Outcome,
    /// The status, or why there was no answer.
    pub status: Result<u16, String>,
}

/// A send the server acknowledged (2xx with the stored message's seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    /// When the send started (a sequence run attributes it to a fault's window).
    pub at: Duration,
    pub room: String,
    pub client_id: String,
    pub seq: i64,
}

/// Shared by the virtual users and the timeline of one scenario.
#[derive(Debug)]
pub(crate) struct Recorder {
    start: Instant,
    in_flight: AtomicU64,
    inner: Mutex<Inner>,
}

impl Recorder {
    pub fn new(start: Instant, warmup: Duration) -> Recorder {
        Recorder {
            start,
            in_flight: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                seconds: Vec::new(),
                total: histogram(),
                kill: None,
                gone: None,
                failed_after_kill: 0,
                logged_out_by_crash: HashSet::new(),
                served_users: HashSet::new(),
                steady_requests: 0,
                steady_logged_out: 0,
                warmup,
                new_replica: None,
                first_served_by_new: None,
                log: Vec::new(),
                acked: Vec::new(),
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every update below leaves the numbers consistent, so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the scenario's workload started.
    pub fn started_at(&self) -> Instant {
        self.start
    }

    /// Time since the scenario's workload started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// A request is about to be sent; returns when it was.
    pub fn begin(&self) -> Duration {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.now()
    }

    /// The request begun at `started` ended. `session_from` is when the session it
    /// carried was obtained (for authenticated requests), `replica` who answered.
    pub fn end(
        &self,
        user: usize,
        started: Duration,
        outcome: Outcome,
        session_from: Option<Duration>,
        replica: Option<&str>,
    ) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let now = self.now();
        let latency = u64::try_from((now - started).as_micros()).unwrap_or(u64::MAX);
        let mut inner = self.inner();
        let after_kill = inner.kill.is_some_and(|kill| started >= kill);
        let after_exit = inner.gone.is_some_and(|gone| started >= gone);
        let steady = started >= inner.warmup && inner.kill.is_none();
        let second = second(&mut inner.seconds, now);
        match outcome {
            Outcome::Ok => {
                second.ok += 1;
                let _ = second.latency.record(latency.max(1));
            }
            Outcome::LoggedOut => second.relogins += 1,
            Outcome::Throttled => second.throttled += 1,
            Outcome::Failed => second.failed += 1,
            Outcome::Unexpected => second.unexpected += 1,
        }
        match outcome {
            Outcome::Ok => {
                let _ = inner.total.record(latency.max(1));
                inner.served_users.insert(user);
            }
            Outcome::LoggedOut => {
                let session_predates_kill = matches!(
                    (inner.kill, session_from),
                    (Some(kill), Some(from)) if from < kill
                );
                if after_kill && session_predates_kill {
                    inner.logged_out_by_crash.insert(user);
                }
            }
            Outcome::Failed if after_exit => inner.failed_after_kill += 1,
            _ => {}
        }
        if steady && matches!(outcome, Outcome::Ok | Outcome::LoggedOut) {
            inner.steady_requests += 1;
            if outcome == Outcome::LoggedOut {
                inner.steady_logged_out += 1;
            }
        }
        if let (Some(replica), Some(new)) = (replica, inner.new_replica.as_deref()) {
            if replica == new && inner.first_served_by_new.is_none() {
                inner.first_served_by_new = Some(now);
            }
        }
    }

    /// A login was answered 200. (A forced re-login is counted at the 401 that forced
    /// it, so that a user who cannot log in again still counts once.)
    pub fn logged_in(&self) {
        let now = self.now();
        second(&mut self.inner().seconds, now).logins += 1;
    }

    /// A login or refresh begun with [`Recorder::begin`] was answered (its outcome, if
    /// not a success, goes to [`Recorder::side_request_failed`]).
    pub fn done_side(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// A login or a refresh failed in the way `outcome` says.
    pub fn side_request_failed(&self, outcome: Outcome, started: Duration) {
        let now = self.now();
        let mut inner = self.inner();
        let after_exit = inner.gone.is_some_and(|gone| started >= gone);
        let second = second(&mut inner.seconds, now);
        match outcome {
            Outcome::Throttled => second.throttled += 1,
            Outcome::Failed => {
                second.failed += 1;
                if after_exit {
                    inner.failed_after_kill += 1;
                }
            }
            Outcome::Unexpected | Outcome::LoggedOut => second.unexpected += 1,
            Outcome::Ok => {}
        }
    }

    /// Notes a request for the chaos checks (its counting is [`Recorder::end`]'s).
    pub fn note(
        &self,
        started: Duration,
        what: &'static str,
        outcome: Outcome,
        status: Result<u16, String>,
    ) {
        let latency = self.now().saturating_sub(started);
        self.inner().log.push(Logged {
            started,
            latency,
            what,
            outcome,
            status,
        });
    }

    /// A send was acknowledged with `seq`.
    pub fn acked(&self, ack: Ack) {
        self.inner().acked.push(ack);
    }

    pub fn served_users(&self) -> usize {
        self.inner().served_users.len()
    }

    /// Ok requests, forced re-logins and failed requests so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        let inner = self.inner();
        inner.seconds.iter().fold((0, 0, 0), |(o, r, f), s| {
            (o + s.ok, r + s.relogins, f + s.failed)
        })
    }

    /// The replica was killed now; returns the requests in flight at that moment.
    pub fn killed(&self) -> (Duration, u64) {
        let now = self.now();
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        let mut inner = self.inner();
        inner.kill = Some(now);
        (now, in_flight)
    }

    /// The killed process was seen reaped now.
    pub fn gone(&self) -> Duration {
        let now = self.now();
        self.inner().gone = Some(now);
        now
    }

    pub fn added(&self, id: &str) -> Duration {
        let now = self.now();
        self.inner().new_replica = Some(id.to_owned());
        now
    }

    pub fn finish(self) -> Recorded {
        let inner = self.inner.into_inner().unwrap_or_else(|e| e.into_inner());
        Recorded {
            seconds: inner.seconds,
            total: inner.total,
            failed_after_kill: inner.failed_after_kill,
            logged_out_by_crash: inner.logged_out_by_crash.len(),
            steady_requests: inner.steady_requests,
            steady_logged_out: inner.steady_logged_out,
            first_served_by_new: inner.first_served_by_new,
            log: inner.log,
            acked: inner.acked,
        }
    }
}

/// The second `at` falls in, created (with the ones before it) when missing.
fn second(seconds: &mut Vec<Second>, at: Duration) -> &mut Second {
    let index = usize::try_from(at.as_secs()).unwrap_or(usize::MAX);
    while seconds.len() <= index {
        seconds.push(Second::new());
    }
    &mut seconds[index]
}

/// Everything a scenario recorded, once its users have stopped.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub seconds: Vec<Second>,
    pub total: Histogram<u64>,
    pub failed_after_kill: u64,
    pub logged_out_by_crash: usize,
    pub steady_requests: u64,
    pub steady_logged_out: u64,
    pub first_served_by_new: Option<Duration>,
    pub log: Vec<Logged>,
    pub acked: Vec<Ack>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_logged_out_by_the_crash_only_with_a_session_from_before_it() {
        let recorder = Recorder::new(Instant::now(), Duration::ZERO);
        let before = Some(Duration::ZERO);
        let t = recorder.begin();
        recorder.end(1, t, Outcome::Ok, before, Some("r1"));
        let (kill, _) = recorder.killed();
        // User 1's old session is refused after the kill: the crash logged them out.
        let t = recorder.begin();
        recorder.end(1, t, Outcome::LoggedOut, before, Some("r2"));
        // User 2 logged in after the kill; a 401 on that session is not the crash's.
        let t = recorder.begin();
        let later = Some(kill + Duration::from_nanos(1));
        recorder.end(2, t, Outcome::LoggedOut, later, Some("r2"));
        let recorded = recorder.finish();
        assert_eq!(recorded.logged_out_by_crash, 1);
        let relogins: u64 = recorded.seconds.iter().map(|s| s.relogins).sum();
        assert_eq!(relogins, 2);
    }

    #[test]
    fn only_failures_of_requests_started_after_the_process_was_gone_count_against_it() {
        let recorder = Recorder::new(Instant::now(), Duration::ZERO);
        let in_flight = recorder.begin();
        let (_, counted) = recorder.killed();
        assert_eq!(counted, 1);
        // Sent between the signal and the process's exit: it may have reached it.
        let racing = recorder.begin();
        recorder.gone();
        recorder.end(1, in_flight, Outcome::Failed, None, None);
        recorder.end(1, racing, Outcome::Failed, None, None);
        let t = recorder.begin();
        recorder.end(1, t, Outcome::Failed, None, None);
        let recorded = recorder.finish();
        assert_eq!(recorded.failed_after_kill, 1);
    }

    #[test]
    fn the_first_answer_from_the_added_replica_is_timed() {
        let recorder = Recorder::new(Instant::now(), Duration::ZERO);
        let t = recorder.begin();
        recorder.end(1, t, Outcome::Ok, None, Some("r4"));
        assert!(recorder.inner().first_served_by_new.is_none());
        recorder.added("r4");
        let t = recorder.begin();
        recorder.end(1, t, Outcome::Ok, None, Some("r4"));
        assert!(recorder.finish().first_served_by_new.is_some());
    }
}
