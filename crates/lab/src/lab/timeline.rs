//! One scenario, from a fresh cluster to its result.
//!
//! The events are driven by what has happened, not by the clock alone, so that a slow
//! machine shifts them rather than breaks them:
//! - the kill waits for `phases.kill` **and** for every user to have been served once
//!   (so that every user holds a session the crash can take), for at most
//!   [`KILL_WAIT`] more;
//! - the add waits for the killed process to be reaped, and keeps the configured gap
//!   after the kill;
//! - the stop keeps the configured gap after the add.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use std::collections::HashMap;

use super::chaos::{
    self, ChaosResult, Exempt, Fault, FaultTimes, Planned, Proxy, RevocationLog, Scope,
    SequenceResult,
};
use super::metrics::Recorder;
use super::report::{FaultMark, ScenarioResult, Timeline};
use super::subscribers::{self, Watched};
use super::workload::{self, Shared};
use super::{Break, Environment, LabConfig, Scenario};
use crate::replicas::Cluster;
use crate::{ClusterConfig, LabError, ReplicaOverride, State};

/// How far ahead the clock fault moves one replica's clock: more than the largest
/// leeway herd accepts (30 s).
const CLOCK_AHEAD: &str = "+60s";

/// How much longer than `phases.kill` the kill waits for every user to be served.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often the timeline looks at the cluster and the users.
const TICK: Duration = Duration::from_millis(50);

/// The replica the lab kills: the first, which every policy has given users to.
const VICTIM: &str = "r1";

pub(crate) fn bar(scenario: &Scenario, config: &LabConfig) -> ProgressBar {
    let tenths = u64::try_from(config.phases.stop.as_millis() / 100).unwrap_or(u64::MAX);
    let bar = ProgressBar::new(tenths);
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(scenario.name.clone());
    bar.set_message("starting the cluster");
    bar
}

/// Runs `scenario` on a cluster made from `cluster`, then stops the cluster. Under a
/// fault, also returns the invariants checked after it.
pub(crate) async fn run<E: Environment>(
    scenario: &Scenario,
    mut cluster: ClusterConfig,
    config: &LabConfig,
    bar: &ProgressBar,
    env: &mut E,
) -> Result<(ScenarioResult, Option<Checked>), LabError> {
    let planned = chaos::plan(
        &scenario.faults(),
        config.replicas,
        !scenario.sequence.is_empty(),
    );
    let mut proxies = Vec::new();
    for p in &planned {
        match (p.fault, &p.victim, &p.adds) {
            (Fault::Cut, Some(victim), _) => {
                let mut replace = Vec::new();
                for backend in env.backends() {
                    let proxy = Proxy::start(backend.addr).await?;
                    let to = backend
                        .arg
                        .replace(&backend.host_port, &proxy.addr.to_string());
                    replace.push((backend.arg.clone(), to));
                    proxies.push(proxy);
                }
                cluster.overrides.push(ReplicaOverride {
                    id: victim.clone(),
                    replace_args: replace,
                    env: Vec::new(),
                });
            }
            (Fault::Clock, _, Some(skewed)) => {
                let library = config.faketime.clone().unwrap_or_default();
                cluster.overrides.push(ReplicaOverride {
                    id: skewed.clone(),
                    replace_args: Vec::new(),
                    env: vec![
                        ("LD_PRELOAD".to_owned(), library.display().to_string()),
                        ("FAKETIME".to_owned(), CLOCK_AHEAD.to_owned()),
                        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
                    ],
                });
            }
            _ => {}
        }
    }
    cluster.replicas = config.replicas;
    cluster.policy = scenario.policy;
    cluster.respawn = false;
    cluster.replica_log = Some(config.out_dir.join(format!("{}.log", scenario.name)));
    // Replicas log a refused session at info; under `memory` with round-robin that is
    // a line per request, work the other designs are spared. The server's warnings and
    // the line announcing a replica's port (target `herd`) are kept.
    cluster.env.push((
        "RUST_LOG".to_owned(),
        "info,herd_server=warn,sqlx=warn".to_owned(),
    ));
    let cluster = Arc::new(Cluster::new(cluster)?);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(LabError::Listener)?;
    let address = listener.local_addr().map_err(LabError::Listener)?;
    let (stop_balancer, stopped) = oneshot::channel::<()>();
    let balancer = tokio::spawn(crate::balancer::serve(
        cluster.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let result = async {
        for _ in 0..config.replicas {
            cluster.add()?;
        }
        drive(
            scenario,
            &cluster,
            &format!("http://{address}"),
            config,
            bar,
            env,
            (planned, proxies),
        )
        .await
    }
    .await;
    bar.set_message("stopping the cluster");
    let _ = stop_balancer.send(());
    let _ = balancer.await;
    cluster.stop_all().await;
    result
}

/// One scenario in progress: the cluster and its users, and the events so far. Built
/// once every replica is up and the accounts exist ([`Drive::start`]); then
/// [`Drive::tick`] moves the timeline on until the stop; [`Drive::finish`] stops the
/// users and makes the result.
struct Drive<'a> {
    scenario: &'a Scenario,
    cluster: &'a Arc<Cluster>,
    config: &'a LabConfig,
    bar: &'a ProgressBar,
    recorder: Arc<Recorder>,
    shared: Arc<Shared>,
    users: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    timeline: Timeline,
    chaos: Option<ChaosDrive>,
}

/// A fault's window in progress.
struct Window {
    planned: Planned,
    times: FaultTimes,
    healed: bool,
    healed_at: Option<Duration>,
    /// Whether the users were told to log in again (the clock fault).
    relogin_sent: bool,
}

/// A chaos run in progress: one fault, or a sequence of them on this one cluster.
struct ChaosDrive {
    windows: Vec<Window>,
    /// The window whose fault is due or in progress.
    current: usize,
    /// Faults in sequence: checked per window and for the whole run.
    sequence: bool,
    proxies: Vec<Proxy>,
    exempt: Exempt,
    subscribers: Vec<tokio::task::JoinHandle<Watched>>,
    targets: watch::Sender<Option<HashMap<String, i64>>>,
    revoker: tokio::task::JoinHandle<RevocationLog>,
    /// Tells the users to log in again (a login of their own, not a forced one): sent
    /// at the clock fault's start so that some log in through the skewed replica.
    relogin: watch::Sender<u64>,
}

/// What the drive loop must do for the timeline, which needs the environment.
enum Step {
    Continue,
    Done,
    Inject(Fault),
    Heal(Fault),
}

async fn drive<E: Environment>(
    scenario: &Scenario,
    cluster: &Arc<Cluster>,
    base: &str,
    config: &LabConfig,
    bar: &ProgressBar,
    env: &mut E,
    planned: (Vec<Planned>, Vec<Proxy>),
) -> Result<(ScenarioResult, Option<Checked>), LabError> {
    let mut drive = Drive::start(scenario, cluster, base, config, bar, planned).await?;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        ticks.tick().await;
        let step = if drive.chaos.is_some() {
            drive.chaos_tick()
        } else {
            drive
                .tick()
                .map(|done| if done { Step::Done } else { Step::Continue })
        };
        match step {
            Ok(Step::Done) => break Ok(()),
            Ok(Step::Continue) => {}
            Ok(Step::Inject(fault)) => {
                if let Err(e) = env.inject(fault).await {
                    break Err(LabError::Timeline(format!(
                        "injecting {}: {e}",
                        fault.as_str()
                    )));
                }
                // Ending every connection takes as long as the call: the fault lasts
                // that long.
                if fault == Fault::PostgresKill {
                    let now = drive.recorder.now();
                    drive.fault_ended(now);
                }
            }
            Ok(Step::Heal(fault)) => {
                if let Err(e) = env.heal(fault).await {
                    break Err(LabError::Timeline(format!(
                        "ending {}: {e}",
                        fault.as_str()
                    )));
                }
                let now = drive.recorder.now();
                drive.fault_ended(now);
            }
            Err(e) => break Err(e),
        }
    };
    drive.finish(outcome).await
}

impl<'a> Drive<'a> {
    /// Waits for every replica to be up, signs the users up (unmeasured), and starts
    /// them with the clock.
    async fn start(
        scenario: &'a Scenario,
        cluster: &'a Arc<Cluster>,
        base: &str,
        config: &'a LabConfig,
        bar: &'a ProgressBar,
        (planned, proxies): (Vec<Planned>, Vec<Proxy>),
    ) -> Result<Drive<'a>, LabError> {
        let deadline = tokio::time::Instant::now() + config.setup_timeout;
        while !cluster.views().iter().all(|r| r.state == State::Up) {
            if tokio::time::Instant::now() >= deadline {
                return Err(LabError::Setup(format!(
                    "the replicas were not all up after {:?} (their log: {})",
                    config.setup_timeout,
                    config
                        .out_dir
                        .join(format!("{}.log", scenario.name))
                        .display()
                )));
            }
            tokio::time::sleep(TICK).await;
        }
        bar.set_message(format!("signing up {} users", config.users));
        let client = workload::client()?;
        // The setup (accounts, rooms) is not measured, and talks to one replica directly:
        // through a round-robin balancer a lone client's login and its next request always
        // land on different replicas, which `memory` sessions cannot survive.
        let first = cluster
            .views()
            .into_iter()
            .find_map(|r| r.port)
            .ok_or_else(|| LabError::Setup("no replica has a port".into()))?;
        let direct = format!("http://127.0.0.1:{first}");
        let rooms = workload::setup(&client, &direct, config.users, config.rooms, deadline).await?;

        let start = std::time::Instant::now();
        let recorder = Arc::new(Recorder::new(start, config.phases.warmup));
        let shared = Arc::new(Shared {
            client,
            base: base.to_owned(),
            recorder: recorder.clone(),
            rooms,
            think: config.think,
            seed: config.seed,
        });
        let (stop, stopped) = watch::channel(false);
        let (relogin, relogins) = watch::channel(0u64);
        let users: Vec<_> = (0..config.users)
            .map(|i| {
                tokio::spawn(
                    workload::User::new(shared.clone(), i, stopped.clone(), relogins.clone()).run(),
                )
            })
            .collect();
        let chaos = (!planned.is_empty()).then(|| {
            let (targets, watching) = watch::channel(None);
            let subscribers =
                chaos::subscriber_plan(config.users, shared.rooms.len(), config.replicas)
                    .into_iter()
                    .map(|(user, room, replica)| {
                        tokio::spawn(subscribers::run(
                            subscribers::Subscriber {
                                client: shared.client.clone(),
                                base: base.to_owned(),
                                user: workload::username(user),
                                room: shared.rooms[room].clone(),
                                replica,
                                no_resume: config.chaos_break == Some(Break::Resume),
                            },
                            watching.clone(),
                        ))
                    })
                    .collect();
            let exempt = Exempt::default();
            let started = recorder.started_at();
            let revoker = tokio::spawn(chaos::revoker(
                shared.client.clone(),
                base.to_owned(),
                cluster.clone(),
                move || started.elapsed(),
                exempt.clone(),
                stopped.clone(),
            ));
            ChaosDrive {
                windows: planned
                    .into_iter()
                    .map(|planned| Window {
                        planned,
                        times: FaultTimes::default(),
                        healed: false,
                        healed_at: None,
                        relogin_sent: false,
                    })
                    .collect(),
                current: 0,
                sequence: !scenario.sequence.is_empty(),
                proxies,
                exempt,
                subscribers,
                targets,
                revoker,
                relogin,
            }
        });
        Ok(Drive {
            scenario,
            cluster,
            config,
            bar,
            recorder,
            shared,
            users,
            stop,
            timeline: Timeline {
                fault: scenario.fault,
                ..Timeline::default()
            },
            chaos,
        })
    }

    /// Notes the end of the current window's fault.
    fn fault_ended(&mut self, at: Duration) {
        let Some(c) = self.chaos.as_mut() else { return };
        let i = c.current;
        c.windows[i].times.end = Some(at);
        if let Some(mark) = self.timeline.faults.get_mut(i) {
            mark.end = Some(at);
        }
        if i == 0 && !c.sequence {
            self.timeline.fault_end = Some(at);
        }
    }

    /// The faults' timeline. The first starts at `phases.kill` once every user has been
    /// served (or [`KILL_WAIT`] later) and ends at `phases.add` (keeping the gap); each
    /// later one (a sequence) starts once the one before has had its recovery time
    /// (`phases.stop - phases.add`) and every replica has settled (up, or gone), and
    /// lasts as long; the users stop after the last one's recovery time. Meanwhile it
    /// notes when the balancer took the faulty replica out.
    fn chaos_tick(&mut self) -> Result<Step, LabError> {
        let t = self.recorder.now();
        self.show_progress(t);
        let phases = self.config.phases;
        let (length, recovery) = (phases.add - phases.kill, phases.stop - phases.add);
        let views = self.cluster.views();
        let everyone = self.recorder.served_users() >= self.config.users;
        let Some(c) = self.chaos.as_ref() else {
            return Ok(Step::Done);
        };
        let i = c.current;
        let previous_healed = i.checked_sub(1).and_then(|p| c.windows[p].healed_at);
        let w = &c.windows[i];
        let fault = w.planned.fault;
        let victim = w.planned.victim.clone().unwrap_or_default();
        let failed = |what: &str, e: crate::replicas::ActionError| {
            LabError::Timeline(format!("{what} {victim}: {e:?}"))
        };
        let Some(start) = w.times.start else {
            let due = match previous_healed {
                None => t >= phases.kill && (everyone || t >= phases.kill + KILL_WAIT),
                Some(healed) => {
                    let settled = views
                        .iter()
                        .all(|r| matches!(r.state, State::Up | State::Dead));
                    settled || t >= healed + recovery + KILL_WAIT
                }
            };
            if !due {
                return Ok(Step::Continue);
            }
            if i == 0 {
                self.timeline.users_served_at_kill = self.recorder.served_users();
            }
            let mut step = Step::Continue;
            match fault {
                Fault::Kill => drop(
                    self.cluster
                        .kill(&victim)
                        .map_err(|e| failed("killing", e))?,
                ),
                Fault::Pause => drop(
                    self.cluster
                        .pause(&victim)
                        .map_err(|e| failed("pausing", e))?,
                ),
                Fault::Drain => drop(
                    self.cluster
                        .drain(&victim)
                        .map_err(|e| failed("draining", e))?,
                ),
                Fault::Cut => {
                    *c.exempt.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((victim.clone(), None));
                    for proxy in &c.proxies {
                        proxy.cut();
                    }
                }
                Fault::RedisRestart | Fault::PostgresKill => step = Step::Inject(fault),
                Fault::Clock => {
                    let added = self.cluster.add()?;
                    if Some(&added.id) != w.planned.adds.as_ref() {
                        return Err(LabError::Timeline(format!(
                            "the clock fault added {} where {:?} was planned (with its clock moved)",
                            added.id, w.planned.adds
                        )));
                    }
                }
            }
            let now = self.recorder.now();
            let sequence = c.sequence;
            let Some(c) = self.chaos.as_mut() else {
                return Ok(Step::Done);
            };
            let w = &mut c.windows[i];
            w.times.start = Some(now);
            self.timeline.faults.push(FaultMark {
                fault,
                victim: w.planned.victim.clone().or(w.planned.adds.clone()),
                start: Some(now),
                end: None,
            });
            if i == 0 && !sequence {
                self.timeline.fault_start = Some(now);
            }
            if matches!(
                fault,
                Fault::Drain | Fault::RedisRestart | Fault::PostgresKill | Fault::Clock
            ) {
                w.times.detected = Some(now);
            }
            return Ok(step);
        };
        let Some(c) = self.chaos.as_mut() else {
            return Ok(Step::Done);
        };
        let w = &mut c.windows[i];
        // Detection: the balancer no longer sends the replica requests.
        let state = views.iter().find(|r| r.id == victim).map(|r| r.state);
        if w.times.detected.is_none() && matches!(state, Some(State::Down | State::Dead)) {
            w.times.detected = Some(t);
        }
        // The clock fault: once the skewed replica is up (or halfway through, should
        // it never be), every user logs in again; round-robin sends about one login in
        // N+1 to the skewed replica, whose tokens the others are then shown, which is
        // what the fault is about.
        if fault == Fault::Clock && !w.relogin_sent {
            let skewed_up = views
                .iter()
                .any(|r| Some(&r.id) == w.planned.adds.as_ref() && r.state == State::Up);
            if skewed_up || t >= start + length / 2 {
                w.relogin_sent = true;
                c.relogin.send_modify(|n| *n += 1);
            }
        }
        if matches!(fault, Fault::Kill | Fault::Drain)
            && state == Some(State::Dead)
            && w.times.end.is_none()
        {
            self.fault_ended(t);
        }
        let Some(c) = self.chaos.as_mut() else {
            return Ok(Step::Done);
        };
        let w = &mut c.windows[i];
        if !w.healed {
            let due = start + length;
            let due = if i == 0 { due.max(phases.add) } else { due };
            if t < due {
                return Ok(Step::Continue);
            }
            w.healed = true;
            let now = self.recorder.now();
            w.healed_at = Some(now);
            let mut end = Some(now);
            let mut step = Step::Continue;
            match fault {
                Fault::Pause => {
                    drop(
                        self.cluster
                            .resume(&victim)
                            .map_err(|e| failed("resuming", e))?,
                    );
                }
                Fault::Cut => {
                    for proxy in &c.proxies {
                        proxy.restore();
                    }
                    // Tokens revoked while it was cut off: its bound runs from the link's
                    // return (its next upkeep read).
                    *c.exempt.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((victim.clone(), Some(now + chaos::REVOCATION_BOUND)));
                }
                Fault::RedisRestart => {
                    end = None;
                    step = Step::Heal(fault);
                }
                Fault::Clock => {
                    if let Some(id) = &w.planned.adds {
                        let _ = self.cluster.drain(id);
                    }
                }
                Fault::Kill | Fault::Drain | Fault::PostgresKill => {
                    end = w.times.end;
                    // In a sequence the replica is replaced, so that the next fault finds
                    // as many as the first did.
                    if let Some(planned) = &w.planned.adds {
                        let added = self.cluster.add()?;
                        if &added.id != planned {
                            return Err(LabError::Timeline(format!(
                                "added {} to replace {victim} where {planned} was planned",
                                added.id
                            )));
                        }
                    }
                }
            }
            if let Some(end) = end {
                self.fault_ended(end);
            }
            return Ok(step);
        }
        let healed_at = w.healed_at.unwrap_or(t);
        let due = healed_at + recovery;
        let due = if i == 0 { due.max(phases.stop) } else { due };
        if t >= due {
            if i + 1 < c.windows.len() {
                c.current += 1;
                return Ok(Step::Continue);
            }
            self.timeline.stop = Some(self.recorder.now());
            return Ok(Step::Done);
        }
        Ok(Step::Continue)
    }

    /// Looks at the clock, the users and the cluster once, and takes the next event when
    /// it is due; true once the scenario has reached its stop.
    fn tick(&mut self) -> Result<bool, LabError> {
        let t = self.recorder.now();
        self.show_progress(t);
        let done = match (self.timeline.kill, self.timeline.add) {
            (None, _) => self.kill_when_due(t).map(|()| false)?,
            (Some(kill), None) => self.add_when_due(t, kill).map(|()| false)?,
            (Some(_), Some(add)) => self.stop_when_due(t, add),
        };
        // However slow the machine, a scenario that has not reached its end a minute
        // after it should have is stuck; say where.
        if !done && t > self.config.phases.stop + KILL_WAIT + Duration::from_secs(60) {
            return Err(LabError::Timeline(format!(
                "the timeline stalled at {t:?}: kill {:?}, add {:?}",
                self.timeline.kill, self.timeline.add
            )));
        }
        Ok(done)
    }

    fn show_progress(&self, t: Duration) {
        let (ok, relogins, failed) = self.recorder.totals();
        let phase = match (self.timeline.kill, self.timeline.add) {
            (None, _) if t < self.config.phases.warmup => "warm-up",
            (None, _) => "before the kill",
            (Some(_), None) => "after the kill",
            (Some(_), Some(_)) => "after the add",
        };
        self.bar
            .set_position(u64::try_from(t.as_millis() / 100).unwrap_or(u64::MAX));
        self.bar.set_message(format!(
            "{phase:<15} ok {ok}  re-logins {relogins}  failed {failed}"
        ));
    }

    /// The kill: at `phases.kill` once every user has been served, or [`KILL_WAIT`]
    /// later regardless.
    fn kill_when_due(&mut self, t: Duration) -> Result<(), LabError> {
        let phases = self.config.phases;
        let everyone = self.recorder.served_users() >= self.config.users;
        if t >= phases.kill && (everyone || t >= phases.kill + KILL_WAIT) {
            self.timeline.users_served_at_kill = self.recorder.served_users();
            self.cluster
                .kill(VICTIM)
                .map_err(|e| LabError::Timeline(format!("killing {VICTIM}: {e:?}")))?;
            // After the signal: a request that starts from here on was sent to a replica
            // already told to die.
            let (at, in_flight) = self.recorder.killed();
            self.timeline.kill = Some(at);
            self.timeline.killed = VICTIM.to_owned();
            self.timeline.in_flight_at_kill = in_flight;
        }
        Ok(())
    }

    /// The add: once the killed process is reaped, and the configured gap after the
    /// kill has passed.
    fn add_when_due(&mut self, t: Duration, kill: Duration) -> Result<(), LabError> {
        let phases = self.config.phases;
        let reaped = self
            .cluster
            .views()
            .iter()
            .any(|r| r.id == VICTIM && r.state == State::Dead);
        if reaped && self.timeline.reaped.is_none() {
            self.timeline.reaped = Some(self.recorder.gone());
        }
        if reaped && t >= phases.add.max(kill + (phases.add - phases.kill)) {
            let added = self.cluster.add()?;
            self.timeline.add = Some(self.recorder.added(&added.id));
            self.timeline.added = added.id;
        }
        Ok(())
    }

    /// Notes when the added replica is first up; true once the configured gap after the
    /// add has passed.
    fn stop_when_due(&mut self, t: Duration, add: Duration) -> bool {
        let phases = self.config.phases;
        if self.timeline.added_up.is_none()
            && self
                .cluster
                .views()
                .iter()
                .any(|r| r.id == self.timeline.added && r.state == State::Up)
        {
            self.timeline.added_up = Some(t);
        }
        if t >= phases.stop.max(add + (phases.stop - phases.add)) {
            // The stop is when the users are told; what they had in flight then still
            // finishes, and counts.
            self.timeline.stop = Some(self.recorder.now());
            return true;
        }
        false
    }

    /// Tells the users to stop, waits for them, and makes the scenario's result.
    async fn finish(
        self,
        outcome: Result<(), LabError>,
    ) -> Result<(ScenarioResult, Option<Checked>), LabError> {
        let _ = self.stop.send(true);
        self.bar.set_message("stopping the users");
        for user in self.users {
            if let Err(e) = user.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        if let (Some(c), Err(_)) = (&self.chaos, &outcome) {
            // A paused replica must not outlive a failed run frozen.
            for w in &c.windows {
                if let (Fault::Pause, Some(victim)) = (w.planned.fault, &w.planned.victim) {
                    let _ = self.cluster.resume(victim);
                }
            }
        }
        outcome?;
        let checked = match self.chaos {
            Some(c) => {
                self.bar.set_message("checking the invariants");
                Some(check(c, self.cluster, &self.shared, self.scenario, self.config).await?)
            }
            None => None,
        };
        let rooms_known = checked.is_some();
        drop(self.shared);
        let recorder = Arc::try_unwrap(self.recorder)
            .map_err(|_| LabError::Timeline("a user outlived the scenario".into()))?;
        let recorded = recorder.finish();
        let checked = match checked {
            Some(pending) if rooms_known => Some(pending.finish(&recorded, self.config)),
            _ => None,
        };
        Ok((
            ScenarioResult::new(self.scenario, self.config, self.timeline, recorded),
            checked,
        ))
    }
}

/// What a chaos run's checks found: one fault's, or a sequence's.
#[derive(Debug)]
pub(crate) enum Checked {
    Alone(ChaosResult),
    Sequence(SequenceResult),
}

/// One window as the checker reads it.
struct CheckedWindow {
    planned: Planned,
    times: FaultTimes,
    notes: Vec<String>,
}

/// What the checker gathered before the recorder is finished.
struct Gathered {
    windows: Vec<CheckedWindow>,
    sequence: bool,
    histories: HashMap<String, chaos::History>,
    watched: Vec<Watched>,
    revocations: RevocationLog,
    scenario: String,
    notes: Vec<String>,
}

impl Gathered {
    fn finish(self, recorded: &super::metrics::Recorded, config: &LabConfig) -> Checked {
        let whole_revocations = self.revocations.within(Duration::ZERO, Duration::MAX);
        let evidence = |w: &CheckedWindow| chaos::Evidence {
            fault: w.planned.fault,
            times: w.times,
            log: &recorded.log,
            acked: &recorded.acked,
            histories: &self.histories,
            watched: &self.watched,
            revocations: &whole_revocations,
            broken_on_purpose: config.chaos_break,
            scope: Scope::Run,
            next_fault: None,
        };
        let with_notes = |mut result: ChaosResult, w: &CheckedWindow, notes: &[String]| {
            result.victim = w.planned.victim.clone().or(w.planned.adds.clone());
            result.notes.extend(w.notes.iter().cloned());
            result.notes.extend(notes.iter().cloned());
            result
        };
        let Some(first) = self.windows.first() else {
            unreachable!("a chaos run has a fault")
        };
        let whole = chaos::check(&evidence(first), &self.scenario);
        if !self.sequence {
            return Checked::Alone(with_notes(whole, first, &self.notes));
        }
        // Window i runs from its fault's start (the first from the users' start) to the
        // next fault's start (the last to the end of the run).
        let starts: Vec<Duration> = self
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    Duration::ZERO
                } else {
                    w.times.start.unwrap_or(Duration::MAX)
                }
            })
            .collect();
        let windows = self
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let (from, to) = (
                    starts[i],
                    starts.get(i + 1).copied().unwrap_or(Duration::MAX),
                );
                let inside = |at: Duration| at >= from && at < to;
                let log: Vec<_> = recorded
                    .log
                    .iter()
                    .filter(|l| inside(l.started))
                    .cloned()
                    .collect();
                let acked: Vec<_> = recorded
                    .acked
                    .iter()
                    .filter(|a| inside(a.at))
                    .cloned()
                    .collect();
                let revocations = self.revocations.within(from, to);
                let result = chaos::check(
                    &chaos::Evidence {
                        log: &log,
                        acked: &acked,
                        revocations: &revocations,
                        scope: Scope::Window,
                        next_fault: self.windows.get(i + 1).map(|n| (n.planned.fault, to)),
                        ..evidence(w)
                    },
                    &self.scenario,
                );
                with_notes(result, w, &[])
            })
            .collect();
        let faults = self.windows.iter().map(|w| w.planned.fault).collect();
        let mut whole = whole;
        // The run's own notes, and which subscribers were damaged; a failure is listed
        // in its window.
        whole.notes.retain(|n| n.starts_with("subscriber of room"));
        whole.notes.extend(self.notes);
        Checked::Sequence(SequenceResult::new(self.scenario, faults, windows, whole))
    }
}

/// After the users stopped: the store's histories, the subscribers caught up to them,
/// and the revoker's last probes.
async fn check(
    c: ChaosDrive,
    cluster: &Arc<Cluster>,
    shared: &Shared,
    scenario: &Scenario,
    config: &LabConfig,
) -> Result<Gathered, LabError> {
    let views = cluster.views();
    let served = |id: &str| {
        views
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.requests_served)
    };
    let edge = cluster.config.edge;
    let mut notes = vec![format!(
        "The balancer asks each replica's /readyz every {} ms (each ask bounded at 1 s) and \
         gives one try at a replica {} s (its per-try timeout) before a safe request is retried \
         elsewhere or another gets 504; a safe request waiting on a replica that leaves \
         rotation is retried at once.",
        cluster.config.health_interval.as_millis(),
        edge.upstream_timeout.as_secs_f64()
    )];
    if c.sequence {
        notes.push(format!(
            "The faults ran one after another on this one cluster and store, under the same \
             users: {}. A replica killed or drained was replaced at its fault's end.",
            c.windows
                .iter()
                .map(|w| match (&w.planned.victim, &w.planned.adds) {
                    (Some(v), _) => format!("{} of {v}", w.planned.fault.as_str()),
                    (None, Some(a)) => format!("{} ({a} added)", w.planned.fault.as_str()),
                    (None, None) => w.planned.fault.as_str().to_owned(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(b) = config.chaos_break {
        notes.push(format!(
            "BROKEN ON PURPOSE (--chaos-break {b:?}): this run tests the checker."
        ));
    }
    let mut windows = Vec::new();
    let mut skewed = Vec::new();
    for w in c.windows {
        let victim = w.planned.victim.clone().unwrap_or_default();
        let mut own = Vec::new();
        match w.planned.fault {
            Fault::Clock => {
                if let Some(id) = &w.planned.adds {
                    own.push(format!(
                        "{id} ran with its clock {CLOCK_AHEAD} ahead (libfaketime) and was sent \
                         {} requests before its drain; the users logged in again at its start.",
                        served(id)
                    ));
                    skewed.push(id.clone());
                }
            }
            Fault::Cut => {
                own.push(format!(
                    "{victim} reached {} through the lab's proxy, which dropped its connections \
                     and refused new ones from the start to the end.",
                    if c.proxies.len() > 1 {
                        "PostgreSQL and Redis"
                    } else {
                        "PostgreSQL"
                    }
                ));
            }
            Fault::RedisRestart => own.push(
                "The Redis killed (SIGKILL) and started again, empty, was the scenario's own \
                 redis-server."
                    .to_owned(),
            ),
            Fault::PostgresKill => own.push(
                "Every connection to the scenario's own database was ended \
                 (pg_terminate_backend); the server itself was not restarted."
                    .to_owned(),
            ),
            _ => {}
        }
        windows.push(CheckedWindow {
            planned: w.planned,
            times: w.times,
            notes: own,
        });
    }
    // Every proxy restored, so that the store is read through a replica that reaches it.
    for proxy in &c.proxies {
        proxy.restore();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let histories = loop {
        let replica = cluster
            .views()
            .into_iter()
            .find(|r| r.state == State::Up && !skewed.contains(&r.id))
            .and_then(|r| r.port);
        let attempt = match replica {
            Some(port) => {
                chaos::read_histories(
                    &shared.client,
                    &format!("http://127.0.0.1:{port}"),
                    &shared.rooms,
                )
                .await
            }
            None => Err(LabError::Timeline("no replica is up".into())),
        };
        match attempt {
            Ok(h) => break h,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let last: HashMap<String, i64> = histories
        .iter()
        .map(|(room, h)| (room.clone(), h.messages.last().map_or(0, |m| m.0)))
        .collect();
    let _ = c.targets.send(Some(last));
    let mut watched = Vec::new();
    for subscriber in c.subscribers {
        watched.push(
            subscriber
                .await
                .map_err(|e| LabError::Timeline(format!("a subscriber: {e}")))?,
        );
    }
    let revocations = c
        .revoker
        .await
        .map_err(|e| LabError::Timeline(format!("the revoker: {e}")))?;
    Ok(Gathered {
        windows,
        sequence: c.sequence,
        histories,
        watched,
        revocations,
        scenario: scenario.name.clone(),
        notes,
    })
}
