//! The replica table and the child processes behind it.
//!
//! Each replica is a slot with a stable id (`r1`, `r2`, ...). A slot's process can die
//! and, with `respawn`, come back under the same id on a new port: the `generation`
//! tells the tasks of a dead incarnation (its health checks) that they are stale.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::Notify;

use crate::balancer::ProxyBody;
use crate::{ClusterConfig, LabError};

/// Where a replica is in its life, as `GET /_cluster/replicas` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Spawned; its `/readyz` has not passed yet.
    Starting,
    /// Receiving requests.
    Up,
    /// Its `/readyz` failed, or a connection to it did: no requests until it passes.
    Down,
    /// No new requests; it was sent SIGTERM and finishes what it has.
    Draining,
    /// The process has exited.
    Dead,
}

/// How a replica's process ended, so that a drain is not mistaken for a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ended {
    /// SIGKILLed through the admin API.
    Killed,
    /// Drained through the admin API: it stopped on its own after SIGTERM.
    Drained,
    /// It exited without being asked to.
    Crashed,
    /// The cluster was stopping.
    Stopped,
}

/// How many seconds of per-replica traffic the admin API shows.
pub const TRAFFIC_SECONDS: usize = 30;

/// One replica as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaView {
    pub id: String,
    pub state: State,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    /// Requests the balancer sent it since it was added, from every client.
    pub requests_served: u64,
    /// Requests the balancer sent it in each of the last [`TRAFFIC_SECONDS`] seconds,
    /// from every client, oldest first; the last entry is the second in progress.
    pub recent_requests: Vec<u32>,
    /// How its process ended, while it is dead; `None` while it runs.
    pub ended: Option<Ended>,
}

/// Requests counted per second over a sliding window of [`TRAFFIC_SECONDS`].
#[derive(Debug, Clone)]
struct Traffic {
    counts: [u32; TRAFFIC_SECONDS],
    /// The second (since the cluster started) the last entry of `counts` is for.
    latest: u64,
}

impl Traffic {
    fn new() -> Traffic {
        Traffic {
            counts: [0; TRAFFIC_SECONDS],
            latest: 0,
        }
    }

    /// Moves the window so that its last entry is second `now`.
    fn advance(&mut self, now: u64) {
        if now <= self.latest {
            return;
        }
        let shift =
            usize::try_from(now - self.latest).map_or(TRAFFIC_SECONDS, |s| s.min(TRAFFIC_SECONDS));
        self.counts.rotate_left(shift);
        self.counts[TRAFFIC_SECONDS - shift..].fill(0);
        self.latest = now;
    }

    fn count(&mut self, now: u64) {
        self.advance(now);
        let last = &mut self.counts[TRAFFIC_SECONDS - 1];
        *last = last.saturating_add(1);
    }

    fn recent(&self, now: u64) -> Vec<u32> {
        let mut window = self.clone();
        window.advance(now);
        window.counts.to_vec()
    }
}

#[derive(Debug)]
struct Slot {
    id: String,
    state: State,
    addr: Option<SocketAddr>,
    pid: Option<u32>,
    served: u64,
    traffic: Traffic,
    generation: u64,
    drained: bool,
    /// This incarnation was SIGKILLed through the admin API.
    killed: bool,
    ended: Option<Ended>,
    /// Why this slot's last incarnation exited before it was ever ready, when it did:
    /// its exit status and what it wrote on stderr.
    start_failure: Option<String>,
}

impl Slot {
    fn new(id: String, addr: Option<SocketAddr>, generation: u64) -> Slot {
        Slot {
            id,
            state: State::Starting,
            addr,
            pid: None,
            served: 0,
            traffic: Traffic::new(),
            generation,
            drained: false,
            killed: false,
            ended: None,
            start_failure: None,
        }
    }

    fn view(&self, now: u64) -> ReplicaView {
        ReplicaView {
            id: self.id.clone(),
            state: self.state,
            port: self.addr.map(|a| a.port()),
            pid: self.pid,
            requests_served: self.served,
            recent_requests: self.traffic.recent(now),
            ended: self.ended,
        }
    }
}

/// A replica the balancer chose for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub id: String,
    pub addr: SocketAddr,
    pub generation: u64,
}

/// Why an admin action on a replica was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ActionError {
    NoSuchReplica,
    NotRunning,
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Terminate,
    Kill,
    Stop,
    Continue,
}

#[derive(Debug)]
pub(crate) struct Cluster {
    pub config: ClusterConfig,
    slots: Mutex<Vec<Slot>>,
    numbers: AtomicUsize,
    turn: AtomicUsize,
    stopping: AtomicBool,
    /// Some replica has passed a readiness check since the cluster started.
    ever_up: AtomicBool,
    exited: Notify,
    /// When the cluster started: traffic is counted in whole seconds since.
    epoch: Instant,
    /// Told whenever a replica leaves rotation (down or dead), so that requests waiting
    /// on it can give up and go elsewhere.
    left: Notify,
    /// The replicas were started elsewhere ([`crate::balance`]): none is spawned here.
    fixed: bool,
    pub client: Client<HttpConnector, ProxyBody>,
    /// Told when the balancer ran out of file descriptors, so that its idle client
    /// connections close and make room (`crate::listen::accept`).
    pub pressure: Arc<crate::listen::Pressure>,
    /// The file the replicas' log lines go to, when not our stderr.
    log: Option<Mutex<std::fs::File>>,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Result<Cluster, LabError> {
        let log = match &config.replica_log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| LabError::ReplicaLog(path.clone(), e))?,
            )),
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Cluster {
            config,
            slots: Mutex::new(Vec::new()),
            numbers: AtomicUsize::new(0),
            turn: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            exited: Notify::new(),
            epoch: Instant::now(),
            left: Notify::new(),
            fixed: false,
            client,
            pressure: Arc::default(),
            log,
        })
    }

    /// A balancer over replicas started elsewhere, at `upstreams`: each is health-checked
    /// and proxied to like a spawned one, under its address as its id, and nothing is
    /// spawned, killed or drained.
    pub fn fixed(
        config: ClusterConfig,
        upstreams: &[SocketAddr],
    ) -> Result<Arc<Cluster>, LabError> {
        let cluster = Arc::new(Cluster {
            fixed: true,
            ..Cluster::new(config)?
        });
        for &addr in upstreams {
            let id = addr.to_string();
            cluster.slots().push(Slot::new(id.clone(), Some(addr), 1));
            tokio::spawn(cluster.clone().check_health(id, 1, addr));
        }
        Ok(cluster)
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A panic while holding the lock leaves the table consistent (every update is
        // one assignment), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn views(&self) -> Vec<ReplicaView> {
        let now = self.second();
        self.slots().iter().map(|s| s.view(now)).collect()
    }

    /// Whole seconds since the cluster started, the clock of the traffic window.
    fn second(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Adds a replica with the next id and starts it.
    pub fn add(self: &Arc<Self>) -> Result<ReplicaView, LabError> {
        if self.fixed {
            return Err(LabError::FixedUpstreams);
        }
        if self.running() >= self.config.max_replicas {
            return Err(LabError::TooManyReplicas(self.config.max_replicas));
        }
        let id = format!("r{}", self.numbers.fetch_add(1, Ordering::Relaxed) + 1);
        self.slots().push(Slot::new(id.clone(), None, 0));
        self.start(&id)?;
        let now = self.second();
        let view = self
            .slots()
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.view(now));
        view.ok_or_else(|| LabError::Spawn {
            id,
            program: self.config.program.display().to_string(),
            source: std::io::Error::other("the replica vanished from the table"),
        })
    }

    /// Spawns the process of slot `id` (a new incarnation) and the tasks that watch it.
    fn start(self: &Arc<Self>, id: &str) -> Result<(), LabError> {
        let special = self.config.overrides.iter().find(|o| o.id == id);
        let args = self.config.args.iter().map(|arg| {
            special
                .and_then(|o| o.replace_args.iter().find(|(from, _)| from == arg))
                .map_or(arg, |(_, to)| to)
        });
        let extra_env = special.map(|o| o.env.as_slice()).unwrap_or_default();
        let mut child = Command::new(&self.config.program)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--replica-id", id])
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            // A safety net: should the lab itself fail, its children go with it.
            .kill_on_drop(true)
            .spawn();
        let generation = {
            let mut slots = self.slots();
            let Some(slot) = slots.iter_mut().find(|s| s.id == id) else {
                return Ok(());
            };
            slot.generation += 1;
            slot.addr = None;
            slot.killed = false;
            slot.ended = None;
            match &mut child {
                Ok(child) => {
                    slot.pid = child.id();
                    slot.state = State::Starting;
                }
                Err(_) => slot.state = State::Dead,
            }
            slot.generation
        };
        let mut child = child.map_err(|source| LabError::Spawn {
            id: id.to_owned(),
            program: self.config.program.display().to_string(),
            source,
        })?;
        tracing::info!(replica = id, pid = child.id(), "replica starting");
        let log = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(self.clone().read_log(id.to_owned(), generation, stderr)));
        tokio::spawn(
            self.clone()
                .supervise(id.to_owned(), generation, child, log),
        );
        Ok(())
    }

    /// Forwards the child's log lines to ours, prefixed with its id, and learns its
    /// address from the line that announces it. Returns what the child wrote before
    /// that line (at most [`EARLY_LINES`] lines), which says why when it never came.
    async fn read_log(
        self: Arc<Self>,
        id: String,
        generation: u64,
        stderr: ChildStderr,
    ) -> Vec<String> {
        let mut lines = BufReader::new(stderr).lines();
        let mut announced = false;
        let mut early = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if !announced && early.len() < EARLY_LINES {
                early.push(line.clone());
            }
            if !announced {
                if let Some(addr) = announced_addr(&line) {
                    announced = true;
                    let current = {
                        let mut slots = self.slots();
                        match slots
                            .iter_mut()
                            .find(|s| s.id == id && s.generation == generation)
                        {
                            Some(slot) => {
                                slot.addr = Some(addr);
                                true
                            }
                            None => false,
                        }
                    };
                    if current {
                        tokio::spawn(self.clone().check_health(id.clone(), generation, addr));
                    }
                }
            }
            match &self.log {
                Some(file) => {
                    use std::io::Write as _;
                    let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                    // A full disk loses log lines, not the cluster.
                    let _ = writeln!(file, "[{id}] {line}");
                }
                None => eprintln!("[{id}] {line}"),
            }
        }
        if announced {
            early.clear();
        }
        early
    }

    /// Waits for the child to exit, records it, and respawns it when asked to.
    async fn supervise(
        self: Arc<Self>,
        id: String,
        generation: u64,
        mut child: Child,
        log: Option<tokio::task::JoinHandle<Vec<String>>>,
    ) {
        let status = describe(child.wait().await);
        // The log reader ends at the pipe's end, which the exit brings; what it kept
        // says why a replica that never became ready died. A grandchild holding the
        // pipe open must not hold up the bookkeeping, hence the bound.
        let early = match log {
            Some(log) => tokio::time::timeout(Duration::from_secs(2), log)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let stopping = self.stopping.load(Ordering::SeqCst);
        let drained = {
            let mut slots = self.slots();
            let slot = slots
                .iter_mut()
                .find(|s| s.id == id && s.generation == generation);
            match slot {
                Some(slot) => {
                    let never_ready = slot.state == State::Starting;
                    slot.ended = Some(if slot.drained {
                        Ended::Drained
                    } else if slot.killed {
                        Ended::Killed
                    } else if stopping {
                        Ended::Stopped
                    } else {
                        Ended::Crashed
                    });
                    if never_ready && slot.ended == Some(Ended::Crashed) {
                        slot.start_failure = Some(start_failure(&status, &early));
                    }
                    slot.state = State::Dead;
                    slot.pid = None;
                    slot.drained
                }
                None => true,
            }
        };
        self.exited.notify_waiters();
        self.left.notify_waiters();
        if stopping || drained {
            tracing::info!(replica = %id, status = %status, "replica exited");
            return;
        }
        tracing::warn!(replica = %id, status = %status, "replica died");
        if !self.config.respawn {
            return;
        }
        // A pause before respawning keeps a replica that dies at start from spinning, and
        // lets a Ctrl-C that reached the children too reach us before we undo it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.start(&id) {
            tracing::error!(replica = %id, "respawning: {e}");
        }
    }

    /// Asks the replica's `/readyz` every `health_interval` while this incarnation lives.
    async fn check_health(self: Arc<Self>, id: String, generation: u64, addr: SocketAddr) {
        let mut interval = tokio::time::interval(self.config.health_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(ready) = self.ready(addr).await else {
                // The balancer's own shortage: the replica has not been asked.
                self.pressure.relieve().await;
                continue;
            };
            let mut slots = self.slots();
            let Some(slot) = slots
                .iter_mut()
                .find(|s| s.id == id && s.generation == generation)
            else {
                return;
            };
            match (slot.state, ready) {
                (State::Dead | State::Draining, _) => return,
                (State::Starting | State::Down, true) => {
                    slot.state = State::Up;
                    slot.start_failure = None;
                    self.ever_up.store(true, Ordering::SeqCst);
                    tracing::info!(replica = %id, %addr, "replica is up");
                }
                (State::Up, false) => {
                    slot.state = State::Down;
                    tracing::warn!(replica = %id, %addr, "replica failed its readiness check");
                    self.left.notify_waiters();
                }
                _ => {}
            }
        }
    }

    /// Whether the replica at `addr` answers its `/readyz` with success; `None` when the
    /// balancer could not ask, for want of a file descriptor of its own, which says
    /// nothing about the replica.
    async fn ready(&self, addr: SocketAddr) -> Option<bool> {
        let request =
            hyper::Request::get(format!("http://{addr}/readyz")).body(crate::balancer::empty());
        let Ok(request) = request else {
            return Some(false);
        };
        let answer = tokio::time::timeout(Duration::from_secs(1), self.client.request(request));
        match answer.await {
            Ok(Ok(response)) => Some(response.status().is_success()),
            Ok(Err(e)) if herd_edge::caused_by_out_of_descriptors(&e) => None,
            _ => Some(false),
        }
    }

    /// The replica for the next request: the one `affinity` names if it is up, else the
    /// next up replica in turn, never `exclude`.
    pub fn pick(&self, affinity: Option<&str>, exclude: Option<&str>) -> Option<Target> {
        let slots = self.slots();
        let usable =
            |s: &&Slot| s.state == State::Up && s.addr.is_some() && Some(s.id.as_str()) != exclude;
        let target = |s: &Slot| {
            s.addr.map(|addr| Target {
                id: s.id.clone(),
                addr,
                generation: s.generation,
            })
        };
        if let Some(wanted) = affinity {
            if let Some(slot) = slots.iter().filter(usable).find(|s| s.id == wanted) {
                return target(slot);
            }
        }
        let up: Vec<&Slot> = slots.iter().filter(usable).collect();
        if up.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        target(up[turn % up.len()])
    }

    /// A connection to `target` failed: no more requests until its `/readyz` passes.
    pub fn mark_down(&self, target: &Target) {
        let mut slots = self.slots();
        if let Some(slot) = slots
            .iter_mut()
            .find(|s| s.id == target.id && s.generation == target.generation)
        {
            if slot.state == State::Up {
                slot.state = State::Down;
                tracing::warn!(replica = %target.id, "a connection to the replica failed: taken out until /readyz passes");
                self.left.notify_waiters();
            }
        }
    }

    /// Resolves once `target` is down, dead or replaced by a new incarnation. A draining
    /// replica is still finishing its requests, so it has not left.
    pub async fn left_rotation(&self, target: &Target) {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            let serving = self.slots().iter().any(|s| {
                s.id == target.id
                    && s.generation == target.generation
                    && matches!(s.state, State::Up | State::Draining | State::Starting)
            });
            if !serving {
                return;
            }
            left.await;
        }
    }

    /// Replicas that are running or starting: what `max_replicas` bounds.
    fn running(&self) -> usize {
        self.slots()
            .iter()
            .filter(|s| s.state != State::Dead)
            .count()
    }

    pub fn served(&self, target: &Target) {
        let now = self.second();
        if let Some(slot) = self.slots().iter_mut().find(|s| s.id == target.id) {
            slot.served += 1;
            slot.traffic.count(now);
        }
    }

    /// Resolves, with the first replica's reason, once every replica the cluster has
    /// started died at start (under respawn: at least once) and none was ever ready: then nothing will ever answer
    /// (a bad flag in the replicas' arguments, a database they cannot open), and
    /// waiting would only turn every request into a 503.
    ///
    /// A replica "died at start" when its process exited on its own before its first
    /// readiness check passed; one killed or drained through the admin API did not.
    /// Once any replica has been ready, the cluster never gives up: every replica can
    /// then be killed and a new one added, as the page's demo does.
    pub async fn failed_at_start(&self) -> String {
        loop {
            let exited = self.exited.notified();
            tokio::pin!(exited);
            exited.as_mut().enable();
            if !self.ever_up.load(Ordering::SeqCst) {
                let slots = self.slots();
                // A respawned replica that is starting again still counts as failed:
                // under --respawn the replicas would otherwise fail in turn for ever.
                let all_failed =
                    !slots.is_empty() && slots.iter().all(|s| s.start_failure.is_some());
                if all_failed {
                    let first = &slots[0];
                    return format!(
                        "replica {} {}",
                        first.id,
                        first.start_failure.as_deref().unwrap_or_default()
                    );
                }
            }
            exited.await;
        }
    }

    /// Returns once some replica has passed its readiness check.
    pub async fn first_up(&self) {
        // Readiness is asked every `health_interval`; a poll this often adds nothing a
        // person or a test would notice.
        while !self.ever_up.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: a crash, not a shutdown.
    pub fn kill(&self, id: &str) -> Result<ReplicaView, ActionError> {
        self.act(id, |slot| {
            slot.killed = true;
            tracing::info!(replica = %slot.id, "killing replica (SIGKILL)");
            Signal::Kill
        })
    }

    /// SIGSTOP: the process freezes (a stalled VM, a long pause) with its sockets open;
    /// the balancer learns it only from its health checks and timeouts.
    pub fn pause(&self, id: &str) -> Result<ReplicaView, ActionError> {
        self.act(id, |slot| {
            tracing::info!(replica = %slot.id, "pausing replica (SIGSTOP)");
            Signal::Stop
        })
    }

    /// SIGCONT: a paused replica runs again.
    pub fn resume(&self, id: &str) -> Result<ReplicaView, ActionError> {
        self.act(id, |slot| {
            tracing::info!(replica = %slot.id, "resuming replica (SIGCONT)");
            Signal::Continue
        })
    }

    /// No new requests, then SIGTERM: the replica finishes what it has and closes its
    /// WebSockets with 1012.
    pub fn drain(&self, id: &str) -> Result<ReplicaView, ActionError> {
        self.act(id, |slot| {
            slot.state = State::Draining;
            slot.drained = true;
            tracing::info!(replica = %slot.id, "draining replica (SIGTERM)");
            Signal::Terminate
        })
    }

    fn act(
        &self,
        id: &str,
        action: impl FnOnce(&mut Slot) -> Signal,
    ) -> Result<ReplicaView, ActionError> {
        let now = self.second();
        let mut slots = self.slots();
        let slot = slots
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or(ActionError::NoSuchReplica)?;
        let pid = match (slot.state, slot.pid) {
            (State::Dead, _) | (_, None) => return Err(ActionError::NotRunning),
            (_, Some(pid)) => pid,
        };
        let signal = action(slot);
        // Sent under the lock: the supervisor clears `pid` under it when the process is
        // reaped, so the pid cannot belong to some other process by now.
        send(pid, signal);
        Ok(slot.view(now))
    }

    /// SIGTERM to every replica, then SIGKILL to those still running after
    /// `stop_timeout`.
    pub async fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.signal_all(Signal::Terminate);
        let deadline = tokio::time::Instant::now() + self.config.stop_timeout;
        if !self.wait_all_exited(deadline).await {
            tracing::warn!("replicas still running after the stop timeout: killing them");
            self.signal_all(Signal::Kill);
            self.wait_all_exited(tokio::time::Instant::now() + Duration::from_secs(2))
                .await;
        }
    }

    fn signal_all(&self, signal: Signal) {
        for slot in self.slots().iter_mut() {
            if let Some(pid) = slot.pid {
                if slot.state != State::Dead {
                    slot.state = State::Draining;
                    send(pid, signal);
                }
            }
        }
    }

    async fn wait_all_exited(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let exited = self.exited.notified();
            tokio::pin!(exited);
            exited.as_mut().enable();
            if self.slots().iter().all(|s| s.pid.is_none()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, exited).await.is_err() {
                return false;
            }
        }
    }
}

/// The address in a child's `"herd is serving"` JSON log line, if this is that line.
fn announced_addr(line: &str) -> Option<SocketAddr> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &entry["fields"];
    if fields["message"] != "herd is serving" {
        return None;
    }
    fields["listen"].as_str()?.parse().ok()
}

/// Lines of a replica's stderr kept from before it announced its address.
const EARLY_LINES: usize = 40;

/// Why a replica died before it was ready, from its exit status and what it wrote
/// before: its plain lines (a command-line error, `herd: ...`) or, when there are none,
/// the messages of its JSON error lines.
fn start_failure(status: &str, early: &[String]) -> String {
    let plain: Vec<&str> = early
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty() && serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect();
    let said: Vec<String> = if plain.is_empty() {
        early
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|entry| entry["level"] == "ERROR")
            .filter_map(|entry| entry["fields"]["message"].as_str().map(str::to_owned))
            .collect()
    } else {
        plain.into_iter().map(str::to_owned).collect()
    };
    if said.is_empty() {
        format!("exited ({status}) before it was ready, saying nothing")
    } else {
        format!(
            "exited ({status}) before it was ready:\n{}",
            said.join("\n")
        )
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

#[cfg(unix)]
fn send(pid: u32, signal: Signal) {
    use rustix::process::{kill_process, Pid, Signal as Sig};
    let sig = match signal {
        Signal::Terminate => Sig::TERM,
        Signal::Kill => Sig::KILL,
        Signal::Stop => Sig::STOP,
        Signal::Continue => Sig::CONT,
    };
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(e) = kill_process(pid, sig) {
        tracing::warn!(
            pid = pid.as_raw_nonzero().get(),
            "signalling a replica: {e}"
        );
    }
}

#[cfg(not(unix))]
fn send(pid: u32, signal: Signal) {
    tracing::error!(pid, ?signal, "signals to replicas need a unix system");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_counts_per_second_and_forgets_what_left_the_window() {
        let mut traffic = Traffic::new();
        traffic.count(0);
        traffic.count(0);
        traffic.count(2);
        let recent = traffic.recent(2);
        assert_eq!(recent.len(), TRAFFIC_SECONDS);
        assert_eq!(recent[TRAFFIC_SECONDS - 3..], [2, 0, 1]);
        assert_eq!(recent.iter().sum::<u32>(), 3);
        let later = traffic.recent(2 + TRAFFIC_SECONDS as u64 - 1);
        assert_eq!(later[0], 1, "second 2 is the oldest one kept");
        assert_eq!(later.iter().sum::<u32>(), 1);
        assert!(traffic.recent(1000).iter().all(|&n| n == 0));
        // Reading does not move the window that counting uses.
        traffic.count(3);
        assert_eq!(traffic.recent(3)[TRAFFIC_SECONDS - 2..], [1, 1]);
    }

    #[test]
    fn a_start_failure_says_what_the_replica_said() {
        let clap = [
            "error: unexpected argument '--bogus' found".to_owned(),
            String::new(),
            "Usage: herd serve [OPTIONS]".to_owned(),
        ];
        let said = start_failure("exit status: 2", &clap);
        assert!(said.contains("exit status: 2"), "{said}");
        assert!(said.contains("unexpected argument '--bogus'"), "{said}");
        let json = [
            r#"{"level":"INFO","fields":{"message":"opening"}}"#.to_owned(),
            r#"{"level":"ERROR","fields":{"message":"opening --database x: no such file"}}"#
                .to_owned(),
        ];
        let said = start_failure("exit status: 1", &json);
        assert!(
            said.ends_with("opening --database x: no such file"),
            "{said}"
        );
        assert!(!said.contains("INFO"), "{said}");
    }

    #[test]
    fn the_port_is_read_from_the_serving_line_only() {
        let line = r#"{"timestamp":"x","level":"INFO","fields":{"message":"herd is serving","listen":"127.0.0.1:40123","replica":"r1"},"target":"herd"}"#;
        assert_eq!(
            announced_addr(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        let other = r#"{"fields":{"message":"migrations are up to date","listen":"127.0.0.1:1"}}"#;
        assert_eq!(announced_addr(other), None);
        assert_eq!(announced_addr("not json"), None);
    }
}
