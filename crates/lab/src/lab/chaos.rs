//! `herd lab --chaos`: faults injected under the lab's load, one per run on a fresh
//! cluster and store, and the invariants checked after each from what the load
//! generator saw and from the store.
//!
//! - [`Fault`]: what is done to the cluster at `--kill-at` and undone at `--add-at`.
//! - [`Proxy`]: a TCP proxy of the lab's own between one replica and PostgreSQL or
//!   Redis, which it can cut.
//! - the revoker: logs a session in and out every second and, once the documented
//!   revocation bound has passed, asks every replica whether it still takes the token.
//! - [`check`]: the invariants, each held or broken with a count.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::metrics::{Ack, Logged, Outcome};
use super::report::{millis, optional_seconds};
use super::subscribers::Watched;
use crate::replicas::Cluster;
use crate::{LabError, State};

/// One fault the lab can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL one replica.
    Kill,
    /// SIGSTOP one replica, SIGCONT it at the fault's end.
    Pause,
    /// Take one replica out of rotation and SIGTERM it: a graceful drain.
    Drain,
    /// Cut one replica off from PostgreSQL and Redis (the lab's proxy drops its
    /// connections and refuses new ones) until the fault's end.
    Cut,
    /// Stop the scenario's own Redis (SIGKILL), start it again, empty, at the end.
    RedisRestart,
    /// End every connection to the scenario's own PostgreSQL database
    /// (`pg_terminate_backend`), as a restart of the server would.
    PostgresKill,
    /// Add a replica whose clock is ahead by more than the leeway (libfaketime), and
    /// drain it at the fault's end.
    Clock,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Drain,
        Fault::Cut,
        Fault::RedisRestart,
        Fault::PostgresKill,
        Fault::Clock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Drain => "drain",
            Fault::Cut => "cut",
            Fault::RedisRestart => "redis-restart",
            Fault::PostgresKill => "postgres-kill",
            Fault::Clock => "clock",
        }
    }

    /// Parses a fault list: names separated by commas, or `all`.
    pub fn parse_list(list: &[String]) -> Result<Vec<Fault>, String> {
        let mut out = Vec::new();
        for name in list.iter().flat_map(|l| l.split(',')).map(str::trim) {
            if name == "all" {
                out.extend(Fault::ALL);
                continue;
            }
            let fault = Fault::ALL
                .into_iter()
                .find(|f| f.as_str() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Fault::ALL.iter().map(|f| f.as_str()).collect();
                    format!("{name:?} is not a fault: {}, or all", known.join(", "))
                })?;
            out.push(fault);
        }
        Ok(out)
    }

    /// Whether the fault is done to one replica (detected by the balancer) rather than
    /// to what every replica shares.
    pub fn on_a_replica(self) -> bool {
        !matches!(self, Fault::RedisRestart | Fault::PostgresKill)
    }
}

/// A test-only switch that breaks the run on purpose, to show that the checker can
/// fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Break {
    /// Subscribers reconnect without resuming: they subscribe from the start again.
    Resume,
    /// The checker is fed an acknowledgement of a message that was never sent.
    LostAck,
}

impl Break {
    pub fn parse(name: &str) -> Result<Break, String> {
        match name {
            "resume" => Ok(Break::Resume),
            "lost-ack" => Ok(Break::LostAck),
            other => Err(format!("{other:?} is not resume or lost-ack")),
        }
    }
}

/// The revocation bound herd documents for a replica that reaches its store
/// (docs/security.md, "Revocation latency"): the bus, or else the next upkeep read of
/// the revocation log every `--upkeep-interval` (5 s), plus the read.
pub(crate) const REVOCATION_BOUND: Duration = Duration::from_secs(6);

/// A TCP proxy between one replica and a backend. `cut` drops every connection it
/// carries and refuses new ones until `restore`.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Result<Proxy, LabError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(LabError::Listener)?;
        let addr = listener.local_addr().map_err(LabError::Listener)?;
        let (cut, watching) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watching.clone();
                if *cut.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, cut, task })
    }

    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the revoker saw: tokens logged out, and how many replicas still took one
/// after the bound.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Revocations {
    pub logouts: u64,
    pub probes: u64,
    pub accepted: u64,
    /// Replicas not asked because the bound for them is the token's life (cut off from
    /// bus and store) or because they could not answer (paused).
    pub not_asked: u64,
}

impl Revocations {
    fn add(&mut self, other: &Revocations) {
        self.logouts += other.logouts;
        self.probes += other.probes;
        self.accepted += other.accepted;
        self.not_asked += other.not_asked;
    }
}

/// What the revoker saw, a logout at a time (when it was answered), so that a
/// sequence run can count each fault's window apart.
#[derive(Debug, Default)]
pub(crate) struct RevocationLog {
    pub per_logout: Vec<(Duration, Revocations)>,
}

impl RevocationLog {
    /// The logouts answered in `from..to`, and what their probes found.
    pub fn within(&self, from: Duration, to: Duration) -> Revocations {
        let mut out = Revocations::default();
        for (at, seen) in &self.per_logout {
            if *at >= from && *at < to {
                out.add(seen);
            }
        }
        out
    }
}

/// Which replica may not be asked (id, until when in scenario time), for the cut.
pub(crate) type Exempt = Arc<Mutex<Option<(String, Option<Duration>)>>>;

/// Logs `labhost` in and out every second until `stop`, and asks every running
/// replica, directly, for `/v1/me` with each logged-out token once
/// [`REVOCATION_BOUND`] has passed. Returns what it saw.
pub(crate) async fn revoker(
    client: reqwest::Client,
    base: String,
    cluster: Arc<Cluster>,
    clock: impl Fn() -> Duration + Send + 'static,
    exempt: Exempt,
    mut stop: watch::Receiver<bool>,
) -> RevocationLog {
    let mut seen = RevocationLog::default();
    // (when to probe, which logout of `seen` it belongs to, the token)
    let mut pending: Vec<(Duration, usize, String)> = Vec::new();
    loop {
        let stopping = *stop.borrow();
        // Log a session in and out.
        if !stopping {
            if let Some(token) = login_logout(&client, &base).await {
                let at = clock();
                seen.per_logout.push((
                    at,
                    Revocations {
                        logouts: 1,
                        ..Revocations::default()
                    },
                ));
                pending.push((at + REVOCATION_BOUND, seen.per_logout.len() - 1, token));
            }
        }
        // Probe the tokens whose bound has passed.
        let now = clock();
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(at, _, _)| *at <= now);
        pending = later;
        for (_, which, token) in due {
            let counts = &mut seen.per_logout[which].1;
            probe(&client, &cluster, &token, &exempt, now, counts).await;
        }
        if stopping && pending.is_empty() {
            return seen;
        }
        let wait = if stopping {
            pending
                .iter()
                .map(|(at, _, _)| at.saturating_sub(now))
                .min()
                .unwrap_or_default()
                .max(Duration::from_millis(50))
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed(), if !stopping => {}
        }
    }
}

async fn login_logout(client: &reqwest::Client, base: &str) -> Option<String> {
    let login = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({ "username": "labhost", "password": super::workload::PASSWORD }))
        .send()
        .await
        .ok()?;
    if !login.status().is_success() {
        return None;
    }
    let body: Value = login.json().await.ok()?;
    let token = body["access_token"].as_str()?.to_owned();
    let logout = client
        .post(format!("{base}/v1/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .ok()?;
    logout.status().is_success().then_some(token)
}

async fn probe(
    client: &reqwest::Client,
    cluster: &Cluster,
    token: &str,
    exempt: &Exempt,
    now: Duration,
    seen: &mut Revocations,
) {
    let excused = exempt.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for replica in cluster.views() {
        let Some(port) = replica.port else { continue };
        if replica.state == State::Dead || replica.state == State::Starting {
            continue;
        }
        let exempt_now = excused
            .as_ref()
            .is_some_and(|(id, until)| *id == replica.id && until.is_none_or(|u| now < u));
        if exempt_now {
            seen.not_asked += 1;
            continue;
        }
        let answer = client
            .get(format!("http://127.0.0.1:{port}/v1/me"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match answer {
            Ok(a) if a.status().is_success() => {
                seen.probes += 1;
                seen.accepted += 1;
                tracing::warn!(replica = %replica.id, "a revoked token was accepted after the bound");
            }
            Ok(_) => seen.probes += 1,
            Err(_) => seen.not_asked += 1,
        }
    }
}

/// One room's history as the store holds it after the run.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// (seq, client_id), ascending.
    pub messages: Vec<(i64, String)>,
}

/// Reads every room's whole history from one replica (the store's view).
pub(crate) async fn read_histories(
    client: &reqwest::Client,
    replica: &str,
    rooms: &[String],
) -> Result<HashMap<String, History>, LabError> {
    let failed = |what: String| LabError::Timeline(format!("reading the history: {what}"));
    let login = client
        .post(format!("{replica}/v1/auth/login"))
        .json(&json!({ "username": "labhost", "password": super::workload::PASSWORD }))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let body: Value = login.json().await.map_err(|e| failed(e.to_string()))?;
    let token = body["access_token"]
        .as_str()
        .ok_or_else(|| failed(format!("login answered {body}")))?
        .to_owned();
    let mut out = HashMap::new();
    for room in rooms {
        let mut history = History::default();
        let mut after = 0;
        loop {
            let page: Value = client
                .get(format!(
                    "{replica}/v1/rooms/{room}/messages?after={after}&limit=500"
                ))
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?
                .json()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let messages = page["messages"]
                .as_array()
                .ok_or_else(|| failed(format!("room {room}: {page}")))?;
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let seq = m["seq"].as_i64().unwrap_or_default();
                let id = m["client_id"].as_str().unwrap_or_default().to_owned();
                history.messages.push((seq, id));
            }
            let next = page["next_after"].as_i64().unwrap_or(after);
            if next <= after {
                break;
            }
            after = next;
        }
        out.insert(room.clone(), history);
    }
    Ok(out)
}

/// The name of the invariant about failed requests.
pub(crate) const NO_FAILURE: &str =
    "no request failed after the fault was detected, but those the design cannot save";

/// One invariant after one fault.
#[derive(Debug, Clone, Serialize)]
pub struct Invariant {
    pub name: &'static str,
    pub held: bool,
    /// How many times it was broken (0 when held).
    pub broken: u64,
    /// How many things were checked (acknowledgements, messages, probes, requests).
    pub checked: u64,
    pub note: String,
}

/// What a fault cost the users.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Requests that failed from the fault's start to the stop.
    pub failed: u64,
    /// The slowest request started from a second before the fault to two seconds after
    /// its end (or detection).
    #[serde(serialize_with = "optional_millis")]
    pub slowest: Option<Duration>,
    /// From the fault's start to the end of the last request that failed after it;
    /// 0 when none failed.
    #[serde(serialize_with = "millis")]
    pub time_to_recover: Duration,
    /// From the fault's start to when the balancer stopped sending the replica
    /// requests (replica faults), or to the fault itself (shared faults).
    #[serde(serialize_with = "optional_seconds")]
    pub detected_after: Option<Duration>,
}

fn optional_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

/// One fault's section of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosResult {
    pub fault: Fault,
    /// `ran` or `skipped`.
    pub status: &'static str,
    /// Why it was skipped (`cannot inject: ...`).
    pub reason: Option<String>,
    /// The scenario (in `scenarios`) that holds its per-second rows.
    pub scenario: Option<String>,
    /// The replica the fault was done to (or, for the clock, the replica it added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victim: Option<String>,
    #[serde(serialize_with = "optional_seconds")]
    pub start: Option<Duration>,
    #[serde(serialize_with = "optional_seconds")]
    pub end: Option<Duration>,
    pub invariants: Vec<Invariant>,
    pub cost: Option<Cost>,
    /// The failures the checker excused, by kind, and why.
    pub excused: Vec<String>,
    /// What else the run saw (the skewed replica's share, the balancer's bounds).
    pub notes: Vec<String>,
}

impl ChaosResult {
    pub fn skipped(fault: Fault, reason: String) -> ChaosResult {
        ChaosResult {
            fault,
            status: "skipped",
            reason: Some(reason),
            scenario: None,
            victim: None,
            start: None,
            end: None,
            invariants: Vec::new(),
            cost: None,
            excused: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Invariants broken, by name.
    pub fn broken(&self) -> Vec<&'static str> {
        self.invariants
            .iter()
            .filter(|i| !i.held)
            .map(|i| i.name)
            .collect()
    }
}

/// A sequence run: the faults one after another on one cluster and one store, under
/// the same users, each in its own window (from its start to the next one's), checked
/// per window and for the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceResult {
    /// The scenario (in `scenarios`) that holds the run's per-second rows.
    pub scenario: String,
    /// The faults asked, in order.
    pub faults: Vec<Fault>,
    /// One per fault, in order: what its window saw (the acknowledgements of the sends
    /// started in it, its requests, its logouts), or why it was skipped.
    pub windows: Vec<ChaosResult>,
    /// Every invariant over the whole run: the store's and the subscribers' once, the
    /// others summed over the windows (so a failure is excused only by its window's
    /// fault).
    pub invariants: Vec<Invariant>,
    /// Requests that failed from the first fault's start to the stop; the slowest
    /// request and the longest time to recover of any window.
    pub cost: Option<Cost>,
    pub notes: Vec<String>,
}

impl SequenceResult {
    /// Invariants broken, `window: name` for a window's, `whole run: name` for the run's.
    pub fn broken(&self) -> Vec<String> {
        self.windows
            .iter()
            .flat_map(|w| {
                w.broken()
                    .into_iter()
                    .map(move |n| format!("{}: {n}", w.fault.as_str()))
            })
            .chain(
                self.invariants
                    .iter()
                    .filter(|i| !i.held)
                    .map(|i| format!("whole run: {}", i.name)),
            )
            .collect()
    }

    /// Joins the whole run's check and its windows': the invariants a window checks
    /// are summed over the windows (each window's own excuses applied), the others are
    /// the run's.
    pub(crate) fn new(
        scenario: String,
        faults: Vec<Fault>,
        windows: Vec<ChaosResult>,
        whole: ChaosResult,
    ) -> SequenceResult {
        let ran: Vec<&ChaosResult> = windows.iter().filter(|w| w.status == "ran").collect();
        let invariants = whole
            .invariants
            .into_iter()
            .map(|i| {
                let parts: Vec<&Invariant> = ran
                    .iter()
                    .flat_map(|w| w.invariants.iter().filter(|x| x.name == i.name))
                    .collect();
                if parts.is_empty() {
                    return i;
                }
                let broken = parts.iter().map(|p| p.broken).sum();
                let checked = parts.iter().map(|p| p.checked).sum();
                invariant(
                    i.name,
                    broken,
                    checked,
                    format!("summed over the {} fault windows", parts.len()),
                )
            })
            .collect();
        let costs: Vec<&Cost> = ran.iter().filter_map(|w| w.cost.as_ref()).collect();
        let cost = (!costs.is_empty()).then(|| Cost {
            // Every request that failed from the first fault on: the windows' own, and
            // those in flight when a later fault started, which no window's cost counts.
            failed: whole.cost.as_ref().map_or(0, |c| c.failed),
            slowest: costs.iter().filter_map(|c| c.slowest).max(),
            time_to_recover: costs
                .iter()
                .map(|c| c.time_to_recover)
                .max()
                .unwrap_or_default(),
            detected_after: None,
        });
        SequenceResult {
            scenario,
            faults,
            windows,
            invariants,
            cost,
            notes: whole.notes,
        }
    }
}

/// One fault of a run as planned before its cluster starts: the replica it is done to
/// and the replica it adds, so that the replicas that need it (the cut one's proxy,
/// the clock one's libfaketime) are started so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub fault: Fault,
    /// The replica a fault on one replica is done to.
    pub victim: Option<String>,
    /// The replica it adds: the skewed one (clock), or in a sequence the one that
    /// replaces a replica killed or drained, at the fault's end.
    pub adds: Option<String>,
}

/// Plans `faults` on a cluster of `replicas` (`r1`..): each fault on one replica is
/// done to the lowest-numbered one still running; in a sequence a replica killed or
/// drained is replaced at its fault's end, so that every fault finds as many replicas
/// as the first. Replica ids are handed out in order (`r4` is the first added).
pub(crate) fn plan(faults: &[Fault], replicas: usize, sequence: bool) -> Vec<Planned> {
    let mut running: Vec<usize> = (1..=replicas).collect();
    let mut last = replicas;
    let mut next = || {
        last += 1;
        last
    };
    faults
        .iter()
        .map(|&fault| {
            let lowest = running.first().map(|n| format!("r{n}"));
            match fault {
                Fault::Kill | Fault::Drain => {
                    if !running.is_empty() {
                        running.remove(0);
                    }
                    let adds = sequence.then(|| {
                        let n = next();
                        running.push(n);
                        format!("r{n}")
                    });
                    Planned {
                        fault,
                        victim: lowest,
                        adds,
                    }
                }
                Fault::Pause | Fault::Cut => Planned {
                    fault,
                    victim: lowest,
                    adds: None,
                },
                Fault::Clock => Planned {
                    fault,
                    victim: None,
                    adds: Some(format!("r{}", next())),
                },
                Fault::RedisRestart | Fault::PostgresKill => Planned {
                    fault,
                    victim: None,
                    adds: None,
                },
            }
        })
        .collect()
}

/// When the fault happened, as the timeline saw it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FaultTimes {
    pub start: Option<Duration>,
    pub end: Option<Duration>,
    pub detected: Option<Duration>,
}

/// Everything the checker reads.
pub(crate) struct Evidence<'a> {
    pub fault: Fault,
    pub times: FaultTimes,
    pub log: &'a [Logged],
    pub acked: &'a [Ack],
    pub histories: &'a HashMap<String, History>,
    pub watched: &'a [Watched],
    pub revocations: &'a Revocations,
    pub broken_on_purpose: Option<Break>,
    /// The whole run's store and subscribers, or one fault's window of a sequence
    /// (its requests, acknowledgements and logouts only).
    pub scope: Scope,
    /// In a sequence, when the next fault started (the end of this window): a request
    /// still in flight then is the next fault's to excuse.
    pub next_fault: Option<(Fault, Duration)>,
}

/// What one check covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A whole run: every invariant.
    Run,
    /// One fault's window of a sequence run: what can be told apart by time (the
    /// acknowledgements of sends started in it, its requests, its logouts). Stored
    /// twice, gaps and the subscribers are the whole run's, checked once for it.
    Window,
}

fn invariant(name: &'static str, broken: u64, checked: u64, note: String) -> Invariant {
    Invariant {
        name,
        held: broken == 0,
        broken,
        checked,
        note,
    }
}

/// Checks every invariant against what the run left.
pub(crate) fn check(e: &Evidence<'_>, scenario: &str) -> ChaosResult {
    let mut acked: Vec<Ack> = e.acked.to_vec();
    if e.broken_on_purpose == Some(Break::LostAck) {
        // What a server acknowledging before its commit would leave: an ack the store
        // does not have.
        if let Some(room) = e.histories.keys().next() {
            acked.push(Ack {
                room: room.clone(),
                client_id: "never-stored".to_owned(),
                seq: 1,
                at: e.times.start.unwrap_or_default(),
            });
        }
    }
    let stored: HashMap<(&str, &str), Vec<i64>> = {
        let mut m: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
        for (room, h) in e.histories {
            for (seq, id) in &h.messages {
                m.entry((room.as_str(), id.as_str()))
                    .or_default()
                    .push(*seq);
            }
        }
        m
    };
    let lost = acked
        .iter()
        .filter(|a| {
            stored
                .get(&(a.room.as_str(), a.client_id.as_str()))
                .is_none_or(|seqs| !seqs.contains(&a.seq))
        })
        .count() as u64;
    let messages: u64 = e.histories.values().map(|h| h.messages.len() as u64).sum();
    let twice: u64 = stored
        .values()
        .map(|seqs| seqs.len().saturating_sub(1) as u64)
        .sum();
    let mut gaps = 0u64;
    for h in e.histories.values() {
        let mut expected = 1;
        for (seq, _) in &h.messages {
            if *seq != expected {
                gaps += 1;
            }
            expected = seq + 1;
        }
    }
    let (mut sub_broken, mut sub_seen, mut resumes) = (0u64, 0u64, 0u64);
    let mut damaged = Vec::new();
    for w in e.watched {
        let last = e
            .histories
            .get(&w.room)
            .and_then(|h| h.messages.last())
            .map_or(0, |m| m.0);
        let (broken, seen) = w.check(last);
        if broken > 0 && e.scope == Scope::Run {
            let d = w.damage(last);
            damaged.push(format!(
                "subscriber of room {} pinned to {} ({} resumes): {} received twice or out of \
                 order, {} skipped, {} never delivered (last received {}, the room's last {last})",
                w.room,
                w.replica,
                w.resumes,
                d.duplicates,
                d.skipped,
                d.undelivered,
                w.seqs.last().copied().unwrap_or(0),
            ));
        }
        sub_broken += broken;
        sub_seen += seen;
        resumes += w.resumes;
    }
    let authenticated = e.log.iter().filter(|l| !matches!(l.what, "login")).count() as u64;
    let logged_out = e
        .log
        .iter()
        .filter(|l| l.outcome == Outcome::LoggedOut)
        .count() as u64;

    // Failures: those the design cannot save are excused, the others break it.
    let start = e.times.start.unwrap_or_default();
    let detected = e.times.detected.unwrap_or(start);
    let end = e.times.end.unwrap_or(detected).max(detected);
    let failed: Vec<&Logged> = e
        .log
        .iter()
        .filter(|l| l.outcome == Outcome::Failed)
        .collect();
    let mut excused: HashMap<String, u64> = HashMap::new();
    let mut unexcused = 0u64;
    let mut unexcused_list = Vec::new();
    let mut after_detection = 0u64;
    for f in &failed {
        if let Some((next, at)) = e.next_fault {
            if f.started + f.latency >= at {
                *excused
                    .entry(format!(
                        "{} in flight when the next fault ({}) started",
                        f.what,
                        next.as_str()
                    ))
                    .or_default() += 1;
                continue;
            }
        }
        if f.started < start {
            *excused
                .entry(format!("{} started before the fault", f.what))
                .or_default() += 1;
            continue;
        }
        let post = matches!(f.what, "send" | "join" | "login" | "refresh");
        let why =
            if f.started < detected {
                Some(match (e.fault.on_a_replica(), post, f.status.as_ref().ok()) {
                (true, true, _) => {
                    "sent to the faulty replica before the balancer took it out: a POST the \
                     balancer cannot replay, since it may have reached the replica"
                }
                (true, false, Some(_)) => {
                    "answered with an error by the faulty replica before the balancer took it \
                     out: the balancer replays a GET only when the replica gave no answer"
                }
                (true, false, None) => "in flight on the faulty replica",
                (false, _, _) => "in flight when the shared backend went away",
            })
            } else if !e.fault.on_a_replica() && f.started <= end {
                Some(
                    "while the one backend every replica shares was down: no replica can serve \
                 what needs it",
                )
            } else {
                None
            };
        after_detection += u64::from(f.started >= detected);
        let status = match &f.status {
            Ok(code) => code.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        match why {
            Some(why) => {
                *excused
                    .entry(format!("{} ({status}): {why}", f.what))
                    .or_default() += 1
            }
            None => {
                unexcused += 1;
                if unexcused_list.len() < 10 {
                    unexcused_list.push(format!(
                        "failed after detection: {} ({}) started at {:.3} s, took {:.0} ms",
                        f.what,
                        f.status
                            .as_ref()
                            .map_or_else(Clone::clone, ToString::to_string),
                        f.started.as_secs_f64(),
                        f.latency.as_secs_f64() * 1000.0
                    ));
                }
            }
        }
    }
    let mut excused: Vec<String> = excused
        .into_iter()
        .map(|(why, n)| format!("{n} x {why}"))
        .collect();
    excused.sort();
    // A failure the next fault of a sequence excuses is that fault's cost, not this one's.
    let next_faults = |f: &Logged| {
        e.next_fault
            .is_some_and(|(_, at)| f.started + f.latency >= at)
    };
    let after_start: Vec<&&Logged> = failed
        .iter()
        .filter(|f| f.started >= start && !next_faults(f))
        .collect();
    let recover = after_start
        .iter()
        .map(|f| f.started + f.latency)
        .max()
        .map_or(Duration::ZERO, |t| t.saturating_sub(start));
    let around_from = start.saturating_sub(Duration::from_secs(1));
    let around_to = end + Duration::from_secs(2);
    let slowest = e
        .log
        .iter()
        .filter(|l| l.started >= around_from && l.started <= around_to)
        .map(|l| l.latency)
        .max();

    let lost_acks = invariant(
        "no acknowledged message lost",
        lost,
        acked.len() as u64,
        format!(
            "{} sends acknowledged, looked up in the store after the run",
            acked.len()
        ),
    );
    let store_wide = [
        invariant(
            "no message stored twice for one client id",
            twice,
            messages,
            format!("{messages} messages in the store"),
        ),
        invariant(
            "every room's seqs gap-free",
            gaps,
            messages,
            format!("{} rooms", e.histories.len()),
        ),
        invariant(
            "every subscriber saw each seq once, in order",
            sub_broken,
            sub_seen,
            format!(
                "{} subscribers over WebSocket, {resumes} resumes; a duplicate, a gap or a \
                 message never delivered each count once",
                e.watched.len()
            ),
        ),
    ];
    let per_request = [
        invariant(
            "no user logged out (token sessions)",
            logged_out,
            authenticated,
            "401s to authenticated requests and refreshes".to_owned(),
        ),
        invariant(
            "no revoked token accepted after the bound",
            e.revocations.accepted,
            e.revocations.probes,
            format!(
                "{} logouts; each token asked of every running replica {} s after; {} asks \
                 skipped (a replica paused, or cut off from bus and store, whose bound is the \
                 token's life)",
                e.revocations.logouts,
                REVOCATION_BOUND.as_secs(),
                e.revocations.not_asked
            ),
        ),
        invariant(
            NO_FAILURE,
            unexcused,
            e.log.iter().filter(|l| l.started >= detected).count() as u64,
            format!(
                "{after_detection} failed after detection, {} excused (see excused)",
                after_detection - unexcused.min(after_detection)
            ),
        ),
    ];
    let invariants = match e.scope {
        Scope::Run => std::iter::once(lost_acks)
            .chain(store_wide)
            .chain(per_request)
            .collect(),
        Scope::Window => std::iter::once(lost_acks).chain(per_request).collect(),
    };
    ChaosResult {
        fault: e.fault,
        status: "ran",
        reason: None,
        scenario: Some(scenario.to_owned()),
        victim: None,
        start: e.times.start,
        end: e.times.end,
        invariants,
        cost: Some(Cost {
            failed: after_start.len() as u64,
            slowest,
            time_to_recover: recover,
            detected_after: e.times.detected.map(|d| d.saturating_sub(start)),
        }),
        excused,
        notes: damaged.into_iter().chain(unexcused_list).collect(),
    }
}

/// The subscribers: (user, the room it is in, the replica it is pinned to), so that
/// every room has one and every replica, the victim too, holds one.
pub(crate) fn subscriber_plan(
    users: usize,
    rooms: usize,
    replicas: usize,
) -> Vec<(usize, usize, String)> {
    let n = rooms.max(replicas).min(users.max(1) * replicas.max(1));
    (0..n)
        .map(|i| {
            let user = i % users.max(1);
            (
                user,
                user % rooms.max(1),
                format!("r{}", i % replicas.max(1) + 1),
            )
        })
        .collect()
}

/// The unique client ids of a list, for tests.
#[cfg(test)]
fn unique(ids: &[&str]) -> usize {
    ids.iter().collect::<std::collections::HashSet<_>>().len()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn evidence<'a>(
        acked: &'a [Ack],
        histories: &'a HashMap<String, History>,
        watched: &'a [Watched],
        revocations: &'a Revocations,
        log: &'a [Logged],
    ) -> Evidence<'a> {
        Evidence {
            fault: Fault::Kill,
            times: FaultTimes {
                start: Some(Duration::from_secs(3)),
                end: Some(Duration::from_secs(4)),
                detected: Some(Duration::from_secs(4)),
            },
            log,
            acked,
            histories,
            watched,
            revocations,
            broken_on_purpose: None,
            scope: Scope::Run,
            next_fault: None,
        }
    }

    fn history(ids: &[(i64, &str)]) -> HashMap<String, History> {
        let mut m = HashMap::new();
        m.insert(
            "room".to_owned(),
            History {
                messages: ids.iter().map(|(s, i)| (*s, (*i).to_owned())).collect(),
            },
        );
        m
    }

    fn ack(id: &str, seq: i64) -> Ack {
        Ack {
            at: Duration::from_secs(3),
            room: "room".into(),
            client_id: id.into(),
            seq,
        }
    }

    fn held(r: &ChaosResult, name: &str) -> bool {
        r.invariants
            .iter()
            .find(|i| i.name.starts_with(name))
            .unwrap_or_else(|| panic!("no invariant {name}"))
            .held
    }

    #[test]
    fn a_clean_run_holds_and_each_kind_of_damage_breaks_its_invariant() {
        let revocations = Revocations::default();
        let good = history(&[(1, "a"), (2, "b"), (3, "c")]);
        let acks = [ack("a", 1), ack("c", 3)];
        let clean = check(&evidence(&acks, &good, &[], &revocations, &[]), "s");
        assert!(clean.broken().is_empty(), "{:?}", clean.invariants);

        // An acknowledged message the store does not have.
        let lost = [ack("a", 1), ack("z", 4)];
        let r = check(&evidence(&lost, &good, &[], &revocations, &[]), "s");
        assert!(!held(&r, "no acknowledged message lost"));

        // A client id stored twice, and a gap.
        let bad = history(&[(1, "a"), (2, "a"), (4, "c")]);
        let r = check(&evidence(&[], &bad, &[], &revocations, &[]), "s");
        assert!(!held(&r, "no message stored twice"));
        assert!(!held(&r, "every room's seqs gap-free"));
        assert_eq!(unique(&["a", "a", "c"]), 2);

        // A failure after detection that nothing excuses; one before it is excused.
        let failure = |at: u64| Logged {
            started: Duration::from_secs(at),
            latency: Duration::from_millis(5),
            what: "me",
            outcome: Outcome::Failed,
            status: Ok(502),
        };
        let log = [failure(3), failure(5)];
        let r = check(&evidence(&[], &good, &[], &revocations, &log), "s");
        assert!(!held(&r, "no request failed"));
        assert_eq!(r.excused.len(), 1, "{:?}", r.excused);

        // The switch that feeds the checker a lost ack makes it fail.
        let mut e = evidence(&acks, &good, &[], &revocations, &[]);
        e.broken_on_purpose = Some(Break::LostAck);
        assert!(!held(&check(&e, "s"), "no acknowledged message lost"));

        // A revoked token accepted.
        let leaky = Revocations {
            logouts: 1,
            probes: 3,
            accepted: 1,
            not_asked: 0,
        };
        let r = check(&evidence(&[], &good, &[], &leaky, &[]), "s");
        assert!(!held(&r, "no revoked token"));
    }

    #[test]
    fn a_sequence_finds_a_running_replica_for_every_fault_and_replaces_the_ones_it_ends() {
        use Fault::*;
        let names = |p: &[Planned]| -> Vec<(Option<String>, Option<String>)> {
            p.iter()
                .map(|p| (p.victim.clone(), p.adds.clone()))
                .collect()
        };
        let r = |n: &str| Some(n.to_owned());
        // Alone, each fault is done to r1 and the clock adds r4, as before sequences.
        for fault in [Kill, Pause, Drain, Cut] {
            assert_eq!(names(&plan(&[fault], 3, false)), [(r("r1"), None)]);
        }
        assert_eq!(names(&plan(&[Clock], 3, false)), [(None, r("r4"))]);
        // In a sequence a killed or drained replica is replaced, and the next fault is
        // done to the lowest-numbered replica still running.
        let p = plan(
            &[Kill, Pause, Drain, Cut, RedisRestart, Clock, PostgresKill],
            3,
            true,
        );
        assert_eq!(
            names(&p),
            [
                (r("r1"), r("r4")),
                (r("r2"), None),
                (r("r2"), r("r5")),
                (r("r3"), None),
                (None, None),
                (None, r("r6")),
                (None, None),
            ]
        );
    }

    #[test]
    fn a_sequence_sums_its_windows_and_a_broken_window_breaks_the_whole_run() {
        let revocations = Revocations::default();
        let good = history(&[(1, "a"), (2, "b")]);
        let whole = check(&evidence(&[], &good, &[], &revocations, &[]), "s");
        let window = |fault, broken: u64| {
            let mut e = evidence(&[], &good, &[], &revocations, &[]);
            e.fault = fault;
            e.scope = Scope::Window;
            let mut r = check(&e, "s");
            let i = r
                .invariants
                .iter_mut()
                .find(|i| i.name == NO_FAILURE)
                .expect("the failure invariant");
            i.broken = broken;
            i.checked = 10;
            i.held = broken == 0;
            r
        };
        let windows = vec![window(Fault::Kill, 0), window(Fault::Pause, 2)];
        // A window checks what it can tell apart by time, not the store's invariants.
        assert_eq!(windows[0].invariants.len(), 4);
        let s = SequenceResult::new("s".into(), vec![Fault::Kill, Fault::Pause], windows, whole);
        assert_eq!(s.invariants.len(), 7);
        let failures = s
            .invariants
            .iter()
            .find(|i| i.name == NO_FAILURE)
            .expect("summed");
        assert_eq!(
            (failures.broken, failures.checked, failures.held),
            (2, 20, false)
        );
        assert_eq!(
            s.broken(),
            [
                format!("pause: {NO_FAILURE}"),
                format!("whole run: {NO_FAILURE}")
            ]
        );
    }

    #[test]
    fn fault_lists_parse_and_refuse_unknown_names() {
        let all = Fault::parse_list(&["all".to_owned()]).expect("all");
        assert_eq!(all.len(), Fault::ALL.len());
        let two = Fault::parse_list(&["pause,cut".to_owned()]).expect("two");
        assert_eq!(two, [Fault::Pause, Fault::Cut]);
        let err = Fault::parse_list(&["nap".to_owned()]).expect_err("refused");
        assert!(err.contains("nap"), "{err}");
    }

    #[test]
    fn every_replica_gets_a_subscriber() {
        let plan = subscriber_plan(30, 3, 3);
        let pinned: HashSet<&str> = plan.iter().map(|(_, _, r)| r.as_str()).collect();
        assert_eq!(pinned.len(), 3);
        let rooms: HashSet<usize> = plan.iter().map(|(_, room, _)| *room).collect();
        assert_eq!(rooms.len(), 3);
        // Each user watches its own room (user i is in room i % rooms).
        assert!(plan.iter().all(|(user, room, _)| user % 3 == *room));
    }
}
