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

use super::metrics::Recorder;
use super::report::{ScenarioResult, Timeline};
use super::workload::{self, Shared};
use super::{LabConfig, Scenario};
use crate::replicas::Cluster;
use crate::{ClusterConfig, LabError, State};

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

/// Runs `scenario` on a cluster made from `cluster`, then stops the cluster.
pub(crate) async fn run(
    scenario: &Scenario,
    mut cluster: ClusterConfig,
    config: &LabConfig,
    bar: &ProgressBar,
) -> Result<ScenarioResult, LabError> {
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
}

async fn drive(
    scenario: &Scenario,
    cluster: &Arc<Cluster>,
    base: &str,
    config: &LabConfig,
    bar: &ProgressBar,
) -> Result<ScenarioResult, LabError> {
    let mut drive = Drive::start(scenario, cluster, base, config, bar).await?;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        ticks.tick().await;
        match drive.tick() {
            Ok(true) => break Ok(()),
            Ok(false) => {}
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
        let users: Vec<_> = (0..config.users)
            .map(|i| tokio::spawn(workload::User::new(shared.clone(), i, stopped.clone()).run()))
            .collect();
        Ok(Drive {
            scenario,
            cluster,
            config,
            bar,
            recorder,
            shared,
            users,
            stop,
            timeline: Timeline::default(),
        })
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
    async fn finish(self, outcome: Result<(), LabError>) -> Result<ScenarioResult, LabError> {
        let _ = self.stop.send(true);
        self.bar.set_message("stopping the users");
        for user in self.users {
            if let Err(e) = user.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        outcome?;
        drop(self.shared);
        let recorder = Arc::try_unwrap(self.recorder)
            .map_err(|_| LabError::Timeline("a user outlived the scenario".into()))?;
        Ok(ScenarioResult::new(
            self.scenario,
            self.config,
            self.timeline,
            recorder.finish(),
        ))
    }
}
