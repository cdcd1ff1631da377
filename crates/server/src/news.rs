//! News between replicas: identity's revocations and key rotations, carried by the bus,
//! and the confirmations that let a revocation answer only once every live replica
//! refuses what it revoked.
//!
//! The bus only makes news fast. Everything it carries is in the store first, and every
//! replica reads the store on its upkeep tick, so a replica cut off from the bus (or one
//! that just started) still converges; a [`Delivery::Gap`] makes it read the store now.
//!
//! # Read-your-logout
//!
//! Every replica announces itself on the bus every [`HEARTBEAT`]; a replica heard from
//! within [`LIVE_FOR`] is live. The membership is that and nothing more: no new service,
//! no table, the bus herd already runs. Its topics are scoped to the deployment
//! ([`Auth::deployment`]), so replicas of two deployments sharing one Redis never count
//! each other.
//!
//! Identity numbers its notices ([`Auth::announced`]); the relay publishes each with its
//! number and this replica's incarnation (a random id per start). A replica that applies
//! a peer's notice answers with a confirmation of that number. Each replica hears a
//! publisher's messages in the order they were published, so a confirmation of `n`
//! means every notice up to `n` was applied (or read from the store after a gap).
//! [`Confirmations::revoke_everywhere`] runs a revocation, then waits until every peer
//! that was live has confirmed through the revocation's number, or until the deadline;
//! it returns the peers that had not confirmed by then ([`Unconfirmed`]), which converge
//! by their upkeep as before.
//!
//! # Clock skew
//!
//! Each announcement carries the sender's clock (identity's, the one tokens are stamped
//! with). A replica compares it with its own on receipt: the difference is the peer's
//! clock minus this one's, less the bus's delay, so the largest of a peer's last
//! [`CLOCK_SAMPLES`] differences is the best estimate. When more live peers disagree
//! with this replica's clock by more than the verification leeway than agree with it
//! (itself counted as agreeing), this replica is the one that is off:
//! [`Confirmations::clock_skew`] says so, `/readyz` fails and it issues no tokens
//! (its tokens would be refused elsewhere, or the others' by it). Two replicas that
//! disagree cannot tell which is wrong, and neither steps back; a replica that hears no
//! peer (alone, or cut off from the bus) has nothing to compare with.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use herd_bus::{Bus, Delivery};
use herd_identity::{Auth, Notice};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub const REVOCATIONS: &str = "identity.revocations";
pub const KEYS: &str = "identity.keys";

/// How often a replica announces itself to its peers.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A replica is live while it was last heard from within this long: three heartbeats,
/// so that one late or lost announcement does not drop it.
pub const LIVE_FOR: Duration = Duration::from_secs(3);

/// How many of a peer's announcements the clock comparison keeps.
pub const CLOCK_SAMPLES: usize = 5;

/// How long after it starts listening a replica on a shared bus waits before it trusts
/// its clock: long enough to hear every live peer announce itself once.
pub const CLOCK_SETTLE: Duration = Duration::from_millis(1500);

/// How long a revocation waits for the live replicas to confirm it, unless configured
/// otherwise (`--confirm-deadline`).
pub const DEFAULT_CONFIRM_DEADLINE: Duration = Duration::from_secs(1);

/// The header naming, on a revocation's answer, the live replicas that had not
/// confirmed it by the deadline.
pub const UNCONFIRMED_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("herd-unconfirmed");

/// Who published a notice: the deployment, the replica and its incarnation, and the
/// notice's number.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Origin {
    deployment: String,
    replica: String,
    incarnation: String,
    seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Revoked {
    sid: String,
    until: i64,
    /// Absent from a replica older than confirmations: applied, not confirmed.
    #[serde(default)]
    from: Option<Origin>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeysChanged {
    from: Origin,
}

/// A replica's announcement of itself.
#[derive(Debug, Serialize, Deserialize)]
struct Presence {
    replica: String,
    incarnation: String,
    /// A replica stopping says so, and its peers stop waiting for it at once.
    #[serde(default)]
    leaving: bool,
    /// The sender's clock when it sent this, Unix seconds (absent from older replicas).
    #[serde(default)]
    at: Option<i64>,
}

/// "I have applied your notices through `seq`."
#[derive(Debug, Serialize, Deserialize)]
struct Confirm {
    to: String,
    seq: u64,
    by: String,
}

/// The live replicas that had not confirmed a revocation when its wait ended: empty
/// when every one confirmed (or none but this one is live).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unconfirmed(pub Vec<String>);

impl Unconfirmed {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The header's value, `r2, r3`; `None` when every live replica confirmed.
    pub fn header_value(&self) -> Option<axum::http::HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        // Replica ids were checked to be valid header values at their start-up
        // (`check_replica_id`), and ", " keeps them so.
        axum::http::HeaderValue::from_str(&self.0.join(", ")).ok()
    }

    /// Adds the header to `response` when some replica did not confirm.
    pub fn stamp(&self, response: &mut axum::response::Response) {
        if let Some(value) = self.header_value() {
            response.headers_mut().insert(UNCONFIRMED_HEADER, value);
        }
    }
}

impl fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// This replica's view of its peers and of their confirmations, and the one way a
/// revocation waits for them ([`Confirmations::revoke_everywhere`]). Cheap to clone.
#[derive(Clone)]
pub struct Confirmations {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Auth,
    bus: Bus,
    replica: String,
    incarnation: String,
    deployment: String,
    deadline: Duration,
    state: Mutex<Peers>,
    /// The number of the last notice whose publication failed: no peer will confirm it.
    failed: AtomicU64,
    /// Bumped whenever a confirmation, a presence or a failed publication changes the
    /// above.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Peers {
    /// Replica id -> (incarnation, when last heard).
    seen: HashMap<String, (String, Instant)>,
    /// Replica id -> the highest number of ours it confirmed.
    confirmed: HashMap<String, u64>,
    /// Replica id -> its clock minus ours at its last announcements, seconds.
    clocks: HashMap<String, std::collections::VecDeque<i64>>,
    /// When the relay started listening to peers (none: it has not).
    listening_since: Option<Instant>,
    /// Whether a clock problem was logged (once per onset, not per check).
    skew_logged: bool,
}

impl fmt::Debug for Confirmations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Confirmations")
            .field("replica", &self.inner.replica)
            .field("deadline", &self.inner.deadline)
            .finish_non_exhaustive()
    }
}

impl Confirmations {
    /// For replica `replica` (its id, as peers name it), waiting at most `deadline`.
    pub fn new(auth: Auth, bus: Bus, replica: &str, deadline: Duration) -> Confirmations {
        Confirmations {
            inner: Arc::new(Inner {
                deployment: auth.deployment(),
                auth,
                bus,
                replica: replica.to_owned(),
                incarnation: herd_identity::random_id(),
                deadline,
                state: Mutex::default(),
                failed: AtomicU64::new(0),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// The one way a revocation answers: runs `revoke` (an identity call that revokes
    /// sessions or keys: logout, a refresh that may detect reuse, a key revocation, and
    /// whatever else ends sessions), then, if it announced anything, waits until every
    /// replica live now has confirmed applying it, or until the deadline. Returns what
    /// `revoke` returned and the replicas that had not confirmed, which are also logged.
    ///
    /// A revocation made on this replica meanwhile by another request is waited for too
    /// (confirmations are of "everything through number n"): never less than asked.
    pub async fn revoke_everywhere<T>(&self, revoke: impl Future<Output = T>) -> (T, Unconfirmed) {
        let before = self.inner.auth.announced();
        let outcome = revoke.await;
        let through = self.inner.auth.announced();
        if through == before {
            return (outcome, Unconfirmed::default());
        }
        let unconfirmed = self.wait_for(through).await;
        if !unconfirmed.is_empty() {
            tracing::warn!(
                unconfirmed = %unconfirmed,
                deadline = ?self.inner.deadline,
                "revoked, but some live replicas did not confirm in time; they will refuse at their next upkeep"
            );
        }
        (outcome, unconfirmed)
    }

    /// The replicas other than this one heard from within [`LIVE_FOR`], by id.
    pub fn live_peers(&self) -> Vec<String> {
        let peers = self.peers();
        let mut live: Vec<String> = peers
            .seen
            .iter()
            .filter(|(_, (_, at))| at.elapsed() <= LIVE_FOR)
            .map(|(id, _)| id.clone())
            .collect();
        live.sort();
        live
    }

    /// Whether this replica has listened to its peers long enough to know whether its
    /// clock agrees with theirs (at once on a bus of its own: it has no peers).
    pub fn clock_settled(&self) -> bool {
        !self.inner.bus.is_shared()
            || self
                .peers()
                .listening_since
                .is_some_and(|since| since.elapsed() >= CLOCK_SETTLE)
    }

    /// Why this replica's clock cannot be trusted, if it cannot: its live peers' clocks
    /// mostly disagree with it by more than the leeway (see the module's "Clock skew").
    pub fn clock_skew(&self) -> Option<String> {
        let leeway = i64::try_from(self.inner.auth.config().leeway.as_secs()).unwrap_or(i64::MAX);
        let live: Vec<String> = self.live_peers();
        let mut peers = self.peers();
        // Each peer's clock minus ours: the bus's delay only lowers a difference, so the
        // largest of the last few is the closest.
        let mut off: Vec<i64> = live
            .iter()
            .filter_map(|id| peers.clocks.get(id)?.iter().copied().max())
            .collect();
        let agree = 1 + off.iter().filter(|d| d.abs() <= leeway).count();
        off.retain(|d| d.abs() > leeway);
        if off.len() <= agree {
            if peers.skew_logged {
                peers.skew_logged = false;
                tracing::info!("this replica's clock agrees with its peers' again");
            }
            return None;
        }
        off.sort_unstable();
        let ahead = -off[off.len() / 2];
        let problem = format!(
            "this replica's clock is {} s {} {} of its {} live peers' (the leeway is \
             {leeway} s): it issues no tokens and is not ready until its clock is fixed",
            ahead.abs(),
            if ahead > 0 { "ahead of" } else { "behind" },
            off.len(),
            live.len()
        );
        if !peers.skew_logged {
            peers.skew_logged = true;
            tracing::error!(ahead_s = ahead, "{problem}");
        }
        Some(problem)
    }

    /// Waits until every live peer confirmed through `through`, or the deadline.
    async fn wait_for(&self, through: u64) -> Unconfirmed {
        let live = self.live_peers();
        if live.is_empty() {
            return Unconfirmed::default();
        }
        let inner = &self.inner;
        inner.bus.hurry(inner.deadline);
        let mut changed = inner.changed.subscribe();
        let deadline = Instant::now() + inner.deadline;
        loop {
            let pending: Vec<String> = {
                let peers = self.peers();
                live.iter()
                    .filter(|id| {
                        // A peer that said it is leaving has stopped refusing anything.
                        peers.seen.contains_key(*id)
                            && peers.confirmed.get(*id).copied().unwrap_or(0) < through
                    })
                    .cloned()
                    .collect()
            };
            if pending.is_empty() || inner.failed.load(Ordering::Acquire) >= through {
                return Unconfirmed(pending);
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Unconfirmed(pending);
            }
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn topic(&self, what: &str) -> String {
        format!("identity.{what}.{}", self.inner.deployment)
    }

    fn origin(&self, seq: u64) -> Origin {
        Origin {
            deployment: self.inner.deployment.clone(),
            replica: self.inner.replica.clone(),
            incarnation: self.inner.incarnation.clone(),
            seq,
        }
    }

    /// Announces this replica to its peers once (the relay does so every
    /// [`HEARTBEAT`]); with `leaving`, tells them to stop waiting for it.
    pub async fn announce(&self, leaving: bool) -> Result<(), herd_bus::BusError> {
        let presence = Presence {
            replica: self.inner.replica.clone(),
            incarnation: self.inner.incarnation.clone(),
            leaving,
            at: Some(self.inner.auth.now()),
        };
        self.inner
            .bus
            .publish(
                &self.topic("replicas"),
                &serde_json::to_vec(&presence).unwrap_or_default(),
            )
            .await
    }

    fn heard(&self, presence: Presence) {
        if presence.incarnation == self.inner.incarnation {
            return;
        }
        if presence.replica == self.inner.replica {
            // Peers would take one's confirmations for the other's: the guarantee needs
            // ids unique within a deployment.
            tracing::warn!(
                replica = %presence.replica,
                "another replica announces this replica's id; give each replica its own --replica-id"
            );
            return;
        }
        let now = self.inner.auth.now();
        let mut peers = self.peers();
        if presence.leaving {
            peers.seen.remove(&presence.replica);
            peers.confirmed.remove(&presence.replica);
            peers.clocks.remove(&presence.replica);
        } else {
            if let Some(at) = presence.at {
                let samples = peers.clocks.entry(presence.replica.clone()).or_default();
                if samples.len() == CLOCK_SAMPLES {
                    samples.pop_front();
                }
                samples.push_back(at - now);
            }
            let entry = peers
                .seen
                .entry(presence.replica.clone())
                .or_insert_with(|| (presence.incarnation.clone(), Instant::now()));
            if entry.0 != presence.incarnation {
                // A replica restarted under the same id: what the old one confirmed
                // says nothing of the new one.
                peers.confirmed.remove(&presence.replica);
            }
            peers
                .seen
                .insert(presence.replica, (presence.incarnation, Instant::now()));
        }
        drop(peers);
        self.bump();
    }

    fn confirmed(&self, confirm: Confirm) {
        if confirm.to != self.inner.incarnation {
            return;
        }
        let mut peers = self.peers();
        let best = peers.confirmed.entry(confirm.by).or_insert(0);
        *best = (*best).max(confirm.seq);
        drop(peers);
        self.bump();
    }

    /// Tells the publisher of `from` that its notice is applied here, if it is a peer
    /// of this deployment and not this replica.
    async fn confirm(&self, from: &Origin) {
        if from.deployment != self.inner.deployment || from.incarnation == self.inner.incarnation {
            return;
        }
        let confirm = Confirm {
            to: from.incarnation.clone(),
            seq: from.seq,
            by: self.inner.replica.clone(),
        };
        if let Err(e) = self
            .inner
            .bus
            .publish(
                &self.topic("confirms"),
                &serde_json::to_vec(&confirm).unwrap_or_default(),
            )
            .await
        {
            tracing::debug!(error = %e, "could not confirm a revocation; its publisher will name this replica");
        }
    }

    fn published(&self, seq: u64, ok: bool) {
        if !ok {
            self.inner.failed.fetch_max(seq, Ordering::AcqRel);
        }
        self.bump();
    }

    fn is_mine(&self, from: &Origin) -> bool {
        from.incarnation == self.inner.incarnation
    }
}

/// Starts relaying: this replica's notices out to the bus, other replicas' news in, this
/// replica's presence out every [`HEARTBEAT`], and confirmations both ways.
/// Subscriptions are in effect and this replica announced when this returns, so nothing
/// published after is missed.
pub async fn relay(confirmations: Confirmations, tasks: &mut JoinSet<()>) {
    let auth = confirmations.inner.auth.clone();
    let bus = confirmations.inner.bus.clone();
    let mut notices = auth.notices();
    let mut revocations = bus.subscribe(REVOCATIONS).await;
    let mut keys = bus.subscribe(KEYS).await;
    let mut presence = bus.subscribe(&confirmations.topic("replicas")).await;
    let mut confirms = bus.subscribe(&confirmations.topic("confirms")).await;
    confirmations.peers().listening_since = Some(Instant::now());

    let out = confirmations.clone();
    tasks.spawn(async move {
        loop {
            let (seq, topic, payload) = match notices.recv().await {
                Ok((seq, Notice::Revoked { session_id, until })) => {
                    let body = Revoked {
                        sid: session_id,
                        until,
                        from: Some(out.origin(seq)),
                    };
                    (seq, REVOCATIONS, serde_json::to_vec(&body).unwrap_or_default())
                }
                Ok((seq, Notice::KeysChanged)) => {
                    let body = KeysChanged {
                        from: out.origin(seq),
                    };
                    (seq, KEYS, serde_json::to_vec(&body).unwrap_or_default())
                }
                // Missed notices are in the store; peers read them on their next tick.
                // Whoever waits for them is told they failed, rather than wait in vain.
                Err(RecvError::Lagged(_)) => {
                    out.published(out.inner.auth.announced(), false);
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            let result = out.inner.bus.publish(topic, &payload).await;
            if let Err(e) = &result {
                tracing::warn!(topic, error = %e, "could not publish; peers will read the store on their next upkeep");
            }
            out.published(seq, result.is_ok());
        }
    });

    let heartbeat = confirmations.clone();
    if let Err(e) = heartbeat.announce(false).await {
        tracing::debug!(error = %e, "could not announce this replica; will retry");
    }
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = heartbeat.announce(false).await {
                tracing::debug!(error = %e, "could not announce this replica; will retry");
            }
        }
    });

    let news = confirmations;
    tasks.spawn(async move {
        loop {
            tokio::select! {
                delivery = revocations.recv() => match delivery {
                    Some(Delivery::Message { payload, .. }) => match serde_json::from_slice::<Revoked>(&payload) {
                        Ok(r) => {
                            if r.from.as_ref().is_some_and(|from| news.is_mine(from)) {
                                continue;
                            }
                            auth.apply_revocation(&r.sid, r.until);
                            if let Some(from) = &r.from {
                                news.confirm(from).await;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable revocation on the bus"),
                    },
                    Some(Delivery::Gap) => {
                        if let Err(e) = auth.sync_revocations().await {
                            tracing::warn!(error = %e, "could not catch up on revocations after a bus gap");
                        }
                    }
                    None => break,
                },
                delivery = keys.recv() => match delivery {
                    Some(delivery) => {
                        let from = match &delivery {
                            Delivery::Message { payload, .. } => {
                                serde_json::from_slice::<KeysChanged>(payload).ok().map(|k| k.from)
                            }
                            Delivery::Gap => None,
                        };
                        if from.as_ref().is_some_and(|from| news.is_mine(from)) {
                            continue;
                        }
                        match auth.reload_keys().await {
                            Ok(_) => {
                                if let Some(from) = &from {
                                    news.confirm(from).await;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "could not reload the key ring"),
                        }
                    }
                    None => break,
                },
                delivery = presence.recv() => match delivery {
                    Some(Delivery::Message { payload, .. }) => {
                        if let Ok(p) = serde_json::from_slice::<Presence>(&payload) {
                            news.heard(p);
                        }
                    }
                    Some(Delivery::Gap) => {}
                    None => break,
                },
                delivery = confirms.recv() => match delivery {
                    Some(Delivery::Message { payload, .. }) => {
                        if let Ok(c) = serde_json::from_slice::<Confirm>(&payload) {
                            news.confirmed(c);
                        }
                    }
                    Some(Delivery::Gap) => {}
                    None => break,
                },
            }
        }
    });
}
